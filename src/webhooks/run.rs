//! The delivery loop of one webhook on one gate: take events from the
//! webhook's subscription (`store::Outbox`), skip those it does not want,
//! POST each one signed, retry with backoff, and mark it done once
//! delivered or given up. One event at a time, in order, per webhook and
//! gate; every webhook has its own loop and subscription, so a failing
//! receiver never holds up another.
//!
//! At least once: an event is marked done only after a 2xx (or after the
//! last attempt), so a gate that dies mid-delivery leaves it to another
//! gate (Redis, after `claim_after`) or to its restart (embedded). Never on
//! the request path; every store call is bounded by the store's timeout.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::audit::{AuditEvent, Position};
use crate::cache::TokenCache;
use crate::metrics::{Metrics, WEBHOOK_RESULTS};
use crate::store::{Outbox, Store, TokenStore};

use super::body;
use super::deliver;
use super::hook::Webhook;

/// Events taken per store call: one. An event is held (touched) only
/// while it is the one being sent; events taken with it would wait idle in
/// this gate's name while it retries, past `claim_after`, and another gate
/// would take them over and both would send them. Deliveries are HTTP
/// requests: one store call each is small beside them.
const BATCH: usize = 1;
/// Longest wait between two tries to open a subscription or read it while
/// the store fails.
const MAX_STORE_WAIT: Duration = Duration::from_secs(30);
/// How often a gate forgets the consumers of gates that are gone (Redis).
const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// A consumer holding nothing and unseen this long is a gate that is gone
/// (a live one reads every `poll_interval`).
const PRUNE_IDLE: Duration = Duration::from_secs(3600);

/// What one loop needs.
#[derive(Clone)]
pub struct Deliverer {
    pub hook: Arc<Webhook>,
    pub cache: Arc<TokenCache<Store>>,
    pub metrics: Arc<Metrics>,
    /// This gate's name in the fleet's consumer groups.
    pub consumer: Arc<str>,
}

impl std::fmt::Debug for Deliverer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deliverer")
            .field("hook", &self.hook)
            .field("consumer", &self.consumer)
            .finish_non_exhaustive()
    }
}

impl Deliverer {
    fn store(&self) -> &Store {
        self.cache.store()
    }

    /// Runs until aborted; opens the subscription first unless `opened`.
    pub async fn run(self, opened: bool) {
        let name = self.hook.name.clone();
        self.metrics.webhook_registered(&name);
        let mut wait = self.hook.poll_interval;
        while !opened && let Err(e) = self.store().outbox_open(&name).await {
            tracing::warn!(webhook = %name, error = %e, "cannot open the webhook's subscription yet; trying again");
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(MAX_STORE_WAIT);
        }
        tracing::info!(webhook = %name, consumer = %self.consumer, "webhook deliveries started");
        let mut failing = false;
        let mut pruned = Instant::now();
        loop {
            if pruned.elapsed() >= PRUNE_EVERY {
                pruned = Instant::now();
                let idle = PRUNE_IDLE.max(self.hook.claim_after * 2);
                match self.store().outbox_prune(&name, &self.consumer, idle).await {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(webhook = %name, consumers = n, "forgot the consumers of gates that are gone")
                    }
                    Err(e) => {
                        tracing::debug!(webhook = %name, error = %e, "cannot list the webhook's consumers")
                    }
                }
            }
            let taken = self
                .store()
                .outbox_take(&name, &self.consumer, self.hook.claim_after, BATCH)
                .await;
            match taken {
                Ok(batch) if batch.is_empty() => {
                    failing = false;
                    tokio::time::sleep(self.hook.poll_interval).await;
                }
                Ok(batch) => {
                    failing = false;
                    for (position, event) in batch {
                        self.handle(position, event).await;
                    }
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(webhook = %name, error = %e, "cannot read the webhook's events; trying again");
                    }
                    failing = true;
                    tokio::time::sleep(self.hook.poll_interval.max(Duration::from_secs(1))).await;
                }
            }
        }
    }

    /// One event: skipped, delivered, or given up — then done.
    pub async fn handle(&self, position: Position, event: Result<AuditEvent, String>) {
        let name = &self.hook.name;
        let event = match event {
            Ok(e) => e,
            Err(why) => {
                tracing::warn!(webhook = %name, event_id = %position, error = %why, "audit entry cannot be read; not sent");
                self.done(position).await;
                return;
            }
        };
        let kind = event.action.event_type();
        if !self.hook.wants(kind) {
            self.done(position).await;
            return;
        }
        // The token's name and expiry, as they are now (one store read).
        let record = self
            .cache
            .find(&event.token_id)
            .await
            .ok()
            .flatten()
            .map(|s| s.record);
        let body = Bytes::from(body::render(&event, record.as_ref()));
        let mut n = 1;
        loop {
            if !self.hold(position).await {
                // Another gate finished it meanwhile.
                return;
            }
            let sent = deliver::attempt(
                &self.hook.client,
                &self.hook.uri,
                &self.hook.key,
                &event.id,
                kind,
                &body,
                self.hook.timeout,
            )
            .await;
            match sent {
                Ok(()) => {
                    // Marked done first: `delivered` counts an event no
                    // gate will send again (barring a store that failed).
                    self.done(position).await;
                    self.metrics.webhook(name, WEBHOOK_RESULTS[0]);
                    tracing::debug!(webhook = %name, event_id = %event.id, event_type = kind, attempt = n, "webhook event delivered");
                    return;
                }
                Err(e) if n < self.hook.max_attempts => {
                    self.metrics.webhook(name, WEBHOOK_RESULTS[1]);
                    let wait = self.hook.backoff(n);
                    tracing::info!(webhook = %name, event_id = %event.id, event_type = kind, attempt = n, error = %e, retry_in = ?wait, "webhook attempt failed; retrying");
                    self.sleep_holding(position, wait).await;
                    n += 1;
                }
                Err(e) => {
                    self.metrics.webhook(name, WEBHOOK_RESULTS[2]);
                    tracing::warn!(webhook = %name, event_id = %event.id, event_type = kind, attempts = n, error = %e, "webhook event given up after its last attempt (it stays in the audit log)");
                    self.done(position).await;
                    return;
                }
            }
        }
    }

    /// Touches the event; false only when it is no longer waiting. A store
    /// that fails is no reason to stop: at worst another gate sends it too.
    async fn hold(&self, position: Position) -> bool {
        self.store()
            .outbox_hold(&self.hook.name, &self.consumer, position)
            .await
            .unwrap_or(true)
    }

    /// Sleeps `wait`, touching the event every third of `claim_after` so
    /// no other gate takes it over meanwhile.
    async fn sleep_holding(&self, position: Position, wait: Duration) {
        let end = Instant::now() + wait;
        let step = (self.hook.claim_after / 3).max(Duration::from_millis(10));
        loop {
            let now = Instant::now();
            if now >= end {
                return;
            }
            tokio::time::sleep((end - now).min(step)).await;
            if Instant::now() < end {
                let _ = self.hold(position).await;
            }
        }
    }

    /// Marks the event done; when the store fails, it is sent again later
    /// (at least once).
    async fn done(&self, position: Position) {
        if let Err(e) = self.store().outbox_done(&self.hook.name, position).await {
            tracing::warn!(webhook = %self.hook.name, event_id = %position, error = %e, "cannot mark the webhook event done; it will be sent again");
        }
    }
}
