//! The admin HTTP API (`listen.admin`) as the listener sees it: [`AdminApi`],
//! one service that takes a request and gives an answer, and
//! [`AdminState`], what its handlers share.
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
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::body::Body;
use bytes::Bytes;
use http::{Request, Response};
use tower::ServiceExt;

use crate::cache::TokenCache;
use crate::clients::FailedAuth;
use crate::doors::PolicyHandle;
use crate::policy::Policy;
use crate::store::Store;

use super::AdminKey;

pub use super::routes::{Op, ROUTES, Route};
pub use super::wire::MAX_BODY;

/// The admin API: the axum [`Router`] of `admin::routes` over one
/// [`AdminState`], served by the gate's own listener.
#[derive(Debug)]
pub struct AdminApi {
    router: Router,
}

/// What the admin API's handlers share. It writes through the cache, so
/// this gate sees its own changes at once (and the Redis store tells the
/// others).
#[derive(Debug)]
pub struct AdminState {
    pub(super) cache: Arc<TokenCache<Store>>,
    policy: PolicyHandle,
    pub(super) key: AdminKey,
    /// Wrong keys per client address: the same limit as the doors', its
    /// own buckets.
    pub(super) failed_auth: FailedAuth,
    /// The request slots token callers may hold together.
    pub(super) token_share: TokenShare,
}

/// The address of the client of a request (a request extension).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

impl AdminApi {
    pub fn new(
        cache: Arc<TokenCache<Store>>,
        policy: PolicyHandle,
        key: AdminKey,
        failed_auth: FailedAuth,
        token_requests: usize,
    ) -> Arc<Self> {
        let token_share = TokenShare::new(
            token_requests,
            cache.metrics().overload("admin", ADMIN_RESERVE),
        );
        let state = Arc::new(AdminState {
            cache,
            policy,
            key,
            failed_auth,
            token_share,
        });
        Arc::new(Self {
            router: super::routes::router(state),
        })
    }

    /// Serves one request of the admin listener, from `peer`.
    pub async fn handle<B>(&self, mut req: Request<B>, peer: SocketAddr) -> Response<Body>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        req.extensions_mut().insert(Peer(peer));
        // A router clone is a reference count: the routes are shared.
        match self.router.clone().oneshot(req).await {
            Ok(res) => res,
            Err(never) => match never {},
        }
    }
}

impl AdminState {
    /// The policy now (reloads swap it whole).
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.load_full()
    }
}

// === impl TokenShare ===

/// The `limit` label of a token caller refused for the admin key's reserve.
const ADMIN_RESERVE: &str = "admin_reserve";

/// The admin listener's request slots that token callers may hold
/// together: `limits.max_requests - admin.reserved_requests`.
#[derive(Debug)]
pub struct TokenShare {
    max: usize,
    held: AtomicUsize,
    refused: prometheus::IntCounter,
}

/// A token caller's place in the [`TokenShare`], until dropped.
#[derive(Debug)]
pub struct TokenShareSlot<'a>(&'a TokenShare);

impl TokenShare {
    fn new(max: usize, refused: prometheus::IntCounter) -> Self {
        Self {
            max,
            held: AtomicUsize::new(0),
            refused,
        }
    }

    /// A place, or `None` when token callers hold the whole share.
    pub fn take(&self) -> Option<TokenShareSlot<'_>> {
        if self.held.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.held.fetch_sub(1, Ordering::AcqRel);
            self.refused.inc();
            return None;
        }
        Some(TokenShareSlot(self))
    }
}

impl Drop for TokenShareSlot<'_> {
    fn drop(&mut self) {
        self.0.held.fetch_sub(1, Ordering::AcqRel);
    }
}
