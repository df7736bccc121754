//! The cache against a store double whose reads can be held open or made
//! to fail: the race between a load and an invalidation (the epoch check,
//! per stripe of hashes),
//! `stale_if_error`, and the listener's handling of a change feed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;

use jiff::Timestamp;
use tokio::sync::{mpsc, oneshot};

use super::*;
use crate::store::{Change, ChangeFeed, Changes};
use crate::token::{Scope, TokenSecret};

// === the store double ===

/// A store in memory. `get` reads the record when it starts; when a hold
/// is set, it then says so and waits to be released, so a test can change
/// the record (and invalidate) while a read of the old one is out.
#[derive(Clone, Default)]
struct Double {
    inner: Arc<DoubleInner>,
}

#[derive(Default)]
struct DoubleInner {
    records: Mutex<HashMap<TokenHash, TokenRecord>>,
    failing: AtomicBool,
    gets: AtomicU64,
    hold: Mutex<Option<(oneshot::Sender<()>, oneshot::Receiver<()>)>>,
    /// The feed handed out by `changes` (once).
    feed: Mutex<Option<mpsc::UnboundedReceiver<Change>>>,
}

impl Double {
    fn put(&self, hash: TokenHash, record: TokenRecord) {
        self.inner.records.lock().unwrap().insert(hash, record);
    }

    fn fail(&self, failing: bool) {
        self.inner.failing.store(failing, Ordering::SeqCst);
    }

    fn gets(&self) -> u64 {
        self.inner.gets.load(Ordering::SeqCst)
    }

    /// Holds the next `get` after it read: returns "it has read" and the
    /// release.
    fn hold_next_get(&self) -> (oneshot::Receiver<()>, oneshot::Sender<()>) {
        let (read_tx, read_rx) = oneshot::channel();
        let (release_tx, release_rx) = oneshot::channel();
        *self.inner.hold.lock().unwrap() = Some((read_tx, release_rx));
        (read_rx, release_tx)
    }

    /// The sending end of the feed `changes` will hand out.
    fn feed(&self) -> mpsc::UnboundedSender<Change> {
        let (tx, rx) = mpsc::unbounded_channel();
        *self.inner.feed.lock().unwrap() = Some(rx);
        tx
    }
}

