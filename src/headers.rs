//! Header names the gate reads and writes, in one place so that code, tests
//! and docs cannot drift.
//!
//! The identity headers share a configurable prefix (`headers.prefix`,
//! default `X-Hawzu-`); every incoming header with that prefix is removed
//! before a request is forwarded, so a client can never speak for the gate.
//! So is every header on the strip list (`headers.strip`: method and path
//! overrides by default), so the API never acts on what the gate did not
//! judge. Both match names with every separator (`_`, `.`, `+`, `~`…) read
//! as `-` and case ignored: a CGI/WSGI/Rack upstream reads `X_Hawzu_Role`,
//! and lighttpd or PHP `X-Hawzu.Role`, as `HTTP_X_HAWZU_ROLE`, the same
//! variable as `X-Hawzu-Role` (see [`fold`]).

use std::sync::atomic::{AtomicU64, Ordering};

use http::header::{HeaderMap, HeaderName, HeaderValue};
use thiserror::Error;

use crate::decide::{Override, Principal};

/// Default prefix of the identity headers.
pub const DEFAULT_PREFIX: &str = "X-Hawzu-";
/// The realm of every `WWW-Authenticate` challenge.
pub const REALM: &str = "hawzu";

/// nginx `auth_request`: the original method (from the nginx config).
pub const X_ORIGINAL_METHOD: HeaderName = HeaderName::from_static("x-original-method");
/// ingress-nginx `auth-url`: the original full URL.
pub const X_ORIGINAL_URL: HeaderName = HeaderName::from_static("x-original-url");
/// plain nginx `auth_request`: the original request URI (from the config).
pub const X_ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");
/// Traefik `ForwardAuth`.
pub const X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
pub const X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// Envoy HTTP ext_authz: headers the upstream must not receive.
pub const X_ENVOY_AUTH_HEADERS_TO_REMOVE: HeaderName =
    HeaderName::from_static("x-envoy-auth-headers-to-remove");
/// A protocol switch (h2c, WebSocket): refused (`upgrade_refused`).
pub const UPGRADE: HeaderName = http::header::UPGRADE;
/// Sent with an h2c upgrade (RFC 7540 §3.2): refused like `Upgrade`.
pub const HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");

/// On an allowed answer the client reads (the proxy's response, the
/// forward-auth allow answer for a proxy that copies it to its client, the
/// gRPC door's `response_headers_to_add`): the token's expiry, RFC 3339 in
/// UTC to the second. Absent for a token that never expires. Not under the
/// configurable prefix: it is for clients, not the API.
pub const HAWZU_TOKEN_EXPIRES: HeaderName = HeaderName::from_static("hawzu-token-expires");
/// A webhook POST's signature: `t=<unix seconds>,v1=<hex HMAC-SHA256 of
/// "<t>.<body>">` (Stripe's scheme; `crate::webhooks`).
pub const HAWZU_SIGNATURE: HeaderName = HeaderName::from_static("hawzu-signature");
/// A webhook POST's event id (the same on every retry).
pub const HAWZU_EVENT_ID: HeaderName = HeaderName::from_static("hawzu-event-id");
/// A webhook POST's event type (`token.created`, …).
pub const HAWZU_EVENT_TYPE: HeaderName = HeaderName::from_static("hawzu-event-type");

/// Default of `headers.strip`: method and path overrides that frameworks
/// honour (Express method-override, Symfony/Laravel, IIS URL Rewrite) and
/// that would make the API act on a request the gate never judged.
pub const DEFAULT_STRIP: [&str; 7] = [
    "X-HTTP-Method-Override",
    "X-HTTP-Method",
    "X-Method-Override",
    "X-Original-URL",
    "X-Rewrite-URL",
    "X-Original-URI",
    "X-Forwarded-Prefix",
];

/// Hop-by-hop headers (RFC 9110 §7.6.1), never forwarded.
pub const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// What a request tells of the hops before the gate: dropped unless the
/// peer is a trusted proxy (`trusted_proxies`).
pub const FORWARDED: [&str; 5] = [
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "forwarded",
    "x-real-ip",
];

