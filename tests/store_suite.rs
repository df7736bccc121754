//! One contract, two stores: the same suite runs against the embedded file
//! store and against a real Redis (unique key prefix per test), plus the
//! backend-specific promises (restart survival; key schema, retention TTL,
//! invalidation events, timeouts and reconnection for Redis).
//!
//! Over 500 lines on purpose: one contract run against both backends; the
//! suite must stay one list.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use hawzu_gate::store::{
    Change, ChangeFeed, Changes, Cursor, EmbeddedStore, ListFilter, ListQuery, MAX_PAGE,
    RedisStore, StoreError, TokenStore, redis::RedisOptions, update,
};
use hawzu_gate::token::{
    ProjectGrant, Scope, TokenHash, TokenId, TokenKind, TokenRecord, TokenSecret, TokenState,
};
use jiff::{SignedDuration, Timestamp};

use common::{RedisServer, eventually, record, redis_url, unique_prefix};

/// The stores' call timeout in the semantic tests: generous, so that a busy
/// machine cannot turn a set-up step into a failure (the request path's
/// 250 ms default is no part of what they check).
const TIMEOUT: Duration = Duration::from_secs(5);
/// The request path's default, for the test that checks calls are bounded.
const REQUEST_PATH_TIMEOUT: Duration = Duration::from_millis(250);
const RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

fn project_record(ws: &str, created_at: Timestamp) -> TokenRecord {
    TokenRecord {
        scope: Scope::Project {
            projects: vec![ProjectGrant {
                project_id: "proj_a".into(),
                role: "project_viewer".into(),
            }],
        },
        ..record(ws, created_at)
    }
}

fn hash() -> TokenHash {
    TokenSecret::generate().unwrap().hash()
}

async fn embedded() -> (EmbeddedStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (EmbeddedStore::open(dir.path(), TIMEOUT).await.unwrap(), dir)
}

fn redis_store(test: &str) -> RedisStore {
    redis_store_at(&redis_url(), &unique_prefix(test))
}

fn redis_store_at(url: &str, prefix: &str) -> RedisStore {
    redis_store_with(url, prefix, TIMEOUT)
}

fn redis_store_with(url: &str, prefix: &str, timeout: Duration) -> RedisStore {
    RedisStore::new(RedisOptions {
        url: url.into(),
        key_prefix: prefix.into(),
        timeout,
        retention: RETENTION,
    })
    .unwrap()
}

fn all(ws: Option<&str>, cursor: Option<Cursor>, limit: usize) -> ListQuery {
    ListQuery {
        workspace: ws.map(str::to_owned),
        cursor,
        limit,
        filter: ListFilter {
            kind: None,
            unused_since: None,
            state: None,
            now: Timestamp::now(),
            expiring_by: None,
        },
    }
}

// === the shared suite ===

async fn created_token_is_found_by_hash_and_id(s: &impl TokenStore) {
    let h = hash();
    let r = record("ws_a", Timestamp::now());
    s.create(&h, &r).await.unwrap();
    assert_eq!(s.get(&h).await.unwrap(), Some(r.clone()));
    let found = s.find(&r.id).await.unwrap().unwrap();
    assert_eq!(found.hash, h);
    assert_eq!(found.record, r);
    assert_eq!(s.get(&hash()).await.unwrap(), None);
    assert!(
        s.find(&TokenId::generate().unwrap())
            .await
            .unwrap()
            .is_none()
    );
    s.ping().await.unwrap();
}

async fn duplicate_id_or_hash_is_a_conflict(s: &impl TokenStore) {
    let h = hash();
    let r = record("ws_a", Timestamp::now());
    s.create(&h, &r).await.unwrap();
    let same_id = r.clone();
    assert!(matches!(
        s.create(&hash(), &same_id).await,
        Err(StoreError::Conflict)
    ));
    let other = record("ws_a", Timestamp::now());
    assert!(matches!(
        s.create(&h, &other).await,
        Err(StoreError::Conflict)
    ));
    // The failed creates left nothing behind.
    assert!(s.find(&other.id).await.unwrap().is_none());
    assert_eq!(s.get(&h).await.unwrap(), Some(r));
}

