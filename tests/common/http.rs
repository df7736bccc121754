//! Talking HTTP to a gate: the `Http` client and the one request builder
//! that carries a token (`http.request(method, path).token(secret).go()`,
//! or [`send`] to an address), nginx-style `/auth/nginx` questions, and
//! `curl`. Starts no servers.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::InProcessGate;

// === HTTP client ===

/// A tiny HTTP client for tests.
#[derive(Clone)]
pub struct Http {
    base: String,
    auth: Option<String>,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// An answer: status, headers, body.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Http {
    pub fn new(base: String) -> Self {
        Self {
            base,
            auth: None,
            client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
        }
    }

    /// Connects from `ip` (any 127.0.0.0/8 address is this host's), so one
    /// test can be several clients.
    pub fn bound_to(mut self, ip: std::net::IpAddr) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_local_address(Some(ip));
        self.client = Client::builder(TokioExecutor::new()).build(connector);
        self
    }

    /// Sends `Authorization: Bearer <value>` with every request.
    pub fn bearer(mut self, value: &str) -> Self {
        self.auth = Some(format!("Bearer {value}"));
        self
    }

    /// A request to build and send: `.token(..)`, `.header(..)`, `.json(..)`,
    /// then `.go()`.
    pub fn request(&self, method: Method, path: &str) -> TestRequest {
        TestRequest {
            auth: self.auth.clone(),
            http: self.clone(),
            method,
            path: path.to_owned(),
            headers: Vec::new(),
            body: None,
        }
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<serde_json::Value>,
    ) -> Answer {
        let mut req = self.request(method, path).headers(headers);
        req.body = body;
        req.go().await
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send(Method::GET, path, &[], None).await
    }

    pub async fn post(&self, path: &str, body: serde_json::Value) -> Answer {
        self.send(Method::POST, path, &[], Some(body)).await
    }

    pub async fn post_empty(&self, path: &str) -> Answer {
        self.send(Method::POST, path, &[], None).await
    }

    pub async fn delete(&self, path: &str) -> Answer {
        self.send(Method::DELETE, path, &[], None).await
    }
}

/// One request to a gate, built by [`Http::request`] or [`send`]: the
/// one way a test sends a token (`Authorization: Bearer <secret>`).
#[must_use = "a request is sent by `.go().await`"]
pub struct TestRequest {
    http: Http,
    method: Method,
    path: String,
    /// `Authorization`, sent first: the client's own bearer or `.token()`.
    auth: Option<String>,
    headers: Vec<(String, String)>,
    body: Option<serde_json::Value>,
}

impl TestRequest {
    /// Sends `Authorization: Bearer <secret>` (instead of the client's own
    /// bearer, if it has one).
    pub fn token(mut self, secret: &str) -> Self {
        self.auth = Some(format!("Bearer {secret}"));
        self
    }

    /// Adds a header (after any before it; a name may repeat).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Adds these headers, in order.
    pub fn headers(mut self, headers: &[(&str, &str)]) -> Self {
        for (k, v) in headers {
            self = self.header(k, v);
        }
        self
    }

    /// `X-Original-Method` and `X-Original-URI`, as nginx's `auth_request`
    /// sends them.
    pub fn original(self, method: &str, uri: &str) -> Self {
        self.header("x-original-method", method)
            .header("x-original-uri", uri)
    }

    /// A JSON body.
    pub fn json(mut self, body: serde_json::Value) -> Self {
        self.body = Some(body);
        self
    }

    /// Sends it; the answer within 10 s or a panic.
    pub async fn go(self) -> Answer {
        let mut req = Request::builder()
            .method(self.method)
            .uri(format!("{}{}", self.http.base, self.path));
        if let Some(a) = &self.auth {
            req = req.header("authorization", a);
        }
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        let bytes = self
            .body
            .map(|b| Bytes::from(serde_json::to_vec(&b).unwrap()))
            .unwrap_or_default();
        let res = tokio::time::timeout(
            Duration::from_secs(10),
            self.http
                .client
                .request(req.body(Full::new(bytes)).unwrap()),
        )
        .await
        .expect("answer within 10 s")
        .expect("request succeeds");
        let status = res.status();
        let headers = res.headers().clone();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        Answer {
            status,
            headers,
            body,
        }
    }
}

