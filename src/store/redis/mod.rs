//! The Redis store: tokens shared by a fleet of gates.
//!
//! Key schema (under `store.redis.key_prefix`, see docs/design.md):
//! `token:{hash-hex}` → record JSON, `id:{token_id}` → hash hex,
//! `ws:{workspace_id}` and `all` → sorted sets of token ids scored by
//! creation time, channel `events` → `{"op":"invalidate","hash":…}`,
//! stream `audit` → the audit log (`audit`), read by webhooks through
//! consumer groups `webhook:<name>`; beside it, in its slot, sorted sets
//! `audit-ws:{workspace_id}` (its events' positions), the set
//! `audit-ws` of indexed workspaces, `audit-indexed`/`audit-indexing`
//! (the indexing of events written without the index); `notice:{key}` →
//! a notice's claim (`outbox`).
//!
//! Every call is bounded by `timeout`; a token change runs to its end in a
//! task of its own (up to ten timeouts, its caller waiting one) so that a
//! change Redis took is always told. Three topologies (`store.redis.mode`):
//! a standalone server (`ConnectionManager`s, reconnecting by themselves), a
//! Sentinel set-up (a `ConnectionManager` to the master the sentinels name,
//! looked up again after any failure, since a fail-over moves it) and a
//! Redis Cluster (the `redis` crate's cluster connection, which follows
//! `MOVED` and fail-overs). Connections are made on first use, so a gate
//! starts even while Redis is away. Each command touches one key (the
//! compare-and-set is a one-key script), but the audit log's scripts, whose
//! keys share the stream's hash slot; what a standalone server gets as a
//! pipeline, a cluster gets as concurrent single commands, since a pipeline
//! may not span hash slots. In cluster mode the events go over sharded
//! pub/sub (`SPUBLISH`/`SSUBSCRIBE`): one shard carries them instead of the
//! whole cluster bus.
//!
//! By job: `connect` (the three topologies, a bounded call on a connection,
//! `WAIT` for replicas), `shards` (whether every cluster shard answers a
//! read: readiness), `keys` (the key schema and the events' wire format),
//! `scripts` (the Lua and the `SET` forms), `events` (publishing and
//! following the events channel: the [`ChangeFeed`]), `subscriber` (the
//! subscription connection per topology). This file holds the store and its
//! [`TokenStore`] calls. The key schema and the wire format are part of the
//! contract (docs/design.md § Stores): a change there strands other gates.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use redis::{Script, Value};

use super::list::{Batch, readable};
use super::{Cursor, ListQuery, Page, StoreError, Stored, TokenStore, created_ms, paginate};
use crate::token::{TokenHash, TokenId, TokenRecord};

mod audit;
mod chores;
mod connect;
mod events;
mod keys;
mod outbox;
mod scripts;
mod shards;
mod subscriber;
mod usage;

pub use self::connect::Topology;
use self::connect::{Conn, Target, Use};
use self::scripts::{
    COMPARE_AND_DELETE, COMPARE_AND_SET, HOLD_CHORE, audit_append, audit_trim, set_cmd,
};
pub use self::usage::USAGE_DELTAS_PER_PIPELINE;

/// Index entries fetched per round trip while listing.
const SCAN_BATCH: usize = 200;

/// Settings of the Redis store. `Debug` never shows a password.
#[derive(Clone)]
pub struct RedisOptions {
    /// `redis://` or `rediss://` URL (may carry a password; never logged).
    pub url: String,
    pub key_prefix: String,
    /// Bound on every call, connection included.
    pub timeout: Duration,
    /// How long revoked and expired records are kept (Redis TTL).
    pub retention: Duration,
}

impl std::fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisOptions")
            .field("url", &crate::redact::redact_url(&self.url))
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .field("retention", &self.retention)
            .finish()
    }
}

