//! Usage per token, one contract on both stores: counts summed per hour and
//! per day, clients merged and kept to the ten latest, the later refusal
//! kept, and what is past retention gone (a Redis TTL; pruned from the
//! embedded file). Each check runs against the embedded store and a real
//! Redis (a unique key prefix per test).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::sync::Arc;
use std::time::Duration;

use hawzu_gate::cache::CachedRecord;
use hawzu_gate::store::redis::RedisOptions;
use hawzu_gate::store::redis::USAGE_DELTAS_PER_PIPELINE;
use hawzu_gate::store::usage::{
    ClientSeen, Counts, LastRefusal, MAX_CLIENTS, UsageDelta, UsageStore, day_of_hour, hour_of,
};
use hawzu_gate::store::{EmbeddedStore, RedisStore, Store};
use hawzu_gate::token::TokenId;
use hawzu_gate::usage::counts::{Note, Tallies};
use jiff::{SignedDuration, Timestamp};

use common::{redis_url, unique_prefix, workspace_record};

const TIMEOUT: Duration = Duration::from_secs(5);
const RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);

async fn stores(test: &str) -> (Vec<(&'static str, Store)>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let embedded = EmbeddedStore::open(dir.path(), TIMEOUT).await.unwrap();
    let redis = RedisStore::new(RedisOptions {
        url: redis_url(),
        key_prefix: unique_prefix(test),
        timeout: TIMEOUT,
        retention: Duration::from_secs(3600),
    })
    .unwrap();
    (
        vec![
            ("embedded", Store::Embedded(embedded)),
            ("redis", Store::Redis(redis)),
        ],
        dir,
    )
}

fn delta(id: &TokenId, hour: u32, allowed: u64, refused: u64) -> UsageDelta {
    UsageDelta {
        token_id: id.clone(),
        hour,
        counts: Counts { allowed, refused },
        clients: Vec::new(),
        last_refusal: None,
    }
}

fn client(address: &str, agent: &str, first: Timestamp, last: Timestamp) -> ClientSeen {
    ClientSeen {
        address: address.into(),
        user_agent: agent.into(),
        first_seen: first,
        last_seen: last,
    }
}

fn secs(t: Timestamp, s: i64) -> Timestamp {
    // Whole milliseconds: what both stores keep.
    let t = t + SignedDuration::from_secs(s);
    Timestamp::from_millisecond(t.as_millisecond()).unwrap()
}

#[tokio::test]
async fn counts_of_several_flushes_sum_per_hour_and_per_day() {
    let (stores, _dir) = stores("usage_sum").await;
    let now = Timestamp::now();
    let h = hour_of(now);
    for (name, store) in stores {
        let (a, b) = (TokenId::generate().unwrap(), TokenId::generate().unwrap());
        // Two gates' flushes of one hour, one of the hour before, and another token.
        store
            .add_usage(&[delta(&a, h, 3, 1), delta(&b, h, 7, 0)], RETENTION)
            .await
            .unwrap();
        store
            .add_usage(&[delta(&a, h, 2, 0), delta(&a, h - 1, 5, 2)], RETENTION)
            .await
            .unwrap();
        let report = store.usage(&a, h - 5, h).await.unwrap();
        assert_eq!(
            report.hours,
            [
                (
                    h - 1,
                    Counts {
                        allowed: 5,
                        refused: 2
                    }
                ),
                (
                    h,
                    Counts {
                        allowed: 5,
                        refused: 1
                    }
                )
            ],
            "{name}: hours with requests, oldest first"
        );
        let only_now = store.usage(&a, h, h).await.unwrap();
        assert_eq!(
            only_now.hours.len(),
            1,
            "{name}: the range bounds the hours"
        );

        let today = day_of_hour(h);
        let totals = store
            .daily_totals(
                &[a.clone(), b.clone(), TokenId::generate().unwrap()],
                today - 6,
                today,
            )
            .await
            .unwrap();
        assert_eq!(totals.len(), 3, "{name}");
        assert_eq!(
            totals[0].total(),
            13,
            "{name}: both hours are within the week"
        );
        assert_eq!(
            totals[1],
            Counts {
                allowed: 7,
                refused: 0
            },
            "{name}"
        );
        assert_eq!(totals[2], Counts::default(), "{name}: never used");
    }
}

#[tokio::test]
async fn clients_merge_per_address_and_agent_and_only_the_ten_latest_stay() {
    let (stores, _dir) = stores("usage_clients").await;
    let t0 = Timestamp::now();
    let h = hour_of(t0);
    for (name, store) in stores {
        let id = TokenId::generate().unwrap();
        let mut first = delta(&id, h, 0, 0);
        first.clients = vec![client("10.0.0.1", "curl/8.5", secs(t0, 0), secs(t0, 10))];
        store.add_usage(&[first], RETENTION).await.unwrap();
        // Another gate saw the same client earlier and later.
        let mut again = delta(&id, h, 0, 0);
        again.clients = vec![client("10.0.0.1", "curl/8.5", secs(t0, -50), secs(t0, 20))];
        store.add_usage(&[again], RETENTION).await.unwrap();
        let report = store.usage(&id, h, h).await.unwrap();
        assert_eq!(
            report.clients,
            [client("10.0.0.1", "curl/8.5", secs(t0, -50), secs(t0, 20))],
            "{name}: one entry, first seen earliest, last seen latest"
        );
        assert!(report.hours.is_empty(), "{name}: no counts were added");

        // Twelve more clients, one per flush: the ten seen last stay.
        for i in 0..12 {
            let mut d = delta(&id, h, 1, 0);
            d.clients = vec![client(
                &format!("10.0.1.{i}"),
                "python-requests/2.31",
                secs(t0, 100 + i),
                secs(t0, 100 + i),
            )];
            store.add_usage(&[d], RETENTION).await.unwrap();
        }
        let report = store.usage(&id, h, h).await.unwrap();
        assert_eq!(report.clients.len(), MAX_CLIENTS, "{name}");
        assert_eq!(
            report.clients[0].address, "10.0.1.11",
            "{name}: newest first"
        );
        assert!(
            report.clients.iter().all(|c| c.address != "10.0.0.1"),
            "{name}: the client seen longest ago went"
        );
    }
}

/// A client last seen longer ago than `usage.retention` is forgotten once
/// the token is used again (an address and user agent are personal data,
/// kept only as long as the operator said). Before, Redis kept it as long
/// as the token stayed in use (the list's TTL renewed at every use).
#[tokio::test]
async fn a_client_seen_longer_ago_than_the_retention_is_forgotten() {
    let (stores, _dir) = stores("usage_clients_retention").await;
    let t0 = Timestamp::now();
    let h = hour_of(t0);
    let retention = Duration::from_secs(3600);
    for (name, store) in stores {
        let id = TokenId::generate().unwrap();
        let mut old = delta(&id, h, 0, 0);
        old.clients = vec![client(
            "10.0.0.1",
            "curl/8.5",
            secs(t0, -3 * 3600),
            secs(t0, -3 * 3600),
        )];
        store.add_usage(&[old], RETENTION).await.unwrap();
        let mut now = delta(&id, h, 1, 0);
        now.clients = vec![client("10.0.0.2", "curl/8.5", secs(t0, 0), secs(t0, 0))];
        store.add_usage(&[now], retention).await.unwrap();
        let report = store.usage(&id, h, h).await.unwrap();
        let seen: Vec<&str> = report.clients.iter().map(|c| c.address.as_str()).collect();
        assert_eq!(seen, ["10.0.0.2"], "{name}");
    }
}

#[tokio::test]
async fn the_later_refusal_is_kept_whatever_order_the_flushes_come_in() {
    let (stores, _dir) = stores("usage_refusal").await;
    let t0 = Timestamp::now();
    let h = hour_of(t0);
    for (name, store) in stores {
        let id = TokenId::generate().unwrap();
        let refusal = |code: &str, s| LastRefusal {
            code: code.into(),
            at: secs(t0, s),
        };
        let mut later = delta(&id, h, 0, 1);
        later.last_refusal = Some(refusal("token_disabled", 30));
        let mut earlier = delta(&id, h, 0, 1);
        earlier.last_refusal = Some(refusal("insufficient_role", 10));
        store.add_usage(&[later], RETENTION).await.unwrap();
        store.add_usage(&[earlier], RETENTION).await.unwrap();
        let report = store.usage(&id, h, h).await.unwrap();
        assert_eq!(
            report.last_refusal,
            Some(refusal("token_disabled", 30)),
            "{name}"
        );
        assert_eq!(report.hours[0].1.refused, 2, "{name}");
    }
}

#[tokio::test]
async fn redis_keys_carry_the_retention_as_a_ttl_and_each_command_touches_one_key() {
    let prefix = unique_prefix("usage_ttl");
    let store = RedisStore::new(RedisOptions {
        url: redis_url(),
        key_prefix: prefix.clone(),
        timeout: TIMEOUT,
        retention: Duration::from_secs(3600),
    })
    .unwrap();
    let id = TokenId::generate().unwrap();
    let now = Timestamp::now();
    let h = hour_of(now);
    let mut d = delta(&id, h, 4, 1);
    d.clients = vec![client("10.0.0.9", "", secs(now, 0), secs(now, 0))];
    d.last_refusal = Some(LastRefusal {
        code: "token_expired".into(),
        at: secs(now, 0),
    });
    let retention = Duration::from_secs(2 * 24 * 3600);
    store.add_usage(&[d], retention).await.unwrap();

    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}usage*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let hour_key = format!("{prefix}usage:{id}:{}", now.strftime("%Y%m%d%H"));
    let day_key = format!("{prefix}usage-day:{id}:{}", now.strftime("%Y%m%d"));
    let mut expected = vec![
        hour_key.clone(),
        day_key.clone(),
        format!("{prefix}usage-clients:{id}"),
        format!("{prefix}usage-refusal:{id}"),
    ];
    expected.sort();
    let mut keys = keys;
    keys.sort();
    assert_eq!(keys, expected, "the documented key schema");
    let allowed: u64 = redis::cmd("HGET")
        .arg(&hour_key)
        .arg("allowed")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(allowed, 4);
    for key in &keys {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        let max = i64::try_from((retention + Duration::from_secs(24 * 3600)).as_millis()).unwrap();
        assert!(
            ttl > 0 && ttl <= max,
            "{key}: a TTL of retention after its hour or day ({ttl} ms)"
        );
    }
}

