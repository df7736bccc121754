//! Audit events written through the cache, as every admin change is: one
//! place for the admin API and the gate's own policies (the unused-token
//! sweep) to record an event, count it, and ship it on the log target
//! `hawzu_gate::audit` (one JSON line per event). A failed write does not
//! undo or fail the change it describes: the event goes to the error log
//! whole instead, and is counted (`hawzu_gate_audit_events_total`).

use crate::audit::AuditEvent;
use crate::store::{AuditLog, TokenStore};

use super::TokenCache;

impl<S: TokenStore + AuditLog> TokenCache<S> {
    /// Writes `event` to the store's audit log; never fails the caller.
    pub async fn record_audit(&self, mut event: AuditEvent) {
        match self.store().append(&event).await {
            Ok(position) => {
                self.metrics().audit(true);
                event.id = position.to_string();
                tracing::info!(
                    target: "hawzu_gate::audit",
                    event = %serde_json::to_string(&event).unwrap_or_default(),
                    "audit event"
                );
            }
            Err(e) => {
                self.metrics().audit(false);
                tracing::error!(
                    target: "hawzu_gate::audit",
                    error = %e,
                    event = %serde_json::to_string(&event).unwrap_or_default(),
                    "audit event NOT recorded in the store; the change it describes stands"
                );
            }
        }
    }
}
