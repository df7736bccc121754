//! Unit tests of `usage`: when the request path notes a use (once a minute
//! per token, never blocking), and what the writer does with the notes
//! (keeps the latest per token, never moves `last_used_at` back, drops a
//! note the store refused).

use std::time::Duration;

use jiff::SignedDuration;

use super::*;
use crate::cache::{CacheOptions, CachedRecord};
use crate::decide::Grant;
use crate::policy::roles::Permission;
use crate::store::redis::RedisOptions;
use crate::store::{EmbeddedStore, RedisStore, TokenStore};
use crate::token::record::RECORD_VERSION;
use crate::token::{Scope, TokenSecret};

fn t0() -> Timestamp {
    "2027-01-01T00:00:00Z".parse().unwrap()
}

fn after(secs: i64) -> Timestamp {
    t0() + SignedDuration::from_secs(secs)
}

fn record(last_used_at: Option<Timestamp>) -> TokenRecord {
    TokenRecord {
        v: RECORD_VERSION,
        id: TokenId::generate().unwrap(),
        name: "CI".into(),
        workspace_id: "ws_1".into(),
        scope: Scope::Workspace {
            role: "workspace_viewer".into(),
        },
        created_by: "alice".into(),
        created_at: t0() - SignedDuration::from_hours(1),
        expires_at: None,
        disabled_at: None,
        disabled_by: None,
        revoked_at: None,
        revoked_by: None,
        last_used_at,
        rotated_from: None,
        description: None,
        rotated_to: None,
        allow_from: Vec::new(),
        not_before: None,
        limits_by: None,
    }
}

/// A token hash, for the notes of tests that do not write them.
fn any_hash() -> Option<TokenHash> {
    Some(TokenSecret::generate().unwrap().hash())
}

/// `record` created in `cache`'s store; its hash.
async fn stored(cache: &TokenCache<Store>, record: &TokenRecord) -> TokenHash {
    let hash = TokenSecret::generate().unwrap().hash();
    cache.create(&hash, record).await.unwrap();
    hash
}

/// An allowed request's principal for (a fresh cache entry of) `record`.
fn principal(record: &TokenRecord) -> Principal<'static> {
    Principal {
        record: Arc::new(CachedRecord::new(record)),
        grant: Grant::Workspace,
        permission: Permission::parse("testcases:read").unwrap(),
        project: None,
    }
}

/// A recorder whose queue the test reads instead of a writer.
fn recorder(capacity: usize) -> (UsageRecorder, mpsc::Receiver<Used>) {
    let (tx, rx) = mpsc::channel(capacity);
    (
        UsageRecorder {
            tx: Some(tx),
            notes: None,
        },
        rx,
    )
}

fn queued(rx: &mut mpsc::Receiver<Used>) -> Vec<(String, Timestamp)> {
    let mut out = Vec::new();
    while let Ok((id, _, at)) = rx.try_recv() {
        out.push((id.as_str().to_owned(), at));
    }
    out
}

fn options() -> CacheOptions {
    CacheOptions {
        ttl: Duration::from_secs(60),
        negative_ttl: Duration::from_secs(5),
        max_entries: 1000,
        stale_if_error: Duration::ZERO,
    }
}

async fn embedded(dir: &tempfile::TempDir) -> Arc<TokenCache<Store>> {
    let store = EmbeddedStore::open(dir.path(), Duration::from_secs(5))
        .await
        .unwrap();
    Arc::new(TokenCache::new(Store::Embedded(store), options()))
}

/// A store nothing answers for: every call fails at once.
fn unreachable() -> Arc<TokenCache<Store>> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let store = RedisStore::new(RedisOptions {
        url: format!("redis://127.0.0.1:{port}"),
        key_prefix: "x:".into(),
        timeout: Duration::from_millis(100),
        retention: Duration::from_secs(3600),
    })
    .unwrap();
    Arc::new(TokenCache::new(Store::Redis(store), options()))
}

async fn last_used(cache: &TokenCache<Store>, id: &TokenId) -> Option<Timestamp> {
    cache.find(id).await.unwrap().unwrap().record.last_used_at
}

// === the request path ===

#[test]
fn a_use_is_queued_at_most_once_a_minute_per_cache_entry() {
    let (usage, mut rx) = recorder(16);
    let rec = record(None);
    let p = principal(&rec);
    usage.note(&p, any_hash, t0());
    assert_eq!(queued(&mut rx), [(rec.id.as_str().to_owned(), t0())]);
    usage.note(&p, any_hash, after(1));
    usage.note(&p, any_hash, after(59));
    assert_eq!(queued(&mut rx), [], "within the minute: nothing more");
    usage.note(&p, any_hash, after(60));
    assert_eq!(queued(&mut rx), [(rec.id.as_str().to_owned(), after(60))]);
}

#[test]
fn a_use_within_a_minute_of_the_stored_last_use_is_not_queued() {
    let (usage, mut rx) = recorder(16);
    let rec = record(Some(after(-30)));
    let p = principal(&rec);
    usage.note(&p, any_hash, t0());
    usage.note(&p, any_hash, after(29));
    assert_eq!(queued(&mut rx), [], "the store already holds a recent use");
    usage.note(&p, any_hash, after(30));
    assert_eq!(queued(&mut rx), [(rec.id.as_str().to_owned(), after(30))]);
}

