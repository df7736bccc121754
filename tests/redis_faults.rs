//! Redis faults under load: each fault on a private `redis-server`, with
//! tokio tasks asking the forward-auth door about cached, fresh, revoked and
//! unknown tokens the whole time. Every test checks: no wrong allow, no
//! hang, 503 `store_unavailable` within the store timeout (plus slack) for
//! what the cache cannot answer, cached tokens served throughout, and the
//! gate back (uncached tokens allowed, subscription up) within 2 s of Redis.
//! The long version is `tests/chaos/` (see docs/reliability.md).
//!
//! Over 500 lines on purpose: one test per fault, all sharing one load-and-
//! judge set-up that splitting would repeat.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::StatusCode;
use jiff::Timestamp;

use common::{
    InProcessGate, Load, LoadCounts, RedisNode, TestStore, TokenMix, create_tokens,
    disable_in_redis_silently, eventually, nginx_auth, time_until_allowed, unique_prefix,
};

/// `store.timeout` (the default).
const STORE_TIMEOUT: Duration = Duration::from_millis(250);
/// What a 503 may take beyond the store timeout on a busy 2-core CI box.
const SLACK: Duration = Duration::from_millis(350);
const RECOVERY: Duration = Duration::from_secs(2);
/// Fresh tokens per test: more than its load sends (6 tasks at one request
/// per 3 ms, 1 in 10 fresh, for a few seconds), so none is sent twice.
const FRESH: usize = 1500;
/// `cache.ttl` (the default): the cached tokens' entries, put in at set-up,
/// outlive every test here.
const TTL: Duration = Duration::from_secs(60);

/// The fault tests measure latencies: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A private Redis whose data survives `kill -9`, a gate on it, and tokens.
struct Bench {
    node: RedisNode,
    gate: InProcessGate,
    prefix: String,
    mix: TokenMix,
    /// Valid, never asked: for measuring recovery.
    probes: Vec<String>,
    /// Just before the gate first cached `mix.cached` (it had never seen
    /// them): their entries live `cache.ttl` from then at least.
    cached_from: Instant,
    _dir: tempfile::TempDir,
}

impl Bench {
    async fn start(test: &str, extra: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let node = RedisNode::persistent(dir.path());
        let prefix = unique_prefix(test);
        let url = node.url();
        let mut settings = vec![
            ("store.backend", "redis"),
            ("store.redis.url", url.as_str()),
            ("store.redis.key_prefix", prefix.as_str()),
            // One test client sends every request, a fifth of them with
            // unknown tokens: the per-client failed-auth limit would refuse
            // it (tests/failed_auth.rs covers that limit).
            ("failed_auth.limit", "0"),
        ];
        settings.extend_from_slice(extra);
        let gate = InProcessGate::start(&settings).await;
        wait_ready(&gate, Duration::from_secs(10)).await;
        // Set-up goes straight to the store (10 s timeout), not through the
        // gate's 250 ms request path: a busy machine must not fail it.
        let store = TestStore::new(common::standalone(&url), &prefix);
        let tokens = store.seed(40 + FRESH).await;
        let secrets: Vec<String> = tokens.iter().map(|(s, _)| s.clone()).collect();
        let mix = TokenMix {
            cached: secrets[..12].to_vec(),
            // More than a test can use (each is sent once): every one is a
            // store read, during the fault too.
            fresh: secrets[40..].to_vec(),
            revoked: secrets[30..34].to_vec(),
            tracked: Vec::new(),
        };
        let probes = secrets[12..30]
            .iter()
            .chain(&secrets[34..40])
            .cloned()
            .collect();
        // Cache the valid and the soon-revoked ones, then revoke: this gate
        // has seen the change.
        let cached_from = Instant::now();
        for t in mix.cached.iter().chain(&mix.revoked) {
            time_until_allowed(gate.addrs.auth, t, Duration::from_secs(10)).await;
        }
        let admin = gate.admin();
        for (_, id) in &tokens[30..34] {
            eventually("a revoke", Duration::from_secs(10), || async {
                let r = admin.delete(&format!("/admin/v1/tokens/{id}")).await;
                (r.status != StatusCode::SERVICE_UNAVAILABLE).then_some(())
            })
            .await;
        }
        for t in &mix.revoked {
            assert_eq!(nginx_auth(&gate, t).await.status, StatusCode::UNAUTHORIZED);
        }
        Self {
            node,
            gate,
            prefix,
            mix,
            probes,
            cached_from,
            _dir: dir,
        }
    }

