//! Traces: the gate's own span per request (door, decision, cache use,
//! store time, token id), parented on the caller's W3C `traceparent` and
//! exported over OTLP/HTTP (protobuf) when `telemetry.otlp_endpoint` is set.
//!
//! Off (no endpoint): nothing here exists — no tracer, no exporter, no
//! task; a door pays one branch on an `Option`. On: a finished span goes
//! into a bounded queue with `try_send` (a full queue drops the span and
//! counts it), and one background task sends batches to the collector with
//! a timeout. The request path never waits on the collector.
//!
//! A span never carries a token secret, its hash or a raw `Authorization`:
//! only the token's public id and workspace, and the path with token-shaped
//! parts redacted. This module imports only `config` and `metrics`; what a
//! span says is given by `doors::lifecycle`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper_util::client::legacy::connect::HttpConnector;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{
    Link, Span as _, SpanContext, SpanKind, Status, TraceContextExt as _, TraceState, Tracer as _,
    TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    Sampler, SdkTracer, SdkTracerProvider, SpanData, SpanExporter as _, SpanProcessor,
};
use thiserror::Error;
use tokio::sync::mpsc;

use crate::config::TelemetrySettings;
use crate::metrics::Metrics;

/// W3C trace context header names.
pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

/// Span attribute keys. OpenTelemetry's HTTP names where one exists.
pub mod attr {
    pub const DOOR: &str = "hawzu.door";
    /// `allow`, `passed` or `deny`.
    pub const DECISION: &str = "hawzu.decision";
    /// The deny code (or the fault that ended an allowed request).
    pub const CODE: &str = "hawzu.code";
    /// `hit`, `negative_hit`, `miss`, `coalesced` or `stale`.
    pub const CACHE: &str = "hawzu.cache";
    /// Microseconds this request waited on the token store (misses only).
    pub const STORE_TIME_US: &str = "hawzu.store_time_us";
    /// The token's public id (`tok_…`), never its secret or hash.
    pub const TOKEN_ID: &str = "hawzu.token_id";
    pub const WORKSPACE_ID: &str = "hawzu.workspace_id";
    pub const METHOD: &str = "http.request.method";
    /// The path asked about, token-shaped parts redacted, no query.
    pub const PATH: &str = "url.path";
    pub const STATUS: &str = "http.response.status_code";
}

/// Spans sent in one request to the collector, at most.
const BATCH: usize = 512;
/// How long the exporter waits for more spans before sending a batch that
/// is not full.
const LINGER: Duration = Duration::from_millis(200);

/// A failing collector is logged at most this often.
const WARN_EVERY: Duration = Duration::from_secs(30);

/// Why export could not be set up.
#[derive(Debug, Error)]
pub enum TracesError {
    #[error("telemetry.otlp_endpoint: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    #[error("telemetry.otlp_endpoint: {0}")]
    Tls(#[from] crate::tls::TlsError),
}

/// The tracer of one gate (not the process-global one: tests run several
/// gates in one process).
///
/// When the last clone (and the last open span) is gone, the queue's sender
/// goes with the provider; the export task then sends what is left and ends.
pub struct Traces {
    tracer: SdkTracer,
    propagator: TraceContextPropagator,
    /// `telemetry.join_proxy_traces`.
    join_proxy_traces: bool,
}

impl std::fmt::Debug for Traces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Traces").finish_non_exhaustive()
    }
}

/// The exporting task: ends once every span is sent after the tracer is
/// gone (await it, with a deadline, at shutdown).
pub type ExportTask = tokio::task::JoinHandle<()>;

impl Traces {
    /// Starts export when `telemetry.otlp_endpoint` is set; `None` (and
    /// nothing started) when it is not. Must run inside a Tokio runtime.
    pub fn start(
        settings: &TelemetrySettings,
        metrics: &Arc<Metrics>,
    ) -> Result<Option<(Arc<Self>, ExportTask)>, TracesError> {
        let Some(url) = settings.traces_url() else {
            return Ok(None);
        };
        let timeout = settings.export_timeout.0;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(timeout));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(crate::tls::client_config(None)?)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = opentelemetry_http::hyper::HyperClient::new(connector, timeout, None);
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(url)
            .with_timeout(timeout)
            .build()?;
        let resource = Resource::builder_empty()
            .with_service_name(settings.service_name.clone())
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        exporter.set_resource(&resource);

        let (tx, rx) = mpsc::channel(settings.queue_size);
        let queue = Queue {
            tx,
            metrics: metrics.clone(),
        };
        let provider = SdkTracerProvider::builder()
            .with_span_processor(queue)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                settings.sample_ratio,
            ))))
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("hawzu-gate");
        let task = tokio::spawn(export(rx, exporter, metrics.clone(), timeout));
        let traces = Arc::new(Self {
            tracer,
            propagator: TraceContextPropagator::new(),
            join_proxy_traces: settings.join_proxy_traces,
        });
        Ok(Some((traces, task)))
    }

    /// Starts the span of one request at `door`. From a trusted caller
    /// (see [`CallerTrace`]), when `telemetry.join_proxy_traces` says the
    /// trusted proxies trace, the span is a child of its `traceparent` when
    /// that is a valid W3C header (a malformed one is ignored: the span
    /// starts a new trace), and the caller's sampled flag decides. From
    /// anyone else the span starts a trace of the gate's own, sampled by
    /// `sample_ratio` alone, and links the caller's span (its `tracestate`
    /// not taken).
    pub fn span(&self, door: &'static str, caller: CallerTrace<'_>) -> RequestSpan {
        let caller = CallerTrace {
            trusted: caller.trusted && self.join_proxy_traces,
            ..caller
        };
        let remote = caller.traceparent.map(|tp| {
            self.propagator.extract(&Incoming {
                tp,
                ts: caller.tracestate.filter(|_| caller.trusted),
            })
        });
        let builder = self
            .tracer
            .span_builder(door)
            .with_kind(SpanKind::Server)
            .with_attributes([KeyValue::new(attr::DOOR, door)]);
        let (builder, parent, restarted) = match remote {
            Some(cx) if !caller.trusted => {
                let sc = cx.span().span_context().clone();
                let link = sc.is_valid().then(|| {
                    Link::with_context(SpanContext::new(
                        sc.trace_id(),
                        sc.span_id(),
                        sc.trace_flags(),
                        true,
                        TraceState::NONE,
                    ))
                });
                let restarted = link.is_some();
                (
                    builder.with_links(link.into_iter().collect()),
                    Context::new(),
                    restarted,
                )
            }
            Some(cx) => (builder, cx, false),
            None => (builder, Context::new(), false),
        };
        let span = builder.start_with_context(&self.tracer, &parent);
        RequestSpan { span, restarted }
    }
}

