//! Who a request comes from, and whether that client may try again.
//!
//! - [`TrustedProxies`]: the client is the connection's peer, unless the
//!   peer is a trusted proxy (`trusted_proxies`); then it is the right-most
//!   `X-Forwarded-For` entry that is not itself a trusted proxy. Nobody
//!   else's `X-Forwarded-For` is read.
//! - [`FailedAuth`]: a token bucket of failed authentications per client
//!   (`failed_auth.limit` per `failed_auth.window`, bursts up to the limit).
//!   A client with an empty bucket is refused with `rate_limited` before
//!   its token is looked up, unless memory already holds its token as valid;
//!   so guessing costs the store nothing and a shared address (NAT) keeps
//!   working for the tokens it uses. Buckets live in a bounded cache
//!   (`failed_auth.max_clients`, least recently used dropped first).

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue};

use crate::config::{FailedAuthSettings, IpNet};
use crate::refusal::DenyCode;

/// The proxies whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn new(nets: &[IpNet]) -> Self {
        Self(nets.to_vec())
    }

    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|n| n.contains(ip))
    }

    /// The client of a request that came from `peer` with `headers`.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.trusts(peer) {
            return peer;
        }
        // Right to left over every X-Forwarded-For entry (headers in order):
        // the first address a trusted proxy did not add for another proxy.
        let entries = headers
            .get_all(http::header::HeaderName::from_static("x-forwarded-for"))
            .iter()
            .rev()
            .flat_map(|v| v.as_bytes().rsplit(|&b| b == b','));
        let mut client = peer;
        for entry in entries {
            let Some(ip) = std::str::from_utf8(entry)
                .ok()
                .and_then(|s| s.trim().parse::<IpAddr>().ok())
            else {
                // A trusted proxy forwarded something that is not an
                // address: stop at the last hop known.
                return client;
            };
            client = ip.to_canonical();
            if !self.trusts(client) {
                return client;
            }
        }
        client
    }
}

/// The codes that count as a failed authentication: a token was sent and
/// it is not a usable one.
pub fn is_failed_auth(code: DenyCode) -> bool {
    matches!(
        code,
        DenyCode::MalformedToken
            | DenyCode::UnknownToken
            | DenyCode::TokenRevoked
            | DenyCode::TokenDisabled
            | DenyCode::TokenExpired
    )
}

/// Clients are counted by address; IPv6 clients by their /64, which one
/// host usually holds whole.
fn client_key(ip: IpAddr) -> u128 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6) & !u128::from(u64::MAX),
    }
}

#[derive(Debug)]
struct Bucket {
    /// Failures the client may still make.
    tokens: f64,
    at: Instant,
}

/// Failed authentications per client, bounded in memory.
pub struct FailedAuth {
    /// `None` when `failed_auth.limit` is 0.
    clients: Option<moka::sync::Cache<u128, Arc<Mutex<Bucket>>>>,
    limit: f64,
    /// Failures forgiven per second.
    refill: f64,
    /// Milliseconds since `epoch` until which some client is refused: while
    /// it is past, nobody is, and a request costs one atomic load.
    refused_until_ms: AtomicU64,
    epoch: Instant,
    retry_after: HeaderValue,
}

impl std::fmt::Debug for FailedAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FailedAuth")
            .field("limit", &self.limit)
            .field("refill", &self.refill)
            .finish_non_exhaustive()
    }
}