/// What one pass over a request's header names found
/// ([`IdentityHeaders::scan`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    /// A hop-by-hop header, or `Proxy-Connection`.
    pub hop_by_hop: bool,
    /// `Upgrade` or `HTTP2-Settings`: the request asks to switch protocols
    /// (as [`asks_upgrade`] tells).
    pub upgrade: bool,
    /// A protected header: the identity prefix, or on `headers.strip`.
    pub protected: bool,
    /// One of [`FORWARDED`].
    pub forwarded: bool,
    /// One of [`FORWARDED`] spelled with `_` or another separator than `-`
    /// (`X_Forwarded_For`, `X.Forwarded.For`).
    pub forwarded_misspelled: bool,
    /// `Cookie` (see [`strip_console_cookie`]).
    pub cookie: bool,
}

/// Joins `Cookie` fields into one with "; " (RFC 9113 §8.2.3): HTTP/2 lets
/// a client send each cookie as a field (browsers do), and an HTTP/1.1
/// server must get one line. Nothing to do, and no allocation, with one
/// field or none.
pub fn join_cookies(headers: &mut HeaderMap) {
    let mut cookies = headers.get_all(http::header::COOKIE).iter();
    let (Some(first), Some(_)) = (cookies.next(), cookies.next()) else {
        return;
    };
    let mut joined = first.as_bytes().to_vec();
    for v in headers.get_all(http::header::COOKIE).iter().skip(1) {
        joined.extend_from_slice(b"; ");
        joined.extend_from_slice(v.as_bytes());
    }
    // Made of valid values and "; ": always a valid value.
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(http::header::COOKIE, v);
    }
}

/// Removes the console's session cookie from `Cookie` headers, keeping
/// every other cookie as sent (a header left empty goes): a browser sends
/// it to every port of the host, and like the token in `Authorization` it
/// never reaches the API. No allocation unless it is there.
pub fn strip_console_cookie(headers: &mut HeaderMap) {
    use crate::console::{COOKIE_PLAIN, COOKIE_TLS};
    // Both names end with the plain one.
    let has = |v: &HeaderValue| {
        v.as_bytes()
            .windows(COOKIE_PLAIN.len() + 1)
            .any(|w| w.starts_with(COOKIE_PLAIN.as_bytes()) && w.ends_with(b"="))
    };
    if !headers.get_all(http::header::COOKIE).iter().any(has) {
        return;
    }
    let kept: Vec<HeaderValue> = headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| {
            let pairs: Vec<&[u8]> = v
                .as_bytes()
                .split(|&b| b == b';')
                .map(<[u8]>::trim_ascii)
                .filter(|pair| {
                    let name = pair.split(|&b| b == b'=').next().unwrap_or_default();
                    let name = name.trim_ascii();
                    !pair.is_empty()
                        && name != COOKIE_PLAIN.as_bytes()
                        && name != COOKIE_TLS.as_bytes()
                })
                .collect();
            (!pairs.is_empty())
                .then(|| HeaderValue::from_bytes(&pairs.join(&b"; "[..])).ok())
                .flatten()
        })
        .collect();
    headers.remove(http::header::COOKIE);
    for v in kept {
        headers.append(http::header::COOKIE, v);
    }
}

/// The first letters of the names a scan looks for, folded, one bit each.
fn firsts(prefix: &str, strip: &[Box<str>]) -> u128 {
    let hop = HOP_BY_HOP
        .iter()
        .chain(&["proxy-connection", "http2-settings", "cookie"]);
    let names = hop
        .chain(FORWARDED.iter())
        .copied()
        .chain(strip.iter().map(|s| &**s))
        .chain([prefix]);
    names
        .filter_map(|n| n.bytes().next())
        .map(fold)
        .filter(|&b| b < 128)
        .fold(0, |bits, b| bits | 1 << b)
}

