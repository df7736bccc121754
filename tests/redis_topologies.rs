//! The Redis store on a Sentinel set-up and on a Redis Cluster (3 masters +
//! 3 replicas), started on loopback free ports: the admin API and the
//! doors work (every command the store issues touches one key, or a
//! cluster would refuse it), invalidations reach another gate (sharded
//! pub/sub on the cluster), and a master fail-over under load gives no
//! wrong allow and service back within the fail-over time.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::time::{Duration, Instant};

use http::StatusCode;

use common::{
    InProcessGate, Load, LoadCounts, RedisCluster, RedisSentinel, TestStore, TokenMix,
    create_tokens, eventually, nginx_auth, redis_cli, time_until_allowed, unique_prefix,
};
use hawzu_gate::store::redis::Topology;

/// Fail-over → admin changes answered again: with Sentinel, once a replica
/// holds them (`store.redis.sentinel.replica_acks`); seen 16 s after a
/// planned fail-over with one replica, most of it the old master's resync.
const ADMIN_WRITES_BACK: Duration = Duration::from_secs(40);

/// Fresh tokens per fleet: more than the load sends (each sent once), with
/// room for a fail-over that takes longer on a loaded machine (1,647 were
/// needed once under `stress-ng --cpu 2`).
const FRESH: usize = 5000;

/// How long after a fail-over a disable through one gate may take to reach
/// the other. Normally milliseconds; an event lost in the fail-over is
/// caught by the listener's probe (about 2 s) or, at worst, by `cache.ttl`
/// (5 s in the cluster test): see docs/reliability.md.
const AFTER_FAILOVER: Duration = Duration::from_secs(8);

