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

use crate::metrics::{Metrics, StoreOp};

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
    /// How long past `ttl` a found record may still be served while the
    /// store fails (zero: never). See [`TokenCache::lookup`].
    pub stale_if_error: Duration,
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
    /// When the token stops working for good (a rotation's overlap ends at
    /// a future instant), so a cached record is refused after it with no
    /// store read.
    revoked_at: Option<Timestamp>,
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
            revoked_at: record.revoked_at,
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

    /// When the token is (or will be) revoked.
    pub fn revoked_at(&self) -> Option<Timestamp> {
        self.revoked_at
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
            && self.revoked_at == other.revoked_at
    }
}

impl Eq for CachedRecord {}

/// A cached answer of the store. Every entry lives at most `cache.ttl` +
/// `cache.stale_if_error` (one cache-wide lifetime: no per-entry timer,
/// which costs memory); a found record is fresh until `cache.ttl` after it
/// was read, a "no such token" answer carries its own, shorter deadline;
/// both checked when read.
#[derive(Debug, Clone)]
enum Entry {
    Found {
        record: Arc<CachedRecord>,
        fresh_until: Instant,
    },
    Missing {
        until: Instant,
    },
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
    ttl: Duration,
    stale_if_error: Duration,
    /// Concurrent refreshes of one stale record share one store read.
    refreshes: Cache<TokenHash, Entry>,
    /// Until when (ms after `started`) the store counts as failing: stale
    /// records are then served without asking it again.
    failing_until_ms: AtomicU64,
    started: Instant,
}

