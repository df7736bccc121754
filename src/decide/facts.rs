//! What a door knows about a request, in the decision's terms: its
//! credentials, method, path, query, upgrade, instant and (lazily) its
//! client address. Doors build it; `decide` and its checks read it.

use std::net::IpAddr;

use http::Method;
use jiff::Timestamp;

/// The `Authorization` headers of a request, as the door found them.
#[derive(Debug, Clone, Copy)]
pub enum Credentials<'a> {
    /// No `Authorization` header.
    None,
    /// Exactly one, with this value.
    One(&'a [u8]),
    /// More than one: always refused.
    Several,
}

/// What a door knows about a request.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    pub method: &'a Method,
    /// The raw path, without the query.
    pub path: &'a str,
    /// The raw query (after `?`), when the request has one. Read only for a
    /// method override (`_method`); never for tokens.
    pub query: Option<&'a str>,
    /// The request asks to switch protocols: it has an `Upgrade` or an
    /// `HTTP2-Settings` header (h2c, WebSocket).
    pub upgrade: bool,
    /// An override header on `headers.strip` reached a door that cannot
    /// remove it (`/auth/nginx`, `/auth/traefik`): the API might act on the
    /// method or path it names. The proxy and the Envoy doors remove it.
    pub override_header: Option<Override>,
    pub credentials: Credentials<'a>,
    /// The decision instant; expiry is exact to it.
    pub now: Timestamp,
    /// The client's address, worked out only when a token limits it.
    pub client: ClientAddr<'a>,
}

/// What an override header asks the API for instead of what was judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Override {
    /// Another method (`X-HTTP-Method-Override`, …).
    Method,
    /// Another path (`X-Original-URL`, `X-Rewrite-URL`, `X-Original-URI`).
    Path,
    /// Another identity: a header the gate sets or removes, spelled with
    /// another separator than `-` (`X-Hawzu.Role`, `X_Forwarded_For`).
    Identity,
}

/// The client address of a request, as `trusted_proxies` says (see
/// `clients`): worked out only when something needs it — a token with
/// `allow_from`, or the failed-auth limit — so most requests never read
/// `X-Forwarded-For`.
#[derive(Clone, Copy)]
pub enum ClientAddr<'a> {
    /// Not known (`explain` without a client address): a token that limits
    /// addresses is refused.
    Unknown,
    Known(IpAddr),
    /// Worked out by the door when asked.
    Lazy(&'a (dyn Fn() -> Client + Sync)),
}

/// A request's client, as a door works it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    /// The client, when the request names one; `None` when a trusted proxy
    /// names none (forwards something that is not an address, or nothing
    /// at a door where the peer is always the proxy): judged as unknown.
    pub named: Option<IpAddr>,
    /// The last hop known (the proxy when the client is not named): what
    /// per-address counts key on (failed-auth buckets, usage).
    pub hop: IpAddr,
}

impl Client {
    /// A client that is the address itself.
    pub fn is(ip: IpAddr) -> Self {
        Self {
            named: Some(ip),
            hop: ip,
        }
    }
}

impl ClientAddr<'_> {
    /// The address, in canonical form (IPv4-mapped IPv6 as IPv4).
    pub fn get(&self) -> Option<IpAddr> {
        match self {
            ClientAddr::Unknown => None,
            ClientAddr::Known(ip) => Some(ip.to_canonical()),
            ClientAddr::Lazy(f) => f().named.map(|ip| ip.to_canonical()),
        }
    }

    /// What per-address counts key on: the client, or when it is not named
    /// the last hop known. `None` only for `Unknown`.
    pub fn key(&self) -> Option<IpAddr> {
        match self {
            ClientAddr::Unknown => None,
            ClientAddr::Known(ip) => Some(ip.to_canonical()),
            ClientAddr::Lazy(f) => {
                let c = f();
                Some(c.named.unwrap_or(c.hop).to_canonical())
            }
        }
    }
}

impl std::fmt::Debug for ClientAddr<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientAddr::Unknown => f.write_str("Unknown"),
            ClientAddr::Known(ip) => write!(f, "Known({ip})"),
            ClientAddr::Lazy(_) => f.write_str("Lazy"),
        }
    }
}
