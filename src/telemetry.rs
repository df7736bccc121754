//! Logging set-up: tracing-subscriber, as JSON or text, on stderr.
//!
//! Nothing logged by the gate carries a token secret or an admin key: those
//! types redact themselves, no log line formats a raw `Authorization`, and
//! the panic hook ([`install_panic_hook`]) redacts token-shaped text from
//! panic messages before they are written.

use tracing_subscriber::EnvFilter;

pub use crate::redact::{redact_path, redact_secrets};

use crate::config::{LogFormat, LogSettings};

/// Installs the global subscriber. `RUST_LOG`, when set, wins over
/// `log.level`. Returns an error message naming the key when the filter is
/// not valid.
pub fn init(log: &LogSettings) -> Result<(), String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => EnvFilter::try_new(&v)
            .map_err(|e| format!("RUST_LOG: `{v}` is not a log filter: {e}"))?,
        _ => EnvFilter::try_new(&log.level)
            .map_err(|e| format!("log.level: `{}` is not a log filter: {e}", log.level))?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match log.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text => builder.with_ansi(false).try_init(),
    };
    // A second init (tests) keeps the first subscriber.
    let _ = result;
    Ok(())
}

/// One access event: a request that reached a door, as it ended.
#[derive(Debug)]
pub struct Access<'a> {
    pub request_id: &'a str,
    pub door: crate::metrics::Door,
    pub method: &'a str,
    /// The request path; the query is never logged.
    pub path: &'a str,
    pub status: u16,
    /// `allow`, `passed`, a deny code, or a proxy fault (`upstream_timeout`, …).
    pub code: &'a str,
    pub record: Option<&'a crate::cache::CachedRecord>,
    pub elapsed: std::time::Duration,
}

/// Whether access events are logged at all (the filter may turn them off).
pub fn access_enabled() -> bool {
    tracing::enabled!(target: "hawzu_gate::access", tracing::Level::INFO)
}

/// Logs one access event (target `hawzu_gate::access`, level info).
pub fn access(a: &Access<'_>) {
    let path = a.path.split_once('?').map_or(a.path, |(p, _)| p);
    tracing::info!(
        target: "hawzu_gate::access",
        request_id = a.request_id,
        door = a.door.as_str(),
        method = a.method,
        path = %redact_path(path),
        status = a.status,
        code = a.code,
        token_id = a.record.map(|r| r.id()),
        workspace_id = a.record.map(|r| r.workspace_id()),
        latency_us = u64::try_from(a.elapsed.as_micros()).unwrap_or(u64::MAX),
        "request"
    );
}

/// Replaces the default panic hook (which prints the raw message) with one
/// that writes the location and the message with every secret-shaped part
/// redacted ([`redact_secrets`]): as an error event (target
/// `hawzu_gate::panic`) when logging is set up, else on stderr.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let text = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(not a text message)");
        let message = redact_secrets(text);
        let location = info
            .location()
            .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
            .unwrap_or_default();
        let thread = std::thread::current();
        let thread = thread.name().unwrap_or("unnamed");
        if tracing::enabled!(target: "hawzu_gate::panic", tracing::Level::ERROR) {
            tracing::error!(target: "hawzu_gate::panic", %location, thread, "panic: {message}");
        } else {
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr().lock(),
                "thread '{thread}' panicked at {location}: {message}"
            );
        }
    }));
}
