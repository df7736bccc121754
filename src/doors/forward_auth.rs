//! Forward-auth door (`listen.auth`): answers 2xx/401/403 for a proxy that
//! asks before it forwards. One endpoint per proxy, each reading only the
//! headers its proxy sets:
//!
//! - `/auth/nginx`: nginx `auth_request` and ingress-nginx `auth-url`
//!   (`X-Original-Method` + `X-Original-URL` or `X-Original-URI`). Answers
//!   never carry a body: nginx shows none of it and keeps its keep-alive
//!   connection to us only for empty answers.
//! - `/auth/traefik`: Traefik `ForwardAuth` (`X-Forwarded-Method`,
//!   `X-Forwarded-Uri`).
//! - `/envoy/<original path>`: Envoy's HTTP ext_authz service; the method
//!   and headers are the original request's.
//!
//! The door only turns a request into facts and renders the decision; the
//! policy is in [`crate::decide`].

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, Uri};
use http_body_util::Full;
use jiff::Timestamp;

use super::rendered::{Rendered, rendered};
use super::{Shared, credentials, inspect, trace_context};
use crate::decide::Client;
use crate::decide::{ClientAddr, Decision, Override, RequestFacts};
use crate::headers::{IdentityHeaders, X_ENVOY_AUTH_HEADERS_TO_REMOVE};
use crate::metrics::Door;
use crate::refusal::{DenyCode, Refusal};

/// Path prefix of the Envoy HTTP ext_authz endpoint (`path_prefix` in Envoy).
pub const ENVOY_PREFIX: &str = "/envoy";

/// The forward-auth door.
#[derive(Debug, Clone)]
pub struct ForwardAuth {
    shared: Arc<Shared>,
}

/// Which proxy asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asker {
    Nginx,
    Traefik,
    Envoy,
}

impl Asker {
    fn door(self) -> Door {
        match self {
            Asker::Nginx => Door::Nginx,
            Asker::Traefik => Door::Traefik,
            Asker::Envoy => Door::EnvoyHttp,
        }
    }
}

impl ForwardAuth {
    pub fn new(shared: Arc<Shared>) -> Arc<Self> {
        Arc::new(Self { shared })
    }

    /// Serves one request of the auth listener.
    pub async fn handle<B>(
        self: Arc<Self>,
        req: Request<B>,
        peer: SocketAddr,
    ) -> Response<Full<Bytes>> {
        let path = req.uri().path();
        let headers = req.headers();
        if inspect::asks(req.method(), path) {
            let shared = &self.shared;
            let mut exchange = shared.begin(Door::Inspect);
            exchange.trace(|| trace_context(headers, peer.ip(), &shared.trusted_proxies));
            exchange.asked(req.method().as_str(), path);
            let forwarded_for = headers.contains_key(crate::headers::X_FORWARDED_FOR);
            let client = || asker_client(shared, peer, headers, forwarded_for);
            let facts = RequestFacts {
                method: req.method(),
                path,
                query: None,
                upgrade: false,
                override_header: None,
                credentials: credentials(headers),
                now: Timestamp::now(),
                client: ClientAddr::Lazy(&client),
            };
            let request_id = shared.request_id(headers);
            // Boxed: rare (see `TokenCache::lookup` on future sizes).
            let agent = headers.get(http::header::USER_AGENT);
            let res = Box::pin(inspect::answer(
                shared,
                &mut exchange,
                &facts,
                &request_id,
                agent,
            ))
            .await;
            exchange.finish(res.status().as_u16(), request_id.to_str().ok());
            return res;
        }
        // The Envoy door names another spelling of a protected header for
        // removal instead of refusing it: its one pass does not look.
        let envoy = path == ENVOY_PREFIX || path.starts_with("/envoy/");
        let read = Read::of(headers, &self.shared.headers, !envoy);
        let (asker, original) = match path {
            "/auth/nginx" => (Asker::Nginx, nginx_original(&read)),
            "/auth/traefik" => (Asker::Traefik, traefik_original(&read)),
            p if p == ENVOY_PREFIX || p.starts_with("/envoy/") => {
                let original = p
                    .strip_prefix(ENVOY_PREFIX)
                    .filter(|s| !s.is_empty())
                    .unwrap_or("/");
                let query = req.uri().query().map(Cow::Borrowed);
                (
                    Asker::Envoy,
                    Ok((req.method().clone(), Cow::Borrowed(original), query)),
                )
            }
            _ => return self.shared.render.json(NOT_FOUND, None),
        };
        let shared = &self.shared;
        let mut exchange = shared.begin(asker.door());
        exchange.trace(|| trace_context(headers, peer.ip(), &shared.trusted_proxies));
        let client = || asker_client(shared, peer, headers, read.forwarded_for);
        let decision = match &original {
            Ok((method, original, query)) => {
                exchange.asked(method.as_str(), &**original);
                let facts = RequestFacts {
                    method,
                    path: original,
                    query: query.as_deref(),
                    upgrade: read.upgrade,
                    override_header: read.override_by(asker, &shared.headers),
                    credentials: credentials(headers),
                    now: Timestamp::now(),
                    client: ClientAddr::Lazy(&client),
                };
                let agent = headers.get(http::header::USER_AGENT).map(|v| v.as_bytes());
                exchange.decide(&facts, agent).await
            }
            Err(code) => {
                // The proxy did not say what request it asks about.
                exchange.asked(req.method().as_str(), path);
                exchange.unjudgeable(*code)
            }
        };
        // A request id is made only when something shows it: a JSON deny
        // or an access event.
        let shown = exchange.logging() || (asker != Asker::Nginx && decision.code().is_some());
        let request_id = shown.then(|| shared.request_id(headers));
        let res = self.render(asker, decision, headers, request_id.as_ref());
        let id = request_id.as_ref().and_then(|v| v.to_str().ok());
        exchange.finish(res.status().as_u16(), id);
        res
    }