/// A token store in Redis.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    target: Target,
    /// `WAIT` for this many replicas after each admin change (Sentinel).
    replica_acks: u32,
    /// A cluster without `replica_acks`: each change waits for every
    /// replica its shard's master has connected.
    follow_replicas: bool,
    prefix: String,
    topology: Topology,
    timeout: Duration,
    retention: Duration,
    compare_and_set: Script,
    /// The record key, and the id key, deleted while they hold what was
    /// read; a fleet chore given up by its holder.
    compare_and_delete: Script,
    /// A fleet chore taken, or its hold extended (`chores`).
    hold_chore: Script,
    /// This store's value in the chores it holds (one per gate).
    chore_holder: String,
    /// The audit stream keeps about this many events (`audit.max_events`).
    audit_max: AtomicU64,
    /// An audit event appended and indexed under its workspace.
    audit_append: Script,
    /// A workspace's audit index rid of what the stream has trimmed.
    audit_trim: Script,
    /// The part of the audit stream's key that places it in a slot, which
    /// its workspaces' indexes share (see `audit_index_key`).
    audit_slot: String,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.inner.prefix)
            .finish_non_exhaustive()
    }
}

fn redis_err(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(format!("redis: {e}"))
}

impl RedisStore {
    /// A standalone server at `options.url`. Checks the URL; connects
    /// lazily, on first use.
    pub fn new(options: RedisOptions) -> Result<Self, StoreError> {
        let topology = Topology::Standalone {
            url: options.url.clone(),
            ca: None,
        };
        Self::with_topology(topology, options)
    }

    /// A store on `topology` (`options.url` is not used). Checks the
    /// addresses; connects lazily, on first use.
    pub fn with_topology(topology: Topology, options: RedisOptions) -> Result<Self, StoreError> {
        let target = Target::new(&topology, options.timeout)?;
        let audit_slot = keys::audit_slot(&options.key_prefix)?;
        let (replica_acks, follow_replicas) = match &topology {
            Topology::Sentinel { replica_acks, .. } => (*replica_acks, false),
            Topology::Cluster { replica_acks, .. } => {
                (replica_acks.unwrap_or(0), replica_acks.is_none())
            }
            Topology::Standalone { .. } => (0, false),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                target,
                replica_acks,
                follow_replicas,
                topology,
                prefix: options.key_prefix,
                timeout: options.timeout,
                retention: options.retention,
                compare_and_set: Script::new(COMPARE_AND_SET),
                compare_and_delete: Script::new(COMPARE_AND_DELETE),
                hold_chore: Script::new(HOLD_CHORE),
                chore_holder: chores::holder_value(),
                audit_max: AtomicU64::new(crate::audit::DEFAULT_MAX_EVENTS),
                audit_append: Script::new(&audit_append()),
                audit_trim: Script::new(&audit_trim()),
                audit_slot,
            }),
        })
    }

    /// Where this store's Redis is.
    pub fn topology(&self) -> &Topology {
        &self.inner.topology
    }
}

impl TokenStore for RedisStore {
    async fn get(&self, hash: &TokenHash) -> Result<Option<TokenRecord>, StoreError> {
        let key = self.token_key(hash);
        self.timed(|mut conn| async move {
            let mut get = redis::cmd("GET");
            get.arg(&key);
            let raw: Option<Vec<u8>> = match get.query_async(&mut conn).await {
                // The connection was found closed (a restart, `CLIENT
                // KILL`): one more try on the reconnected one, within the
                // same bound. A read, so a retry is harmless.
                Err(e) if e.is_connection_dropped() => {
                    get.query_async(&mut conn).await.map_err(redis_err)?
                }
                other => other.map_err(redis_err)?,
            };
            raw.map(|raw| TokenRecord::from_json(&raw).map_err(StoreError::Corrupt))
                .transpose()
        })
        .await
    }

    async fn get_stored(&self, hash: &TokenHash) -> Result<Option<Stored>, StoreError> {
        let key = self.token_key(hash);
        self.timed(|mut conn| async move {
            let raw: Option<Vec<u8>> = redis::cmd("GET")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .map_err(redis_err)?;
            let Some(raw) = raw else { return Ok(None) };
            let record = TokenRecord::from_json(&raw).map_err(StoreError::Corrupt)?;
            Ok(Some(Stored {
                hash: *hash,
                record,
                raw,
            }))
        })
        .await
    }

