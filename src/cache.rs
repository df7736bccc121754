//! The token cache: moka, keyed by the token hash, in front of the store,
//! and the listener that keeps a fleet's caches honest.
//!
//! It holds found records (`cache.ttl`) and "no such token" answers
//! (`cache.negative_ttl`); concurrent misses for one hash share one store
//! read; store errors are never cached. It never decides anything: the state
//! of a cached record (expiry included) is checked by `decide` on every
//! request. A hit does no I/O and takes no lock held across an await.
//!
//! Invalidation: writes through this gate invalidate locally; with Redis, a
//! RESP3 subscription to the `events` channel invalidates what other gates
//! (or a Hawzu back-end) changed, and the whole cache is dropped when the
//! subscription comes back after a disconnect, since messages may have been
//! missed meanwhile.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use moka::future::Cache;
use moka::notification::RemovalCause;

use crate::ops::{Metrics, StoreOp};

use crate::store::{ListQuery, Page, StoreError, Stored, TokenStore};
use jiff::Timestamp;

use crate::token::{Scope, TokenHash, TokenId, TokenKind, TokenRecord};

/// Cache sizes and lifetimes.
#[derive(Debug, Clone, Copy)]
pub struct CacheOptions {
    /// Longest a found record is served from memory.
    pub ttl: Duration,
    /// Longest a "no such token" answer is served from memory.
    pub negative_ttl: Duration,
    /// Most entries held; the least useful are evicted beyond it.
    pub max_entries: u64,
}

/// A token as the cache holds it: what decisions, logs and token callers
/// of the admin API read, in as few allocations as possible (the id inline,
/// one string for the workspace, one per role), plus the moment its use was
/// last noted (see `usage`): an atomic, so noting a use takes no lock. Name,
/// creator and history stay in the store.
#[derive(Debug)]
pub struct CachedRecord {
    id: [u8; ID_LEN],
    workspace_id: Box<str>,
    scope: CachedScope,
    expires_at: Option<Timestamp>,
    disabled: bool,
    revoked: bool,
    /// `last_used_at` in ms since the epoch (`i64::MIN`: never).
    last_used_ms: i64,
    noted_ms: AtomicI64,
}

/// The scope of a cached token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CachedScope {
    Workspace { role: Box<str> },
    Project { grants: Box<[CachedGrant]> },
}

/// One project of a cached project token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedGrant {
    pub project_id: Box<str>,
    pub role: Box<str>,
}

const ID_LEN: usize = crate::token::value::ID_PREFIX.len() + crate::token::value::ID_RANDOM_LEN;

impl CachedRecord {
    pub fn new(record: &TokenRecord) -> Self {
        let mut id = [0u8; ID_LEN];
        // Token ids are validated to exactly this length at parse time.
        let src = record.id.as_str().as_bytes();
        id[..src.len().min(ID_LEN)].copy_from_slice(&src[..src.len().min(ID_LEN)]);
        let scope = match &record.scope {
            Scope::Workspace { role } => CachedScope::Workspace {
                role: role.as_str().into(),
            },
            Scope::Project { projects } => CachedScope::Project {
                grants: projects
                    .iter()
                    .map(|g| CachedGrant {
                        project_id: g.project_id.as_str().into(),
                        role: g.role.as_str().into(),
                    })
                    .collect(),
            },
        };
        Self {
            id,
            workspace_id: record.workspace_id.as_str().into(),
            scope,
            expires_at: record.expires_at,
            disabled: record.disabled_at.is_some(),
            revoked: record.revoked_at.is_some(),
            last_used_ms: record.last_used_at.map_or(i64::MIN, |t| t.as_millisecond()),
            noted_ms: AtomicI64::new(i64::MIN / 2),
        }
    }

    pub fn id(&self) -> &str {
        std::str::from_utf8(&self.id).unwrap_or("")
    }

    pub fn workspace_id(&self) -> &str {
        &self.workspace_id
    }

