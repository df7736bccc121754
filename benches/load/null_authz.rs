//! The load harness's null authorizer: an Envoy ext_authz v3 gRPC server
//! that answers every `Check` OK without looking at it. Envoy with it in
//! front is the ceiling of what any authorizer over gRPC can give Envoy;
//! the harness's case with the gate is measured against it (issue 16).
//! Never for anything but a benchmark: it allows everything.
//!
//! `cargo run --release --example load-null-authz -- ADDR [THREADS]`

use std::net::SocketAddr;

use envoy_types::ext_authz::v3::CheckResponseExt;
use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse,
};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tower::ServiceExt;

/// Allows every request, reading nothing.
#[derive(Debug, Clone, Copy)]
struct Null;

#[tonic::async_trait]
impl Authorization for Null {
    async fn check(
        &self,
        _request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        Ok(tonic::Response::new(CheckResponse::with_status(
            tonic::Status::ok("allowed"),
        )))
    }
}

fn main() {
    let mut args = std::env::args().skip(1);

    /// The gate's allocator (src/main.rs): the control and the null authorizer
    /// are measured with what the gate itself runs on.
    #[cfg(feature = "mimalloc")]
    #[global_allocator]
    static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
    let addr: SocketAddr = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9002)));
    let threads: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        eprintln!("load-null-authz listening on {addr}");
        let grpc = AuthorizationServer::new(Null);
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let grpc = grpc.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| grpc.clone().oneshot(req));
                let _ = auto::Builder::new(TokioExecutor::new())
                    .http2_only()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
}
