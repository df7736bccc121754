//! The `[[webhooks]]` entries: where lifecycle events are sent, the secret
//! they are signed with, which events, and how deliveries are timed and
//! retried. Owns their defaults and checks, and keeps the secret out of
//! `Debug`; it must never read the secret file or send anything (the
//! `webhooks` module does both).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration::HumanDuration;
use crate::audit::EVENT_TYPES;

/// Shortest webhook secret accepted (bytes): an HMAC key shorter than this
/// is guessable offline from one signed body.
pub const MIN_WEBHOOK_SECRET_LEN: usize = 16;
/// Subscribes a webhook to every event type.
pub const ALL_EVENTS: &str = "*";

/// One `[[webhooks]]` entry.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookSettings {
    /// What the webhook is called: the `webhook` label of its metrics, its
    /// Redis consumer group (`webhook:<name>`) and its cursor in the
    /// embedded store, so keep it when the URL changes. 1–64 of `A-Z a-z
    /// 0-9 . _ -`; unset: the URL's host.
    pub name: Option<String>,
    /// Where each event is POSTed: `http://` or `https://`, no user info.
    pub url: String,
    /// The HMAC-SHA256 key of `Hawzu-Signature` (at least 16 bytes). Or:
    pub secret: Option<String>,
    /// … a file holding it (trailing whitespace ignored), read at start.
    pub secret_file: Option<PathBuf>,
    /// Event types sent (`token.created`, …), or `["*"]` for all.
    pub events: Vec<String>,
    /// Bound on one attempt: connecting, sending, and the answer's status.
    pub timeout: HumanDuration,
    /// Attempts per event, the first included, before it is given up
    /// (counted `failed`, logged with its id).
    pub max_attempts: u32,
    /// Wait before the second attempt; doubled after each failure, up to
    /// `retry_max`, with jitter (a random half of it taken off).
    pub retry_initial: HumanDuration,
    /// Longest wait between two attempts.
    pub retry_max: HumanDuration,
    /// How often a gate looks for new events when it found none.
    pub poll_interval: HumanDuration,
    /// Redis: an event taken by a gate that has not touched it this long
    /// (the gate died mid-delivery) is taken over by another. At least
    /// twice `timeout`: a live gate touches its event before every attempt
    /// and while waiting between attempts.
    pub claim_after: HumanDuration,
    /// A PEM CA bundle trusted for an `https://` URL, besides the public
    /// roots.
    pub ca_file: Option<PathBuf>,
}

impl fmt::Debug for WebhookSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookSettings")
            .field("name", &self.name)
            .field("url", &crate::redact::redact_url(&self.url))
            .field("secret", &self.secret.as_ref().map(|_| "***"))
            .field("secret_file", &self.secret_file)
            .field("events", &self.events)
            .field("timeout", &self.timeout)
            .field("max_attempts", &self.max_attempts)
            .field("retry_initial", &self.retry_initial)
            .field("retry_max", &self.retry_max)
            .field("poll_interval", &self.poll_interval)
            .field("claim_after", &self.claim_after)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            name: None,
            url: String::new(),
            secret: None,
            secret_file: None,
            events: Vec::new(),
            timeout: HumanDuration(Duration::from_secs(10)),
            max_attempts: 8,
            retry_initial: HumanDuration(Duration::from_secs(1)),
            retry_max: HumanDuration(Duration::from_secs(60)),
            poll_interval: HumanDuration(Duration::from_secs(1)),
            claim_after: HumanDuration(Duration::from_secs(60)),
            ca_file: None,
        }
    }
}

impl WebhookSettings {
    /// The name: as configured, else the URL's host.
    pub fn name(&self) -> String {
        if let Some(n) = &self.name {
            return n.clone();
        }
        self.url
            .parse::<http::Uri>()
            .ok()
            .and_then(|u| u.host().map(str::to_owned))
            .unwrap_or_default()
    }

    /// Whether this webhook is sent events of `event_type`.
    pub fn wants(&self, event_type: &str) -> bool {
        self.events
            .iter()
            .any(|e| e == ALL_EVENTS || e == event_type)
    }
}