/// A name on the strip list that is not a header name.
#[derive(Debug, Error)]
#[error("`{0}` is not a header name; use letters, digits and `-` (like X-HTTP-Method-Override)")]
pub struct BadHeaderName(pub String);

/// A prefix that cannot make header names.
#[derive(Debug, Error)]
#[error(
    "`{0}` cannot start header names; use letters, digits and `-`, ending in `-` (like X-Hawzu-)"
)]
pub struct BadPrefix(String);

/// The identity header names for one prefix, fixed at [`Self::new`] (the
/// per-thread rendered headers, `doors::rendered`, rely on it: read them
/// through methods, never assign them).
#[derive(Debug, Clone)]
pub struct IdentityHeaders {
    /// Lower-case prefix, for matching incoming names.
    prefix: String,
    /// Names removed before forwarding (`headers.strip`), folded (see
    /// [`fold`]).
    strip: Box<[Box<str>]>,
    /// The first letters (folded) of every name [`Self::scan`] looks for,
    /// one bit each: most names a client sends start with none of them.
    firsts: u128,
    token_id: HeaderName,
    token_type: HeaderName,
    workspace_id: HeaderName,
    project_id: HeaderName,
    role: HeaderName,
    permission: HeaderName,
    /// The token's expiry (RFC 3339, UTC, whole seconds); not set for a
    /// token that never expires.
    token_expires: HeaderName,
    /// The deny code, on every refusal.
    error: HeaderName,
    /// On a `/auth/nginx` pass of a request with no Hawzu token: the pass
    /// reason, telling nginx the request's `Authorization` is its own, for
    /// the API (never sent to the API).
    passed: HeaderName,
    /// Tells this set of names from every other made in the process: the
    /// per-thread rendered headers (`doors::rendered`) are keyed by it.
    generation: u64,
    /// The `x-envoy-auth-headers-to-remove` values of the common answers
    /// (see [`Self::removal_value`]), made once: a pass keeping or
    /// removing `authorization`, and an allow with or without a project
    /// and an expiry. Static bytes: a clone copies nothing and writes no
    /// shared counter.
    envoy_removals: [HeaderValue; 6],
}

impl Default for IdentityHeaders {
    fn default() -> Self {
        // The default prefix is valid; `new` cannot fail on it.
        Self::new(DEFAULT_PREFIX).unwrap_or_else(|_| unreachable!("default prefix is valid"))
    }
}

impl IdentityHeaders {
    pub fn new(prefix: &str) -> Result<Self, BadPrefix> {
        let valid = prefix.len() >= 2
            && prefix.ends_with('-')
            && prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !valid {
            return Err(BadPrefix(prefix.to_owned()));
        }
        let lower = prefix.to_ascii_lowercase();
        let name = |suffix: &str| {
            HeaderName::from_bytes(format!("{lower}{suffix}").as_bytes())
                .map(|n| interned(n.as_str()))
                .map_err(|_| BadPrefix(prefix.to_owned()))
        };
        let strip: Box<[Box<str>]> = DEFAULT_STRIP.iter().map(|n| folded(n)).collect();
        let made = Self {
            firsts: firsts(&lower, &strip),
            token_id: name("token-id")?,
            token_type: name("token-type")?,
            workspace_id: name("workspace-id")?,
            project_id: name("project-id")?,
            role: name("role")?,
            permission: name("permission")?,
            token_expires: name("token-expires")?,
            error: name("error")?,
            passed: name("passed")?,
            prefix: lower,
            strip,
            generation: {
                static MADE: AtomicU64 = AtomicU64::new(0);
                MADE.fetch_add(1, Ordering::Relaxed)
            },
            envoy_removals: std::array::from_fn(|_| HeaderValue::from_static("")),
        };
        Ok(made.with_removals())
    }

    /// The names every allow answer sets (the project and the expiry are
    /// set when there is one).
    fn always_set(&self) -> [&HeaderName; 5] {
        [
            &self.token_id,
            &self.token_type,
            &self.workspace_id,
            &self.role,
            &self.permission,
        ]
    }

