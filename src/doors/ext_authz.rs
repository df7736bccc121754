//! Envoy ext_authz gRPC door (`listen.grpc`):
//! `envoy.service.auth.v3.Authorization/Check`, spoken by Envoy, Envoy
//! Gateway `SecurityPolicy` extAuth, Istio `CUSTOM` authorization and
//! Contour.
//!
//! Allow → `OkHttpResponse`: the identity headers in `headers`, overwriting;
//! in `headers_to_remove`, `authorization` and every protected header the
//! client sent (identity-prefixed, on `headers.strip`, or a forwarded header
//! spelled with another separator than `-`) that the answer does not set (Envoy removes after
//! setting, so a header both set and removed would reach the upstream
//! nowhere). Deny → `DeniedHttpResponse` with the status, the challenge, the
//! deny code header and the JSON body. The door translates; `decide` decides.

use std::borrow::Cow;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::IpAddr;
use std::sync::Arc;

use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse, HeaderAppendAction,
};
use envoy_types::ext_authz::v3::{CheckResponseExt, OkHttpResponseBuilder};
use envoy_types::pb::envoy::config::core::v3::HeaderValue as CoreHeaderValue;
use http::{HeaderName, HeaderValue, Method};
use jiff::Timestamp;
use prometheus::IntCounter;

use super::Shared;
use super::lifecycle::Exchange;
use crate::decide::{Client, ClientAddr, Credentials, Decision, RequestFacts};
use crate::headers::{HAWZU_TOKEN_EXPIRES, HTTP2_SETTINGS, UPGRADE};
use crate::metrics::Door;
use crate::refusal::{DenyCode, GRPC_STATUS, GrpcCode, Refusal};
use crate::traces::{CallerTrace, TRACEPARENT, TRACESTATE};

/// The gRPC door.
#[derive(Debug, Clone)]
pub struct ExtAuthz {
    shared: Arc<Shared>,
    /// `limits.max_grpc_message_bytes`.
    max_message: usize,
    /// Messages refused for their size.
    too_large: IntCounter,
}

impl ExtAuthz {
    /// The door, reading messages of at most `max_message` bytes.
    pub fn new(shared: Arc<Shared>, max_message: usize) -> Self {
        let too_large = shared.metrics.overload("grpc", "message_size");
        Self {
            shared,
            max_message,
            too_large,
        }
    }

    /// The tonic service to serve on `listen.grpc`. tonic reads a message
    /// whole before decoding it: its limit (4 MiB by default) is what one
    /// stream may hold, so it is the size of real checks, not tonic's.
    pub fn service(self) -> AuthorizationServer<Self> {
        let max = self.max_message;
        AuthorizationServer::new(self).max_decoding_message_size(max)
    }

    /// Renames tonic's refusal of a message over the limit — made from
    /// the message's prefix, before any of it is buffered — to gRPC's code
    /// for it: tonic says `OUT_OF_RANGE`, gRPC's own servers and status
    /// table `RESOURCE_EXHAUSTED`. The door never answers `OUT_OF_RANGE`
    /// itself, so that code is the limit here.
    pub fn name_too_large<B>(&self, res: &mut http::Response<B>) {
        if let Some(status) = res.headers_mut().get_mut(GRPC_STATUS)
            && status == GrpcCode::OutOfRange.as_str()
        {
            *status = HeaderValue::from_static(GrpcCode::ResourceExhausted.as_str());
            self.too_large.inc();
            tracing::debug!(
                limit = self.max_message,
                "gRPC message over limits.max_grpc_message_bytes: refused"
            );
        }
    }

    /// Answers one check from `peer` (the caller, when known).
    pub async fn answer(&self, req: &CheckRequest, peer: Option<IpAddr>) -> CheckResponse {
        // Read before the exchange begins: the access event borrows from it.
        let checked = facts_from_check(req);
        let mut exchange = self.shared.begin(Door::Grpc);
        exchange.trace(|| {
            let headers = checked.as_ref().ok().map(|c| &c.headers);
            let get = |name: &str| headers.and_then(|h| h.get(name)).map(String::as_str);
            CallerTrace {
                traceparent: get(TRACEPARENT),
                tracestate: get(TRACESTATE),
                // As for the client's address: Envoy, when trusted or unknown.
                trusted: peer.is_none_or(|p| self.shared.trusted_proxies.trusts(p.to_canonical())),
            }
        });
        let (res, request_id) = match &checked {
            Ok(checked) => {
                exchange.asked(checked.method.as_str(), checked.path);
                // As at every door: kept only when sane (logged, reflected).
                let request_id = checked
                    .headers
                    .get("x-request-id")
                    .map(String::as_str)
                    .filter(|id| crate::web::sane_request_id(id.as_bytes()));
                let res = self
                    .judge(&mut exchange, req, checked, request_id, peer)
                    .await;
                (res, request_id)
            }
            Err(Unjudgeable { path }) => {
                // Envoy did not say what request it asks about.
                exchange.asked("", *path);
                exchange.unjudgeable(DenyCode::AmbiguousPath);
                (self.denied(DenyCode::AmbiguousPath.into(), None), None)
            }
        };
        exchange.finish(http_status(&res), request_id);
        res
    }