/// How long one store failure lets stale records be served without a new
/// attempt (any uncached lookup keeps probing meanwhile).
const FAILING_FOR: Duration = Duration::from_secs(1);

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
            .time_to_live(options.ttl.saturating_add(options.stale_if_error))
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
            ttl: options.ttl,
            stale_if_error: options.stale_if_error,
            refreshes: Cache::builder()
                .max_capacity(options.max_entries.min(100_000))
                .time_to_live(Duration::from_secs(5))
                .build(),
            failing_until_ms: AtomicU64::new(0),
            started: Instant::now(),
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
    ///
    /// With `stale_if_error`, a found record past `ttl` (and within
    /// `ttl + stale_if_error`) is read again; only if that read fails
    /// (error or timeout) is the old record served, and only if nothing
    /// invalidated it meanwhile. `decide` still checks its expiry, disabled
    /// and revoked state on every request.
    pub async fn lookup(&self, hash: &TokenHash) -> Result<Option<Arc<CachedRecord>>, StoreError> {
        // Hot path: a hit is a hash-map read; no I/O, no await on a lock.
        let mut stale = None;
        match self.cache.get(hash).await {
            Some(Entry::Found {
                record,
                fresh_until,
            }) => {
                if self.stale_if_error.is_zero() || Instant::now() < fresh_until {
                    self.metrics.cache_hits.inc();
                    return Ok(Some(record));
                }
                if self.store_failing() {
                    self.metrics.cache_stale_served.inc();
                    return Ok(Some(record));
                }
                stale = Some(record);
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
        let Some(stale) = stale else {
            return self.load(hash).await;
        };
        match self.refresh(hash).await {
            Err(e @ (StoreError::Timeout(_) | StoreError::Unavailable(_))) => {
                // Served only if still cached: an invalidation (a change
                // this gate has seen) or a resubscription removed it.
                match self.cache.get(hash).await {
                    Some(Entry::Found { record, .. }) if Arc::ptr_eq(&record, &stale) => {
                        self.metrics.cache_stale_served.inc();
                        Ok(Some(stale))
                    }
                    _ => Err(e),
                }
            }
            other => other,
        }
    }

    /// A miss: one store read shared by every concurrent caller.
    async fn load(&self, hash: &TokenHash) -> Result<Option<Arc<CachedRecord>>, StoreError> {
        let before = self.epoch.load(Ordering::Acquire);
        let entry = self
            .cache
            .entry(*hash)
            .or_try_insert_with(self.read(hash))
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

    /// A stale record read again (concurrent callers share the read); the
    /// answer replaces it unless an invalidation raced with the read.
    async fn refresh(&self, hash: &TokenHash) -> Result<Option<Arc<CachedRecord>>, StoreError> {
        let before = self.epoch.load(Ordering::Acquire);
        let read = self.refreshes.try_get_with(*hash, self.read(hash)).await;
        self.refreshes.invalidate(hash).await;
        let entry = read.map_err(|e| (*e).clone())?;
        if self.epoch.load(Ordering::Acquire) == before {
            self.cache.insert(*hash, entry.clone()).await;
        } else {
            self.cache.invalidate(hash).await;
        }
        Ok(entry_record(entry))
    }

    /// One store read, as a cache entry. A failure marks the store failing.
    async fn read(&self, hash: &TokenHash) -> Result<Entry, StoreError> {
        match self.timed(StoreOp::Get, self.store.get(hash)).await {
            Ok(Some(r)) => Ok(Entry::Found {
                record: Arc::new(CachedRecord::new(&r)),
                fresh_until: Instant::now() + self.ttl,
            }),
            Ok(None) => Ok(Entry::Missing {
                until: Instant::now() + self.negative_ttl,
            }),
            Err(e) => {
                if matches!(e, StoreError::Timeout(_) | StoreError::Unavailable(_)) {
                    let until = self.started.elapsed() + FAILING_FOR;
                    self.failing_until_ms.fetch_max(
                        u64::try_from(until.as_millis()).unwrap_or(u64::MAX),
                        Ordering::AcqRel,
                    );
                }
                Err(e)
            }
        }
    }

    /// Whether a store read failed within the last [`FAILING_FOR`].
    fn store_failing(&self) -> bool {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        now < self.failing_until_ms.load(Ordering::Acquire)
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

    /// The record for `hash` when memory holds a fresh one (not one kept
    /// only for `stale_if_error`); never reads the store.
    pub async fn cached(&self, hash: &TokenHash) -> Option<Arc<CachedRecord>> {
        match self.cache.get(hash).await {
            Some(Entry::Found {
                record,
                fresh_until,
            }) if Instant::now() < fresh_until => Some(record),
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
        Entry::Found { record, .. } => Some(record),
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

    async fn confirm(&self, current: &Stored) -> Result<(), StoreError> {
        self.timed(StoreOp::Replace, self.store.confirm(current))
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

/// Follows the Redis `events` channel of `store` (plain pub/sub; sharded
/// on a cluster) and invalidates `cache` accordingly, until the process
/// ends. Subscribes again after a disconnect (or, with Sentinel, when the
/// master moved) and then drops the whole cache, since messages may have
/// been missed meanwhile. While Redis is away the cache is kept: cached
/// tokens keep working for their lifetime.
pub async fn listen_for_invalidations<S: TokenStore>(
    cache: Arc<TokenCache<S>>,
    store: crate::store::RedisStore,
    timeout: Duration,
) {
    use redis::PushKind;

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut subscriber = match store.subscriber(tx) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "invalidation listener: bad Redis address; cache invalidation is off");
            return;
        }
    };
    let channel = subscriber.channel().to_owned();
    cache.set_subscribed(false);
    // Whether a subscription was ever confirmed (nothing can be missed before).
    let mut ever = false;
    let mut up = false;
    let mut backoff = RESUBSCRIBE_FIRST;
    // A probe this gate published and has not yet received back.
    let mut pending: Option<(String, Instant)> = None;
    let mut check = tokio::time::interval(PROBE_EVERY);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if !up {
            let attempt = async {
                subscriber.subscribe().await?;
                // Proof that messages arrive: a probe published now must
                // come back (after a cluster fail-over the subscription can
                // land on a replica that never sees the channel's messages).
                let probe = probe_payload();
                subscriber.probe(&probe).await?;
                loop {
                    let Some(push) = rx.recv().await else {
                        return Err(StoreError::Unavailable("listener closed".into()));
                    };
                    match push.kind {
                        PushKind::Message | PushKind::SMessage => {
                            if push.data.get(1).is_some_and(|p| is_payload(p, &probe)) {
                                return Ok(());
                            }
                            if let Some(hash) = push.data.get(1).and_then(event_hash) {
                                cache.invalidate(&hash).await;
                            }
                        }
                        PushKind::Disconnection
                        | PushKind::Unsubscribe
                        | PushKind::SUnsubscribe => {
                            return Err(StoreError::Unavailable(
                                "subscription lost while checked".into(),
                            ));
                        }
                        _ => {}
                    }
                }
            };
            match tokio::time::timeout(timeout * 4, attempt).await {
                Ok(Ok(())) => {
                    up = true;
                    backoff = RESUBSCRIBE_FIRST;
                    if ever {
                        // Back after a disconnect: messages may have been
                        // missed meanwhile, so nothing cached is trusted.
                        // But the store must answer reads first: a Redis
                        // that restarts takes SUBSCRIBE while it is still
                        // loading its data and refuses reads (LOADING)
                        // until done, and dropping the cache then would
                        // turn every cached token into a 503 for the whole
                        // load. Entries keep serving meanwhile (a loading
                        // Redis takes no writes either; the wait is bounded,
                        // and so is every entry, by cache.ttl).
                        let waited = Instant::now();
                        while cache.store().ping().await.is_err()
                            && waited.elapsed() < STORE_WAIT_BEFORE_DROP
                        {
                            tokio::time::sleep(RESUBSCRIBE_FIRST).await;
                        }
                        cache.invalidate_all();
                        tracing::info!(%channel, "invalidation listener resubscribed; cache dropped");
                    } else {
                        tracing::info!(%channel, "invalidation listener subscribed");
                    }
                    ever = true;
                    cache.set_subscribed(true);
                }
                Ok(Err(e)) => {
                    subscriber.reset();
                    tracing::warn!(error = %e, "invalidation listener: cannot subscribe yet");
                }
                Err(_) => {
                    subscriber.reset();
                    tracing::warn!(
                        "invalidation listener: no answer, or the probe did not come back; retrying"
                    );
                }
            }
        }
        let wait = if up { Duration::MAX } else { backoff };
        tokio::select! {
            // Messages first: a probe's echo that is already here when the
            // check ticks must count, or a busy machine (both ready at once,
            // picked at random) would resubscribe and drop the whole cache
            // for nothing — and lose the events sent meanwhile.
            biased;
            push = rx.recv() => {
                let Some(push) = push else { return };
                match push.kind {
                    PushKind::Message | PushKind::SMessage => {
                        if let Some((probe, _)) = &pending
                            && push.data.get(1).is_some_and(|p| is_payload(p, probe))
                        {
                            pending = None;
                            continue;
                        }
                        cache.metrics.invalidations.inc();
                        if let Some(hash) = push.data.get(1).and_then(event_hash) {
                            cache.invalidate(&hash).await;
                        }
                    }
                    PushKind::Disconnection => {
                        if up {
                            tracing::warn!("invalidation listener disconnected; resubscribing");
                        }
                        up = false;
                        cache.set_subscribed(false);
                    }
                    // This listener never unsubscribes: the server dropped
                    // the subscription (a cluster node that lost the
                    // channel's slot in a fail-over does so).
                    PushKind::Unsubscribe | PushKind::SUnsubscribe => {
                        tracing::warn!("invalidation listener unsubscribed by Redis; resubscribing");
                        up = false;
                        cache.set_subscribed(false);
                    }
                    _ => {}
                }
            }
            _ = check.tick(), if up => {
                let lost = if !subscriber.check().await {
                    true
                } else if let Some((_, sent)) = &pending {
                    // Redis took the probe but it did not come back: the
                    // subscription is somewhere that does not see the
                    // channel (a cluster fail-over can leave it on the old
                    // master) or the connection is dead without a word.
                    if sent.elapsed() >= PROBE_EVERY {
                        tracing::warn!("invalidation listener: probe not received back; resubscribing");
                        subscriber.reset();
                        true
                    } else {
                        false
                    }
                } else {
                    let probe = probe_payload();
                    // Only a probe Redis accepted counts: while Redis is
                    // paused nothing is lost, and the cache is kept.
                    if let Ok(Ok(())) = tokio::time::timeout(timeout, subscriber.probe(&probe)).await {
                        pending = Some((probe, Instant::now()));
                    }
                    false
                };
                if lost {
                    up = false;
                    pending = None;
                    cache.set_subscribed(false);
                }
            }
            () = tokio::time::sleep(wait), if !up => {
                backoff = (backoff * 2).min(RESUBSCRIBE_MAX);
            }
        }
    }
}

/// How often the listener publishes a probe on the channel and checks the
/// previous one came back (and, with Sentinel, that the master has not
/// moved). A subscription lost without a word is found within two of these.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// After a resubscription, how long the listener waits for the store to
/// answer reads (a restarted Redis loading its data) before it drops the
/// cache anyway.
const STORE_WAIT_BEFORE_DROP: Duration = Duration::from_secs(30);

/// First pause between subscription attempts, and the longest: recovery
/// after Redis returns takes at most about this long.
const RESUBSCRIBE_FIRST: Duration = Duration::from_millis(50);
const RESUBSCRIBE_MAX: Duration = Duration::from_millis(500);

/// A message no other gate acts on (`op` is not `invalidate`), unique to
/// this attempt.
fn probe_payload() -> String {
    let mut nonce = [0u8; 8];
    // A clock-based nonce is as good here if the OS has no randomness.
    if getrandom::fill(&mut nonce).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        nonce = (nanos ^ u64::from(std::process::id())).to_le_bytes();
    }
    let hex: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
    format!(r#"{{"op":"probe","id":"{hex}"}}"#)
}

fn is_payload(value: &redis::Value, expected: &str) -> bool {
    match value {
        redis::Value::BulkString(b) => b.as_slice() == expected.as_bytes(),
        redis::Value::SimpleString(s) => s == expected,
        _ => false,
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
