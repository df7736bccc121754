//! The long chaos run: every Redis fault, one after another, under steady
//! load, on a standalone server, a Sentinel set-up and a Redis Cluster;
//! prints the counts table that docs/reliability.md quotes.
//!
//! One command (not part of CI; about two minutes):
//!
//! ```text
//! cargo test --test chaos -- --ignored --nocapture --test-threads=1
//! ```
//!
//! `CHAOS_FAULT_SECS` (default 5) sets how long each fault lasts. Faults are
//! held for that long on purpose (a scenario, not a wait for something).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

#[path = "../common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::StatusCode;

use common::{
    InProcessGate, Load, LoadCounts, RedisCluster, RedisNode, RedisSentinel, TokenMix,
    create_tokens, disable_in_redis_silently, eventually, nginx_auth, redis_cli,
    time_until_allowed, unique_prefix,
};

fn fault_secs() -> Duration {
    Duration::from_secs(
        std::env::var("CHAOS_FAULT_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(5),
    )
}

/// One row of the table.
struct Row {
    setup: &'static str,
    fault: String,
    counts: LoadCounts,
    /// Redis back (or fail-over started) → uncached token allowed, ready.
    recovery: Duration,
    /// A change the gate never heard of was seen after recovery (cache
    /// dropped), when the fault dropped connections.
    flushed: Option<bool>,
    /// After a fail-over: a disable through one gate refused by the other.
    invalidation: Option<Duration>,
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "| set-up | fault | requests | wrong allows | wrong denies | 5xx (503) | 503 for cached tokens | hangs | max 503 latency | recovery | cache dropped | invalidation after |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|");
    for r in rows {
        let c = &r.counts;
        println!(
            "| {} | {} | {} | {} | {} | {} ({}) | {} | {} | {} ms | {} ms | {} | {} |",
            r.setup,
            r.fault,
            c.requests,
            c.wrong_allows,
            c.wrong_denies,
            c.fivexx(),
            c.unavailable,
            c.cached_unavailable,
            c.hangs,
            c.max_503.as_millis(),
            r.recovery.as_millis(),
            match r.flushed {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "n/a",
            },
            r.invalidation
                .map_or_else(|| "n/a".to_owned(), |d| format!("{} ms", d.as_millis())),
        );
    }
    let total_wrong: u64 = rows.iter().map(|r| r.counts.wrong_allows).sum();
    let total: u64 = rows.iter().map(|r| r.counts.requests).sum();
    println!("\ntotal requests {total}, wrong allows {total_wrong}");
}

async fn wait_ready(gate: &InProcessGate, deadline: Duration) {
    eventually("/readyz to be 200", deadline, || async {
        (gate.ops().get("/readyz").await.status == StatusCode::OK).then_some(())
    })
    .await;
}

/// Tokens on `admin_gate`, cached (and revoked ones seen) by `load_gate`.
async fn token_mix(
    admin_gate: &InProcessGate,
    load_gate: &InProcessGate,
    n: usize,
) -> (TokenMix, Vec<String>) {
    let tokens = create_tokens(&admin_gate.admin(), n, "1w").await;
    let secrets: Vec<String> = tokens.iter().map(|(s, _)| s.clone()).collect();
    let q = n / 5;
    let mix = TokenMix {
        cached: secrets[..q * 2].to_vec(),
        fresh: secrets[q * 2..q * 3].to_vec(),
        revoked: secrets[q * 3..q * 3 + q / 2].to_vec(),
    };
    for t in mix.cached.iter().chain(&mix.revoked) {
        assert_eq!(nginx_auth(load_gate, t).await.status, StatusCode::OK);
    }
    for (_, id) in &tokens[q * 3..q * 3 + q / 2] {
        admin_gate
            .admin()
            .delete(&format!("/admin/v1/tokens/{id}"))
            .await;
    }
    for t in &mix.revoked {
        eventually("the revoke to be seen", Duration::from_secs(5), || async {
            (nginx_auth(load_gate, t).await.status == StatusCode::UNAUTHORIZED).then_some(())
        })
        .await;
    }
    (mix, secrets[q * 3 + q / 2..].to_vec())
}

/// Disables a cached token's record behind the gate's back (no event).
async fn lost_change(gate: &InProcessGate, url: &str, prefix: &str, token: &str) {
    assert_eq!(nginx_auth(gate, token).await.status, StatusCode::OK);
    disable_in_redis_silently(url, prefix, token).await;
}

/// Waits until the gate serves an uncached token and is ready again; then
/// caches `cached` again (a resubscription dropped the cache, and the next
/// fault's "cached tokens" must really be cached).
async fn recovered(
    gate: &InProcessGate,
    auth: SocketAddr,
    probe: &str,
    cached: &[String],
    since: Instant,
) -> Duration {
    time_until_allowed(auth, probe, Duration::from_secs(30)).await;
    wait_ready(gate, Duration::from_secs(30)).await;
    let took = since.elapsed();
    warm(auth, cached).await;
    took
}