    /// Decides for a check that says what it asks about, and renders it.
    async fn judge(
        &self,
        exchange: &mut Exchange<'_, '_>,
        req: &CheckRequest,
        checked: &CheckFacts<'_>,
        request_id: Option<&str>,
        peer: Option<IpAddr>,
    ) -> CheckResponse {
        let CheckFacts {
            headers: sent,
            method,
            path,
            query,
            upgrade,
            credentials,
        } = checked;
        let client = || self.client(req, peer);
        let facts = RequestFacts {
            method,
            path,
            query: *query,
            upgrade: *upgrade,
            // Named for removal in the answer.
            override_header: None,
            credentials: *credentials,
            now: Timestamp::now(),
            client: ClientAddr::Lazy(&client),
        };
        let agent = sent.get("user-agent").map(String::as_bytes);
        match exchange.decide(&facts, agent).await {
            Decision::Allow(p) => {
                let headers = &self.shared.headers;
                let mut ok = OkHttpResponseBuilder::new();
                let values = headers.values(&p);
                // What is set, as set: a value skipped (not header-safe)
                // leaves its name to be removed, not the client's.
                let set: Vec<&HeaderName> = values.iter().map(|(name, _)| *name).collect();
                for (name, value) in &values {
                    ok.add_header(
                        name.as_str(),
                        value.to_str().unwrap_or_default(),
                        Some(HeaderAppendAction::OverwriteIfExistsOrAdd),
                        false,
                    );
                }
                let client = sent.keys().map(String::as_str);
                for name in headers.removals(client, &set, false) {
                    ok.remove_header(&name);
                }
                // Envoy adds it to the response its client gets.
                if let Some(v) = p.record.expires_header() {
                    ok.add_response_header(
                        HAWZU_TOKEN_EXPIRES.as_str(),
                        v.to_str().unwrap_or_default(),
                        Some(HeaderAppendAction::OverwriteIfExistsOrAdd),
                        false,
                    );
                }
                let mut res = CheckResponse::with_status(tonic::Status::ok("allowed"));
                res.set_http_response(ok);
                res
            }
            Decision::Pass(p) => {
                // No identity: only the protected headers the client sent
                // go, and `authorization` unless it is the request's own.
                let mut ok = OkHttpResponseBuilder::new();
                let client = sent.keys().map(String::as_str);
                for name in self
                    .shared
                    .headers
                    .removals(client, &[], p.own_credentials())
                {
                    ok.remove_header(&name);
                }
                let mut res = CheckResponse::with_status(tonic::Status::ok("passed"));
                res.set_http_response(ok);
                res
            }
            Decision::Deny(d) => self.denied(d.refusal(), request_id),
        }
    }

    /// The client of a check: the downstream address Envoy reports, when the
    /// caller is a trusted proxy (or unknown). Unnamed when a trusted caller
    /// reports none (or not an address), or when the caller is outside
    /// `trusted_proxies` (its word is not taken): Envoy is not the client
    /// (it is the hop counts key on).
    fn client(&self, req: &CheckRequest, peer: Option<IpAddr>) -> Client {
        use envoy_types::pb::envoy::config::core::v3::address::Address;
        let reported = || {
            let address = req.attributes.as_ref()?.source.as_ref()?.address.as_ref()?;
            match address.address.as_ref()? {
                Address::SocketAddress(s) => s.address.parse::<IpAddr>().ok(),
                _ => None,
            }
        };
        match peer {
            Some(p) if !self.shared.trusted_proxies.trusts(p.to_canonical()) => {
                let p = p.to_canonical();
                if reported().is_some_and(|ip| ip.to_canonical() != p) {
                    self.shared.trusted_proxies.untrusted_checker(p);
                }
                // Envoy is not the client, and its word is not taken.
                Client {
                    named: None,
                    hop: p,
                }
            }
            _ => Client {
                named: reported().map(|ip| ip.to_canonical()),
                hop: peer.map_or(IpAddr::from([0, 0, 0, 0]), |p| p.to_canonical()),
            },
        }
    }

    /// Envoy's answer to the client for a refused check.
    fn denied(&self, refusal: Refusal, request_id: Option<&str>) -> CheckResponse {
        let id = request_id
            .and_then(|v| HeaderValue::from_str(v).ok())
            .unwrap_or_else(|| self.shared.request_id(&http::HeaderMap::new()));
        self.shared.render.envoy_denied(refusal, &id)
    }
}

/// The HTTP status Envoy sends for a check's answer (the access event's).
fn http_status(res: &CheckResponse) -> u16 {
    use envoy_types::ext_authz::v3::pb::HttpResponse;
    match &res.http_response {
        Some(HttpResponse::DeniedResponse(d)) => d
            .status
            .as_ref()
            .and_then(|s| u16::try_from(s.code).ok())
            .unwrap_or(403),
        _ => 200,
    }
}

// === translation ===

