//! The gate's own spans over OTLP/HTTP (issue 17 item 5): a minimal OTLP
//! receiver on loopback (hyper, protobuf decoded with opentelemetry-proto's
//! types) takes what a gate with `telemetry.otlp_endpoint` exports. Each
//! door's span is a child of the caller's `traceparent` and says the
//! decision, the cache's answer and the token's public id — never its
//! secret or hash. Without an endpoint nothing is sent and the caller's
//! trace context reaches the API unchanged.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
    HttpRequest, Request as AttrRequest,
};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode as SpanStatus;
use prost::Message as _;

use common::{
    InProcessGate, TestUpstream, WS1_PROJECTS, create_token, eventually, send, workspace_token,
};

// === a minimal OTLP/HTTP receiver ===

/// Takes `POST /v1/traces` (protobuf), keeps every body as it came.
struct Receiver {
    addr: std::net::SocketAddr,
    bodies: Arc<Mutex<Vec<(String, Bytes)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How the receiver answers an export.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// 200, all taken.
    Take,
    /// 503, as a collector that is overloaded.
    Refuse,
    /// Never answers (the body is kept first).
    Hang,
}

impl Receiver {
    async fn start() -> Self {
        Self::start_as(Mode::Take).await
    }

    async fn start_as(mode: Mode) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let bodies: Arc<Mutex<Vec<(String, Bytes)>>> = Arc::default();
        let kept = bodies.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let kept = kept.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let kept = kept.clone();
                            async move {
                                let path = req.uri().path().to_owned();
                                let bytes = req.into_body().collect().await?.to_bytes();
                                kept.lock().unwrap().push((path, bytes));
                                if mode == Mode::Hang {
                                    std::future::pending::<()>().await;
                                }
                                // An empty ExportTraceServiceResponse: all taken.
                                let mut res = http::Response::new(Full::new(Bytes::new()));
                                if mode == Mode::Refuse {
                                    *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                                }
                                res.headers_mut().insert(
                                    http::header::CONTENT_TYPE,
                                    http::HeaderValue::from_static("application/x-protobuf"),
                                );
                                Ok::<_, hyper::Error>(res)
                            }
                        },
                    );
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, bodies, task }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn requests(&self) -> usize {
        self.bodies.lock().unwrap().len()
    }

    /// Every span received so far, with its resource's `service.name`.
    fn spans(&self) -> Vec<(String, Span)> {
        let mut out = Vec::new();
        for (path, body) in self.bodies.lock().unwrap().iter() {
            assert_eq!(path, "/v1/traces");
            let req = ExportTraceServiceRequest::decode(body.clone()).expect("OTLP protobuf");
            for rs in req.resource_spans {
                let service = rs
                    .resource
                    .as_ref()
                    .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
                    .map(|a| value(a.value.as_ref()))
                    .unwrap_or_default();
                for ss in rs.scope_spans {
                    for span in ss.spans {
                        out.push((service.clone(), span));
                    }
                }
            }
        }
        out
    }

    /// Waits for `n` spans of `door`.
    async fn door_spans(&self, door: &str, n: usize) -> Vec<Span> {
        eventually(
            &format!("{n} {door} spans"),
            Duration::from_secs(10),
            || async {
                let spans: Vec<Span> = self
                    .spans()
                    .into_iter()
                    .map(|(_, s)| s)
                    .filter(|s| attrs(s).get("hawzu.door").map(String::as_str) == Some(door))
                    .collect();
                (spans.len() >= n).then_some(spans)
            },
        )
        .await
    }

    /// Everything received, as one byte string (to look for secrets in).
    fn all_bytes(&self) -> Vec<u8> {
        let bodies = self.bodies.lock().unwrap();
        bodies.iter().flat_map(|(_, b)| b.to_vec()).collect()
    }
}

