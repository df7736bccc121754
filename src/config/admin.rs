//! The `[admin]` section: the admin key, the admin listener's reserve for
//! it, the limits of token rotation, the limit of token callers' changes
//! per workspace, and whether the token console is served. Owns their checks and keeps the key out of `Debug`; it must never
//! read or write the key file (`crate::admin` does).

use std::fmt;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration::HumanDuration;
use super::limits::LimitSettings;
use crate::token::RotationLimits;

/// Shortest admin key accepted from config.
pub const MIN_ADMIN_KEY_LEN: usize = 32;

/// Admin API settings.
#[derive(Clone, Serialize, Deserialize)]
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
    /// Longest `overlap` a rotate may give the old value (default 7d).
    pub max_rotation_overlap: HumanDuration,
    /// How long after its expiry a token may still be rotated (default 7d;
    /// 0: never once expired).
    pub rotate_after_expiry: HumanDuration,
    /// Serve the token console at `/console/` on the admin listener
    /// (default false: `/console/` answers 404 and the admin API accepts
    /// no session cookie).
    pub console: bool,
    /// Changes (create, update, rotate, disable, enable, revoke) the token
    /// callers of one workspace may make on one gate in a burst, and per
    /// `change_window`; more is 429 `rate_limited`. Bounds what one tenant
    /// can write into the shared audit log, the webhooks and the store.
    /// The admin key is never limited. 0: no limit.
    pub change_limit: u32,
    /// The time over which `change_limit` changes (and `read_limit`
    /// reads) come back.
    pub change_window: HumanDuration,
    /// Reads (list, show, audit, usage, explain, roles) the token callers
    /// of one workspace may make on one gate in a burst, and per
    /// `change_window`; more is 429 `rate_limited`. A read may scan
    /// thousands of audit entries or usage hours on the store every
    /// tenant's token checks share. The admin key is never limited. 0: no
    /// limit.
    pub read_limit: u32,
    /// Changes the token callers of one workspace may make on one gate in
    /// a day (a burst of as many, coming back evenly over 24 h), on top of
    /// `change_limit`: the minute's limit alone lets one tenant write
    /// 432,000 events a day into the audit log every workspace shares
    /// (`audit.max_events`), pushing the others' out. The admin key is
    /// never limited. 0: no limit.
    pub daily_change_limit: u32,
}

impl Default for AdminSettings {
    fn default() -> Self {
        let limits = RotationLimits::default();
        Self {
            key: None,
            reserved_requests: None,
            max_rotation_overlap: HumanDuration(limits.max_overlap),
            rotate_after_expiry: HumanDuration(limits.after_expiry),
            console: false,
            change_limit: 300,
            change_window: HumanDuration(Duration::from_secs(60)),
            read_limit: 600,
            daily_change_limit: 10_000,
        }
    }
}

impl AdminSettings {
    /// The limits of token rotation.
    pub fn rotation(&self) -> RotationLimits {
        RotationLimits {
            max_overlap: self.max_rotation_overlap.0,
            after_expiry: self.rotate_after_expiry.0,
        }
    }

    /// Checks the rotation limits: at most a year each (a typo guard), and
    /// the overlap within `retention` (`store.retention`): a rotated value
    /// is dropped `retention` after its own overlap ends, and must outlive
    /// the overlap of the value before it, or revoking a later value of
    /// the chain could not find the older one to end.
    pub(crate) fn validate_rotation<E>(
        &self,
        retention: Duration,
        invalid: impl Fn(&str, String) -> E,
    ) -> Result<(), E> {
        const YEAR: Duration = Duration::from_secs(366 * 24 * 3600);
        for (key, d) in [
            ("admin.max_rotation_overlap", self.max_rotation_overlap.0),
            ("admin.rotate_after_expiry", self.rotate_after_expiry.0),
        ] {
            if d > YEAR {
                return Err(invalid(key, "must be at most 366d".into()));
            }
        }
        if self.max_rotation_overlap.0 > retention {
            return Err(invalid(
                "admin.max_rotation_overlap",
                format!(
                    "must be at most store.retention ({}): a revoked value's record is kept that long, and revoking the newest value of a chain of rotations must still find the older ones whose overlaps run",
                    humantime::format_duration(retention)
                ),
            ));
        }
        let w = self.change_window.0;
        if w < Duration::from_secs(1) || w > Duration::from_secs(24 * 3600) {
            return Err(invalid(
                "admin.change_window",
                "must be from 1s to 24h".into(),
            ));
        }
        Ok(())
    }

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
            .field("max_rotation_overlap", &self.max_rotation_overlap)
            .field("rotate_after_expiry", &self.rotate_after_expiry)
            .field("console", &self.console)
            .field("change_limit", &self.change_limit)
            .field("change_window", &self.change_window)
            .field("daily_change_limit", &self.daily_change_limit)
            .field("read_limit", &self.read_limit)
            .finish()
    }
}
