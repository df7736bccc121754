//! Forward-auth door (`listen.auth`): answers 2xx/401/403 for an ingress that
//! asks before it forwards.
//!
//! `/auth/nginx` serves nginx `auth_request` and ingress-nginx `auth-url`.
//! The door only reads the request into facts and renders the decision; the
//! policy is in [`crate::decide`]. Its answers never carry a body: nginx
//! shows none of it and keeps its keep-alive connection only for empty ones.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use jiff::Timestamp;

use super::http::{Body, json};
use crate::decide::{Credentials, Decision, DenyCode, RequestFacts, decide};
use crate::headers;
use crate::store::TokenStore;

/// The forward-auth door over a store.
#[derive(Debug)]
pub struct ForwardAuth<S> {
    store: S,
}

impl<S: TokenStore> ForwardAuth<S> {
    pub fn new(store: S) -> Arc<Self> {
        Arc::new(Self { store })
    }

    /// Routes one request of the auth listener.
    pub async fn handle<B>(&self, req: Request<B>, _peer: SocketAddr) -> Response<Body> {
        match req.uri().path() {
            "/auth/nginx" => self.nginx(req.headers()).await,
            _ => json(
                StatusCode::NOT_FOUND,
                &serde_json::json!({
                    "error": "not_found",
                    "message": "This listener serves /auth/nginx.",
                }),
            ),
        }
    }

    async fn nginx(&self, headers: &HeaderMap) -> Response<Body> {
        let facts = RequestFacts {
            credentials: credentials(headers),
            now: Timestamp::now(),
        };
        let decision = decide(&self.store, &facts).await;
        let mut res = Response::new(Full::new(Bytes::new()));
        let h = res.headers_mut();
        match decision {
            Decision::Allow(p) => {
                insert(h, headers::TOKEN_ID, &p.token_id);
                insert(h, headers::TOKEN_TYPE, p.kind.as_str());
                insert(h, headers::WORKSPACE_ID, &p.workspace_id);
            }
            Decision::Deny(code) => {
                *res.status_mut() = status(code);
                deny_headers(res.headers_mut(), code);
            }
        }
        res.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        res
    }
}

/// The `Authorization` headers of a request as decision input.
pub fn credentials(headers: &HeaderMap) -> Credentials<'_> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    match (values.next(), values.next()) {
        (None, _) => Credentials::None,
        (Some(v), None) => Credentials::One(v.as_bytes()),
        (Some(_), Some(_)) => Credentials::Several,
    }
}

/// The HTTP status of a deny code.
pub fn status(code: DenyCode) -> StatusCode {
    StatusCode::from_u16(code.status()).unwrap_or(StatusCode::FORBIDDEN)
}

/// `X-Hawzu-Error`, `WWW-Authenticate` and `Retry-After` for a deny.
pub fn deny_headers(h: &mut HeaderMap, code: DenyCode) {
    h.insert(headers::ERROR, HeaderValue::from_static(code.as_str()));
    if let Some(challenge) = code.challenge()
        && let Ok(v) = HeaderValue::from_str(&challenge)
    {
        h.insert(header::WWW_AUTHENTICATE, v);
    }
    if code == DenyCode::StoreUnavailable {
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
}

fn insert(h: &mut HeaderMap, name: &'static str, value: &str) {
    // Ids are validated to header-safe characters at creation.
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}