async fn replace_is_compare_and_set(s: &impl TokenStore) {
    let h = hash();
    let r = record("ws_a", Timestamp::now());
    s.create(&h, &r).await.unwrap();
    let first = s.find(&r.id).await.unwrap().unwrap();
    let disabled = TokenRecord {
        disabled_at: Some(Timestamp::now()),
        ..r.clone()
    };
    assert!(s.replace(&first, &disabled).await.unwrap());
    // `first` is stale now: a second writer holding it loses.
    let revoked = TokenRecord {
        revoked_at: Some(Timestamp::now()),
        ..r.clone()
    };
    assert!(!s.replace(&first, &revoked).await.unwrap());
    assert_eq!(s.get(&h).await.unwrap(), Some(disabled));
}

/// `confirm` (a retried change that found the record already as asked)
/// answers success only for the record it was given: one read from an
/// old Sentinel master and confirmed on the new one, which never had the
/// change, must not be told "written" (it was answered 200 and lost).
async fn confirm_is_compare_and_set(s: &impl TokenStore) {
    let h = hash();
    let r = record("ws_a", Timestamp::now());
    s.create(&h, &r).await.unwrap();
    let stale = s.find(&r.id).await.unwrap().unwrap();
    let disabled = TokenRecord {
        disabled_at: Some(Timestamp::now()),
        ..r.clone()
    };
    assert!(s.replace(&stale, &disabled).await.unwrap());
    assert!(
        !s.confirm(&stale).await.unwrap(),
        "confirm answered Ok for a record the store no longer holds"
    );
    assert_eq!(s.get(&h).await.unwrap(), Some(disabled.clone()));
    // The record it holds is confirmed (and, on Redis, written again).
    let current = s.find(&r.id).await.unwrap().unwrap();
    assert!(s.confirm(&current).await.unwrap());
    assert_eq!(s.get(&h).await.unwrap(), Some(disabled));
}

/// `remove` (a rotate's successor nobody was given) is compare-and-delete
/// and leaves no trace: not by hash, not by id, not in a list; the id and
/// hash are free again.
async fn remove_is_compare_and_delete(s: &impl TokenStore) {
    let ws = format!("ws_remove_{}", TokenId::generate().unwrap().as_str());
    let h = hash();
    let r = record(&ws, Timestamp::now());
    s.create(&h, &r).await.unwrap();
    let kept = record(&ws, Timestamp::now());
    s.create(&hash(), &kept).await.unwrap();
    let stale = s.find(&r.id).await.unwrap().unwrap();
    let renamed = TokenRecord {
        name: "Renamed".into(),
        ..r.clone()
    };
    assert!(s.replace(&stale, &renamed).await.unwrap());
    assert!(
        !s.remove(&stale).await.unwrap(),
        "a record changed since it was read was removed"
    );
    assert_eq!(s.get(&h).await.unwrap(), Some(renamed));
    let current = s.find(&r.id).await.unwrap().unwrap();
    assert!(s.remove(&current).await.unwrap());
    assert_eq!(s.get(&h).await.unwrap(), None);
    assert!(s.find(&r.id).await.unwrap().is_none());
    let listed: Vec<TokenId> = s
        .list(all(Some(&ws), None, 10))
        .await
        .unwrap()
        .tokens
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(listed, vec![kept.id.clone()]);
    let everywhere = s.list(all(None, None, MAX_PAGE)).await.unwrap();
    assert!(everywhere.tokens.iter().all(|t| t.id != r.id));
    // Gone: removing again finds nothing; the id and hash are free.
    assert!(!s.remove(&current).await.unwrap());
    s.create(&h, &r).await.unwrap();
}

