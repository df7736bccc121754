//! The `[audit]` section: how much of the audit log the store keeps. Owns
//! its default and check; it must never touch the log itself.

use serde::{Deserialize, Serialize};

/// The audit log.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSettings {
    /// About how many events the log keeps: older ones are dropped as new
    /// ones come (Redis: `XADD … MAXLEN ~`, trimmed in whole stream nodes,
    /// so a few more may stay; embedded: exactly).
    pub max_events: u64,
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self {
            max_events: crate::audit::DEFAULT_MAX_EVENTS,
        }
    }
}

impl AuditSettings {
    /// Checks `audit.*`; `invalid(key, message)` builds the error naming
    /// the key.
    pub(crate) fn validate<E>(&self, invalid: impl Fn(&str, String) -> E) -> Result<(), E> {
        if self.max_events == 0 {
            return Err(invalid(
                "audit.max_events",
                "must be at least 1 (the audit log cannot be turned off)".into(),
            ));
        }
        Ok(())
    }
}
