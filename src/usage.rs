//! `last_used_at`: noted on the request path without locks or I/O, written
//! to the store in batches by a background task, at most once a minute per
//! token.
//!
//! The request path only compares two numbers (the record's `last_used_at`
//! and a per-record atomic "noted at") and, once a minute per token, pushes
//! the token id into a bounded channel. The writer task does the store
//! calls, with compare-and-set, so it never loses a concurrent admin change.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::mpsc;

use crate::cache::TokenCache;
use crate::decide::Principal;
use crate::store::{Store, UpdateError, touch_update};
use crate::token::{TokenId, TokenRecord};

/// Shortest interval between two writes of one token's `last_used_at`.
pub const RESOLUTION: Duration = Duration::from_secs(60);
/// How often noted uses are written.
pub const FLUSH_EVERY: Duration = Duration::from_secs(5);
/// Notes waiting for the writer; beyond it notes are dropped (and retried
/// a minute later), never blocking a request.
const QUEUE: usize = 16_384;

/// The request path's handle: notes uses.
#[derive(Debug, Clone)]
pub struct UsageRecorder {
    tx: Option<mpsc::Sender<(TokenId, Timestamp)>>,
}

impl UsageRecorder {
    /// Notes that `p`'s token was used at `now`, if it is due.
    pub fn note(&self, p: &Principal<'_>, now: Timestamp) {
        let Some(tx) = &self.tx else { return };
        let now_ms = now.as_millisecond();
        let resolution = RESOLUTION.as_millis() as i64;
        if p.record
            .last_used_ms()
            .is_some_and(|t| now_ms - t < resolution)
        {
            return;
        }
        if !p.record.note_use(now_ms, resolution) {
            return;
        }
        // Full queue: drop; the atomic above lets it through again in a minute.
        if let Ok(id) = TokenId::parse(p.record.id()) {
            let _ = tx.try_send((id, now));
        }
    }
}

/// Starts the writer task; returns the recorder and the task's handle. The
/// task ends (after a last flush) when every recorder is dropped.
pub fn start(cache: Arc<TokenCache<Store>>) -> (UsageRecorder, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(QUEUE);
    let task = tokio::spawn(writer(cache, rx));
    (UsageRecorder { tx: Some(tx) }, task)
}

async fn writer(cache: Arc<TokenCache<Store>>, mut rx: mpsc::Receiver<(TokenId, Timestamp)>) {
    let mut pending: HashMap<TokenId, Timestamp> = HashMap::new();
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            note = rx.recv() => match note {
                Some((id, at)) => {
                    let slot = pending.entry(id).or_insert(at);
                    *slot = (*slot).max(at);
                }
                None => {
                    flush(&cache, &mut pending).await;
                    return;
                }
            },
            _ = tick.tick() => flush(&cache, &mut pending).await,
        }
    }
}

async fn flush(cache: &TokenCache<Store>, pending: &mut HashMap<TokenId, Timestamp>) {
    for (id, at) in pending.drain() {
        let result = touch_update(cache, &id, |r: &TokenRecord| {
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
#[path = "usage_tests.rs"]
mod tests;