    fn auth(&self) -> SocketAddr {
        self.gate.addrs.auth
    }

    /// A valid token outside the load, cached by the gate, then disabled
    /// in Redis without an event (see [`Bench::disable_silently`]).
    async fn lost_change(&mut self) -> String {
        let token = self.probes.remove(0);
        time_until_allowed(self.auth(), &token, Duration::from_secs(10)).await;
        self.disable_silently(&token).await;
        assert_eq!(nginx_auth(&self.gate, &token).await.status, StatusCode::OK);
        token
    }

    /// Disables `secret`'s record in Redis without publishing anything (an
    /// invalidation lost). Only a distrusted cache makes the gate see it.
    async fn disable_silently(&self, secret: &str) {
        disable_in_redis_silently(&self.node.url(), &self.prefix, secret).await;
    }
}

/// Waits for `/readyz` to be 200 (store reachable, subscription up).
async fn wait_ready(gate: &InProcessGate, deadline: Duration) -> Duration {
    let start = Instant::now();
    eventually("/readyz to be 200", deadline, || async {
        (gate.ops().get("/readyz").await.status == StatusCode::OK).then_some(())
    })
    .await;
    start.elapsed()
}

/// One fault's outcome.
#[derive(Debug)]
struct Outcome {
    during: LoadCounts,
    total: LoadCounts,
    /// Redis back → an uncached valid token allowed.
    served_after: Duration,
    /// Redis back → `/readyz` 200 (subscription up, cache dropped if it was
    /// disconnected).
    ready_after: Duration,
    /// Fresh tokens that got 503 during the fault, asked again after
    /// recovery: how many were allowed at once.
    refused_fresh: usize,
    refused_fresh_allowed_after: usize,
}

impl Outcome {
    fn print(&self, fault: &str) {
        println!(
            "{fault}: requests {} (during fault {}), wrong allows {}, wrong denies {}, 5xx {} \
             (503 {}, cached-token 503 {}), hangs {}, max 503 latency {:?}, max latency {:?}, \
             served again after {:?}, ready after {:?}, fresh tokens sent {} (during fault {}, \
             503 {}; of those allowed after recovery {}), fresh pool exhausted {}",
            self.total.requests,
            self.during.requests,
            self.total.wrong_allows,
            self.total.wrong_denies,
            self.total.fivexx(),
            self.total.unavailable,
            self.total.cached_unavailable,
            self.total.hangs,
            self.total.max_503,
            self.total.max_latency,
            self.served_after,
            self.ready_after,
            self.total.fresh_sent,
            self.during.fresh_sent,
            self.refused_fresh,
            self.refused_fresh_allowed_after,
            self.total.fresh_exhausted,
        );
    }

    fn check(&self, fault: &str) {
        self.print(fault);
        let t = &self.total;
        assert_eq!(
            t.wrong_allows, 0,
            "{fault}: a revoked or unknown token was allowed"
        );
        assert_eq!(t.wrong_denies, 0, "{fault}: a valid token was refused");
        assert_eq!(t.hangs, 0, "{fault}: a request hung");
        assert_eq!(t.other_5xx, 0, "{fault}: a 5xx other than 503");
        assert_eq!(
            t.cached_unavailable, 0,
            "{fault}: a cached valid token got 503"
        );
        assert!(
            t.max_503 <= STORE_TIMEOUT + SLACK,
            "{fault}: a 503 took {:?}",
            t.max_503
        );
        assert!(
            self.served_after <= RECOVERY,
            "{fault}: uncached tokens served again only after {:?}",
            self.served_after
        );
        assert!(
            self.ready_after <= RECOVERY,
            "{fault}: ready again only after {:?}",
            self.ready_after
        );
        // Fresh tokens are really fresh: each sent once, some during the
        // fault (store reads then), and none refused once Redis is back.
        assert_eq!(t.fresh_exhausted, 0, "{fault}: the fresh pool ran out");
        assert!(
            self.during.fresh_sent > 0,
            "{fault}: no fresh token was sent during the fault"
        );
        assert_eq!(
            self.refused_fresh, self.refused_fresh_allowed_after,
            "{fault}: a fresh token refused during the fault was not allowed after it"
        );
    }
}

