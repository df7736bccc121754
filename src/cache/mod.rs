//! The token cache: moka, keyed by the token hash, in front of the store,
//! and the listener that keeps a fleet's caches honest (`listen`).
//!
//! It holds found records (`cache.ttl`) and "no such token" answers
//! (`cache.negative_ttl`); concurrent misses for one hash share one store
//! read; store errors are never cached. It never decides anything: the state
//! of a cached record (expiry included) is checked by `decide` on every
//! request. A hit does no I/O and takes no lock held across an await. For
//! a traced request only ([`noting`]), it notes how the lookup was
//! answered (hit, miss, coalesced, …) and how long the store took.
//!
//! Invalidation: writes through this gate invalidate locally; the store's
//! change feed ([`ChangeFeed`], with Redis the `events` channel) invalidates
//! what other gates (or a Hawzu back-end) changed, and the whole cache is
//! distrusted when the feed comes back after an interruption, since changes
//! may have been missed meanwhile: each entry is read again before its next
//! use, and kept (within its `ttl`) only if that read fails. It knows the store only through
//! `crate::store`'s traits, never a backend.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use moka::future::Cache;
use moka::notification::RemovalCause;

use crate::metrics::{Metrics, StoreOp};
use crate::store::{ListQuery, Page, StoreError, Stored, TokenStore};
use crate::token::{TokenHash, TokenId, TokenRecord};

use self::epochs::{Epochs, Seen};

mod audit;
mod epochs;
mod listen;
mod record;
mod tally;

pub use self::listen::listen_for_invalidations;
pub use self::record::{CachedGrant, CachedLimits, CachedRecord, CachedScope};
pub use self::tally::{Drained, Tally};

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

/// A cached answer of the store. Every entry lives at most `cache.ttl` +
/// `cache.stale_if_error` (one cache-wide lifetime: no per-entry timer,
/// which costs memory); a found record is fresh until `cache.ttl` after its
/// read began, a "no such token" answer carries its own, shorter deadline;
/// both judged when read (see [`FreshUntil`]). Deadlines are ms since the
/// cache started (see [`TokenCache::now_ms`]): an entry is 16 bytes, where
/// an `Instant` made it 24 (moka holds one per cached token).
#[derive(Debug, Clone)]
enum Entry {
    Found {
        record: Arc<CachedRecord>,
        fresh_until: FreshUntil,
    },
    Missing {
        until_ms: u64,
    },
}

/// How late after its read began an entry may be inserted and still be
/// left to the cache's lifetime (see [`FreshUntil`]).
const LATE_MS: u64 = 4;

/// When a found record stops being fresh (ms on the cache's clock), and
/// whether a hit must read the clock to judge it. The cache's lifetime
/// counts from the insert, the deadline from when the read began: an entry
/// inserted within [`LATE_MS`] of that (nearly every one) is gone at most
/// 5 ms past its deadline without a hit reading the clock (with `cache.
/// stale_if_error` 0, the default); one inserted later (a slow read, or a
/// shared refresh's answer taken late) is judged against the clock on
/// every hit. Whether it is, in the top bit: ms since the start never
/// reach it, and the entry stays 16 bytes.
#[derive(Debug, Clone, Copy)]
struct FreshUntil(u64);

impl FreshUntil {
    const CHECKED: u64 = 1 << 63;

    /// `ttl_ms` after `began_ms`, for an entry inserted at `now_ms`.
    fn new(began_ms: u64, ttl_ms: u64, now_ms: u64) -> Self {
        let ms = began_ms.saturating_add(ttl_ms) & !Self::CHECKED;
        let late = now_ms.saturating_sub(began_ms) >= LATE_MS;
        Self(if late { ms | Self::CHECKED } else { ms })
    }

    fn ms(self) -> u64 {
        self.0 & !Self::CHECKED
    }

    /// Whether a hit reads the clock to judge it.
    fn checked(self) -> bool {
        self.0 & Self::CHECKED != 0
    }
}

