//! The token cache: coalesced loads, fleet-wide invalidation over Redis
//! pub/sub between two gate processes (timed), and the whole cache
//! distrusted (read again) when the subscription comes back.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hawzu_gate::cache::{CacheOptions, TokenCache};
use hawzu_gate::store::{EmbeddedStore, ListQuery, Page, StoreError, Stored, TokenStore};
use hawzu_gate::token::record::RECORD_VERSION;
use hawzu_gate::token::{Scope, TokenHash, TokenId, TokenRecord, TokenSecret};
use http::StatusCode;
use jiff::Timestamp;

use common::{
    GateProcess, Http, RedisServer, disable_in_redis_silently, eventually, nginx_auth, redis_url,
    unique_prefix, workspace_token,
};

/// A real store that counts its reads by hash.
#[derive(Clone)]
struct Counting<S> {
    inner: S,
    gets: Arc<AtomicU64>,
}

impl<S: TokenStore + Clone> TokenStore for Counting<S> {
    async fn get(&self, hash: &TokenHash) -> Result<Option<TokenRecord>, StoreError> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        // Slow enough that every caller arrives while the first read runs.
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.inner.get(hash).await
    }
    async fn find(&self, id: &TokenId) -> Result<Option<Stored>, StoreError> {
        self.inner.find(id).await
    }
    async fn get_stored(&self, hash: &TokenHash) -> Result<Option<Stored>, StoreError> {
        self.inner.get_stored(hash).await
    }
    async fn create(&self, hash: &TokenHash, record: &TokenRecord) -> Result<(), StoreError> {
        self.inner.create(hash, record).await
    }
    async fn replace(&self, current: &Stored, new: &TokenRecord) -> Result<bool, StoreError> {
        self.inner.replace(current, new).await
    }
    async fn remove(&self, current: &Stored) -> Result<bool, StoreError> {
        self.inner.remove(current).await
    }
    async fn list(&self, query: ListQuery) -> Result<Page, StoreError> {
        self.inner.list(query).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
}

fn record() -> TokenRecord {
    TokenRecord {
        v: RECORD_VERSION,
        id: TokenId::generate().unwrap(),
        name: "CI".into(),
        workspace_id: "ws_1".into(),
        scope: Scope::Workspace {
            role: "workspace_viewer".into(),
        },
        created_by: "tests".into(),
        created_at: Timestamp::now(),
        expires_at: None,
        disabled_at: None,
        disabled_by: None,
        revoked_at: None,
        revoked_by: None,
        last_used_at: None,
        rotated_from: None,
        description: None,
        rotated_to: None,
        allow_from: Vec::new(),
        not_before: None,
        limits_by: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_first_requests_make_one_store_read() {
    let dir = tempfile::tempdir().unwrap();
    let inner = EmbeddedStore::open(dir.path(), Duration::from_secs(1))
        .await
        .unwrap();
    let gets = Arc::new(AtomicU64::new(0));
    let store = Counting {
        inner,
        gets: gets.clone(),
    };
    let secret = TokenSecret::generate().unwrap();
    let rec = record();
    store.create(&secret.hash(), &rec).await.unwrap();
    let cache = Arc::new(TokenCache::new(
        store,
        CacheOptions {
            ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(5),
            max_entries: 100,
            stale_if_error: Duration::ZERO,
        },
    ));
    let hash = secret.hash();
    let lookups: Vec<_> = (0..100)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.lookup(&hash).await })
        })
        .collect();
    for l in lookups {
        assert_eq!(l.await.unwrap().unwrap().unwrap().id(), rec.id.as_str());
    }
    assert_eq!(gets.load(Ordering::SeqCst), 1, "exactly one store read");

    // "No such token" is cached too, and also read once.
    let unknown = TokenSecret::generate().unwrap().hash();
    let lookups: Vec<_> = (0..100)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.lookup(&unknown).await })
        })
        .collect();
    for l in lookups {
        assert!(l.await.unwrap().unwrap().is_none());
    }
    assert_eq!(gets.load(Ordering::SeqCst), 2);
    // Hits do no I/O.
    for _ in 0..1000 {
        cache.lookup(&hash).await.unwrap();
    }
    assert_eq!(gets.load(Ordering::SeqCst), 2);
}

