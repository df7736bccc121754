//! The `[admin]` section: the admin key and the admin listener's reserve
//! for it. Owns their checks and keeps the key out of `Debug`; it must never
//! read or write the key file (`crate::admin` does).

use std::fmt;

use serde::{Deserialize, Serialize};

use super::limits::LimitSettings;

/// Shortest admin key accepted from config.
pub const MIN_ADMIN_KEY_LEN: usize = 32;

/// Admin API settings.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSettings {
    /// The admin key. When unset, one is generated into `<data_dir>/admin.key`.
    pub key: Option<String>,
    /// Request slots of the admin listener (`limits.max_requests`) that
    /// token callers may never hold: workspace tokens together hold at most
    /// `max_requests - reserved_requests`, so the admin key always finds a
    /// slot. Unset: a tenth of `limits.max_requests`, rounded up, leaving
    /// token callers at least one. 0: no reserve.
    pub reserved_requests: Option<usize>,
}

impl AdminSettings {
    /// The admin key's reserve on the admin listener under `limits`.
    pub fn reserved_requests(&self, limits: &LimitSettings) -> usize {
        self.reserved_requests.unwrap_or_else(|| {
            limits
                .max_requests
                .div_ceil(10)
                .min(limits.max_requests.saturating_sub(1))
        })
    }

    /// Checks `admin.key`; `invalid(key, message)` builds the error naming
    /// the key at fault, never the key itself.
    pub(crate) fn validate_key<E>(&self, invalid: impl Fn(&str, String) -> E) -> Result<(), E> {
        if let Some(key) = &self.key
            && (key.len() < MIN_ADMIN_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(invalid(
                "admin.key",
                format!(
                    "must be at least {MIN_ADMIN_KEY_LEN} printable ASCII characters, no spaces"
                ),
            ));
        }
        Ok(())
    }

    /// Checks `admin.reserved_requests` against the (already checked)
    /// `limits`.
    pub(crate) fn validate_reserve<E>(
        &self,
        limits: &LimitSettings,
        invalid: impl Fn(&str, String) -> E,
    ) -> Result<(), E> {
        if let Some(reserved) = self.reserved_requests
            && reserved >= limits.max_requests
        {
            return Err(invalid(
                "admin.reserved_requests",
                format!(
                    "must be less than limits.max_requests ({}), or token callers could never manage tokens",
                    limits.max_requests
                ),
            ));
        }
        Ok(())
    }
}

impl fmt::Debug for AdminSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminSettings")
            .field("key", &self.key.as_ref().map(|_| "***"))
            .field("reserved_requests", &self.reserved_requests)
            .finish()
    }
}