    pub fn scope(&self) -> &CachedScope {
        &self.scope
    }

    pub fn kind(&self) -> TokenKind {
        match self.scope {
            CachedScope::Workspace { .. } => TokenKind::Workspace,
            CachedScope::Project { .. } => TokenKind::Project,
        }
    }

    pub fn expires_at(&self) -> Option<Timestamp> {
        self.expires_at
    }

    pub fn is_disabled(&self) -> bool {
        self.disabled
    }

    pub fn is_revoked(&self) -> bool {
        self.revoked
    }

    /// `last_used_at` in ms since the epoch, if ever used.
    pub fn last_used_ms(&self) -> Option<i64> {
        (self.last_used_ms != i64::MIN).then_some(self.last_used_ms)
    }

    /// Claims the right to note a use at `now_ms` if none was noted in the
    /// last `resolution_ms`. One caller wins per interval.
    pub fn note_use(&self, now_ms: i64, resolution_ms: i64) -> bool {
        let prev = self.noted_ms.load(Ordering::Relaxed);
        now_ms - prev >= resolution_ms
            && self
                .noted_ms
                .compare_exchange(prev, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

impl PartialEq for CachedRecord {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
            && self.workspace_id == other.workspace_id
            && self.scope == other.scope
            && self.expires_at == other.expires_at
            && self.disabled == other.disabled
            && self.revoked == other.revoked
    }
}

impl Eq for CachedRecord {}

/// A cached answer of the store. Every entry lives at most `cache.ttl`
/// (one cache-wide lifetime: no per-entry timer, which costs memory); a
/// "no such token" answer also carries its own, shorter deadline, checked
/// when it is read.
#[derive(Debug, Clone)]
enum Entry {
    Found(Arc<CachedRecord>),
    Missing { until: Instant },
}

/// The store behind a cache. Reads by hash go through the cache; writes go
/// to the store and then invalidate the hash they changed.
pub struct TokenCache<S> {
    store: S,
    cache: Cache<TokenHash, Entry>,
    negative_ttl: Duration,
    metrics: Arc<Metrics>,
    /// Bumped before every invalidation, so a load that raced with one can
    /// tell (see [`TokenCache::lookup`]).
    epoch: AtomicU64,
    /// Whether the invalidation subscription is up (always true without Redis).
    subscribed: AtomicBool,
}

impl<S> std::fmt::Debug for TokenCache<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("entries", &self.cache.entry_count())
            .finish_non_exhaustive()
    }
}

impl<S: TokenStore> TokenCache<S> {
    /// A cache with its own metrics (tools and tests).
    pub fn new(store: S, options: CacheOptions) -> Self {
        Self::with_metrics(store, options, Arc::new(Metrics::new()))
    }

