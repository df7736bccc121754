//! The audit log in Redis: one stream, `<prefix>audit`, shared by the
//! fleet. `XADD … MAXLEN ~ <audit.max_events> *` appends (Redis gives the
//! id, so two gates never collide, and trims the oldest in whole nodes);
//! `XREVRANGE` pages newest first.
//!
//! Each entry has one field, `event`: the event's JSON without its id.
//!
//! Beside it, in the stream's hash slot (`audit_index_key`), one sorted
//! set per workspace, `audit-ws:<id>`: the positions of that workspace's
//! events (members `<ms>-<seq>`, each part 20 digits so that their bytes
//! sort as the positions do; every score 0), and the set `audit-ws` of
//! the workspaces that have one. One script appends, indexes and drops
//! from the index what the stream has trimmed, so the index never lacks
//! an event the stream has and is bounded by it. A query with a workspace
//! — every token caller's — pages that set (`ZRANGE … BYLEX REV`) and
//! reads each event from the stream, so its pages never stop on, nor hand
//! back the position of, another workspace's event.

use std::sync::atomic::Ordering;
use std::time::Duration;

use redis::Value;

use super::connect::{Conn, Use};
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
        let mut append = self.inner.audit_append.key(&key);
        append
            .key(self.audit_index_key(&event.workspace_id))
            .key(self.audit_indexes_key())
            .arg(max)
            .arg(&raw[..])
            .arg(&event.workspace_id);
        let append = &append;
        self.timed_on(Use::Change, |mut conn| async move {
            let id: String = append.invoke_async(&mut conn).await.map_err(redis_err)?;
            let position: Position = id
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("XADD answered the id {id:?}")))?;
            // With replica_acks, answered once the replicas hold it too
            // (the index is in the stream's slot: one shard). Short of
            // them, the event is still written: recorded (an error would
            // have it written again), said.
            match self.replicated(&mut conn, &[&key]).await {
                Ok(()) => {}
                Err(e @ StoreError::Unconfirmed { .. }) => tracing::warn!(
                    event = %position,
                    error = %e,
                    "audit event written on the master, not yet on its replicas"
                ),
                Err(e) => return Err(e),
            }
            Ok(position)
        })
        .await
    }

    async fn audit_page(&self, query: &AuditQuery) -> Result<AuditPage, StoreError> {
        if let Some(ws) = query.workspace.as_deref() {
            return self.workspace_page(ws, query).await;
        }
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

impl RedisStore {
    /// A page of one workspace's events: its index read newest first, each
    /// event from the stream.
    async fn workspace_page(&self, ws: &str, query: &AuditQuery) -> Result<AuditPage, StoreError> {
        let key = self.audit_key();
        let index = self.audit_index_key(ws);
        let floor = query.floor();
        if query.cursor.is_some_and(|c| c <= floor) {
            return Ok(PageBuilder::new(query).end());
        }
        // What the stream trimmed since this workspace's last change goes
        // first, so that a page reads live positions.
        if let Err(e) = self.trim_index(ws).await {
            // The walk skips what is gone anyway.
            tracing::debug!(workspace = %ws, error = %e, "audit index not trimmed before a read");
        }
        let min = format!("[{}", member(floor));
        let mut page = PageBuilder::new(query);
        // The last index entry read (a trimmed event's too).
        let mut after = query.cursor;
        loop {
            let max = after.map_or_else(|| "+".to_owned(), |p| format!("({}", member(p)));
            let members: Vec<String> = self
                .timed(|mut conn| {
                    let (index, max, min) = (&index, &max, &min);
                    async move {
                        redis::cmd("ZRANGE")
                            .arg(index)
                            .arg(max)
                            .arg(min)
                            .arg("BYLEX")
                            .arg("REV")
                            .arg("LIMIT")
                            .arg(0)
                            .arg(SCAN_BATCH)
                            .query_async(&mut conn)
                            .await
                            .map_err(redis_err)
                    }
                })
                .await?;
            let full = members.len() == SCAN_BATCH;
            let positions = members
                .iter()
                .map(|m| {
                    m.parse::<Position>()
                        .map_err(|_| StoreError::Corrupt(format!("{index} holds {m:?}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            if positions.is_empty() {
                return Ok(page.end());
            }
            let entries: Vec<Vec<(String, Vec<Value>)>> = self
                .timed(|mut conn: Conn| {
                    let cmds = positions
                        .iter()
                        .map(|p| {
                            let mut cmd = redis::cmd("XRANGE");
                            cmd.arg(&key).arg(p.to_string()).arg(p.to_string());
                            cmd
                        })
                        .collect();
                    async move { conn.each(cmds).await }
                })
                .await?;
            let mut trimmed = Vec::new();
            let mut done = false;
            for (position, found) in positions.into_iter().zip(entries) {
                after = Some(position);
                let Some((_, fields)) = found.first() else {
                    // Trimmed meanwhile, or lost with a shard: counted as
                    // looked at, so that the scan bound holds.
                    trimmed.push(member(position));
                    if page.pass(position) {
                        done = true;
                        break;
                    }
                    continue;
                };
                let raw = event_field(fields).ok_or_else(|| {
                    StoreError::Corrupt(format!("{key} entry {position} has no `{FIELD}` field"))
                })?;
                let event = AuditEvent::from_stored(position, raw).map_err(StoreError::Corrupt)?;
                let full = if event.workspace_id == ws {
                    page.push(position, event)
                } else {
                    // Not this workspace's (its position reused after a
                    // lost stream): never shown here.
                    trimmed.push(member(position));
                    page.pass(position)
                };
                if full {
                    done = true;
                    break;
                }
            }
            if !trimmed.is_empty() {
                self.forget(&index, trimmed).await;
            }
            if done {
                return Ok(page.cut());
            }
            if !full {
                return Ok(page.end());
            }
        }
    }

    /// Drops from `ws`'s index what the stream has trimmed.
    async fn trim_index(&self, ws: &str) -> Result<(), StoreError> {
        let mut trim = self.inner.audit_trim.key(self.audit_key());
        trim.key(self.audit_index_key(ws))
            .key(self.audit_indexes_key())
            .arg(ws);
        let trim = &trim;
        self.timed_on(Use::Shared, |mut conn| async move {
            trim.invoke_async::<i64>(&mut conn)
                .await
                .map(drop)
                .map_err(redis_err)
        })
        .await
    }

    /// Removes index entries whose events the stream has trimmed; a failure
    /// leaves them for the next read to skip again.
    async fn forget(&self, index: &str, members: Vec<String>) {
        let members = &members;
        let removed: Result<i64, _> = self
            .timed_on(Use::Shared, |mut conn| async move {
                redis::cmd("ZREM")
                    .arg(index)
                    .arg(members)
                    .query_async(&mut conn)
                    .await
                    .map_err(redis_err)
            })
            .await;
        if let Err(e) = removed {
            tracing::debug!(error = %e, "trimmed audit events left in a workspace's index");
        }
    }

    /// Indexes under its workspace every audit event written since the
    /// last pass looked (every event, the first time): the events of gates
    /// from before the index (during a rolling upgrade too). Then drops
    /// from every workspace's index what the stream has trimmed (a
    /// workspace without changes is otherwise rid of it only when read).
    /// One gate of the fleet per `every` (a claim held that long, given
    /// back if the pass fails); answers how many events it looked at,
    /// `None` when another gate holds the claim. Idempotent: passes that
    /// overlap cost repeated work, never a wrong index.
    pub async fn index_audit_log(&self, every: Duration) -> Result<Option<u64>, StoreError> {
        let claim = self.audit_indexing_key();
        let mine = super::keys::probe_payload();
        let ms = u64::try_from(every.as_millis()).unwrap_or(u64::MAX).max(1);
        let claimed: Option<String> = self
            .timed(|mut conn| {
                let (claim, mine) = (&claim, &mine);
                async move {
                    redis::cmd("SET")
                        .arg(claim)
                        .arg(mine)
                        .arg("PX")
                        .arg(ms)
                        .arg("NX")
                        .query_async(&mut conn)
                        .await
                        .map_err(redis_err)
                }
            })
            .await?;
        if claimed.is_none() {
            return Ok(None);
        }
        match self.index_pass().await {
            Ok(looked) => Ok(Some(looked)),
            Err(e) => {
                // Let the next try (this gate's, in 30 s, or another's) run.
                let mut release = self.inner.compare_and_delete.key(&claim);
                release.arg(&mine);
                let release = &release;
                let _ = self
                    .timed(|mut conn| async move {
                        release
                            .invoke_async::<i64>(&mut conn)
                            .await
                            .map_err(redis_err)
                    })
                    .await;
                Err(e)
            }
        }
    }

    /// One indexing pass (see [`Self::index_audit_log`]).
    async fn index_pass(&self) -> Result<u64, StoreError> {
        let key = self.audit_key();
        let marker = self.audit_indexed_key();
        let indexes = self.audit_indexes_key();
        let from: Option<String> = self
            .timed(|mut conn| {
                let marker = &marker;
                async move {
                    redis::cmd("GET")
                        .arg(marker)
                        .query_async(&mut conn)
                        .await
                        .map_err(redis_err)
                }
            })
            .await?;
        let mut after = from.and_then(|p| p.parse::<Position>().ok());
        let mut looked = 0;
        loop {
            let start = after.map_or_else(|| "-".to_owned(), |p| format!("({p}"));
            let entries: Vec<(String, Vec<Value>)> = self
                .timed(|mut conn| {
                    let (key, start) = (&key, &start);
                    async move {
                        redis::cmd("XRANGE")
                            .arg(key)
                            .arg(start)
                            .arg("+")
                            .arg("COUNT")
                            .arg(SCAN_BATCH)
                            .query_async(&mut conn)
                            .await
                            .map_err(redis_err)
                    }
                })
                .await?;
            let Some((last, _)) = entries.last() else {
                break;
            };
            let last: Position = last
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("{key} holds the entry id {last:?}")))?;
            // Plain adds, a batch at a time (one slot: a pipeline on a
            // cluster too); what they add is in the stream, and the sweep
            // below drops what it trims.
            let mut adds = redis::pipe();
            for (id, fields) in &entries {
                let (Ok(position), Some(ws)) = (
                    id.parse::<Position>(),
                    event_field(fields).and_then(AuditEvent::stored_workspace),
                ) else {
                    continue;
                };
                adds.cmd("ZADD")
                    .arg(self.audit_index_key(&ws))
                    .arg(0)
                    .arg(member(position))
                    .ignore();
                adds.cmd("SADD").arg(&indexes).arg(&ws).ignore();
            }
            adds.cmd("SET").arg(&marker).arg(last.to_string()).ignore();
            let adds = &adds;
            self.timed_on(Use::Shared, |mut conn| async move {
                adds.query_async::<()>(&mut conn).await.map_err(redis_err)
            })
            .await?;
            looked += entries.len() as u64;
            after = Some(last);
        }
        // Every indexed workspace, a batch of names at a time; one that
        // cannot be trimmed now is tried again at the next pass.
        let mut cursor = 0u64;
        let mut failed = 0u32;
        loop {
            let (next, workspaces): (u64, Vec<String>) = self
                .timed(|mut conn| {
                    let indexes = &indexes;
                    async move {
                        redis::cmd("SSCAN")
                            .arg(indexes)
                            .arg(cursor)
                            .arg("COUNT")
                            .arg(SCAN_BATCH)
                            .query_async(&mut conn)
                            .await
                            .map_err(redis_err)
                    }
                })
                .await?;
            for ws in workspaces {
                if let Err(e) = self.trim_index(&ws).await {
                    failed += 1;
                    tracing::debug!(workspace = %ws, error = %e, "a workspace's audit index not trimmed");
                }
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        if failed > 0 {
            tracing::warn!(
                workspaces = failed,
                "audit indexes not trimmed this pass (the store did not answer); tried again at the next"
            );
        }
        Ok(looked)
    }
}

/// A position as a member of a workspace's index: both parts 20 digits
/// (a `u64`'s most), so that the members' bytes sort as the positions.
fn member(p: Position) -> String {
    format!("{:020}-{:020}", p.ms, p.seq)
}

/// The value of the `event` field among an entry's field/value pairs.
fn event_field(fields: &[Value]) -> Option<&[u8]> {
    fields.chunks(2).find_map(|pair| match pair {
        [Value::BulkString(k), Value::BulkString(v)] if k == FIELD.as_bytes() => Some(&v[..]),
        _ => None,
    })
}
