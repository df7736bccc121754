//! A test upstream (HTTP/1.1 + h2c, optionally TLS) that echoes what the
//! proxy sent it. Aborted on drop; knows nothing of the gate.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioExecutor;

// === a test upstream ===

/// A small HTTP/1.1 + h2c upstream for proxy tests. Every request is
/// counted. By query: `slow_ms=N` answers after N ms; `download=N` streams
/// N bytes; `upload` counts the request body's bytes (and names its
/// trailers); otherwise it echoes the
/// request (method, uri, version, headers) as JSON.
pub struct TestUpstream {
    pub addr: SocketAddr,
    pub requests: std::sync::Arc<AtomicU64>,
    /// Connections open now.
    open: std::sync::Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestUpstream {
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// The same upstream over TLS with this server configuration.
    pub async fn start_tls(config: std::sync::Arc<rustls::ServerConfig>) -> Self {
        Self::start_with(Some(tokio_rustls::TlsAcceptor::from(config))).await
    }

    async fn start_with(tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        use hyper::service::service_fn;
        use hyper_util::rt::TokioIo;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = std::sync::Arc::new(AtomicU64::new(0));
        let count = requests.clone();
        let open = std::sync::Arc::new(AtomicU64::new(0));
        let opened = open.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let count = count.clone();
                let tls = tls.clone();
                let opened = opened.clone();
                opened.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    // Counted open until this task ends (or is dropped).
                    struct Closes(std::sync::Arc<AtomicU64>);
                    impl Drop for Closes {
                        fn drop(&mut self) {
                            self.0.fetch_sub(1, Ordering::SeqCst);
                        }
                    }
                    let _closes = Closes(opened);
                    let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        count.fetch_add(1, Ordering::SeqCst);
                        upstream_answer(req)
                    });
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    match tls {
                        None => {
                            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                        }
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                            }
                        }
                    }
                });
            }
        });
        Self {
            addr,
            requests,
            open,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn count(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    /// The connections open to it now (the gate's, mostly).
    pub fn open_connections(&self) -> u64 {
        self.open.load(Ordering::SeqCst)
    }
}

type UpBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

async fn upstream_answer(
    req: http::Request<hyper::body::Incoming>,
) -> Result<http::Response<UpBody>, std::convert::Infallible> {
    use http_body_util::StreamBody;
    let query: BTreeMap<String, String> = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    if let Some(ms) = query.get("slow_ms").and_then(|v| v.parse().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if let Some(n) = query.get("download").and_then(|v| v.parse::<u64>().ok()) {
        // Streams `n` bytes in 64 KiB chunks, made as they are sent.
        let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
        let stream = futures_util::stream::unfold(n, move |left| {
            let chunk = chunk.clone();
            async move {
                if left == 0 {
                    return None;
                }
                let take = left.min(chunk.len() as u64);
                let frame = hyper::body::Frame::data(chunk.slice(..take as usize));
                Some((Ok::<_, std::io::Error>(frame), left - take))
            }
        });
        let body = BodyExt::boxed(StreamBody::new(stream));
        return Ok(http::Response::new(body));
    }
    if query.contains_key("upload") {
        let mut body = req.into_body();
        let mut total = 0u64;
        let mut trailers: Vec<String> = Vec::new();
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { break };
            match frame.into_data() {
                Ok(data) => total += data.len() as u64,
                Err(frame) => {
                    if let Ok(t) = frame.into_trailers() {
                        trailers.extend(t.keys().map(|k| k.as_str().to_owned()));
                    }
                }
            }
        }
        let answer = serde_json::json!({ "received": total, "trailers": trailers });
        let body = Full::new(Bytes::from(answer.to_string()))
            .map_err(|never| match never {})
            .boxed();
        return Ok(http::Response::new(body));
    }
    let headers: BTreeMap<String, Vec<String>> = req
        .headers()
        .keys()
        .map(|k| {
            (
                k.as_str().to_owned(),
                req.headers()
                    .get_all(k)
                    .iter()
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                    .collect(),
            )
        })
        .collect();
    let echo = serde_json::json!({
        "method": req.method().as_str(),
        "uri": req.uri().to_string(),
        "version": format!("{:?}", req.version()),
        "headers": headers,
    });
    let body = Full::new(Bytes::from(echo.to_string()))
        .map_err(|never| match never {})
        .boxed();
    let mut res = http::Response::new(body);
    res.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    );
    // Hop-by-hop headers the proxy must drop on the way back.
    res.headers_mut()
        .insert("keep-alive", http::HeaderValue::from_static("timeout=5"));
    Ok(res)
}
