//! [`StartError`]: why the gate could not start, naming the key at fault
//! where there is one. Every start-up step returns it; it must never carry a
//! secret (the store and TLS errors it wraps are already redacted).

use std::net::SocketAddr;

use thiserror::Error;

use crate::admin::KeyError;
use crate::doors::proxy::UpstreamError;
use crate::store::StoreError;
use crate::tls::TlsError;

/// Why the gate could not start.
#[derive(Debug, Error)]
pub enum StartError {
    #[error("{key}: cannot listen on {addr}: {source}")]
    Bind {
        key: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("admin key: {0}")]
    AdminKey(#[from] KeyError),
    #[error("{key}: {source}")]
    Tls { key: &'static str, source: TlsError },
    #[error("upstream: {0}")]
    Upstream(#[from] UpstreamError),
    #[error("headers.prefix: {0}")]
    Headers(#[from] crate::headers::BadPrefix),
    #[error("headers.strip: {0}")]
    Strip(#[from] crate::headers::BadHeaderName),
    /// Names the entry's key (`webhooks[0].secret_file: …`), never the secret.
    #[error("{0}")]
    Webhook(#[from] crate::webhooks::WebhookError),
    /// The message names `telemetry.otlp_endpoint`.
    #[error("{0}")]
    Traces(#[from] crate::traces::TracesError),
    #[error("leaks: {0}")]
    Leaks(crate::leaks::keys::KeyError),
}