/// The warnings for webhooks sent over plain `http://` to a host other
/// than this one: their bodies (names, descriptions, client addresses)
/// travel in the clear, and a captured signed request can be sent again
/// within the receiver's tolerance. A loopback relay is not warned of.
pub(crate) fn in_the_clear(hooks: &[WebhookSettings]) -> Vec<String> {
    hooks
        .iter()
        .enumerate()
        .filter_map(|(i, w)| {
            let uri: http::Uri = w.url.parse().ok()?;
            let host = uri.host()?;
            let loopback = host == "localhost"
                || host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            (uri.scheme_str() == Some("http") && !loopback).then(|| {
                format!(
                    "webhooks[{i}].url sends token events (names, descriptions, client addresses) in the clear to {host}: use https:// (a captured signed request could also be sent again within the receiver's tolerance)"
                )
            })
        })
        .collect()
}

/// Checks every `webhooks[i]`; `invalid(key, message)` builds the error
/// naming the key, never the secret.
pub(crate) fn validate<E>(
    hooks: &[WebhookSettings],
    invalid: impl Fn(&str, String) -> E,
) -> Result<(), E> {
    let mut names = std::collections::BTreeSet::new();
    for (i, w) in hooks.iter().enumerate() {
        let key = |k: &str| format!("webhooks[{i}].{k}");
        let uri: http::Uri = w
            .url
            .parse()
            .map_err(|_| invalid(&key("url"), "must be an http:// or https:// URL".to_owned()))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(invalid(
                &key("url"),
                "must be an http:// or https:// URL with a host".to_owned(),
            ));
        }
        if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
            return Err(invalid(
                &key("url"),
                "must not carry a user or password (the receiver checks Hawzu-Signature instead)"
                    .to_owned(),
            ));
        }
        let name = w.name();
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err(invalid(
                &key("name"),
                format!(
                    "`{name}` is not a webhook name: 1-64 of A-Z a-z 0-9 . _ - (set `name`; unset, it is the URL's host)"
                ),
            ));
        }
        if !names.insert(name.clone()) {
            return Err(invalid(
                &key("name"),
                format!(
                    "`{name}` names another webhook too: give each its own `name` (the URL's host when unset)"
                ),
            ));
        }
        match (&w.secret, &w.secret_file) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    &key("secret"),
                    "set `secret` or `secret_file`, not both".to_owned(),
                ));
            }
            (None, None) => {
                return Err(invalid(
                    &key("secret"),
                    format!(
                        "is required (or `secret_file`): at least {MIN_WEBHOOK_SECRET_LEN} bytes, random"
                    ),
                ));
            }
            (Some(s), None) => check_secret(s).map_err(|m| invalid(&key("secret"), m))?,
            (None, Some(_)) => {}
        }
        if w.events.is_empty() {
            return Err(invalid(
                &key("events"),
                format!(
                    "must list the events to send (\"{ALL_EVENTS}\" for all): {}",
                    EVENT_TYPES.join(", ")
                ),
            ));
        }
        for (j, e) in w.events.iter().enumerate() {
            if e != ALL_EVENTS && !EVENT_TYPES.contains(&e.as_str()) {
                return Err(invalid(
                    &key(&format!("events[{j}]")),
                    format!(
                        "`{e}` is not an event type: one of {}, or \"{ALL_EVENTS}\"",
                        EVENT_TYPES.join(", ")
                    ),
                ));
            }
        }
        if w.timeout.0.is_zero() {
            return Err(invalid(&key("timeout"), "must be more than 0s".to_owned()));
        }
        if !(1..=100).contains(&w.max_attempts) {
            return Err(invalid(
                &key("max_attempts"),
                "must be from 1 to 100".to_owned(),
            ));
        }
        if w.retry_initial.0.is_zero() || w.retry_max.0 < w.retry_initial.0 {
            return Err(invalid(
                &key("retry_max"),
                "retry_initial must be more than 0s and retry_max at least retry_initial"
                    .to_owned(),
            ));
        }
        if w.poll_interval.0 < Duration::from_millis(10) {
            return Err(invalid(
                &key("poll_interval"),
                "must be at least 10ms".to_owned(),
            ));
        }
        if w.claim_after.0 < w.timeout.0.saturating_mul(2) {
            return Err(invalid(
                &key("claim_after"),
                format!(
                    "must be at least twice timeout ({}), or a live gate's delivery could be taken over",
                    super::short_duration(w.timeout.0)
                ),
            ));
        }
    }
    Ok(())
}

/// A secret long enough to sign with; the message never shows it.
pub fn check_secret(secret: &str) -> Result<(), String> {
    if secret.len() < MIN_WEBHOOK_SECRET_LEN {
        return Err(format!(
            "must be at least {MIN_WEBHOOK_SECRET_LEN} bytes (it is {}): a short key can be guessed from one signed body",
            secret.len()
        ));
    }
    Ok(())
}
