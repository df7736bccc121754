//! Webhooks: lifecycle events out, signed. The audit log is the outbox —
//! every admin change (and the gate's own auto-disable, leak and expiry
//! notices) is already one durable event there — and each `[[webhooks]]`
//! entry reads it through its own subscription (`store::Outbox`: a Redis
//! consumer group, or a cursor in the embedded file), so one gate of a
//! fleet delivers each event, at least once, with the audit position as
//! its id. Each POST is signed (`Hawzu-Signature`, `sign.rs`), retried
//! with backoff, and counted (`hawzu_gate_webhook_deliveries_total`).
//!
//! Off and free without `[[webhooks]]`: no task, no subscription. Never on
//! the request path; never logs a secret, a signature or a body.
//!
//! By job: `hook.rs` (an entry made ready: secret, URL, client), `run.rs`
//! (one webhook's delivery loop), `deliver.rs` (one signed POST),
//! `body.rs` (the JSON), `sign.rs` (the signature), `notices.rs` (expiry
//! notices). Inside, imports go down only: mod → notices, run → hook →
//! deliver → sign; run → body.

use std::sync::Arc;
use std::time::Duration;

use crate::cache::TokenCache;
use crate::config::WebhookSettings;
use crate::metrics::Metrics;
use crate::store::{Outbox, Store};

mod body;
mod deliver;
mod hook;
mod notices;
mod run;
pub mod sign;

pub use self::deliver::AGENT;
pub use self::hook::{Webhook, WebhookError};
pub use self::notices::{CHORE as NOTICES_CHORE, scan as scan_expiring, window as notice_window};

/// The webhooks of `[[webhooks]]`, made ready (secrets read): a start-up
/// error names the entry's key.
pub fn prepare(settings: &[WebhookSettings]) -> Result<Vec<Webhook>, WebhookError> {
    settings
        .iter()
        .enumerate()
        .map(|(i, s)| Webhook::new(i, s))
        .collect()
}

/// Starts one delivery loop per webhook, and the expiry-notice scan (every
/// `notice_every`; `0s`: none) when a webhook wants `token.expiring`.
/// Nothing at all when `hooks` is empty. Each webhook's subscription is
/// opened before this returns (so every event after start-up is sent),
/// or, while the store fails, by its loop as soon as it answers. Returns
/// the tasks to abort at shutdown.
pub async fn start(
    hooks: Vec<Webhook>,
    cache: &Arc<TokenCache<Store>>,
    metrics: &Arc<Metrics>,
    notice_every: Duration,
) -> Vec<tokio::task::JoinHandle<()>> {
    if hooks.is_empty() {
        return Vec::new();
    }
    let consumer: Arc<str> = consumer_name().into();
    let notices = hooks.iter().any(|h| h.wants("token.expiring"));
    let mut tasks = Vec::with_capacity(hooks.len() + 1);
    for hook in hooks {
        let opened = match cache.store().outbox_open(&hook.name).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(webhook = %hook.name, error = %e, "cannot open the webhook's subscription yet; trying again in the background");
                false
            }
        };
        let deliverer = run::Deliverer {
            hook: Arc::new(hook),
            cache: cache.clone(),
            metrics: metrics.clone(),
            consumer: consumer.clone(),
        };
        tasks.push(tokio::spawn(deliverer.run(opened)));
    }
    if notices && !notice_every.is_zero() {
        tasks.push(notices::start(cache.clone(), metrics.clone(), notice_every));
    }
    tasks
}

/// This gate's name in the consumer groups: host, process id and a random
/// part (two gates on one host, or a restarted one, never share a name;
/// what a dead one held is taken over after `claim_after`).
fn consumer_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| {
            h.trim()
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
                .take(64)
                .collect::<String>()
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "gate".into());
    let mut r = [0u8; 3];
    let _ = getrandom::fill(&mut r);
    format!(
        "{host}-{}-{:02x}{:02x}{:02x}",
        std::process::id(),
        r[0],
        r[1],
        r[2]
    )
}
