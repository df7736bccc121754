//! Talking HTTP to a gate: the `Http` client, nginx-style `/auth/nginx`
//! questions, and `curl`. Starts no servers.

use std::net::SocketAddr;
use std::process::Command;
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

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<serde_json::Value>,
    ) -> Answer {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some(a) = &self.auth {
            req = req.header("authorization", a);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let bytes = body
            .map(|b| Bytes::from(serde_json::to_vec(&b).unwrap()))
            .unwrap_or_default();
        let res = tokio::time::timeout(
            Duration::from_secs(10),
            self.client.request(req.body(Full::new(bytes)).unwrap()),
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

/// The path `nginx_auth` asks about: readable by any role of workspace `ws_1`.
pub const WS1_PROJECTS: &str = "/api/v1/workspaces/ws_1/projects";

/// `/auth/nginx` as nginx asks it, for `GET /api/v1/workspaces/ws_1/projects`
/// with this token.
pub async fn nginx_auth(gate: &InProcessGate, token: &str) -> Answer {
    nginx_check(gate, token, "GET", WS1_PROJECTS).await
}

/// `/auth/nginx` as nginx asks it, for `method path` with this token.
pub async fn nginx_check(gate: &InProcessGate, token: &str, method: &str, path: &str) -> Answer {
    gate.auth()
        .send(
            Method::GET,
            "/auth/nginx",
            &[
                ("authorization", &format!("Bearer {token}")),
                ("x-original-method", method),
                ("x-original-uri", path),
            ],
            None,
        )
        .await
}

/// Runs curl; returns (status, headers as lower-case lines, body).
pub fn curl(args: &[&str]) -> (u16, Vec<String>, String) {
    let dir = tempfile::tempdir().unwrap();
    let head = dir.path().join("head");
    let out = Command::new("curl")
        .args(["-s", "--max-time", "20", "-D"])
        .arg(&head)
        .args(args)
        .output()
        .expect("curl is installed (.ci/run installs it)");
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

/// Asks `/auth/nginx` about `token` (valid, never cached) until it is
/// allowed; how long that took.
pub async fn time_until_allowed(auth: SocketAddr, token: &str, deadline: Duration) -> Duration {
    let start = Instant::now();
    let http = Http::new(format!("http://{auth}"));
    loop {
        let a = http
            .send(
                Method::GET,
                "/auth/nginx",
                &[
                    ("authorization", &format!("Bearer {token}")),
                    ("x-original-method", "GET"),
                    ("x-original-uri", WS1_PROJECTS),
                ],
                None,
            )
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
