//! Refusals: every way a request is refused or fails, as one typed value.
//!
//! A [`Refusal`] is a deny code from the decision ([`DenyCode`]) or one of
//! the gate's own answers (overloaded, a body that came too slowly, an
//! upstream that failed, a path no door serves). Each knows its code, HTTP
//! status, gRPC status, message, challenge and `Retry-After`; the
//! [`Render`] below turns one into each wire form exactly once: the JSON
//! answer, the empty-bodied answer `auth_request` wants, Envoy's
//! `DeniedHttpResponse`, and a trailers-only gRPC answer. No other module
//! spells a refusal code or builds an error body.
//!
//! This module decides nothing and imports nothing above [`crate::web`].

use bytes::Bytes;
use envoy_types::ext_authz::v3::DeniedHttpResponseBuilder;
use envoy_types::ext_authz::v3::pb::{HeaderAppendAction, HttpStatusCode};
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

use crate::web::{REQUEST_ID, json};

/// Why a request was refused. The string forms are the documented codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DenyCode {
    MissingToken,
    MalformedToken,
    UnknownToken,
    TokenRevoked,
    TokenDisabled,
    TokenExpired,
    InsufficientRole,
    WorkspaceMismatch,
    ProjectNotGranted,
    NoMatchingRule,
    AmbiguousPath,
    StoreUnavailable,
    RateLimited,
    MethodOverride,
    UpgradeRefused,
    MissingOriginal,
}

impl DenyCode {
    /// Every code, in declaration order (metrics index by it).
    pub const ALL: [DenyCode; 16] = [
        DenyCode::MissingToken,
        DenyCode::MalformedToken,
        DenyCode::UnknownToken,
        DenyCode::TokenRevoked,
        DenyCode::TokenDisabled,
        DenyCode::TokenExpired,
        DenyCode::InsufficientRole,
        DenyCode::WorkspaceMismatch,
        DenyCode::ProjectNotGranted,
        DenyCode::NoMatchingRule,
        DenyCode::AmbiguousPath,
        DenyCode::StoreUnavailable,
        DenyCode::RateLimited,
        DenyCode::MethodOverride,
        DenyCode::UpgradeRefused,
        DenyCode::MissingOriginal,
    ];