/// The request a check asks about, read from its HTTP attributes: what the
/// door builds [`RequestFacts`] from. Pure, no I/O; the fuzz target
/// `ext_authz_facts` and the tests call it directly.
#[derive(Debug, Clone)]
pub struct CheckFacts<'a> {
    /// The request's headers, names in lower case, a repeated name's values
    /// joined with `,`: Envoy's `headers` as sent, or its `header_map` (the
    /// list it sends instead with `encode_raw_headers`) read into that form.
    pub headers: Cow<'a, HashMap<String, String>>,
    pub method: Method,
    /// The request target without its query, undecoded.
    pub path: &'a str,
    /// The query of the request target, undecoded.
    pub query: Option<&'a str>,
    /// The request asks to switch protocols (an `upgrade` or
    /// `http2-settings` header).
    pub upgrade: bool,
    pub credentials: Credentials<'a>,
}

/// A check that does not say what request it asks about: no HTTP
/// attributes, a method that is not a method, or its headers both as a map
/// and as a list (Envoy sends one or the other). Carries the path (empty
/// without attributes) for the access event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unjudgeable<'a> {
    pub path: &'a str,
}

/// Translates a check into decision input; refuses one that cannot be
/// judged.
pub fn facts_from_check(req: &CheckRequest) -> Result<CheckFacts<'_>, Unjudgeable<'_>> {
    let http = req
        .attributes
        .as_ref()
        .and_then(|a| a.request.as_ref())
        .and_then(|r| r.http.as_ref())
        .ok_or(Unjudgeable { path: "" })?;
    let method =
        Method::from_bytes(http.method.as_bytes()).map_err(|_| Unjudgeable { path: &http.path })?;
    // `path` is the request target as received: path and query, undecoded.
    // Envoy puts the query in `path`; a client that fills `query` instead
    // is read too.
    let (path, query) = match http.path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (
            http.path.as_str(),
            Some(http.query.as_str()).filter(|q| !q.is_empty()),
        ),
    };
    let listed = http.header_map.as_ref().filter(|m| !m.headers.is_empty());
    let (headers, credentials) = match listed {
        None => {
            // Envoy lower-cases names and joins repeated headers with ","; a
            // joined Authorization is not one bearer token and is refused as
            // malformed. A check that spells the name in two cases (never
            // Envoy; found by fuzzing) has two values, as an HTTP door would
            // read them: `Several`. One pass over a few dozen names at most.
            let values = http
                .headers
                .iter()
                .filter(|(name, _)| name.eq_ignore_ascii_case("authorization"))
                .map(|(_, v)| v.as_bytes());
            (Cow::Borrowed(&http.headers), credentials_of(values))
        }
        Some(_) if !http.headers.is_empty() => return Err(Unjudgeable { path: &http.path }),
        Some(list) => {
            // `encode_raw_headers`: one entry per header line, repeats kept
            // apart, so two Authorization lines are `Several`, as at the
            // HTTP doors.
            let values = list
                .headers
                .iter()
                .filter(|h| h.key.eq_ignore_ascii_case("authorization"))
                .map(raw_value);
            (Cow::Owned(merged(&list.headers)), credentials_of(values))
        }
    };
    let upgrade = headers.keys().any(|name| {
        name.eq_ignore_ascii_case(UPGRADE.as_str())
            || name.eq_ignore_ascii_case(HTTP2_SETTINGS.as_str())
    });
    Ok(CheckFacts {
        headers,
        method,
        path,
        query,
        upgrade,
        credentials,
    })
}

/// None, one or several values of a header.
fn credentials_of<'a>(mut values: impl Iterator<Item = &'a [u8]>) -> Credentials<'a> {
    match (values.next(), values.next()) {
        (None, _) => Credentials::None,
        (Some(v), None) => Credentials::One(v),
        (Some(_), Some(_)) => Credentials::Several,
    }
}

/// A listed header's value: `raw_value` as Envoy fills it, else `value`.
fn raw_value(h: &CoreHeaderValue) -> &[u8] {
    if h.raw_value.is_empty() {
        h.value.as_bytes()
    } else {
        &h.raw_value
    }
}

/// A header list in the form of Envoy's `headers` map: names in lower case,
/// a repeated name's values joined with `,` in order. A value that is not
/// UTF-8 keeps its other characters (U+FFFD for the rest; Envoy writes `!`).
fn merged(list: &[CoreHeaderValue]) -> HashMap<String, String> {
    let mut map: HashMap<String, String> = HashMap::with_capacity(list.len());
    for h in list {
        let value = String::from_utf8_lossy(raw_value(h));
        match map.entry(h.key.to_ascii_lowercase()) {
            Entry::Occupied(mut joined) => {
                let joined = joined.get_mut();
                joined.push(',');
                joined.push_str(&value);
            }
            Entry::Vacant(slot) => {
                slot.insert(value.into_owned());
            }
        }
    }
    map
}

#[tonic::async_trait]
impl Authorization for ExtAuthz {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let peer = request
            .extensions()
            .get::<crate::doors::listener::Conn>()
            .map(|c| c.peer.ip());
        Ok(tonic::Response::new(
            self.answer(request.get_ref(), peer).await,
        ))
    }
}

#[cfg(test)]
#[path = "ext_authz_tests.rs"]
mod tests;
