//! `serve` (run the gate on a multi-threaded runtime until a signal) and
//! `check-config` (the effective settings, secrets masked).
//!
//! Never prints a secret: the admin key and the Redis URL's password are
//! masked before anything is shown.

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
    if s.admin.key.is_none()
        && let Some(w) = crate::config::exposed_file(
            "the admin key file",
            &s.data_dir.join(crate::admin::KEY_FILE),
        )
    {
        complain!("warning: {w}");
    }
    let mut effective = serde_json::to_value(s).unwrap_or(Value::Null);
    // Never print secrets.
    if s.admin.key.is_some()
        && let Some(key) = effective.pointer_mut("/admin/key")
    {
        *key = json!("***");
    }
    for (i, w) in s.webhooks.iter().enumerate() {
        if w.secret.is_some()
            && let Some(secret) = effective.pointer_mut(&format!("/webhooks/{i}/secret"))
        {
            *secret = json!("***");
        }
    }
    if let Some(url) = effective.pointer_mut("/store/redis/url") {
        *url = json!(config::redact_url(&s.store.redis.url));
    }
    if let Some(nodes) = effective.pointer_mut("/store/redis/nodes") {
        *nodes = json!(
            s.store
                .redis
                .nodes
                .iter()
                .map(|n| config::redact_url(n))
                .collect::<Vec<_>>()
        );
    }
    if s.store.redis.sentinel.password.is_some()
        && let Some(password) = effective.pointer_mut("/store/redis/sentinel/password")
    {
        *password = json!("***");
    }
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
