//! Test harness: real servers on free loopback ports, stopped on drop.
//!
//! - `redis_url()` is the shared Redis (`HAWZU_TEST_REDIS_URL`, default
//!   `redis://127.0.0.1:6379`); every test takes a unique key prefix.
//! - `RedisServer` starts a private `redis-server` for tests that stop it.
//! - `InProcessGate` runs the gate inside the test; `GateProcess` runs the
//!   real binary, as a user would.
//! - `eventually` polls with a deadline; no test sleeps a fixed time.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use hawzu_gate::config::{self, Loaded};
use hawzu_gate::server::{Addresses, Bound};

/// The shared Redis every Redis test uses, with its own key prefix.
pub fn redis_url() -> String {
    std::env::var("HAWZU_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A key prefix no other test (or run) uses.
pub fn unique_prefix(test: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "hawzu-test:{test}:{}:{nanos}:{}:",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `check` until it returns `Some`, or panics after `deadline`.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Blocking variant of [`eventually`], for process start-up.
pub fn wait_until(what: &str, deadline: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn port_open(addr: SocketAddr) -> bool {
    std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok()
}

// === redis-server ===

/// A private `redis-server` on a free port, killed on drop.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    pub fn start_on(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (.ci/run installs it)");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        wait_until("redis-server to listen", Duration::from_secs(10), || {
            port_open(addr)
        });
        Self {
            child: Some(child),
            port,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

// === the gate ===

/// Settings for a test gate: temp data dir, free ports, and `extra` env-style
/// overrides (`store.backend` → `HAWZU_GATE__STORE__BACKEND`).
pub fn test_config(data_dir: &Path, extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut env = BTreeMap::from([
        (config::env_name("data_dir"), data_dir.display().to_string()),
        (config::env_name("listen.proxy"), "127.0.0.1:0".to_owned()),
        (config::env_name("listen.auth"), "127.0.0.1:0".to_owned()),
        (config::env_name("listen.grpc"), "127.0.0.1:0".to_owned()),
        (config::env_name("listen.admin"), "127.0.0.1:0".to_owned()),
    ]);
    for (k, v) in extra {
        env.insert(config::env_name(k), (*v).to_owned());
    }
    env
}

/// A gate running inside the test process, on port-0 listeners.
pub struct InProcessGate {
    pub addrs: Addresses,
    pub admin_key: String,
    pub loaded: Loaded,
    pub dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl InProcessGate {
    /// Starts a gate on the embedded store.
    pub async fn embedded() -> Self {
        Self::start(&[]).await
    }

    /// Starts a gate on the shared Redis with a unique prefix.
    pub async fn redis(test: &str) -> Self {
        let prefix = unique_prefix(test);
        Self::start(&[
            ("store.backend", "redis"),
            ("store.redis.url", &redis_url()),
            ("store.redis.key_prefix", &prefix),
        ])
        .await
    }

    pub async fn start(extra: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, extra).await
    }

    pub async fn start_in(dir: tempfile::TempDir, extra: &[(&str, &str)]) -> Self {
        let env = test_config(&dir.path().join("data"), extra);
        let loaded = config::load_from(None, env).expect("test config is valid");
        let bound = Bound::new(&loaded).await.expect("gate starts");
        let addrs = bound.addresses();
        let admin_key = match &loaded.settings.admin.key {
            Some(k) => k.clone(),
            None => hawzu_gate::admin::read_key_file(&loaded.settings.data_dir.join("admin.key"))
                .unwrap(),
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(bound.run(async {
            let _ = rx.await;
        }));
        Self {
            addrs,
            admin_key,
            loaded,
            dir,
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub fn admin(&self) -> Http {
        Http::new(format!("http://{}", self.addrs.admin)).bearer(&self.admin_key)
    }

    pub fn auth(&self) -> Http {
        Http::new(format!("http://{}", self.addrs.auth))
    }

    pub fn proxy(&self) -> Http {
        Http::new(format!("http://{}", self.addrs.proxy))
    }

    /// Stops accepting, drains, and waits for the gate to finish.
    pub async fn shutdown(mut self) -> tempfile::TempDir {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
        // Hand the directory back so a test can restart on it.
        let dir = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.dir, dir)
    }
}

impl Drop for InProcessGate {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

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

/// A create body for a workspace token.
pub fn workspace_token(name: &str, ws: &str, role: &str, expires: &str) -> serde_json::Value {
    serde_json::json!({
        "name": name,
        "workspace_id": ws,
        "scope": { "type": "workspace", "role": role },
        "expires": expires,
    })
}

/// A create body for a project token.
pub fn project_token(
    name: &str,
    ws: &str,
    grants: &[(&str, &str)],
    expires: &str,
) -> serde_json::Value {
    let projects: Vec<_> = grants
        .iter()
        .map(|(p, r)| serde_json::json!({ "project_id": p, "role": r }))
        .collect();
    serde_json::json!({
        "name": name,
        "workspace_id": ws,
        "scope": { "type": "project", "projects": projects },
        "expires": expires,
    })
}

// === the real binary ===

pub const BIN: &str = env!("CARGO_BIN_EXE_hawzu-gate");

/// `hawzu-gate serve` as a child process, killed on drop.
pub struct GateProcess {
    child: Option<Child>,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub proxy: SocketAddr,
    pub auth: SocketAddr,
    pub grpc: SocketAddr,
    pub admin: SocketAddr,
    pub log: PathBuf,
}

impl GateProcess {
    /// Writes a config file into `dir` and starts the gate with it.
    pub fn start(dir: &Path, extra_toml: &str) -> Self {
        let [proxy, auth, grpc, admin] =
            [(); 4].map(|()| SocketAddr::from(([127, 0, 0, 1], free_port())));
        let config = dir.join("hawzu-gate.toml");
        std::fs::write(
            &config,
            format!(
                "data_dir = \"{}\"\n{extra_toml}\n[listen]\nproxy = \"{proxy}\"\nauth = \"{auth}\"\ngrpc = \"{grpc}\"\nadmin = \"{admin}\"\n",
                dir.join("data").display()
            ),
        )
        .unwrap();
        let log = dir.join("gate.log");
        let child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&config)
            .current_dir(dir)
            .env_remove("RUST_LOG")
            .stdout(std::fs::File::create(dir.join("gate.out")).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut gate = Self {
            child: Some(child),
            dir: dir.to_owned(),
            config,
            proxy,
            auth,
            grpc,
            admin,
            log,
        };
        wait_until("the gate to listen", Duration::from_secs(20), || {
            if let Some(status) = gate
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "gate exited with {status}: {}",
                    std::fs::read_to_string(&gate.log).unwrap_or_default()
                );
            }
            port_open(admin) && port_open(auth)
        });
        gate
    }

    /// Runs the CLI against this gate (it finds the gate through the config file).
    pub fn cli(&self, args: &[&str]) -> CliRun {
        let out = Command::new(BIN)
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .current_dir(&self.dir)
            .env_remove("HAWZU_GATE_ADMIN_KEY")
            .env_remove("HAWZU_GATE_ADMIN_URL")
            .output()
            .unwrap();
        CliRun {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        child.wait().unwrap()
    }
}

impl Drop for GateProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The outcome of one CLI run.
#[derive(Debug)]
pub struct CliRun {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CliRun {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", self.stdout, self.stderr))
    }
}
