//! The load harness's control: the same HTTP stack as the gate's proxy door
//! (hyper server, hyper-util pooled client, one single-threaded runtime and
//! pool per thread on `SO_REUSEPORT` sockets) with no authorization, no
//! header work and no metrics. Whatever it cannot reach, the gate cannot.
//!
//! `cargo run --release --example load-bare-proxy -- LISTEN UPSTREAM [THREADS]`

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::Uri;
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
                    let client: Client<HttpConnector, Incoming> =
                        Client::builder(TokioExecutor::new()).build_http();
                    loop {
                        let Ok((stream, _)) = listener.accept().await else {
                            continue;
                        };
                        let _ = stream.set_nodelay(true);
                        let client = client.clone();
                        let upstream = upstream.clone();
                        tokio::spawn(async move {
                            let svc = service_fn(move |mut req: http::Request<Incoming>| {
                                let client = client.clone();
                                let uri: Uri = format!(
                                    "http://{upstream}{}",
                                    req.uri().path_and_query().map_or("/", |p| p.as_str())
                                )
                                .parse()
                                .expect("uri");
                                *req.uri_mut() = uri;
                                async move {
                                    Ok::<_, Infallible>(match client.request(req).await {
                                        Ok(res) => res.map(http_body_util::Either::Left),
                                        Err(_) => {
                                            http::Response::new(http_body_util::Either::Right(
                                                http_body_util::Full::new(Bytes::from_static(
                                                    b"bad gateway",
                                                )),
                                            ))
                                        }
                                    })
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