impl FailedAuth {
    pub fn new(s: &FailedAuthSettings) -> Self {
        let limit = f64::from(s.limit);
        let window = s.window.0.as_secs_f64().max(0.001);
        let refill = limit / window;
        // A refused client may fail once more after one refill interval.
        let retry = if s.limit == 0 {
            1
        } else {
            (window / limit).ceil().max(1.0) as u64
        };
        let clients = (s.limit > 0).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(s.max_clients)
                // A bucket left alone for a window is full again: forget it.
                .time_to_idle(s.window.0)
                .build()
        });
        Self {
            clients,
            limit,
            refill,
            refused_until_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            retry_after: HeaderValue::from(retry),
        }
    }

    /// The `Retry-After` of a `rate_limited` answer: one refill interval.
    pub fn retry_after(&self) -> &HeaderValue {
        &self.retry_after
    }

    fn now_ms(&self, now: Instant) -> u64 {
        u64::try_from(now.duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether any client may be refused now: when not, nobody is, and
    /// the caller need not even work out who the client is.
    pub fn anyone_refused(&self) -> bool {
        self.clients.is_some()
            && self.now_ms(Instant::now()) < self.refused_until_ms.load(Ordering::Relaxed)
    }

    /// Whether `client` has used up its failures.
    pub fn is_refused(&self, client: IpAddr) -> bool {
        let Some(clients) = &self.clients else {
            return false;
        };
        if !self.anyone_refused() {
            return false;
        }
        let now = Instant::now();
        clients.get(&client_key(client)).is_some_and(|b| {
            let mut b = b.lock().unwrap_or_else(|e| e.into_inner());
            self.refilled(&mut b, now);
            b.tokens < 1.0
        })
    }

    /// Counts one failed authentication of `client`.
    pub fn failed(&self, client: IpAddr) {
        let Some(clients) = &self.clients else {
            return;
        };
        let now = Instant::now();
        let bucket = clients.get_with(client_key(client), || {
            Arc::new(Mutex::new(Bucket {
                tokens: self.limit,
                at: now,
            }))
        });
        let mut b = bucket.lock().unwrap_or_else(|e| e.into_inner());
        self.refilled(&mut b, now);
        b.tokens = (b.tokens - 1.0).max(0.0);
        if b.tokens < 1.0 {
            let wait = Duration::from_secs_f64((1.0 - b.tokens) / self.refill);
            self.refused_until_ms
                .fetch_max(self.now_ms(now + wait) + 1, Ordering::Relaxed);
        }
    }

    fn refilled(&self, b: &mut Bucket, now: Instant) {
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.refill).min(self.limit);
        b.at = now;
    }

    /// Client addresses tracked now (approximate).
    pub fn tracked(&self) -> u64 {
        self.clients.as_ref().map_or(0, |c| {
            c.run_pending_tasks();
            c.entry_count()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HumanDuration;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(
                "x-forwarded-for",
                HeaderValue::from_str(v).unwrap_or(HeaderValue::from_static("")),
            );
        }
        h
    }

    fn proxies(nets: &[&str]) -> TrustedProxies {
        TrustedProxies::new(
            &nets
                .iter()
                .filter_map(|n| n.parse().ok())
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let t = proxies(&["10.0.0.0/8"]);
        assert_eq!(
            t.client(ip("203.0.113.9"), &xff(&["6.6.6.6"])),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn a_trusted_peer_names_the_right_most_untrusted_hop() {
        let t = proxies(&["10.0.0.0/8", "127.0.0.1"]);
        let h = xff(&["6.6.6.6, 198.51.100.7", "10.1.2.3"]);
        assert_eq!(t.client(ip("127.0.0.1"), &h), ip("198.51.100.7"));
        // No header: the proxy itself.
        assert_eq!(t.client(ip("10.0.0.1"), &HeaderMap::new()), ip("10.0.0.1"));
        // Only proxies: the left-most of them.
        assert_eq!(
            t.client(ip("10.0.0.1"), &xff(&["10.9.9.9"])),
            ip("10.9.9.9")
        );
        // Garbage where an address should be: the last hop known.
        assert_eq!(
            t.client(ip("10.0.0.1"), &xff(&["6.6.6.6, nonsense"])),
            ip("10.0.0.1")
        );
        // IPv4-mapped IPv6 peers are their IPv4 address.
        assert_eq!(
            t.client(ip("::ffff:10.0.0.1"), &xff(&["192.0.2.1"])),
            ip("192.0.2.1")
        );
    }

    fn limiter(limit: u32, window: Duration) -> FailedAuth {
        FailedAuth::new(&FailedAuthSettings {
            limit,
            window: HumanDuration(window),
            max_clients: 1000,
        })
    }

    #[test]
    fn a_client_is_refused_after_its_limit_and_others_are_not() {
        let f = limiter(3, Duration::from_secs(60));
        let (a, b) = (ip("192.0.2.1"), ip("192.0.2.2"));
        for _ in 0..2 {
            f.failed(a);
            assert!(!f.is_refused(a));
        }
        f.failed(a);
        assert!(f.is_refused(a));
        assert!(!f.is_refused(b));
        assert_eq!(f.retry_after(), "20");
    }

    #[test]
    fn ipv6_clients_share_their_64() {
        let f = limiter(1, Duration::from_secs(60));
        f.failed(ip("2001:db8:1:2::1"));
        assert!(f.is_refused(ip("2001:db8:1:2::ffff")));
        assert!(!f.is_refused(ip("2001:db8:1:3::1")));
    }

    #[test]
    fn failures_are_forgiven_over_the_window() {
        let f = limiter(2, Duration::from_secs(1));
        let a = ip("192.0.2.1");
        f.failed(a);
        f.failed(a);
        assert!(f.is_refused(a));
        // One failure is forgiven every 500 ms.
        let deadline = Instant::now() + Duration::from_secs(5);
        while f.is_refused(a) {
            assert!(Instant::now() < deadline, "never forgiven");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn memory_is_bounded_by_max_clients() {
        let f = FailedAuth::new(&FailedAuthSettings {
            limit: 5,
            window: HumanDuration(Duration::from_secs(60)),
            max_clients: 100,
        });
        for i in 0..5000u32 {
            f.failed(IpAddr::from(i.to_be_bytes()));
        }
        assert!(f.tracked() <= 100, "{} tracked", f.tracked());
    }

    #[test]
    fn limit_zero_turns_it_off() {
        let f = limiter(0, Duration::from_secs(60));
        let a = ip("192.0.2.1");
        for _ in 0..100 {
            f.failed(a);
        }
        assert!(!f.is_refused(a));
    }
}