    /// The code in `X-Hawzu-Error` and in JSON bodies.
    pub fn as_str(self) -> &'static str {
        match self {
            DenyCode::MissingToken => "missing_token",
            DenyCode::MalformedToken => "malformed_token",
            DenyCode::UnknownToken => "unknown_token",
            DenyCode::TokenRevoked => "token_revoked",
            DenyCode::TokenDisabled => "token_disabled",
            DenyCode::TokenExpired => "token_expired",
            DenyCode::InsufficientRole => "insufficient_role",
            DenyCode::WorkspaceMismatch => "workspace_mismatch",
            DenyCode::ProjectNotGranted => "project_not_granted",
            DenyCode::NoMatchingRule => "no_matching_rule",
            DenyCode::AmbiguousPath => "ambiguous_path",
            DenyCode::StoreUnavailable => "store_unavailable",
            DenyCode::RateLimited => "rate_limited",
            DenyCode::MethodOverride => "method_override",
            DenyCode::UpgradeRefused => "upgrade_refused",
            DenyCode::MissingOriginal => "missing_original",
        }
    }

    /// The HTTP status every door uses for this code.
    pub fn status(self) -> u16 {
        match self {
            DenyCode::MissingToken
            | DenyCode::MalformedToken
            | DenyCode::UnknownToken
            | DenyCode::TokenRevoked
            | DenyCode::TokenDisabled
            | DenyCode::TokenExpired => 401,
            DenyCode::InsufficientRole
            | DenyCode::WorkspaceMismatch
            | DenyCode::ProjectNotGranted
            | DenyCode::NoMatchingRule => 403,
            DenyCode::AmbiguousPath
            | DenyCode::MethodOverride
            | DenyCode::UpgradeRefused
            | DenyCode::MissingOriginal => 400,
            DenyCode::StoreUnavailable => 503,
            DenyCode::RateLimited => 429,
        }
    }

    /// One sentence for a person.
    pub fn message(self) -> &'static str {
        match self {
            DenyCode::MissingToken => {
                "No access token was sent; send `Authorization: Bearer hwz_…`."
            }
            DenyCode::MalformedToken => {
                "The Authorization header does not hold a well-formed Hawzu access token."
            }
            DenyCode::UnknownToken => "This access token is not known.",
            DenyCode::TokenRevoked => "This access token has been revoked.",
            DenyCode::TokenDisabled => "This access token is disabled.",
            DenyCode::TokenExpired => "This access token has expired.",
            DenyCode::InsufficientRole => "The token's role does not allow this request.",
            DenyCode::WorkspaceMismatch => "The token belongs to another workspace.",
            DenyCode::ProjectNotGranted => "The token is not linked to this project.",
            DenyCode::NoMatchingRule => {
                "Access tokens cannot be used on this path; they work on API routes only."
            }
            DenyCode::AmbiguousPath => {
                "The request path could be read more than one way and is refused."
            }
            DenyCode::StoreUnavailable => "The token store cannot be reached; try again shortly.",
            DenyCode::RateLimited => {
                "Too many requests with invalid tokens from this address; wait for Retry-After."
            }
            DenyCode::MethodOverride => {
                "A `_method` query parameter asks for another method; send the request with the method it means."
            }
            DenyCode::UpgradeRefused => {
                "Protocol upgrades (h2c, WebSocket) are not allowed through the gate."
            }
            DenyCode::MissingOriginal => {
                "The proxy did not say which request it asks about: /auth/nginx needs X-Original-Method and X-Original-URI (or X-Original-URL), /auth/traefik needs X-Forwarded-Method and X-Forwarded-Uri (see deploy/)."
            }
        }
    }

    /// The `WWW-Authenticate` challenge, where the code has one.
    pub fn challenge(self) -> Option<&'static str> {
        match self {
            DenyCode::MissingToken => Some(r#"Bearer realm="hawzu""#),
            DenyCode::MalformedToken => Some(
                r#"Bearer realm="hawzu", error="invalid_token", error_description="The Authorization header does not hold a well-formed Hawzu access token""#,
            ),
            DenyCode::UnknownToken => Some(
                r#"Bearer realm="hawzu", error="invalid_token", error_description="This access token is not known""#,
            ),
            DenyCode::TokenRevoked => Some(
                r#"Bearer realm="hawzu", error="invalid_token", error_description="This access token has been revoked""#,
            ),
            DenyCode::TokenDisabled => Some(
                r#"Bearer realm="hawzu", error="invalid_token", error_description="This access token is disabled""#,
            ),
            DenyCode::TokenExpired => Some(
                r#"Bearer realm="hawzu", error="invalid_token", error_description="This access token has expired""#,
            ),
            DenyCode::InsufficientRole
            | DenyCode::WorkspaceMismatch
            | DenyCode::ProjectNotGranted
            | DenyCode::NoMatchingRule => {
                Some(r#"Bearer realm="hawzu", error="insufficient_scope""#)
            }
            DenyCode::AmbiguousPath
            | DenyCode::StoreUnavailable
            | DenyCode::RateLimited
            | DenyCode::MethodOverride
            | DenyCode::UpgradeRefused
            | DenyCode::MissingOriginal => None,
        }
    }
}

