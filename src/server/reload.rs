//! Reloading while running: on SIGHUP the config is read again and rules,
//! roles and TLS certificates are swapped whole (or nothing is, when the new
//! config is bad); certificates are also re-read when their files change.
//! Owns what may change without a restart; it must never rebind a listener
//! or reopen the store (those changes wait for a restart, and say so).

use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::config::{self, ListenerTls, Settings};
use crate::doors::PolicyHandle;
use crate::doors::listener::TlsHandle;

use super::listeners::{Which, tls_config};

/// Reads the config again and swaps what can change while running:
/// rules and roles, and TLS certificates. A bad config changes nothing.
pub(super) fn reload(
    config_file: Option<&Path>,
    settings: &mut Settings,
    policy: &PolicyHandle,
    tls_handles: &[(Which, TlsHandle)],
) {
    let loaded = match config::load(config_file) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "reload refused: the new config is invalid; the current one keeps serving");
            return;
        }
    };
    // Build every TLS config before swapping anything: all or nothing.
    let mut fresh = Vec::new();
    for (which, _) in tls_handles {
        match which.tls(&loaded.settings).map(|t| tls_config(*which, t)) {
            Some(Ok(c)) => fresh.push(c),
            Some(Err(e)) => {
                tracing::error!(error = %e, "reload refused: the current config keeps serving");
                return;
            }
            None => {
                tracing::error!(
                    key = which.tls_key(),
                    "reload refused: TLS cannot be turned off while running; restart to change it"
                );
                return;
            }
        }
    }
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    let restart_needed = restart_only_changes(settings, &loaded.settings);
    if !restart_needed.is_empty() {
        tracing::warn!(keys = %restart_needed.join(", "), "these changes take effect only after a restart");
    }
    policy.store(loaded.policy.clone());
    for ((_, handle), config) in tls_handles.iter().zip(fresh) {
        handle.store(config);
    }
    let rules = loaded.policy.rules.rules().len();
    tracing::info!(
        rules,
        "config reloaded: rules, roles and TLS certificates swapped"
    );
    settings.roles = loaded.settings.roles;
    settings.policy = loaded.settings.policy;
    settings.tls = loaded.settings.tls;
}

/// Top-level sections that differ and cannot change without a restart.
fn restart_only_changes(old: &Settings, new: &Settings) -> Vec<&'static str> {
    let json = |s: &Settings| serde_json::to_value(s).unwrap_or_default();
    let (a, b) = (json(old), json(new));
    let reloadable = ["roles", "policy", "tls"];
    let mut changed = Vec::new();
    if let (Some(a), Some(b)) = (a.as_object(), b.as_object()) {
        for (k, v) in a {
            if !reloadable.contains(&k.as_str()) && b.get(k) != Some(v) {
                changed.push(match k.as_str() {
                    "data_dir" => "data_dir",
                    "listen" => "listen",
                    "upstream" => "upstream",
                    "proxy" => "proxy",
                    "cache" => "cache",
                    "headers" => "headers",
                    "store" => "store",
                    "admin" => "admin",
                    "log" => "log",
                    "shutdown" => "shutdown",
                    "runtime" => "runtime",
                    "limits" => "limits",
                    "failed_auth" => "failed_auth",
                    "trusted_proxies" => "trusted_proxies",
                    "webhooks" => "webhooks",
                    _ => "other",
                });
            }
        }
    }
    changed
}

/// Re-reads a listener's certificate when its files change (polled every
/// two seconds; a bad new file is logged and the old certificate kept).
pub(super) async fn watch_tls_files(settings: Settings, handles: Vec<(Which, TlsHandle)>) {
    if handles.is_empty() {
        return;
    }
    let stamp = |t: &ListenerTls| -> Vec<Option<SystemTime>> {
        [
            Some(&t.cert_file),
            Some(&t.key_file),
            t.client_ca_file.as_ref(),
        ]
        .into_iter()
        .flatten()
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
    };
    let mut seen: Vec<Vec<Option<SystemTime>>> = handles
        .iter()
        .map(|(w, _)| w.tls(&settings).map(stamp).unwrap_or_default())
        .collect();
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tick.tick().await;
        for (i, (which, handle)) in handles.iter().enumerate() {
            let Some(t) = which.tls(&settings) else {
                continue;
            };
            let now = stamp(t);
            if now == seen[i] {
                continue;
            }
            seen[i] = now;
            match tls_config(*which, t) {
                Ok(c) => {
                    handle.store(c);
                    tracing::info!(key = which.tls_key(), "certificate files changed; reloaded");
                }
                Err(e) => {
                    tracing::error!(error = %e, "certificate files changed but cannot be used; keeping the old ones")
                }
            }
        }
    }
}