/// `end_overlaps` follows `rotated_from` back from a revoked value: it ends
/// every overlap still running, walks past a value already revoked (a
/// shorter overlap that ended first) and one its judge refuses (left as it
/// is), and stops at a value that does not name the one after it.
async fn end_overlaps_walks_the_whole_chain(s: &(impl TokenStore + ChangeFeed)) {
    let ws = format!("ws_chain_{}", TokenId::generate().unwrap().as_str());
    let now = Timestamp::now();
    let week = now + SignedDuration::from_hours(7 * 24);
    // e ← d ← c ← b ← a ← stray (stray is not rotated to a: a broken link).
    let ids: Vec<TokenId> = (0..6).map(|_| TokenId::generate().unwrap()).collect();
    let (stray, a, b, c, d, e) = (&ids[0], &ids[1], &ids[2], &ids[3], &ids[4], &ids[5]);
    let link = |id: &TokenId, from: Option<&TokenId>, to: Option<&TokenId>, until| TokenRecord {
        id: id.clone(),
        rotated_from: from.cloned(),
        rotated_to: to.cloned(),
        revoked_at: until,
        name: "refused".into(),
        ..record(&ws, now)
    };
    let chain = [
        link(stray, None, None, None),
        // Still in its overlap, but the one after it does not name it.
        TokenRecord {
            name: "a".into(),
            ..link(a, Some(stray), Some(b), Some(week))
        },
        TokenRecord {
            name: "b".into(),
            ..link(b, Some(a), Some(c), Some(week))
        },
        // Refused by the judge: left working.
        link(c, Some(b), Some(d), Some(week)),
        // Its overlap ended by itself an hour ago: walked past.
        TokenRecord {
            name: "d".into(),
            ..link(
                d,
                Some(c),
                Some(e),
                Some(now - SignedDuration::from_hours(1)),
            )
        },
        TokenRecord {
            name: "e".into(),
            ..link(e, Some(d), None, Some(now))
        },
    ];
    for r in &chain {
        s.create(&hash(), r).await.unwrap();
    }
    let walk = hawzu_gate::store::end_overlaps(s, &chain[5], "admin", now, |r| {
        if r.name == "refused" { Err(()) } else { Ok(()) }
    })
    .await;
    assert!(walk.cut.is_none(), "{:?}", walk.cut);
    let ended: Vec<(&TokenId, &TokenId)> = walk
        .ended
        .iter()
        .map(|x| (&x.after.record.id, &x.successor))
        .collect();
    assert_eq!(ended, [(b, c), (a, b)]);
    for (id, works) in [(a, false), (b, false), (c, true), (stray, true)] {
        let r = s.find(id).await.unwrap().unwrap().record;
        assert_eq!(!r.is_revoked_at(Timestamp::now()), works, "{id}: {r:?}");
    }
    assert_eq!(
        s.find(b)
            .await
            .unwrap()
            .unwrap()
            .record
            .revoked_by
            .as_deref(),
        Some("admin")
    );
    // Again: nothing left to end.
    let again =
        hawzu_gate::store::end_overlaps(s, &chain[5], "admin", now, |_| Ok::<_, ()>(())).await;
    let ended: Vec<&TokenId> = again.ended.iter().map(|x| &x.after.record.id).collect();
    assert_eq!(ended, [c], "only the one refused before");
    // Once more, with nothing to end: values passed are read, never
    // written (a write is an event to every gate, and a tenant could make
    // every revoke of a long chain cost a write per value).
    let mut changes = s.changes().unwrap();
    assert_eq!(next_change(&mut changes).await, Change::Started);
    let again =
        hawzu_gate::store::end_overlaps(s, &chain[5], "admin", now, |_| Ok::<_, ()>(())).await;
    assert!(again.ended.is_empty() && again.cut.is_none(), "{again:?}");
    let marker = hash();
    s.publish(&marker).await.unwrap();
    assert_eq!(
        next_change(&mut changes).await,
        Change::Token(marker),
        "the walk wrote a value it passed"
    );
}