/// Fail-overs measure times: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Waits for `/readyz` 200; a timeout names what the last answer said
/// (which check failed).
async fn wait_ready(gate: &InProcessGate, deadline: Duration) {
    let last = std::sync::Mutex::new(String::new());
    let ready = tokio::time::timeout(deadline, async {
        loop {
            let r = gate.ops().get("/readyz").await;
            if r.status == StatusCode::OK {
                return;
            }
            *last.lock().unwrap() = format!("{} {}", r.status, String::from_utf8_lossy(&r.body));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        ready.is_ok(),
        "/readyz not 200 within {deadline:?}; it last said: {}",
        last.lock().unwrap()
    );
}

/// Two gates on one topology: `a` takes admin writes, `b` serves the load.
struct Fleet {
    a: InProcessGate,
    b: InProcessGate,
    prefix: String,
    /// The store straight (set-up without the request-path timeout).
    store: TestStore,
    /// `cache.ttl` of both gates.
    ttl: Duration,
}

impl Fleet {
    async fn start(test: &str, topology: &[(&str, &str)], direct: Topology, ttl: Duration) -> Self {
        let prefix = unique_prefix(test);
        let mut settings = vec![
            ("store.backend", "redis"),
            ("store.redis.key_prefix", prefix.as_str()),
            // One test client sends every request, a fifth of them with
            // unknown tokens: the per-client failed-auth limit would refuse
            // it (tests/failed_auth.rs covers that limit).
            ("failed_auth.limit", "0"),
        ];
        settings.extend_from_slice(topology);
        let ttl_text = format!("{}ms", ttl.as_millis());
        settings.push(("cache.ttl", &ttl_text));
        let a = InProcessGate::start(&settings).await;
        let b = InProcessGate::start(&settings).await;
        wait_ready(&a, Duration::from_secs(10)).await;
        wait_ready(&b, Duration::from_secs(10)).await;
        let store = TestStore::new(direct, &prefix);
        Self {
            a,
            b,
            prefix,
            store,
            ttl,
        }
    }

    /// A token disabled through gate `a` is refused by gate `b`, which had
    /// it cached: the event went through Redis.
    async fn invalidation_reaches_the_other_gate(&self, deadline: Duration) -> Duration {
        let (secret, id) = create_tokens(&self.a.admin(), 1, "1w").await.remove(0);
        assert_eq!(nginx_auth(&self.b, &secret).await.status, StatusCode::OK);
        let start = Instant::now();
        // Right after a fail-over a write may still meet the old topology
        // (503): the admin would try again.
        eventually("the disable to be written", deadline, || async {
            let r = self
                .a
                .admin()
                .post_empty(&format!("/admin/v1/tokens/{id}/disable"))
                .await;
            (r.status == StatusCode::OK).then_some(())
        })
        .await;
        eventually("gate b to refuse the disabled token", deadline, || async {
            (nginx_auth(&self.b, &secret).await.header("x-hawzu-error") == Some("token_disabled"))
                .then_some(())
        })
        .await;
        start.elapsed()
    }

    /// Tokens for a load on `b`: some cached, fresh ones (a pool larger
    /// than the load uses), some revoked (through `a`, seen by `b`); plus
    /// never-asked probes. Also the instant before `b` first cached the
    /// cached ones (their entries live `cache.ttl` from then at least).
    async fn tokens(&self) -> (TokenMix, Vec<String>, Instant) {
        let tokens = create_tokens(&self.a.admin(), 30, "1w").await;
        let secrets: Vec<String> = tokens.iter().map(|(s, _)| s.clone()).collect();
        let fresh = self.store.seed(FRESH).await;
        let mix = TokenMix {
            cached: secrets[..10].to_vec(),
            fresh: fresh.into_iter().map(|(s, _)| s).collect(),
            revoked: secrets[22..25].to_vec(),
            tracked: Vec::new(),
        };
        let cached_from = Instant::now();
        for t in mix.cached.iter().chain(&mix.revoked) {
            time_until_allowed(self.b.addrs.auth, t, Duration::from_secs(10)).await;
        }
        for (_, id) in &tokens[22..25] {
            let r = self
                .a
                .admin()
                .delete(&format!("/admin/v1/tokens/{id}"))
                .await;
            assert!(r.status.is_success());
        }
        for t in &mix.revoked {
            eventually(
                "gate b to see the revoke",
                Duration::from_secs(5),
                || async {
                    (nginx_auth(&self.b, t).await.status == StatusCode::UNAUTHORIZED).then_some(())
                },
            )
            .await;
        }
        // Listing reads the indexes and every record (one key per command).
        let listed = self
            .a
            .admin()
            .get("/admin/v1/tokens?workspace=ws_1&limit=100")
            .await;
        assert_eq!(listed.status, StatusCode::OK);
        assert!(listed.json()["tokens"].as_array().unwrap().len() >= 30);
        let mut probes = secrets[10..22].to_vec();
        probes.extend_from_slice(&secrets[25..]);
        (mix, probes, cached_from)
    }
}

/// How a fail-over went.
#[derive(Debug)]
struct FailoverOutcome {
    counts: LoadCounts,
    /// Fail-over command → the new master in place (as its topology says).
    switched_after: Duration,
    /// Fail-over command → a never-cached token allowed on `b` and `b`
    /// ready.
    service_after: Duration,
    /// Fail-over command → a token created through `a`. With Sentinel an
    /// admin change waits for a replica (`replica_acks`), and with one
    /// replica that is the old master once it has resynced from the new one
    /// (`repl-diskless-sync-delay` 5 s included): measured on its own.
    writes_after: Duration,
    /// After the fail-over: a disable through `a` refused by `b` after…
    invalidation: Duration,
    /// The cached tokens' entries were put in less than `cache.ttl` before
    /// the service came back: every one was surely cached throughout.
    covered: bool,
}

impl FailoverOutcome {
    fn check(&self, what: &str, bound: Duration) {
        let c = &self.counts;
        println!(
            "{what}: requests {}, wrong allows {}, wrong denies {}, 5xx {} (503 {}), hangs {}, \
             max 503 latency {:?}, new master after {:?}, service back after {:?}, \
             admin writes back after {:?}, invalidation after fail-over {:?}, 503 for cached tokens {}, fresh sent {} \
             (503 {}), fresh pool exhausted {}",
            c.requests,
            c.wrong_allows,
            c.wrong_denies,
            c.fivexx(),
            c.unavailable,
            c.hangs,
            c.max_503,
            self.switched_after,
            self.service_after,
            self.writes_after,
            self.invalidation,
            c.cached_unavailable,
            c.fresh_sent,
            c.fresh_unavailable,
            c.fresh_exhausted,
        );
        assert_eq!(c.wrong_allows, 0, "{what}: wrong allow");
        assert_eq!(c.wrong_denies, 0, "{what}: a valid token was refused");
        assert_eq!(c.hangs, 0, "{what}: a request hung");
        assert_eq!(c.other_5xx, 0, "{what}: a 5xx other than 503");
        // Cached tokens keep working through the fail-over: asserted for
        // entries younger than cache.ttl at its end (older ones may expire
        // inside it, as any entry does: docs/reliability.md).
        assert!(
            self.covered,
            "{what}: the fail-over outlasted the cached entries"
        );
        assert_eq!(c.cached_unavailable, 0, "{what}: a cached token got 503");
        assert_eq!(c.fresh_exhausted, 0, "{what}: the fresh pool ran out");
        assert!(c.fresh_sent > 0, "{what}: no fresh token was sent");
        assert!(
            self.service_after <= bound,
            "{what}: service back only after {:?}",
            self.service_after
        );
        assert!(
            self.writes_after <= ADMIN_WRITES_BACK,
            "{what}: admin writes back only after {:?}",
            self.writes_after
        );
    }
}

async fn failover_under_load(
    fleet: &Fleet,
    failover: impl FnOnce(),
    switched: impl Fn() -> bool,
) -> FailoverOutcome {
    let (mix, mut probes, cached_from) = fleet.tokens().await;
    let load = Load::start(fleet.b.addrs.auth, mix, 4, Duration::from_millis(4));
    let covered_until = load.cache_epoch(cached_from, fleet.ttl);
    load.run_for(200, Duration::from_secs(10)).await;

    let start = Instant::now();
    failover();
    eventually("the new master", Duration::from_secs(20), || {
        let done = switched();
        async move { done.then_some(()) }
    })
    .await;
    let switched_after = start.elapsed();
    time_until_allowed(
        fleet.b.addrs.auth,
        &probes.pop().unwrap(),
        Duration::from_secs(20),
    )
    .await;
    wait_ready(&fleet.b, Duration::from_secs(20)).await;
    let service_after = start.elapsed();
    eventually("a token to be created", ADMIN_WRITES_BACK, || async {
        let r = fleet
            .a
            .admin()
            .post(
                "/admin/v1/tokens",
                common::workspace_token("after", "ws_1", "workspace_viewer", "1w"),
            )
            .await;
        (r.status == StatusCode::CREATED).then_some(())
    })
    .await;
    let writes_after = start.elapsed();
    let covered = Instant::now() <= covered_until;
    load.run_for(200, Duration::from_secs(10)).await;
    let invalidation = fleet
        .invalidation_reaches_the_other_gate(AFTER_FAILOVER)
        .await;
    let counts = load.stop().await;
    FailoverOutcome {
        counts,
        switched_after,
        service_after,
        writes_after,
        invalidation,
        covered,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_serves_invalidates_and_survives_a_master_failover_under_load() {
    // The listener's, the store's and the cluster client's log, shown
    // only if the test fails (once, in CI, gate `b` was not ready 10 s
    // after the fail-back).
    common::log_until_a_panic(
        "hawzu_gate::store::redis=info,hawzu_gate::cache=info,hawzu_gate::ops=warn,redis=info",
    );
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let cluster = RedisCluster::start();
    println!("cluster of 6 up in {:?}", started.elapsed());
    let nodes = cluster.urls().join(",");
    let fleet = Fleet::start(
        "cluster",
        &[
            ("store.redis.mode", "cluster"),
            ("store.redis.nodes", &nodes),
            // Serving and invalidation through a fail-over, timed against
            // the cache's lifetime: changes answered without waiting for
            // replicas (the default's wait is the next tests').
            ("store.redis.cluster.replica_acks", "0"),
        ],
        Topology::Cluster {
            nodes: cluster.urls(),
            replica_acks: Some(0),
        },
        // The bound on a lost event (see AFTER_FAILOVER).
        Duration::from_secs(5),
    )
    .await;
    let took = fleet
        .invalidation_reaches_the_other_gate(Duration::from_secs(2))
        .await;
    println!("cluster: invalidation (sharded pub/sub) reached the other gate in {took:?}");
    // A workspace's audit page on a cluster: its index and the stream, in
    // one slot, written by one script and read apart. (These gates wait
    // for replicas by default: every change above was confirmed.)
    let page = fleet.b.admin().get("/admin/v1/audit?workspace=ws_1").await;
    assert_eq!(page.status, StatusCode::OK, "{:?}", page.body);
    let actions: Vec<String> = page.json()["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .collect();
    // (A create tried again after a 503 may have made a second token.)
    assert_eq!(actions[0], "disable", "{actions:?}");
    assert!(actions[1..].iter().all(|a| a == "create"), "{actions:?}");

    // Fail over the master that carries the events channel: the sharded
    // subscription must follow it.
    let channel = format!("{}events", fleet.prefix);
    let master = cluster.master_for(&channel);
    let replica = cluster.replica_of(master);
    let outcome = failover_under_load(
        &fleet,
        || assert_eq!(redis_cli(replica, &["CLUSTER", "FAILOVER"]), "OK"),
        // Polled through the fail-over: a node's view may name no master
        // for the slot for a moment (the way back below does the same).
        || cluster.try_master_for(&channel) == Some(replica),
    )
    .await;
    outcome.check("cluster: CLUSTER FAILOVER", Duration::from_secs(5));

    // And back: the subscription must follow again (it once stayed on the
    // demoted master, which never saw the new master's messages). The
    // demoted master must be in sync first, or it refuses to take over.
    cluster.wait_healthy(Duration::from_secs(20));
    let mut asked = Instant::now() - Duration::from_secs(60);
    eventually(
        "the old master to take over again",
        Duration::from_secs(30),
        || {
            let back = cluster.try_master_for(&channel) == Some(master);
            // A manual fail-over that does not complete in time is given
            // up by Redis: ask again every 3 s.
            if !back && asked.elapsed() > Duration::from_secs(3) {
                redis_cli(master, &["CLUSTER", "FAILOVER"]);
                asked = Instant::now();
            }
            async move { back.then_some(()) }
        },
    )
    .await;
    wait_ready(&fleet.b, Duration::from_secs(10)).await;
    let took = fleet
        .invalidation_reaches_the_other_gate(AFTER_FAILOVER)
        .await;
    println!("cluster: invalidation after failing back took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_setup_serves_invalidates_and_survives_a_failover_under_load() {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let set = RedisSentinel::start();
    println!(
        "sentinel set-up (master, replica, 3 sentinels) up in {:?}",
        started.elapsed()
    );
    let sentinels = set.sentinel_urls().join(",");
    let fleet = Fleet::start(
        "sentinel",
        &[
            ("store.redis.mode", "sentinel"),
            ("store.redis.nodes", &sentinels),
            ("store.redis.sentinel.master_name", &set.name),
        ],
        Topology::Sentinel {
            sentinels: set.sentinel_urls(),
            master_name: set.name.clone(),
            username: None,
            password: None,
            replica_acks: 1,
        },
        // The default.
        Duration::from_secs(60),
    )
    .await;
    let took = fleet
        .invalidation_reaches_the_other_gate(Duration::from_secs(2))
        .await;
    println!("sentinel: invalidation reached the other gate in {took:?}");

    let old = set.master.port;
    let outcome = failover_under_load(
        &fleet,
        || {
            assert_eq!(
                set.sentinels[0].cli(&["SENTINEL", "FAILOVER", &set.name]),
                "OK"
            )
        },
        || set.master_port().is_some_and(|p| p != old),
    )
    .await;
    outcome.check("sentinel: SENTINEL FAILOVER", Duration::from_secs(10));
}

/// A gate on `set` with the default `replica_acks`, its own key prefix,
/// and room for `WAIT` on a busy machine (a replica answers in ~1 ms).
async fn replica_acks_gate(set: &RedisSentinel, test: &str) -> InProcessGate {
    let sentinels = set.sentinel_urls().join(",");
    let prefix = common::unique_prefix(test);
    InProcessGate::start(&[
        ("store.backend", "redis"),
        ("store.redis.mode", "sentinel"),
        ("store.redis.nodes", &sentinels),
        ("store.redis.sentinel.master_name", &set.name),
        ("store.redis.key_prefix", &prefix),
        ("store.timeout", "2s"),
    ])
    .await
}

/// A disable through `gate` that too few replicas confirmed: 503
/// `store_unavailable`, its message naming `confirmed` ("1 of 2 replicas").
async fn disable_is_unconfirmed(gate: &InProcessGate, id: &str, confirmed: &str) {
    let a = gate
        .admin()
        .post_empty(&format!("/admin/v1/tokens/{id}/disable"))
        .await;
    assert_eq!(
        a.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "answered without {confirmed}: {}",
        String::from_utf8_lossy(&a.body)
    );
    let body = a.json();
    assert_eq!(body["error"], "store_unavailable");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains(confirmed), "{message}");
}

/// The disable retried until answered 200 (the replicas back, or judged
/// down), within 30 s.
async fn disable_is_answered(gate: &InProcessGate, id: &str) {
    let answered = common::eventually("the retry to be answered", Duration::from_secs(30), || {
        let admin = gate.admin();
        let path = format!("/admin/v1/tokens/{id}/disable");
        async move {
            let a = admin.post_empty(&path).await;
            (a.status == StatusCode::OK).then_some(a)
        }
    })
    .await;
    assert_eq!(answered.json()["token"]["state"], "disabled");
}

/// Sentinel replication is asynchronous: a change the master took just
/// before a fail-over was answered 200 and then lost with the old master
/// (4–5 per fail-over in the chaos run). With `replica_acks` (default 1)
/// an admin change is answered only once a replica holds it; with no
/// replica to confirm, the caller gets 503 and tries again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_admin_change_is_answered_only_once_a_replica_holds_it() {
    let mut set = RedisSentinel::start();
    set.wait_ready(Duration::from_secs(30));
    let gate = replica_acks_gate(&set, "replica_acks").await;
    let (id, _) = common::create_token(
        &gate,
        common::workspace_token("Replicated", "ws_1", "workspace_member", "1m"),
    )
    .await;

    let (rotated, rotated_secret) = common::create_token(
        &gate,
        common::workspace_token("Rotated", "ws_1", "workspace_member", "1m"),
    )
    .await;

    set.replicas[0].kill();
    disable_is_unconfirmed(&gate, &id, "0 of 1 replicas confirmed").await;
    // A rotate whose revocation the master took but no replica confirmed
    // gives the old token back (it names no successor that was never
    // made), so the retry can rotate it.
    let a = gate
        .admin()
        .post_empty(&format!("/admin/v1/tokens/{rotated}/rotate"))
        .await;
    assert_eq!(
        a.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    let shown = gate
        .admin()
        .get(&format!("/admin/v1/tokens/{rotated}"))
        .await
        .json();
    assert_eq!(shown["token"]["state"], "enabled", "{shown}");
    assert!(shown["token"].get("rotated_to").is_none(), "{shown}");
    assert_eq!(
        nginx_auth(&gate, &rotated_secret).await.status,
        StatusCode::OK,
        "the old token works"
    );

    // The replica back: the retry finds the token already disabled on the
    // master, writes it again and waits — 200 only once the replica has it.
    set.replicas[0].restart();
    let master = set.master.port;
    common::wait_until("the replica to sync", Duration::from_secs(30), || {
        common::redis_cli(master, &["INFO", "replication"]).contains("state=online")
    });
    let a = gate
        .admin()
        .post_empty(&format!("/admin/v1/tokens/{id}/disable"))
        .await;
    assert_eq!(
        a.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    assert_eq!(a.json()["token"]["state"], "disabled");
    let a = gate
        .admin()
        .post_empty(&format!("/admin/v1/tokens/{rotated}/rotate"))
        .await;
    assert_eq!(
        a.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    let replica = set.replicas[0].port;
    let key_count = common::redis_cli(replica, &["DBSIZE"]);
    assert_ne!(key_count.trim(), "0", "the replica holds the tokens");
}

/// Redis Cluster replication is asynchronous too: a revoke the shard's
/// master acknowledged and lost in a fail-over before any replica had it
/// would let the token work again. With `store.redis.cluster.replica_acks`
/// an admin change is answered only once a replica of the shard holding
/// the token's record has it (`WAIT` routed to that shard's master, on
/// the changes' own connections); with none to confirm, 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_admin_change_is_answered_only_once_a_replica_of_its_shard_holds_it() {
    let _serial = SERIAL.lock().await;
    let mut cluster = RedisCluster::start();
    let (gate, id, master, replica) = cluster_token(
        &cluster,
        "cluster-acks",
        &[
            ("store.redis.cluster.replica_acks", "1"),
            ("store.timeout", "1s"),
        ],
    )
    .await;

    cluster.node(replica).kill();
    disable_is_unconfirmed(&gate, &id, "0 of 1 replicas").await;

    // The replica back: the retry is answered once it holds the change.
    cluster.node(replica).restart();
    common::wait_until("the replica to sync", Duration::from_secs(30), || {
        redis_cli(master, &["INFO", "replication"]).contains("state=online")
    });
    disable_is_answered(&gate, &id).await;
}

/// A gate on `cluster` (its own key prefix, `settings` added), a token it
/// made, and the ports of the master and the replica of the shard holding
/// that token's record.
async fn cluster_token(
    cluster: &RedisCluster,
    name: &str,
    settings: &[(&str, &str)],
) -> (InProcessGate, String, u16, u16) {
    let prefix = unique_prefix(name);
    let nodes = cluster.urls().join(",");
    let mut all = vec![
        ("store.backend", "redis"),
        ("store.redis.key_prefix", prefix.as_str()),
        ("store.redis.mode", "cluster"),
        ("store.redis.nodes", &nodes),
    ];
    all.extend_from_slice(settings);
    let gate = InProcessGate::start(&all).await;
    let (id, secret) = common::create_token(
        &gate,
        common::workspace_token("Replicated", "ws_1", "workspace_member", "1m"),
    )
    .await;
    let master = cluster.master_for(&common::token_key(&prefix, &secret));
    let replica = cluster.replica_of(master);
    (gate, id, master, replica)
}

/// A token cached before a resubscription whose read again meets its slot
/// in transition is served from the cache. The cluster client waits 1.28 s
/// at least before it asks a slot answering `CLUSTERDOWN` again, past the
/// 250 ms `store.timeout`; with the cache dropped on resubscribing, such a
/// token got 503 (four did in CI, stop 36, right after a `CLUSTER
/// FAILOVER` of the events shard). Here the subscription is cut, and the
/// master of the token's slot gives the slot up once the gate is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_token_whose_slot_is_in_transition_after_a_resubscription_is_served() {
    let _serial = SERIAL.lock().await;
    let cluster = RedisCluster::start();
    let prefix = unique_prefix("cluster-transition");
    let nodes = cluster.urls().join(",");
    let gate = InProcessGate::start(&[
        ("store.backend", "redis"),
        ("store.redis.key_prefix", prefix.as_str()),
        ("store.redis.mode", "cluster"),
        ("store.redis.nodes", nodes.as_str()),
    ])
    .await;
    wait_ready(&gate, Duration::from_secs(20)).await;
    let (_, secret) = common::create_token(
        &gate,
        common::workspace_token("Cached", "ws_1", "workspace_viewer", "1w"),
    )
    .await;
    time_until_allowed(gate.addrs.auth, &secret, Duration::from_secs(10)).await;

    let metric = |name: &'static str| {
        let gate = &gate;
        async move {
            let text = gate.ops().get("/metrics").await.body;
            String::from_utf8_lossy(&text)
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or_else(|| panic!("{name} in /metrics"))
        }
    };
    let drops = || metric("hawzu_gate_cache_drops_total");
    let before = drops().await;
    for port in cluster.topology().iter().map(|n| n.1) {
        redis_cli(port, &["CLIENT", "KILL", "TYPE", "pubsub"]);
    }
    eventually("the resubscription", Duration::from_secs(20), || async {
        (drops().await > before).then_some(())
    })
    .await;

    let key = common::token_key(&prefix, &secret);
    let master = cluster.master_for(&key);
    let slot = redis_cli(master, &["CLUSTER", "KEYSLOT", &key]);
    assert_eq!(redis_cli(master, &["CLUSTER", "DELSLOTS", &slot]), "OK");
    let sent = Instant::now();
    let answer = nginx_auth(&gate, &secret).await;
    let took = sent.elapsed();
    assert_eq!(redis_cli(master, &["CLUSTER", "ADDSLOTS", &slot]), "OK");
    println!(
        "a cached token, its slot not served: {} after {took:?}",
        answer.status
    );
    assert_eq!(
        answer.status,
        StatusCode::OK,
        "a cached token whose read met CLUSTERDOWN after a resubscription (after {took:?}): {}",
        String::from_utf8_lossy(&answer.body)
    );
    // Served from the cache because its read failed, not because it
    // happened to work.
    assert!(metric("hawzu_gate_cache_stale_served_total").await >= 1.0);
}

/// A cluster's default (`store.redis.cluster.replica_acks` not set) waits
/// for every replica the shard's master has connected, as Sentinel's
/// waits for every replica the sentinels hold up: here the replica of the
/// token record's shard is frozen (`SIGSTOP`: still connected), so a
/// disable is not answered 200 — it was, the default answering once the
/// master had it, and a fail-over right after could undo a revoke — and
/// once it wakes the retry is. A shard whose replica is gone (its master
/// lists none) answers at once: no replica, nothing to wait for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_change_waits_by_default_for_the_replicas_its_shard_has() {
    let _serial = SERIAL.lock().await;
    let mut cluster = RedisCluster::start();
    // Room for ROLE, the write and a busy machine beside the 1.5 s WAIT
    // (half the timeout): a timeout would hide the shortfall.
    let (gate, id, master, replica) =
        cluster_token(&cluster, "cluster-follow", &[("store.timeout", "3s")]).await;
    // A replica the master counts: past its first sync.
    common::wait_until("the replica to be online", Duration::from_secs(30), || {
        redis_cli(master, &["INFO", "replication"]).contains("state=online")
    });

    cluster.node(replica).pause();
    // Not answered as kept: 503 `store_unavailable`. Its message names the
    // replica's silence ("0 of 1 replicas") — or, should the cluster client
    // meanwhile wait on or fail over the frozen node while it learns the
    // cluster's view of it, the store's timeout or its error: each seen on
    // a loaded machine; what matters is that no 200 says it is kept.
    let a = gate
        .admin()
        .post_empty(&format!("/admin/v1/tokens/{id}/disable"))
        .await;
    cluster.node(replica).resume();
    assert_eq!(
        a.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "answered without its replica: {}",
        String::from_utf8_lossy(&a.body)
    );
    assert_eq!(a.json()["error"], "store_unavailable");
    disable_is_answered(&gate, &id).await;

    cluster.node(replica).kill();
    common::wait_until(
        "the master to list no replica",
        Duration::from_secs(30),
        || redis_cli(master, &["INFO", "replication"]).contains("connected_slaves:0"),
    );
    let enabled = gate
        .admin()
        .post_empty(&format!("/admin/v1/tokens/{id}/enable"))
        .await;
    assert_eq!(
        enabled.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&enabled.body)
    );
}

/// With several replicas, one is not enough: in a planned fail-over the
/// old master keeps taking writes after a replica was promoted, and the
/// replicas not yet moved acknowledge them — then resync from the new
/// master, which never had them (2 changes answered 200 and lost per
/// `SENTINEL FAILOVER` with two replicas and `WAIT 1`, tests/chaos). So an
/// admin change waits for every replica the sentinels hold up: here one
/// of two is stopped, and while the sentinels still count it the change
/// answers 503 although the other replica has it; once they judge it
/// down, the retry answers 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_admin_change_waits_for_every_replica_the_sentinels_hold_up() {
    let mut set = RedisSentinel::with_replicas(2);
    set.wait_ready(Duration::from_secs(30));
    // The sentinels must not judge the stopped replica down on their own
    // before the first try.
    let slow = |ms: &str| {
        for s in &set.sentinels {
            assert_eq!(
                s.cli(&["SENTINEL", "SET", &set.name, "down-after-milliseconds", ms]),
                "OK"
            );
        }
    };
    slow("600000");
    let gate = replica_acks_gate(&set, "replica_acks_all").await;
    let (id, _) = common::create_token(
        &gate,
        common::workspace_token("Every replica", "ws_1", "workspace_member", "1m"),
    )
    .await;

    set.replicas[0].kill();
    disable_is_unconfirmed(&gate, &id, "1 of 2 replicas").await;

    // Judged down: the change waits for the one replica left.
    slow("500");
    disable_is_answered(&gate, &id).await;
    let left = set.replicas[1].port;
    assert_ne!(common::redis_cli(left, &["DBSIZE"]).trim(), "0");
}

/// `WAIT` blocks the connection it is sent on until the replicas answer
/// or its time is up: an admin change waiting for a replica that is not
/// answering must not hold up the request path. Here the only replica is
/// stopped while the sentinels still count it (so the change waits the
/// whole of `WAIT`'s time, 2 s), and meanwhile a token the gate has never
/// seen is checked: a cache miss, read from the master. It is answered in
/// milliseconds, not after the `WAIT` (it was, when both shared one
/// connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_waiting_for_replicas_does_not_hold_up_the_request_path() {
    let mut set = RedisSentinel::start();
    set.wait_ready(Duration::from_secs(30));
    for s in &set.sentinels {
        assert_eq!(
            s.cli(&[
                "SENTINEL",
                "SET",
                &set.name,
                "down-after-milliseconds",
                "600000"
            ]),
            "OK"
        );
    }
    let sentinels = set.sentinel_urls().join(",");
    let prefix = unique_prefix("wait_apart");
    let gate = InProcessGate::start(&[
        ("store.backend", "redis"),
        ("store.redis.mode", "sentinel"),
        ("store.redis.nodes", &sentinels),
        ("store.redis.sentinel.master_name", &set.name),
        ("store.redis.key_prefix", &prefix),
        // `WAIT` gets half: 2 s.
        ("store.timeout", "4s"),
    ])
    .await;
    let (changed, _) = common::create_token(
        &gate,
        common::workspace_token("Changed", "ws_1", "workspace_member", "1m"),
    )
    .await;
    let (_, unseen) = common::create_token(
        &gate,
        common::workspace_token("Never checked", "ws_1", "workspace_member", "1m"),
    )
    .await;

    set.replicas[0].kill();
    let master = set.master.port;
    let admin = gate.admin();
    let change = tokio::spawn(async move {
        admin
            .post_empty(&format!("/admin/v1/tokens/{changed}/disable"))
            .await
    });
    common::wait_until(
        "the change to wait for the replica",
        Duration::from_secs(10),
        || {
            redis_cli(master, &["CLIENT", "LIST"])
                .lines()
                .any(|l| l.contains("cmd=wait") && l.contains("flags=b"))
        },
    );
    let started = Instant::now();
    let check = nginx_auth(&gate, &unseen).await;
    let took = started.elapsed();
    assert_eq!(
        check.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&check.body)
    );
    assert!(
        took < Duration::from_millis(500),
        "a cache miss waited {took:?} behind an admin change's WAIT"
    );
    assert!(
        redis_cli(master, &["CLIENT", "LIST"]).contains("cmd=wait"),
        "the check ran while the change was still waiting"
    );
    let answer = change.await.unwrap();
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
}

