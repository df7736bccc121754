//! The outbox in Redis: one consumer group per webhook on the audit stream
//! (`webhook:<name>` on `<prefix>audit`), so each event goes to one gate of
//! the fleet. `XREADGROUP … >` takes new events; `XAUTOCLAIM` takes over
//! the events a gate took and left untouched for `claim_after` (it died
//! mid-delivery); `XCLAIM … JUSTID` with no idle time touches an event a
//! gate is still at; `XACK` ends it. Notices are claimed with `SET NX`.
//!
//! Every command touches one key (the stream, or a claim): Cluster-safe.
//! Never blocks a shared connection (`XREADGROUP` without `BLOCK`: the
//! caller polls).

use std::time::Duration;

use jiff::Timestamp;
use redis::Value;

use super::{RedisStore, redis_err};
use crate::audit::{AuditEvent, Position};
use crate::store::{AuditLog, Outbox, StoreError, Taken};

/// The one field of an audit stream entry (as `audit.rs` writes it).
const FIELD: &[u8] = b"event";
/// How long a notice's claim lasts before its event is in the stream.
const CLAIM_FIRST: Duration = Duration::from_secs(60);

impl Outbox for RedisStore {
    /// `XGROUP CREATE … $ MKSTREAM`: a new group starts after the last
    /// entry; an existing one (`BUSYGROUP`) is kept as it is.
    async fn outbox_open(&self, name: &str) -> Result<(), StoreError> {
        let key = self.audit_key();
        let group = Self::webhook_group(name);
        self.timed(|mut conn| async move {
            let made: redis::RedisResult<Value> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(&key)
                .arg(&group)
                .arg("$")
                .arg("MKSTREAM")
                .query_async(&mut conn)
                .await;
            match made {
                Ok(_) => Ok(()),
                Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
                Err(e) => Err(redis_err(e)),
            }
        })
        .await
    }

    async fn outbox_take(
        &self,
        name: &str,
        consumer: &str,
        claim_after: Duration,
        count: usize,
    ) -> Result<Vec<Taken>, StoreError> {
        let key = self.audit_key();
        let group = Self::webhook_group(name);
        let idle = u64::try_from(claim_after.as_millis()).unwrap_or(u64::MAX);
        let claimed: Value = self
            .timed(|mut conn| {
                let (key, group) = (&key, &group);
                async move {
                    redis::cmd("XAUTOCLAIM")
                        .arg(key)
                        .arg(group)
                        .arg(consumer)
                        .arg(idle)
                        .arg("0-0")
                        .arg("COUNT")
                        .arg(count)
                        .query_async(&mut conn)
                        .await
                        .map_err(redis_err)
                }
            })
            .await?;
        // [next start, [entries], [deleted ids]]
        let taken = match &claimed {
            Value::Array(parts) => parts.get(1).map(entries).transpose()?,
            _ => None,
        }
        .unwrap_or_default();
        if !taken.is_empty() {
            return Ok(taken);
        }
        let read: Value = self
            .timed(|mut conn| {
                let (key, group) = (&key, &group);
                async move {
                    redis::cmd("XREADGROUP")
                        .arg("GROUP")
                        .arg(group)
                        .arg(consumer)
                        .arg("COUNT")
                        .arg(count)
                        .arg("STREAMS")
                        .arg(key)
                        .arg(">")
                        .query_async(&mut conn)
                        .await
                        .map_err(redis_err)
                }
            })
            .await?;
        // [[key, [entries]]] (RESP2), or {key: [entries]} (RESP3); nil: none.
        match read {
            Value::Nil => Ok(Vec::new()),
            Value::Array(streams) => match streams.first() {
                Some(Value::Array(pair)) => pair.get(1).map_or(Ok(Vec::new()), entries),
                _ => Ok(Vec::new()),
            },
            Value::Map(streams) => streams
                .first()
                .map_or(Ok(Vec::new()), |(_, list)| entries(list)),
            other => Err(StoreError::Corrupt(format!(
                "XREADGROUP answered {other:?}"
            ))),
        }
    }

    async fn outbox_hold(
        &self,
        name: &str,
        consumer: &str,
        position: Position,
    ) -> Result<bool, StoreError> {
        let key = self.audit_key();
        let group = Self::webhook_group(name);
        let ids: Vec<String> = self
            .timed(|mut conn| async move {
                redis::cmd("XCLAIM")
                    .arg(&key)
                    .arg(&group)
                    .arg(consumer)
                    .arg(0)
                    .arg(position.to_string())
                    .arg("JUSTID")
                    .query_async(&mut conn)
                    .await
                    .map_err(redis_err)
            })
            .await?;
        Ok(!ids.is_empty())
    }

    async fn outbox_done(&self, name: &str, position: Position) -> Result<(), StoreError> {
        let key = self.audit_key();
        let group = Self::webhook_group(name);
        self.timed(|mut conn| async move {
            let _: i64 = redis::cmd("XACK")
                .arg(&key)
                .arg(&group)
                .arg(position.to_string())
                .query_async(&mut conn)
                .await
                .map_err(redis_err)?;
            Ok(())
        })
        .await
    }

