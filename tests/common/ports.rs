//! Loopback ports for servers a test starts (the gate, Redis, nginx…).
//!
//! A port taken with `bind(":0")` and released comes from the kernel's
//! ephemeral range, the same range every outgoing connection and every other
//! `bind(":0")` draws from: between the pick and the server's own bind, the
//! kernel may hand it to someone else ("Address already in use", seen in CI).
//! So ports here come from below the ephemeral range (read from
//! `/proc/sys/net/ipv4/ip_local_port_range`), each handed out once per test
//! process (an atomic cursor), starting at an offset drawn from the process
//! id so that two test processes rarely walk the same ports; a port is
//! handed out only if it can be bound at that moment.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

/// The lowest port handed out: above the registered ports most services use.
const LOW: u32 = 10_000;

/// The first ephemeral port (the kernel's `ip_local_port_range` low end).
fn ephemeral_low() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .filter(|&low: &u32| low > LOW + 1_000)
        .unwrap_or(32_768)
}

/// A loopback port no other call in this process got, outside the ephemeral
/// range, free when handed out.
pub fn free_port() -> u16 {
    static CURSOR: AtomicU32 = AtomicU32::new(0);
    let span = ephemeral_low() - LOW;
    let start = std::process::id().wrapping_mul(7_919) % span;
    for _ in 0..span {
        let step = CURSOR.fetch_add(1, Ordering::Relaxed);
        let port = LOW + (start + step) % span;
        let port = u16::try_from(port).expect("ports are below 65536");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!(
        "no free loopback port below the ephemeral range ({LOW}..{})",
        LOW + span
    )
}
