//! The token as the cache holds it: what decisions, logs and token callers
//! of the admin API read, trimmed and flattened from the stored record.
//!
//! Plain data with one atomic (the last noted use); it never reads the
//! store, never decides.

use std::sync::atomic::{AtomicI64, Ordering};

use http::HeaderValue;
use jiff::Timestamp;

use super::tally::Tally;
use crate::policy::net::IpNet;
use crate::token::{Scope, TokenKind, TokenRecord};

/// A token as the cache holds it: what decisions, logs and token callers
/// of the admin API read, in as few allocations as possible (the id inline,
/// one string for the workspace, one per role), plus the moment its use was
/// last noted (see `usage`): an atomic, so noting a use takes no lock. Name,
/// creator and history stay in the store.
#[derive(Debug)]
pub struct CachedRecord {
    id: [u8; ID_LEN],
    workspace_id: Box<str>,
    scope: CachedScope,
    /// The expiry; [`NEVER`] for a token that never expires (a sentinel,
    /// not an `Option`: 8 bytes less per cached token).
    expires_at: Timestamp,
    disabled: bool,
    /// When the token stops working for good (a rotation's overlap ends at
    /// a future instant; a revocation made at once is `Timestamp::MIN`:
    /// see `TokenRecord::refused_from`), so a cached record is refused
    /// after it with no store read; [`NEVER`] when it is not revoked.
    revoked_at: Timestamp,
    /// `last_used_at` in ms since the epoch (`i64::MIN`: never).
    last_used_ms: i64,
    noted_ms: AtomicI64,
    /// `allow_from` and `not_before`, boxed: a token without them (most)
    /// pays one null pointer.
    limits: Option<Box<CachedLimits>>,
    /// The expiry as the `X-Hawzu-Token-Expires` / `Hawzu-Token-Expires`
    /// header value (RFC 3339, UTC, whole seconds), made once per cached
    /// token so an allowed request only clones it (a reference count).
    expires_header: Option<HeaderValue>,
    /// Requests counted since the usage writer last took them.
    tally: Tally,
}

/// The context limits of a cached token (see `token::context`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedLimits {
    /// Empty: any client address.
    pub allow_from: Box<[IpNet]>,
    pub not_before: Option<Timestamp>,
}

/// The scope of a cached token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CachedScope {
    Workspace { role: Box<str> },
    Project { grants: Box<[CachedGrant]> },
}

/// One project of a cached project token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedGrant {
    pub project_id: Box<str>,
    pub role: Box<str>,
}

/// "Not at any time": the expiry of a token that never expires, the
/// revocation of one not revoked. (`Timestamp::MAX`, the last instant jiff
/// knows, in 9999: no stored record holds it, and one that did would mean
/// the same.)
const NEVER: Timestamp = Timestamp::MAX;

const ID_LEN: usize = crate::token::value::ID_PREFIX.len() + crate::token::value::ID_RANDOM_LEN;

impl CachedRecord {
    pub fn new(record: &TokenRecord) -> Self {
        let mut id = [0u8; ID_LEN];
        // Token ids are validated to exactly this length at parse time.
        let src = record.id.as_str().as_bytes();
        id[..src.len().min(ID_LEN)].copy_from_slice(&src[..src.len().min(ID_LEN)]);
        let scope = match &record.scope {
            Scope::Workspace { role } => CachedScope::Workspace {
                role: role.as_str().into(),
            },
            Scope::Project { projects } => CachedScope::Project {
                grants: projects
                    .iter()
                    .map(|g| CachedGrant {
                        project_id: g.project_id.as_str().into(),
                        role: g.role.as_str().into(),
                    })
                    .collect(),
            },
        };
        Self {
            id,
            workspace_id: record.workspace_id.as_str().into(),
            scope,
            expires_at: record.expires_at.unwrap_or(NEVER),
            disabled: record.disabled_at.is_some(),
            revoked_at: record.refused_from().unwrap_or(NEVER),
            last_used_ms: record.last_used_at.map_or(i64::MIN, |t| t.as_millisecond()),
            noted_ms: AtomicI64::new(i64::MIN / 2),
            limits: record.has_context_limits().then(|| {
                Box::new(CachedLimits {
                    allow_from: record.allow_from.as_slice().into(),
                    not_before: record.not_before,
                })
            }),
            expires_header: record.expires_at.and_then(|t| {
                let whole = Timestamp::from_second(t.as_second()).unwrap_or(t);
                HeaderValue::from_str(&whole.to_string()).ok()
            }),
            tally: Tally::default(),
        }
    }

    /// Where and from when the token may be used; `None`: anywhere, at once.
    pub fn limits(&self) -> Option<&CachedLimits> {
        self.limits.as_deref()
    }

    /// The expiry as a header value (RFC 3339, UTC, truncated to the
    /// second: never later than the real one); `None` for a token that
    /// never expires.
    pub fn expires_header(&self) -> Option<&HeaderValue> {
        self.expires_header.as_ref()
    }

    pub fn id(&self) -> &str {
        std::str::from_utf8(&self.id).unwrap_or("")
    }

    pub fn workspace_id(&self) -> &str {
        &self.workspace_id
    }

    pub fn scope(&self) -> &CachedScope {
        &self.scope
    }

    pub fn kind(&self) -> TokenKind {
        match self.scope {
            CachedScope::Workspace { .. } => TokenKind::Workspace,
            CachedScope::Project { .. } => TokenKind::Project,
        }
    }

    pub fn expires_at(&self) -> Option<Timestamp> {
        (self.expires_at != NEVER).then_some(self.expires_at)
    }

    pub fn is_disabled(&self) -> bool {
        self.disabled
    }

    /// From when the token is refused as revoked.
    pub fn revoked_at(&self) -> Option<Timestamp> {
        (self.revoked_at != NEVER).then_some(self.revoked_at)
    }

    /// `last_used_at` in ms since the epoch, if ever used.
    pub fn last_used_ms(&self) -> Option<i64> {
        (self.last_used_ms != i64::MIN).then_some(self.last_used_ms)
    }

    /// Usage counted since the last flush (see `usage`).
    pub fn tally(&self) -> &Tally {
        &self.tally
    }

    /// Claims the right to note a use at `now_ms` if none was noted in the
    /// last `resolution_ms`. One caller wins per interval.
    pub fn note_use(&self, now_ms: i64, resolution_ms: i64) -> bool {
        let prev = self.noted_ms.load(Ordering::Relaxed);
        now_ms - prev >= resolution_ms
            && self
                .noted_ms
                .compare_exchange(prev, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

impl PartialEq for CachedRecord {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
            && self.workspace_id == other.workspace_id
            && self.scope == other.scope
            && self.expires_at == other.expires_at
            && self.disabled == other.disabled
            && self.revoked_at == other.revoked_at
            && self.limits == other.limits
    }
}

impl Eq for CachedRecord {}