    /// Makes [`Self::envoy_removals`] for the names and strip list held.
    fn with_removals(mut self) -> Self {
        let value = |set: &[&HeaderName], keep: bool| {
            HeaderValue::from_static(kept(&self.removals([], set, keep).join(",")))
        };
        let base = self.always_set();
        let with = |extra: &[&HeaderName]| {
            let mut set = base.to_vec();
            set.extend_from_slice(extra);
            value(&set, false)
        };
        let removals = [
            value(&[], true),
            value(&[], false),
            with(&[]),
            with(&[&self.token_expires]),
            with(&[&self.project_id]),
            with(&[&self.project_id, &self.token_expires]),
        ];
        self.envoy_removals = removals;
        self
    }

    /// The `x-envoy-auth-headers-to-remove` value of an Envoy HTTP answer
    /// (see [`Self::removals`]): made once for the common answers — a
    /// client that sent no protected name beyond the gate's own spellings
    /// (most send none) — and built for the others.
    /// `client` gives the names of the client's headers (asked twice at
    /// most).
    pub fn removal_value<'n, I: IntoIterator<Item = &'n str>>(
        &self,
        client: impl Fn() -> I,
        set: &[&HeaderName],
        keep_authorization: bool,
    ) -> Option<HeaderValue> {
        let own = |n: &str| {
            self.names().iter().any(|k| k.as_str() == n) || self.strip.iter().any(|s| **s == *n)
        };
        let extra = client().into_iter().any(|n| self.removable(n) && !own(n));
        if !extra && let Some(i) = self.common_answer(set, keep_authorization) {
            return Some(self.envoy_removals[i].clone());
        }
        HeaderValue::from_str(&self.removals(client(), set, keep_authorization).join(",")).ok()
    }

    /// Which of [`Self::envoy_removals`] answers `set`, if one does.
    fn common_answer(&self, set: &[&HeaderName], keep_authorization: bool) -> Option<usize> {
        if set.is_empty() {
            return Some(usize::from(!keep_authorization));
        }
        // The names are interned (`interned`): the same name is the same
        // bytes, so a pointer compare says it (a name that is not the
        // gate's is told apart by it too, and answered the slow way).
        let same = |a: &HeaderName, b: &HeaderName| {
            let (a, b) = (a.as_str(), b.as_str());
            a.len() == b.len() && std::ptr::eq(a.as_ptr(), b.as_ptr())
        };
        let has = |n: &HeaderName| set.iter().any(|s| same(s, n));
        let base = self.always_set();
        let (project, expires) = (has(&self.project_id), has(&self.token_expires));
        let common = !keep_authorization
            && base.iter().all(|n| has(n))
            && set.len() == 5 + usize::from(project) + usize::from(expires);
        common.then(|| 2 + 2 * usize::from(project) + usize::from(expires))
    }

    /// The deny code's header (`{prefix}Error`).
    pub fn error(&self) -> &HeaderName {
        &self.error
    }

    /// The `/auth/nginx` pass header (`{prefix}Passed`).
    pub fn passed(&self) -> &HeaderName {
        &self.passed
    }