fn redis_gate(dir: &std::path::Path, url: &str, prefix: &str) -> GateProcess {
    GateProcess::start(
        dir,
        &format!(
            "[cache]\nttl = \"60s\"\n[store]\nbackend = \"redis\"\ntimeout = \"2s\"\n[store.redis]\nurl = \"{url}\"\nkey_prefix = \"{prefix}\"\n"
        ),
    )
}

fn admin_of(g: &GateProcess) -> Http {
    let key = hawzu_gate::admin::read_key_file(&g.dir.join("data/admin.key")).unwrap();
    Http::new(format!("http://{}", g.admin)).bearer(&key)
}

/// `/auth/nginx` of a gate process for a `ws_1` route.
async fn auth_status(g: &GateProcess, token: &str) -> (StatusCode, Option<String>) {
    let a = common::nginx_check_at(g.auth, token, "GET", common::WS1_PROJECTS).await;
    (a.status, a.header("x-hawzu-error").map(str::to_owned))
}

/// The invalidation is pushed: gate b refuses the token about a
/// millisecond after the disable answered (printed; `docs/design.md` quotes
/// it), and the test bounds it at 2 s — far above what two busy processes
/// need to pass one message, far below the 60 s `cache.ttl` after which b
/// would refuse without any message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_disabled_on_one_gate_is_refused_by_another_long_before_its_cache_ttl() {
    let prefix = unique_prefix("fleet");
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = redis_gate(da.path(), &redis_url(), &prefix);
    let b = redis_gate(db.path(), &redis_url(), &prefix);
    // The listeners are up; wait until b's subscription is too (its log says so).
    eventually("gate b to subscribe", Duration::from_secs(10), || async {
        b.log_text()
            .contains("invalidation listener subscribed")
            .then_some(())
    })
    .await;

    let created = admin_of(&a)
        .post(
            "/admin/v1/tokens",
            workspace_token("Fleet", "ws_1", "workspace_viewer", "1m"),
        )
        .await
        .json();
    let id = created["token"]["id"].as_str().unwrap().to_owned();
    let secret = created["secret"].as_str().unwrap().to_owned();
    // Gate b caches the token as valid.
    assert_eq!(auth_status(&b, &secret).await.0, StatusCode::OK);
    assert_eq!(auth_status(&b, &secret).await.0, StatusCode::OK);

    let admin = admin_of(&a);
    let disabled = admin
        .post_empty(&format!("/admin/v1/tokens/{id}/disable"))
        .await;
    assert_eq!(disabled.status, StatusCode::OK);
    let start = Instant::now();
    let refused = loop {
        let (status, code) = auth_status(&b, &secret).await;
        if status != StatusCode::OK {
            break (status, code, start.elapsed());
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "gate b never refused"
        );
    };
    println!("invalidation reached the second gate in {:?}", refused.2);
    assert_eq!(refused.0, StatusCode::UNAUTHORIZED);
    assert_eq!(refused.1.as_deref(), Some("token_disabled"));
    assert!(
        refused.2 < Duration::from_secs(2),
        "took {:?} (cache.ttl is 60 s)",
        refused.2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_is_read_again_when_the_subscription_comes_back() {
    let server = RedisServer::start();
    let prefix = "flush:";
    let dir = tempfile::tempdir().unwrap();
    let gate = redis_gate(dir.path(), &server.url(), prefix);
    eventually("the gate to subscribe", Duration::from_secs(10), || async {
        gate.log_text()
            .contains("invalidation listener subscribed")
            .then_some(())
    })
    .await;
    let drops = || {
        gate.log_text()
            .matches("resubscribed; cache distrusted")
            .count()
    };
    let mut attempt = 0;
    let secret = loop {
        attempt += 1;
        let dropped_before = drops();
        let created = admin_of(&gate)
            .post(
                "/admin/v1/tokens",
                workspace_token("Flush", "ws_1", "workspace_viewer", "1m"),
            )
            .await
            .json();
        let secret = created["secret"].as_str().unwrap().to_owned();
        assert_eq!(auth_status(&gate, &secret).await.0, StatusCode::OK);

        // A writer changes the record without publishing (a lost message).
        disable_in_redis_silently(&server.url(), prefix, &secret).await;
        // Still cached as enabled: nothing told the gate…
        if auth_status(&gate, &secret).await.0 == StatusCode::OK {
            break secret;
        }
        // …unless the subscription itself dropped and came back meanwhile
        // (a probe late on a busy machine): the gate then rightly trusted
        // nothing it held. Only that excuses a refusal here; try again.
        common::wait_until(
            "a resubscription to be logged",
            Duration::from_secs(5),
            || drops() > dropped_before,
        );
        assert!(attempt < 3, "the subscription kept dropping");
    };
    let dropped_before = drops();

    // The subscription drops and comes back: the gate trusts nothing cached.
    let mut conn = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: redis::Value = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut conn)
        .await
        .unwrap();
    let refused = eventually(
        "the cache to be read again",
        Duration::from_secs(10),
        || async {
            let (status, code) = auth_status(&gate, &secret).await;
            (status != StatusCode::OK).then_some(code)
        },
    )
    .await;
    assert_eq!(refused.as_deref(), Some("token_disabled"));
    // The distrust comes first, then its log line (a moment later).
    common::wait_until("the distrust to be logged", Duration::from_secs(5), || {
        drops() > dropped_before
    });
}