    fn render(
        &self,
        asker: Asker,
        decision: Decision<'_>,
        req: &HeaderMap,
        request_id: Option<&HeaderValue>,
    ) -> Response<Full<Bytes>> {
        let shared = &self.shared;
        match decision {
            Decision::Allow(p) => {
                let mut res = Response::new(Full::new(Bytes::new()));
                // The identity headers and, for a proxy that copies it to
                // its client (nginx `auth_request_set` + `add_header`, Envoy
                // `allowed_client_headers_on_success`), Hawzu-Token-Expires.
                *res.headers_mut() =
                    HeaderMap::clone(&rendered(&shared.headers, &p, Rendered::Answer));
                let h = res.headers_mut();
                if asker == Asker::Envoy {
                    // Envoy's HTTP mode keeps client headers the answer does
                    // not set; name them for removal (never one we set:
                    // Envoy removes after setting).
                    // What the answer sets, as set (a value skipped as not
                    // header-safe leaves its name to be removed).
                    let set: Vec<&HeaderName> = h.keys().collect();
                    let remove = shared.headers.removal_value(
                        || req.keys().map(http::HeaderName::as_str),
                        &set,
                        false,
                    );
                    if let Some(v) = remove {
                        h.insert(X_ENVOY_AUTH_HEADERS_TO_REMOVE, v);
                    }
                }
                res
            }
            Decision::Pass(p) => {
                // Allowed with no identity headers.
                let mut res = Response::new(Full::new(Bytes::new()));
                let h = res.headers_mut();
                match asker {
                    // nginx keeps the request's own `Authorization` only
                    // when told so (deploy/nginx/nginx.conf).
                    Asker::Nginx if p.own_credentials() => {
                        h.insert(
                            shared.headers.passed().clone(),
                            HeaderValue::from_static(p.reason.as_str()),
                        );
                    }
                    Asker::Envoy => {
                        let remove = shared.headers.removal_value(
                            || req.keys().map(http::HeaderName::as_str),
                            &[],
                            p.own_credentials(),
                        );
                        if let Some(v) = remove {
                            h.insert(X_ENVOY_AUTH_HEADERS_TO_REMOVE, v);
                        }
                    }
                    Asker::Nginx | Asker::Traefik => {}
                }
                res
            }
            Decision::Deny(deny) if asker == Asker::Nginx => shared.render.empty(deny.code.into()),
            Decision::Deny(deny) => {
                let id = request_id
                    .cloned()
                    .unwrap_or_else(|| shared.request_id(req));
                shared.render.json(deny.refusal(), Some(&id))
            }
        }
    }
}

/// The answer to a path this listener does not serve.
const NOT_FOUND: Refusal =
    Refusal::NotFound("This listener serves /auth/nginx, /auth/traefik and /envoy/<path>.");

/// The original method, path and query a proxy asks about.
type Original<'h> = (Method, Cow<'h, str>, Option<Cow<'h, str>>);

