//! HTTP helpers shared by every listener: the JSON answer, the request-id
//! header and the ids the gate makes. Below the doors, ops and admin; knows
//! nothing of tokens, decisions or configuration.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

/// `X-Request-Id`: taken from the client when sane, else made here; sent
/// upstream and back.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A JSON answer with `no-store` caching.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut res = Response::new(Full::new(Bytes::from(body)));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// Request ids: a random per-process prefix and a counter; unique, cheap,
/// no system call per request.
#[derive(Debug)]
pub struct RequestIds {
    prefix: String,
    next: AtomicU64,
}

impl Default for RequestIds {
    fn default() -> Self {
        Self::new()
    }
}

impl RequestIds {
    pub fn new() -> Self {
        let mut buf = [0u8; 10];
        let prefix = match crate::token::value::fill_base62(&mut buf) {
            Ok(()) => buf.iter().map(|&b| b as char).collect(),
            Err(_) => format!("{:x}", std::process::id()),
        };
        Self {
            prefix,
            next: AtomicU64::new(1),
        }
    }

    /// The request's id: the client's `X-Request-Id` when it is sane
    /// (1–128 visible ASCII characters), else a new one.
    pub fn of(&self, headers: &HeaderMap) -> HeaderValue {
        headers
            .get(REQUEST_ID)
            .filter(|v| {
                let b = v.as_bytes();
                !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic())
            })
            .cloned()
            .unwrap_or_else(|| self.next())
    }

    /// A new id.
    pub fn next(&self) -> HeaderValue {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        HeaderValue::from_str(&format!("hg-{}-{n:x}", self.prefix))
            .unwrap_or_else(|_| HeaderValue::from_static("hg-unknown"))
    }
}