/// The writer's flush of more tokens than one Redis pipeline carries goes
/// in several (token lookups share the connection and wait behind each),
/// and every token is written once: none left out, none carried and
/// written again by the next flush.
#[tokio::test]
async fn a_flush_larger_than_one_pipeline_writes_every_token_once() {
    let (stores, _dir) = stores("usage_chunks").await;
    let h = hour_of(Timestamp::now());
    for (name, store) in stores {
        let records: Vec<Arc<CachedRecord>> = (0..2 * USAGE_DELTAS_PER_PIPELINE + 1)
            .map(|_| Arc::new(CachedRecord::new(&workspace_record("CI"))))
            .collect();
        let mut tallies = Tallies::default();
        for r in &records {
            assert!(r.tally().allowed(), "the first count since a flush");
            tallies.note(Note::Counted(r.clone()));
        }
        tallies.flush(&store, h, RETENTION).await;
        tallies.flush(&store, h, RETENTION).await;
        let ids: Vec<TokenId> = records
            .iter()
            .map(|r| TokenId::parse(r.id()).unwrap())
            .collect();
        let day = day_of_hour(h);
        let totals = store.daily_totals(&ids, day, day).await.unwrap();
        assert_eq!(totals.len(), ids.len(), "{name}");
        for (id, c) in ids.iter().zip(&totals) {
            assert_eq!(c.allowed, 1, "{name}: token {id} counted once");
        }
    }
}