fn value(v: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn attrs(span: &Span) -> HashMap<String, String> {
    span.attributes
        .iter()
        .map(|a| (a.key.clone(), value(a.value.as_ref())))
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// === the caller's trace ===

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";
const SAMPLED: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const UNSAMPLED: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
const STATE: &str = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE";

/// A gate exporting spans whose trusted proxies trace themselves
/// (`telemetry.join_proxy_traces`): their `traceparent` is the parent.
async fn traced_gate(receiver: &Receiver, upstream: &TestUpstream) -> InProcessGate {
    let endpoint = receiver.endpoint();
    let url = upstream.url();
    InProcessGate::start(&[
        ("upstream.url", &url),
        ("telemetry.otlp_endpoint", &endpoint),
        ("telemetry.join_proxy_traces", "true"),
    ])
    .await
}

fn assert_child_of_caller(span: &Span) {
    assert_eq!(hex(&span.trace_id), TRACE_ID, "the caller's trace");
    assert_eq!(hex(&span.parent_span_id), PARENT_ID, "the caller's span");
    assert_ne!(hex(&span.span_id), PARENT_ID);
    assert_eq!(span.kind, 2, "SPAN_KIND_SERVER");
}

// === the proxy door ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_spans_join_the_callers_trace_with_decision_cache_and_token_id() {
    let receiver = Receiver::start().await;
    let upstream = TestUpstream::start().await;
    let gate = traced_gate(&receiver, &upstream).await;
    let (id, secret) = create_token(
        &gate,
        workspace_token("Traced", "ws_1", "workspace_viewer", "1m"),
    )
    .await;
    // The create's own change event reaches the cache's listener in a task
    // of its own: heard after the first request cached the token, it
    // would drop it, and the second would miss (seen on a loaded machine).
    common::eventually(
        "the create's event heard",
        Duration::from_secs(10),
        || async {
            let text = String::from_utf8(gate.ops().get("/metrics").await.body.to_vec()).unwrap();
            text.lines()
                .find_map(|l| l.strip_prefix("hawzu_gate_invalidations_received_total "))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|n| *n >= 1.0)
        },
    )
    .await;

    let mut forwarded = Vec::new();
    for _ in 0..2 {
        let a = gate
            .proxy()
            .request(Method::GET, "/api/v1/workspaces/ws_1/projects?q=1")
            .token(&secret)
            .header("traceparent", SAMPLED)
            .header("tracestate", STATE)
            .go()
            .await;
        assert_eq!(a.status, StatusCode::OK);
        forwarded.push(a.json()["headers"].clone());
    }
    // A request without a token: refused, and traced too.
    let denied = gate
        .proxy()
        .request(Method::GET, WS1_PROJECTS)
        .header("traceparent", SAMPLED)
        .go()
        .await;
    assert_eq!(denied.status, StatusCode::UNAUTHORIZED);

    let mut spans = receiver.door_spans("proxy", 3).await;
    spans.sort_by_key(|s| s.start_time_unix_nano);
    for s in &spans {
        assert_child_of_caller(s);
        assert_eq!(s.name, "proxy");
    }
    let (first, second, third) = (attrs(&spans[0]), attrs(&spans[1]), attrs(&spans[2]));
    assert_eq!(first["hawzu.decision"], "allow", "{first:?}");
    assert_eq!(first["hawzu.cache"], "miss", "{first:?}");
    assert!(first["hawzu.store_time_us"].parse::<u64>().unwrap() > 0);
    assert_eq!(second["hawzu.cache"], "hit", "{second:?}");
    assert_eq!(second["hawzu.store_time_us"], "0");
    for a in [&first, &second] {
        assert_eq!(a["hawzu.token_id"], id);
        assert_eq!(a["hawzu.workspace_id"], "ws_1");
        assert_eq!(a["http.request.method"], "GET");
        assert_eq!(a["url.path"], WS1_PROJECTS, "no query");
        assert_eq!(a["http.response.status_code"], "200");
        assert!(!a.contains_key("hawzu.code"));
    }
    assert_eq!(third["hawzu.decision"], "deny", "{third:?}");
    assert_eq!(third["hawzu.code"], "missing_token", "{third:?}");
    assert_eq!(third["http.response.status_code"], "401");
    assert_eq!(
        spans[2].status.as_ref().map_or(0, |s| s.code),
        SpanStatus::Unset as i32,
        "a 4xx is the caller's fault, not the span's"
    );

    // The API's spans become children of the gate's: the traceparent it
    // got names the gate's span in the caller's trace; tracestate as sent.
    for (h, span) in forwarded.iter().zip(&spans) {
        let want = format!("00-{TRACE_ID}-{}-01", hex(&span.span_id));
        assert_eq!(h["traceparent"], serde_json::json!([want]), "{h}");
        assert_eq!(h["tracestate"], serde_json::json!([STATE]), "{h}");
    }

    // The resource names the service; the secret, its hash and the bearer
    // header are nowhere in what was exported.
    assert!(
        receiver
            .spans()
            .iter()
            .all(|(service, _)| service == "hawzu-gate")
    );
    let bytes = receiver.all_bytes();
    let hash = hawzu_gate::token::TokenSecret::parse(&secret)
        .unwrap()
        .hash();
    for needle in [
        secret.as_bytes(),
        &hash.0[..],
        hash.to_hex().as_bytes(),
        b"Bearer",
    ] {
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "a secret-bearing value was exported"
        );
    }
    // Counted once the collector took them.
    let ops = gate.ops();
    eventually(
        "exported spans counted",
        Duration::from_secs(10),
        || async {
            let m = String::from_utf8(ops.get("/metrics").await.body.to_vec()).unwrap();
            let zero = m.contains("hawzu_gate_trace_spans_total{result=\"exported\"} 0\n");
            let dropped = m.contains("hawzu_gate_trace_spans_total{result=\"dropped\"} 0\n");
            (!zero && dropped).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_samples_nothing_gets_no_span_and_its_traceparent_goes_on() {
    let receiver = Receiver::start().await;
    let upstream = TestUpstream::start().await;
    let gate = traced_gate(&receiver, &upstream).await;
    let (_, secret) = create_token(
        &gate,
        workspace_token("Quiet", "ws_1", "workspace_viewer", "1m"),
    )
    .await;
    let a = gate
        .proxy()
        .request(Method::GET, WS1_PROJECTS)
        .token(&secret)
        .header("traceparent", UNSAMPLED)
        .header("tracestate", STATE)
        .go()
        .await;
    assert_eq!(a.status, StatusCode::OK);
    let h = &a.json()["headers"];
    assert_eq!(h["traceparent"], serde_json::json!([UNSAMPLED]), "{h}");
    assert_eq!(h["tracestate"], serde_json::json!([STATE]), "{h}");
    // A sampled request after it is exported; the unsampled one never was.
    let b = gate
        .proxy()
        .request(Method::GET, WS1_PROJECTS)
        .token(&secret)
        .header("traceparent", SAMPLED)
        .go()
        .await;
    assert_eq!(b.status, StatusCode::OK);
    let spans = receiver.door_spans("proxy", 1).await;
    gate.shutdown().await;
    let all = receiver.spans();
    assert_eq!(all.len(), 1, "only the sampled request: {spans:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_endpoint_nothing_is_sent_and_trace_context_reaches_the_api_unchanged() {
    let receiver = Receiver::start().await;
    let upstream = TestUpstream::start().await;
    let url = upstream.url();
    let gate = InProcessGate::start(&[("upstream.url", &url)]).await;
    let (_, secret) = create_token(
        &gate,
        workspace_token("Untraced", "ws_1", "workspace_viewer", "1m"),
    )
    .await;
    let a = gate
        .proxy()
        .request(Method::GET, WS1_PROJECTS)
        .token(&secret)
        .header("traceparent", SAMPLED)
        .header("tracestate", STATE)
        .go()
        .await;
    assert_eq!(a.status, StatusCode::OK);
    let h = &a.json()["headers"];
    assert_eq!(h["traceparent"], serde_json::json!([SAMPLED]), "{h}");
    assert_eq!(h["tracestate"], serde_json::json!([STATE]), "{h}");
    assert_eq!(nginx_sampled(&gate, &secret).await, StatusCode::OK);
    let metrics = String::from_utf8(gate.ops().get("/metrics").await.body.to_vec()).unwrap();
    for result in ["exported", "dropped", "failed"] {
        let line = format!("hawzu_gate_trace_spans_total{{result=\"{result}\"}} 0");
        assert!(metrics.contains(&line), "{line}\n{metrics}");
    }
    // A gate that exported would have sent its spans by the end of its
    // shutdown; this one sent nothing at all.
    gate.shutdown().await;
    assert_eq!(receiver.requests(), 0);
}

// === the forward-auth and gRPC doors ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_auth_and_grpc_spans_join_the_callers_trace() {
    let receiver = Receiver::start().await;
    let upstream = TestUpstream::start().await;
    let gate = traced_gate(&receiver, &upstream).await;
    let (id, secret) = create_token(
        &gate,
        workspace_token("Doors", "ws_1", "workspace_viewer", "1m"),
    )
    .await;

    assert_eq!(nginx_sampled(&gate, &secret).await, StatusCode::OK);
    let t = send(gate.addrs.auth, Method::GET, "/auth/traefik")
        .token(&secret)
        .header("x-forwarded-method", "POST")
        .header("x-forwarded-uri", WS1_PROJECTS)
        .header("traceparent", SAMPLED)
        .go()
        .await;
    assert_eq!(t.status, StatusCode::FORBIDDEN);

    let auth = format!("Bearer {secret}");
    let code = grpc_check(
        &gate,
        &[
            ("authorization", &auth),
            ("traceparent", SAMPLED),
            ("tracestate", STATE),
        ],
    )
    .await;
    assert_eq!(code, 0, "OK");

    let nginx = receiver.door_spans("nginx", 1).await;
    let traefik = receiver.door_spans("traefik", 1).await;
    let grpc = receiver.door_spans("grpc", 1).await;
    for (span, decision) in [
        (&nginx[0], "allow"),
        (&traefik[0], "deny"),
        (&grpc[0], "allow"),
    ] {
        assert_child_of_caller(span);
        let a = attrs(span);
        assert_eq!(a["hawzu.decision"], decision, "{a:?}");
        assert_eq!(a["hawzu.token_id"], id, "{a:?}");
        assert_eq!(a["url.path"], WS1_PROJECTS, "the original request's path");
        assert!(
            ["hit", "miss", "coalesced"].contains(&a["hawzu.cache"].as_str()),
            "{a:?}"
        );
    }
    assert_eq!(attrs(&traefik[0])["hawzu.code"], "insufficient_role");
    assert_eq!(attrs(&traefik[0])["http.request.method"], "POST");
    assert_eq!(attrs(&grpc[0])["http.response.status_code"], "200");
    let bytes = receiver.all_bytes();
    assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()));
}

