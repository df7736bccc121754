//! The audit log in Redis: one stream, `<prefix>audit`, shared by the
//! fleet. `XADD … MAXLEN ~ <audit.max_events> *` appends (Redis gives the
//! id, so two gates never collide, and trims the oldest in whole nodes);
//! `XREVRANGE` pages newest first. One key per command: Cluster-safe.
//!
//! Each entry has one field, `event`: the event's JSON without its id.

use std::sync::atomic::Ordering;

use redis::Value;

use super::connect::Use;
use super::{RedisStore, redis_err};
use crate::audit::{AuditEvent, AuditPage, AuditQuery, PageBuilder, Position};
use crate::store::{AuditLog, StoreError};

/// Stream entries fetched per round trip while paging.
const SCAN_BATCH: usize = 200;
/// The one field of a stream entry.
const FIELD: &str = "event";

impl RedisStore {
    /// The audit stream.
    pub fn audit_key(&self) -> String {
        self.key("audit", "")
    }

    /// Keeps about the last `n` audit events (at least one): Redis trims
    /// in whole stream nodes, so a few more may stay.
    pub fn with_audit_max_events(self, n: u64) -> Self {
        self.inner.audit_max.store(n.max(1), Ordering::Relaxed);
        self
    }
}

impl AuditLog for RedisStore {
    async fn append(&self, event: &AuditEvent) -> Result<Position, StoreError> {
        let key = self.audit_key();
        let raw = event.to_stored();
        let max = self.inner.audit_max.load(Ordering::Relaxed);
        self.timed_on(Use::Change, |mut conn| async move {
            let id: String = redis::cmd("XADD")
                .arg(&key)
                .arg("MAXLEN")
                .arg("~")
                .arg(max)
                .arg("*")
                .arg(FIELD)
                .arg(&raw[..])
                .query_async(&mut conn)
                .await
                .map_err(redis_err)?;
            // With replica_acks, answered once the replicas hold it too.
            self.replicated(&mut conn, &[&key]).await?;
            id.parse()
                .map_err(|_| StoreError::Corrupt(format!("XADD answered the id {id:?}")))
        })
        .await
    }

    async fn audit_page(&self, query: &AuditQuery) -> Result<AuditPage, StoreError> {
        let key = self.audit_key();
        let floor = query.floor();
        if query.cursor.is_some_and(|c| c <= floor) {
            return Ok(PageBuilder::new(query).end());
        }
        let mut page = PageBuilder::new(query);
        loop {
            // Exclusive of the last position looked at (Redis 6.2+).
            let end = page
                .position()
                .map_or_else(|| "+".to_owned(), |p| format!("({p}"));
            // One bounded call per batch, as token lists do.
            let entries: Vec<(String, Vec<Value>)> = self
                .timed(|mut conn| {
                    let (key, end) = (&key, &end);
                    async move {
                        redis::cmd("XREVRANGE")
                            .arg(key)
                            .arg(end)
                            .arg(floor.to_string())
                            .arg("COUNT")
                            .arg(SCAN_BATCH)
                            .query_async(&mut conn)
                            .await
                            .map_err(redis_err)
                    }
                })
                .await?;
            let full = entries.len() == SCAN_BATCH;
            for (id, fields) in entries {
                let position: Position = id
                    .parse()
                    .map_err(|_| StoreError::Corrupt(format!("{key} holds the entry id {id:?}")))?;
                let raw = event_field(&fields).ok_or_else(|| {
                    StoreError::Corrupt(format!("{key} entry {id} has no `{FIELD}` field"))
                })?;
                let event = AuditEvent::from_stored(position, raw).map_err(StoreError::Corrupt)?;
                if page.push(position, event) {
                    return Ok(page.cut());
                }
            }
            if !full {
                return Ok(page.end());
            }
        }
    }
}

/// The value of the `event` field among an entry's field/value pairs.
fn event_field(fields: &[Value]) -> Option<&[u8]> {
    fields.chunks(2).find_map(|pair| match pair {
        [Value::BulkString(k), Value::BulkString(v)] if k == FIELD.as_bytes() => Some(&v[..]),
        _ => None,
    })
}