    /// Which set of names this is: equal only for copies of one
    /// [`Self::new`] (the strip list is not part of it: it names no header
    /// the gate sets).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The same headers with another strip list (`headers.strip`).
    pub fn with_strip<S: AsRef<str>>(mut self, names: &[S]) -> Result<Self, BadHeaderName> {
        let mut strip = Vec::with_capacity(names.len());
        for name in names {
            let name = name.as_ref().trim();
            if HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(BadHeaderName(name.to_owned()));
            }
            strip.push(folded(name));
        }
        self.strip = strip.into();
        self.firsts = firsts(&self.prefix, &self.strip);
        Ok(self.with_removals())
    }

    /// Whether `name` carries the identity prefix, with every separator
    /// read as `-` and case ignored (see [`fold`]).
    pub fn is_identity(&self, name: &str) -> bool {
        folded_starts_with(name.as_bytes(), self.prefix.as_bytes())
    }

    /// Whether the API must never get `name` from the client: it carries the
    /// identity prefix or is on the strip list, with every separator read
    /// as `-` and case ignored (see [`fold`]). No allocation.
    pub fn is_protected(&self, name: &str) -> bool {
        let b = name.as_bytes();
        self.is_identity(name)
            || self
                .strip
                .iter()
                .any(|s| s.len() == b.len() && folded_starts_with(b, s.as_bytes()))
    }

    /// Whether `name` may be one [`Self::scan`] looks for: its first byte,
    /// folded, starts one of them. One bit test; most names are not.
    pub fn may_protect(&self, name: &str) -> bool {
        let first = name.as_bytes().first().map_or(0, |&b| fold(b));
        first < 128 && self.firsts & (1 << first) != 0
    }

    /// Whether `name` is a protected header or one of [`FORWARDED`] spelled
    /// with a byte other than a letter, digit or `-` (`X_Hawzu_Role`,
    /// `X-Hawzu.Role`, `X.Forwarded.For`): no proxy spells them so, and a
    /// CGI-style API reads them as the names they fold into. The doors that
    /// cannot remove a header refuse a request carrying one.
    pub fn misspells_protected(&self, name: &str) -> bool {
        misspelled(name) && self.removable(name)
    }

    /// Whether a client's `name` is taken off the request before the API
    /// gets it: a protected header, or one of [`FORWARDED`] misspelled (the
    /// gate's own proxy, or the one in front, sets those as spelled).
    fn removable(&self, name: &str) -> bool {
        self.is_protected(name) || misspelled_as(name, &FORWARDED)
    }

    /// Whether `name` is an override header that `headers.strip` keeps
    /// from the API, and what it overrides: a method
    /// (`X-HTTP-Method-Override`, `X-HTTP-Method`, `X-Method-Override`) or
    /// a path (`X-Original-URL`, `X-Rewrite-URL`, `X-Original-URI`; not
    /// `X-Forwarded-Prefix`, which proxies set themselves), every separator
    /// read as `-`, case ignored. The doors that cannot remove a header
    /// (`/auth/nginx`, `/auth/traefik`) refuse a request carrying one they
    /// did not read themselves. Most names are passed over by their length.
    pub fn stripped_override(&self, name: &str) -> Option<Override> {
        const OVERRIDES: [(&str, Override); 6] = [
            ("x-http-method-override", Override::Method),
            ("x-http-method", Override::Method),
            ("x-method-override", Override::Method),
            ("x-original-url", Override::Path),
            ("x-rewrite-url", Override::Path),
            ("x-original-uri", Override::Path),
        ];
        let b = name.as_bytes();
        let (_, kind) = OVERRIDES
            .iter()
            .find(|(o, _)| o.len() == b.len() && folded_starts_with(b, o.as_bytes()))?;
        self.strip
            .iter()
            .any(|s| s.len() == b.len() && folded_starts_with(b, s.as_bytes()))
            .then_some(*kind)
    }

    /// One pass over `headers`' names: which of the rewrites before
    /// forwarding have anything to do. Most requests carry none of these
    /// names, and then rewriting costs no lookup and no second scan; most
    /// names start with a letter none of them starts with, and cost one
    /// bit test.
    pub fn scan(&self, headers: &HeaderMap) -> Found {
        let mut found = Found::default();
        for name in headers.keys() {
            let n = name.as_str();
            if !self.may_protect(n) {
                continue;
            }
            found.hop_by_hop |= HOP_BY_HOP.contains(&n) || n == "proxy-connection";
            found.upgrade |= n == UPGRADE.as_str() || n == HTTP2_SETTINGS.as_str();
            found.protected |= self.is_protected(n);
            found.forwarded |= FORWARDED.contains(&n);
            found.forwarded_misspelled |= misspelled_as(n, &FORWARDED);
            found.cookie |= n == "cookie";
        }
        found
    }

    /// Removes every protected header (see [`Self::is_protected`]). One
    /// scan and no allocation when there is none, as on most requests.
    pub fn strip(&self, headers: &mut HeaderMap) {
        if !headers.keys().any(|n| self.is_protected(n.as_str())) {
            return;
        }
        let spoofed: Vec<HeaderName> = headers
            .keys()
            .filter(|n| self.is_protected(n.as_str()))
            .cloned()
            .collect();
        for name in spoofed {
            headers.remove(&name);
        }
    }

    /// What an Envoy allow answer names for removal, given the names of the
    /// client's headers: `authorization` (unless `keep_authorization`: a
    /// passed request's own credentials), every identity name the answer
    /// does not set and every `headers.strip` name — whether the client
    /// was seen sending it or not: Envoy shows an authorizer only the
    /// headers its config lists, so a forged one may be there unseen — and
    /// every other protected header the client sent (other spellings) (Envoy removes after setting: a name both set and
    /// removed would reach the API nowhere).
    pub fn removals<'n>(
        &self,
        client: impl IntoIterator<Item = &'n str>,
        set: &[&HeaderName],
        keep_authorization: bool,
    ) -> Vec<String> {
        let mut remove = Vec::with_capacity(6);
        if !keep_authorization {
            remove.push("authorization".to_owned());
        }
        for name in self.names() {
            if !set.contains(&name) {
                remove.push(name.as_str().to_owned());
            }
        }
        // Every `headers.strip` name too, for the same reason.
        remove.extend(self.strip.iter().map(|s| s.to_string()));
        let mut client = client
            .into_iter()
            .filter(|name| self.removable(name))
            .peekable();
        if client.peek().is_none() {
            return remove;
        }
        // Names already listed: a set, not a scan of the list, so a
        // request naming many protected headers (a direct caller of the
        // gRPC door may send a large map) costs linear time.
        let mut listed: std::collections::HashSet<String> = remove.iter().cloned().collect();
        for name in client {
            let name = name.to_ascii_lowercase();
            if !set.iter().any(|s| s.as_str() == name) && listed.insert(name.clone()) {
                remove.push(name);
            }
        }
        remove
    }

    /// Every name the gate sets or answers with under the prefix.
    fn names(&self) -> [&HeaderName; 9] {
        [
            &self.token_id,
            &self.token_type,
            &self.workspace_id,
            &self.project_id,
            &self.role,
            &self.permission,
            &self.token_expires,
            &self.error,
            &self.passed,
        ]
    }

    /// Sets (overwrites) the identity headers for `p`.
    pub fn insert(&self, headers: &mut HeaderMap, p: &Principal<'_>) {
        for (name, value) in self.values(p) {
            headers.insert(name.clone(), value);
        }
    }

    /// The identity headers for `p` as (name, value) pairs. Ids, roles and
    /// permissions are validated to header-safe characters, so none is
    /// skipped in practice.
    pub fn values<'a>(&'a self, p: &Principal<'_>) -> Vec<(&'a HeaderName, HeaderValue)> {
        let mut out = Vec::with_capacity(7);
        // Fixed strings need no copy.
        out.push((
            &self.token_type,
            HeaderValue::from_static(p.kind().as_str()),
        ));
        out.push((
            &self.permission,
            HeaderValue::from_static(p.permission.as_str()),
        ));
        // Made once per cached token; copied, not cloned (see `copied`).
        if let Some(v) = p.record.expires_header() {
            out.push((&self.token_expires, copied(v)));
        }
        let mut add = |name: &'a HeaderName, value: &str| match HeaderValue::from_str(value) {
            Ok(v) => out.push((name, v)),
            Err(_) => {
                tracing::warn!(header = %name, "identity value is not header-safe; not set");
            }
        };
        add(&self.token_id, p.token_id());
        add(&self.workspace_id, p.workspace_id());
        add(&self.role, p.role());
        if let Some(project) = p.project_id() {
            add(&self.project_id, project);
        }
        out
    }
}