    async fn find(&self, id: &TokenId) -> Result<Option<Stored>, StoreError> {
        let id_key = self.id_key(id.as_str());
        self.timed(|mut conn| async move {
            let hex: Option<String> = redis::cmd("GET")
                .arg(&id_key)
                .query_async(&mut conn)
                .await
                .map_err(redis_err)?;
            let Some(hex) = hex else { return Ok(None) };
            let hash = TokenHash::from_hex(&hex)
                .ok_or_else(|| StoreError::Corrupt(format!("{id_key} holds no hash")))?;
            let raw: Option<Vec<u8>> = redis::cmd("GET")
                .arg(self.token_key(&hash))
                .query_async(&mut conn)
                .await
                .map_err(redis_err)?;
            let Some(raw) = raw else { return Ok(None) };
            let record = TokenRecord::from_json(&raw).map_err(StoreError::Corrupt)?;
            Ok(Some(Stored { hash, record, raw }))
        })
        .await
    }

    /// Runs to its end even when its caller stops waiting
    /// ([`Self::landing`]); a token stored whose answer did not reach the
    /// caller as made (a timeout, an error after the record was written,
    /// a caller gone) is withdrawn: nobody was given its secret.
    async fn create(&self, hash: &TokenHash, record: &TokenRecord) -> Result<(), StoreError> {
        let (hash, record) = (*hash, record.clone());
        let made = record.clone();
        self.landing(
            move |store, conn| async move { store.create_on(conn, &hash, &record).await },
            move |store, result, heard| async move {
                let unshown = match result {
                    Ok(()) => !heard,
                    Err(StoreError::Conflict) => false,
                    Err(_) => true,
                };
                if unshown {
                    super::withdraw(&store, &hash, &made, super::UNCREATED).await;
                }
            },
        )
        .await
    }

    async fn replace(&self, current: &Stored, new: &TokenRecord) -> Result<bool, StoreError> {
        self.write(current, new, true).await
    }

    /// The same record again (a compare-and-set, so a newer change is never
    /// overwritten), its event, and with `replica_acks` the wait: a retry
    /// of a change whose first try timed out after Redis took it (so its
    /// event was never sent) now tells the gates, and the replicas hold it.
    async fn confirm(&self, current: &Stored) -> Result<bool, StoreError> {
        self.write(current, &current.record, true).await
    }

    async fn touch(&self, current: &Stored, new: &TokenRecord) -> Result<bool, StoreError> {
        self.write(current, new, false).await
    }

    /// The record by compare-and-delete, then its id key (while it names
    /// this record), its index entries and an event; one key a command,
    /// as every write here. Runs to its end even when its caller stops
    /// waiting ([`Self::landing`]).
    async fn remove(&self, current: &Stored) -> Result<bool, StoreError> {
        let current = current.clone();
        self.landing(
            move |store, conn| async move { store.remove_on(conn, &current).await },
            |_, _, _| async {},
        )
        .await
    }

    async fn list(&self, query: ListQuery) -> Result<Page, StoreError> {
        let index = self.index_key(query.workspace.as_deref());
        let index = index.as_str();
        paginate(&query, SCAN_BATCH, |after| async move {
            self.scan_batch(index, after.as_ref()).await
        })
        .await
    }

    /// A server answers `PING`; a cluster answers a read on every shard
    /// (`shards`: a `PING` to all masters skips one the client forgot).
    async fn ping(&self) -> Result<(), StoreError> {
        let prefix = self.inner.prefix.as_str();
        self.timed(|mut conn| async move {
            if let Conn::Cluster(c) = &conn {
                return shards::every_shard_reads(c, prefix).await;
            }
            let _: String = redis::cmd("PING")
                .query_async(&mut conn)
                .await
                .map_err(redis_err)?;
            Ok(())
        })
        .await?;
        // Boxed, as every call's connection work (`timed`): the callers'
        // futures stay shallow.
        Box::pin(self.touch_changes()).await;
        Ok(())
    }
}

