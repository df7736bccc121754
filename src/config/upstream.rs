//! The `[upstream]` and `[proxy]` sections: the API behind the reverse
//! proxy and how requests are forwarded to it. Owns their defaults; it must
//! never open a connection.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration::HumanDuration;

/// The API behind the reverse proxy.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamSettings {
    /// `http://host:port` or `https://host:port` (no path).
    pub url: String,
    /// Extra CA (PEM) trusted for an https upstream, beside the public roots.
    pub ca_file: Option<PathBuf>,
    /// Longest wait for a TCP connection.
    pub connect_timeout: HumanDuration,
    /// Longest wait for the upstream's response headers (then 504).
    pub timeout: HumanDuration,
    /// Idle pooled connections are closed after this (`0s`: none is kept).
    pub pool_idle_timeout: HumanDuration,
    /// Most idle pooled connections kept, per door thread.
    pub pool_max_idle: usize,
    /// Speak HTTP/2 to the upstream.
    pub http2: bool,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:3000".into(),
            ca_file: None,
            connect_timeout: HumanDuration(Duration::from_secs(2)),
            timeout: HumanDuration(Duration::from_secs(30)),
            pool_idle_timeout: HumanDuration(Duration::from_secs(90)),
            pool_max_idle: 256,
            http2: false,
        }
    }
}

impl UpstreamSettings {
    /// `url` is `http(s)://host[:port]` with no path, query or user: checked
    /// here so that `check-config` refuses what `serve` could not use, before
    /// `serve` writes anything.
    pub(crate) fn validate<E>(&self, invalid: impl Fn(&str, String) -> E) -> Result<(), E> {
        // `0s` would fail every request; a month holds a slot that long.
        self.connect_timeout
            .within(Duration::from_millis(1), Duration::from_secs(300))
            .map_err(|why| invalid("upstream.connect_timeout", why))?;
        self.timeout
            .within(Duration::from_millis(1), Duration::from_secs(3600))
            .map_err(|why| invalid("upstream.timeout", why))?;
        let url = self.url.trim();
        let shown = super::redact_url(url);
        let fix = |why: &str| {
            let hint = if url.contains("://") {
                "e.g. http://127.0.0.1:3000".to_owned()
            } else {
                format!("e.g. http://{shown}")
            };
            invalid(
                "upstream.url",
                format!("`{shown}` {why}; write http://host:port or https://host:port ({hint})"),
            )
        };
        let uri: http::Uri = url.parse().map_err(|_| fix("is not a URL"))?;
        match uri.scheme_str() {
            Some("http" | "https") => {}
            Some(other) => return Err(fix(&format!("has the scheme `{other}`"))),
            None => return Err(fix("has no scheme")),
        }
        let Some(authority) = uri.authority() else {
            return Err(fix("names no host"));
        };
        if authority.as_str().contains('@') {
            return Err(fix("carries a user or password"));
        }
        if authority.host().is_empty() {
            return Err(fix("names no host"));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(fix(
                "has a path or query (requests keep their own path; the upstream URL is only where they go)",
            ));
        }
        Ok(())
    }
}

/// Reverse-proxy behaviour.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxySettings {
    /// Forward the client's `Authorization` header to the upstream.
    pub forward_authorization: bool,
}
