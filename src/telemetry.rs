//! Logging set-up: tracing-subscriber, as JSON or text, on stderr.
//!
//! Nothing logged by the gate carries a token secret or an admin key: those
//! types redact themselves, and no log line formats a raw `Authorization`.

use tracing_subscriber::EnvFilter;

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
    pub door: crate::ops::Door,
    pub method: &'a str,
    /// The request path; the query is never logged.
    pub path: &'a str,
    pub status: u16,
    /// `allow`, a deny code, or a proxy fault (`upstream_timeout`, …).
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

/// A path with anything shaped like a token value replaced, so a secret
/// pasted into a URL never reaches a log.
pub fn redact_path(path: &str) -> std::borrow::Cow<'_, str> {
    if !path.contains("hwz_") {
        return std::borrow::Cow::Borrowed(path);
    }
    let mut out = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(i) = rest.find("hwz_") {
        out.push_str(&rest[..i]);
        let tail = &rest[i + 4..];
        let run = tail.bytes().take_while(u8::is_ascii_alphanumeric).count();
        out.push_str("hwz_…redacted");
        rest = &tail[run..];
    }
    out.push_str(rest);
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_shaped_parts_of_paths_are_redacted() {
        assert_eq!(redact_path("/api/v1/x"), "/api/v1/x");
        let t = crate::token::TokenSecret::generate().unwrap();
        let p = format!("/api/{}/x", t.expose());
        let r = redact_path(&p);
        assert!(!r.contains(&t.expose()[4..]), "{r}");
        assert_eq!(r, "/api/hwz_…redacted/x");
        assert_eq!(redact_path("/a/hwz_/b"), "/a/hwz_…redacted/b");
    }
}