/// How long [`RedisStore::touch_changes`] waits for its `PING`.
const TOUCH: Duration = Duration::from_millis(50);

impl RedisStore {
    /// A `PING` on the changes' own connection (standalone and Sentinel),
    /// its answer not the store's (a `WAIT` may hold that connection): a
    /// connection Redis closed (a restart) answers its next command with
    /// an error and then reconnects, and that command is now this one,
    /// not the next admin change.
    async fn touch_changes(&self) {
        if let Ok((mut conn @ Conn::Single(_), _)) = self.conn(Use::Change).await {
            let ping = redis::cmd("PING");
            let _ = tokio::time::timeout(TOUCH, ping.query_async::<Value>(&mut conn)).await;
        }
    }

    /// Redis's `maxmemory-policy` (`INFO memory`) on the server a plain
    /// command reaches, or on a Cluster the first policy other than
    /// `noeviction` any node reports; `None` when the server does not say.
    pub async fn eviction_policy(&self) -> Result<Option<String>, StoreError> {
        self.timed(|mut conn| async move {
            let info: Value = redis::cmd("INFO")
                .arg("memory")
                .query_async(&mut conn)
                .await
                .map_err(redis_err)?;
            let mut policies = Vec::new();
            info_field(&info, "maxmemory_policy", &mut policies);
            Ok(policies
                .iter()
                .find(|p| *p != "noeviction")
                .or(policies.first())
                .cloned())
        })
        .await
    }

    /// [`TokenStore::create`] on `conn`.
    async fn create_on(
        &self,
        mut conn: Conn,
        hash: &TokenHash,
        record: &TokenRecord,
    ) -> Result<(), StoreError> {
        let expire_at = self.expire_at(record);
        let id_key = self.id_key(record.id.as_str());
        let token_key = self.token_key(hash);
        // The id first: once the token key exists the token works, and
        // by then the admin API can already find it by id.
        let claimed: Option<String> = set_cmd(&id_key, hash.to_hex().as_bytes(), expire_at, true)
            .query_async(&mut conn)
            .await
            .map_err(redis_err)?;
        if claimed.is_none() {
            return Err(StoreError::Conflict);
        }
        let stored: Option<String> = set_cmd(&token_key, &record.to_json(), expire_at, true)
            .query_async(&mut conn)
            .await
            .map_err(redis_err)?;
        if stored.is_none() {
            let _: Value = redis::cmd("DEL")
                .arg(&id_key)
                .query_async(&mut conn)
                .await
                .map_err(redis_err)?;
            return Err(StoreError::Conflict);
        }
        let score = created_ms(record);
        let zadd = |index: String| {
            let mut cmd = redis::cmd("ZADD");
            cmd.arg(index).arg(score).arg(record.id.as_str());
            cmd
        };
        let _: Vec<Value> = conn
            .each(vec![
                zadd(self.index_key(Some(&record.workspace_id))),
                zadd(self.index_key(None)),
            ])
            .await?;
        // A gate may hold a negative entry for this hash.
        self.publish_on(&mut conn, hash).await?;
        self.replicated(&mut conn, &[&token_key, &id_key]).await
    }

    /// [`TokenStore::remove`] on `conn`.
    async fn remove_on(&self, mut conn: Conn, current: &Stored) -> Result<bool, StoreError> {
        let token_key = self.token_key(&current.hash);
        let id_key = self.id_key(current.record.id.as_str());
        let hex = current.hash.to_hex();
        let id = current.record.id.as_str();
        let deleted: i64 = self
            .inner
            .compare_and_delete
            .key(&token_key)
            .arg(&current.raw[..])
            .invoke_async(&mut conn)
            .await
            .map_err(redis_err)?;
        if deleted == 0 {
            return Ok(false);
        }
        let _: i64 = self
            .inner
            .compare_and_delete
            .key(&id_key)
            .arg(hex.as_bytes())
            .invoke_async(&mut conn)
            .await
            .map_err(redis_err)?;
        let zrem = |index: String| {
            let mut cmd = redis::cmd("ZREM");
            cmd.arg(index).arg(id);
            cmd
        };
        let _: Vec<Value> = conn
            .each(vec![
                zrem(self.index_key(Some(&current.record.workspace_id))),
                zrem(self.index_key(None)),
            ])
            .await?;
        self.publish_on(&mut conn, &current.hash).await?;
        Ok(true)
    }