#[tokio::test]
async fn an_in_process_gate_sees_its_own_admin_changes_at_once() {
    let gate = common::InProcessGate::embedded().await;
    let created = gate
        .admin()
        .post(
            "/admin/v1/tokens",
            workspace_token("Local", "ws_1", "workspace_viewer", "1m"),
        )
        .await
        .json();
    let secret = created["secret"].as_str().unwrap();
    let id = created["token"]["id"].as_str().unwrap();
    assert_eq!(nginx_auth(&gate, secret).await.status, StatusCode::OK);
    gate.admin().delete(&format!("/admin/v1/tokens/{id}")).await;
    assert_eq!(
        nginx_auth(&gate, secret).await.header("x-hawzu-error"),
        Some("token_revoked")
    );
}

/// A Redis that may evict keys under memory pressure (any
/// `maxmemory-policy` but `noeviction`) is named at start: an evicted id
/// index hides a live token from the admin API. One that never evicts is
/// not.
#[tokio::test]
async fn a_redis_that_may_evict_tokens_is_warned_about_at_start() {
    let server = RedisServer::start();
    let mut conn = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The policy is read before the listeners are bound: a gate that
    // listens has read it.
    let quiet = redis_gate(dir.path(), &server.url(), &unique_prefix("evict-quiet"));
    let log = quiet.log_text();
    assert!(log.contains("token store reachable"), "{log}");
    assert!(!log.contains("maxmemory-policy"), "{log}");
    drop(quiet);

    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("volatile-lru")
        .query_async(&mut conn)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let gate = redis_gate(dir.path(), &server.url(), &unique_prefix("evict-warned"));
    let line = eventually("the warning", Duration::from_secs(10), || async {
        gate.log_text()
            .lines()
            .find(|l| l.contains("maxmemory-policy noeviction"))
            .map(str::to_owned)
    })
    .await;
    assert!(
        line.contains("WARN") && line.contains("volatile-lru"),
        "{line}"
    );
}