/// The store behind a cache. Reads by hash go through the cache; writes go
/// to the store and then invalidate the hash they changed.
pub struct TokenCache<S> {
    store: S,
    cache: Cache<TokenHash, Entry, KeyHasher>,
    metrics: Arc<Metrics>,
    /// Bumped before every invalidation, so a load that raced with one of
    /// its hash can tell (see [`TokenCache::lookup`]).
    epochs: Epochs,
    /// Whether the invalidation subscription is up (always true without Redis).
    subscribed: AtomicBool,
    /// `cache.ttl` and `cache.negative_ttl` in ms (entry deadlines' unit).
    ttl_ms: u64,
    negative_ttl_ms: u64,
    stale_if_error: Duration,
    /// Concurrent refreshes of one stale record share one store read.
    refreshes: Cache<TokenHash, (Seen, Entry), KeyHasher>,
    /// Until when (ms after `started`) the store counts as failing: stale
    /// records are then served without asking it again.
    failing_until_ms: AtomicU64,
    /// Entries read before this instant (ms after `started`, plus one; 0:
    /// never) are distrusted: changes to them may have gone unheard (see
    /// [`TokenCache::invalidate_all`]).
    distrusted_before_ms: AtomicU64,
    started: Instant,
    /// Whole records (name included) read for self-inspection, for
    /// [`WHOLE_FOR`] or until the token changes (invalidated with the
    /// cache): a token holder asking again and again reads the store once
    /// per that, not once per request.
    whole: Cache<TokenHash, Option<Arc<TokenRecord>>, KeyHasher>,
}

/// How long a whole record read for self-inspection is kept at most (a
/// change to the token invalidates it at once, as the cache's entry; its
/// state is judged from the cache above, as every request's is).
pub const WHOLE_FOR: Duration = Duration::from_secs(10);