/// By default a trusted proxy's `traceparent` is only linked: a proxy that
/// does not trace itself (Envoy, Traefik, Caddy as shipped) relays the
/// client's, which would otherwise choose the trace and whether it is
/// recorded. Here the client's header reaches `/auth/nginx` and the gRPC
/// door from loopback, a trusted peer, with its sampled flag set while
/// `sample_ratio` is 0: no span; with the ratio at 1, spans of the gate's
/// own trace, linked to the client's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxys_relayed_trace_is_linked_unless_its_proxies_trace() {
    let upstream = TestUpstream::start().await;
    for ratio in ["0", "1"] {
        let receiver = Receiver::start().await;
        let endpoint = receiver.endpoint();
        let url = upstream.url();
        let gate = InProcessGate::start(&[
            ("upstream.url", &url),
            ("telemetry.otlp_endpoint", &endpoint),
            ("telemetry.sample_ratio", ratio),
        ])
        .await;
        let (_, secret) = create_token(
            &gate,
            workspace_token("Relayed", "ws_1", "workspace_viewer", "1m"),
        )
        .await;
        assert_eq!(nginx_sampled(&gate, &secret).await, StatusCode::OK);
        assert_eq!(grpc_sampled(&gate, &secret).await, 0, "OK");
        if ratio == "0" {
            // Shutting down sends whatever was recorded.
            gate.shutdown().await;
            let spans = receiver.spans();
            assert!(
                spans.is_empty(),
                "the relayed flag chose sampling: {spans:?}"
            );
            continue;
        }
        let nginx = receiver.door_spans("nginx", 1).await;
        let grpc = receiver.door_spans("grpc", 1).await;
        for span in [&nginx[0], &grpc[0]] {
            assert_ne!(hex(&span.trace_id), TRACE_ID, "a trace of its own");
            assert!(span.parent_span_id.is_empty(), "a root span: {span:?}");
            assert_eq!(span.links.len(), 1, "{span:?}");
            assert_eq!(hex(&span.links[0].trace_id), TRACE_ID);
        }
    }
}

