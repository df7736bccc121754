//! `serve` (run the gate on a multi-threaded runtime until a signal) and
//! `check-config` (the effective settings, secrets masked).
//!
//! Never prints a secret: every value under a name that holds one and
//! every URL's password are masked before anything is shown.

use serde_json::{Value, json};

use crate::config::{self, Loaded};
use crate::server::{Bound, check_tls, signals};

use super::global::{OK, REFUSED, USAGE};

pub(super) fn serve(loaded: &Loaded) -> u8 {
    // What check-config checks, before anything is written (data dir, key).
    if let Err(e) = check_tls(&loaded.settings) {
        complain!("error: {e}");
        return USAGE;
    }
    if let Err(e) = crate::telemetry::init(&loaded.settings.log) {
        complain!("error: {e}");
        return USAGE;
    }
    if let Some(f) = &loaded.origin.file {
        tracing::info!(file = %f.display(), "config file loaded");
    }
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if loaded.settings.runtime.worker_threads > 0 {
        builder.worker_threads(loaded.settings.runtime.worker_threads);
    }
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            complain!("error: cannot start the async runtime: {e}");
            return REFUSED;
        }
    };
    runtime.block_on(async {
        match Bound::new(loaded).await {
            Ok(bound) => {
                bound.run(signals()).await;
                OK
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot start");
                complain!("error: {e}");
                USAGE
            }
        }
    })
}

pub(super) fn check_config(loaded: &Loaded, as_json: bool) -> u8 {
    let s = &loaded.settings;
    if let Err(e) = check_tls(s).and_then(|()| crate::server::check_webhooks(s)) {
        complain!("error: {e}");
        return USAGE;
    }
    for w in &loaded.warnings {
        complain!("warning: {w}");
    }
    // The key file `serve` would read: judged as `serve` judges it (a
    // missing one is made at start). A file this user cannot read (the
    // data_dir is the gate's own, mode 0700) is not judged, only said.
    if s.admin.key.is_none() {
        use crate::admin::KeyError;
        match crate::admin::read_key_file(&s.data_dir.join(crate::admin::KEY_FILE)) {
            Ok(_) => {}
            Err(KeyError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            }
            Err(e @ KeyError::Read { .. }) => {
                complain!("warning: admin key not judged as this user: {e}");
            }
            Err(e) => {
                complain!("error: admin key: {e}");
                return USAGE;
            }
        }
    }
    let mut effective = serde_json::to_value(s).unwrap_or(Value::Null);
    // Settings whose default follows from others: the value in effect.
    if let Some(Value::Null) = effective.pointer("/leaks/max_unverified_bytes") {
        effective["leaks"]["max_unverified_bytes"] = json!(s.leaks.unverified_budget());
    }
    if let Some(Value::Null) = effective.pointer("/admin/reserved_requests") {
        effective["admin"]["reserved_requests"] = json!(s.admin.reserved_requests(&s.limits));
    }
    mask_secrets(&mut effective);
    if as_json {
        say!(
            "{}",
            serde_json::to_string_pretty(&json!({ "ok": true, "settings": effective }))
                .unwrap_or_default()
        );
        return OK;
    }
    let file = loaded.origin.file.as_ref().map_or_else(
        || "none (built-in defaults)".to_owned(),
        |f| f.display().to_string(),
    );
    say!("config OK");
    say!("  file: {file}");
    if !loaded.origin.env_vars.is_empty() {
        say!("  environment: {}", loaded.origin.env_vars.join(", "));
    }
    say!(
        "{}",
        serde_json::to_string_pretty(&effective).unwrap_or_default()
    );
    OK
}

/// The names a secret is set under, wherever they sit in the settings
/// (`admin.key`, `webhooks[].secret`, `store.redis.sentinel.password`).
const SECRET_NAMES: [&str; 3] = ["key", "secret", "password"];

/// Masks every secret in the effective settings, by shape rather than by
/// path, so that a setting added later is masked too: any value set under
/// one of [`SECRET_NAMES`] (a string: a role or workspace of that name is
/// still shown) becomes `***`, and every string that is a URL
/// carrying a password (the Redis URL, each node's) loses the password.
fn mask_secrets(v: &mut Value) {
    match v {
        Value::Object(fields) => {
            for (name, value) in fields.iter_mut() {
                if SECRET_NAMES.contains(&name.as_str()) && value.is_string() {
                    *value = json!("***");
                } else {
                    mask_secrets(value);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(mask_secrets),
        Value::String(text) if text.contains("://") => {
            *text = config::redact_url(text);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked_wherever_they_sit() {
        let mut v = json!({
            "admin": {"key": "k-hidden", "reserved_requests": 3},
            "webhooks": [{"url": "https://h.example/x", "secret": "s-hidden", "events": ["*"]}],
            "store": {"redis": {
                "url": "redis://:u-hidden@h:6379",
                "nodes": ["redis://user:n-hidden@a:26379", "redis://b:26379"],
                "key_prefix": "hawzu:",
                "sentinel": {"password": "p-hidden", "username": null},
            }},
            "somewhere": {"new": {"password": "later-hidden"}},
            "roles": {"secret": ["tokens:read"]},
        });
        mask_secrets(&mut v);
        let text = v.to_string();
        assert!(!text.contains("hidden"), "{text}");
        assert_eq!(v["admin"]["key"], "***");
        assert_eq!(v["admin"]["reserved_requests"], 3);
        assert_eq!(v["store"]["redis"]["url"], "redis://:***@h:6379");
        assert_eq!(v["store"]["redis"]["nodes"][0], "redis://user:***@a:26379");
        assert_eq!(v["store"]["redis"]["nodes"][1], "redis://b:26379");
        assert_eq!(v["webhooks"][0]["url"], "https://h.example/x");
        assert_eq!(v["store"]["redis"]["key_prefix"], "hawzu:");
        assert_eq!(v["roles"]["secret"][0], "tokens:read");
        // Unset is shown as unset, not as a mask.
        assert!(v["store"]["redis"]["sentinel"]["username"].is_null());
    }
}