/// Runs steady load, injects the fault, waits until the load saw `min_503`
/// answers 503, heals, and measures recovery.
async fn under_load<T>(
    bench: &mut Bench,
    min_503: u64,
    inject: impl FnOnce(&mut RedisNode) -> T,
    heal: impl AsyncFnOnce(&mut RedisNode, T),
) -> Outcome {
    let load = Load::start(bench.auth(), bench.mix.clone(), 6, Duration::from_millis(3));
    // A 503 for a cached token counts (the entries outlive the test).
    let covered_until = load.cache_epoch(bench.cached_from, TTL);
    load.run_for(300, Duration::from_secs(10)).await;
    let before = load.counts();
    assert_eq!(before.unavailable, 0, "503 before any fault: {before:?}");

    let injected = inject(&mut bench.node);
    eventually("the load to see 503s", Duration::from_secs(10), || async {
        (load.counts().unavailable >= min_503).then_some(())
    })
    .await;
    heal(&mut bench.node, injected).await;
    let back = Instant::now();
    let during = load.counts().since(&before);
    let load_refused_fresh = load.take_refused_fresh();
    let probe = bench.probes.pop().unwrap();
    let served = time_until_allowed(bench.auth(), &probe, Duration::from_secs(10)).await;
    let served_after = back.elapsed().max(served);
    wait_ready(&bench.gate, Duration::from_secs(10)).await;
    let ready_after = back.elapsed();
    assert!(
        Instant::now() < covered_until,
        "the test outlasted the cached entries: the cached-token 503 count proves nothing"
    );
    load.run_for(300, Duration::from_secs(10)).await;
    let total = load.stop().await;
    // Valid tokens that got 503 while Redis was away: allowed now, at the
    // first ask (a 503 is never cached as a refusal).
    let refused = load_refused_fresh;
    let mut allowed_after = 0;
    for t in &refused {
        if nginx_auth(&bench.gate, t).await.status == StatusCode::OK {
            allowed_after += 1;
        }
    }
    Outcome {
        during,
        total,
        served_after,
        ready_after,
        refused_fresh: refused.len(),
        refused_fresh_allowed_after: allowed_after,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_under_load() {
    let _serial = SERIAL.lock().await;
    let mut bench = Bench::start("fault-kill", &[]).await;
    let lost = bench.lost_change().await;
    let outcome = under_load(
        &mut bench,
        30,
        |node| node.kill(),
        async |node, ()| node.restart(),
    )
    .await;
    outcome.check("kill + restart");
    // The subscription came back and the cache was dropped: the change the
    // gate never heard of is seen now.
    assert_eq!(
        nginx_auth(&bench.gate, &lost).await.header("x-hawzu-error"),
        Some("token_disabled")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_paused_by_debug_sleep_under_load() {
    let _serial = SERIAL.lock().await;
    let mut bench = Bench::start("fault-sleep", &[]).await;
    let outcome = under_load(
        &mut bench,
        10,
        |node| {
            // Blocks the server (and this redis-cli) for 1.5 s.
            common::tool("redis-cli")
                .args(["-p", &node.port.to_string(), "DEBUG", "SLEEP", "1.5"])
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        },
        async |_, mut sleeper| {
            eventually("DEBUG SLEEP to end", Duration::from_secs(10), || {
                let done = sleeper.try_wait().unwrap().is_some();
                async move { done.then_some(()) }
            })
            .await;
        },
    )
    .await;
    outcome.check("DEBUG SLEEP 1.5");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_paused_by_client_pause_under_load() {
    let _serial = SERIAL.lock().await;
    let mut bench = Bench::start("fault-pause", &[]).await;
    let outcome = under_load(
        &mut bench,
        10,
        // Paused for 1.5 s (CLIENT UNPAUSE would itself wait: ALL blocks
        // every client's commands).
        |node| assert_eq!(node.cli(&["CLIENT", "PAUSE", "1500", "ALL"]), "OK"),
        async |node, ()| {
            common::wait_redis_answers(&node.url(), Duration::from_secs(10)).await;
        },
    )
    .await;
    outcome.check("CLIENT PAUSE 1500 ALL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_connections_killed_under_load() {
    let _serial = SERIAL.lock().await;
    let mut bench = Bench::start("fault-client-kill", &[]).await;
    let lost = bench.lost_change().await;
    let outcome = under_load(
        &mut bench,
        0,
        |node| {
            node.cli(&["CLIENT", "KILL", "TYPE", "normal"]);
            node.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
        },
        async |_, ()| {},
    )
    .await;
    outcome.check("CLIENT KILL");
    // Resubscribed, so the cache was dropped.
    assert_eq!(
        nginx_auth(&bench.gate, &lost).await.header("x-hawzu-error"),
        Some("token_disabled")
    );
}

/// `cache.stale_if_error`: past `cache.ttl`, a cached valid token is still
/// served while Redis is down; a token the gate saw revoked never is, and
/// one whose own expiry passes is refused; without the setting, 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_if_error_serves_cached_tokens_past_ttl_only_while_redis_fails() {
    let _serial = SERIAL.lock().await;
    let mut bench = Bench::start(
        "fault-stale",
        &[("cache.ttl", "1s"), ("cache.stale_if_error", "30s")],
    )
    .await;
    // A second gate on the same Redis, without stale_if_error.
    let strict = InProcessGate::start(&[
        ("store.backend", "redis"),
        ("store.redis.url", &bench.node.url()),
        ("store.redis.key_prefix", &bench.prefix),
        ("cache.ttl", "1s"),
        ("failed_auth.limit", "0"),
    ])
    .await;
    wait_ready(&strict, Duration::from_secs(10)).await;
    let valid = bench.mix.cached[0].clone();
    let revoked = bench.mix.revoked[0].clone();
    // Expires in 3 s (its own expiry).
    let soon = (Timestamp::now() + jiff::SignedDuration::from_secs(3)).to_string();
    let expiring = create_tokens(&bench.gate.admin(), 1, &soon).await[0]
        .0
        .clone();
    // The strict gate has never seen `valid`: its entry is put in after
    // this instant, so it cannot expire before `strict_cached + ttl`.
    let strict_cached = Instant::now();
    for t in [&valid, &expiring] {
        time_until_allowed(bench.auth(), t, Duration::from_secs(10)).await;
        time_until_allowed(strict.addrs.auth, t, Duration::from_secs(10)).await;
    }
    let first = eventually(
        "the strict gate to read the revoked token",
        Duration::from_secs(10),
        || async {
            let s = nginx_auth(&strict, &revoked).await.status;
            (s != StatusCode::SERVICE_UNAVAILABLE).then_some(s)
        },
    )
    .await;
    assert_eq!(first, StatusCode::UNAUTHORIZED);

    bench.node.kill();
    let killed = Instant::now();
    // Past the ttl: the lenient gate serves the cached token, the strict one
    // says the store is unavailable.
    eventually(
        "the strict gate to answer 503",
        Duration::from_secs(5),
        || async {
            (nginx_auth(&strict, &valid).await.status == StatusCode::SERVICE_UNAVAILABLE)
                .then_some(())
        },
    )
    .await;
    // What the mechanism guarantees: no 503 before the entry's ttl ran out.
    assert!(
        strict_cached.elapsed() >= Duration::from_secs(1),
        "the strict gate answered 503 before its entry could expire"
    );
    let mut served = 0;
    while killed.elapsed() < Duration::from_secs(4) {
        assert_eq!(
            nginx_auth(&bench.gate, &valid).await.status,
            StatusCode::OK,
            "stale_if_error: the cached token must be served while Redis is down"
        );
        assert_ne!(
            nginx_auth(&bench.gate, &revoked).await.status,
            StatusCode::OK
        );
        served += 1;
    }
    assert!(served > 0);
    // Its own expiry has passed: refused even from the stale cache.
    assert_eq!(
        nginx_auth(&bench.gate, &expiring)
            .await
            .header("x-hawzu-error"),
        Some("token_expired")
    );
    let stale: u64 = metric(&bench.gate, "hawzu_gate_cache_stale_served_total").await;
    assert!(stale > 0, "stale answers are counted");

    // Redis back: served fresh again (and the stale entries are gone).
    bench.node.restart();
    let back = time_until_allowed(
        bench.auth(),
        &bench.probes.pop().unwrap(),
        Duration::from_secs(10),
    )
    .await;
    assert!(back <= RECOVERY, "recovery took {back:?}");
    assert_eq!(nginx_auth(&bench.gate, &valid).await.status, StatusCode::OK);
}

/// A resubscription distrusts the cache rather than dropping it: a cached
/// token whose first read after it times out is still served (within
/// `cache.ttl`), and a change missed meanwhile is enforced once Redis
/// answers. Dropped, every cached token got 503 if Redis stalled right
/// after the resubscription (CI, stop 36: a Cluster slot in transition
/// after a fail-over).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_token_is_served_when_its_first_read_after_a_resubscription_times_out() {
    let _serial = SERIAL.lock().await;
    let mut bench = Bench::start("fault-resubscribed", &[]).await;
    let valid = bench.mix.cached[0].clone();
    let lost = bench.lost_change().await;
    let drops = metric(&bench.gate, "hawzu_gate_cache_drops_total").await;
    assert_eq!(bench.node.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]), "1");
    eventually("the resubscription", Duration::from_secs(10), || async {
        (metric(&bench.gate, "hawzu_gate_cache_drops_total").await > drops).then_some(())
    })
    .await;

    // Redis stalls right after it: the cached token's read times out.
    let pause = Duration::from_millis(1500);
    assert_eq!(bench.node.cli(&["CLIENT", "PAUSE", "1500", "ALL"]), "OK");
    let paused = Instant::now();
    let r = nginx_auth(&bench.gate, &valid).await;
    let took = paused.elapsed();
    assert!(
        took < pause,
        "the machine was too slow for this test ({took:?})"
    );
    assert_eq!(
        r.status,
        StatusCode::OK,
        "a cached token whose first read after a resubscription timed out ({took:?})"
    );
    assert!(metric(&bench.gate, "hawzu_gate_cache_stale_served_total").await > 0);

    // Redis answers again: the change missed before the resubscription is
    // enforced at its first answer (a distrusted entry is always asked).
    let status = eventually("Redis to answer", Duration::from_secs(5), || async {
        let s = nginx_auth(&bench.gate, &lost).await.status;
        (s != StatusCode::OK).then_some(s)
    })
    .await;
    assert!(
        paused.elapsed() < pause + STORE_TIMEOUT + SLACK,
        "the missed change was enforced only {:?} after the pause began",
        paused.elapsed()
    );
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(nginx_auth(&bench.gate, &valid).await.status, StatusCode::OK);
}

/// A counter's value from `/metrics`.
async fn metric(gate: &InProcessGate, name: &str) -> u64 {
    let text = gate.ops().get("/metrics").await.body;
    String::from_utf8_lossy(&text)
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// A Redis restarted with a large dataset takes `SUBSCRIBE` while it is
/// still loading, and refuses reads (`LOADING`) until done. The gate must
/// not drop its cache on that resubscription before reads work again, or
/// every cached token gets 503 for the whole load (found by the chaos run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_while_loading_a_large_dataset_keeps_cached_tokens_served() {
    let _serial = SERIAL.lock().await;
    let mut bench = Bench::start("fault-loading", &[]).await;
    // A dataset that takes a while to load: keys of no interest to the
    // gate, written into the append-only file by a rewrite.
    assert_eq!(
        bench
            .node
            .cli(&["DEBUG", "POPULATE", "1000000", "filler", "64"]),
        "OK"
    );
    bench.node.cli(&["BGREWRITEAOF"]);
    common::wait_until("the AOF rewrite", Duration::from_secs(60), || {
        let info = bench.node.cli(&["INFO", "persistence"]);
        info.contains("aof_rewrite_in_progress:0") && info.contains("aof_rewrite_scheduled:0")
    });
    let restarted = Instant::now();
    let outcome = under_load(
        &mut bench,
        30,
        |node| node.kill(),
        async |node, ()| node.restart(),
    )
    .await;
    println!("kill + restart with 1M keys took {:?}", restarted.elapsed());
    outcome.check("kill + restart, large dataset");
}

/// How many PINGs Redis refused so far (`INFO commandstats`).
fn pings_refused(node: &RedisNode) -> u64 {
    let stats = node.cli(&["INFO", "commandstats"]);
    stats
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_ping:"))
        .and_then(|l| l.split(',').find_map(|f| f.strip_prefix("rejected_calls=")))
        .map_or(0, |n| n.trim().parse().unwrap())
}

/// A change that landed is heard by every gate even when the writes that
/// follow it (the `id:` key, the list's index entries) fail: the event goes
/// out right after the compare-and-set. Here they fail because gate `a`'s
/// Redis user may only read `id:` keys; its disable answers 503 (the
/// caller is told something failed), and gate `b`, which had the token
/// cached, refuses it at once, not a `cache.ttl` later.
#[tokio::test]
async fn a_change_whose_bookkeeping_fails_is_still_heard_by_every_gate() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let node = RedisNode::start_with(common::free_port(), dir.path(), &["--save", ""]);
    let prefix = unique_prefix("bookkeeping-fails");
    let user = "gate_a";
    let writable = format!("~{prefix}[^i]*");
    let read_only = format!("%R~{prefix}id:*");
    assert_eq!(
        node.cli(&[
            "ACL", "SETUSER", user, "on", ">pw", &writable, &read_only, "&*", "+@all"
        ]),
        "OK"
    );
    let start = |url: String| {
        let prefix = prefix.clone();
        async move {
            InProcessGate::start(&[
                ("store.backend", "redis"),
                ("store.redis.url", url.as_str()),
                ("store.redis.key_prefix", prefix.as_str()),
            ])
            .await
        }
    };
    let a = start(format!("redis://{user}:pw@127.0.0.1:{}", node.port)).await;
    let b = start(node.url()).await;
    wait_ready(&a, Duration::from_secs(10)).await;
    wait_ready(&b, Duration::from_secs(10)).await;
    let (id, secret) = common::create_token(
        &b,
        common::workspace_token("CI", "ws_1", "workspace_viewer", "30d"),
    )
    .await;
    assert_eq!(nginx_auth(&b, &secret).await.status, StatusCode::OK);

    let disabled = a
        .admin()
        .post_empty(&format!("/admin/v1/tokens/{id}/disable"))
        .await;
    assert_eq!(
        disabled.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "the id key's write refused: {}",
        String::from_utf8_lossy(&disabled.body)
    );
    let refused = eventually("b to refuse the token", Duration::from_secs(3), || async {
        let r = nginx_auth(&b, &secret).await;
        (r.status == StatusCode::UNAUTHORIZED).then_some(r)
    })
    .await;
    assert_eq!(refused.header("x-hawzu-error"), Some("token_disabled"));
}

/// A change whose compare-and-set Redis ran but whose answer came after
/// `store.timeout` (the caller told 503) is still told to every gate, with
/// no retry: the write runs to its end (within ten store timeouts) even
/// when its caller stops waiting. Before, the timeout dropped the write
/// after the script and before its event, and gate `b` served the revoked
/// token from its cache for its whole `cache.ttl` (here an hour).
#[tokio::test]
async fn a_change_whose_answer_comes_after_its_timeout_is_still_heard_by_every_gate() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let node = RedisNode::start_with(common::free_port(), dir.path(), &["--save", ""]);
    // The compare-and-set is a script: its answer comes 1 s late.
    let relay = common::LateAnswers::start(node.port, b"EVALSHA", Duration::from_secs(1)).await;
    let prefix = unique_prefix("late-answer");
    let start = |url: String, extra: (&'static str, &'static str)| {
        let prefix = prefix.clone();
        async move {
            InProcessGate::start(&[
                ("store.backend", "redis"),
                ("store.redis.url", url.as_str()),
                ("store.redis.key_prefix", prefix.as_str()),
                extra,
            ])
            .await
        }
    };
    let a = start(relay.url(), ("store.timeout", "300ms")).await;
    let b = start(node.url(), ("cache.ttl", "1h")).await;
    wait_ready(&a, Duration::from_secs(10)).await;
    wait_ready(&b, Duration::from_secs(10)).await;
    // A first compare-and-set loads the script (a NOSCRIPT answer held
    // back would hold back a command Redis never ran).
    let token = || common::workspace_token("CI", "ws_1", "workspace_viewer", "30d");
    let (warm, _) = common::create_token(&a, token()).await;
    let warmed = a
        .admin()
        .post_empty(&format!("/admin/v1/tokens/{warm}/disable"))
        .await;
    assert_eq!(warmed.status, StatusCode::OK);
    let (id, secret) = common::create_token(&a, token()).await;
    assert_eq!(nginx_auth(&b, &secret).await.status, StatusCode::OK);

    relay.arm();
    let revoked = a.admin().delete(&format!("/admin/v1/tokens/{id}")).await;
    assert_eq!(
        revoked.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "the answer came late: {}",
        String::from_utf8_lossy(&revoked.body)
    );
    // Not sent again.
    let refused = eventually("b to refuse the token", Duration::from_secs(5), || async {
        let r = nginx_auth(&b, &secret).await;
        (r.status == StatusCode::UNAUTHORIZED).then_some(r)
    })
    .await;
    assert_eq!(refused.header("x-hawzu-error"), Some("token_revoked"));
}

