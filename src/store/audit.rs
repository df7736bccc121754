//! [`AuditLog`]: the store's side of the audit log, beside the
//! [`TokenStore`](super::TokenStore) contract and kept by the same two
//! backends — a bounded Redis stream (`<prefix>audit`, one key, so
//! Cluster-safe) in a fleet, a redb table in the embedded store — each
//! with an index by workspace, which a query with a workspace reads
//! instead of the whole log (a tenant's pages never pass over another's
//! events).
//!
//! The store appends and pages events (`crate::audit`); it decides nothing
//! about who may read them (the admin API does) and never sees a secret:
//! an event is built from a record's public fields only.

use std::future::Future;

use crate::audit::{AuditEvent, AuditPage, AuditQuery, Position};

use super::{Store, StoreError};

/// The audit log of a store. Both backends pass the same suite
/// (`tests/store_suite.rs`).
pub trait AuditLog: Send + Sync + 'static {
    /// Appends `event` (its `id` is ignored) and answers its position, the
    /// event's id. The log keeps about the last `audit.max_events` events:
    /// older ones are dropped as new ones come.
    fn append(
        &self,
        event: &AuditEvent,
    ) -> impl Future<Output = Result<Position, StoreError>> + Send;

    /// A page of events, newest first (see [`AuditQuery`]).
    fn audit_page(
        &self,
        query: &AuditQuery,
    ) -> impl Future<Output = Result<AuditPage, StoreError>> + Send;
}

impl AuditLog for Store {
    async fn append(&self, event: &AuditEvent) -> Result<Position, StoreError> {
        match self {
            Store::Embedded(s) => s.append(event).await,
            Store::Redis(s) => s.append(event).await,
        }
    }

    async fn audit_page(&self, query: &AuditQuery) -> Result<AuditPage, StoreError> {
        match self {
            Store::Embedded(s) => s.audit_page(query).await,
            Store::Redis(s) => s.audit_page(query).await,
        }
    }
}