/// Every way a request is refused or fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// The decision refused the request.
    Deny(DenyCode),
    /// The decision refused the request, and the message says why more
    /// closely than the code's own (as `explain` words it).
    Because(DenyCode, &'static str),
    /// The listener is serving `limits.max_requests` already.
    Overloaded,
    /// The request body came too slowly (`limits.body_read_timeout`,
    /// `limits.min_body_rate`).
    BodyTimeout,
    /// The request body could not be read (malformed or cut short).
    BadRequest,
    /// The upstream could not be connected to.
    UpstreamUnavailable,
    /// The upstream failed while answering, or the request could not be
    /// sent on.
    UpstreamError,
    /// The upstream did not answer within `upstream.response_timeout`.
    UpstreamTimeout,
    /// No endpoint of this listener has this path; the text names the
    /// ones it has.
    NotFound(&'static str),
}

impl From<DenyCode> for Refusal {
    fn from(code: DenyCode) -> Self {
        Refusal::Deny(code)
    }
}

/// A gRPC status code (the numbers of `google.rpc.Code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrpcCode {
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    Internal = 13,
    Unavailable = 14,
    Unauthenticated = 16,
}

impl GrpcCode {
    /// The `grpc-status` value.
    pub fn as_str(self) -> &'static str {
        match self {
            GrpcCode::InvalidArgument => "3",
            GrpcCode::DeadlineExceeded => "4",
            GrpcCode::NotFound => "5",
            GrpcCode::PermissionDenied => "7",
            GrpcCode::ResourceExhausted => "8",
            GrpcCode::Internal => "13",
            GrpcCode::Unavailable => "14",
            GrpcCode::Unauthenticated => "16",
        }
    }

    /// As tonic knows it.
    pub fn tonic(self) -> tonic::Code {
        tonic::Code::from_i32(self as i32)
    }
}

/// How long a client should wait before trying again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAfter {
    /// One second: the gate or the store is busy or away.
    OneSecond,
    /// The failed-auth limit's window (`limits.failed_auth`).
    FailedAuth,
}

impl Refusal {
    /// The refusal with its code's own message (for matching on the code).
    fn plain(self) -> Self {
        match self {
            Refusal::Because(c, _) => Refusal::Deny(c),
            r => r,
        }
    }

    /// The code in `X-Hawzu-Error`, in JSON bodies, metrics and logs.
    pub fn code(self) -> &'static str {
        match self {
            Refusal::Deny(c) | Refusal::Because(c, _) => c.as_str(),
            Refusal::Overloaded => "overloaded",
            Refusal::BodyTimeout => "body_timeout",
            Refusal::BadRequest => "bad_request",
            Refusal::UpstreamUnavailable => "upstream_unavailable",
            Refusal::UpstreamError => "upstream_error",
            Refusal::UpstreamTimeout => "upstream_timeout",
            Refusal::NotFound(_) => "not_found",
        }
    }

    /// The HTTP status.
    pub fn status(self) -> StatusCode {
        match self {
            Refusal::Deny(c) | Refusal::Because(c, _) => {
                StatusCode::from_u16(c.status()).unwrap_or(StatusCode::FORBIDDEN)
            }
            Refusal::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Refusal::BadRequest => StatusCode::BAD_REQUEST,
            Refusal::UpstreamUnavailable | Refusal::UpstreamError => StatusCode::BAD_GATEWAY,
            Refusal::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Refusal::NotFound(_) => StatusCode::NOT_FOUND,
        }
    }

    /// The gRPC status: of the ext_authz check for a deny, of the call
    /// itself for the listener's own refusals.
    pub fn grpc(self) -> GrpcCode {
        match self {
            Refusal::Deny(c) | Refusal::Because(c, _) => match c.status() {
                401 => GrpcCode::Unauthenticated,
                503 => GrpcCode::Unavailable,
                429 => GrpcCode::ResourceExhausted,
                400 => GrpcCode::InvalidArgument,
                _ => GrpcCode::PermissionDenied,
            },
            // The message did not arrive in time.
            Refusal::BodyTimeout | Refusal::UpstreamTimeout => GrpcCode::DeadlineExceeded,
            Refusal::Overloaded | Refusal::UpstreamUnavailable => GrpcCode::Unavailable,
            Refusal::BadRequest => GrpcCode::InvalidArgument,
            Refusal::UpstreamError => GrpcCode::Internal,
            Refusal::NotFound(_) => GrpcCode::NotFound,
        }
    }

    /// One sentence for a person.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::Deny(c) => c.message(),
            Refusal::Because(_, why) => why,
            Refusal::Overloaded => {
                "The gate is serving as many connections or requests as it may; try again shortly."
            }
            Refusal::BodyTimeout => {
                "The request body came too slowly (limits.body_read_timeout, limits.min_body_rate); the request was aborted."
            }
            Refusal::BadRequest => "The request body could not be read.",
            Refusal::UpstreamUnavailable => "The API behind the gate cannot be reached.",
            Refusal::UpstreamError => "The API behind the gate failed to answer.",
            Refusal::UpstreamTimeout => "The API behind the gate did not answer in time.",
            Refusal::NotFound(m) => m,
        }
    }

    /// The `WWW-Authenticate` challenge, where there is one.
    pub fn challenge(self) -> Option<&'static str> {
        match self {
            Refusal::Deny(c) | Refusal::Because(c, _) => c.challenge(),
            _ => None,
        }
    }

    /// The `Retry-After` the answer carries, if any.
    pub fn retry_after(self) -> Option<RetryAfter> {
        match self.plain() {
            Refusal::Deny(DenyCode::StoreUnavailable) | Refusal::Overloaded => {
                Some(RetryAfter::OneSecond)
            }
            Refusal::Deny(DenyCode::RateLimited) => Some(RetryAfter::FailedAuth),
            _ => None,
        }
    }
}