/// A create whose answer came too late (the caller told 503, so nobody
/// holds the secret) leaves nothing behind: the record Redis stored is
/// withdrawn once its answer comes. Before, the token key and id key
/// stayed (without index entries: a token no list showed), usable only
/// with a secret nobody was given.
#[tokio::test]
async fn a_create_answered_as_failed_leaves_no_token_behind() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let node = RedisNode::start_with(common::free_port(), dir.path(), &["--save", ""]);
    // The record's own write (its JSON names the scope): its answer comes
    // 1 s late.
    let relay = common::LateAnswers::start(node.port, b"\"scope\"", Duration::from_secs(1)).await;
    let prefix = unique_prefix("late-create");
    let a = InProcessGate::start(&[
        ("store.backend", "redis"),
        ("store.redis.url", relay.url().as_str()),
        ("store.redis.key_prefix", prefix.as_str()),
        ("store.timeout", "300ms"),
    ])
    .await;
    wait_ready(&a, Duration::from_secs(10)).await;
    let keys = || node.cli(&["--raw", "KEYS", &format!("{prefix}*")]);
    relay.arm();
    let created = a
        .admin()
        .post(
            "/admin/v1/tokens",
            common::workspace_token("CI", "ws_1", "workspace_viewer", "30d"),
        )
        .await;
    assert_eq!(
        created.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "the answer came late: {}",
        String::from_utf8_lossy(&created.body)
    );
    assert!(keys().contains("token:"), "Redis stored it: {}", keys());
    eventually("the record withdrawn", Duration::from_secs(5), || async {
        let left = keys();
        (!left.contains("token:") && !left.contains("id:")).then_some(())
    })
    .await;
}

