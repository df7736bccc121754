//! The admin HTTP API (`listen.admin`) as the listener sees it: [`AdminApi`],
//! one service that takes a request and gives an answer.
//!
//! Callers present the admin key, or a workspace token whose role holds
//! `tokens:manage` (see `admin::caller`). Every read-check-write is one
//! compare-and-set. The secret of a token appears in the answer that
//! creates it (create, rotate) and in no other answer, ever.
//! `docs/admin-api.yaml` describes every route of [`ROUTES`].
//!
//! This module only wires: routing is `admin::routes`, handlers are
//! `admin::tokens` and `admin::explain`. It never accepts connections (the
//! listener in `doors::listener` does).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use bytes::Bytes;
use http::{Request, Response};
use tower::ServiceExt;

use crate::cache::TokenCache;
use crate::doors::PolicyHandle;
use crate::store::Store;
use crate::token::RotationLimits;
use crate::web::{REQUEST_ID, RequestIds};

use super::AdminKey;
use super::state::{AdminState, Peer, RequestId};

pub use super::routes::{Op, ROUTES, Route};
pub use super::state::{CallerLimits, ConsoleMode};
pub use super::wire::MAX_BODY;

/// The admin API: the axum [`Router`] of `admin::routes` over one
/// [`AdminState`], served by the gate's own listener.
#[derive(Debug)]
pub struct AdminApi {
    router: Router,
    request_ids: RequestIds,
}

impl AdminApi {
    #[allow(clippy::too_many_arguments)] // one per part of the state, each passed once
    pub fn new(
        cache: Arc<TokenCache<Store>>,
        policy: PolicyHandle,
        key: AdminKey,
        limits: CallerLimits,
        token_requests: usize,
        rotation: RotationLimits,
        usage_retention: std::time::Duration,
        usage: crate::usage::UsageRecorder,
        console: ConsoleMode,
    ) -> Arc<Self> {
        let state = Arc::new(AdminState::new(
            cache,
            policy,
            key,
            limits,
            token_requests,
            rotation,
            usage_retention,
            usage,
            console,
        ));
        Arc::new(Self {
            router: super::routes::router(state),
            request_ids: RequestIds::new(),
        })
    }

    /// Serves one request of the admin listener, from `peer`. Every
    /// answer carries the request's `X-Request-Id` (the client's, or a new
    /// one), which the audit log records.
    pub async fn handle<B>(&self, mut req: Request<B>, peer: SocketAddr) -> Response<Body>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let id = self.request_ids.of(req.headers());
        let console = req.uri().path().starts_with("/console");
        req.extensions_mut().insert(Peer(peer));
        req.extensions_mut().insert(RequestId(id.clone()));
        // A router clone is a reference count: the routes are shared.
        let mut res = match self.router.clone().oneshot(req).await {
            Ok(res) => res,
            Err(never) => match never {},
        };
        let h = res.headers_mut();
        h.insert(REQUEST_ID, id);
        if console {
            // Every answer under /console — its routes', and the table's
            // 404 for a path deeper than they reach — is a console answer.
            crate::console::secure_headers(h);
        } else {
            h.insert(
                http::header::X_CONTENT_TYPE_OPTIONS,
                http::HeaderValue::from_static("nosniff"),
            );
        }
        res
    }
}