#[tokio::test]
async fn the_embedded_store_forgets_hours_past_retention_and_keeps_usage_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let id = TokenId::generate().unwrap();
    let h = hour_of(Timestamp::now());
    {
        let store = EmbeddedStore::open(dir.path(), TIMEOUT).await.unwrap();
        // Written with a long retention: an old hour and the current one.
        store
            .add_usage(&[delta(&id, h - 48, 9, 0), delta(&id, h, 1, 0)], RETENTION)
            .await
            .unwrap();
    }
    let store = EmbeddedStore::open(dir.path(), TIMEOUT).await.unwrap();
    assert_eq!(
        store.usage(&id, h - 100, h).await.unwrap().hours.len(),
        2,
        "kept across a reopen"
    );
    // A flush under a one-day retention prunes the old hour.
    store
        .add_usage(&[delta(&id, h, 1, 0)], Duration::from_secs(24 * 3600))
        .await
        .unwrap();
    let report = store.usage(&id, h - 100, h).await.unwrap();
    assert_eq!(
        report.hours,
        [(
            h,
            Counts {
                allowed: 2,
                refused: 0
            }
        )]
    );
}

/// A window longer than one pipeline (90 days: 2,161 hours) and a page of
/// tokens whose week of days is more than one pipeline (60 × 7 days) read
/// every hour and token, in order, on both stores (Redis reads them in
/// bounded pipelines one after another, not one pipeline that holds the
/// shared connection).
#[tokio::test]
async fn long_windows_and_many_tokens_are_read_whole() {
    let (stores, _dir) = stores("usage_long").await;
    let h = hour_of(Timestamp::now());
    let first = h - 90 * 24;
    for (name, store) in stores {
        let id = TokenId::generate().unwrap();
        let hours = [first, first + 255, first + 256, first + 1000, h];
        let batch: Vec<UsageDelta> = hours
            .iter()
            .enumerate()
            .map(|(i, hour)| delta(&id, *hour, i as u64 + 1, 0))
            .collect();
        store.add_usage(&batch, RETENTION).await.unwrap();
        let report = store.usage(&id, first, h).await.unwrap();
        let got: Vec<(u32, u64)> = report.hours.iter().map(|(h, c)| (*h, c.allowed)).collect();
        let want: Vec<(u32, u64)> = hours
            .iter()
            .enumerate()
            .map(|(i, h)| (*h, i as u64 + 1))
            .collect();
        assert_eq!(got, want, "{name}");

        let today = day_of_hour(h);
        let ids: Vec<TokenId> = (0..60).map(|_| TokenId::generate().unwrap()).collect();
        let batch: Vec<UsageDelta> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| delta(id, h, i as u64 + 1, 0))
            .collect();
        store.add_usage(&batch, RETENTION).await.unwrap();
        let totals = store.daily_totals(&ids, today - 6, today).await.unwrap();
        let got: Vec<u64> = totals.iter().map(|c| c.allowed).collect();
        let want: Vec<u64> = (1..=60).collect();
        assert_eq!(got, want, "{name}");
    }
}