    pub fn with_metrics(store: S, options: CacheOptions, metrics: Arc<Metrics>) -> Self {
        let evictions = metrics.clone();
        let cache = Cache::builder()
            .max_capacity(options.max_entries)
            .time_to_live(options.ttl)
            .eviction_listener(move |_, _, cause| match cause {
                RemovalCause::Size => evictions.eviction("size"),
                RemovalCause::Expired => evictions.eviction("expired"),
                RemovalCause::Explicit | RemovalCause::Replaced => {}
            })
            .build();
        Self {
            store,
            cache,
            negative_ttl: options.negative_ttl,
            metrics,
            epoch: AtomicU64::new(0),
            subscribed: AtomicBool::new(true),
        }
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Runs one store call, counted and timed.
    async fn timed<T>(
        &self,
        op: StoreOp,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let start = Instant::now();
        let result = call.await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(StoreError::Timeout(_)) => "timeout",
            Err(_) => "error",
        };
        self.metrics.store_call(op, outcome, start.elapsed());
        result
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// The record for `hash`: from memory on a hit, else one store read
    /// shared by every concurrent caller for that hash.
    pub async fn lookup(&self, hash: &TokenHash) -> Result<Option<Arc<CachedRecord>>, StoreError> {
        // Hot path: a hit is a hash-map read; no I/O, no await on a lock.
        match self.cache.get(hash).await {
            Some(Entry::Found(record)) => {
                self.metrics.cache_hits.inc();
                return Ok(Some(record));
            }
            Some(Entry::Missing { until }) if Instant::now() < until => {
                self.metrics.cache_negative_hits.inc();
                return Ok(None);
            }
            // A "no such token" past its deadline: ask the store again.
            Some(Entry::Missing { .. }) => self.cache.invalidate(hash).await,
            None => {}
        }
        self.metrics.cache_misses.inc();
        let before = self.epoch.load(Ordering::Acquire);
        let entry = self
            .cache
            .entry(*hash)
            .or_try_insert_with(async {
                Ok::<_, StoreError>(
                    match self.timed(StoreOp::Get, self.store.get(hash)).await? {
                        Some(r) => Entry::Found(Arc::new(CachedRecord::new(&r))),
                        None => Entry::Missing {
                            until: Instant::now() + self.negative_ttl,
                        },
                    },
                )
            })
            .await
            .map_err(|e| (*e).clone())?;
        // An invalidation that arrived while this load was reading may have
        // found nothing to remove; the value just inserted could predate it.
        // Drop it (this request still uses it: it raced with the change).
        if entry.is_fresh() && self.epoch.load(Ordering::Acquire) != before {
            self.cache.invalidate(hash).await;
        }
        Ok(entry_record(entry.into_value()))
    }

    /// Forgets `hash` (a record changed).
    pub async fn invalidate(&self, hash: &TokenHash) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.cache.invalidate(hash).await;
    }

    /// Forgets everything (invalidations may have been missed).
    pub fn invalidate_all(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.cache.invalidate_all();
    }

    /// The record for `hash` when memory holds one; never reads the store.
    pub async fn cached(&self, hash: &TokenHash) -> Option<Arc<CachedRecord>> {
        match self.cache.get(hash).await {
            Some(Entry::Found(record)) => Some(record),
            _ => None,
        }
    }

    /// Entries held now (approximate; for metrics and tests).
    pub fn entry_count(&self) -> u64 {
        self.cache.entry_count()
    }

    /// Runs moka's pending maintenance (tests and metrics want exact counts).
    pub async fn sync(&self) {
        self.cache.run_pending_tasks().await;
    }

    pub fn is_subscribed(&self) -> bool {
        self.subscribed.load(Ordering::Acquire)
    }

    pub(crate) fn set_subscribed(&self, up: bool) {
        self.subscribed.store(up, Ordering::Release);
    }
}

fn entry_record(entry: Entry) -> Option<Arc<CachedRecord>> {
    match entry {
        Entry::Found(r) => Some(r),
        Entry::Missing { .. } => None,
    }
}

/// The admin API writes through the cache, so its own changes are seen at
/// once by this gate; other gates learn them from the events channel.
impl<S: TokenStore> TokenStore for TokenCache<S> {
    /// The whole record, from the store (the cache keeps a trimmed copy;
    /// decisions use [`TokenCache::lookup`]).
    async fn get(&self, hash: &TokenHash) -> Result<Option<TokenRecord>, StoreError> {
        self.timed(StoreOp::Get, self.store.get(hash)).await
    }

    async fn find(&self, id: &TokenId) -> Result<Option<Stored>, StoreError> {
        self.timed(StoreOp::Find, self.store.find(id)).await
    }

    async fn create(&self, hash: &TokenHash, record: &TokenRecord) -> Result<(), StoreError> {
        let result = self
            .timed(StoreOp::Create, self.store.create(hash, record))
            .await;
        self.invalidate(hash).await;
        result
    }

    async fn replace(&self, current: &Stored, new: &TokenRecord) -> Result<bool, StoreError> {
        let result = self
            .timed(StoreOp::Replace, self.store.replace(current, new))
            .await;
        self.invalidate(&current.hash).await;
        result
    }