/// Asks about every token once, so that they are cached.
async fn warm(auth: SocketAddr, cached: &[String]) {
    for t in cached {
        time_until_allowed(auth, t, Duration::from_secs(30)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long chaos run; see docs/reliability.md"]
async fn chaos_every_redis_fault_under_steady_load() {
    let hold = fault_secs();
    let mut rows = Vec::new();
    standalone(hold, &mut rows).await;
    sentinel(hold, &mut rows).await;
    cluster(&mut rows).await;
    print_table(&rows);
    assert!(
        rows.iter().all(|r| r.counts.wrong_allows == 0),
        "a wrong allow"
    );
    assert!(
        rows.iter().all(|r| r.flushed != Some(false)),
        "a cache not dropped"
    );
}

async fn standalone(hold: Duration, rows: &mut Vec<Row>) {
    let dir = tempfile::tempdir().unwrap();
    let mut node = RedisNode::persistent(dir.path());
    let prefix = unique_prefix("chaos");
    let url = node.url();
    let gate = InProcessGate::start(&[
        ("store.backend", "redis"),
        ("store.redis.url", &url),
        ("store.redis.key_prefix", &prefix),
        // One client sends all the load, unknown tokens included: the
        // failed-auth limit would refuse it (tests/failed_auth.rs).
        ("failed_auth.limit", "0"),
    ])
    .await;
    wait_ready(&gate, Duration::from_secs(10)).await;
    let (mix, mut spare) = token_mix(&gate, &gate, 200).await;
    let auth = gate.addrs.auth;
    let cached = mix.cached.clone();
    let load = Load::start(auth, mix, 8, Duration::from_millis(2));
    load.run_for(2000, Duration::from_secs(30)).await;

    // Each fault: inject, hold, heal, measure recovery, let it settle.
    for fault in [
        "kill, down, restart",
        "DEBUG SLEEP",
        "CLIENT PAUSE ALL",
        "CLIENT KILL ×5",
    ] {
        warm(auth, &cached).await;
        let lost = spare.pop().unwrap();
        let drops = matches!(fault, "kill, down, restart" | "CLIENT KILL ×5");
        if drops {
            lost_change(&gate, &url, &prefix, &lost).await;
        }
        load.reset_max();
        let before = load.counts();
        let back = match fault {
            "kill, down, restart" => {
                node.kill();
                tokio::time::sleep(hold).await;
                node.restart();
                Instant::now()
            }
            "DEBUG SLEEP" => {
                let secs = format!("{}", hold.as_secs_f64());
                let out = std::process::Command::new("redis-cli")
                    .args(["-p", &node.port.to_string(), "DEBUG", "SLEEP", &secs])
                    .output()
                    .unwrap();
                assert!(out.status.success());
                Instant::now()
            }
            "CLIENT PAUSE ALL" => {
                // Ends by itself (CLIENT UNPAUSE would be paused too).
                let ms = hold.as_millis().to_string();
                assert_eq!(node.cli(&["CLIENT", "PAUSE", &ms, "ALL"]), "OK");
                common::wait_redis_answers(&url, hold * 3).await;
                Instant::now()
            }
            _ => {
                for _ in 0..5 {
                    node.cli(&["CLIENT", "KILL", "TYPE", "normal"]);
                    node.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Instant::now()
            }
        };
        let recovery = recovered(&gate, auth, &spare.pop().unwrap(), &cached, back).await;
        load.run_for(2000, Duration::from_secs(30)).await;
        let flushed = if drops {
            Some(nginx_auth(&gate, &lost).await.header("x-hawzu-error") == Some("token_disabled"))
        } else {
            None
        };
        rows.push(Row {
            setup: "standalone",
            fault: format!("{fault} ({} s)", hold.as_secs()),
            counts: load.counts().since(&before),
            recovery,
            flushed,
            invalidation: None,
        });
    }
    load.stop().await;
}

async fn sentinel(hold: Duration, rows: &mut Vec<Row>) {
    let mut set = RedisSentinel::start();
    let prefix = unique_prefix("chaos-sentinel");
    let sentinels = set.sentinel_urls().join(",");
    let settings = [
        ("store.backend", "redis"),
        ("store.redis.key_prefix", prefix.as_str()),
        ("store.redis.mode", "sentinel"),
        ("cache.ttl", "5s"),
        ("failed_auth.limit", "0"),
        ("store.redis.nodes", sentinels.as_str()),
        ("store.redis.sentinel.master_name", set.name.as_str()),
    ];
    let a = InProcessGate::start(&settings).await;
    let b = InProcessGate::start(&settings).await;
    wait_ready(&a, Duration::from_secs(10)).await;
    wait_ready(&b, Duration::from_secs(10)).await;
    let (mix, mut spare) = token_mix(&a, &b, 100).await;
    let cached = mix.cached.clone();
    let load = Load::start(b.addrs.auth, mix, 8, Duration::from_millis(2));
    load.run_for(2000, Duration::from_secs(30)).await;

    // A planned fail-over, then the master killed (the sentinels notice
    // after down-after-milliseconds = 1 s and elect a new one).
    for fault in ["SENTINEL FAILOVER", "master killed"] {
        wait_ready(&b, Duration::from_secs(30)).await;
        warm(b.addrs.auth, &cached).await;
        load.reset_max();
        let before = load.counts();
        let old = set.master_port().unwrap();
        let start = Instant::now();
        if fault == "SENTINEL FAILOVER" {
            assert_eq!(
                set.sentinels[0].cli(&["SENTINEL", "FAILOVER", &set.name]),
                "OK"
            );
        } else if set.master.port == old {
            set.master.kill();
        } else {
            set.replica.kill();
        }
        eventually("a new master", Duration::from_secs(30), || {
            let moved = set.master_port().is_some_and(|p| p != old);
            async move { moved.then_some(()) }
        })
        .await;
        let recovery = recovered(&b, b.addrs.auth, &spare.pop().unwrap(), &cached, start).await;
        // Writes through the other gate, and their invalidations, work.
        let (secret, id) = create_tokens(&a.admin(), 1, "1w").await.remove(0);
        assert_eq!(nginx_auth(&b, &secret).await.status, StatusCode::OK);
        a.admin()
            .post_empty(&format!("/admin/v1/tokens/{id}/disable"))
            .await;
        let disabled = Instant::now();
        let what = format!("b to see the disable after {fault}");
        // Normally milliseconds; a lost event is caught by the listener's
        // probe or, at worst, cache.ttl (5 s here).
        eventually(&what, Duration::from_secs(8), || async {
            (nginx_auth(&b, &secret).await.status == StatusCode::UNAUTHORIZED).then_some(())
        })
        .await;
        let invalidation = Some(disabled.elapsed());
        load.run_for(2000, Duration::from_secs(30)).await;
        rows.push(Row {
            setup: "sentinel",
            fault: fault.to_owned(),
            counts: load.counts().since(&before),
            recovery,
            flushed: None,
            invalidation,
        });
        if fault == "SENTINEL FAILOVER" {
            set.wait_ready(Duration::from_secs(30));
        }
    }
    let _ = hold;
    load.stop().await;
}

async fn cluster(rows: &mut Vec<Row>) {
    let mut cluster = RedisCluster::start();
    let prefix = unique_prefix("chaos-cluster");
    let nodes = cluster.urls().join(",");
    let settings = [
        ("store.backend", "redis"),
        ("store.redis.key_prefix", prefix.as_str()),
        ("store.redis.mode", "cluster"),
        ("cache.ttl", "5s"),
        ("failed_auth.limit", "0"),
        ("store.redis.nodes", nodes.as_str()),
    ];
    let a = InProcessGate::start(&settings).await;
    let b = InProcessGate::start(&settings).await;
    wait_ready(&a, Duration::from_secs(10)).await;
    wait_ready(&b, Duration::from_secs(10)).await;
    let (mix, mut spare) = token_mix(&a, &b, 100).await;
    let cached = mix.cached.clone();
    let load = Load::start(b.addrs.auth, mix, 8, Duration::from_millis(2));
    load.run_for(2000, Duration::from_secs(30)).await;
    let channel = format!("{prefix}events");

    for fault in [
        "CLUSTER FAILOVER (events shard)",
        "events-shard master killed",
    ] {
        wait_ready(&b, Duration::from_secs(30)).await;
        warm(b.addrs.auth, &cached).await;
        load.reset_max();
        let before = load.counts();
        let master = cluster.master_for(&channel);
        let replica = cluster.replica_of(master);
        let start = Instant::now();
        if fault.starts_with("CLUSTER FAILOVER") {
            assert_eq!(redis_cli(replica, &["CLUSTER", "FAILOVER"]), "OK");
        } else {
            cluster.node(master).kill();
        }
        eventually("the replica to take over", Duration::from_secs(30), || {
            let moved = cluster.try_master_for(&channel) == Some(replica);
            async move { moved.then_some(()) }
        })
        .await;
        let recovery = recovered(&b, b.addrs.auth, &spare.pop().unwrap(), &cached, start).await;
        let (secret, id) = create_tokens(&a.admin(), 1, "1w").await.remove(0);
        assert_eq!(nginx_auth(&b, &secret).await.status, StatusCode::OK);
        a.admin()
            .post_empty(&format!("/admin/v1/tokens/{id}/disable"))
            .await;
        let disabled = Instant::now();
        let what = format!("b to see the disable after {fault}");
        // Normally milliseconds; a lost event is caught by the listener's
        // probe or, at worst, cache.ttl (5 s here).
        eventually(&what, Duration::from_secs(8), || async {
            (nginx_auth(&b, &secret).await.status == StatusCode::UNAUTHORIZED).then_some(())
        })
        .await;
        let invalidation = Some(disabled.elapsed());
        load.run_for(2000, Duration::from_secs(30)).await;
        rows.push(Row {
            setup: "cluster",
            fault: fault.to_owned(),
            counts: load.counts().since(&before),
            recovery,
            flushed: None,
            invalidation,
        });
    }
    load.stop().await;
}
