//! Usage per token, from the request path to the store: what the path
//! hands the writer ([`Note`]), the client fingerprint it compares, and the
//! writer's batch ([`Tallies`]) that drains the cached records' counters
//! and writes one flush through [`UsageStore`].
//!
//! The request path only adds to a record's atomics ([`crate::cache::Tally`])
//! and, when a count is the first since the last flush or a client is new,
//! pushes one note into a bounded queue; everything else happens here, off
//! the path. Never blocks a request, never loses a count to a full queue
//! (the record's counter keeps it) and keeps a failed flush for the next.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;

use crate::cache::CachedRecord;
use crate::redact::redact_secrets;
use crate::refusal::DenyCode;
use crate::store::usage::{
    ClientSeen, Counts, LastRefusal, MAX_USER_AGENT, UsageDelta, UsageStore, later_refusal,
    merge_client,
};
use crate::store::{Store, StoreError};
use crate::token::TokenId;

/// A client is noted again after this long even when it is the same.
pub const SAME_CLIENT_EVERY_MS: i64 = 60_000;
/// At most one client note per token per this long, per gate.
pub const CLIENT_GAP_MS: i64 = 1_000;
/// Deltas of failed flushes kept for the next one; beyond, they are lost.
const MAX_CARRIED: usize = 100_000;

/// What the request path hands the writer.
#[derive(Debug)]
pub enum Note {
    /// This cached record counted its first request since the last flush.
    Counted(Arc<CachedRecord>),
    /// A client of a token, worth noting.
    Client {
        token: Arc<CachedRecord>,
        address: IpAddr,
        agent: Option<Box<[u8]>>,
        at: Timestamp,
    },
}

/// The deny code's place in [`DenyCode::ALL`] (what a tally stores).
pub fn code_index(code: DenyCode) -> u8 {
    DenyCode::ALL
        .iter()
        .position(|c| *c == code)
        .map_or(u8::MAX, |i| i as u8)
}

fn code_name(index: u8) -> &'static str {
    DenyCode::ALL
        .get(usize::from(index))
        .map_or("unknown", |c| c.as_str())
}

/// A 64-bit fingerprint of a client (address and user agent), cheap enough
/// for every request: no allocation, one multiply per 8 bytes.
pub fn fingerprint(address: IpAddr, agent: Option<&[u8]>) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mix = |h: u64, w: u64| (h.rotate_left(5) ^ w).wrapping_mul(K);
    let bits = match address {
        IpAddr::V4(a) => u128::from(a.to_bits()),
        IpAddr::V6(a) => a.to_bits(),
    };
    let mut h = mix(mix(0, bits as u64), (bits >> 64) as u64);
    let agent = agent.unwrap_or(b"\xff");
    let mut chunks = agent.chunks_exact(8);
    for c in &mut chunks {
        h = mix(
            h,
            u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]),
        );
    }
    let mut last = [0u8; 8];
    let rest = chunks.remainder();
    last[..rest.len()].copy_from_slice(rest);
    mix(mix(h, u64::from_le_bytes(last)), agent.len() as u64)
}

/// A user agent as kept: at most [`MAX_USER_AGENT`] bytes of text, control,
/// line-separator and bidirectional characters as `?`, anything shaped like a secret redacted.
pub fn clean_agent(agent: Option<&[u8]>) -> String {
    let Some(agent) = agent else {
        return String::new();
    };
    let text = String::from_utf8_lossy(agent);
    let mut cut = String::with_capacity(text.len().min(MAX_USER_AGENT));
    for ch in text.chars() {
        if cut.len() + ch.len_utf8() > MAX_USER_AGENT {
            break;
        }
        cut.push(if crate::redact::acts_on_a_reader(ch) {
            '?'
        } else {
            ch
        });
    }
    redact_secrets(&cut).into_owned()
}

/// The writer's pending usage: records to drain, clients noted, and what
/// a failed flush left.
#[derive(Debug, Default)]
pub struct Tallies {
    records: Vec<Arc<CachedRecord>>,
    clients: HashMap<TokenId, Vec<ClientSeen>>,
    carried: HashMap<(TokenId, u32), UsageDelta>,
}