    /// Compare-and-set of one record; `notify` publishes the invalidation
    /// (a change: it runs to its end even when its caller stops waiting,
    /// [`Self::landing`]; a touch does not).
    async fn write(
        &self,
        current: &Stored,
        new: &TokenRecord,
        notify: bool,
    ) -> Result<bool, StoreError> {
        if !notify {
            return self
                .timed(|conn| self.write_on(conn, current, new, false))
                .await;
        }
        let (current, new) = (current.clone(), new.clone());
        self.landing(
            move |store, conn| async move { store.write_on(conn, &current, &new, true).await },
            |_, _, _| async {},
        )
        .await
    }

    /// [`Self::write`] on `conn`.
    async fn write_on(
        &self,
        mut conn: Conn,
        current: &Stored,
        new: &TokenRecord,
        notify: bool,
    ) -> Result<bool, StoreError> {
        let expire_at = self.expire_at(new);
        let token_key = self.token_key(&current.hash);
        let id_key = self.id_key(new.id.as_str());
        let new_raw = new.to_json();
        let swapped: i64 = self
            .inner
            .compare_and_set
            .key(&token_key)
            .arg(&current.raw[..])
            .arg(&new_raw[..])
            .arg(expire_at.unwrap_or(0))
            .invoke_async(&mut conn)
            .await
            .map_err(redis_err)?;
        if swapped == 0 {
            return Ok(false);
        }
        // The change has landed: every gate hears of it before anything
        // else is written. Had the writes below come first, one failing
        // would leave the change unheard, and other gates serving their
        // cached record for a `cache.ttl`. A
        // publish that fails still leaves them written (then the error
        // is answered: the caller tries again).
        let published = if notify {
            self.publish_on(&mut conn, &current.hash).await
        } else {
            Ok(())
        };
        // The id key lives as long as the record: its deadline moved
        // with the record's on a change, and dropped when the record's
        // is — or the token could no longer be found by id once the old
        // deadline passed. A change writes it whole: that mends a drop
        // an earlier write could not make, and a key Redis lost
        // (evicted — a `volatile-*` policy evicts only keys with a
        // deadline, and an id key is rarely read —, or a fail-over
        // before it replicated), without which the token could not be
        // shown, listed, disabled or revoked by id. A `last_used_at`
        // write (a touch, which reads the record by its hash and moves
        // no deadline) makes it only where it is missing (`NX`, so that
        // it never undoes a change's deadline it raced with): a lost
        // key is mended at the token's next use.
        let set = set_cmd(
            &id_key,
            current.hash.to_hex().as_bytes(),
            expire_at,
            !notify,
        );
        let made: Option<String> = set.query_async(&mut conn).await.map_err(redis_err)?;
        // The index entries too (idempotent) on a change, and on a
        // touch that found the id key lost: a list that found it lost
        // took them for a dropped record's.
        if notify || made.is_some() {
            let score = created_ms(new);
            let zadd = |index: String| {
                let mut cmd = redis::cmd("ZADD");
                cmd.arg(index).arg(score).arg(new.id.as_str());
                cmd
            };
            let _: Vec<Value> = conn
                .each(vec![
                    zadd(self.index_key(Some(&new.workspace_id))),
                    zadd(self.index_key(None)),
                ])
                .await?;
        }
        published?;
        if notify {
            self.replicated(&mut conn, &[&token_key, &id_key]).await?;
        }
        Ok(true)
    }