/// `name` (as `HeaderName::as_str` gives it: valid, lower case, so
/// `from_static` accepts it) as a name whose clones are pointer copies:
/// made once per distinct name and kept for the process (a handful per
/// `headers.prefix`). A name built from a `String` is reference-counted,
/// and the identity names are cloned into every answer by every door
/// thread: one shared cache line written per header per request.
fn interned(name: &str) -> HeaderName {
    HeaderName::from_static(kept(name))
}

/// `text` kept for the process, once per distinct text (a handful per
/// `headers.prefix` and strip list).
fn kept(text: &str) -> &'static str {
    static KEPT: std::sync::Mutex<std::collections::BTreeSet<&'static str>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let mut all = KEPT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match all.get(text) {
        Some(kept) => kept,
        None => {
            let kept: &'static str = Box::leak(text.to_owned().into_boxed_str());
            all.insert(kept);
            kept
        }
    }
}

/// A copy of a value a cache entry holds, for one answer. Not a clone: a
/// clone bumps the entry's reference count, one cache line that every
/// thread serving the token writes per request (measured: 0.15 µs per
/// request with two door threads, more than the copy of a short value).
pub fn copied(v: &HeaderValue) -> HeaderValue {
    HeaderValue::from_bytes(v.as_bytes()).unwrap_or_else(|_| v.clone())
}