/// A change whose event cannot be published (here gate `a`'s Redis user
/// may use no channel at all) still has its `id:` key and index entries
/// written: the revoke's deadline reaches the id key, so it is dropped with
/// the record after `store.retention`. The caller is told (503) and tries
/// again.
#[tokio::test]
async fn a_change_whose_event_fails_still_writes_its_id_key() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let node = RedisNode::start_with(common::free_port(), dir.path(), &["--save", ""]);
    let prefix = unique_prefix("event-fails");
    let user = "gate_a";
    let keys = format!("~{prefix}*");
    assert_eq!(
        node.cli(&[
            "ACL",
            "SETUSER",
            user,
            "on",
            ">pw",
            &keys,
            "resetchannels",
            "+@all"
        ]),
        "OK"
    );
    let a = InProcessGate::start(&[
        ("store.backend", "redis"),
        (
            "store.redis.url",
            format!("redis://{user}:pw@127.0.0.1:{}", node.port).as_str(),
        ),
        ("store.redis.key_prefix", prefix.as_str()),
    ])
    .await;
    let b = InProcessGate::start(&[
        ("store.backend", "redis"),
        ("store.redis.url", node.url().as_str()),
        ("store.redis.key_prefix", prefix.as_str()),
    ])
    .await;
    let (id, _) = common::create_token(
        &b,
        common::workspace_token("CI", "ws_1", "workspace_viewer", "never"),
    )
    .await;
    let id_key = format!("{prefix}id:{id}");
    assert_eq!(node.cli(&["PTTL", &id_key]), "-1", "no deadline before");

    let revoked = a.admin().delete(&format!("/admin/v1/tokens/{id}")).await;
    assert_eq!(
        revoked.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "the event refused: {}",
        String::from_utf8_lossy(&revoked.body)
    );
    let ttl: i64 = node.cli(&["PTTL", &id_key]).parse().unwrap();
    assert!(ttl > 0, "the revoke's deadline on the id key: PTTL {ttl}");
}