/// A request to `http://<addr>` with a client of its own:
/// `send(addr, Method::GET, path).token(&secret).go().await`.
pub fn send(addr: SocketAddr, method: Method, path: &str) -> TestRequest {
    Http::new(format!("http://{addr}")).request(method, path)
}

/// The path `nginx_auth` asks about: readable by any role of workspace `ws_1`.
pub const WS1_PROJECTS: &str = "/api/v1/workspaces/ws_1/projects";

/// `/auth/nginx` as nginx asks it, for `GET /api/v1/workspaces/ws_1/projects`
/// with this token.
pub async fn nginx_auth(gate: &InProcessGate, token: &str) -> Answer {
    nginx_check(gate, token, "GET", WS1_PROJECTS).await
}

/// `/auth/nginx` as nginx asks it, for `method path` with this token.
pub async fn nginx_check(gate: &InProcessGate, token: &str, method: &str, path: &str) -> Answer {
    nginx_check_at(gate.addrs.auth, token, method, path).await
}

/// `/auth/nginx` of the gate whose auth listener is `auth`, as nginx asks
/// it, for `method path` with this token.
pub async fn nginx_check_at(auth: SocketAddr, token: &str, method: &str, path: &str) -> Answer {
    send(auth, Method::GET, "/auth/nginx")
        .token(token)
        .original(method, path)
        .go()
        .await
}

/// Runs curl; returns (status, headers as lower-case lines, body).
pub fn curl(args: &[&str]) -> (u16, Vec<String>, String) {
    let dir = tempfile::tempdir().unwrap();
    let head = dir.path().join("head");
    let out = super::tool("curl")
        .args(["-s", "--max-time", "20", "-D"])
        .arg(&head)
        .args(args)
        .output()
        .unwrap();
    let head = std::fs::read_to_string(&head).unwrap_or_default();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no status from curl {args:?}: {head:?} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let headers = head
        .lines()
        .skip(1)
        .map(|l| l.trim().to_ascii_lowercase())
        .filter(|l| !l.is_empty())
        .collect();
    (
        status,
        headers,
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// [`curl`] on a blocking thread.
pub async fn curl_async(args: Vec<String>) -> (u16, Vec<String>, String) {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        curl(&args)
    })
    .await
    .unwrap()
}

/// The values of header `name` (lower case) in [`curl`]'s header lines.
pub fn curl_header<'h>(headers: &'h [String], name: &str) -> Vec<&'h str> {
    let prefix = format!("{name}: ");
    headers
        .iter()
        .filter_map(|l| l.strip_prefix(&prefix))
        .collect()
}

/// Asks `/auth/nginx` about `token` (valid, never cached) until it is
/// allowed; how long that took.
pub async fn time_until_allowed(auth: SocketAddr, token: &str, deadline: Duration) -> Duration {
    let start = Instant::now();
    let http = Http::new(format!("http://{auth}"));
    loop {
        let a = http
            .request(Method::GET, "/auth/nginx")
            .token(token)
            .original("GET", WS1_PROJECTS)
            .go()
            .await;
        if a.status == StatusCode::OK {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < deadline,
            "not allowed within {deadline:?} (last: {})",
            a.status
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// === a canned server ===

/// A server that gives every request the same raw HTTP/1.1 answer
/// (keep-alive): a stand-in gate with an answer today's gate never gives
/// (a newer gate's deny code), or a page on another origin. Stops
/// accepting on drop.
pub struct Canned {
    pub addr: SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Canned {
    /// `head`: the status line and headers, without the blank line;
    /// `Content-Length` is added for `body`.
    pub fn start(head: &str, body: &str) -> Self {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let answer = format!("{head}\r\nContent-Length: {}\r\n\r\n{body}", body.len()).into_bytes();
        let stopped = stop.clone();
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                let Ok((mut conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let answer = answer.clone();
                std::thread::spawn(move || {
                    conn.set_nonblocking(false).unwrap();
                    conn.set_read_timeout(Some(Duration::from_secs(10)))
                        .unwrap();
                    let mut seen = Vec::new();
                    let mut buf = [0u8; 4096];
                    // One answer per request head (no request here has a body).
                    while let Ok(n @ 1..) = conn.read(&mut buf) {
                        seen.extend_from_slice(&buf[..n]);
                        while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                            seen.drain(..end + 4);
                            if conn.write_all(&answer).is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        Self { addr, stop }
    }
}

impl Drop for Canned {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}
