//! The `[usage]` section: how long usage per token is kept, and the
//! optional policy that disables tokens nobody uses. Owns their defaults
//! and checks; it must never count or disable anything itself.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration::HumanDuration;

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

/// Usage per token (requests per hour, recent clients, last refusal).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UsageSettings {
    /// How long hourly counts, clients and the last refusal are kept after
    /// the hour they belong to (a Redis TTL; pruned in the embedded file).
    /// The longest `--since` a usage query may ask for.
    pub retention: HumanDuration,
    /// Disable tokens unused this long (never used since their creation,
    /// or last used this long ago), recorded as `disabled_by =
    /// "policy:unused"`; `0s` (the default): never.
    pub disable_unused_after: HumanDuration,
}

impl Default for UsageSettings {
    fn default() -> Self {
        Self {
            retention: HumanDuration(90 * DAY),
            disable_unused_after: HumanDuration(Duration::ZERO),
        }
    }
}

impl UsageSettings {
    /// `retention` within 1h..=3660d, `disable_unused_after` 0s or at least
    /// a day.
    pub(crate) fn validate<E>(&self, invalid: impl Fn(&str, String) -> E) -> Result<(), E> {
        let retention = self.retention.0;
        if retention < HOUR || retention > 3660 * DAY {
            return Err(invalid(
                "usage.retention",
                "must be from 1h to 3660d (10 years)".into(),
            ));
        }
        let after = self.disable_unused_after.0;
        if !after.is_zero() && after < DAY {
            return Err(invalid(
                "usage.disable_unused_after",
                "must be 0s (off) or at least 1d".into(),
            ));
        }
        Ok(())
    }

    /// The unused-token policy's threshold, when it is on.
    pub fn disable_unused(&self) -> Option<Duration> {
        let after = self.disable_unused_after.0;
        (!after.is_zero()).then_some(after)
    }
}