async fn concurrent_updates_are_not_lost(s: &(impl TokenStore + Clone)) {
    let r = record("ws_a", Timestamp::now());
    s.create(&hash(), &r).await.unwrap();
    // Eight writers each append their own name; every append must survive.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = s.clone();
        let id = r.id.clone();
        tasks.push(tokio::spawn(async move {
            update(&s, &id, |cur| {
                Ok::<_, ()>(Some(TokenRecord {
                    name: format!("{}+{i}", cur.name),
                    ..cur.clone()
                }))
            })
            .await
            .unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let name = s.find(&r.id).await.unwrap().unwrap().record.name;
    for i in 0..8 {
        assert!(name.contains(&format!("+{i}")), "update {i} lost: {name}");
    }
}

async fn revoked_token_keeps_a_tombstone(s: &impl TokenStore) {
    let h = hash();
    let r = record("ws_a", Timestamp::now());
    s.create(&h, &r).await.unwrap();
    let st = update(s, &r.id, |cur| {
        Ok::<_, ()>(Some(TokenRecord {
            revoked_at: Some(Timestamp::now()),
            ..cur.clone()
        }))
    })
    .await
    .unwrap();
    let got = s.get(&h).await.unwrap().expect("tombstone kept");
    assert!(got.revoked_at.is_some());
    assert_eq!(got.state(Timestamp::now()), TokenState::Revoked);
    assert_eq!(st.record, got);
}

async fn listing_pages_newest_first_across_ties(s: &impl TokenStore) {
    let ws = format!("ws_{}", &TokenId::generate().unwrap().as_str()[4..]);
    let base = Timestamp::now();
    let mut ids = Vec::new();
    // 130 tokens over 65 distinct milliseconds: ties at every step.
    for i in 0..130 {
        let r = record(&ws, base + SignedDuration::from_millis(i / 2));
        ids.push(r.id.clone());
        s.create(&hash(), &r).await.unwrap();
    }
    // Another workspace's tokens never show up.
    s.create(&hash(), &record("ws_other", base)).await.unwrap();

    let mut seen = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let page = s.list(all(Some(&ws), cursor, 50)).await.unwrap();
        pages += 1;
        assert!(page.tokens.len() <= 50);
        seen.extend(page.tokens.iter().map(|t| (t.created_at, t.id.clone())));
        assert!(page.tokens.iter().all(|t| t.workspace_id == ws));
        match page.next {
            Some(c) => cursor = Some(c),
            None => break,
        }
        assert!(pages < 10, "pagination does not end");
    }
    assert_eq!(seen.len(), 130, "every token exactly once");
    let distinct: HashSet<_> = seen.iter().map(|(_, id)| id.clone()).collect();
    assert_eq!(distinct.len(), 130);
    assert!(seen.windows(2).all(|w| w[0].0 >= w[1].0), "newest first");
    assert!(pages >= 3);
}

async fn listing_filters_by_state_and_type(s: &impl TokenStore) {
    let ws = format!("ws_{}", &TokenId::generate().unwrap().as_str()[4..]);
    let now = Timestamp::now();
    let enabled = record(&ws, now);
    let disabled = TokenRecord {
        disabled_at: Some(now),
        ..record(&ws, now)
    };
    let expiring = TokenRecord {
        expires_at: Some(now + SignedDuration::from_secs(1)),
        ..record(&ws, now)
    };
    let project = project_record(&ws, now);
    for r in [&enabled, &disabled, &expiring, &project] {
        s.create(&hash(), r).await.unwrap();
    }
    let query = |kind, state, at| ListQuery {
        workspace: Some(ws.clone()),
        cursor: None,
        limit: 2,
        filter: ListFilter {
            kind,
            state,
            unused_since: None,
            now: at,
            expiring_by: None,
        },
    };
    let ids =
        |p: hawzu_gate::store::Page| p.tokens.into_iter().map(|t| t.id).collect::<HashSet<_>>();
    let later = now + SignedDuration::from_secs(2);
    assert_eq!(
        ids(s
            .list(query(None, Some(TokenState::Disabled), now))
            .await
            .unwrap()),
        HashSet::from([disabled.id.clone()])
    );
    assert_eq!(
        ids(s
            .list(query(None, Some(TokenState::Expired), later))
            .await
            .unwrap()),
        HashSet::from([expiring.id.clone()])
    );
    assert_eq!(
        ids(s
            .list(query(Some(TokenKind::Project), None, now))
            .await
            .unwrap()),
        HashSet::from([project.id.clone()])
    );
    // Enabled at `now`: three tokens, so a page of two has a cursor.
    let first = s
        .list(query(None, Some(TokenState::Enabled), now))
        .await
        .unwrap();
    assert_eq!(first.tokens.len(), 2);
    let next = first.next.clone().expect("more pages");
    let mut second = query(None, Some(TokenState::Enabled), now);
    second.cursor = Some(next);
    let second = s.list(second).await.unwrap();
    let mut got = ids(first);
    got.extend(ids(second));
    assert_eq!(got, HashSet::from([enabled.id, expiring.id, project.id]));
}

async fn listing_without_workspace_lists_every_workspace(s: &impl TokenStore) {
    let a = record("ws_all_a", Timestamp::now());
    let b = record("ws_all_b", Timestamp::now());
    s.create(&hash(), &a).await.unwrap();
    s.create(&hash(), &b).await.unwrap();
    let mut found = HashSet::new();
    let mut cursor = None;
    loop {
        let page = s.list(all(None, cursor, 500)).await.unwrap();
        found.extend(page.tokens.into_iter().map(|t| t.id));
        match page.next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert!(found.contains(&a.id) && found.contains(&b.id));
}

/// The next change of a feed, within a bound.
async fn next_change(changes: &mut Changes) -> Change {
    tokio::time::timeout(Duration::from_secs(10), changes.next())
        .await
        .expect("a change within 10 s")
        .expect("the feed goes on")
}

async fn the_change_feed_carries_every_change_but_a_touch(s: &(impl TokenStore + ChangeFeed)) {
    let mut changes = s.changes().unwrap();
    // Changes made before the feed follows may be missed: wait for it.
    assert_eq!(next_change(&mut changes).await, Change::Started);

    let (h, rec) = (hash(), record("ws_feed", Timestamp::now()));
    s.create(&h, &rec).await.unwrap();
    assert_eq!(next_change(&mut changes).await, Change::Token(h));

    let current = s.find(&rec.id).await.unwrap().unwrap();
    let renamed = TokenRecord {
        name: "Renamed".into(),
        ..rec.clone()
    };
    assert!(s.replace(&current, &renamed).await.unwrap());
    assert_eq!(next_change(&mut changes).await, Change::Token(h));

    // A touch tells nobody; a change published by hand does.
    let current = s.find(&rec.id).await.unwrap().unwrap();
    let used = TokenRecord {
        last_used_at: Some(Timestamp::now()),
        ..renamed
    };
    assert!(s.touch(&current, &used).await.unwrap());
    let other = hash();
    s.publish(&other).await.unwrap();
    assert_eq!(next_change(&mut changes).await, Change::Token(other));
}

macro_rules! suite {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;

            #[tokio::test]
            async fn created_token_is_found_by_hash_and_id() {
                let (s, _g) = $make;
                super::created_token_is_found_by_hash_and_id(&s).await;
            }

            #[tokio::test]
            async fn duplicate_id_or_hash_is_a_conflict() {
                let (s, _g) = $make;
                super::duplicate_id_or_hash_is_a_conflict(&s).await;
            }

            #[tokio::test]
            async fn replace_is_compare_and_set() {
                let (s, _g) = $make;
                super::replace_is_compare_and_set(&s).await;
            }

            #[tokio::test]
            async fn confirm_is_compare_and_set() {
                let (s, _g) = $make;
                super::confirm_is_compare_and_set(&s).await;
            }

            #[tokio::test]
            async fn remove_is_compare_and_delete() {
                let (s, _g) = $make;
                super::remove_is_compare_and_delete(&s).await;
            }

            #[tokio::test]
            async fn end_overlaps_walks_the_whole_chain() {
                let (s, _g) = $make;
                super::end_overlaps_walks_the_whole_chain(&s).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_updates_are_not_lost() {
                let (s, _g) = $make;
                super::concurrent_updates_are_not_lost(&s).await;
            }

            #[tokio::test]
            async fn revoked_token_keeps_a_tombstone() {
                let (s, _g) = $make;
                super::revoked_token_keeps_a_tombstone(&s).await;
            }

            #[tokio::test]
            async fn listing_pages_newest_first_across_ties() {
                let (s, _g) = $make;
                super::listing_pages_newest_first_across_ties(&s).await;
            }

            #[tokio::test]
            async fn listing_filters_by_state_and_type() {
                let (s, _g) = $make;
                super::listing_filters_by_state_and_type(&s).await;
            }

            #[tokio::test]
            async fn listing_without_workspace_lists_every_workspace() {
                let (s, _g) = $make;
                super::listing_without_workspace_lists_every_workspace(&s).await;
            }

            #[tokio::test]
            async fn the_change_feed_carries_every_change_but_a_touch() {
                let (s, _g) = $make;
                super::the_change_feed_carries_every_change_but_a_touch(&s).await;
            }
        }
    };
}

suite!(embedded_store, embedded().await);
suite!(redis_store, (redis_store("suite"), ()));

// === embedded only ===

#[tokio::test]
async fn embedded_store_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let h = hash();
    let r = record("ws_a", Timestamp::now());
    {
        let s = EmbeddedStore::open(dir.path(), TIMEOUT).await.unwrap();
        s.create(&h, &r).await.unwrap();
    }
    let s = EmbeddedStore::open(dir.path(), TIMEOUT).await.unwrap();
    assert_eq!(s.get(&h).await.unwrap(), Some(r.clone()));
    assert_eq!(s.find(&r.id).await.unwrap().unwrap().hash, h);
    assert_eq!(
        s.list(all(Some("ws_a"), None, 10)).await.unwrap().tokens,
        vec![r]
    );
}

/// The store file holds token names, the audit log and clients' addresses:
/// only its owner reads it, whatever the umask, and a file an older gate
/// left readable is tightened.
#[tokio::test]
async fn embedded_store_file_is_for_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens.redb");
    drop(EmbeddedStore::open(dir.path(), TIMEOUT).await.unwrap());
    assert_eq!(mode(&file), 0o600);
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let s = EmbeddedStore::open(dir.path(), TIMEOUT).await.unwrap();
    assert_eq!(mode(&file), 0o600);
    // Still the same store.
    let (h, r) = (hash(), record("ws_mode", Timestamp::now()));
    s.create(&h, &r).await.unwrap();
    assert_eq!(s.get(&h).await.unwrap(), Some(r));
}