#[test]
fn each_token_has_its_own_minute() {
    let (usage, mut rx) = recorder(16);
    let (a, b) = (record(None), record(None));
    usage.note(&principal(&a), any_hash, t0());
    usage.note(&principal(&b), any_hash, after(1));
    assert_eq!(
        queued(&mut rx),
        [
            (a.id.as_str().to_owned(), t0()),
            (b.id.as_str().to_owned(), after(1))
        ]
    );
}

#[test]
fn a_full_queue_drops_the_note_and_lets_the_token_through_a_minute_later() {
    let (usage, mut rx) = recorder(1);
    let other = record(None);
    usage.note(&principal(&other), any_hash, t0());
    let rec = record(None);
    let p = principal(&rec);
    // The queue is full: `note` returns at once, the note is lost…
    usage.note(&p, any_hash, after(1));
    usage.note(&p, any_hash, after(2));
    assert_eq!(queued(&mut rx), [(other.id.as_str().to_owned(), t0())]);
    // …and the same entry is let through again a minute after the drop.
    usage.note(&p, any_hash, after(60));
    assert_eq!(
        queued(&mut rx),
        [],
        "still within the dropped note's minute"
    );
    usage.note(&p, any_hash, after(61));
    assert_eq!(queued(&mut rx), [(rec.id.as_str().to_owned(), after(61))]);
}

#[test]
fn a_recorder_without_a_writer_notes_nothing_and_claims_nothing() {
    let usage = UsageRecorder {
        tx: None,
        notes: None,
    };
    let rec = record(None);
    let p = principal(&rec);
    usage.note(&p, any_hash, t0());
    assert!(
        p.record.note_use(t0().as_millisecond(), 1),
        "the entry's minute was not claimed"
    );
}

// === the writer ===

#[tokio::test]
async fn the_writer_keeps_the_latest_of_several_notes_of_one_token() {
    let dir = tempfile::tempdir().unwrap();
    let cache = embedded(&dir).await;
    let rec = record(None);
    let hash = stored(&cache, &rec).await;
    let (usage, task) = start(cache.clone());
    // Two cache entries of one token (as after a reload): each notes once;
    // the later use arrives first.
    usage.note(&principal(&rec), || Some(hash), after(120));
    usage.note(&principal(&rec), || Some(hash), after(60));
    // Dropping the last recorder ends the writer after a last flush.
    drop(usage);
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the writer ends when its recorders are gone")
        .unwrap();
    assert_eq!(last_used(&cache, &rec.id).await, Some(after(120)));
}

#[tokio::test]
async fn a_flush_writes_each_pending_use_and_empties_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    let cache = embedded(&dir).await;
    let (a, b) = (record(None), record(Some(after(-600))));
    let (hash_a, hash_b) = (stored(&cache, &a).await, stored(&cache, &b).await);
    let mut pending = HashMap::from([
        (hash_a, (a.id.clone(), after(5))),
        (hash_b, (b.id.clone(), after(6))),
    ]);
    flush(&cache, &mut pending).await;
    assert!(pending.is_empty());
    assert_eq!(last_used(&cache, &a.id).await, Some(after(5)));
    assert_eq!(last_used(&cache, &b.id).await, Some(after(6)));
}

#[tokio::test]
async fn a_flush_never_moves_last_used_at_back() {
    let dir = tempfile::tempdir().unwrap();
    let cache = embedded(&dir).await;
    let rec = record(Some(after(300)));
    let hash = stored(&cache, &rec).await;
    let mut pending = HashMap::from([(hash, (rec.id.clone(), after(60)))]);
    flush(&cache, &mut pending).await;
    assert_eq!(last_used(&cache, &rec.id).await, Some(after(300)));
}

#[tokio::test]
async fn a_flush_skips_a_token_that_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let cache = embedded(&dir).await;
    let kept = record(None);
    let hash = stored(&cache, &kept).await;
    let gone = record(None);
    let mut pending = HashMap::from([
        (any_hash().unwrap(), (gone.id.clone(), after(1))),
        (hash, (kept.id.clone(), after(2))),
    ]);
    flush(&cache, &mut pending).await;
    assert!(pending.is_empty());
    assert_eq!(last_used(&cache, &kept.id).await, Some(after(2)));
    assert!(
        cache.find(&gone.id).await.unwrap().is_none(),
        "nothing created"
    );
}

#[tokio::test]
async fn a_failing_store_drops_the_batch_and_the_writer_keeps_going() {
    let cache = unreachable();
    let rec = record(None);
    let mut pending = HashMap::from([(any_hash().unwrap(), (rec.id.clone(), after(1)))]);
    tokio::time::timeout(Duration::from_secs(5), flush(&cache, &mut pending))
        .await
        .expect("a failing store is given up on within its timeout");
    assert!(
        pending.is_empty(),
        "a refused note is dropped, not kept: it comes back with the next use"
    );

    // The writer survives store errors and still ends cleanly.
    let (usage, task) = start(cache);
    usage.note(&principal(&rec), any_hash, after(1));
    usage.note(&principal(&record(None)), any_hash, after(2));
    drop(usage);
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the writer ends after its last flush")
        .expect("the writer does not panic on store errors");
}
