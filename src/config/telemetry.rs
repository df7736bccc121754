//! The `[telemetry]` section: where the gate's own spans go (OTLP/HTTP) and
//! how many of them. Owns the defaults and the checks; it must never open a
//! connection or build an exporter (`crate::traces` does).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration::HumanDuration;

/// Tracing: one span per request, exported over OTLP/HTTP (protobuf).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetrySettings {
    /// The collector's OTLP/HTTP base URL (`http://collector:4318`); the
    /// gate posts to `<url>/v1/traces`. Unset (the default): no spans are
    /// made or sent at all.
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the spans.
    pub service_name: String,
    /// Share of new traces recorded, 0.0..=1.0: requests without a
    /// `traceparent`, and every request from a peer outside
    /// `trusted_proxies`; a trusted peer's `traceparent` decides by its
    /// sampled flag.
    pub sample_ratio: f64,
    /// Whether a `traceparent` from a peer in `trusted_proxies` is the
    /// parent of the gate's span (and its sampled flag decides). Off (the
    /// default), it is only linked, as a stranger's is: a proxy that does
    /// not trace itself — Envoy, Traefik, Caddy as shipped — relays the
    /// client's header, which would choose the trace and whether it is
    /// recorded. On when every trusted proxy traces and sets it.
    pub join_proxy_traces: bool,
    /// Finished spans held for export; past it, new spans are dropped and
    /// counted (`hawzu_gate_trace_spans_total{result="dropped"}`), never waited for.
    pub queue_size: usize,
    /// Longest wait for the collector to take one batch.
    pub export_timeout: HumanDuration,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            service_name: "hawzu-gate".into(),
            sample_ratio: 1.0,
            join_proxy_traces: false,
            queue_size: 2048,
            export_timeout: HumanDuration(Duration::from_secs(10)),
        }
    }
}

impl TelemetrySettings {
    /// The endpoint is an `http://` or `https://` URL with a host and no
    /// query, user info or fragment; the ratio is within 0..=1; the queue
    /// and timeout are not zero.
    pub(crate) fn validate<E>(&self, invalid: impl Fn(&str, String) -> E) -> Result<(), E> {
        if let Some(url) = &self.otlp_endpoint {
            check_endpoint(url).map_err(|m| invalid("telemetry.otlp_endpoint", m))?;
        }
        if self.service_name.trim().is_empty() {
            return Err(invalid(
                "telemetry.service_name",
                "must not be empty".into(),
            ));
        }
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return Err(invalid(
                "telemetry.sample_ratio",
                format!("`{}` is not within 0.0 and 1.0", self.sample_ratio),
            ));
        }
        if self.queue_size == 0 || self.queue_size > 1 << 20 {
            return Err(invalid(
                "telemetry.queue_size",
                "must be from 1 to 1048576".into(),
            ));
        }
        let t = self.export_timeout.0;
        if t.is_zero() || t > Duration::from_secs(300) {
            return Err(invalid(
                "telemetry.export_timeout",
                "must be more than 0s and at most 5m".into(),
            ));
        }
        Ok(())
    }

    /// The URL spans are posted to, when export is on (`<endpoint>/v1/traces`).
    pub fn traces_url(&self) -> Option<String> {
        let base = self.otlp_endpoint.as_deref()?;
        Some(format!("{}{TRACES_PATH}", base.trim_end_matches('/')))
    }
}

/// The OTLP/HTTP path of traces, appended to `telemetry.otlp_endpoint`.
pub const TRACES_PATH: &str = "/v1/traces";

fn check_endpoint(url: &str) -> Result<(), String> {
    // Never quote a password back, even one refused for being there.
    let shown = crate::redact::redact_url(url);
    let bad = |why: &str| Err(format!("`{shown}` is not usable: {why}"));
    let uri: http::Uri = match url.parse() {
        Ok(u) => u,
        Err(_) => return bad("not a URL"),
    };
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return bad("use an http:// or https:// URL");
    }
    let Some(authority) = uri.authority() else {
        return bad("no host");
    };
    if authority.host().is_empty() {
        return bad("no host");
    }
    if authority.as_str().contains('@') {
        return bad("user info is not supported");
    }
    if uri.query().is_some() || url.contains('#') {
        return bad("no query or fragment");
    }
    if uri.path().trim_end_matches('/').ends_with(TRACES_PATH) {
        return bad("give the collector's base URL; /v1/traces is appended");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(url: &str) -> Result<(), String> {
        let s = TelemetrySettings {
            otlp_endpoint: Some(url.into()),
            ..TelemetrySettings::default()
        };
        s.validate(|k, m| format!("{k}: {m}"))
    }

    #[test]
    fn endpoint_must_be_an_http_base_url() {
        assert!(check("http://127.0.0.1:4318").is_ok());
        assert!(check("https://collector.example/otlp/").is_ok());
        for bad in [
            "collector:4318",
            "grpc://collector:4317",
            "http://user:pw@collector:4318",
            "http://collector:4318/?x=1",
            "http://collector:4318/v1/traces",
            "",
        ] {
            let e = check(bad).unwrap_err();
            assert!(e.starts_with("telemetry.otlp_endpoint: "), "{bad}: {e}");
        }
    }

    #[test]
    fn traces_url_appends_the_otlp_path_once() {
        let s = TelemetrySettings {
            otlp_endpoint: Some("http://c:4318/".into()),
            ..TelemetrySettings::default()
        };
        assert_eq!(s.traces_url().unwrap(), "http://c:4318/v1/traces");
        assert_eq!(TelemetrySettings::default().traces_url(), None);
    }

    #[test]
    fn ratio_queue_and_timeout_are_bounded() {
        let key = |s: TelemetrySettings| s.validate(|k, _| k.to_owned()).unwrap_err();
        let d = TelemetrySettings::default;
        assert_eq!(
            key(TelemetrySettings {
                sample_ratio: 1.5,
                ..d()
            }),
            "telemetry.sample_ratio"
        );
        assert_eq!(
            key(TelemetrySettings {
                sample_ratio: f64::NAN,
                ..d()
            }),
            "telemetry.sample_ratio"
        );
        assert_eq!(
            key(TelemetrySettings {
                queue_size: 0,
                ..d()
            }),
            "telemetry.queue_size"
        );
        assert_eq!(
            key(TelemetrySettings {
                export_timeout: HumanDuration(Duration::ZERO),
                ..d()
            }),
            "telemetry.export_timeout"
        );
    }
}