    /// Not a change to any decision: the cached record stays.
    async fn touch(&self, current: &Stored, new: &TokenRecord) -> Result<bool, StoreError> {
        self.timed(StoreOp::Replace, self.store.touch(current, new))
            .await
    }

    async fn list(&self, query: ListQuery) -> Result<Page, StoreError> {
        self.timed(StoreOp::List, self.store.list(query)).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.timed(StoreOp::Ping, self.store.ping()).await
    }
}

// === invalidation listener (Redis) ===

/// Follows the Redis `events` channel and invalidates `cache` accordingly,
/// until the process ends. Resubscribes by itself after a disconnect and
/// then drops the whole cache.
pub async fn listen_for_invalidations<S: TokenStore>(
    cache: Arc<TokenCache<S>>,
    url: String,
    channel: String,
    timeout: Duration,
) {
    use redis::aio::{ConnectionManager, ConnectionManagerConfig};
    use redis::{IntoConnectionInfo, ProtocolVersion, PushKind};

    let client = match url.as_str().into_connection_info().and_then(|info| {
        let redis = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        redis::Client::open(info.set_redis_settings(redis))
    }) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "invalidation listener: bad Redis URL; cache invalidation is off");
            return;
        }
    };
    cache.set_subscribed(false);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(1)
        .set_push_sender(tx)
        .set_automatic_resubscription();

    // Connect and subscribe, retrying until Redis is there.
    let mut backoff = Duration::from_millis(100);
    let mut conn = loop {
        let attempt = async {
            let mut c = ConnectionManager::new_with_config(client.clone(), config.clone()).await?;
            c.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(c)
        };
        match tokio::time::timeout(timeout * 4, attempt).await {
            Ok(Ok(c)) => break c,
            Ok(Err(e)) => tracing::warn!(error = %e, "invalidation listener: cannot subscribe yet"),
            Err(_) => tracing::warn!("invalidation listener: Redis did not answer; retrying"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    };
    // Subscribed for the first time: nothing can have been missed before.
    tracing::info!(%channel, "invalidation listener subscribed");

    let mut connected = true;
    let mut probe = tokio::time::interval(Duration::from_millis(250));
    probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            push = rx.recv() => {
                let Some(push) = push else { return };
                match push.kind {
                    PushKind::Message => {
                        cache.metrics.invalidations.inc();
                        if let Some(hash) = push.data.get(1).and_then(event_hash) {
                            cache.invalidate(&hash).await;
                        }
                    }
                    PushKind::Subscribe => {
                        if !connected {
                            // Back after a disconnect: messages may have been
                            // missed meanwhile, so nothing cached is trusted.
                            cache.invalidate_all();
                            connected = true;
                            tracing::info!("invalidation listener resubscribed; cache dropped");
                        }
                        cache.set_subscribed(true);
                    }
                    PushKind::Disconnection => {
                        connected = false;
                        cache.set_subscribed(false);
                        tracing::warn!("invalidation listener disconnected; reconnecting");
                    }
                    _ => {}
                }
            }
            _ = probe.tick(), if !connected => {
                // The connection manager reconnects when used; resubscription
                // follows the reconnect.
                let _ = tokio::time::timeout(timeout, redis::cmd("PING").query_async::<redis::Value>(&mut conn)).await;
            }
        }
    }
}

/// The hash of an `{"op":"invalidate","hash":"<hex>"}` event.
fn event_hash(payload: &redis::Value) -> Option<TokenHash> {
    #[derive(serde::Deserialize)]
    struct Event<'a> {
        op: &'a str,
        hash: &'a str,
    }
    let bytes = match payload {
        redis::Value::BulkString(b) => b.as_slice(),
        redis::Value::SimpleString(s) => s.as_bytes(),
        _ => return None,
    };
    let event: Event<'_> = serde_json::from_slice(bytes).ok()?;
    (event.op == "invalidate")
        .then(|| TokenHash::from_hex(event.hash))
        .flatten()
}
