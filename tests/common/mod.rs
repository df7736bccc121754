//! Test harness: real servers on free loopback ports, stopped on drop.
//!
//! - `redis_url()` is the shared Redis (`HAWZU_TEST_REDIS_URL`, default
//!   `redis://127.0.0.1:6379`); every test takes a unique key prefix.
//! - `RedisServer` starts a private `redis-server` for tests that stop it.
//! - `InProcessGate` runs the gate inside the test; `GateProcess` runs the
//!   real binary, as a user would.
//! - `eventually` polls with a deadline; no test sleeps a fixed time.
//!
//! This file holds only the small shared helpers (prefixes, polling)
//! and re-exports the modules below, so a test keeps `use common::*`:
//!
//! - `ports`: loopback ports outside the ephemeral range, one per call.
//! - `process`: stopping children (signal, grace, SIGKILL of descendants).
//! - `gate`: `InProcessGate`, `GateProcess`, `CliRun`.
//! - `h2raw`: a raw HTTP/2 client for clients that break the rules.
//! - `http`: the `Http` client, the one request-with-a-token builder, `curl`.
//! - `tokens`: token create bodies and creating tokens through the admin API.
//! - `store`: the token store reached directly (`TestStore`).
//! - `redis`, `topologies`: Redis servers, nodes, Cluster and Sentinel.
//! - `upstream`, `nginx`, `certs`: the other servers and files a test needs.
//! - `proxies`: Envoy, Traefik and Caddy running the files `deploy/` ships,
//!   and what a client smuggles through them.
//! - `tools`: the programs a test runs, or one line naming what to install.
//! - `load`, `changes`: steady load judged by a log of token changes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic
#![allow(dead_code)] // each test crate uses a part of the harness

mod certs;
mod changes;
mod gate;
mod h2raw;
mod http;
mod load;
mod nginx;
mod ports;
mod process;
mod proxies;
mod redis;
mod store;
mod tokens;
mod tools;
mod topologies;
mod upstream;

// Each test crate uses a part of the harness: unused re-exports are expected.
#[allow(unused_imports)]
pub use self::{
    certs::*, changes::*, gate::*, h2raw::*, http::*, load::*, nginx::*, ports::*, process::*,
    proxies::*, redis::*, store::*, tokens::*, tools::*, topologies::*, upstream::*,
};

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The shared Redis every Redis test uses, with its own key prefix. The
/// default one must answer: a test stops with one line saying how to start
/// it when nothing listens on 127.0.0.1:6379.
pub fn redis_url() -> String {
    if let Ok(url) = std::env::var("HAWZU_TEST_REDIS_URL") {
        return url;
    }
    static LISTENING: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let listening = *LISTENING.get_or_init(|| port_open(SocketAddr::from(([127, 0, 0, 1], 6379))));
    assert!(
        listening,
        "no Redis on 127.0.0.1:6379: start one (redis-server --daemonize yes --save '' --appendonly no; .ci/run does) or set HAWZU_TEST_REDIS_URL"
    );
    "redis://127.0.0.1:6379".into()
}

/// A key prefix no other test (or run) uses.
pub fn unique_prefix(test: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "hawzu-test:{test}:{}:{nanos}:{}:",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Polls `check` until it returns `Some`, or panics after `deadline`.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Blocking variant of [`eventually`], for process start-up.
pub fn wait_until(what: &str, deadline: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn port_open(addr: SocketAddr) -> bool {
    std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok()
}

/// Sends the log `filter` lets through to the test's output until the
/// first panic in this binary, then nothing more: the tasks a failed test
/// leaves behind (the cluster client reconnecting to nodes being stopped)
/// would otherwise log past the panic message and push it out of what a CI
/// log keeps of the end of the output (the CI failure of 2026-12-07 showed
/// neither the message nor the row: only the client's reconnections).
pub fn log_until_a_panic(filter: &str) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use tracing_subscriber::{EnvFilter, Layer, filter::filter_fn, layer::SubscriberExt};
    static PANICKED: AtomicBool = AtomicBool::new(false);
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICKED.store(true, Ordering::SeqCst);
        previous(info);
        // Once more below a backtrace (RUST_BACKTRACE), for the same reason.
        eprintln!("{info}");
    }));
    let layer = tracing_subscriber::fmt::layer()
        .with_test_writer()
        .with_filter(EnvFilter::new(filter))
        .with_filter(filter_fn(|_| !PANICKED.load(Ordering::SeqCst)));
    // `try_init` also bridges the `log` crate, which the `redis` crate
    // logs through (a plain `set_global_default` showed none of it).
    let _ = tracing_subscriber::util::SubscriberInitExt::try_init(
        tracing_subscriber::registry().with(layer),
    );
}