/// `ip` as a header value (`X-Forwarded-For`): IPv4 written digit by
/// digit, as the proxy does for every request; IPv6 as `Display` writes it.
pub fn ip_value(ip: std::net::IpAddr) -> HeaderValue {
    let v4 = match ip {
        std::net::IpAddr::V4(v4) => v4,
        std::net::IpAddr::V6(_) => {
            // An address is always header-safe: the fallback is never used.
            return HeaderValue::from_str(&ip.to_string())
                .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        }
    };
    let mut out = [0u8; 15];
    let mut len = 0;
    let mut put = |b: u8| {
        out[len] = b;
        len += 1;
    };
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            put(b'.');
        }
        if octet >= 100 {
            put(b'0' + octet / 100);
        }
        if octet >= 10 {
            put(b'0' + octet / 10 % 10);
        }
        put(b'0' + octet % 10);
    }
    HeaderValue::from_bytes(&out[..len]).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// Whether a request asks to switch protocols: an `Upgrade` or an
/// `HTTP2-Settings` header (h2c, WebSocket).
pub fn asks_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(UPGRADE) || headers.contains_key(HTTP2_SETTINGS)
}

/// Removes every header spelled with a separator other than `-` that reads
/// as one of `names` (lower case, `-`) once folded: `X_Forwarded_For` and
/// `X.Forwarded.For` are `HTTP_X_FORWARDED_FOR` to a CGI/WSGI/Rack or
/// lighttpd upstream, and no proxy spells them so. One scan and no
/// allocation when no name is misspelled.
pub fn strip_misspelled(headers: &mut HeaderMap, names: &[&str]) {
    let spelled = |n: &HeaderName| misspelled_as(n.as_str(), names);
    if !headers.keys().any(spelled) {
        return;
    }
    let found: Vec<HeaderName> = headers.keys().filter(|n| spelled(n)).cloned().collect();
    for name in found {
        headers.remove(&name);
    }
}

/// Whether `name` holds a byte other than a letter, digit or `-`.
fn misspelled(name: &str) -> bool {
    name.bytes()
        .any(|b| !b.is_ascii_alphanumeric() && b != b'-')
}

/// Whether `name` is [`misspelled`] and reads as one of `names` (lower
/// case, `-`) once folded.
fn misspelled_as(name: &str, names: &[&str]) -> bool {
    let b = name.as_bytes();
    // The lengths first: most names match none, and cost no byte scan.
    let mut same = names.iter().filter(|c| c.len() == b.len()).peekable();
    same.peek().is_some() && misspelled(name) && same.any(|c| folded_starts_with(b, c.as_bytes()))
}

