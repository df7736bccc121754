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
//! - [`Buckets`]: the token buckets per key it counts with (the admin API
//!   limits each workspace's changes with them too).

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue};

use crate::config::{FailedAuthSettings, IpNet};
use crate::decide::Client;
use crate::refusal::DenyCode;

/// The proxies whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
    /// Whether [`TrustedProxies::untrusted_forwarder`] and
    /// [`TrustedProxies::untrusted_checker`] have spoken, each its own
    /// (a client's forged `X-Forwarded-For` must not use up the other).
    told: Arc<[AtomicBool; 2]>,
}

impl TrustedProxies {
    pub fn new(nets: &[IpNet]) -> Self {
        Self {
            nets: nets.to_vec(),
            told: Arc::default(),
        }
    }

    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.nets.iter().any(|n| n.contains(ip))
    }

    /// Says once, naming `peer`, that a peer outside `trusted_proxies` sent
    /// forwarding headers. Most often it is the operator's own ingress or
    /// load balancer left off the list: then every client behind it counts
    /// as that one address (one failed-auth bucket for all of them; at the
    /// reverse proxy `allow_from` judges the proxy, and at the forward-auth
    /// doors, where the proxy is never the client, no client is named: a
    /// token limited by address is refused). The first hour's pitfall, said
    /// where it happens; a client forging the headers just gets the line
    /// once.
    pub fn untrusted_forwarder(&self, peer: IpAddr) {
        if self.tell_once(0) {
            tracing::warn!(
                %peer,
                "{peer} is not in trusted_proxies but sent X-Forwarded-For (or another forwarding header): \
                 its requests count as its own address (failed_auth buckets, the proxy's X-Forwarded-For; \
                 allow_from judges it at the proxy listener and refuses tokens limited by address at \
                 /auth/* and /envoy). If it is your ingress, load balancer or proxy, add it or its \
                 network to trusted_proxies; said once"
            );
        }
    }

    /// The same for a gRPC ext_authz caller (Envoy, Envoy Gateway, an
    /// Istio sidecar) outside `trusted_proxies` whose check names a client
    /// other than itself: every client behind it counts as it, and none is
    /// named (a token limited by address is refused).
    pub fn untrusted_checker(&self, peer: IpAddr) {
        if self.tell_once(1) {
            tracing::warn!(
                %peer,
                "{peer} is not in trusted_proxies but reported a client address in its ext_authz check: \
                 every client behind it counts as {peer} (one failed_auth bucket for all of them) and \
                 tokens limited by allow_from are refused. If it is your Envoy (Envoy Gateway's proxies, the API \
                 pods' Istio sidecars), add its address or network to trusted_proxies and let only it \
                 reach listen.grpc; said once"
            );
        }
    }

    /// True the first time only, for warning `which`.
    fn tell_once(&self, which: usize) -> bool {
        let told = &self.told[which];
        !(told.load(Ordering::Relaxed) || told.swap(true, Ordering::Relaxed))
    }

    /// The client of a request that came from `peer` with `headers`, or —
    /// when a trusted proxy forwarded something that is not an address —
    /// the last hop known (that proxy): a key for what is counted per
    /// address (failed-auth buckets), never a client to judge `allow_from`
    /// by (see [`TrustedProxies::request_client`]).
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        self.request_client(peer, headers).hop
    }

    /// The client of a request as the decision takes it: named, or — when
    /// a trusted proxy forwarded something that is not an address
    /// (`unknown`, garbage) — not, and then keyed by the last hop known.
    /// The proxy is not the client then: a token limited to the proxy's
    /// network would pass for everyone behind it.
    pub fn request_client(&self, peer: IpAddr, headers: &HeaderMap) -> Client {
        let peer = peer.to_canonical();
        if !self.trusts(peer) {
            if headers.contains_key(X_FORWARDED_FOR) {
                self.untrusted_forwarder(peer);
            }
            return Client::is(peer);
        }
        // Right to left over every X-Forwarded-For entry (headers in order):
        // the first address a trusted proxy did not add for another proxy.
        let entries = headers
            .get_all(X_FORWARDED_FOR)
            .iter()
            .rev()
            .flat_map(|v| v.as_bytes().rsplit(|&b| b == b','));
        let mut client = peer;
        for entry in entries {
            let Some(ip) = std::str::from_utf8(entry).ok().and_then(forwarded_address) else {
                // A trusted proxy forwarded something that is not an
                // address: the client is not known.
                return Client {
                    named: None,
                    hop: client,
                };
            };
            client = ip.to_canonical();
            if !self.trusts(client) {
                return Client::is(client);
            }
        }
        Client::is(client)
    }
}

