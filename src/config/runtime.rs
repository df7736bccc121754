//! The `[runtime]` and `[shutdown]` sections: the threads that serve, and
//! how long a stop waits. Owns their defaults; it must never start or stop
//! anything itself.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration::HumanDuration;

/// The Tokio runtime that serves every listener.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeSettings {
    /// Worker threads; unset (0) means one per CPU.
    pub worker_threads: usize,
}

/// How the gate stops on SIGTERM/SIGINT.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownSettings {
    /// Longest wait for in-flight requests once listeners stop accepting.
    pub grace: HumanDuration,
}

impl ShutdownSettings {
    /// Checks `shutdown.grace`; `invalid(key, message)` builds the error.
    pub(crate) fn validate<E>(&self, invalid: impl Fn(&str, String) -> E) -> Result<(), E> {
        // An orchestrator kills the gate long before an hour.
        self.grace
            .within(Duration::ZERO, Duration::from_secs(3600))
            .map_err(|why| invalid("shutdown.grace", why))
    }
}

impl Default for ShutdownSettings {
    fn default() -> Self {
        Self {
            grace: HumanDuration(Duration::from_secs(25)),
        }
    }
}
