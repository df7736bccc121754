//! Reverse-proxy door (`listen.proxy`): decides, then forwards allowed
//! requests to `upstream.url` over pooled connections, streaming bodies both
//! ways (never buffering them).
//!
//! On the way up it removes hop-by-hop headers, every header with the
//! identity prefix the client sent and every one on `headers.strip` (both
//! with every separator read as `-`: `X_Hawzu_Role`, `X-Hawzu.Role`), and `Authorization` (unless
//! `proxy.forward_authorization`); it sets the identity headers and
//! `X-Request-Id`, and appends `X-Forwarded-For/-Proto/-Host`; W3C trace
//! headers go on as sent, except that a request whose span is recorded
//! (traces on) gets a `traceparent` naming the gate's span. The path is
//! forwarded exactly as received — the one `decide` judged; a request that
//! cannot be (a target that is not a path, two `Host` lines) is refused
//! with 400 `ambiguous_path` before anything is decided. Upstream faults
//! answer 502 (cannot connect, broken) or 504 (no answer in time) with the
//! JSON error body. How connections to the upstream are kept is
//! [`super::upstream`]'s business.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderValue, Request, Response, Uri, header};
use http_body_util::{Either, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use jiff::Timestamp;
use thiserror::Error;

use super::deadline;
use super::lifecycle::Exchange;
use super::listener::{Conn, TimedBody, is_body_timeout};
use super::rendered::{Rendered, rendered};
use super::upstream::{self, Failed, Upstream, UpstreamBody};
use super::{Shared, credentials, inspect, trace_context};
use crate::decide::{Client, ClientAddr, Decision, RequestFacts};
use crate::headers::{
    FORWARDED, Found, HAWZU_TOKEN_EXPIRES, X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO,
    ip_value, strip_hop_by_hop, strip_misspelled, strip_upstream_answer,
};
use crate::metrics::Door;
use crate::refusal::{DenyCode, Refusal};
use crate::traces::{TRACEPARENT, TRACESTATE};
use crate::web::REQUEST_ID;

/// Answers of the proxy: the upstream's streamed body, or the gate's own.
pub type ProxyBody = Either<UpstreamBody, Full<Bytes>>;

/// How the proxy reaches the upstream.
#[derive(Debug, Clone)]
pub struct UpstreamOptions {
    /// `http://host:port` or `https://host:port`, no path.
    pub url: Uri,
    /// Extra CA for an `https` upstream with a private certificate.
    pub ca_file: Option<std::path::PathBuf>,
    pub connect_timeout: Duration,
    /// Longest wait for the upstream's response headers.
    pub response_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle_per_host: usize,
    /// Speak HTTP/2 to the upstream (prior knowledge on http, ALPN on https).
    pub http2: bool,
    /// Forward the client's `Authorization` header.
    pub forward_authorization: bool,
}

/// An upstream setting that cannot be used.
#[derive(Debug, Error)]
pub enum UpstreamError {
    #[error("`{0}` is not an http:// or https:// URL with a host and no path")]
    Url(String),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// The reverse-proxy door.
#[derive(Debug)]
pub struct Proxy {
    shared: Arc<Shared>,
    upstream: Upstream,
    /// The upstream's, for its log lines.
    authority: Authority,
    response_timeout: Duration,
    forward_authorization: bool,
}

impl Proxy {
    pub fn new(shared: Arc<Shared>, up: &UpstreamOptions) -> Result<Arc<Self>, UpstreamError> {
        let bad = || UpstreamError::Url(up.url.to_string());
        let scheme = up.url.scheme().cloned().ok_or_else(bad)?;
        if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
            return Err(bad());
        }
        let authority = up.url.authority().cloned().ok_or_else(bad)?;
        if !matches!(up.url.path(), "" | "/") || up.url.query().is_some() {
            return Err(bad());
        }
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(up.connect_timeout));
        let tls = crate::tls::client_config(up.ca_file.as_deref())?;
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http();
        let connector = if up.http2 {
            builder.enable_http2().wrap_connector(http)
        } else {
            builder.enable_http1().wrap_connector(http)
        };
        let upstream = Upstream::new(upstream::Settings {
            scheme,
            authority: authority.clone(),
            connector,
            idle_timeout: up.pool_idle_timeout,
            max_idle: up.pool_max_idle_per_host,
            http2: up.http2,
            resent: Some(shared.metrics.upstream_resent.clone()),
        });
        Ok(Arc::new(Self {
            shared,
            upstream,
            authority,
            response_timeout: up.response_timeout,
            forward_authorization: up.forward_authorization,
        }))
    }

    /// Serves one request of the proxy listener, and logs it.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<TimedBody>,
        conn: Conn,
    ) -> Response<ProxyBody> {
        let request_id = self.shared.request_id(req.headers());
        if inspect::asks(req.method(), req.uri().path()) {
            // Answered here, never forwarded.
            let mut exchange = self.shared.begin(Door::Inspect);
            exchange.trace(|| {
                trace_context(req.headers(), conn.peer.ip(), &self.shared.trusted_proxies)
            });
            exchange.asked(req.method().as_str(), req.uri().path());
            let client = || self.shared.client(conn.peer.ip(), req.headers());
            let facts = RequestFacts {
                method: req.method(),
                path: req.uri().path(),
                query: None,
                upgrade: false,
                override_header: None,
                credentials: credentials(req.headers()),
                now: Timestamp::now(),
                client: ClientAddr::Lazy(&client),
            };
            // Boxed: rare, and its future would otherwise be part of every
            // proxied request's (see `TokenCache::lookup`).
            let res = Box::pin(inspect::answer(
                &self.shared,
                &mut exchange,
                &facts,
                &request_id,
                req.headers().get(http::header::USER_AGENT),
            ))
            .await;
            exchange.finish(res.status().as_u16(), request_id.to_str().ok());
            return res.map(Either::Right);
        }
        let mut exchange = self.shared.begin(Door::Proxy);
        exchange
            .trace(|| trace_context(req.headers(), conn.peer.ip(), &self.shared.trusted_proxies));
        // The request is consumed by forwarding: the event gets a copy.
        if exchange.logging() || exchange.traced() {
            exchange.asked(
                req.method().as_str().to_owned(),
                req.uri().path().to_owned(),
            );
        }
        let res = match Box::pin(self.forward(req, conn, &request_id, &mut exchange)).await {
            Ok(res) => res,
            Err(refusal) => {
                exchange.failed(refusal);
                self.shared
                    .render
                    .json(refusal, Some(&request_id))
                    .map(Either::Right)
            }
        };
        exchange.finish(res.status().as_u16(), request_id.to_str().ok());
        res
    }

    /// Decides, then forwards: the upstream's answer, or why there is none.
    async fn forward(
        &self,
        mut req: Request<TimedBody>,
        conn: Conn,
        request_id: &HeaderValue,
        exchange: &mut Exchange<'_, '_>,
    ) -> Result<Response<ProxyBody>, Refusal> {
        // The request is changed in place into the upstream's (not taken
        // apart and rebuilt: each is a move of its parts).
        let shared = &self.shared;
        if let Some(why) = unforwardable(&req) {
            exchange.unjudgeable(DenyCode::AmbiguousPath);
            return Err(Refusal::Because(DenyCode::AmbiguousPath, why));
        }

        // One pass over the client's names says which removals below have
        // anything to do (on most requests, none), and whether it asks
        // for an upgrade.
        let found = shared.headers.scan(req.headers());
        let identity = {
            // Without `X-Forwarded-For` (the scan saw none of its kind)
            // the client is the peer, trusted proxy or not.
            let client = || {
                if found.forwarded {
                    shared.client(conn.peer.ip(), req.headers())
                } else {
                    Client::is(conn.peer.ip().to_canonical())
                }
            };
            let facts = RequestFacts {
                method: req.method(),
                path: req.uri().path(),
                query: req.uri().query(),
                upgrade: found.upgrade,
                // Removed before forwarding.
                override_header: None,
                credentials: credentials(req.headers()),
                now: Timestamp::now(),
                client: ClientAddr::Lazy(&client),
            };
            let agent = req.headers().get(http::header::USER_AGENT);
            match exchange.decide(&facts, agent.map(|v| v.as_bytes())).await {
                Decision::Allow(p) => (
                    Some(rendered(&shared.headers, &p, Rendered::Upstream)),
                    self.forward_authorization,
                    Some(p.record.expires_header().map(crate::headers::copied)),
                ),
                // No identity; a request without a Hawzu token keeps its
                // own credentials, for the API to judge.
                Decision::Pass(p) => (
                    None,
                    self.forward_authorization || p.own_credentials(),
                    None,
                ),
                Decision::Deny(d) => return Err(d.refusal()),
            }
        };
        // `expires`: on an allow, the token's expiry for the client (`None`
        // inside: the token never expires).
        let (identity, keep_authorization, expires) = identity;

        // What the upstream is asked for, before the headers change.
        let target = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        // HTTP/2 clients send `:authority` instead of Host.
        let authority = match req.uri().authority() {
            Some(a) if !req.headers().contains_key(header::HOST) => {
                HeaderValue::from_str(a.as_str()).ok()
            }
            _ => None,
        };

        // The request as the upstream sees it.
        let h = req.headers_mut();
        if let Some(v) = authority {
            h.insert(header::HOST, v);
        }
        if found.hop_by_hop {
            strip_hop_by_hop(h);
        }
        if found.protected {
            shared.headers.strip(h);
        }
        if found.cookie {
            crate::headers::strip_console_cookie(h);
        }
        if !keep_authorization {
            h.remove(header::AUTHORIZATION);
        }
        // What is added below, in one growth of the map, not several.
        h.reserve(identity.as_ref().map_or(0, |m| m.len()) + 5);
        for (name, value) in identity.iter().flat_map(|m| m.iter()) {
            h.insert(name.clone(), value.clone());
        }
        drop(identity);
        h.insert(REQUEST_ID, request_id.clone());
        // Traces on and this request's span kept: the API's spans become
        // children of the gate's. An untrusted caller's trace was not
        // joined: the API gets the gate's own context (recorded or not) and
        // no tracestate. Otherwise the caller's trace context goes on as it
        // came.
        if let Some(tp) = exchange.traceparent()
            && let Ok(v) = HeaderValue::try_from(tp)
        {
            h.insert(TRACEPARENT, v);
            if exchange.drops_tracestate() {
                h.remove(TRACESTATE);
            }
        }
        // Trust matters only for what the client sent of these.
        let trusted = found.forwarded && {
            let peer = conn.peer.ip().to_canonical();
            let trusted = shared.trusted_proxies.trusts(peer);
            if !trusted {
                shared.trusted_proxies.untrusted_forwarder(peer);
            }
            trusted
        };
        forwarded(h, found, conn.peer, conn.tls, trusted);

        let sent = Instant::now();
        let answer =
            deadline::timeout(self.response_timeout, self.upstream.send(req, target, sent)).await;
        let metrics = &shared.metrics;
        match answer {
            Ok(Ok(mut res)) => {
                metrics.upstream(Some(res.status()), sent.elapsed());
                strip_upstream_answer(res.headers_mut(), shared.render.error_header());
                res.headers_mut()
                    .entry(REQUEST_ID)
                    .or_insert(request_id.clone());
                // The gate speaks for the token's expiry, never the upstream.
                match expires {
                    Some(Some(v)) => {
                        res.headers_mut().insert(HAWZU_TOKEN_EXPIRES, v);
                    }
                    Some(None) => {
                        res.headers_mut().remove(HAWZU_TOKEN_EXPIRES);
                    }
                    None => {}
                }
                Ok(res.map(Either::Left))
            }
            Ok(Err(e)) => {
                metrics.upstream(None, sent.elapsed());
                Err(self.upstream_failed(&e))
            }
            Err(_) => {
                metrics.upstream(None, sent.elapsed());
                Err(Refusal::UpstreamTimeout)
            }
        }
    }

    /// What a failed forward means for the client.
    fn upstream_failed(&self, failed: &Failed) -> Refusal {
        let e = match failed {
            Failed::Connect(e) => {
                tracing::warn!(upstream = %self.authority, error = %e, "upstream unreachable");
                return Refusal::UpstreamUnavailable;
            }
            Failed::Exchange(e) => &**e,
        };
        if is_body_timeout(e) {
            // The client's body came too slowly (`limits.body_read_*`): the
            // upstream request was aborted with it.
            Refusal::BodyTimeout
        } else if client_body_failed(e) {
            // The client's own body was malformed or cut short while it was
            // being sent on: the client's fault, not the upstream's.
            tracing::debug!(error = %e, "request body failed while forwarding");
            Refusal::BadRequest
        } else {
            tracing::warn!(upstream = %self.authority, error = %e, "upstream request failed");
            Refusal::UpstreamError
        }
    }
}

