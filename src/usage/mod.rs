//! What tokens do, noted on the request path without locks or I/O and
//! written in batches by one background task: `last_used_at` (at most once
//! a minute per token), usage per token per hour with its recent clients
//! and last refusal (`counts`), and the policy that disables unused tokens
//! (`unused`, its own periodic task).
//!
//! The request path only compares numbers and adds to per-record atomics;
//! once a minute per token (last use), once per flush per record (counts)
//! or when a client is new, it pushes a note into a bounded channel, and a
//! full channel drops the note, never the request. The writer task does the
//! store calls: `last_used_at` with compare-and-set, so it never loses a
//! concurrent admin change; counts every [`FLUSH_EVERY`], on marks of the
//! wall clock so an hour's flush falls on the hour, and at shutdown.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::mpsc;

use crate::cache::{CachedRecord, TokenCache};
use crate::decide::Principal;
use crate::refusal::DenyCode;
use crate::store::usage::{MAX_USER_AGENT, hour_of};
use crate::store::{Store, UpdateError, touch_update};
use crate::token::{TokenHash, TokenId, TokenRecord};

pub mod counts;
pub mod unused;

use self::counts::{CLIENT_GAP_MS, Note, SAME_CLIENT_EVERY_MS, Tallies, code_index, fingerprint};

/// Shortest interval between two writes of one token's `last_used_at`.
pub const RESOLUTION: Duration = Duration::from_secs(60);
/// How often noted uses are written.
pub const FLUSH_EVERY: Duration = Duration::from_secs(5);
/// Notes waiting for the writer; beyond it notes are dropped (and retried
/// a minute later), never blocking a request.
const QUEUE: usize = 16_384;

/// Usage counted per token is kept this long unless configured
/// (`usage.retention`).
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);

/// A use of a token for its `last_used_at`: its id (for the log) and its
/// hash, which the write reads it by — the `id:` key may be the one Redis
/// lost, and that write makes it again.
type Used = (TokenId, TokenHash, Timestamp);

/// The request path's handle: notes uses.
#[derive(Debug, Clone)]
pub struct UsageRecorder {
    tx: Option<mpsc::Sender<Used>>,
    /// Counted records and clients, for the writer.
    notes: Option<mpsc::Sender<Note>>,
}

impl UsageRecorder {
    /// Notes that `p`'s token was used at `now`, if it is due; `hash`
    /// gives its hash (asked only then).
    pub fn note(
        &self,
        p: &Principal<'_>,
        hash: impl FnOnce() -> Option<TokenHash>,
        now: Timestamp,
    ) {
        self.note_record(&p.record, hash, now);
    }

    /// Notes that the token of `record` was used at `now` (`last_used_at`),
    /// if it is due: a request's, or a manager token's call of the admin
    /// API (not counted as a request). `hash` gives the token's hash, asked
    /// only when the use is due (once a minute per token).
    pub fn note_record(
        &self,
        record: &CachedRecord,
        hash: impl FnOnce() -> Option<TokenHash>,
        now: Timestamp,
    ) {
        let Some(tx) = &self.tx else { return };
        let now_ms = now.as_millisecond();
        let resolution = RESOLUTION.as_millis() as i64;
        if record
            .last_used_ms()
            .is_some_and(|t| now_ms - t < resolution)
        {
            return;
        }
        if !record.note_use(now_ms, resolution) {
            return;
        }
        // Full queue: drop; the atomic above lets it through again in a minute.
        if let (Ok(id), Some(hash)) = (TokenId::parse(record.id()), hash()) {
            let _ = tx.try_send((id, hash, now));
        }
    }
}

impl UsageRecorder {
    /// Counts a request of the token `record`: allowed (`refused` is
    /// `None`) or refused with that code. `client` and `agent` say who sent
    /// it; the client is handed to the writer only when it differs from the
    /// one last noted (or a minute passed). One atomic add, a fingerprint
    /// and two loads on most requests; no lock, no allocation.
    pub fn count(
        &self,
        record: &Arc<CachedRecord>,
        refused: Option<DenyCode>,
        now: Timestamp,
        client: impl Fn() -> IpAddr,
        agent: Option<&[u8]>,
    ) {
        let Some(tx) = &self.notes else { return };
        let tally = record.tally();
        let now_ms = now.as_millisecond();
        let first = match refused {
            None => tally.allowed(),
            Some(code) => tally.refused(code_index(code), now_ms),
        };
        // Full queue: the record keeps its counts and is handed over by a
        // later request.
        if first && tx.try_send(Note::Counted(record.clone())).is_err() {
            tally.unclaim();
        }
        let address = client();
        if tally.client_due(
            fingerprint(address, agent),
            now_ms,
            SAME_CLIENT_EVERY_MS,
            CLIENT_GAP_MS,
        ) {
            let _ = tx.try_send(Note::Client {
                token: record.clone(),
                address,
                agent: agent.map(|a| a[..a.len().min(MAX_USER_AGENT)].into()),
                at: now,
            });
        }
    }
}