/// What the door reads of a request's headers, found in one pass over
/// them: a hashed lookup of each of these custom names cost more than the
/// whole pass (~200 instructions each; docs/performance.md).
#[derive(Debug, Default)]
struct Read<'h> {
    original_method: Values<'h>,
    original_url: Values<'h>,
    original_uri: Values<'h>,
    forwarded_method: Values<'h>,
    forwarded_uri: Values<'h>,
    /// An `X-Forwarded-For`: the client may be other than the peer.
    forwarded_for: bool,
    /// `Upgrade` or `HTTP2-Settings` (as [`crate::headers::asks_upgrade`]).
    upgrade: bool,
    /// An override header on `headers.strip` other than the two path
    /// headers read above (a method override wins: it is named first).
    override_header: Option<Override>,
}

/// The values of one header: the first, and whether there are more.
#[derive(Debug, Default, Clone, Copy)]
struct Values<'h> {
    first: Option<&'h HeaderValue>,
    several: bool,
}

impl<'h> Values<'h> {
    fn add(&mut self, v: &'h HeaderValue) {
        match self.first {
            None => self.first = Some(v),
            Some(_) => self.several = true,
        }
    }

    /// The single value; two values are ambiguous, and so is one that is
    /// not visible ASCII.
    fn one(self) -> Result<Option<&'h str>, DenyCode> {
        match self.first {
            None => Ok(None),
            Some(_) if self.several => Err(DenyCode::AmbiguousPath),
            Some(v) => v.to_str().map(Some).map_err(|_| DenyCode::AmbiguousPath),
        }
    }
}

impl<'h> Read<'h> {
    /// The override header the API would get from `asker`'s proxy. The
    /// Envoy door names it for removal instead; nginx sets (and the door
    /// reads) `X-Original-URL`/`-URI` itself, Traefik sets neither, so
    /// there a client sent them.
    fn override_by(&self, asker: Asker, names: &IdentityHeaders) -> Option<Override> {
        match asker {
            Asker::Envoy => None,
            Asker::Nginx => self.override_header,
            Asker::Traefik => {
                let path = [
                    (&self.original_url, "x-original-url"),
                    (&self.original_uri, "x-original-uri"),
                ]
                .into_iter()
                .filter(|(v, _)| v.first.is_some())
                .find_map(|(_, name)| names.stripped_override(name));
                if rank(path) > rank(self.override_header) {
                    path
                } else {
                    self.override_header
                }
            }
        }
    }

    /// `misspelled`: whether to look for a protected name spelled with
    /// another separator (the doors that refuse one).
    fn of(h: &'h HeaderMap, names: &IdentityHeaders, misspelled: bool) -> Self {
        let mut r = Read::default();
        // Names come lower case; every value of a repeated name is visited.
        for (name, value) in h {
            if *name == http::header::UPGRADE {
                r.upgrade = true;
                continue;
            }
            match name.as_str().as_bytes() {
                b"x-original-method" => r.original_method.add(value),
                b"x-original-url" => r.original_url.add(value),
                b"x-original-uri" => r.original_uri.add(value),
                b"x-forwarded-method" => r.forwarded_method.add(value),
                b"x-forwarded-uri" => r.forwarded_uri.add(value),
                b"x-forwarded-for" => r.forwarded_for = true,
                b"http2-settings" => r.upgrade = true,
                _ => {
                    // A method override wins over a path override, and
                    // both over another spelling of a protected name.
                    let n = name.as_str();
                    if !names.may_protect(n) {
                        continue;
                    }
                    let found = names.stripped_override(n).or_else(|| {
                        (misspelled && names.misspells_protected(n)).then_some(Override::Identity)
                    });
                    if rank(found) > rank(r.override_header) {
                        r.override_header = found;
                    }
                }
            }
        }
        r
    }
}

/// The client of a request `peer` asks about. The peer here is the proxy
/// asking, never the client: a trusted proxy names it (X-Forwarded-For);
/// one that names none, or a proxy outside `trusted_proxies` (whose word
/// is not taken), leaves it unnamed — taken for the client, a token
/// limited to the proxy's network would pass for everyone behind it. The
/// peer is still the hop that per-address counts key on.
fn asker_client(
    shared: &Shared,
    peer: SocketAddr,
    headers: &HeaderMap,
    forwarded_for: bool,
) -> Client {
    let peer = peer.ip().to_canonical();
    if forwarded_for && shared.trusted_proxies.trusts(peer) {
        return shared.client(peer, headers);
    }
    if forwarded_for {
        // Said once: its clients count as it.
        shared.trusted_proxies.untrusted_forwarder(peer);
    }
    Client {
        named: None,
        hop: peer,
    }
}