    /// `XINFO CONSUMERS`, then `XGROUP DELCONSUMER` for each one gone.
    async fn outbox_prune(
        &self,
        name: &str,
        consumer: &str,
        idle: Duration,
    ) -> Result<usize, StoreError> {
        let key = self.audit_key();
        let group = Self::webhook_group(name);
        let idle = i64::try_from(idle.as_millis()).unwrap_or(i64::MAX);
        let listed: Vec<Value> = self
            .timed(|mut conn| {
                let (key, group) = (&key, &group);
                async move {
                    redis::cmd("XINFO")
                        .arg("CONSUMERS")
                        .arg(key)
                        .arg(group)
                        .query_async(&mut conn)
                        .await
                        .map_err(redis_err)
                }
            })
            .await?;
        let gone: Vec<String> = listed
            .iter()
            .filter_map(|c| {
                let fields = field_map(c);
                let text = |k: &str| match fields.iter().find(|(f, _)| f == k) {
                    Some((_, Value::BulkString(b))) => {
                        Some(String::from_utf8_lossy(b).into_owned())
                    }
                    Some((_, Value::SimpleString(s))) => Some(s.clone()),
                    _ => None,
                };
                let int = |k: &str| match fields.iter().find(|(f, _)| f == k) {
                    Some((_, Value::Int(i))) => Some(*i),
                    _ => None,
                };
                let who = text("name")?;
                (who != consumer && int("pending")? == 0 && int("idle")? >= idle).then_some(who)
            })
            .collect();
        for who in &gone {
            self.timed(|mut conn| {
                let (key, group) = (&key, &group);
                async move {
                    redis::cmd("XGROUP")
                        .arg("DELCONSUMER")
                        .arg(key)
                        .arg(group)
                        .arg(who)
                        .query_async::<i64>(&mut conn)
                        .await
                        .map_err(redis_err)
                }
            })
            .await?;
        }
        Ok(gone.len())
    }

    async fn append_once(
        &self,
        key: &str,
        until: Timestamp,
        event: &AuditEvent,
    ) -> Result<Option<Position>, StoreError> {
        let claim = self.notice_key(key);
        let first = u64::try_from(CLAIM_FIRST.as_millis()).unwrap_or(60_000);
        let set: Option<String> = self
            .timed(|mut conn| {
                let claim = &claim;
                async move {
                    redis::cmd("SET")
                        .arg(claim)
                        .arg(1)
                        .arg("PX")
                        .arg(first)
                        .arg("NX")
                        .query_async(&mut conn)
                        .await
                        .map_err(redis_err)
                }
            })
            .await?;
        if set.is_none() {
            return Ok(None);
        }
        let position = match self.append(event).await {
            Ok(p) => p,
            Err(e) => {
                // Let the next scan (of any gate) try again at once.
                let _ = self
                    .timed(|mut conn| {
                        let claim = &claim;
                        async move {
                            redis::cmd("DEL")
                                .arg(claim)
                                .query_async::<i64>(&mut conn)
                                .await
                                .map_err(redis_err)
                        }
                    })
                    .await;
                return Err(e);
            }
        };
        let until = until
            .as_millisecond()
            .max(Timestamp::now().as_millisecond() + 1);
        let kept = self
            .timed(|mut conn| {
                let claim = &claim;
                async move {
                    redis::cmd("PEXPIREAT")
                        .arg(claim)
                        .arg(until)
                        .query_async::<i64>(&mut conn)
                        .await
                        .map_err(redis_err)
                }
            })
            .await;
        // The event is in the stream: written, whatever the claim's
        // deadline (it then lapses after its first minute).
        if let Err(e) = kept {
            tracing::warn!(error = %e, key, "a notice's claim keeps only its first minute");
        }
        Ok(Some(position))
    }
}

/// The field/value pairs of an `XINFO` item (an array in RESP2, a map in
/// RESP3), field names as text.
fn field_map(item: &Value) -> Vec<(String, &Value)> {
    let name = |v: &Value| match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        _ => String::new(),
    };
    match item {
        Value::Array(flat) => flat
            .chunks(2)
            .filter_map(|kv| match kv {
                [k, v] => Some((name(k), v)),
                _ => None,
            })
            .collect(),
        Value::Map(pairs) => pairs.iter().map(|(k, v)| (name(k), v)).collect(),
        _ => Vec::new(),
    }
}

/// The entries of a stream reply: `[[id, [field, value, …]], …]`; an entry
/// deleted while pending has nil fields (it is handed out as unreadable,
/// so it gets marked done).
fn entries(list: &Value) -> Result<Vec<Taken>, StoreError> {
    let Value::Array(items) = list else {
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Value::Array(pair) = item else { continue };
        let id = match pair.first() {
            Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            Some(Value::SimpleString(s)) => s.clone(),
            _ => continue,
        };
        let position: Position = id
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("the audit stream holds the id {id:?}")))?;
        let raw = match pair.get(1) {
            Some(Value::Array(fields)) => fields.chunks(2).find_map(|kv| match kv {
                [Value::BulkString(k), Value::BulkString(v)] if k == FIELD => Some(&v[..]),
                _ => None,
            }),
            _ => None,
        };
        let event = match raw {
            Some(raw) => AuditEvent::from_stored(position, raw),
            None => Err(format!(
                "audit event {position} is gone or has no `event` field"
            )),
        };
        out.push((position, event));
    }
    Ok(out)
}