/// The trace context a request came with, and whether the gate takes it
/// from this caller: only a peer in `trusted_proxies` (the proxies whose
/// forwarding headers are believed), and only with
/// `telemetry.join_proxy_traces` (a proxy that does not trace relays the
/// client's header), chooses the trace a span joins and whether it is
/// recorded. Anyone else could otherwise have every request
/// recorded past `sample_ratio`, and hang the gate's spans — and the API's
/// under them — in a trace of their choosing.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallerTrace<'h> {
    pub traceparent: Option<&'h str>,
    pub tracestate: Option<&'h str>,
    pub trusted: bool,
}

/// The span of one request, open until [`RequestSpan::end`].
#[derive(Debug)]
pub struct RequestSpan {
    span: opentelemetry_sdk::trace::Span,
    /// The caller's trace was not joined (an untrusted caller sent one).
    restarted: bool,
}

impl RequestSpan {
    /// Whether this span is recorded and exported (the sampler kept it).
    pub fn is_recording(&self) -> bool {
        self.span.is_recording()
    }

    pub fn set(&mut self, key: &'static str, value: impl Into<opentelemetry::Value>) {
        self.span.set_attribute(KeyValue::new(key, value));
    }

    /// The `traceparent` naming this span as the parent, for the upstream;
    /// `None` when the span is not recorded and the caller's trace was
    /// joined (the caller's header is then forwarded as it came, so the API
    /// never names a span nobody keeps). A span that started a trace of
    /// its own (an untrusted caller's) always names itself — flag `00` when
    /// not recorded —, so the API does not take the stranger's trace and
    /// sampled flag either.
    pub fn traceparent(&self) -> Option<String> {
        if !self.span.is_recording() && !self.restarted {
            return None;
        }
        let cx = self.span.span_context();
        Some(format!(
            "00-{}-{}-{:02x}",
            cx.trace_id(),
            cx.span_id(),
            cx.trace_flags().to_u8()
        ))
    }

    /// Whether the upstream must not get the caller's `tracestate`: the
    /// span is in a trace of the gate's own, which the caller's state does
    /// not belong to.
    pub fn drops_tracestate(&self) -> bool {
        self.restarted
    }

    /// Ends the span with the answer's status: an error on 5xx.
    pub fn end(mut self, status: u16) {
        self.span
            .set_attribute(KeyValue::new(attr::STATUS, i64::from(status)));
        if status >= 500 {
            self.span.set_status(Status::error(""));
        }
        self.span.end();
    }
}

/// The caller's trace context, as the propagator reads it.
struct Incoming<'a> {
    tp: &'a str,
    ts: Option<&'a str>,
}

impl Extractor for Incoming<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            TRACEPARENT => Some(self.tp),
            TRACESTATE => self.ts,
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT, TRACESTATE]
    }
}

// === impl Queue ===

/// The span processor: a finished span is queued without waiting; a full
/// queue drops it (counted).
#[derive(Debug)]
struct Queue {
    tx: mpsc::Sender<SpanData>,
    metrics: Arc<Metrics>,
}

impl SpanProcessor for Queue {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if self.tx.try_send(span).is_err() {
            self.metrics.trace_spans("dropped", 1);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// Sends queued spans in batches until the queue is closed and empty. The
/// exporter retries OTLP's retryable answers (up to 3 times, back-off)
/// within `timeout`; a batch still not taken is counted as failed and
/// dropped, never kept. A failing collector is logged at most once per
/// [`WARN_EVERY`].
async fn export(
    mut rx: mpsc::Receiver<SpanData>,
    exporter: opentelemetry_otlp::SpanExporter,
    metrics: Arc<Metrics>,
    timeout: Duration,
) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut warned: Option<Instant> = None;
    let mut failed_since = 0u64;
    loop {
        if rx.recv_many(&mut batch, BATCH).await == 0 {
            return;
        }
        if batch.len() < BATCH {
            // Let a few more arrive, so a busy gate sends fewer requests.
            let _ = tokio::time::timeout(LINGER, async {
                while batch.len() < BATCH {
                    let room = BATCH - batch.len();
                    if rx.recv_many(&mut batch, room).await == 0 {
                        break;
                    }
                }
            })
            .await;
        }
        let n = batch.len() as u64;
        let spans = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
        let why = match tokio::time::timeout(timeout, exporter.export(spans)).await {
            Ok(Ok(())) => {
                metrics.trace_spans("exported", n);
                continue;
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {timeout:?}"),
        };
        metrics.trace_spans("failed", n);
        failed_since += n;
        if warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
            tracing::warn!(error = %why, spans = failed_since, "OTLP export failed; spans dropped");
            warned = Some(Instant::now());
            failed_since = 0;
        }
    }
}