/// Which of two override headers a refusal names: the higher.
fn rank(o: Option<Override>) -> u8 {
    match o {
        None => 0,
        Some(Override::Identity) => 1,
        Some(Override::Path) => 2,
        Some(Override::Method) => 3,
    }
}

/// The original method, path and query as nginx reports them. ingress-nginx
/// sends the full URL, a plain nginx config the request URI; when both come
/// they must agree. Without them the request cannot be judged.
fn nginx_original<'h>(h: &Read<'h>) -> Result<Original<'h>, DenyCode> {
    let method = original_method(h.original_method.one()?).inspect_err(|c| {
        if *c == DenyCode::MissingOriginal {
            tracing::warn!("/auth/nginx without X-Original-Method; see deploy/nginx");
        }
    })?;
    let from_url = h
        .original_url
        .one()?
        // A fragment is refused, not dropped as the `http` crate's parse
        // drops it: what follows `#` would reach the API unjudged.
        .map(|v| {
            if v.contains('#') {
                return Err(DenyCode::AmbiguousPath);
            }
            // The target follows the host and starts with `/`. ingress-nginx
            // builds the URL from the client's Host: `Host: api:1?` puts the
            // whole target in the query, and the parse reads the path as
            // `/` (as it does for a URL with no target at all).
            let target = match v.find("://") {
                _ if v.starts_with('/') => Some(v),
                Some(i) => v[i + 3..].find(['/', '?']).map(|j| &v[i + 3 + j..]),
                None => Some(v),
            };
            if !target.is_some_and(|t| t.starts_with('/')) {
                return Err(DenyCode::AmbiguousPath);
            }
            v.parse::<Uri>().map_err(|_| DenyCode::AmbiguousPath)
        })
        .transpose()?
        .map(|u| (u.path().to_owned(), u.query().map(str::to_owned)));
    let from_uri = h.original_uri.one()?.map(split_target);
    let (path, query) = match (from_url, from_uri) {
        (Some((a, _)), Some((b, _))) if a != b => return Err(DenyCode::AmbiguousPath),
        // Two queries must agree too; when one header has none, the other's
        // is the query.
        (Some((_, Some(qa))), Some((_, Some(qb)))) if qa != qb => {
            return Err(DenyCode::AmbiguousPath);
        }
        (Some((a, None)), Some((_, Some(qb)))) => (Cow::Owned(a), Some(Cow::Borrowed(qb))),
        (Some((a, qa)), _) => (Cow::Owned(a), qa.map(Cow::Owned)),
        (None, Some((b, qb))) => (Cow::Borrowed(b), qb.map(Cow::Borrowed)),
        (None, None) => {
            tracing::warn!(
                "/auth/nginx without X-Original-URL or X-Original-URI; see deploy/nginx"
            );
            return Err(DenyCode::MissingOriginal);
        }
    };
    Ok((method, path, query))
}

/// The original method, path and query as Traefik reports them.
fn traefik_original<'h>(h: &Read<'h>) -> Result<Original<'h>, DenyCode> {
    let method = original_method(h.forwarded_method.one()?).inspect_err(|c| {
        if *c == DenyCode::MissingOriginal {
            tracing::warn!("/auth/traefik without X-Forwarded-Method; see deploy/traefik");
        }
    })?;
    let Some(uri) = h.forwarded_uri.one()? else {
        tracing::warn!("/auth/traefik without X-Forwarded-Uri; see deploy/traefik");
        return Err(DenyCode::MissingOriginal);
    };
    let (path, query) = split_target(uri);
    Ok((method, Cow::Borrowed(path), query.map(Cow::Borrowed)))
}

/// The original method (one value: two are `ambiguous_path`, as two URIs
/// are): missing is `missing_original`, not a method is `ambiguous_path`.
fn original_method(v: Option<&str>) -> Result<Method, DenyCode> {
    let v = v.ok_or(DenyCode::MissingOriginal)?;
    Method::from_bytes(v.as_bytes()).map_err(|_| DenyCode::AmbiguousPath)
}

/// `/a/b?x=1` → (`/a/b`, `x=1`).
fn split_target(uri: &str) -> (&str, Option<&str>) {
    match uri.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (uri, None),
    }
}

#[cfg(test)]
#[path = "forward_auth_tests.rs"]
mod tests;