// === a caller the gate does not trust ===

/// A gate exporting spans that trusts no peer (`trusted_proxies` empty):
/// every test client is a stranger, as an internet client is to a gate at
/// the edge.
async fn edge_gate(receiver: &Receiver, upstream: &TestUpstream, ratio: &str) -> InProcessGate {
    let endpoint = receiver.endpoint();
    let url = upstream.url();
    InProcessGate::start(&[
        ("upstream.url", &url),
        ("telemetry.otlp_endpoint", &endpoint),
        ("telemetry.sample_ratio", ratio),
        ("trusted_proxies", ""),
    ])
    .await
}

/// `/auth/nginx` for `GET WS1_PROJECTS` with `secret` and a sampled
/// `traceparent` (the caller's trace, [`TRACE_ID`]).
async fn nginx_sampled(gate: &InProcessGate, secret: &str) -> StatusCode {
    send(gate.addrs.auth, Method::GET, "/auth/nginx")
        .token(secret)
        .original("GET", WS1_PROJECTS)
        .header("traceparent", SAMPLED)
        .go()
        .await
        .status
}

/// The same over the gRPC door: its gRPC code.
async fn grpc_sampled(gate: &InProcessGate, secret: &str) -> i32 {
    let auth = format!("Bearer {secret}");
    grpc_check(gate, &[("authorization", &auth), ("traceparent", SAMPLED)]).await
}

