//! [`Outbox`]: the audit log read as an outbox, for webhooks — each
//! subscription (one per webhook, by name) hands every event appended after
//! it was opened to one consumer, takes back what a dead consumer held, and
//! forgets an event once told it is done; and notices written to the log
//! once per key across a fleet ([`Outbox::append_once`]).
//!
//! Redis: a consumer group per webhook on the audit stream (`XREADGROUP`,
//! `XAUTOCLAIM`, `XACK`; `redis/outbox.rs`). Embedded: a cursor per webhook
//! in the file (`embedded_outbox.rs`). The store never sends anything and
//! never decides which events a webhook wants.

use std::future::Future;
use std::time::Duration;

use jiff::Timestamp;

use crate::audit::{AuditEvent, Position};

use super::{Store, StoreError};

/// One event taken from a subscription: its position and the event, or why
/// its stored form could not be read (to be logged and marked done).
pub type Taken = (Position, Result<AuditEvent, String>);

/// The audit log as an outbox. Both backends pass the same tests
/// (`tests/webhooks.rs`).
pub trait Outbox: Send + Sync + 'static {
    /// Opens subscription `name`, or finds it: a new one starts after the
    /// last event now in the log (what came before is not sent).
    fn outbox_open(&self, name: &str) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Up to `count` events of subscription `name` for `consumer`, oldest
    /// first: events another consumer took and left untouched for
    /// `claim_after` (it died mid-delivery) first, then new ones. An event
    /// taken stays this consumer's until [`Outbox::outbox_done`].
    fn outbox_take(
        &self,
        name: &str,
        consumer: &str,
        claim_after: Duration,
        count: usize,
    ) -> impl Future<Output = Result<Vec<Taken>, StoreError>> + Send;

    /// Touches `position` for `consumer` (it is still at work on it), so
    /// nobody takes it over. `false`: the event is no longer waiting (done
    /// by another consumer): stop.
    fn outbox_hold(
        &self,
        name: &str,
        consumer: &str,
        position: Position,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Done with `position` (delivered, or given up): never handed out
    /// again.
    fn outbox_done(
        &self,
        name: &str,
        position: Position,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Forgets the consumers of subscription `name` other than `consumer`
    /// that hold nothing and have not been seen for `idle` (gates that are
    /// gone). Holding nothing, they lose nothing; a live one that was only
    /// slow is made again by its next read. Returns how many went.
    fn outbox_prune(
        &self,
        name: &str,
        consumer: &str,
        idle: Duration,
    ) -> impl Future<Output = Result<usize, StoreError>> + Send;

    /// Appends `event` unless an event was appended under `key` before
    /// (and `key` is not yet past `until`). `Some(position)` when this call
    /// appended it. Embedded: one transaction (exactly once). Redis: a
    /// claim key set first for a minute, made to last until `until` once
    /// the event is in the stream — a gate that dies in between leaves the
    /// claim to lapse and another gate writes the event (at least once).
    fn append_once(
        &self,
        key: &str,
        until: Timestamp,
        event: &AuditEvent,
    ) -> impl Future<Output = Result<Option<Position>, StoreError>> + Send;
}

impl Outbox for Store {
    async fn outbox_open(&self, name: &str) -> Result<(), StoreError> {
        match self {
            Store::Embedded(s) => s.outbox_open(name).await,
            Store::Redis(s) => s.outbox_open(name).await,
        }
    }

    async fn outbox_take(
        &self,
        name: &str,
        consumer: &str,
        claim_after: Duration,
        count: usize,
    ) -> Result<Vec<Taken>, StoreError> {
        match self {
            Store::Embedded(s) => s.outbox_take(name, consumer, claim_after, count).await,
            Store::Redis(s) => s.outbox_take(name, consumer, claim_after, count).await,
        }
    }

    async fn outbox_hold(
        &self,
        name: &str,
        consumer: &str,
        position: Position,
    ) -> Result<bool, StoreError> {
        match self {
            Store::Embedded(s) => s.outbox_hold(name, consumer, position).await,
            Store::Redis(s) => s.outbox_hold(name, consumer, position).await,
        }
    }

    async fn outbox_done(&self, name: &str, position: Position) -> Result<(), StoreError> {
        match self {
            Store::Embedded(s) => s.outbox_done(name, position).await,
            Store::Redis(s) => s.outbox_done(name, position).await,
        }
    }

    async fn outbox_prune(
        &self,
        name: &str,
        consumer: &str,
        idle: Duration,
    ) -> Result<usize, StoreError> {
        match self {
            Store::Embedded(s) => s.outbox_prune(name, consumer, idle).await,
            Store::Redis(s) => s.outbox_prune(name, consumer, idle).await,
        }
    }

    async fn append_once(
        &self,
        key: &str,
        until: Timestamp,
        event: &AuditEvent,
    ) -> Result<Option<Position>, StoreError> {
        match self {
            Store::Embedded(s) => s.append_once(key, until, event).await,
            Store::Redis(s) => s.append_once(key, until, event).await,
        }
    }
}
