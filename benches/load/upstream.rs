//! The load harness's upstream: the smallest useful HTTP server (hyper,
//! HTTP/1.1 and h2c), answering every request `200 ok`. It stands for the
//! Hawzu API so that the harness measures the hops in front of it.
//!
//! `cargo run --release --example load-upstream -- ADDR [THREADS] [gate-headers]`
//!
//! With `gate-headers` every answer also carries what the gate's Envoy
//! HTTP door answers an allowed check with (the identity headers of the
//! harness's token, values of the same length, and
//! `x-envoy-auth-headers-to-remove` naming `authorization`, the identity
//! names it does not set and the `headers.strip` names): as Envoy's HTTP
//! authorizer it is a null authorizer whose answer costs Envoy what the
//! gate's does (case p of `run.py`).

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Response, header};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

/// What the gate's `/envoy` door answers an allowed check of the harness's
/// token with (a workspace viewer that never expires), values of the same
/// length.
const GATE_ANSWER: &[(&str, &str)] = &[
    ("x-hawzu-token-type", "workspace"),
    ("x-hawzu-permission", "projects:read"),
    ("x-hawzu-token-id", "tok_0123456789abcdef"),
    ("x-hawzu-workspace-id", "ws_1"),
    ("x-hawzu-role", "workspace_viewer"),
    // Every identity name the answer does not set goes, seen or not.
    (
        "x-envoy-auth-headers-to-remove",
        "authorization,x-hawzu-project-id,x-hawzu-token-expires,x-hawzu-error,x-hawzu-passed,\
         x-http-method-override,x-http-method,x-method-override,x-original-url,x-rewrite-url,\
         x-original-uri,x-forwarded-prefix",
    ),
];

fn main() {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 3000)));
    let threads: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let gate_headers = args.next().as_deref() == Some("gate-headers");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        eprintln!("load-upstream listening on {addr}");
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let svc = service_fn(move |_req| async move {
                    let mut res = Response::new(Full::new(Bytes::from_static(b"ok")));
                    let h = res.headers_mut();
                    h.insert(
                        header::CONTENT_TYPE,
                        header::HeaderValue::from_static("text/plain"),
                    );
                    if gate_headers {
                        for (name, value) in GATE_ANSWER {
                            h.insert(*name, header::HeaderValue::from_static(value));
                        }
                    }
                    Ok::<_, Infallible>(res)
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
}