/// The caches' key hasher. Keys are BLAKE3 outputs of presented values, and
/// the seed is random per process: a client cannot aim keys at one bucket,
/// so foldhash serves as well as SipHash here, at a fraction of the cost.
type KeyHasher = foldhash::fast::RandomState;

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
            .build_with_hasher(KeyHasher::default());
        Self {
            store,
            cache,
            metrics,
            epochs: Epochs::new(),
            subscribed: AtomicBool::new(true),
            ttl_ms: millis(options.ttl),
            negative_ttl_ms: millis(options.negative_ttl),
            stale_if_error: options.stale_if_error,
            // An answer left by a refresh cancelled before it took it out
            // must not outlive a record's own lifetime.
            refreshes: Cache::builder()
                .max_capacity(options.max_entries.min(100_000))
                .time_to_live(options.ttl.min(Duration::from_secs(5)))
                .build_with_hasher(KeyHasher::default()),
            failing_until_ms: AtomicU64::new(0),
            distrusted_before_ms: AtomicU64::new(0),
            started: Instant::now(),
            whole: Cache::builder()
                .max_capacity(options.max_entries.min(10_000))
                .time_to_live(WHOLE_FOR)
                .build_with_hasher(KeyHasher::default()),
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

    /// The whole stored record of `hash` (name and all), for
    /// self-inspection: read at most once per [`WHOLE_FOR`] per token,
    /// shared by concurrent callers, counted and timed as every store
    /// call is. `None`: not stored. A failed read is not kept, nor one
    /// that raced with a change of its token (the epoch check, as
    /// [`Self::lookup`]'s).
    pub async fn whole(&self, hash: &TokenHash) -> Result<Option<Arc<TokenRecord>>, StoreError> {
        let before = self.epochs.seen(hash);
        let read = self
            .whole
            .try_get_with(*hash, async {
                self.timed(StoreOp::Get, self.store.get(hash))
                    .await
                    .map(|r| r.map(Arc::new))
            })
            .await
            .map_err(|e| (*e).clone());
        if self.epochs.seen(hash) != before {
            self.whole.invalidate(hash).await;
        }
        read
    }

    /// The record for `hash`: from memory on a hit, else one store read
    /// shared by every concurrent caller for that hash.
    ///
    /// A found record that is distrusted (read before the last
    /// [`Self::invalidate_all`]) or past `ttl` (counted from when its read
    /// began) and still held is read again; only if that read fails (error
    /// or timeout) is the old record served, only if nothing invalidated it
    /// meanwhile: a trusted one within `ttl + stale_if_error`, a distrusted
    /// one within its `ttl`. `decide` still checks its expiry, disabled and
    /// revoked state on every request.
    pub async fn lookup(&self, hash: &TokenHash) -> Result<Option<Arc<CachedRecord>>, StoreError> {
        // Hot path: a hit is a hash-map read and an atomic load; no I/O, no
        // await on a lock.
        let mut forget = false;
        let stale = match self.cache.get(hash).await {
            Some(Entry::Found {
                record,
                fresh_until,
            }) => {
                let fresh_until_ms = fresh_until.ms();
                let trusted = self.trusted(fresh_until_ms, self.ttl_ms);
                // The deadline left to the cache's lifetime only where that
                // ends with it (see `FreshUntil`): a slow read's is judged.
                if trusted
                    && ((self.stale_if_error.is_zero() && !fresh_until.checked())
                        || self.now_ms() < fresh_until_ms)
                {
                    self.metrics.cache_hits.inc();
                    note(CacheUse::Hit, Duration::ZERO);
                    return Ok(Some(record));
                }
                let now = self.now_ms();
                // Past `ttl`, within `stale_if_error`: served without
                // asking while the store is failing. Distrusted: asked
                // every time (a change missed is enforced as soon as the
                // store answers), never served past `ttl` (see
                // `Self::servable`).
                if trusted && now < self.stale_until(fresh_until_ms) && self.store_failing() {
                    self.metrics.cache_stale_served.inc();
                    note(CacheUse::Stale, Duration::ZERO);
                    return Ok(Some(record));
                }
                Some(record)
            }
            Some(Entry::Missing { until_ms })
                if self.now_ms() < until_ms && self.trusted(until_ms, self.negative_ttl_ms) =>
            {
                self.metrics.cache_negative_hits.inc();
                note(CacheUse::NegativeHit, Duration::ZERO);
                return Ok(None);
            }
            // A "no such token" past its deadline or distrusted: ask the
            // store again.
            Some(Entry::Missing { .. }) => {
                forget = true;
                None
            }
            None => None,
        };
        // Boxed: the store's futures are large, and a future is as large as
        // its largest path. Unboxed, every request's future (which hyper
        // moves whole, per request) carried the store read of a miss.
        Box::pin(self.uncached(hash, stale, forget)).await
    }

    /// Past a hit: a miss (one store read shared by every concurrent
    /// caller) or a stale or distrusted record read again; `forget` first
    /// removes an expired "no such token".
    async fn uncached(
        &self,
        hash: &TokenHash,
        stale: Option<Arc<CachedRecord>>,
        forget: bool,
    ) -> Result<Option<Arc<CachedRecord>>, StoreError> {
        if forget {
            self.cache.invalidate(hash).await;
        }
        self.metrics.cache_misses.inc();
        let waited = Instant::now();
        let Some(stale) = stale else {
            let (found, coalesced) = self.load(hash).await?;
            let used = if coalesced {
                CacheUse::Coalesced
            } else {
                CacheUse::Miss
            };
            note(used, waited.elapsed());
            return Ok(found);
        };
        let refreshed = self.refresh(hash).await;
        match refreshed {
            Err(e @ (StoreError::Timeout(_) | StoreError::Unavailable(_))) => {
                // Served only if still cached (an invalidation, a change
                // this gate has seen, removed it) and within its bound,
                // judged now: the cache may have been distrusted while the
                // read was out.
                match self.cache.get(hash).await {
                    Some(Entry::Found {
                        record,
                        fresh_until,
                    }) if Arc::ptr_eq(&record, &stale) && self.servable(fresh_until.ms()) => {
                        self.metrics.cache_stale_served.inc();
                        note(CacheUse::Stale, waited.elapsed());
                        Ok(Some(stale))
                    }
                    _ => Err(e),
                }
            }
            other => {
                note(CacheUse::Miss, waited.elapsed());
                other
            }
        }
    }

    /// A miss: one store read shared by every concurrent caller; `true`
    /// with the record when another caller's read answered this one.
    async fn load(
        &self,
        hash: &TokenHash,
    ) -> Result<(Option<Arc<CachedRecord>>, bool), StoreError> {
        let mut again = false;
        loop {
            let before = self.epochs.seen(hash);
            let guard = RaceCheck::new(self, hash, before);
            let entry = self
                .cache
                .entry(*hash)
                .or_try_insert_with(self.read(hash))
                .await;
            let entry = match entry {
                Ok(entry) => entry,
                // Nothing inserted: nothing to check.
                Err(e) => {
                    guard.done();
                    return Err((*e).clone());
                }
            };
            // An invalidation that arrived while this load was reading may
            // have found nothing to remove; the value just inserted could
            // predate it. Drop it (this request still uses it: it raced
            // with the change).
            let fresh = entry.is_fresh();
            if fresh && self.epochs.seen(hash) != before {
                self.cache.invalidate(hash).await;
            }
            guard.done();
            // Another caller's read answered this one. If that read may
            // have begun before a change of this token this gate made or
            // heard, this request may have come after the change (a revoke
            // answered 200 here, then a request joining a read begun
            // before it): it reads again, once.
            if !fresh
                && !again
                && self
                    .epochs
                    .began_before_a_change(hash, self.began_ms(entry.value()))
            {
                again = true;
                self.cache.invalidate(hash).await;
                continue;
            }
            return Ok((entry_record(entry.into_value()), !fresh));
        }
    }

    /// `entry` as inserted now: a found record inserted late is judged
    /// against the clock on every hit (see [`FreshUntil`]).
    fn inserted_now(&self, entry: &Entry) -> Entry {
        match entry {
            Entry::Found { record, .. } => Entry::Found {
                record: record.clone(),
                fresh_until: FreshUntil::new(self.began_ms(entry), self.ttl_ms, self.now_ms()),
            },
            missing => missing.clone(),
        }
    }

    /// Whether a found record's `ttl` has run out.
    fn past_deadline(&self, entry: &Entry) -> bool {
        matches!(entry, Entry::Found { fresh_until, .. } if self.now_ms() >= fresh_until.ms())
    }

    /// When the read behind `entry` began (ms on the cache's clock).
    fn began_ms(&self, entry: &Entry) -> u64 {
        match entry {
            Entry::Found { fresh_until, .. } => fresh_until.ms().saturating_sub(self.ttl_ms),
            Entry::Missing { until_ms } => until_ms.saturating_sub(self.negative_ttl_ms),
        }
    }

    /// A stale or distrusted record read again (concurrent callers share
    /// the read); the answer replaces it unless an invalidation raced with
    /// the read. The counters compared are those read when the shared read
    /// began; a caller that finds a change (or a distrust) made after that
    /// and before it asked — it joined late, or the answer of a caller gone
    /// since was left behind — reads again rather than take an answer older
    /// than a change it must see. As in [`Self::load`], an answer that
    /// passed that check is inserted first and the counters checked again
    /// after (an invalidation between a check and the insert would find
    /// nothing to remove).
    async fn refresh(&self, hash: &TokenHash) -> Result<Option<Arc<CachedRecord>>, StoreError> {
        let mine = self.epochs.seen(hash);
        let mut read = self.shared_read(hash).await;
        // Also an answer past its own deadline: one left behind by a caller
        // gone since, taken up to its (5 s) lifetime later.
        if matches!(&read, Ok((before, entry)) if *before != mine || self.past_deadline(entry)) {
            self.refreshes.invalidate(hash).await;
            read = self.shared_read(hash).await;
        }
        self.refreshes.invalidate(hash).await;
        let (before, entry) = read?;
        if self.epochs.seen(hash) == before {
            let guard = RaceCheck::new(self, hash, before);
            // Judged late by when it is inserted: a shared answer may be
            // taken a while after its read.
            self.cache.insert(*hash, self.inserted_now(&entry)).await;
            if self.epochs.seen(hash) != before {
                self.cache.invalidate(hash).await;
            }
            guard.done();
        }
        Ok(entry_record(entry))
    }

    /// One store read of `hash` shared by concurrent refreshes, with the
    /// counters seen when it began.
    async fn shared_read(&self, hash: &TokenHash) -> Result<(Seen, Entry), StoreError> {
        self.refreshes
            .try_get_with(*hash, async {
                let before = self.epochs.seen(hash);
                self.read(hash).await.map(|entry| (before, entry))
            })
            .await
            .map_err(|e| (*e).clone())
    }

    /// One store read, as a cache entry. Its lifetime counts from when the
    /// read began: one begun before the cache was distrusted is distrusted
    /// however late it answers. A failure marks the store failing.
    async fn read(&self, hash: &TokenHash) -> Result<Entry, StoreError> {
        let began_ms = self.now_ms();
        match self.timed(StoreOp::Get, self.store.get(hash)).await {
            Ok(Some(r)) => Ok(Entry::Found {
                record: Arc::new(CachedRecord::new(&r)),
                fresh_until: FreshUntil::new(began_ms, self.ttl_ms, self.now_ms()),
            }),
            Ok(None) => Ok(Entry::Missing {
                until_ms: began_ms.saturating_add(self.negative_ttl_ms),
            }),
            Err(e) => {
                if matches!(e, StoreError::Timeout(_) | StoreError::Unavailable(_)) {
                    self.failing_until_ms.fetch_max(
                        self.now_ms().saturating_add(millis(FAILING_FOR)),
                        Ordering::AcqRel,
                    );
                }
                Err(e)
            }
        }
    }

    /// Whether a store read failed within the last [`FAILING_FOR`].
    fn store_failing(&self) -> bool {
        self.now_ms() < self.failing_until_ms.load(Ordering::Acquire)
    }

    /// Whether an entry whose deadline is `until_ms`, `lifetime_ms` after
    /// its read began, was read after the cache was last distrusted.
    fn trusted(&self, until_ms: u64, lifetime_ms: u64) -> bool {
        until_ms.saturating_sub(lifetime_ms) >= self.distrusted_before_ms.load(Ordering::Acquire)
    }

    /// Whether a found record whose read failed again may still be served:
    /// a distrusted one within its `ttl`, a trusted one within `ttl +
    /// stale_if_error`.
    fn servable(&self, fresh_until_ms: u64) -> bool {
        let now = self.now_ms();
        now < fresh_until_ms
            || (self.trusted(fresh_until_ms, self.ttl_ms) && now < self.stale_until(fresh_until_ms))
    }

    /// Until when a trusted record past its `ttl` may be served while the
    /// store fails.
    fn stale_until(&self, fresh_until_ms: u64) -> u64 {
        fresh_until_ms.saturating_add(millis(self.stale_if_error))
    }

    /// Milliseconds since this cache started: the clock of entry deadlines.
    fn now_ms(&self) -> u64 {
        millis(self.started.elapsed())
    }

    /// Forgets `hash` (a record changed).
    pub async fn invalidate(&self, hash: &TokenHash) {
        self.epochs.changed(hash, self.now_ms());
        self.cache.invalidate(hash).await;
        self.whole.invalidate(hash).await;
    }

    /// Distrusts everything held (invalidations may have been missed):
    /// every entry is read again before it is next used, and served only if
    /// that read fails, within its `ttl` (see [`Self::lookup`]). Dropped
    /// instead, every cached token got 503 whenever the store stalled just
    /// after the feed came back (a Cluster slot in transition after a
    /// fail-over), with nothing gained: while the feed was down the same
    /// entries were served for the same lifetime. Loads under way when it
    /// is called drop what they read (the epoch check).
    pub fn invalidate_all(&self) {
        self.epochs.dropped();
        // Reads begun in this very millisecond count as begun before.
        self.distrusted_before_ms
            .fetch_max(self.now_ms().saturating_add(1), Ordering::AcqRel);
        self.whole.invalidate_all();
        // Counted once in force (tests and the chaos run take the count
        // for "distrusted").
        self.metrics.cache_drops.inc();
    }

    /// The record for `hash` when memory holds one within its `ttl` (not
    /// one kept only for `stale_if_error`); never reads the store. It may
    /// be a distrusted one (read before a resubscription): the limiter
    /// asks only whether a client holds a token known valid, and the
    /// lookup that follows reads a distrusted one again (refusing those, a
    /// limited client behind a shared address got 429 after every
    /// resubscription and could not have its token read again).
    pub async fn cached(&self, hash: &TokenHash) -> Option<Arc<CachedRecord>> {
        match self.cache.get(hash).await {
            Some(Entry::Found {
                record,
                fresh_until,
            }) if self.now_ms() < fresh_until.ms() => Some(record),
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

/// The epoch check of a load or refresh that may be cancelled (a client
/// gone) between its insert and its check: dropped before [`Self::done`],
/// it removes the hash if a change raced with the read, as the check would
/// have (on a task of its own: removal is async). Without it a record read
/// before a revoke could stay cached for `cache.ttl`.
struct RaceCheck<'a> {
    cache: &'a Cache<TokenHash, Entry, KeyHasher>,
    epochs: &'a Epochs,
    hash: TokenHash,
    before: Seen,
    done: bool,
}

impl<'a> RaceCheck<'a> {
    fn new<S>(cache: &'a TokenCache<S>, hash: &TokenHash, before: Seen) -> Self {
        Self {
            cache: &cache.cache,
            epochs: &cache.epochs,
            hash: *hash,
            before,
            done: false,
        }
    }

    fn done(mut self) {
        self.done = true;
    }
}

impl Drop for RaceCheck<'_> {
    fn drop(&mut self) {
        if self.done || self.epochs.seen(&self.hash) == self.before {
            return;
        }
        let (cache, hash) = (self.cache.clone(), self.hash);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { cache.invalidate(&hash).await });
        }
    }
}