/// What a subscriber to the events channel and to every probe channel
/// (`<events>:probe:*`) of `url` heard until each of `gates` probe channels
/// had carried two probes (or 10 s passed): probes per probe channel, and
/// the probes heard on the events channel itself.
async fn probes_heard(url: &str, events: &str, gates: usize) -> (HashMap<String, u32>, u32) {
    use futures_util::StreamExt;
    let client = redis::Client::open(url).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe(events).await.unwrap();
    pubsub
        .psubscribe(format!("{events}:probe:*"))
        .await
        .unwrap();
    let mut messages = pubsub.on_message();
    let (mut own, mut on_events) = (HashMap::new(), 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while own.len() < gates || own.values().any(|n| *n < 2) {
        let Ok(Some(msg)) = tokio::time::timeout_at(deadline.into(), messages.next()).await else {
            break;
        };
        let payload: String = msg.get_payload().unwrap();
        if !payload.contains(r#""op":"probe""#) {
            continue;
        }
        let channel = msg.get_channel_name().to_owned();
        if channel == events {
            on_events += 1;
        } else {
            *own.entry(channel).or_insert(0) += 1;
        }
    }
    (own, on_events)
}

async fn ready(gate: &common::InProcessGate) {
    eventually("the gate to be ready", Duration::from_secs(10), || async {
        (gate.ops().get("/readyz").await.status == StatusCode::OK).then_some(())
    })
    .await;
}

/// Each gate's probe (the proof, once a second, that its subscription
/// still hears the channel) travels on a channel of its own, in the events
/// channel's slot: on the events channel, every gate received every gate's
/// probe — G² deliveries a second, a million at 1,000 gates
/// (docs/scale.md) — where each needs only its own back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_gate_probes_on_a_channel_of_its_own() {
    let server = RedisServer::start();
    let prefix = unique_prefix("own-probes");
    let url = server.url();
    let settings = [
        ("store.backend", "redis"),
        ("store.redis.url", url.as_str()),
        ("store.redis.key_prefix", prefix.as_str()),
    ];
    let (a, b) = (
        common::InProcessGate::start(&settings).await,
        common::InProcessGate::start(&settings).await,
    );
    ready(&a).await;
    ready(&b).await;
    let events = format!("{prefix}events");
    let (own, on_events) = probes_heard(&url, &events, 2).await;
    println!("probes per gate channel: {own:?}; on the events channel: {on_events}");
    assert_eq!(
        on_events, 0,
        "probes sent to every gate on the events channel"
    );
    assert_eq!(own.len(), 2, "one probe channel per gate: {own:?}");
    for channel in own.keys() {
        let numsub = common::redis_cli(server.port, &["PUBSUB", "NUMSUB", channel]);
        assert_eq!(
            numsub.lines().last().map(str::trim),
            Some("1"),
            "{channel} has one subscriber: {numsub}"
        );
    }
    // Invalidation still travels on the events channel.
    let (_, secret) =
        common::create_token(&a, workspace_token("Own", "ws_1", "workspace_viewer", "1w")).await;
    assert_eq!(nginx_auth(&b, &secret).await.status, StatusCode::OK);
    let created = a
        .admin()
        .get("/admin/v1/tokens?workspace=ws_1")
        .await
        .json();
    let id = created["tokens"][0]["id"].as_str().unwrap().to_owned();
    a.admin()
        .post_empty(&format!("/admin/v1/tokens/{id}/disable"))
        .await;
    eventually(
        "b to refuse the disabled token",
        Duration::from_secs(5),
        || async {
            (nginx_auth(&b, &secret).await.status == StatusCode::UNAUTHORIZED).then_some(())
        },
    )
    .await;
}

/// A Redis user allowed the events channel and nothing else still has a
/// working listener: its gate probes on the events channel, as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_allowed_only_the_events_channel_probes_on_it() {
    let server = RedisServer::start();
    let prefix = unique_prefix("events-only");
    let events = format!("{prefix}events");
    let allowed = format!("&{events}");
    let keys = format!("~{prefix}*");
    assert_eq!(
        common::redis_cli(
            server.port,
            &[
                "ACL",
                "SETUSER",
                "gate",
                "on",
                ">pw",
                &keys,
                "resetchannels",
                &allowed,
                "+@all"
            ]
        ),
        "OK"
    );
    let url = format!("redis://gate:pw@127.0.0.1:{}", server.port);
    let gate = common::InProcessGate::start(&[
        ("store.backend", "redis"),
        ("store.redis.url", url.as_str()),
        ("store.redis.key_prefix", prefix.as_str()),
    ])
    .await;
    ready(&gate).await;
    let mut heard = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    {
        use futures_util::StreamExt;
        let client = redis::Client::open(server.url()).unwrap();
        let mut pubsub = client.get_async_pubsub().await.unwrap();
        pubsub.subscribe(&events).await.unwrap();
        let mut messages = pubsub.on_message();
        while heard < 2 {
            let Ok(Some(msg)) = tokio::time::timeout_at(deadline.into(), messages.next()).await
            else {
                break;
            };
            let payload: String = msg.get_payload().unwrap();
            if payload.contains(r#""op":"probe""#) {
                heard += 1;
            }
        }
    }
    assert_eq!(heard, 2, "the gate's probes on the events channel");
}