/// The address in one `X-Forwarded-For` entry: an address, or one with a
/// port as some proxies write it (`192.0.2.7:51000`, `[2001:db8::1]:443`,
/// `[2001:db8::1]`).
fn forwarded_address(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip);
    }
    let port = |p: &str| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit());
    if let Some(rest) = entry.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        let ok = after.is_empty() || after.strip_prefix(':').is_some_and(port);
        return ok.then(|| v6.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6))?;
    }
    let (v4, p) = entry.split_once(':')?;
    if !port(p) {
        return None;
    }
    v4.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

const X_FORWARDED_FOR: http::header::HeaderName =
    http::header::HeaderName::from_static("x-forwarded-for");

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
pub(crate) fn client_key(ip: IpAddr) -> u128 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6) & !u128::from(u64::MAX),
    }
}

#[derive(Debug)]
struct Bucket {
    /// What the key may still spend.
    tokens: f64,
    at: Instant,
}

/// Token buckets per key: `limit` in a burst, refilled evenly over
/// `window`, in a bounded cache (`max_keys`, least recently used dropped
/// first; a bucket left alone for a window is full again, so forgotten).
pub struct Buckets<K> {
    /// `None` when the limit is 0 (no limit).
    keys: Option<moka::sync::Cache<K, Arc<Mutex<Bucket>>>>,
    limit: f64,
    /// Tokens back per second.
    refill: f64,
    /// One refill interval, in whole seconds: the `Retry-After` of a refusal.
    retry_after: HeaderValue,
}

impl<K> std::fmt::Debug for Buckets<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Buckets")
            .field("limit", &self.limit)
            .field("refill", &self.refill)
            .finish_non_exhaustive()
    }
}

impl<K: std::hash::Hash + Eq + Send + Sync + 'static> Buckets<K> {
    pub fn new(limit: u32, window: Duration, max_keys: u64) -> Self {
        let per = window.as_secs_f64().max(0.001);
        let retry = if limit == 0 {
            1
        } else {
            (per / f64::from(limit)).ceil().max(1.0) as u64
        };
        Self {
            keys: (limit > 0).then(|| {
                moka::sync::Cache::builder()
                    .max_capacity(max_keys)
                    .time_to_idle(window)
                    .build()
            }),
            limit: f64::from(limit),
            refill: f64::from(limit) / per,
            retry_after: HeaderValue::from(retry),
        }
    }

    /// Whether a limit is set at all.
    pub fn is_on(&self) -> bool {
        self.keys.is_some()
    }

    /// The `Retry-After` of a refusal: one refill interval.
    pub fn retry_after(&self) -> &HeaderValue {
        &self.retry_after
    }

    /// Whether `key` has less than one left (nothing taken).
    pub fn is_empty(&self, key: &K, now: Instant) -> bool {
        self.keys.as_ref().is_some_and(|keys| {
            keys.get(key).is_some_and(|b| {
                let mut b = b.lock().unwrap_or_else(|e| e.into_inner());
                self.refilled(&mut b, now);
                b.tokens < 1.0
            })
        })
    }

    /// Takes one from `key` even when none is left (a failure happened
    /// anyway); how long until one is back, when none is now.
    pub fn spend(&self, key: K, now: Instant) -> Option<Duration> {
        self.with_bucket(key, now, |b| {
            b.tokens = (b.tokens - 1.0).max(0.0);
            (b.tokens < 1.0).then(|| Duration::from_secs_f64((1.0 - b.tokens) / self.refill))
        })?
    }

    /// Takes one from `key` if one is left: whether it may go ahead.
    pub fn try_take(&self, key: K, now: Instant) -> bool {
        self.try_take_n(key, 1, now)
    }

    /// Takes `n` from `key` if as many are left — the whole burst when `n`
    /// is more than the limit, so that a costly call is still possible on
    /// a small limit: whether it may go ahead.
    pub fn try_take_n(&self, key: K, n: u32, now: Instant) -> bool {
        self.take_n(key, n, now).is_none()
    }

    /// As [`Buckets::try_take_n`]; when refused, how long until `n` are
    /// back (the `Retry-After` of a costly call: not one refill interval).
    pub fn take_n(&self, key: K, n: u32, now: Instant) -> Option<Duration> {
        let n = f64::from(n).min(self.limit);
        self.with_bucket(key, now, |b| {
            if b.tokens >= n {
                b.tokens -= n;
                return None;
            }
            Some(Duration::from_secs_f64((n - b.tokens) / self.refill))
        })
        .flatten()
    }

    /// `f` on `key`'s bucket, refilled to `now` (made full when new);
    /// `None` without a limit.
    fn with_bucket<R>(&self, key: K, now: Instant, f: impl FnOnce(&mut Bucket) -> R) -> Option<R> {
        let keys = self.keys.as_ref()?;
        let bucket = keys.get_with(key, || {
            Arc::new(Mutex::new(Bucket {
                tokens: self.limit,
                at: now,
            }))
        });
        let mut b = bucket.lock().unwrap_or_else(|e| e.into_inner());
        self.refilled(&mut b, now);
        Some(f(&mut b))
    }

    fn refilled(&self, b: &mut Bucket, now: Instant) {
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.refill).min(self.limit);
        b.at = now;
    }

    /// Keys tracked now (approximate).
    pub fn tracked(&self) -> u64 {
        self.keys.as_ref().map_or(0, |c| {
            c.run_pending_tasks();
            c.entry_count()
        })
    }
}

