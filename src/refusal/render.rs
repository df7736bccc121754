//! Rendering: a [`Refusal`] into each wire form, once — the JSON answer,
//! the empty answer `auth_request` wants, Envoy's `DeniedHttpResponse`,
//! a trailers-only gRPC answer and a raw HTTP/1.1 answer.

use bytes::Bytes;
use envoy_types::ext_authz::v3::DeniedHttpResponseBuilder;
use envoy_types::ext_authz::v3::pb::{HeaderAppendAction, HttpStatusCode};
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

use super::{DenyCode, GRPC_STATUS, Refusal, RetryAfter};
use crate::web::{REQUEST_ID, json};

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
        h.insert(GRPC_STATUS, HeaderValue::from_static(r.grpc().as_str()));
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
pub(super) fn grpc_percent_encode(text: &str) -> String {
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