    /// Up to [`SCAN_BATCH`] index entries older than `after`, newest first,
    /// each with its record. Entries whose record Redis has dropped
    /// (retention) are removed from the index on the way.
    async fn scan_batch(&self, index: &str, after: Option<&Cursor>) -> Result<Batch, StoreError> {
        self.timed(|mut conn| async move {
            // Sorted-set order is (score, member); newest first is the reverse.
            // Entries tied with the cursor's score are filtered here, reading
            // further while a whole batch was tied.
            let max = after.map_or_else(|| "+inf".to_owned(), |c| c.created_ms.to_string());
            let mut entries: Vec<(String, u64)> = Vec::with_capacity(SCAN_BATCH);
            let mut offset = 0;
            loop {
                let raw: Vec<(String, f64)> = redis::cmd("ZREVRANGEBYSCORE")
                    .arg(index)
                    .arg(&max)
                    .arg("-inf")
                    .arg("WITHSCORES")
                    .arg("LIMIT")
                    .arg(offset)
                    .arg(SCAN_BATCH)
                    .query_async(&mut conn)
                    .await
                    .map_err(redis_err)?;
                let full = raw.len() == SCAN_BATCH;
                offset += raw.len();
                entries.extend(
                    raw.into_iter()
                        .map(|(id, score)| (id, score as u64))
                        .filter(|(id, ms)| match after {
                            Some(c) => *ms < c.created_ms || id.as_str() < c.id.as_str(),
                            None => true,
                        }),
                );
                if entries.len() >= SCAN_BATCH || !full {
                    break;
                }
            }
            entries.truncate(SCAN_BATCH);
            if entries.is_empty() {
                return Ok(Vec::new());
            }

            let get = |key: String| {
                let mut cmd = redis::cmd("GET");
                cmd.arg(key);
                cmd
            };
            let hashes: Vec<Option<String>> = conn
                .each(entries.iter().map(|(id, _)| get(self.id_key(id))).collect())
                .await?;
            let raws: Vec<Option<Vec<u8>>> = conn
                .each(
                    hashes
                        .iter()
                        // An empty key name holds nothing; keeps positions aligned.
                        .map(|hex| get(self.key("token:", hex.as_deref().unwrap_or(""))))
                        .collect(),
                )
                .await?;

            let mut out = Vec::with_capacity(entries.len());
            let mut stale = Vec::new();
            for ((id, ms), raw) in entries.into_iter().zip(raws) {
                let record = match raw {
                    Some(raw) => readable(&id, &raw),
                    None => {
                        stale.push(id.clone());
                        None
                    }
                };
                let id = TokenId::parse(&id).map_err(|_| {
                    StoreError::Corrupt(format!("index {index} holds a bad token id {id:?}"))
                })?;
                out.push((Cursor { created_ms: ms, id }, record));
            }
            if !stale.is_empty() {
                let _: Value = redis::cmd("ZREM")
                    .arg(index)
                    .arg(&stale)
                    .query_async(&mut conn)
                    .await
                    .map_err(redis_err)?;
            }
            Ok(out)
        })
        .await
    }
}

/// Every value of `field` in an `INFO` answer: one text, or (a Cluster's
/// answer from every node) a map or list of them.
fn info_field(info: &Value, field: &str, found: &mut Vec<String>) {
    match info {
        Value::BulkString(b) => {
            let text = String::from_utf8_lossy(b);
            found.extend(
                text.lines()
                    .filter_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
                    .map(|v| v.trim().to_owned()),
            );
        }
        Value::VerbatimString { text, .. } | Value::SimpleString(text) => {
            info_field(&Value::BulkString(text.clone().into_bytes()), field, found);
        }
        Value::Array(items) | Value::Set(items) => {
            for i in items {
                info_field(i, field, found);
            }
        }
        Value::Map(pairs) => {
            for (_, v) in pairs {
                info_field(v, field, found);
            }
        }
        _ => {}
    }
}
