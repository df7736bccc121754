//! The Redis store: tokens shared by a fleet of gates.
//!
//! Key schema (under `store.redis.key_prefix`, see docs/design.md):
//! `token:{hash-hex}` → record JSON, `id:{token_id}` → hash hex,
//! `ws:{workspace_id}` and `all` → sorted sets of token ids scored by
//! creation time, channel `events` → `{"op":"invalidate","hash":…}`.
//!
//! Every call is bounded by `timeout`. The connection is a
//! `ConnectionManager`, made on first use and reconnecting by itself, so a
//! gate starts even while Redis is away. Each command touches one key (the
//! compare-and-set is a one-key script), which keeps the schema usable on a
//! Redis Cluster.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Script, Value};
use tokio::sync::OnceCell;

use super::{Cursor, ListQuery, MAX_SCAN, Page, StoreError, Stored, TokenStore, created_ms};
use crate::token::{TokenHash, TokenId, TokenRecord};

/// Replaces a record only if it still holds the expected bytes.
/// ARGV: expected, new, expire-at in ms since the epoch (0 = no expiry).
const COMPARE_AND_SET: &str = r"
local current = redis.call('GET', KEYS[1])
if current ~= ARGV[1] then return 0 end
if ARGV[3] == '0' then
  redis.call('SET', KEYS[1], ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[2], 'PXAT', ARGV[3])
end
return 1
";

/// Index entries fetched per round trip while listing.
const SCAN_BATCH: usize = 200;

/// Settings of the Redis store.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// `redis://` or `rediss://` URL (may carry a password; never logged).
    pub url: String,
    pub key_prefix: String,
    /// Bound on every call, connection included.
    pub timeout: Duration,
    /// How long revoked and expired records are kept (Redis TTL).
    pub retention: Duration,
}

/// A token store in Redis.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    conn: OnceCell<ConnectionManager>,
    prefix: String,
    timeout: Duration,
    retention: Duration,
    compare_and_set: Script,
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
    /// Checks the URL; connects lazily, on first use.
    pub fn new(options: RedisOptions) -> Result<Self, StoreError> {
        let client = Client::open(options.url.as_str())
            .map_err(|e| StoreError::Unavailable(format!("invalid redis URL: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                conn: OnceCell::new(),
                prefix: options.key_prefix,
                timeout: options.timeout,
                retention: options.retention,
                compare_and_set: Script::new(COMPARE_AND_SET),
            }),
        })
    }

    /// The connection, made on first use.
    async fn conn(&self) -> Result<ConnectionManager, StoreError> {
        let inner = &self.inner;
        inner
            .conn
            .get_or_try_init(|| async {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(inner.timeout))
                    .set_response_timeout(Some(inner.timeout))
                    .set_number_of_retries(1);
                ConnectionManager::new_with_config(inner.client.clone(), config)
                    .await
                    .map_err(redis_err)
            })
            .await
            .cloned()
    }

    /// Runs `f` with a connection, the whole bounded by the store timeout.
    async fn timed<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let limit = self.inner.timeout;
        tokio::time::timeout(limit, async {
            let conn = self.conn().await?;
            f(conn).await
        })
        .await
        .unwrap_or(Err(StoreError::Timeout(limit)))
    }

    fn key(&self, kind: &str, rest: &str) -> String {
        let mut k = String::with_capacity(self.inner.prefix.len() + kind.len() + rest.len());
        k.push_str(&self.inner.prefix);
        k.push_str(kind);
        k.push_str(rest);
        k
    }

    fn token_key(&self, hash: &TokenHash) -> String {
        self.key("token:", &hash.to_hex())
    }

    fn id_key(&self, id: &str) -> String {
        self.key("id:", id)
    }

    fn index_key(&self, workspace: Option<&str>) -> String {
        match workspace {
            Some(ws) => self.key("ws:", ws),
            None => self.key("all", ""),
        }
    }

    /// The channel every gate subscribes to for invalidations.
    pub fn events_channel(&self) -> String {
        self.key("events", "")
    }

    /// The Redis key prefix of this store.
    pub fn key_prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// When Redis may drop a record: `store.retention` after it was revoked
    /// or after it expires, whichever comes first. `None`: keep it.
    fn expire_at(&self, record: &TokenRecord) -> Option<u64> {
        let retention = jiff::SignedDuration::try_from(self.inner.retention).ok()?;
        let after = |t: Timestamp| t.checked_add(retention).ok();
        let at = match (
            record.revoked_at.and_then(after),
            record.expires_at.and_then(after),
        ) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        u64::try_from(at.as_millisecond()).ok()
    }

    fn event(hash: &TokenHash) -> String {
        format!(r#"{{"op":"invalidate","hash":"{}"}}"#, hash.to_hex())
    }
}

/// `SET key value [PXAT ms]`.
fn set_cmd(key: &str, value: &[u8], expire_at: Option<u64>, nx: bool) -> redis::Cmd {
    let mut cmd = redis::cmd("SET");
    cmd.arg(key).arg(value);
    if let Some(ms) = expire_at {
        cmd.arg("PXAT").arg(ms);
    }
    if nx {
        cmd.arg("NX");
    }
    cmd
}