#[tokio::test(flavor = "current_thread")]
async fn embedded_store_does_not_block_a_single_threaded_runtime() {
    // On a one-thread runtime a blocking store would stall this ticker.
    let (s, _dir) = embedded().await;
    let ticks = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t = ticks.clone();
    let ticker = tokio::spawn(async move {
        loop {
            t.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tokio::task::yield_now().await;
        }
    });
    for _ in 0..20 {
        s.create(&hash(), &record("ws_a", Timestamp::now()))
            .await
            .unwrap();
    }
    ticker.abort();
    assert!(ticks.load(std::sync::atomic::Ordering::Relaxed) > 20);
}

// === Redis only ===

async fn raw_conn() -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// One record no gate of this version can read (written by a newer gate
/// during an upgrade, or damaged) is left out of a list, not made the
/// whole list's failure: the others are listed, and its index entry stays.
#[tokio::test]
async fn an_unreadable_record_is_left_out_of_a_list_not_its_failure() {
    let prefix = unique_prefix("unreadable");
    let s = redis_store_at(&redis_url(), &prefix);
    let t0 = Timestamp::now();
    let (good, bad) = (hash(), hash());
    let older = record("ws_u", t0 - SignedDuration::from_secs(60));
    let newer = record("ws_u", t0);
    s.create(&good, &older).await.unwrap();
    s.create(&bad, &newer).await.unwrap();
    let mut c = raw_conn().await;
    let _: () = redis::cmd("SET")
        .arg(format!("{prefix}token:{}", bad.to_hex()))
        .arg(r#"{"v":9,"id":"unreadable"}"#)
        .query_async(&mut c)
        .await
        .unwrap();
    for ws in [Some("ws_u"), None] {
        let page = s.list(all(ws, None, 10)).await.unwrap();
        let ids: Vec<_> = page.tokens.iter().map(|r| r.id.clone()).collect();
        assert_eq!(ids, std::slice::from_ref(&older.id), "{ws:?}");
    }
    let indexed: Option<f64> = redis::cmd("ZSCORE")
        .arg(format!("{prefix}ws:ws_u"))
        .arg(newer.id.as_str())
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(
        indexed.is_some(),
        "the unreadable record's index entry stays"
    );
}

#[tokio::test]
async fn redis_store_uses_the_documented_key_schema() {
    let prefix = unique_prefix("schema");
    let s = redis_store_at(&redis_url(), &prefix);
    let h = hash();
    let r = record("ws_schema", Timestamp::now());
    s.create(&h, &r).await.unwrap();
    let mut c = raw_conn().await;
    let json: String = redis::cmd("GET")
        .arg(format!("{prefix}token:{}", h.to_hex()))
        .query_async(&mut c)
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["v"], 1);
    assert_eq!(v["id"], r.id.as_str());
    let hex: String = redis::cmd("GET")
        .arg(format!("{prefix}id:{}", r.id))
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(hex, h.to_hex());
    let score: f64 = redis::cmd("ZSCORE")
        .arg(format!("{prefix}ws:ws_schema"))
        .arg(r.id.as_str())
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(score as i64, r.created_at.as_millisecond());
    // A live, never-expiring token has no TTL.
    let ttl: i64 = redis::cmd("PTTL")
        .arg(format!("{prefix}token:{}", h.to_hex()))
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(ttl, -1);
}