/// A cluster shard that cannot be read (its master killed, its replica
/// told not to take over) makes the gate unready for as long as it lasts,
/// while the other shards keep serving: readiness (and the invalidation
/// listener's wait before a cache drop) is "every shard answers a read",
/// not "every master the client still holds a connection to answers
/// PING" (the cluster client forgets a node it cannot reconnect to, and a
/// PING to all masters then skips it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_shard_that_cannot_be_read_keeps_the_gate_unready() {
    let _serial = SERIAL.lock().await;
    let mut cluster = RedisCluster::start();
    for n in &cluster.nodes {
        // The other shards keep serving while one has no master.
        assert_eq!(
            n.cli(&["CONFIG", "SET", "cluster-require-full-coverage", "no"]),
            "OK"
        );
    }
    let prefix = unique_prefix("cluster-shard-down");
    let nodes = cluster.urls().join(",");
    let gate = InProcessGate::start(&[
        ("store.backend", "redis"),
        ("store.redis.key_prefix", prefix.as_str()),
        ("store.redis.mode", "cluster"),
        ("store.redis.nodes", &nodes),
        ("failed_auth.limit", "0"),
    ])
    .await;
    wait_ready(&gate, Duration::from_secs(10)).await;
    let store = TestStore::new(
        Topology::Cluster {
            nodes: cluster.urls(),
            replica_acks: Some(0),
        },
        &prefix,
    );
    // Valid tokens, never asked: one on the shard that goes down, one on
    // another.
    let seeded = store.seed(40).await;
    let key = |secret: &str| common::token_key(&prefix, secret);
    let down = cluster.master_for(&key(&seeded[0].0));
    let on_down = &seeded[0].0;
    let elsewhere = seeded
        .iter()
        .map(|(s, _)| s)
        .find(|s| cluster.master_for(&key(s)) != down)
        .expect("40 tokens span more than one shard");
    let replica = cluster.replica_of(down);
    assert_eq!(
        redis_cli(
            replica,
            &["CONFIG", "SET", "cluster-replica-no-failover", "yes"]
        ),
        "OK"
    );

    cluster.node(down).kill();
    // The shard is unreadable: its tokens get 503.
    eventually(
        "a token on the dead shard to get 503",
        Duration::from_secs(10),
        || async {
            (nginx_auth(&gate, on_down).await.status == StatusCode::SERVICE_UNAVAILABLE)
                .then_some(())
        },
    )
    .await;
    // Past the cluster's own verdict (node timeout 1 s) and the client's
    // slot refreshes: unready the whole time, while the other shards serve.
    let until = Instant::now() + Duration::from_secs(4);
    let mut probes = 0;
    while Instant::now() < until {
        let ready = gate.ops().get("/readyz").await;
        assert_eq!(
            ready.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "ready while a shard cannot be read (probe {probes}): {}",
            String::from_utf8_lossy(&ready.body)
        );
        assert_eq!(
            nginx_auth(&gate, on_down).await.status,
            StatusCode::SERVICE_UNAVAILABLE
        );
        probes += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(nginx_auth(&gate, elsewhere).await.status, StatusCode::OK);
    // Each probe may wait out the store timeout (250 ms) twice.
    assert!(probes >= 3, "only {probes} readiness probes in 4 s");
}
