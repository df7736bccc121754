//! [`AdminState`]: what the admin API's handlers share (the cache they
//! write through, the policy, the admin key, the wrong-key limit, the
//! token callers' request slots, the rotation limits and the console's
//! sessions), [`Peer`], the client address the
//! listener hands in, and [`RequestId`], the request's id.
//!
//! Plain state: no routing, no handlers, no answers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::cache::TokenCache;
use crate::clients::{Buckets, FailedAuth};
use crate::config::{AdminSettings, FailedAuthSettings};
use crate::console::Sessions;
use crate::doors::PolicyHandle;
use crate::policy::Policy;
use crate::store::Store;
use crate::token::RotationLimits;

use super::AdminKey;

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
    /// Token callers' changes per workspace (`admin.change_limit`).
    pub(super) changes: Buckets<String>,
    /// The same per day (`admin.daily_change_limit`).
    pub(super) daily_changes: Buckets<String>,
    /// Token callers' reads per workspace (`admin.read_limit`).
    pub(super) reads: Buckets<String>,
    /// The request slots token callers may hold together.
    pub(super) token_share: TokenShare,
    /// `admin.max_rotation_overlap` and `admin.rotate_after_expiry`.
    pub(super) rotation: RotationLimits,
    /// `usage.retention`: the longest `since` of a usage query.
    pub(super) usage_retention: Duration,
    /// Notes a manager token's use of the admin API (`last_used_at`).
    pub(super) usage: crate::usage::UsageRecorder,
    /// The token console (`admin.console`); `None`: off, and no session
    /// cookie is a credential.
    pub(super) console: Option<ConsoleState>,
    /// The admin listener speaks TLS (a browser's request to it at a DNS
    /// name is then no rebinding: the name's certificate would not match).
    pub(super) tls: bool,
}

/// The console's part of the admin state.
#[derive(Debug)]
pub struct ConsoleState {
    /// The sign-ins of this gate.
    pub(super) sessions: Sessions,
    /// The admin listener speaks TLS: `Secure` `__Host-` cookie, `https`
    /// origin.
    pub(super) tls: bool,
}

/// Whether the console is served, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsoleMode {
    /// Not served; `tls`: the admin listener speaks TLS.
    Off { tls: bool },
    /// Served; `tls`: the admin listener speaks TLS.
    On { tls: bool },
}

/// Workspaces whose change buckets are kept (least recently changing
/// dropped first, so a workspace dropped starts full again): ~100 bytes each.
const MAX_WORKSPACES_LIMITED: u64 = 100_000;

/// What limits callers of the admin API by who they are: wrong keys per
/// client address, token callers' changes per workspace.
#[derive(Debug)]
pub struct CallerLimits {
    pub failed_auth: FailedAuth,
    pub changes: Buckets<String>,
    pub daily_changes: Buckets<String>,
    pub reads: Buckets<String>,
}

impl CallerLimits {
    /// From `failed_auth.*` and `admin.change_limit` / `.read_limit` /
    /// `.change_window` / `.daily_change_limit`.
    pub fn new(failed_auth: &FailedAuthSettings, admin: &AdminSettings) -> Self {
        Self {
            failed_auth: FailedAuth::new(failed_auth),
            changes: Buckets::new(
                admin.change_limit,
                admin.change_window.0,
                MAX_WORKSPACES_LIMITED,
            ),
            daily_changes: Buckets::new(
                admin.daily_change_limit,
                Duration::from_secs(24 * 3600),
                MAX_WORKSPACES_LIMITED,
            ),
            reads: Buckets::new(
                admin.read_limit,
                admin.change_window.0,
                MAX_WORKSPACES_LIMITED,
            ),
        }
    }
}

/// The address of the client of a request (a request extension).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// The request's `X-Request-Id` (a request extension): the client's when
/// sane, else one the gate made; every admin answer carries it.
#[derive(Debug, Clone)]
pub struct RequestId(pub http::HeaderValue);

impl AdminState {
    #[allow(clippy::too_many_arguments)] // one per part of the state, each passed once
    pub fn new(
        cache: Arc<TokenCache<Store>>,
        policy: PolicyHandle,
        key: AdminKey,
        CallerLimits {
            failed_auth,
            changes,
            daily_changes,
            reads,
        }: CallerLimits,
        token_requests: usize,
        rotation: RotationLimits,
        usage_retention: Duration,
        usage: crate::usage::UsageRecorder,
        console: ConsoleMode,
    ) -> Self {
        let token_share = TokenShare::new(
            token_requests,
            cache.metrics().overload("admin", ADMIN_RESERVE),
        );
        Self {
            cache,
            policy,
            key,
            failed_auth,
            changes,
            daily_changes,
            reads,
            token_share,
            rotation,
            usage_retention,
            usage,
            console: match console {
                ConsoleMode::Off { .. } => None,
                ConsoleMode::On { tls } => Some(ConsoleState {
                    sessions: Sessions::default(),
                    tls,
                }),
            },
            tls: match console {
                ConsoleMode::Off { tls } | ConsoleMode::On { tls } => tls,
            },
        }
    }

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