#[tokio::test]
async fn redis_gives_tombstones_and_expiring_records_the_retention_ttl() {
    let prefix = unique_prefix("retention");
    let s = redis_store_at(&redis_url(), &prefix);
    let mut c = raw_conn().await;
    let pttl = |key: String| {
        let mut c = c.clone();
        async move {
            redis::cmd("PTTL")
                .arg(key)
                .query_async::<i64>(&mut c)
                .await
                .unwrap()
        }
    };
    let retention_ms = RETENTION.as_millis() as i64;

    // Expiring in one hour: kept until one hour plus retention.
    let h = hash();
    let r = TokenRecord {
        expires_at: Some(Timestamp::now() + SignedDuration::from_hours(1)),
        ..record("ws_ret", Timestamp::now())
    };
    s.create(&h, &r).await.unwrap();
    let ttl = pttl(format!("{prefix}token:{}", h.to_hex())).await;
    let expected = retention_ms + 3_600_000;
    assert!((expected - 60_000..=expected).contains(&ttl), "ttl {ttl}");

    // Revoked: kept for the retention from now.
    let h = hash();
    let r = record("ws_ret", Timestamp::now());
    s.create(&h, &r).await.unwrap();
    update(&s, &r.id, |cur| {
        Ok::<_, ()>(Some(TokenRecord {
            revoked_at: Some(Timestamp::now()),
            ..cur.clone()
        }))
    })
    .await
    .unwrap();
    for key in [
        format!("{prefix}token:{}", h.to_hex()),
        format!("{prefix}id:{}", r.id),
    ] {
        let ttl = pttl(key.clone()).await;
        assert!(
            (retention_ms - 60_000..=retention_ms).contains(&ttl),
            "{key}: ttl {ttl}"
        );
    }

    // Given back (a rotate undone): the revocation lifted, the record kept
    // for good again — and its id key too, or the token could no longer be
    // found by id (shown, revoked, rotated) once the old deadline passed.
    let h = hash();
    let r = record("ws_ret", Timestamp::now());
    s.create(&h, &r).await.unwrap();
    for revoked_at in [Some(Timestamp::now() + SignedDuration::from_hours(1)), None] {
        update(&s, &r.id, |cur| {
            Ok::<_, ()>(Some(TokenRecord {
                revoked_at,
                ..cur.clone()
            }))
        })
        .await
        .unwrap();
    }
    for key in [
        format!("{prefix}token:{}", h.to_hex()),
        format!("{prefix}id:{}", r.id),
    ] {
        assert_eq!(pttl(key.clone()).await, -1, "{key} still expires");
    }
    let _ = c.clone();
    let _: () = redis::cmd("PING").query_async(&mut c).await.unwrap();
}

