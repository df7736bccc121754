//! The load harness's control: the same HTTP stack as the gate's proxy door
//! (hyper server, hyper-util pooled client, one single-threaded runtime and
//! pool per thread on `SO_REUSEPORT` sockets) with no authorization, no
//! header work and no metrics. Whatever it cannot reach, the gate cannot.
//!
//! `cargo run --release --example load-bare-proxy -- LISTEN UPSTREAM [THREADS]`
//!
//! With `BARE_POOL=conn` in its environment it forwards over a per-thread
//! pool of hyper's own `client::conn::http1` senders instead of
//! hyper-util's pooled client (issue 16 item 3's experiment; measured in
//! docs/performance.md § "A per-thread upstream pool, measured"): run it
//! as the `--alt` build's bare proxy (a script that sets the variable and
//! execs this binary) to set case H beside h.

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
    if std::env::var("BARE_POOL").as_deref() == Ok("conn") {
        return conn_pool::main(listen, upstream, threads);
    }
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let sock = socket(listen);
            let upstream: http::uri::Authority = upstream.parse().expect("UPSTREAM host:port");
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
                                // Built from parts, as the gate's proxy door does.
                                let pq =
                                    req.uri().path_and_query().cloned().unwrap_or_else(|| {
                                        http::uri::PathAndQuery::from_static("/")
                                    });
                                let uri = Uri::builder()
                                    .scheme(http::uri::Scheme::HTTP)
                                    .authority(upstream.clone())
                                    .path_and_query(pq)
                                    .build()
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

/// The experiment: one pool per thread of `hyper::client::conn::http1`
/// senders (no shared pool, no key hashing, no checkout waiters; a sender
/// goes back when its response body ends, or, if its connection is not
/// ready yet, once it is). A request that a reused connection did not
/// send is tried once on a new one, as hyper-util's client does.
mod conn_pool {
    use super::*;
    use std::pin::Pin;
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Poll};

    use hyper::body::Body as _;
    use hyper::client::conn::http1::SendRequest;

    #[derive(Default)]
    struct Pool {
        idle: Mutex<Vec<SendRequest<Incoming>>>,
    }

    impl Pool {
        fn take(&self) -> Option<SendRequest<Incoming>> {
            let mut idle = self.idle.lock().unwrap();
            while let Some(s) = idle.pop() {
                if s.is_ready() {
                    return Some(s);
                }
            }
            None
        }
        fn give(self: &Arc<Self>, mut s: SendRequest<Incoming>) {
            if s.is_ready() {
                self.idle.lock().unwrap().push(s);
            } else if !s.is_closed() {
                let pool = self.clone();
                tokio::spawn(async move {
                    if s.ready().await.is_ok() {
                        pool.idle.lock().unwrap().push(s);
                    }
                });
            }
        }
    }

    struct PooledBody {
        body: Incoming,
        back: Option<(Arc<Pool>, SendRequest<Incoming>)>,
    }

    impl hyper::body::Body for PooledBody {
        type Data = Bytes;
        type Error = hyper::Error;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>> {
            let p = Pin::new(&mut self.body).poll_frame(cx);
            if let Poll::Ready(None) = p
                && let Some((pool, s)) = self.back.take()
            {
                pool.give(s);
            }
            p
        }
        fn is_end_stream(&self) -> bool {
            self.body.is_end_stream()
        }
        fn size_hint(&self) -> hyper::body::SizeHint {
            self.body.size_hint()
        }
    }

    impl Drop for PooledBody {
        fn drop(&mut self) {
            if self.body.is_end_stream()
                && let Some((pool, s)) = self.back.take()
            {
                pool.give(s);
            }
        }
    }

    async fn connect(upstream: &str) -> Option<SendRequest<Incoming>> {
        let stream = tokio::net::TcpStream::connect(upstream).await.ok()?;
        let _ = stream.set_nodelay(true);
        let (s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .ok()?;
        tokio::spawn(conn);
        Some(s)
    }

    async fn forward(
        pool: Arc<Pool>,
        upstream: Arc<str>,
        mut req: http::Request<Incoming>,
    ) -> Option<http::Response<PooledBody>> {
        let pq = req.uri().path_and_query().cloned();
        *req.uri_mut() = Uri::from(pq?);
        loop {
            let (mut s, reused) = match pool.take() {
                Some(s) => (s, true),
                None => (connect(&upstream).await?, false),
            };
            match s.try_send_request(req).await {
                Ok(res) => {
                    return Some(res.map(|body| PooledBody {
                        body,
                        back: Some((pool, s)),
                    }));
                }
                Err(mut e) => match e.take_message() {
                    Some(r) if reused => req = r,
                    _ => return None,
                },
            }
        }
    }

    pub fn main(listen: SocketAddr, upstream: String, threads: usize) {
        let upstream: Arc<str> = upstream.into();
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
                        let pool = Arc::new(Pool::default());
                        loop {
                            let Ok((stream, _)) = listener.accept().await else {
                                continue;
                            };
                            let _ = stream.set_nodelay(true);
                            let pool = pool.clone();
                            let upstream = upstream.clone();
                            tokio::spawn(async move {
                                let svc = service_fn(move |req: http::Request<Incoming>| {
                                    let pool = pool.clone();
                                    let upstream = upstream.clone();
                                    async move {
                                        Ok::<_, Infallible>(
                                            match forward(pool, upstream, req).await {
                                                Some(res) => res.map(http_body_util::Either::Left),
                                                None => http::Response::new(
                                                    http_body_util::Either::Right(
                                                        http_body_util::Full::new(
                                                            Bytes::from_static(b"bad gateway"),
                                                        ),
                                                    ),
                                                ),
                                            },
                                        )
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
}
