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
    /// Idle pooled connections are closed after this.
    pub pool_idle_timeout: HumanDuration,
    /// Most idle pooled connections kept.
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

/// Reverse-proxy behaviour.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxySettings {
    /// Forward the client's `Authorization` header to the upstream.
    pub forward_authorization: bool,
}