impl TokenStore for RedisStore {
    async fn get(&self, hash: &TokenHash) -> Result<Option<TokenRecord>, StoreError> {
        let key = self.token_key(hash);
        self.timed(|mut conn| async move {
            let raw: Option<Vec<u8>> = redis::cmd("GET")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .map_err(redis_err)?;
            raw.map(|raw| TokenRecord::from_json(&raw).map_err(StoreError::Corrupt))
                .transpose()
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

    async fn create(&self, hash: &TokenHash, record: &TokenRecord) -> Result<(), StoreError> {
        let expire_at = self.expire_at(record);
        let id_key = self.id_key(record.id.as_str());
        let token_key = self.token_key(hash);
        self.timed(|mut conn| async move {
            // The id first: once the token key exists the token works, and
            // by then the admin API can already find it by id.
            let claimed: Option<String> =
                set_cmd(&id_key, hash.to_hex().as_bytes(), expire_at, true)
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
            let _: Value = redis::pipe()
                .cmd("ZADD")
                .arg(self.index_key(Some(&record.workspace_id)))
                .arg(score)
                .arg(record.id.as_str())
                .ignore()
                .cmd("ZADD")
                .arg(self.index_key(None))
                .arg(score)
                .arg(record.id.as_str())
                .ignore()
                // A gate may hold a negative entry for this hash.
                .cmd("PUBLISH")
                .arg(self.events_channel())
                .arg(Self::event(hash))
                .ignore()
                .query_async(&mut conn)
                .await
                .map_err(redis_err)?;
            Ok(())
        })
        .await
    }

    async fn replace(&self, current: &Stored, new: &TokenRecord) -> Result<bool, StoreError> {
        self.write(current, new, true).await
    }

    async fn touch(&self, current: &Stored, new: &TokenRecord) -> Result<bool, StoreError> {
        self.write(current, new, false).await
    }

    async fn list(&self, query: ListQuery) -> Result<Page, StoreError> {
        let index = self.index_key(query.workspace.as_deref());
        let mut tokens = Vec::with_capacity(query.limit.min(SCAN_BATCH));
        let mut position = query.cursor.clone();
        let mut scanned = 0;
        loop {
            let batch = self.scan_batch(&index, position.as_ref()).await?;
            let exhausted = batch.len() < SCAN_BATCH;
            for (cursor, record) in batch {
                scanned += 1;
                position = Some(cursor);
                let Some(record) = record else { continue };
                if !query.filter.matches(&record) {
                    continue;
                }
                tokens.push(record);
                if tokens.len() == query.limit {
                    return Ok(Page {
                        tokens,
                        next: position,
                    });
                }
            }
            if exhausted {
                return Ok(Page { tokens, next: None });
            }
            if scanned >= MAX_SCAN {
                return Ok(Page {
                    tokens,
                    next: position,
                });
            }
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.timed(|mut conn| async move {
            let _: String = redis::cmd("PING")
                .query_async(&mut conn)
                .await
                .map_err(redis_err)?;
            Ok(())
        })
        .await
    }
}

impl RedisStore {
    /// Compare-and-set of one record; `notify` publishes the invalidation.
    async fn write(
        &self,
        current: &Stored,
        new: &TokenRecord,
        notify: bool,
    ) -> Result<bool, StoreError> {
        let expire_at = self.expire_at(new);

        let token_key = self.token_key(&current.hash);
        let id_key = self.id_key(new.id.as_str());
        let new_raw = new.to_json();
        self.timed(|mut conn| async move {
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
            let mut pipe = redis::pipe();
            if let Some(ms) = expire_at {
                pipe.cmd("PEXPIREAT").arg(&id_key).arg(ms).ignore();
            }
            if notify {
                pipe.cmd("PUBLISH")
                    .arg(self.events_channel())
                    .arg(Self::event(&current.hash))
                    .ignore();
            }
            let _: Value = pipe.query_async(&mut conn).await.map_err(redis_err)?;
            Ok(true)
        })
        .await
    }

    /// Up to [`SCAN_BATCH`] index entries older than `after`, newest first,
    /// each with its record. Entries whose record Redis has dropped
    /// (retention) are removed from the index on the way.
    async fn scan_batch(
        &self,
        index: &str,
        after: Option<&Cursor>,
    ) -> Result<Vec<(Cursor, Option<TokenRecord>)>, StoreError> {
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

            let mut pipe = redis::pipe();
            for (id, _) in &entries {
                pipe.cmd("GET").arg(self.id_key(id));
            }
            let hashes: Vec<Option<String>> =
                pipe.query_async(&mut conn).await.map_err(redis_err)?;
            let mut pipe = redis::pipe();
            for hex in &hashes {
                match hex {
                    Some(hex) => pipe.cmd("GET").arg(self.key("token:", hex)),
                    // Keeps positions aligned; an empty key name holds nothing.
                    None => pipe.cmd("GET").arg(self.key("token:", "")),
                };
            }
            let raws: Vec<Option<Vec<u8>>> =
                pipe.query_async(&mut conn).await.map_err(redis_err)?;

            let mut out = Vec::with_capacity(entries.len());
            let mut stale = Vec::new();
            for ((id, ms), raw) in entries.into_iter().zip(raws) {
                let record = match raw {
                    Some(raw) => Some(TokenRecord::from_json(&raw).map_err(StoreError::Corrupt)?),
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
