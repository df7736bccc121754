//! The load harness's control: the same HTTP stack as the gate's proxy door
//! (hyper server; the gate's own upstream pool, `hawzu_gate::doors::upstream`;
//! one single-threaded runtime and pool per thread on `SO_REUSEPORT`
//! sockets) with no authorization, no header work and no metrics. Whatever
//! it cannot reach, the gate cannot.
//!
//! `cargo run --release --example load-bare-proxy -- LISTEN UPSTREAM [THREADS]`
//!
//! With `BARE_POOL=hyper-util` in its environment it forwards through
//! hyper-util's pooled client instead, the gate's upstream path until
//! issue 16 item 3 measured the two (docs/performance.md § "A per-thread
//! upstream pool, measured"): run it that way as the `--alt` build's bare proxy
//! (a script that sets the variable and execs this binary) to set case H
//! beside h.
//!
//! With `BARE_HEADERS=gate` it carries what the gate's proxy puts on the
//! wire for case d, and nothing else of the gate: `Authorization` removed,
//! the five identity headers of d's token (fixed values of the same
//! length), `X-Request-Id` (a counter) and `X-Forwarded-For/-Proto/-Host`
//! on the way up, `X-Request-Id` on the answer — the stack's cost of the
//! headers themselves (hyper writing and parsing them, the upstream and
//! wrk reading them, the bytes through the kernel), apart from the work
//! that decides them (docs/performance.md § "What the headers cost").

use std::convert::Infallible;
use std::net::SocketAddr;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use hawzu_gate::doors::upstream::{Settings, Upstream, UpstreamBody};
use http::header::{self, HeaderName};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderValue, Request, Response, Uri};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

fn socket(addr: SocketAddr) -> std::net::TcpListener {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )
    .expect("socket");

    /// The gate's allocator (src/main.rs): the control and the null authorizer
    /// are measured with what the gate itself runs on.
    #[cfg(feature = "mimalloc")]
    #[global_allocator]
    static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
    s.set_reuse_address(true).expect("reuseaddr");
    s.set_reuse_port(true).expect("reuseport");
    s.set_nonblocking(true).expect("nonblocking");
    s.bind(&addr.into()).expect("bind");
    s.listen(4096).expect("listen");
    s.into()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let listen: SocketAddr = args
        .next()
        .and_then(|a| a.parse().ok())
        .expect("LISTEN address");
    let upstream: String = args.next().expect("UPSTREAM host:port");
    let threads: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let legacy = std::env::var("BARE_POOL").as_deref() == Ok("hyper-util");
    let headers = std::env::var("BARE_HEADERS").as_deref() == Ok("gate");
    let upstream: Authority = upstream.parse().expect("UPSTREAM host:port");
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let sock = socket(listen);
            let upstream = upstream.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(sock).expect("listener");
                    let forward = Arc::new(if legacy {
                        Forward::Legacy(
                            Box::new(Client::builder(TokioExecutor::new()).build_http()),
                            upstream,
                        )
                    } else {
                        Forward::Gate(gate_upstream(upstream))
                    });
                    loop {
                        let Ok((stream, peer)) = listener.accept().await else {
                            continue;
                        };
                        let _ = stream.set_nodelay(true);
                        let forward = forward.clone();
                        tokio::spawn(async move {
                            let svc = service_fn(move |mut req: Request<Incoming>| {
                                let forward = forward.clone();
                                async move {
                                    if !headers {
                                        return Ok::<_, Infallible>(forward.send(req).await);
                                    }
                                    let id = gate_headers(req.headers_mut(), peer);
                                    let mut res = forward.send(req).await;
                                    res.headers_mut().insert(REQUEST_ID, id);
                                    Ok(res)
                                }
                            });
                            let _ = auto::Builder::new(TokioExecutor::new())
                                .serve_connection(TokioIo::new(stream), svc)
                                .await;
                        });
                    }
                });
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What the gate's proxy does to case d's request headers, with the values
/// it decided fixed: the request id, for the answer.
fn gate_headers(h: &mut HeaderMap, peer: SocketAddr) -> HeaderValue {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let id = HeaderValue::from_str(&format!(
        "hg-EwQ2yFAI9g-{:x}",
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
    .expect("id");
    h.remove(header::AUTHORIZATION);
    for (name, value) in [
        ("x-hawzu-token-type", "workspace"),
        ("x-hawzu-permission", "projects:read"),
        ("x-hawzu-token-id", "tok_IFxhvsnSipZDL25h"),
        ("x-hawzu-workspace-id", "ws_1"),
        ("x-hawzu-role", "workspace_viewer"),
    ] {
        h.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    h.insert(REQUEST_ID, id.clone());
    let host = h.get(header::HOST).cloned();
    h.insert(
        HeaderName::from_static("x-forwarded-for"),
        HeaderValue::from_str(&peer.ip().to_string()).expect("ip"),
    );
    h.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static("http"),
    );
    if let Some(host) = host {
        h.insert(HeaderName::from_static("x-forwarded-host"), host);
    }
    id
}

/// How a request goes upstream.
enum Forward {
    /// The gate's own pool (`upstream.http2 = false`, the default).
    Gate(Upstream<Incoming>),
    /// hyper-util's pooled client.
    Legacy(Box<Client<HttpConnector, Incoming>>, Authority),
}

type Answer = Response<Either<Either<UpstreamBody<Incoming>, Incoming>, Full<Bytes>>>;

impl Forward {
    async fn send(&self, mut req: Request<Incoming>) -> Answer {
        let target = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let sent = match self {
            Forward::Gate(up) => up
                .send(req, target, std::time::Instant::now())
                .await
                .map(|res| res.map(|b| Either::Left(Either::Left(b))))
                .ok(),
            Forward::Legacy(client, upstream) => {
                // Built from parts, as the gate's proxy door did.
                *req.uri_mut() = Uri::builder()
                    .scheme(Scheme::HTTP)
                    .authority(upstream.clone())
                    .path_and_query(target)
                    .build()
                    .expect("uri");
                client
                    .request(req)
                    .await
                    .map(|res| res.map(|b| Either::Left(Either::Right(b))))
                    .ok()
            }
        };
        sent.unwrap_or_else(|| {
            Response::new(Either::Right(Full::new(Bytes::from_static(b"bad gateway"))))
        })
    }
}

/// The gate's upstream pool, as `upstream` defaults configure it.
fn gate_upstream(authority: Authority) -> Upstream<Incoming> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_secs(2)));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(hawzu_gate::tls::client_config(None).expect("TLS roots"))
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Upstream::new(Settings {
        scheme: Scheme::HTTP,
        authority,
        connector,
        idle_timeout: Duration::from_secs(90),
        max_idle: 256,
        http2: false,
        resent: None,
    })
}
