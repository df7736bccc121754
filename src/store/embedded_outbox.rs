//! The outbox in the embedded store: one cursor per webhook (`webhook
//! name → the last audit position done`) and the notices written once
//! (`notice key → until`), in the same redb file as the audit log.
//!
//! One gate owns the file, so there is one consumer: an event is handed
//! out again until it is marked done, and a restart resumes after the last
//! one done (a delivery cut short by a crash is sent again: at least once).
//! A notice and its claim are one write transaction: exactly once.

use std::sync::atomic::Ordering;
use std::time::Duration;

use jiff::Timestamp;
use redb::{ReadableDatabase, ReadableTable};

use super::StoreError;
use super::embedded::{AUDIT, EmbeddedStore, NOTICES, WEBHOOK_CURSORS, append_in, unavailable};
use super::outbox::{Outbox, Taken};
use crate::audit::{AuditEvent, Position};

impl Outbox for EmbeddedStore {
    /// A new cursor points at the last event now in the log.
    async fn outbox_open(&self, name: &str) -> Result<(), StoreError> {
        let name = name.to_owned();
        self.run(self.write_timeout, move |db| {
            let txn = db.begin_write().map_err(unavailable)?;
            {
                let mut cursors = txn.open_table(WEBHOOK_CURSORS).map_err(unavailable)?;
                if cursors.get(name.as_str()).map_err(unavailable)?.is_none() {
                    let log = txn.open_table(AUDIT).map_err(unavailable)?;
                    let last = log
                        .last()
                        .map_err(unavailable)?
                        .map_or((0, 0), |(k, _)| k.value());
                    cursors.insert(name.as_str(), last).map_err(unavailable)?;
                }
            }
            txn.commit().map_err(unavailable)
        })
        .await
    }

    /// The events after the cursor (one consumer: nothing to claim).
    async fn outbox_take(
        &self,
        name: &str,
        _consumer: &str,
        _claim_after: Duration,
        count: usize,
    ) -> Result<Vec<Taken>, StoreError> {
        let name = name.to_owned();
        self.run(self.read_timeout, move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let cursors = txn.open_table(WEBHOOK_CURSORS).map_err(unavailable)?;
            let Some(cursor) = cursors.get(name.as_str()).map_err(unavailable)? else {
                return Ok(Vec::new());
            };
            let (ms, seq) = cursor.value();
            let log = txn.open_table(AUDIT).map_err(unavailable)?;
            let mut out = Vec::new();
            for entry in log.range((ms, seq)..).map_err(unavailable)? {
                let (k, v) = entry.map_err(unavailable)?;
                let (ms2, seq2) = k.value();
                if (ms2, seq2) == (ms, seq) {
                    continue;
                }
                let position = Position { ms: ms2, seq: seq2 };
                out.push((position, AuditEvent::from_stored(position, v.value())));
                if out.len() >= count {
                    break;
                }
            }
            Ok(out)
        })
        .await
    }

    async fn outbox_hold(
        &self,
        _name: &str,
        _consumer: &str,
        _position: Position,
    ) -> Result<bool, StoreError> {
        Ok(true)
    }

    /// Moves the cursor to `position` (never back).
    async fn outbox_done(&self, name: &str, position: Position) -> Result<(), StoreError> {
        let name = name.to_owned();
        self.run(self.write_timeout, move |db| {
            let txn = db.begin_write().map_err(unavailable)?;
            {
                let mut cursors = txn.open_table(WEBHOOK_CURSORS).map_err(unavailable)?;
                let at = cursors
                    .get(name.as_str())
                    .map_err(unavailable)?
                    .map(|v| v.value());
                if at.is_none_or(|at| at < (position.ms, position.seq)) {
                    cursors
                        .insert(name.as_str(), (position.ms, position.seq))
                        .map_err(unavailable)?;
                }
            }
            txn.commit().map_err(unavailable)
        })
        .await
    }

    /// One consumer: nobody to forget.
    async fn outbox_prune(
        &self,
        _name: &str,
        _consumer: &str,
        _idle: Duration,
    ) -> Result<usize, StoreError> {
        Ok(0)
    }

    /// The claim and the event in one transaction; claims past their
    /// `until` are pruned on the way.
    async fn append_once(
        &self,
        key: &str,
        until: Timestamp,
        event: &AuditEvent,
    ) -> Result<Option<Position>, StoreError> {
        let key = key.to_owned();
        let raw = event.to_stored();
        let max = self.audit_max();
        let now = Timestamp::now();
        let until = u64::try_from(until.as_millisecond()).unwrap_or(0);
        let now_ms = u64::try_from(now.as_millisecond()).unwrap_or(0);
        // Lapsed claims are pruned once a minute, not on every call: a
        // disable or revoke writes one.
        let minute = now_ms / 60_000;
        let prune = self.pruned_minute.swap(minute, Ordering::Relaxed) != minute;
        self.run(self.write_timeout, move |db| {
            let txn = db.begin_write().map_err(unavailable)?;
            let written = {
                let mut notices = txn.open_table(NOTICES).map_err(unavailable)?;
                if prune {
                    notices
                        .retain(|_, until| until >= now_ms)
                        .map_err(unavailable)?;
                }
                let held = notices
                    .get(key.as_str())
                    .map_err(unavailable)?
                    .is_some_and(|until| until.value() >= now_ms);
                if held {
                    None
                } else {
                    notices.insert(key.as_str(), until).map_err(unavailable)?;
                    Some(append_in(&txn, &raw, max, Position::at(now))?)
                }
            };
            txn.commit().map_err(unavailable)?;
            Ok(written)
        })
        .await
    }
}