/// Failed authentications per client, bounded in memory.
pub struct FailedAuth {
    clients: Buckets<u128>,
    /// Milliseconds since `epoch` until which some client is refused: while
    /// it is past, nobody is, and a request costs one atomic load.
    refused_until_ms: AtomicU64,
    epoch: Instant,
}

impl std::fmt::Debug for FailedAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FailedAuth")
            .field("clients", &self.clients)
            .finish_non_exhaustive()
    }
}

impl FailedAuth {
    pub fn new(s: &FailedAuthSettings) -> Self {
        Self {
            clients: Buckets::new(s.limit, s.window.0, s.max_clients),
            refused_until_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// The `Retry-After` of a `rate_limited` answer: one refill interval
    /// (a refused client may fail once more after it).
    pub fn retry_after(&self) -> &HeaderValue {
        self.clients.retry_after()
    }

    fn now_ms(&self, now: Instant) -> u64 {
        u64::try_from(now.duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether any client may be refused now: when not, nobody is, and
    /// the caller need not even work out who the client is.
    pub fn anyone_refused(&self) -> bool {
        self.clients.is_on()
            && self.now_ms(Instant::now()) < self.refused_until_ms.load(Ordering::Relaxed)
    }

    /// Whether `client` has used up its failures.
    pub fn is_refused(&self, client: IpAddr) -> bool {
        self.anyone_refused() && self.clients.is_empty(&client_key(client), Instant::now())
    }

    /// Counts one failed authentication of `client`.
    pub fn failed(&self, client: IpAddr) {
        let now = Instant::now();
        if let Some(wait) = self.clients.spend(client_key(client), now) {
            self.refused_until_ms
                .fetch_max(self.now_ms(now + wait) + 1, Ordering::Relaxed);
        }
    }

    /// Client addresses tracked now (approximate).
    pub fn tracked(&self) -> u64 {
        self.clients.tracked()
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
        // Garbage where an address should be: the last hop known, as a
        // key, but no client named.
        assert_eq!(
            t.client(ip("10.0.0.1"), &xff(&["6.6.6.6, nonsense"])),
            ip("10.0.0.1")
        );
        assert_eq!(
            t.request_client(ip("10.0.0.1"), &xff(&["6.6.6.6, nonsense"]))
                .named,
            None
        );
        assert_eq!(
            t.request_client(ip("10.0.0.1"), &xff(&["unknown"])).named,
            None
        );
        assert_eq!(t.request_client(ip("10.0.0.1"), &xff(&[""])).named, None);
        assert_eq!(
            t.request_client(ip("10.0.0.1"), &xff(&["198.51.100.7"]))
                .named,
            Some(ip("198.51.100.7"))
        );
        // IPv4-mapped IPv6 peers are their IPv4 address.
        assert_eq!(
            t.client(ip("::ffff:10.0.0.1"), &xff(&["192.0.2.1"])),
            ip("192.0.2.1")
        );
    }

    #[test]
    fn an_entry_with_a_port_names_its_address_and_nothing_else_does() {
        for (entry, want) in [
            ("192.0.2.7", Some("192.0.2.7")),
            (" 192.0.2.7 ", Some("192.0.2.7")),
            ("192.0.2.7:51000", Some("192.0.2.7")),
            ("2001:db8::1", Some("2001:db8::1")),
            ("[2001:db8::1]", Some("2001:db8::1")),
            ("[2001:db8::1]:443", Some("2001:db8::1")),
            ("192.0.2.7:", None),
            ("192.0.2.7:123456", None),
            ("192.0.2.7:80x", None),
            ("[2001:db8::1]:", None),
            ("[2001:db8::1]x", None),
            ("[192.0.2.7]:80", None),
            ("host.example:80", None),
            ("unknown", None),
            ("_hidden", None),
            ("", None),
        ] {
            assert_eq!(forwarded_address(entry), want.map(ip), "{entry:?}");
        }
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