// === the lookup note ===

/// How the cache answered a token lookup, for the request's span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheUse {
    Hit,
    /// A cached "no such token".
    NegativeHit,
    /// This request read the store.
    Miss,
    /// Another request's store read for the same token answered this one.
    Coalesced,
    /// A record the store could not confirm, served while it failed: past
    /// `cache.ttl` (`stale_if_error`), or distrusted and within it.
    Stale,
}

impl CacheUse {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheUse::Hit => "hit",
            CacheUse::NegativeHit => "negative_hit",
            CacheUse::Miss => "miss",
            CacheUse::Coalesced => "coalesced",
            CacheUse::Stale => "stale",
        }
    }
}

/// What the lookups of one request did: the last cache use, and the time
/// spent waiting on the store (a miss's read, or another's it shared).
#[derive(Debug, Default)]
pub struct LookupNote {
    pub cache: Cell<Option<CacheUse>>,
    pub store: Cell<Duration>,
}

tokio::task_local! {
    static NOTE: LookupNote;
}

/// Runs `fut`, noting what its token lookups did. Only a traced request
/// runs in a note; elsewhere [`note`] finds none and does nothing.
pub async fn noting<F: Future>(fut: F) -> (F::Output, LookupNote) {
    let fut = NOTE.scope(LookupNote::default(), fut);
    let mut fut = std::pin::pin!(fut);
    let out = fut.as_mut().await;
    let note = fut.as_mut().take_value().unwrap_or_default();
    (out, note)
}

