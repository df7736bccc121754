//! The `[limits]` section: connection, request, header and body limits of
//! every listener. Owns their defaults and range checks; it must never
//! enforce them (the listener does).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration::HumanDuration;

/// Limits that keep a listener serving under overload and slow clients.
/// Each listener (proxy, auth, grpc, admin, ops) has its own counters.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitSettings {
    /// Most open connections per listener; a connection beyond it gets a
    /// 503 with `Retry-After` (plain HTTP) or is closed (TLS) at once.
    pub max_connections: usize,
    /// Most requests in progress per listener; a request beyond it gets
    /// 503 `overloaded` with `Retry-After` at once, never a queue.
    pub max_requests: usize,
    /// Longest a client may take to send a request's headers, and to finish
    /// the TLS handshake. On HTTP/1.1 the clock also runs while a keep-alive
    /// connection waits for its next request.
    pub header_read_timeout: HumanDuration,
    /// A connection with no request in progress (an answer still being
    /// sent counts) for this long is closed (HTTP/2: GOAWAY; checked at
    /// this interval, so it may live up to twice it); one that ignores the
    /// close is dropped `min(header_read_timeout, idle_timeout)` later.
    pub idle_timeout: HumanDuration,
    /// Largest request head (request line and headers), bytes: 431 beyond.
    pub max_header_bytes: usize,
    /// Most header fields in a request: 431 beyond.
    pub max_headers: usize,
    /// Longest wait for the next piece of a request body once a door reads
    /// it (nginx's `client_body_timeout`): beyond it the request is refused
    /// with 408 `body_timeout` and its connection closed; a proxied upload
    /// is aborted upstream. Only time spent waiting for the client counts.
    pub body_read_timeout: HumanDuration,
    /// Least average rate of a request body, bytes per second of waiting
    /// for the client, once `body_rate_grace` of waiting has passed
    /// (Kestrel's `MinRequestBodyDataRate`); slower is 408 `body_timeout`.
    /// 0 turns the rate check off (`body_read_timeout` still holds).
    pub min_body_rate: u64,
    /// Waiting for the client's body that `min_body_rate` forgives first.
    pub body_rate_grace: HumanDuration,
    /// Longest one write to a client may wait for it to read (nginx's
    /// `send_timeout`: between two writes that move, not the whole
    /// answer); beyond it the connection is closed, and a proxied answer's
    /// upstream connection with it. Over HTTP/2 also the longest an
    /// answer's next frame may wait to be taken (a stream granted no
    /// window): beyond it the stream is reset.
    pub send_timeout: HumanDuration,
    /// Largest gRPC message the ext_authz door reads (a `Check`: Envoy's
    /// request headers, bounded by Envoy's own header limits, and a body
    /// only with `with_request_body`), bytes; a larger one is refused
    /// with `RESOURCE_EXHAUSTED` at its prefix, before any is buffered.
    pub max_grpc_message_bytes: usize,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            max_connections: 50_000,
            max_requests: 10_000,
            header_read_timeout: HumanDuration(Duration::from_secs(10)),
            idle_timeout: HumanDuration(Duration::from_secs(120)),
            max_header_bytes: 32 * 1024,
            max_headers: 100,
            body_read_timeout: HumanDuration(Duration::from_secs(10)),
            min_body_rate: 1024,
            body_rate_grace: HumanDuration(Duration::from_secs(5)),
            send_timeout: HumanDuration(Duration::from_secs(60)),
            max_grpc_message_bytes: 256 * 1024,
        }
    }
}

impl LimitSettings {
    /// Checks `limits.*`; `invalid(key, message)` builds the error naming
    /// the key at fault.
    pub(crate) fn validate<E>(&self, invalid: impl Fn(&str, String) -> E) -> Result<(), E> {
        let l = self;
        for (key, value) in [
            ("limits.max_connections", l.max_connections),
            ("limits.max_requests", l.max_requests),
            ("limits.max_headers", l.max_headers),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be more than 0".into()));
            }
        }
        if !(8192..=1 << 20).contains(&l.max_header_bytes) {
            return Err(invalid(
                "limits.max_header_bytes",
                "must be between 8192 and 1048576".into(),
            ));
        }
        if !(16 << 10..=16 << 20).contains(&l.max_grpc_message_bytes) {
            return Err(invalid(
                "limits.max_grpc_message_bytes",
                "must be between 16384 and 16777216".into(),
            ));
        }
        // How long a connection may hold a slot doing nothing: bounded
        // (humantime's `M` is a month).
        // An idle keep-alive may match a load balancer's (AWS ALB: up to
        // 4000 s).
        l.idle_timeout
            .within(Duration::from_millis(100), Duration::from_secs(86_400))
            .map_err(|why| invalid("limits.idle_timeout", why))?;
        for (key, value) in [
            ("limits.header_read_timeout", l.header_read_timeout),
            ("limits.body_read_timeout", l.body_read_timeout),
            ("limits.body_rate_grace", l.body_rate_grace),
            ("limits.send_timeout", l.send_timeout),
        ] {
            value
                .within(Duration::from_millis(100), Duration::from_secs(3600))
                .map_err(|why| invalid(key, why))?;
        }
        Ok(())
    }
}
