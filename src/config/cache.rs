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