/// Notes a lookup's answer when the request is traced (one thread-local
/// read when it is not).
fn note(used: CacheUse, store: Duration) {
    let _ = NOTE.try_with(|n| {
        n.cache.set(Some(used));
        n.store.set(n.store.get() + store);
    });
}

/// A duration in whole milliseconds (saturating: a deadline past the end
/// of `u64` ms is never reached).
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
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

    async fn get_stored(&self, hash: &TokenHash) -> Result<Option<Stored>, StoreError> {
        self.timed(StoreOp::Get, self.store.get_stored(hash)).await
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

    /// What is confirmed may have landed after its caller gave up (a
    /// timeout), past this cache: the record it replaced is dropped here
    /// too, as `replace` drops it.
    async fn confirm(&self, current: &Stored) -> Result<bool, StoreError> {
        let result = self
            .timed(StoreOp::Replace, self.store.confirm(current))
            .await;
        self.invalidate(&current.hash).await;
        result
    }

    async fn remove(&self, current: &Stored) -> Result<bool, StoreError> {
        let result = self
            .timed(StoreOp::Remove, self.store.remove(current))
            .await;
        self.invalidate(&current.hash).await;
        result
    }

    async fn list(&self, query: ListQuery) -> Result<Page, StoreError> {
        self.timed(StoreOp::List, self.store.list(query)).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.timed(StoreOp::Ping, self.store.ping()).await
    }
}

#[cfg(test)]
mod tests;