/// A check of `WS1_PROJECTS` over the gRPC door, with `headers`.
async fn grpc_check(gate: &InProcessGate, headers: &[(&str, &str)]) -> i32 {
    let mut client = AuthorizationClient::connect(format!("http://{}", gate.addrs.grpc))
        .await
        .unwrap();
    let headers: HashMap<String, String> = headers
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let check = CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(AttrRequest {
                http: Some(HttpRequest {
                    method: "GET".into(),
                    path: WS1_PROJECTS.into(),
                    headers,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    let res = client.check(check).await.unwrap().into_inner();
    res.status.as_ref().unwrap().code
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_s_sampled_flag_does_not_override_the_sample_ratio() {
    // sample_ratio 0: the operator records nothing. A client outside
    // trusted_proxies sending `-01` must not make every request of its own
    // a recorded, exported span (the collector's load is the operator's
    // to choose), at any door.
    let receiver = Receiver::start().await;
    let upstream = TestUpstream::start().await;
    let gate = edge_gate(&receiver, &upstream, "0").await;
    let (_, secret) = create_token(
        &gate,
        workspace_token("Edge", "ws_1", "workspace_viewer", "1m"),
    )
    .await;
    for _ in 0..5 {
        let a = gate
            .proxy()
            .request(Method::GET, WS1_PROJECTS)
            .token(&secret)
            .header("traceparent", SAMPLED)
            .header("tracestate", STATE)
            .go()
            .await;
        assert_eq!(a.status, StatusCode::OK);
        // Not recorded, and not the stranger's to choose for the API
        // either: the gate's own trace, flag 00, no tracestate.
        let h = &a.json()["headers"];
        let tp = h["traceparent"][0].as_str().unwrap();
        assert!(!tp.contains(TRACE_ID), "{h}");
        assert!(tp.starts_with("00-") && tp.ends_with("-00"), "{h}");
        assert!(h.get("tracestate").is_none(), "{h}");
        assert_eq!(nginx_sampled(&gate, &secret).await, StatusCode::OK);
        assert_eq!(grpc_sampled(&gate, &secret).await, 0, "OK");
    }
    // Shutting down sends whatever was recorded.
    gate.shutdown().await;
    let spans = receiver.spans();
    assert!(spans.is_empty(), "a stranger chose sampling: {spans:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_s_trace_is_linked_not_joined_and_its_tracestate_is_not_taken() {
    // Recorded (sample_ratio 1): the span starts a trace of the gate's own
    // and links the caller's span, so a stranger cannot hang the gate's
    // spans (and the API's under them) into a trace of its choosing, nor
    // put its tracestate on them; the API gets the gate's context only.
    let receiver = Receiver::start().await;
    let upstream = TestUpstream::start().await;
    let gate = edge_gate(&receiver, &upstream, "1").await;
    let (_, secret) = create_token(
        &gate,
        workspace_token("Edge", "ws_1", "workspace_viewer", "1m"),
    )
    .await;
    let a = gate
        .proxy()
        .request(Method::GET, WS1_PROJECTS)
        .token(&secret)
        .header("traceparent", SAMPLED)
        .header("tracestate", STATE)
        .go()
        .await;
    assert_eq!(a.status, StatusCode::OK);
    let auth = format!("Bearer {secret}");
    let code = grpc_check(
        &gate,
        &[
            ("authorization", &auth),
            ("traceparent", SAMPLED),
            ("tracestate", STATE),
        ],
    )
    .await;
    assert_eq!(code, 0, "OK");
    let proxy = receiver.door_spans("proxy", 1).await;
    let grpc = receiver.door_spans("grpc", 1).await;
    for span in [&proxy[0], &grpc[0]] {
        assert_ne!(hex(&span.trace_id), TRACE_ID, "a trace of its own");
        assert!(span.parent_span_id.is_empty(), "a root span: {span:?}");
        assert!(span.trace_state.is_empty(), "{span:?}");
        assert_eq!(span.links.len(), 1, "{span:?}");
        let link = &span.links[0];
        assert_eq!(hex(&link.trace_id), TRACE_ID);
        assert_eq!(hex(&link.span_id), PARENT_ID);
        assert!(link.trace_state.is_empty(), "{link:?}");
    }
    let h = &a.json()["headers"];
    let want = format!(
        "00-{}-{}-01",
        hex(&proxy[0].trace_id),
        hex(&proxy[0].span_id)
    );
    assert_eq!(h["traceparent"], serde_json::json!([want]), "{h}");
    assert!(
        h.get("tracestate").is_none(),
        "the stranger's tracestate belongs to another trace: {h}"
    );
}

// === an unusable endpoint ===

#[test]
fn an_endpoint_that_is_not_an_http_url_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let env = common::test_config(
        dir.path(),
        &[("telemetry.otlp_endpoint", "grpc://collector:4317")],
    );
    let Err(err) = hawzu_gate::config::load_from(None, env) else {
        panic!("a grpc:// endpoint was accepted");
    };
    let text = err.to_string();
    assert!(text.contains("telemetry.otlp_endpoint"), "{text}");
}

// === a collector that fails ===

async fn trace_spans(gate: &InProcessGate, result: &str) -> u64 {
    let m = String::from_utf8(gate.ops().get("/metrics").await.body.to_vec()).unwrap();
    let prefix = format!("hawzu_gate_trace_spans_total{{result=\"{result}\"}} ");
    m.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_hangs_or_refuses_never_holds_up_requests() {
    let receiver = Receiver::start_as(Mode::Hang).await;
    let upstream = TestUpstream::start().await;
    let (endpoint, url) = (receiver.endpoint(), upstream.url());
    let gate = InProcessGate::start(&[
        ("upstream.url", &url),
        ("telemetry.otlp_endpoint", &endpoint),
        ("telemetry.queue_size", "1"),
        ("telemetry.export_timeout", "300s"),
    ])
    .await;
    let (_, secret) = create_token(
        &gate,
        workspace_token("Hung", "ws_1", "workspace_viewer", "1m"),
    )
    .await;
    let ask = || {
        gate.proxy()
            .request(Method::GET, WS1_PROJECTS)
            .token(&secret)
            .header("traceparent", SAMPLED)
            .go()
    };
    assert_eq!(ask().await.status, StatusCode::OK);
    // The first span's batch is at the collector, which never answers.
    eventually("the first export", Duration::from_secs(10), || async {
        (receiver.requests() == 1).then_some(())
    })
    .await;
    // One more span fits the queue; the rest are dropped, and counted,
    // while every request is answered as usual.
    for _ in 0..5 {
        let started = std::time::Instant::now();
        assert_eq!(ask().await.status, StatusCode::OK);
        assert!(started.elapsed() < Duration::from_secs(5));
    }
    assert_eq!(trace_spans(&gate, "dropped").await, 4);
    assert_eq!(trace_spans(&gate, "exported").await, 0);

    // A collector that refuses: the batch is tried again a few times
    // (OTLP's retryable 503, with back-off), then counted as failed.
    let refusing = Receiver::start_as(Mode::Refuse).await;
    let endpoint = refusing.endpoint();
    let gate = InProcessGate::start(&[
        ("upstream.url", &url),
        ("telemetry.otlp_endpoint", &endpoint),
    ])
    .await;
    let a = gate
        .proxy()
        .request(Method::GET, WS1_PROJECTS)
        .header("traceparent", SAMPLED)
        .go()
        .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    eventually(
        "the failed batch counted",
        Duration::from_secs(10),
        || async { (trace_spans(&gate, "failed").await == 1).then_some(()) },
    )
    .await;
    let tries = refusing.requests();
    assert!((1..=4).contains(&tries), "at most 3 retries: {tries}");
}