/// How the writer keeps usage.
#[derive(Debug, Clone, Copy)]
pub struct UsageOptions {
    /// How long counts and clients are kept (`usage.retention`).
    pub retention: Duration,
}

impl Default for UsageOptions {
    fn default() -> Self {
        Self {
            retention: DEFAULT_RETENTION,
        }
    }
}

/// Starts the writer task; returns the recorder and the task's handle. The
/// task ends (after a last flush) when every recorder is dropped.
pub fn start(cache: Arc<TokenCache<Store>>) -> (UsageRecorder, tokio::task::JoinHandle<()>) {
    start_with(cache, UsageOptions::default())
}

/// [`start`] with `options`.
pub fn start_with(
    cache: Arc<TokenCache<Store>>,
    options: UsageOptions,
) -> (UsageRecorder, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(QUEUE);
    let (notes_tx, notes) = mpsc::channel(QUEUE);
    let task = tokio::spawn(writer(cache, rx, notes, options));
    let recorder = UsageRecorder {
        tx: Some(tx),
        notes: Some(notes_tx),
    };
    (recorder, task)
}

/// The next mark of the wall clock (a multiple of [`FLUSH_EVERY`] since the
/// epoch) after `now`, and how long until then.
fn next_mark(now: Timestamp) -> (Timestamp, Duration) {
    let every = FLUSH_EVERY.as_millis() as i64;
    let ms = now.as_millisecond();
    let mark = (ms.div_euclid(every) + 1) * every;
    let wait = Duration::from_millis(u64::try_from(mark - ms).unwrap_or(0));
    (Timestamp::from_millisecond(mark).unwrap_or(now), wait)
}

async fn writer(
    cache: Arc<TokenCache<Store>>,
    mut rx: mpsc::Receiver<Used>,
    mut notes: mpsc::Receiver<Note>,
    options: UsageOptions,
) {
    let mut pending: Pending = HashMap::new();
    let mut tallies = Tallies::default();
    let (mut mark, wait) = next_mark(Timestamp::now());
    let mut deadline = tokio::time::Instant::now() + wait;
    loop {
        tokio::select! {
            note = rx.recv() => match note {
                Some((id, hash, at)) => {
                    let slot = pending.entry(hash).or_insert((id, at));
                    slot.1 = slot.1.max(at);
                }
                None => break,
            },
            Some(note) = notes.recv() => tallies.note(note),
            _ = tokio::time::sleep_until(deadline) => {
                flush(&cache, &mut pending).await;
                // What was counted up to this mark belongs to the hour
                // before it: a flush on the hour closes that hour.
                let hour = hour_of(mark - jiff::SignedDuration::from_millis(1));
                tallies.flush(cache.store(), hour, options.retention).await;
                let (m, wait) = next_mark(Timestamp::now());
                mark = m;
                deadline = tokio::time::Instant::now() + wait;
            }
        }
    }
    // Every recorder is gone: what is still queued, then a last flush.
    while let Ok(note) = notes.try_recv() {
        tallies.note(note);
    }
    flush(&cache, &mut pending).await;
    tallies
        .flush(cache.store(), hour_of(Timestamp::now()), options.retention)
        .await;
}

/// Uses waiting for the next flush: the latest per token.
type Pending = HashMap<TokenHash, (TokenId, Timestamp)>;

async fn flush(cache: &TokenCache<Store>, pending: &mut Pending) {
    for (hash, (id, at)) in pending.drain() {
        let result = touch_update(cache, &hash, |r: &TokenRecord| {
            Ok::<_, ()>(r.last_used_at.is_none_or(|t| t < at).then(|| TokenRecord {
                last_used_at: Some(at),
                ..r.clone()
            }))
        })
        .await;
        if let Err(UpdateError::Store(e)) = result {
            tracing::debug!(token_id = %id, error = %e, "last_used_at not written; retried at the next use");
        }
    }
}

#[cfg(test)]
mod tests;