// === rendering ===

/// Renders refusals with this gate's configured names and values: the
/// error-code header (`X-Hawzu-Error` by default) and the failed-auth
/// `Retry-After`. The only place a refusal becomes bytes.
#[derive(Debug, Clone)]
pub struct Render {
    error_header: HeaderName,
    failed_auth_retry_after: HeaderValue,
}

impl Render {
    pub fn new(error_header: HeaderName, failed_auth_retry_after: HeaderValue) -> Self {
        Self {
            error_header,
            failed_auth_retry_after,
        }
    }

    /// The header carrying the refusal code (`X-Hawzu-Error`).
    pub fn error_header(&self) -> &HeaderName {
        &self.error_header
    }

    /// The headers every HTTP form carries: the code, the challenge and
    /// `Retry-After`.
    pub fn headers(&self, h: &mut HeaderMap, r: Refusal) {
        h.insert(
            self.error_header.clone(),
            HeaderValue::from_static(r.code()),
        );
        if let Some(challenge) = r.challenge() {
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        match r.retry_after() {
            Some(RetryAfter::OneSecond) => {
                h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            Some(RetryAfter::FailedAuth) => {
                h.insert(header::RETRY_AFTER, self.failed_auth_retry_after.clone());
            }
            None => {}
        }
    }

    /// The JSON answer: `{"error", "message", "request_id"}` with the
    /// headers above and `X-Request-Id` (the id is left out where no door
    /// gave the request one).
    pub fn json(&self, r: Refusal, request_id: Option<&HeaderValue>) -> Response<Full<Bytes>> {
        let mut res = json_answer(r, request_id);
        let h = res.headers_mut();
        self.headers(h, r);
        if let Some(id) = request_id {
            h.insert(REQUEST_ID, id.clone());
        }
        res
    }

    /// The answer for nginx `auth_request`: no body (nginx discards it, and
    /// keeps its keep-alive connection only for empty answers), and 401 for
    /// `rate_limited` (nginx passes on only 401 and 403 from a subrequest;
    /// the code header still says which).
    pub fn empty(&self, r: Refusal) -> Response<Full<Bytes>> {
        let mut res = Response::new(Full::new(Bytes::new()));
        *res.status_mut() = match r.plain() {
            Refusal::Deny(DenyCode::RateLimited) => StatusCode::UNAUTHORIZED,
            r => r.status(),
        };
        let h = res.headers_mut();
        self.headers(h, r);
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        res
    }

    /// Envoy's `DeniedHttpResponse` (the answer Envoy sends the client)
    /// with the check's own gRPC status.
    pub fn envoy_denied(
        &self,
        r: Refusal,
        request_id: &HeaderValue,
    ) -> envoy_types::ext_authz::v3::pb::CheckResponse {
        use envoy_types::ext_authz::v3::CheckResponseExt;
        let mut denied = DeniedHttpResponseBuilder::new();
        let status = HttpStatusCode::try_from(i32::from(r.status().as_u16()))
            .unwrap_or(HttpStatusCode::Forbidden);
        denied.set_http_status(status);
        let mut h = HeaderMap::new();
        self.headers(&mut h, r);
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(REQUEST_ID, request_id.clone());
        for (name, value) in &h {
            denied.add_header(
                name.as_str(),
                value.to_str().unwrap_or_default(),
                Some(HeaderAppendAction::OverwriteIfExistsOrAdd),
                false,
            );
        }
        denied.set_body(body(r, Some(request_id)).to_string());
        let grpc = tonic::Status::new(r.grpc().tonic(), r.code());
        let mut res = envoy_types::ext_authz::v3::pb::CheckResponse::with_status(grpc);
        res.set_http_response(denied);
        res
    }

    /// A whole HTTP/1.1 answer that closes the connection, as bytes: for a
    /// connection refused before any HTTP was read (`limits.max_connections`).
    pub fn http1_close(&self, r: Refusal) -> Bytes {
        use std::fmt::Write as _;
        let body = body(r, None).to_string();
        let mut h = HeaderMap::new();
        self.headers(&mut h, r);
        let status = r.status();
        let mut out = format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncache-control: no-store\r\nconnection: close\r\ncontent-length: {}\r\n",
            status.as_str(),
            status.canonical_reason().unwrap_or(""),
            body.len()
        );
        for (name, value) in &h {
            if let Ok(v) = value.to_str() {
                let _ = write!(out, "{name}: {v}\r\n");
            }
        }
        out.push_str("\r\n");
        out.push_str(&body);
        Bytes::from(out)
    }

    /// A trailers-only gRPC answer (`grpc-status`, `grpc-message` in the
    /// headers), as the listener sends it before any door ran.
    pub fn grpc_trailers(&self, r: Refusal) -> Response<Full<Bytes>> {
        let mut res = Response::new(Full::new(Bytes::new()));
        let h = res.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        h.insert("grpc-status", HeaderValue::from_static(r.grpc().as_str()));
        let message = format!("hawzu-gate {}: {}", r.code(), r.message());
        if let Ok(v) = HeaderValue::from_str(&grpc_percent_encode(&message)) {
            h.insert("grpc-message", v);
        }
        if r.retry_after() == Some(RetryAfter::OneSecond) {
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        res
    }
}

/// The JSON answer alone, for a listener with no code header to set (ops,
/// admin): status and `{"error", "message"[, "request_id"]}`.
pub fn json_answer(r: Refusal, request_id: Option<&HeaderValue>) -> Response<Full<Bytes>> {
    json(r.status(), &body(r, request_id))
}

/// `grpc-message` encoding (gRPC over HTTP/2): bytes outside printable
/// ASCII, and `%`, as `%XX`.
fn grpc_percent_encode(text: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(text.len());
    for &b in text.as_bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The JSON body of a refusal.
fn body(r: Refusal, request_id: Option<&HeaderValue>) -> serde_json::Value {
    let mut body = serde_json::json!({
        "error": r.code(),
        "message": r.message(),
    });
    if let Some(id) = request_id {
        body["request_id"] = id.to_str().unwrap_or("").into();
    }
    body
}

#[cfg(test)]
#[path = "refusal_tests.rs"]
mod tests;
