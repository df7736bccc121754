//! The `[cache]` section: how long token answers are kept in memory. Owns
//! its defaults; it must never touch the cache itself.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration::HumanDuration;

/// The token cache.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheSettings {
    /// Longest a found record is served from memory (the bound on a missed
    /// invalidation).
    pub ttl: HumanDuration,
    /// Longest a "no such token" answer is served from memory.
    pub negative_ttl: HumanDuration,
    /// Most tokens held.
    pub max_entries: u64,
    /// How long past `ttl` a cached token may still be served while the
    /// store fails (errors or timeouts); `0s` (the default): never. Never
    /// past the token's own expiry, never for a token seen disabled or
    /// revoked, and only while the store is failing.
    pub stale_if_error: HumanDuration,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            ttl: HumanDuration(Duration::from_secs(60)),
            negative_ttl: HumanDuration(Duration::from_secs(5)),
            max_entries: 1_000_000,
            stale_if_error: HumanDuration(Duration::ZERO),
        }
    }
}

/// The longest `cache.ttl` and `cache.negative_ttl`: `ttl` is how long a
/// revocation whose event was lost may go unenforced, so a slip of the
/// unit (`5M`, five months) must not make it unbounded.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3_600);

impl CacheSettings {
    /// Checks the lifetimes; `invalid(key, message)` builds the error
    /// naming the key at fault.
    pub(crate) fn validate<E>(&self, invalid: impl Fn(&str, String) -> E) -> Result<(), E> {
        for (key, d) in [
            ("cache.ttl", self.ttl.0),
            ("cache.negative_ttl", self.negative_ttl.0),
            ("cache.stale_if_error", self.stale_if_error.0),
        ] {
            if d > MAX_TTL {
                return Err(invalid(
                    key,
                    format!(
                        "must be at most 24h (a revocation whose event is lost is enforced only after it), not {}",
                        super::duration::short(d)
                    ),
                ));
            }
        }
        Ok(())
    }
}