impl TokenStore for Double {
    async fn get(&self, hash: &TokenHash) -> Result<Option<TokenRecord>, StoreError> {
        self.inner.gets.fetch_add(1, Ordering::SeqCst);
        if self.inner.failing.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("the double is down".into()));
        }
        let record = self.inner.records.lock().unwrap().get(hash).cloned();
        let hold = self.inner.hold.lock().unwrap().take();
        if let Some((read, release)) = hold {
            let _ = read.send(());
            let _ = release.await;
            // Failed while held: the read fails after all.
            if self.inner.failing.load(Ordering::SeqCst) {
                return Err(StoreError::Unavailable("the double went down".into()));
            }
        }
        Ok(record)
    }

    async fn find(&self, _: &TokenId) -> Result<Option<Stored>, StoreError> {
        Ok(None)
    }

    async fn get_stored(&self, _: &TokenHash) -> Result<Option<Stored>, StoreError> {
        Ok(None)
    }

    async fn create(&self, hash: &TokenHash, record: &TokenRecord) -> Result<(), StoreError> {
        self.put(*hash, record.clone());
        Ok(())
    }

    async fn replace(&self, _: &Stored, _: &TokenRecord) -> Result<bool, StoreError> {
        Ok(false)
    }

    async fn remove(&self, _: &Stored) -> Result<bool, StoreError> {
        Ok(false)
    }

    async fn list(&self, _: ListQuery) -> Result<Page, StoreError> {
        Ok(Page {
            tokens: Vec::new(),
            next: None,
        })
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

impl ChangeFeed for Double {
    async fn publish(&self, _: &TokenHash) -> Result<(), StoreError> {
        Ok(())
    }

    fn changes(&self) -> Result<Changes, StoreError> {
        let rx = self.inner.feed.lock().unwrap().take().expect("a feed set");
        let task = tokio::spawn(std::future::pending());
        Ok(Changes::from_task("double", rx, task))
    }
}

// === builders ===

fn token() -> (TokenHash, TokenRecord) {
    let record = TokenRecord::sample(
        Scope::Workspace {
            role: "workspace_viewer".into(),
        },
        Timestamp::now(),
    );
    (TokenSecret::generate().unwrap().hash(), record)
}

fn disabled(record: &TokenRecord) -> TokenRecord {
    TokenRecord {
        disabled_at: Some(Timestamp::now()),
        ..record.clone()
    }
}

fn cache(store: &Double, ttl: Duration, stale_if_error: Duration) -> Arc<TokenCache<Double>> {
    Arc::new(TokenCache::new(
        store.clone(),
        CacheOptions {
            ttl,
            negative_ttl: Duration::from_secs(5),
            max_entries: 100,
            stale_if_error,
        },
    ))
}

async fn lookup(cache: &TokenCache<Double>, hash: &TokenHash) -> Arc<CachedRecord> {
    cache.lookup(hash).await.unwrap().expect("a record")
}

/// Polls `cond` until it holds, for at most two seconds.
async fn until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(2);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Looks `hash` up with its store read held open (the record already read)
/// while `change` runs: what that racing lookup answered.
async fn lookup_racing(
    cache: &Arc<TokenCache<Double>>,
    store: &Double,
    hash: TokenHash,
    change: impl Future<Output = ()>,
) -> Arc<CachedRecord> {
    let (read, release) = store.hold_next_get();
    let c = cache.clone();
    let load = tokio::spawn(async move { c.lookup(&hash).await });
    read.await.unwrap();
    change.await;
    release.send(()).unwrap();
    load.await.unwrap().unwrap().expect("a record")
}

// === the epoch check ===

#[tokio::test]
async fn a_load_that_read_before_an_invalidation_does_not_leave_its_record_cached() {
    let store = Double::default();
    let (hash, record) = token();
    store.put(hash, record.clone());
    let cache = cache(&store, Duration::from_secs(60), Duration::ZERO);

    // The load holds the enabled record; the token is disabled and the
    // invalidation arrives while the load is still out (nothing to remove).
    let raced = lookup_racing(&cache, &store, hash, async {
        store.put(hash, disabled(&record));
        cache.invalidate(&hash).await;
    })
    .await;
    assert!(!raced.is_disabled(), "the racing request uses what it read");
    assert!(
        lookup(&cache, &hash).await.is_disabled(),
        "the next request must not be served the record read before the change"
    );
    assert_eq!(store.gets(), 2);
}

#[tokio::test]
async fn a_load_keeps_its_record_when_another_token_changes_while_it_reads() {
    // A fleet hears changes all the time: a change to some other token
    // must not cost a token just read its entry (it would be read again
    // on its next request, and refused with 503 while the store is away).
    let store = Double::default();
    let cache = cache(&store, Duration::from_secs(60), Duration::ZERO);
    let (hash, record) = token();
    // Not one in the same stripe of the epoch check (one in 1,024 is).
    let (other, other_record) = std::iter::repeat_with(token)
        .find(|(other, _)| !cache.epochs.share_a_stripe(&hash, other))
        .unwrap();
    store.put(hash, record);
    store.put(other, other_record);

    lookup_racing(&cache, &store, hash, cache.invalidate(&other)).await;

    assert!(
        cache.cached(&hash).await.is_some(),
        "a change to another token dropped the record just read"
    );
    lookup(&cache, &hash).await;
    assert_eq!(store.gets(), 1, "the token was read again");
}

#[tokio::test]
async fn a_load_that_read_before_the_cache_was_dropped_does_not_leave_its_record_cached() {
    let store = Double::default();
    let (hash, record) = token();
    store.put(hash, record.clone());
    let cache = cache(&store, Duration::from_secs(60), Duration::ZERO);

    // Changes may have been missed (the feed resumed): everything goes.
    lookup_racing(&cache, &store, hash, async {
        store.put(hash, disabled(&record));
        cache.invalidate_all();
    })
    .await;

    assert!(
        lookup(&cache, &hash).await.is_disabled(),
        "a record read before the drop outlived it"
    );
}

#[tokio::test]
async fn a_stale_refresh_that_raced_with_an_invalidation_is_not_kept() {
    let store = Double::default();
    let (hash, record) = token();
    store.put(hash, record.clone());
    let ttl = Duration::from_millis(100);
    let cache = cache(&store, ttl, Duration::from_secs(60));
    assert!(!lookup(&cache, &hash).await.is_disabled());
    tokio::time::sleep(ttl + Duration::from_millis(50)).await;

    // Past ttl: the next lookup reads again; hold that read open.
    lookup_racing(&cache, &store, hash, async {
        store.put(hash, disabled(&record));
        cache.invalidate(&hash).await;
    })
    .await;

    assert!(
        lookup(&cache, &hash).await.is_disabled(),
        "the refreshed record predates the change and must not be kept"
    );
    assert_eq!(store.gets(), 3);
}

/// `cache.ttl` bounds how long a record is used unread, counted from when
/// its read began (a change may land while the read is out): a slow read
/// does not stretch it, with or without `stale_if_error`.
#[tokio::test]
async fn a_record_is_not_used_past_its_ttl_counted_from_its_read() {
    let store = Double::default();
    let (hash, record) = token();
    store.put(hash, record.clone());
    let ttl = Duration::from_millis(300);
    let cache = cache(&store, ttl, Duration::ZERO);
    let started = Instant::now();
    let (read, release) = store.hold_next_get();
    let first = tokio::spawn({
        let cache = cache.clone();
        async move { cache.lookup(&hash).await }
    });
    read.await.unwrap();
    // A slow read: it answers 200 ms after it began.
    tokio::time::sleep(Duration::from_millis(200)).await;
    release.send(()).unwrap();
    assert!(!first.await.unwrap().unwrap().unwrap().is_disabled());
    // A change whose event was lost: only the ttl bounds the old record.
    store.put(hash, disabled(&record));

    tokio::time::sleep((ttl + Duration::from_millis(50)).saturating_sub(started.elapsed())).await;
    // (Past 500 ms the cache's own lifetime has dropped it anyway.)
    let later = lookup(&cache, &hash).await;
    assert!(
        later.is_disabled(),
        "a record read {:?} ago was used unread past its ttl ({ttl:?})",
        started.elapsed()
    );
    assert_eq!(store.gets(), 2);

    // Without `stale_if_error`, nothing past `ttl` is served while the
    // store fails either: a read answering past `ttl`, then a failure.
    cache.invalidate(&hash).await;
    let started = Instant::now();
    let (read, release) = store.hold_next_get();
    let second = tokio::spawn({
        let cache = cache.clone();
        async move { cache.lookup(&hash).await }
    });
    tokio::time::sleep(ttl + Duration::from_millis(10)).await;
    read.await.unwrap();
    release.send(()).unwrap();
    assert!(second.await.unwrap().unwrap().is_some());
    store.fail(true);
    tokio::time::sleep((ttl + Duration::from_millis(50)).saturating_sub(started.elapsed())).await;
    let failing = cache.lookup(&hash).await;
    assert!(
        matches!(failing, Err(StoreError::Unavailable(_))),
        "nothing served past ttl without stale_if_error: {failing:?}"
    );
}

// === stale_if_error ===

#[tokio::test]
async fn a_record_past_its_ttl_is_served_while_the_store_fails_only_within_stale_if_error() {
    let store = Double::default();
    let (hash, record) = token();
    store.put(hash, record);
    let ttl = Duration::from_millis(200);
    let stale_if_error = Duration::from_secs(1);
    let cache = cache(&store, ttl, stale_if_error);
    let started = Instant::now();
    lookup(&cache, &hash).await;

    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    store.fail(true);
    let served = cache.lookup(&hash).await;
    assert!(
        started.elapsed() < ttl + stale_if_error,
        "the machine was too slow for this test's timing"
    );
    assert!(
        matches!(served, Ok(Some(_))),
        "stale record served while the store fails: {served:?}"
    );
    assert_eq!(cache.metrics().cache_stale_served.get(), 1);
    assert_eq!(store.gets(), 2, "the store was asked first");

    // Beyond ttl + stale_if_error the record is gone: the failure shows.
    tokio::time::sleep(ttl + stale_if_error + Duration::from_millis(100) - started.elapsed()).await;
    let after = cache.lookup(&hash).await;
    assert!(
        matches!(after, Err(StoreError::Unavailable(_))),
        "nothing served past stale_if_error: {after:?}"
    );
}

#[tokio::test]
async fn a_stale_record_is_not_served_once_the_store_answers_again() {
    let store = Double::default();
    let (hash, record) = token();
    store.put(hash, record.clone());
    let ttl = Duration::from_millis(100);
    let cache = cache(&store, ttl, Duration::from_secs(60));
    lookup(&cache, &hash).await;
    tokio::time::sleep(ttl + Duration::from_millis(50)).await;

    store.fail(true);
    assert!(!lookup(&cache, &hash).await.is_disabled(), "served stale");
    // The store comes back, holding a change this gate never heard of.
    store.put(hash, disabled(&record));
    store.fail(false);
    // A failure lets stale records be served without asking for FAILING_FOR.
    tokio::time::sleep(FAILING_FOR + Duration::from_millis(50)).await;

    let gets = store.gets();
    assert!(
        lookup(&cache, &hash).await.is_disabled(),
        "the store answers: its record, not the stale one"
    );
    assert_eq!(store.gets(), gets + 1);
    // And it is fresh again: the next lookup is a hit.
    assert!(lookup(&cache, &hash).await.is_disabled());
    assert_eq!(store.gets(), gets + 1);
}

// === the listener ===

#[tokio::test]
async fn the_listener_drops_changed_tokens_and_everything_when_the_feed_resumes() {
    let store = Double::default();
    let ((a, rec_a), (b, rec_b)) = (token(), token());
    store.put(a, rec_a.clone());
    store.put(b, rec_b.clone());
    let cache = cache(&store, Duration::from_secs(60), Duration::ZERO);
    let feed = store.feed();
    tokio::spawn(listen_for_invalidations(cache.clone(), store.clone()));
    until("the listener to start", || !cache.is_subscribed()).await;

    feed.send(Change::Started).unwrap();
    until("the feed to be followed", || cache.is_subscribed()).await;
    lookup(&cache, &a).await;
    lookup(&cache, &b).await;
    assert_eq!(store.gets(), 2);

    // A change to a: a is read again, b stays cached.
    store.put(a, disabled(&rec_a));
    feed.send(Change::Token(a)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    while cache.cached(&a).await.is_some() {
        assert!(Instant::now() < deadline, "a was never dropped");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(lookup(&cache, &a).await.is_disabled());
    assert!(!lookup(&cache, &b).await.is_disabled());
    assert_eq!(store.gets(), 3);
    assert_eq!(cache.metrics().invalidations.get(), 1);

    // Interrupted: not following, but what is cached keeps serving.
    feed.send(Change::Interrupted).unwrap();
    until("the interruption", || !cache.is_subscribed()).await;
    store.put(b, disabled(&rec_b)); // a change the feed missed
    assert!(!lookup(&cache, &b).await.is_disabled());

    // Resumed: nothing held is trusted.
    feed.send(Change::Resumed).unwrap();
    until("the feed to resume", || cache.is_subscribed()).await;
    assert!(lookup(&cache, &b).await.is_disabled());
}

/// A resumption distrusts what is cached without taking it away: each
/// entry is read again before it is used, and only if that read fails is
/// it served, within its `cache.ttl` (the bound a lost change always had).
/// Dropped instead, a cached token got 503 whenever its first read after a
/// resubscription met a store still settling (a Cluster slot in
/// transition after a fail-over: CI, stop 36).
#[tokio::test]
async fn a_token_cached_before_a_resumption_is_read_again_and_kept_if_that_read_fails() {
    let store = Double::default();
    let ((a, rec_a), (b, rec_b)) = (token(), token());
    store.put(a, rec_a.clone());
    store.put(b, rec_b.clone());
    let ttl = Duration::from_millis(1500);
    let cache = cache(&store, ttl, Duration::ZERO);
    let feed = store.feed();
    tokio::spawn(listen_for_invalidations(cache.clone(), store.clone()));
    until("the listener to start", || !cache.is_subscribed()).await;
    feed.send(Change::Started).unwrap();
    until("the feed to be followed", || cache.is_subscribed()).await;
    let cached_at = Instant::now();
    lookup(&cache, &a).await;
    lookup(&cache, &b).await;
    assert_eq!(store.gets(), 2);

    feed.send(Change::Interrupted).unwrap();
    until("the interruption", || !cache.is_subscribed()).await;
    store.put(b, disabled(&rec_b)); // a change the feed missed
    feed.send(Change::Resumed).unwrap();
    until("the feed to resume", || cache.is_subscribed()).await;
    // Reads begun in the millisecond of the resumption count as begun
    // before it: the ones below that must be trusted begin later.
    tokio::time::sleep(Duration::from_millis(2)).await;

    // The store fails the first read after the resumption: a is kept.
    store.fail(true);
    let kept = cache.lookup(&a).await;
    assert!(
        cached_at.elapsed() < ttl,
        "the machine was too slow for this test's timing"
    );
    assert!(
        matches!(&kept, Ok(Some(r)) if !r.is_disabled()),
        "a cached token read again after a resumption, the read failing: {kept:?}"
    );
    assert_eq!(store.gets(), 3, "the store was asked first");
    assert_eq!(cache.metrics().cache_stale_served.get(), 1);

    // The store answers again: the missed change is seen at once (a
    // distrusted entry is not served without asking, as a stale one is
    // for FAILING_FOR after a failure), and a token read again is trusted
    // again (a hit).
    store.fail(false);
    let gets = store.gets();
    assert!(lookup(&cache, &b).await.is_disabled(), "the missed change");
    assert_eq!(store.gets(), gets + 1);
    assert!(!lookup(&cache, &a).await.is_disabled());
    assert!(!lookup(&cache, &a).await.is_disabled());
    assert_eq!(store.gets(), gets + 2, "a read once, then a hit");
}

/// A distrusted entry is never served past its `cache.ttl`, whatever
/// `cache.stale_if_error` says: the stale grace covers only records whose
/// changes would have been heard.
#[tokio::test]
async fn a_distrusted_record_past_its_ttl_is_not_served_stale() {
    let (store, a, cache) = cached_with_stale_if_error().await;
    cache.invalidate_all();
    tokio::time::sleep(STALE_TTL + Duration::from_millis(50)).await;
    store.fail(true);
    not_served(
        cache.lookup(&a).await,
        &cache,
        "a distrusted record past its ttl",
    );
}

/// `ttl` of [`cached_with_stale_if_error`].
const STALE_TTL: Duration = Duration::from_millis(200);

/// A token cached (`ttl` [`STALE_TTL`], `stale_if_error` 60 s), its store,
/// and the cache.
async fn cached_with_stale_if_error() -> (Double, TokenHash, Arc<TokenCache<Double>>) {
    let store = Double::default();
    let (a, rec_a) = token();
    store.put(a, rec_a);
    let cache = cache(&store, STALE_TTL, Duration::from_secs(60));
    lookup(&cache, &a).await;
    (store, a, cache)
}

/// `got` is the store's failure, nothing served from the cache.
fn not_served(
    got: Result<Option<Arc<CachedRecord>>, StoreError>,
    cache: &TokenCache<Double>,
    what: &str,
) {
    assert!(
        matches!(got, Err(StoreError::Unavailable(_))),
        "{what}: {got:?}"
    );
    assert_eq!(cache.metrics().cache_stale_served.get(), 0, "{what}");
}

/// A stale record whose read again is out when the cache is distrusted is
/// judged as distrusted when that read fails: not served past its `ttl`.
/// (Judged when the lookup began, it was served: the refresh had started
/// while it was still trusted.)
#[tokio::test]
async fn a_stale_record_distrusted_while_its_read_is_out_is_not_served() {
    let (store, a, cache) = cached_with_stale_if_error().await;
    tokio::time::sleep(STALE_TTL + Duration::from_millis(50)).await;

    let (read, release) = store.hold_next_get();
    let c = cache.clone();
    let refresh = tokio::spawn(async move { c.lookup(&a).await });
    read.await.unwrap();
    cache.invalidate_all();
    store.fail(true);
    release.send(()).unwrap();
    not_served(
        refresh.await.unwrap(),
        &cache,
        "a record past its ttl, distrusted while its read was out",
    );
}

/// A request that joins a read begun before a change of its token, and
/// came after the change (a revoke through this gate, answered), reads
/// again: it took that read's answer, and was allowed once after the
/// revoke was acknowledged.
#[tokio::test]
async fn a_lookup_joining_a_read_begun_before_a_change_reads_again() {
    let store = Double::default();
    let (a, rec_a) = token();
    store.put(a, rec_a.clone());
    let cache = cache(&store, Duration::from_secs(60), Duration::ZERO);

    let (read, release) = store.hold_next_get();
    let c = cache.clone();
    let first = tokio::spawn(async move { c.lookup(&a).await });
    read.await.unwrap();
    // The change, made and acknowledged while the first read is out.
    store.put(a, disabled(&rec_a));
    cache.invalidate(&a).await;
    // A request after it joins the read under way.
    let c = cache.clone();
    let second = tokio::spawn(async move { c.lookup(&a).await });
    // (One thread: the second lookup ran until it waited on the read.)
    until("the second lookup to join", || {
        cache.metrics().cache_misses.get() >= 2
    })
    .await;
    release.send(()).unwrap();
    // The first raced with the change: it may use the old record.
    first.await.unwrap().unwrap().expect("a record");
    let after = second.await.unwrap().unwrap().expect("a record");
    assert!(
        after.is_disabled(),
        "a request after the change got the read begun before it"
    );
}

/// The whole record kept for self-inspection gets the epoch check too: a
/// read that was out when its token changed is not kept (it was, for
/// `WHOLE_FOR`: a renamed or disabled token showed its old record).
#[tokio::test]
async fn a_whole_record_read_before_a_change_is_not_kept() {
    let store = Double::default();
    let (a, rec_a) = token();
    store.put(a, rec_a.clone());
    let cache = cache(&store, Duration::from_secs(60), Duration::ZERO);

    let (read, release) = store.hold_next_get();
    let c = cache.clone();
    let first = tokio::spawn(async move { c.whole(&a).await });
    read.await.unwrap();
    let renamed = TokenRecord {
        name: "Renamed".into(),
        ..rec_a
    };
    store.put(a, renamed);
    cache.invalidate(&a).await;
    release.send(()).unwrap();
    let raced = first.await.unwrap().unwrap().expect("a record");
    assert_ne!(raced.name, "Renamed", "the racing read had the old record");

    let gets = store.gets();
    let again = cache.whole(&a).await.unwrap().expect("a record");
    assert_eq!(again.name, "Renamed", "the old record was kept");
    assert_eq!(store.gets(), gets + 1);
}

/// Tokens looked up before the feed is first followed (the gate answers
/// from its start; the subscription lands later) may have changed
/// unheard: the first subscription drops them as a resumption does.
#[tokio::test]
async fn the_first_subscription_drops_what_was_cached_before_it() {
    let store = Double::default();
    let (a, rec_a) = token();
    store.put(a, rec_a.clone());
    let cache = cache(&store, Duration::from_secs(60), Duration::ZERO);
    let feed = store.feed();
    tokio::spawn(listen_for_invalidations(cache.clone(), store.clone()));
    until("the listener to start", || !cache.is_subscribed()).await;
    assert!(!lookup(&cache, &a).await.is_disabled());
    store.put(a, disabled(&rec_a)); // before the subscription: unheard

    feed.send(Change::Started).unwrap();
    until("the feed to be followed", || cache.is_subscribed()).await;
    assert!(lookup(&cache, &a).await.is_disabled());
}

// === the lookup note (traced requests) ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_traced_lookup_notes_miss_coalesced_hit_and_negative_hit() {
    let store = Double::default();
    let cache = cache(&store, Duration::from_secs(60), Duration::ZERO);

    // Two lookups of one token while its read is held: the first reads,
    // the second shares that read. Nothing shows when the second is
    // waiting on moka's shared read, so a pause lets it get there, longer
    // on each try; a second that came after the read is a plain hit.
    let mut coalesced = false;
    for attempt in 1..=5u32 {
        let (hash, record) = token();
        store.put(hash, record);
        let gets = store.gets();
        let (read, release) = store.hold_next_get();
        let c = cache.clone();
        let first = tokio::spawn(async move { noting(c.lookup(&hash)).await });
        read.await.unwrap();
        let c = cache.clone();
        let second = tokio::spawn(async move { noting(c.lookup(&hash)).await });
        tokio::time::sleep(Duration::from_millis(20) * attempt).await;
        release.send(()).unwrap();
        let (found, note) = first.await.unwrap();
        assert!(found.unwrap().is_some());
        assert_eq!(note.cache.get(), Some(CacheUse::Miss));
        assert!(
            note.store.get() >= Duration::from_millis(20),
            "waited on the held read"
        );
        let (found, note) = second.await.unwrap();
        assert!(found.unwrap().is_some());
        assert_eq!(store.gets(), gets + 1, "one read for both");
        match note.cache.get() {
            Some(CacheUse::Coalesced) => {
                coalesced = true;
                break;
            }
            other => assert_eq!(other, Some(CacheUse::Hit)),
        }
    }
    assert!(coalesced, "a lookup that shared another's read says so");

    let (hash, record) = token();
    store.put(hash, record);
    let (_, note) = noting(cache.lookup(&hash)).await;
    assert_eq!(note.cache.get(), Some(CacheUse::Miss));
    let (_, note) = noting(cache.lookup(&hash)).await;
    assert_eq!(note.cache.get(), Some(CacheUse::Hit));
    assert_eq!(note.store.get(), Duration::ZERO);

    let (unknown, _) = token();
    let (_, note) = noting(cache.lookup(&unknown)).await;
    assert_eq!(note.cache.get(), Some(CacheUse::Miss));
    let (_, note) = noting(cache.lookup(&unknown)).await;
    assert_eq!(note.cache.get(), Some(CacheUse::NegativeHit));

    // Outside a note (traces off) a lookup notes nothing, and works.
    assert!(cache.lookup(&hash).await.unwrap().is_some());
    assert!(NOTE.try_with(|_| ()).is_err());
}

/// moka holds one `Entry` per cached token, and an `Arc<CachedRecord>` is
/// one allocation per token: both bounded, since a byte more in either is
/// a megabyte more per million cached tokens (benches/cache_memory.rs).
#[test]
fn an_entry_and_a_cached_record_stay_small() {
    assert!(std::mem::size_of::<Entry>() <= 16);
    // The lateness rides in the deadline's top bit.
    let fast = FreshUntil::new(1_000, 60_000, 1_000 + LATE_MS - 1);
    let late = FreshUntil::new(1_000, 60_000, 1_000 + LATE_MS);
    assert_eq!((fast.ms(), fast.checked()), (61_000, false));
    assert_eq!((late.ms(), late.checked()), (61_000, true));
    // 208 + the Arc's two counts fill a 224-byte allocator size class.
    assert!(std::mem::size_of::<CachedRecord>() <= 208);
}

// === confirming a change ===

/// A change that landed after its caller gave up (a timeout) is confirmed
/// on the retry: the cache must not keep what it replaced, whether or not
/// anything follows the store's changes.
#[tokio::test]
async fn confirming_a_change_drops_the_record_it_replaced() {
    let store = Double::default();
    let (hash, record) = token();
    store.put(hash, record.clone());
    let cache = cache(&store, Duration::from_secs(60), Duration::ZERO);
    assert!(!lookup(&cache, &hash).await.is_disabled());
    // The late write: in the store, not through the cache.
    let changed = disabled(&record);
    store.put(hash, changed.clone());
    let stored = Stored {
        hash,
        record: changed,
        raw: Vec::new(),
    };
    cache.confirm(&stored).await.unwrap();
    assert!(cache.cached(&hash).await.is_none());
    assert!(lookup(&cache, &hash).await.is_disabled());
}