/// Why a request cannot be forwarded as it would be judged, if it cannot:
/// a target that is not a path (authority form, `CONNECT api:443` or
/// `GET api:443`: judged as the path "", it would go on as "/"; asterisk
/// form), or two `Host` lines (RFC 9112 §3.2 requires 400: which one the
/// API reads is its guess). O(1) on most requests: a map with no repeated
/// name has no second `Host`.
fn unforwardable<B>(req: &Request<B>) -> Option<&'static str> {
    if !req.uri().path().starts_with('/') {
        return Some(
            "The request target is not a path (authority or asterisk form); only paths are forwarded.",
        );
    }
    let h = req.headers();
    if h.len() != h.keys_len() && h.get_all(header::HOST).iter().nth(1).is_some() {
        return Some("The request has more than one Host header.");
    }
    None
}

/// Whether a forward failed because the request body (the client's side)
/// failed: hyper reports the body's error as a "user" error.
fn client_body_failed(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(err) = source {
        if let Some(h) = err.downcast_ref::<hyper::Error>()
            && h.is_user()
        {
            return true;
        }
        source = err.source();
    }
    false
}

/// Appends this hop to `X-Forwarded-For`, `-Proto` and `-Host`. What an
/// untrusted peer sent in them (or in `Forwarded`, `X-Real-IP`) is dropped
/// first: the upstream learns only what a trusted hop or the gate saw.
/// Their other spellings (`X_Forwarded_For`, `X.Forwarded.For`) are
/// dropped from anyone.
/// `found` is what [`IdentityHeaders::scan`] found in `h`: with none of
/// these names, nothing is looked up before the three are set.
///
/// [`IdentityHeaders::scan`]: crate::headers::IdentityHeaders::scan
fn forwarded(h: &mut HeaderMap, found: Found, peer: SocketAddr, tls: bool, trusted: bool) {
    if found.forwarded_misspelled {
        strip_misspelled(h, &FORWARDED);
    }
    let keep = found.forwarded && trusted;
    if found.forwarded && !trusted {
        for name in FORWARDED {
            h.remove(name);
        }
    }
    // A Host that is not visible ASCII is not repeated.
    let host = h.get(header::HOST).filter(|v| v.to_str().is_ok()).cloned();
    let proto = HeaderValue::from_static(if tls { "https" } else { "http" });
    set(h, X_FORWARDED_FOR, ip_value(peer.ip()), keep);
    set(h, X_FORWARDED_PROTO, proto, keep);
    if let Some(host) = host {
        set(h, X_FORWARDED_HOST, host, keep);
    }
}

/// Sets `name` to `value`; with `keep`, after what `h` holds of it already
/// (a trusted hop's list: several lines become one, joined in order).
fn set(h: &mut HeaderMap, name: http::HeaderName, value: HeaderValue, keep: bool) {
    if !keep || !h.contains_key(&name) {
        h.insert(name, value);
        return;
    }
    // Only what reads as visible ASCII of what the hop sent.
    let mut joined = Vec::new();
    for v in h.get_all(&name).iter().filter_map(|v| v.to_str().ok()) {
        joined.extend_from_slice(v.as_bytes());
        joined.extend_from_slice(b", ");
    }
    joined.extend_from_slice(value.as_bytes());
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        h.insert(name, v);
    }
}

#[cfg(test)]
#[path = "proxy_tests.rs"]
mod tests;