#[tokio::test]
async fn redis_publishes_an_invalidation_on_every_change() {
    let prefix = unique_prefix("events");
    let s = redis_store_at(&redis_url(), &prefix);
    let client = redis::Client::open(redis_url()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe(s.events_channel()).await.unwrap();
    assert_eq!(s.events_channel(), format!("{prefix}events"));
    let mut messages = pubsub.on_message();

    let h = hash();
    let r = record("ws_ev", Timestamp::now());
    s.create(&h, &r).await.unwrap();
    update(&s, &r.id, |cur| {
        Ok::<_, ()>(Some(TokenRecord {
            disabled_at: Some(Timestamp::now()),
            ..cur.clone()
        }))
    })
    .await
    .unwrap();
    use futures_util::StreamExt;
    for _ in 0..2 {
        let msg = tokio::time::timeout(Duration::from_secs(5), messages.next())
            .await
            .expect("event within 5 s")
            .unwrap();
        let payload: String = msg.get_payload().unwrap();
        let v: serde_json::Value = serde_json::from_str(&payload).unwrap();
        assert_eq!(
            v,
            serde_json::json!({ "op": "invalidate", "hash": h.to_hex() })
        );
    }
}

#[tokio::test]
async fn redis_calls_are_bounded_by_the_timeout_when_redis_is_away() {
    // Nothing listens on this port.
    let port = common::free_port();
    let s = redis_store_with(
        &format!("redis://127.0.0.1:{port}"),
        "p:",
        REQUEST_PATH_TIMEOUT,
    );
    let start = Instant::now();
    assert!(s.get(&hash()).await.is_err());
    assert!(
        start.elapsed() < REQUEST_PATH_TIMEOUT * 4,
        "took {:?}",
        start.elapsed()
    );

    // A server that accepts but never answers (a paused Redis) is bounded too.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = silent.accept().await {
            held.push(sock);
        }
    });
    let s = redis_store_with(&format!("redis://{addr}"), "p:", REQUEST_PATH_TIMEOUT);
    let start = Instant::now();
    assert!(matches!(s.get(&hash()).await, Err(StoreError::Timeout(_))));
    assert!(
        start.elapsed() < REQUEST_PATH_TIMEOUT * 4,
        "took {:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn redis_store_reconnects_by_itself_after_a_restart() {
    let mut server = RedisServer::start();
    let port = server.port;
    let s = redis_store_at(&server.url(), "reconnect:");
    let h = hash();
    let r = record("ws_rc", Timestamp::now());
    s.create(&h, &r).await.unwrap();

    server.stop();
    assert!(s.get(&h).await.is_err(), "Redis is down");
    let _server = RedisServer::start_on(port);
    // The data is gone with the process (no persistence), but the same store
    // object works again without being rebuilt.
    eventually(
        "the store to reconnect",
        Duration::from_secs(10),
        || async { s.ping().await.ok() },
    )
    .await;
    s.create(&h, &r).await.unwrap();
    assert_eq!(s.get(&h).await.unwrap(), Some(r));
}