/// `name` folded (see [`fold`]): the form protected names are matched in.
pub(crate) fn folded(name: &str) -> Box<str> {
    name.bytes()
        .map(|b| char::from(fold(b)))
        .collect::<String>()
        .into()
}

/// A name's byte as protected names are matched: letters in lower case,
/// digits as they are, and every other byte a name may hold (`_`, `.`,
/// `+`, `~`, `!`…) as `-`. A CGI-style upstream folds them all into one
/// `HTTP_X_HAWZU_ROLE`: lighttpd maps every byte that is not a letter or
/// digit to `_`, PHP maps `.` (Caddy's `php_fastcgi` and FrankenPHP keep
/// it in the name), WSGI and Rack map `-`.
fn fold(b: u8) -> u8 {
    if b.is_ascii_alphanumeric() {
        b.to_ascii_lowercase()
    } else {
        b'-'
    }
}

/// Whether `name` starts with `canon` (lower case, `-`) once folded.
fn folded_starts_with(name: &[u8], canon: &[u8]) -> bool {
    name.len() >= canon.len() && name.iter().zip(canon).all(|(&a, &b)| fold(a) == b)
}

/// A name that is hop-by-hop whatever `Connection` says.
fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.contains(&name) || name == "proxy-connection"
}

/// Removes hop-by-hop headers, including those named by `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most requests and responses carry none: one scan instead of nine
    // hashed removals.
    let present = headers.keys().any(|k| is_hop_by_hop(k.as_str()));
    if !present {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove("proxy-connection");
}

/// Removes from an upstream's answer what the gate owns there: hop-by-hop
/// headers (and those `Connection` names), the gate's deny-code header
/// (`error`: only the gate refuses) and every `Set-Cookie` of the console's
/// session cookie (a browser would carry it to the console's port of the
/// same host, ending or confusing the session there). One scan of the
/// names finds that most answers carry none.
pub fn strip_upstream_answer(headers: &mut HeaderMap, error: &HeaderName) {
    let (mut hop, mut owned, mut cookie) = (false, false, false);
    for k in headers.keys() {
        let k = k.as_str();
        hop |= is_hop_by_hop(k);
        owned |= k == error.as_str();
        cookie |= k == "set-cookie";
    }
    if hop {
        strip_hop_by_hop(headers);
    }
    if owned {
        headers.remove(error);
    }
    if cookie {
        strip_console_set_cookie(headers);
    }
}

/// Drops each `Set-Cookie` that sets the console's session cookie, keeping
/// the others in order.
fn strip_console_set_cookie(headers: &mut HeaderMap) {
    use crate::console::{COOKIE_PLAIN, COOKIE_TLS};
    let console = |v: &HeaderValue| {
        // A nameless cookie (`=hawzu_console=x`) comes back from a browser
        // as `hawzu_console=x`: read it by what it will be sent as.
        let pair = v
            .as_bytes()
            .split(|&b| b == b';')
            .next()
            .unwrap_or_default();
        let pair = pair.trim_ascii();
        let pair = pair.strip_prefix(b"=").unwrap_or(pair);
        let name = pair.split(|&b| b == b'=').next().unwrap_or_default();
        let name = name.trim_ascii();
        name == COOKIE_PLAIN.as_bytes() || name == COOKIE_TLS.as_bytes()
    };
    let set_cookie = http::header::SET_COOKIE;
    if !headers.get_all(&set_cookie).iter().any(console) {
        return;
    }
    let kept: Vec<HeaderValue> = headers
        .get_all(&set_cookie)
        .iter()
        .filter(|v| !console(v))
        .cloned()
        .collect();
    headers.remove(&set_cookie);
    for v in kept {
        headers.append(&set_cookie, v);
    }
}

#[cfg(test)]
#[path = "headers_tests.rs"]
mod tests;
