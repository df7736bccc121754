//! Audit events written through the cache, as every admin change is: one
//! place for the admin API and the gate's own policies (the unused-token
//! sweep) to record an event, count it, and ship it on the log target
//! `hawzu_gate::audit` (one JSON line per event). A failed write does not
//! undo or fail the change it describes: the event goes to the error log
//! whole instead, and is counted (`hawzu_gate_audit_events_total`).
//! [`TokenCache::record_once`] is the same for a notice the gate writes
//! once per key across a fleet (an expiry notice), and
//! [`TokenCache::record_change`] for a change's event that its repeat
//! may write instead.

use jiff::{SignedDuration, Timestamp};

use crate::audit::{Action, AuditEvent, LATE_WINDOW};
use crate::store::{AuditLog, Outbox, TokenStore};

use super::TokenCache;

/// How long a change's claim outlives [`LATE_WINDOW`].
const CLAIM_MARGIN: SignedDuration = SignedDuration::from_secs(600);

impl<S: TokenStore + AuditLog> TokenCache<S> {
    /// Writes `event` to the store's audit log; never fails the caller.
    pub async fn record_audit(&self, event: AuditEvent) {
        match self.store().append(&event).await {
            Ok(position) => self.recorded(event, position.to_string()),
            Err(e) => self.not_recorded(&event, &e),
        }
    }

    fn not_recorded(&self, event: &AuditEvent, e: &crate::store::StoreError) {
        self.metrics().audit(false);
        tracing::error!(
            target: "hawzu_gate::audit",
            error = %e,
            event = %serde_json::to_string(event).unwrap_or_default(),
            "audit event NOT recorded in the store; the change it describes stands"
        );
    }

    fn recorded(&self, mut event: AuditEvent, id: String) {
        self.metrics().audit(true);
        event.id = id;
        tracing::info!(
            target: "hawzu_gate::audit",
            event = %serde_json::to_string(&event).unwrap_or_default(),
            "audit event"
        );
    }
}

impl<S: TokenStore + AuditLog + Outbox> TokenCache<S> {
    /// Writes the event of a change that stamped `at` by `by` (`stamp`: a
    /// disable, or a revoke — by the admin API or a leak report —
    /// `disabled_at`/`revoked_at` and their `_by`) once across a fleet,
    /// under a claim (`change:<token>:<stamp>:<at ms>:<by>`) that a repeat
    /// of the change finds for as long as it may write the event instead
    /// ([`late_repeat`](crate::audit::late_repeat)): the change's own try, or a repeat that found it
    /// made because the try's answer was lost after the store took it —
    /// never both. `first`: the change's own try, which writes the event
    /// without the claim should the claim fail (a duplicate beats a loss).
    pub async fn record_change(
        &self,
        stamp: Action,
        at: Timestamp,
        by: &str,
        event: AuditEvent,
        first: bool,
    ) {
        let key = format!(
            "change:{}:{}:{}:{by}",
            event.token_id,
            stamp.as_str(),
            at.as_millisecond()
        );
        let until = at
            .checked_add(LATE_WINDOW + CLAIM_MARGIN)
            .unwrap_or(Timestamp::MAX);
        match self.store().append_once(&key, until, &event).await {
            Ok(Some(position)) => self.recorded(event, position.to_string()),
            Ok(None) => {}
            Err(_) if first => self.record_audit(event).await,
            Err(e) => self.not_recorded(&event, &e),
        }
    }

    /// Writes `event` unless one was written under `key` (until `until`)
    /// by any gate: true when this call wrote it. A failed write is logged
    /// and tried again by the caller's next round.
    pub async fn record_once(&self, key: &str, until: Timestamp, event: AuditEvent) -> bool {
        match self.store().append_once(key, until, &event).await {
            Ok(Some(position)) => {
                self.recorded(event, position.to_string());
                true
            }
            Ok(None) => false,
            // Not counted as a lost audit event: no change is missing its
            // event, and the notice is tried again.
            Err(e) => {
                tracing::warn!(
                    target: "hawzu_gate::audit",
                    error = %e,
                    key,
                    "notice not recorded; the next scan tries again"
                );
                false
            }
        }
    }
}