/// A change another gate makes while this one cannot read the store is
/// enforced here at once. After a resubscription the listener waits for
/// the store to answer reads again (up to 30 s) before it drops the whole
/// cache; the events that arrived meanwhile used to wait with it, so a
/// token revoked during a partial outage (a Cluster shard down, the others
/// serving) stayed allowed here for that long. Reads are made to fail by
/// taking PING (the standalone store's read check) from the gate's Redis
/// user; everything else it does still works.
#[tokio::test]
async fn a_change_heard_while_the_store_cannot_be_read_is_enforced_at_once() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let node = RedisNode::start_with(common::free_port(), dir.path(), &["--save", ""]);
    let user = "gate_a";
    assert_eq!(
        node.cli(&["ACL", "SETUSER", user, "on", ">pw", "~*", "&*", "+@all"]),
        "OK"
    );
    let prefix = unique_prefix("change-while-unreadable");
    let url = format!("redis://{user}:pw@127.0.0.1:{}", node.port);
    let gate = InProcessGate::start(&[
        ("store.backend", "redis"),
        ("store.redis.url", url.as_str()),
        ("store.redis.key_prefix", prefix.as_str()),
    ])
    .await;
    wait_ready(&gate, Duration::from_secs(10)).await;
    let store = TestStore::new(common::standalone(&node.url()), &prefix);
    let tokens = store.seed(1).await;
    let (secret, id) = &tokens[0];
    time_until_allowed(gate.addrs.auth, secret, Duration::from_secs(10)).await;

    // Reads checks fail from now on; the subscription is cut, and comes
    // back at once (SUBSCRIBE and the probe's PUBLISH are allowed).
    let refused = pings_refused(&node);
    assert_eq!(node.cli(&["ACL", "SETUSER", user, "-ping"]), "OK");
    assert_eq!(
        node.cli(&["CLIENT", "KILL", "TYPE", "pubsub", "USER", user]),
        "1"
    );
    // (Polled from the test's runtime, which the gate shares: never block it.)
    eventually(
        "the listener waiting for the store to answer reads",
        Duration::from_secs(10),
        || async { (pings_refused(&node) >= refused + 2).then_some(()) },
    )
    .await;

    store.disable(id).await;
    let published = Instant::now();
    let enforced = eventually("the change enforced", Duration::from_secs(5), || async {
        (nginx_auth(&gate, secret).await.status == StatusCode::UNAUTHORIZED).then(Instant::now)
    })
    .await;
    let took = enforced - published;
    println!("disabled while the store could not be read: refused after {took:?}");
    assert!(
        took < Duration::from_secs(1),
        "the change waited {took:?} for the store to answer reads"
    );
    // Still waiting (the cache was not dropped): the event did it.
    let still = pings_refused(&node);
    eventually(
        "the listener still waiting",
        Duration::from_secs(5),
        || async { (pings_refused(&node) > still).then_some(()) },
    )
    .await;

    assert_eq!(node.cli(&["ACL", "SETUSER", user, "+ping"]), "OK");
    wait_ready(&gate, Duration::from_secs(10)).await;
    assert_eq!(
        nginx_auth(&gate, secret).await.status,
        StatusCode::UNAUTHORIZED
    );
}