impl Tallies {
    pub fn note(&mut self, note: Note) {
        match note {
            Note::Counted(record) => self.records.push(record),
            Note::Client {
                token,
                address,
                agent,
                at,
            } => {
                let Ok(id) = TokenId::parse(token.id()) else {
                    return;
                };
                let seen = ClientSeen {
                    address: address.to_string(),
                    user_agent: clean_agent(agent.as_deref()),
                    first_seen: at,
                    last_seen: at,
                };
                merge_client(self.clients.entry(id).or_default(), &seen);
            }
        }
    }

    /// Drains every noted record into deltas of `hour`, with the clients
    /// noted and what a failed flush left.
    pub fn take(&mut self, hour: u32) -> Vec<UsageDelta> {
        let mut out = std::mem::take(&mut self.carried);
        for record in self.records.drain(..) {
            let drained = record.tally().drain();
            let Ok(id) = TokenId::parse(record.id()) else {
                continue;
            };
            let delta = out.entry((id.clone(), hour)).or_insert_with(|| UsageDelta {
                token_id: id,
                hour,
                counts: Counts::default(),
                clients: Vec::new(),
                last_refusal: None,
            });
            delta.counts.add(Counts {
                allowed: drained.allowed,
                refused: drained.refused,
            });
            if let Some((ms, code)) = drained.refusal {
                let refusal = LastRefusal {
                    code: code_name(code).to_owned(),
                    at: Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH),
                };
                delta.last_refusal = later_refusal(delta.last_refusal.take(), Some(&refusal));
            }
        }
        for (id, clients) in self.clients.drain() {
            let delta = out.entry((id.clone(), hour)).or_insert_with(|| UsageDelta {
                token_id: id,
                hour,
                counts: Counts::default(),
                clients: Vec::new(),
                last_refusal: None,
            });
            for c in &clients {
                merge_client(&mut delta.clients, c);
            }
        }
        out.into_values()
            .filter(|d| !d.counts.is_zero() || !d.clients.is_empty() || d.last_refusal.is_some())
            .collect()
    }

    /// Keeps a batch the store refused, for the next flush (bounded).
    fn carry(&mut self, batch: Vec<UsageDelta>) -> usize {
        let mut lost = 0;
        for d in batch {
            if self.carried.len() >= MAX_CARRIED {
                lost += 1;
                continue;
            }
            let key = (d.token_id.clone(), d.hour);
            match self.carried.get_mut(&key) {
                Some(kept) => {
                    kept.counts.add(d.counts);
                    for c in &d.clients {
                        merge_client(&mut kept.clients, c);
                    }
                    kept.last_refusal =
                        later_refusal(kept.last_refusal.take(), d.last_refusal.as_ref());
                }
                None => {
                    self.carried.insert(key, d);
                }
            }
        }
        lost
    }

    /// Writes what is pending as counts of `hour`. A store that fails keeps
    /// the batch for the next flush.
    ///
    /// The batch goes in calls of at most [`UsageStore::deltas_per_call`]
    /// deltas, one after the other; when one fails, it and the rest are
    /// kept (what the earlier calls wrote is not written twice).
    pub async fn flush(&mut self, store: &Store, hour: u32, retention: Duration) {
        let mut batch = self.take(hour);
        let per_call = store.deltas_per_call().max(1);
        while !batch.is_empty() {
            let rest = batch.split_off(batch.len().min(per_call));
            if let Err(e) = store.add_usage(&batch, retention).await {
                batch.extend(rest);
                let tokens = batch.len();
                let lost = self.carry(batch);
                log_failure(&e, tokens, lost);
                return;
            }
            batch = rest;
        }
    }
}

fn log_failure(e: &StoreError, tokens: usize, lost: usize) {
    if lost > 0 {
        tracing::warn!(error = %e, tokens, lost, "usage not written; the oldest counts are dropped");
    } else {
        tracing::debug!(error = %e, tokens, "usage not written; kept for the next flush");
    }
}

#[cfg(test)]
#[path = "counts_tests.rs"]
mod tests;
