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
use hawzu_gate::server::{Addresses, Bound, Control};

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

// === stopping what the tests start ===
//
// Every server a test starts is stopped on drop, and nothing it forked may
// outlive it: nginx's workers, redis-server's save and sync children. A
// program is stopped the way it is meant to be (nginx: SIGTERM, its master
// then stops its workers and waits for them); whatever is still running
// after a deadline is SIGKILLed together with every descendant, collected
// before the kill (once the parent dies, its children belong to init).

/// The processes descended from `pid`, from `/proc` (children first).
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        // `pid (comm) state ppid …`; comm may hold spaces and parentheses.
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            parent_of.push((child, ppid));
        }
    }
    let mut found = Vec::new();
    let mut frontier = vec![pid];
    while let Some(p) = frontier.pop() {
        for &(child, ppid) in &parent_of {
            if ppid == p && !found.contains(&child) {
                found.push(child);
                frontier.push(child);
            }
        }
    }
    found
}

/// Sends `signal` (`-TERM`, `-KILL`, …) to each pid; gone ones are ignored.
pub fn send_signal(signal: &str, pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("kill")
        .arg(signal)
        .args(pids.iter().map(u32::to_string))
        .stderr(Stdio::null())
        .status();
}

/// Stops `child`: `signal` first (`None`: straight to SIGKILL), up to
/// `grace` for it to exit, then SIGKILL for it and all its descendants.
/// Returns once it is reaped, and every descendant it had is signalled.
pub fn stop_child(mut child: Child, signal: Option<&str>, grace: Duration) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    if let Some(signal) = signal {
        send_signal(signal, &[child.id()]);
        let start = Instant::now();
        while start.elapsed() < grace {
            if matches!(child.try_wait(), Ok(Some(_))) {
                // A well-behaved program has stopped its own children by now;
                // any it left behind were re-parented: nothing to find.
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    // Collected before the kill: afterwards they are init's, not ours.
    let mut doomed = descendants(child.id());
    doomed.push(child.id());
    send_signal("-KILL", &doomed);
    let _ = child.kill();
    let _ = child.wait();
}

// === redis-server ===

/// A private `redis-server` on a free port, killed (with anything it
/// forked) on drop.
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
        // Owned before the wait, so a server that never listens is stopped too.
        let server = Self {
            child: Some(child),
            port,
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        wait_until("redis-server to listen", Duration::from_secs(10), || {
            port_open(addr)
        });
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `kill -9`, with any child it forked (a save or a replica sync).
    pub fn stop(&mut self) {
        if let Some(c) = self.child.take() {
            stop_child(c, None, Duration::ZERO);
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
        (config::env_name("listen.ops"), "127.0.0.1:0".to_owned()),
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
    control: tokio::sync::mpsc::Sender<Control>,
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
        let (control, rx) = tokio::sync::mpsc::channel(4);
        let task = tokio::spawn(bound.run(rx));
        Self {
            addrs,
            admin_key,
            loaded,
            dir,
            control,
            task: Some(task),
        }
    }

    pub fn admin(&self) -> Http {
        Http::new(format!("http://{}", self.addrs.admin)).bearer(&self.admin_key)
    }

    pub fn auth(&self) -> Http {
        Http::new(format!("http://{}", self.addrs.auth))
    }

    pub fn ops(&self) -> Http {
        Http::new(format!("http://{}", self.addrs.ops))
    }

    /// Tells the gate to read its config again (as SIGHUP does).
    pub async fn reload(&self) {
        self.control.send(Control::Reload).await.unwrap();
    }

    pub fn proxy(&self) -> Http {
        Http::new(format!("http://{}", self.addrs.proxy))
    }

    /// Stops accepting, drains, and waits for the gate to finish.
    pub async fn shutdown(mut self) -> tempfile::TempDir {
        let _ = self.control.send(Control::Shutdown).await;
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
        let _ = self.control.try_send(Control::Shutdown);
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

/// Creates a token through `gate`'s admin API: its (id, secret).
pub async fn create_token(gate: &InProcessGate, body: serde_json::Value) -> (String, String) {
    let v = gate.admin().post("/admin/v1/tokens", body).await.json();
    (
        v["token"]["id"].as_str().unwrap().to_owned(),
        v["secret"].as_str().unwrap().to_owned(),
    )
}

/// Marks `secret`'s record disabled straight in Redis, publishing nothing:
/// a change whose invalidation was lost. Only a cache drop (or the cache
/// lifetime) makes a gate see it.
pub async fn disable_in_redis_silently(url: &str, prefix: &str, secret: &str) {
    let hash = hawzu_gate::token::TokenSecret::parse(secret)
        .unwrap()
        .hash();
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let key = format!("{prefix}token:{}", hash.to_hex());
    let json: String = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
    v["disabled_at"] = serde_json::json!(jiff::Timestamp::now().to_string());
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg(v.to_string())
        .query_async(&mut conn)
        .await
        .unwrap();
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
    pub ops: SocketAddr,
    pub log: PathBuf,
}

impl GateProcess {
    /// Writes a config file into `dir` and starts the gate with it.
    pub fn start(dir: &Path, extra_toml: &str) -> Self {
        let [proxy, auth, grpc, admin, ops] =
            [(); 5].map(|()| SocketAddr::from(([127, 0, 0, 1], free_port())));
        let config = dir.join("hawzu-gate.toml");
        std::fs::write(
            &config,
            format!(
                "data_dir = \"{}\"\n{extra_toml}\n[listen]\nproxy = \"{proxy}\"\nauth = \"{auth}\"\ngrpc = \"{grpc}\"\nadmin = \"{admin}\"\nops = \"{ops}\"\n",
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
            ops,
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

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// The gate's resident set: (current, peak) in KiB, from /proc.
    pub fn rss_kib(&self) -> (u64, u64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the process to exit (after a signal sent by the test).
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        self.child.take().expect("running").wait().unwrap()
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
        // The gate forks nothing; SIGKILL (no grace period to sit out) leaves
        // nothing behind, and any descendant would be killed with it.
        if let Some(c) = self.child.take() {
            stop_child(c, None, Duration::ZERO);
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

// === a test upstream ===

/// A small HTTP/1.1 + h2c upstream for proxy tests. Every request is
/// counted. By query: `slow_ms=N` answers after N ms; `download=N` streams
/// N bytes; `upload` counts the request body's bytes; otherwise it echoes the
/// request (method, uri, version, headers) as JSON.
pub struct TestUpstream {
    pub addr: SocketAddr,
    pub requests: std::sync::Arc<AtomicU64>,
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
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let count = count.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
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
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn count(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
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
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.map(|f| f.into_data()) {
                total += data.map(|d| d.len() as u64).unwrap_or(0);
            } else {
                break;
            }
        }
        let body = Full::new(Bytes::from(format!("{{\"received\":{total}}}")))
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

// === nginx ===

/// Debian's nginx running `deploy/nginx/nginx.conf`, with its addresses
/// pointed at this test's gate and upstream. Stopped on drop.
pub struct Nginx {
    child: Option<Child>,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Nginx {
    pub fn start(gate_auth: SocketAddr, upstream: SocketAddr) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let example = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/nginx/nginx.conf"
        ))
        .unwrap();
        // The example's own addresses, replaced; everything else as shipped.
        for needle in [
            "server 127.0.0.1:3000;",
            "server 127.0.0.1:8081;",
            "listen 127.0.0.1:8000;",
        ] {
            assert!(
                example.contains(needle),
                "deploy/nginx/nginx.conf no longer has `{needle}`"
            );
        }
        let conf = example
            .replace("server 127.0.0.1:3000;", &format!("server {upstream};"))
            .replace("server 127.0.0.1:8081;", &format!("server {gate_auth};"))
            .replace(
                "listen 127.0.0.1:8000;",
                &format!("listen 127.0.0.1:{port};"),
            );
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        let child = Command::new("nginx")
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&path)
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nginx must be installed (.ci/run installs nginx-light)");
        let mut n = Self {
            child: Some(child),
            port,
            dir,
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        wait_until("nginx to listen", Duration::from_secs(10), || {
            if let Some(status) = n.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                let log =
                    std::fs::read_to_string(n.dir.path().join("error.log")).unwrap_or_default();
                panic!("nginx exited with {status}: {log}");
            }
            port_open(addr)
        });
        n
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM is nginx's fast shutdown: the master stops its workers and
        // waits for them before it exits. SIGKILL on the master alone would
        // leave the workers running, re-parented to init.
        if let Some(c) = self.child.take() {
            stop_child(c, Some("-TERM"), Duration::from_secs(10));
        }
    }
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

// === certificates ===

/// A private CA and a `localhost` certificate it signed, as PEM files.
pub struct TestCerts {
    pub dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

/// A renewed leaf certificate and key (same CA), in files of their own.
pub struct Renewed {
    _dir: tempfile::TempDir,
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn leaf(issuer: &rcgen::Issuer<'static, rcgen::KeyPair>, dir: &Path) -> (PathBuf, PathBuf) {
    leaf_for(issuer, dir, &["localhost"])
}

fn leaf_for(
    issuer: &rcgen::Issuer<'static, rcgen::KeyPair>,
    dir: &Path,
    names: &[&str],
) -> (PathBuf, PathBuf) {
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    // rcgen reads a name that parses as an IP address as an IP SAN.
    let leaf =
        rcgen::CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
            .unwrap()
            .signed_by(&leaf_key, issuer)
            .unwrap();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, leaf.pem()).unwrap();
    std::fs::write(&key, leaf_key.serialize_pem()).unwrap();
    (cert, key)
}

impl TestCerts {
    pub fn new() -> Self {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, ca_cert.pem()).unwrap();
        let (cert, key) = leaf(&issuer, dir.path());
        Self {
            dir,
            ca,
            cert,
            key,
            issuer,
        }
    }

    /// A key and certificate for `names` (host names or IP addresses)
    /// from the same CA.
    pub fn issue(&self, names: &[&str]) -> Renewed {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = leaf_for(&self.issuer, dir.path(), names);
        Renewed {
            _dir: dir,
            cert,
            key,
        }
    }

    /// A new key and certificate for `localhost` from the same CA.
    pub fn renew(&self) -> Renewed {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = leaf(&self.issuer, dir.path());
        Renewed {
            _dir: dir,
            cert,
            key,
        }
    }

    /// A client configuration trusting only this CA, offering `alpn`.
    pub fn client_config(&self, alpn: &[&[u8]]) -> rustls::ClientConfig {
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pki_types::CertificateDer::pem_file_iter(&self.ca).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config
    }
}

// === Redis nodes, Sentinel and Cluster (redis_faults, redis_topologies, chaos) ===

/// Runs `redis-cli -p <port> <args…>` and returns what it printed.
pub fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stderr(Stdio::null())
        .output()
        .expect("redis-cli must be installed");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A `redis-server` (or sentinel) with its own arguments and directory,
/// which a test may kill and restart on the same port; killed on drop.
pub struct RedisNode {
    child: Option<Child>,
    pub port: u16,
    args: Vec<String>,
    pub dir: PathBuf,
}

impl RedisNode {
    /// `redis-server --port <port> --bind 127.0.0.1 --dir <dir> <extra…>`.
    pub fn start_with(port: u16, dir: &Path, extra: &[&str]) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let mut args: Vec<String> = [
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--dir",
            &dir.display().to_string(),
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let mut node = Self {
            child: None,
            port,
            args,
            dir: dir.to_owned(),
        };
        node.restart();
        node
    }

    /// A server whose data survives `kill -9` (append-only file, fsync on
    /// every write).
    pub fn persistent(dir: &Path) -> Self {
        Self::start_with(
            free_port(),
            dir,
            &[
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--enable-debug-command",
                "local",
            ],
        )
    }

    /// A sentinel from `conf` (written to `<dir>/sentinel.conf`).
    pub fn sentinel(port: u16, dir: &Path, conf: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let file = dir.join("sentinel.conf");
        std::fs::write(&file, format!("port {port}\nbind 127.0.0.1\n{conf}")).unwrap();
        let mut node = Self {
            child: None,
            port,
            args: vec![file.display().to_string(), "--sentinel".into()],
            dir: dir.to_owned(),
        };
        node.restart();
        node
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn cli(&self, args: &[&str]) -> String {
        redis_cli(self.port, args)
    }

    /// `kill -9`, with any child it forked (a save or a replica sync).
    pub fn kill(&mut self) {
        if let Some(c) = self.child.take() {
            stop_child(c, None, Duration::ZERO);
        }
    }

    /// (Re)starts it with the same arguments and waits until it answers
    /// PING (after loading its data).
    pub fn restart(&mut self) {
        self.kill();
        let child = Command::new("redis-server")
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed");
        self.child = Some(child);
        let port = self.port;
        wait_until("redis to answer PING", Duration::from_secs(10), || {
            redis_cli(port, &["PING"]) == "PONG"
        });
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for RedisNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Redis Cluster of 3 masters and 3 replicas on loopback free ports
/// (node timeout 1 s, so a fail-over takes about 2 s), stopped on drop.
pub struct RedisCluster {
    pub nodes: Vec<RedisNode>,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let nodes: Vec<RedisNode> = (0..6)
            .map(|i| {
                let bus = free_port().to_string();
                RedisNode::start_with(
                    free_port(),
                    &dir.path().join(format!("n{i}")),
                    &[
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-port",
                        &bus,
                        "--cluster-node-timeout",
                        "1000",
                    ],
                )
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli must be installed");
        assert!(
            out.status.success(),
            "cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let cluster = Self { nodes, _dir: dir };
        cluster.wait_healthy(Duration::from_secs(20));
        cluster
    }

    /// Waits until every running node says the cluster is ok, knows every
    /// node, and every replica is in sync.
    pub fn wait_healthy(&self, deadline: Duration) {
        wait_until("the cluster to be ok", deadline, || {
            self.nodes.iter().filter(|n| n.is_running()).all(|n| {
                let info = n.cli(&["CLUSTER", "INFO"]);
                let repl = n.cli(&["INFO", "replication"]);
                info.contains("cluster_state:ok")
                    && (repl.contains("role:master") || repl.contains("master_link_status:up"))
            })
        });
    }

    /// Seed URLs for the gate.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisNode::url).collect()
    }

    fn running(&self) -> &RedisNode {
        self.nodes.iter().find(|n| n.is_running()).unwrap()
    }

    /// `CLUSTER NODES`, one line each.
    pub fn topology(&self) -> Vec<ClusterNodeLine> {
        self.running()
            .cli(&["CLUSTER", "NODES"])
            .lines()
            .filter_map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                let port = f
                    .get(1)?
                    .split('@')
                    .next()?
                    .rsplit(':')
                    .next()?
                    .parse()
                    .ok()?;
                let slots = f
                    .iter()
                    .skip(8)
                    .filter_map(|r| {
                        let (a, b) = r.split_once('-').unwrap_or((r, r));
                        Some((a.parse().ok()?, b.parse().ok()?))
                    })
                    .collect();
                Some((
                    f[0].to_owned(),
                    port,
                    f.get(2)?.to_string(),
                    f.get(3)?.to_string(),
                    slots,
                ))
            })
            .collect()
    }

    /// The port of the master serving `key` (or channel) now.
    pub fn master_for(&self, key: &str) -> u16 {
        self.try_master_for(key)
            .expect("a master serves every slot")
    }

    /// The master serving `key`, if one does (none during a fail-over).
    pub fn try_master_for(&self, key: &str) -> Option<u16> {
        let slot: u16 = self
            .running()
            .cli(&["CLUSTER", "KEYSLOT", key])
            .parse()
            .unwrap();
        self.topology()
            .into_iter()
            .find(|(_, _, flags, _, slots)| {
                flags.contains("master")
                    && !flags.contains("fail")
                    && slots.iter().any(|(a, b)| (*a..=*b).contains(&slot))
            })
            .map(|n| n.1)
    }

    /// The port of a replica of the master on `port`.
    pub fn replica_of(&self, port: u16) -> u16 {
        let nodes = self.topology();
        let id = &nodes.iter().find(|n| n.1 == port).unwrap().0;
        nodes
            .iter()
            .find(|n| &n.3 == id && !n.2.contains("fail"))
            .map(|n| n.1)
            .expect("every master has a replica")
    }

    pub fn node(&mut self, port: u16) -> &mut RedisNode {
        self.nodes.iter_mut().find(|n| n.port == port).unwrap()
    }
}

/// One line of `CLUSTER NODES`: id, port, flags, master id, slot ranges.
pub type ClusterNodeLine = (String, u16, String, String, Vec<(u16, u16)>);

/// A Sentinel set-up: a master, one replica and three sentinels (quorum 2,
/// down after 1 s) on loopback free ports, stopped on drop.
pub struct RedisSentinel {
    pub master: RedisNode,
    pub replica: RedisNode,
    pub sentinels: Vec<RedisNode>,
    pub name: String,
    _dir: tempfile::TempDir,
}

impl RedisSentinel {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let plain = ["--save", "", "--appendonly", "no"];
        let master = RedisNode::start_with(free_port(), &dir.path().join("master"), &plain);
        let of = master.port.to_string();
        let mut args = plain.to_vec();
        args.extend(["--replicaof", "127.0.0.1", &of]);
        let replica = RedisNode::start_with(free_port(), &dir.path().join("replica"), &args);
        wait_until("the replica to sync", Duration::from_secs(10), || {
            replica
                .cli(&["INFO", "replication"])
                .contains("master_link_status:up")
        });
        let name = "hawzu-master".to_owned();
        let conf = format!(
            "sentinel monitor {name} 127.0.0.1 {of} 2\n\
             sentinel down-after-milliseconds {name} 1000\n\
             sentinel failover-timeout {name} 5000\n\
             sentinel parallel-syncs {name} 1\n"
        );
        let sentinels: Vec<RedisNode> = (0..3)
            .map(|i| RedisNode::sentinel(free_port(), &dir.path().join(format!("s{i}")), &conf))
            .collect();
        let set = Self {
            master,
            replica,
            sentinels,
            name,
            _dir: dir,
        };
        set.wait_ready(Duration::from_secs(20));
        set
    }

    /// Waits until every sentinel knows the replica and the other sentinels
    /// (a fail-over needs their votes).
    pub fn wait_ready(&self, deadline: Duration) {
        wait_until("the sentinels to know each other", deadline, || {
            self.sentinels.iter().all(|s| {
                let info = s.cli(&["SENTINEL", "MASTER", &self.name]);
                let field = |k: &str| {
                    let mut lines = info.lines();
                    while let Some(l) = lines.next() {
                        if l == k {
                            return lines.next().unwrap_or("").to_owned();
                        }
                    }
                    String::new()
                };
                field("num-slaves") == "1" && field("num-other-sentinels") == "2"
            })
        });
    }

    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinels.iter().map(RedisNode::url).collect()
    }

    /// The master's port as the sentinels see it.
    pub fn master_port(&self) -> Option<u16> {
        let out = self.sentinels[0].cli(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", &self.name]);
        out.lines().nth(1)?.trim().parse().ok()
    }
}

// === steady load against the forward-auth door, judged by a change log ===

/// Where a test's Redis is, for [`TestStore`].
pub fn standalone(url: &str) -> hawzu_gate::store::redis::Topology {
    hawzu_gate::store::redis::Topology::Standalone {
        url: url.to_owned(),
        ca: None,
    }
}

/// The token store a test's gates use, reached directly (no gate, no
/// request-path timeout): set-up that must not fail because a busy machine
/// is slow, and changes made behind the gates' backs.
#[derive(Clone)]
pub struct TestStore {
    store: hawzu_gate::store::RedisStore,
}

impl TestStore {
    pub fn new(topology: hawzu_gate::store::redis::Topology, prefix: &str) -> Self {
        let store = hawzu_gate::store::RedisStore::with_topology(
            topology,
            hawzu_gate::store::redis::RedisOptions {
                url: String::new(),
                key_prefix: prefix.to_owned(),
                // Set-up, not the request path: a busy machine may be slow.
                timeout: Duration::from_secs(10),
                retention: Duration::from_secs(3600),
            },
        )
        .unwrap();
        Self { store }
    }

    /// `n` valid workspace tokens (viewer of `ws_1`, no expiry), written
    /// straight into the store as the admin API would: their secrets and ids.
    pub async fn seed(&self, n: usize) -> Vec<(String, String)> {
        use hawzu_gate::store::TokenStore;
        use hawzu_gate::token::record::RECORD_VERSION;
        use hawzu_gate::token::{Scope, TokenId, TokenRecord, TokenSecret};
        let mut tasks = Vec::new();
        for t in 0..8 {
            let store = self.store.clone();
            let count = n / 8 + usize::from(t < n % 8);
            tasks.push(tokio::spawn(async move {
                let mut out = Vec::with_capacity(count);
                for _ in 0..count {
                    let secret = TokenSecret::generate().unwrap();
                    let record = TokenRecord {
                        v: RECORD_VERSION,
                        id: TokenId::generate().unwrap(),
                        name: "seeded".into(),
                        workspace_id: "ws_1".into(),
                        scope: Scope::Workspace {
                            role: "workspace_viewer".into(),
                        },
                        created_by: "test".into(),
                        created_at: jiff::Timestamp::now(),
                        expires_at: None,
                        disabled_at: None,
                        disabled_by: None,
                        revoked_at: None,
                        last_used_at: None,
                        rotated_from: None,
                    };
                    let id = record.id.as_str().to_owned();
                    store.create(&secret.hash(), &record).await.unwrap();
                    out.push((secret.expose().to_owned(), id));
                }
                out
            }));
        }
        let mut out = Vec::with_capacity(n);
        for t in tasks {
            out.extend(t.await.unwrap());
        }
        out
    }

    /// Whether token `id`'s record in the store is neither disabled nor
    /// revoked (tries again while a connection is being re-made).
    pub async fn is_valid(&self, id: &str) -> bool {
        use hawzu_gate::store::TokenStore;
        let id = hawzu_gate::token::TokenId::parse(id).unwrap();
        eventually("a read of the store", Duration::from_secs(10), || async {
            let stored = self.store.find(&id).await.ok()?.unwrap();
            Some(stored.record.disabled_at.is_none() && stored.record.revoked_at.is_none())
        })
        .await
    }

    /// Marks token `id` disabled in the store without publishing an event:
    /// a change whose invalidation was lost (only a cache drop, or the
    /// cache lifetime, makes a gate see it).
    pub async fn disable_silently(&self, id: &str) {
        use hawzu_gate::store::TokenStore;
        let id = hawzu_gate::token::TokenId::parse(id).unwrap();
        // Tries again while the connection is being re-made (a test may
        // have just cut every client's connection).
        eventually("a silent disable", Duration::from_secs(10), || async {
            let current = self.store.find(&id).await.ok()?.unwrap();
            let mut next = current.record.clone();
            next.disabled_at = Some(jiff::Timestamp::now());
            // `touch` is the quiet write (for last_used_at): no event.
            self.store.touch(&current, &next).await.ok().filter(|w| *w)
        })
        .await;
    }
}

/// What the right answer about a token is at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Truth {
    Valid,
    Invalid,
    /// A change is under way (sent, not yet answered, or answered less than
    /// its bound ago): either answer is right.
    InDoubt,
}

/// One change of a token's state through the admin API.
#[derive(Debug, Clone, Copy)]
pub struct Change {
    /// Valid after it (enable) or not (disable, revoke).
    pub valid_after: bool,
    /// Just before the first try was sent.
    pub sent: Instant,
    /// When the try that succeeded answered (`None`: not yet).
    pub acked: Option<Instant>,
    /// How long after `acked` a gate may still answer the old way.
    pub bound: Duration,
}

/// A token whose state the test changes while the load asks about it,
/// with the log of its changes: the judge of every answer about it.
#[derive(Debug)]
pub struct Tracked {
    pub secret: String,
    pub id: String,
    log: std::sync::Mutex<Vec<Change>>,
    revoked: std::sync::atomic::AtomicBool,
}

impl Tracked {
    pub fn new(secret: String, id: String) -> Self {
        Self {
            secret,
            id,
            log: std::sync::Mutex::new(Vec::new()),
            revoked: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Adds a change made outside a [`Changer`] to the log.
    pub fn record(&self, change: Change) {
        self.log.lock().unwrap().push(change);
    }

    /// The token's true state at `t`.
    pub fn truth_at(&self, t: Instant) -> Truth {
        let log = self.log.lock().unwrap();
        let mut valid = true;
        for c in log.iter() {
            if t < c.sent {
                break;
            }
            match c.acked {
                Some(k) if t >= k + c.bound => valid = c.valid_after,
                _ if c.valid_after == valid => {}
                _ => return Truth::InDoubt,
            }
        }
        if valid { Truth::Valid } else { Truth::Invalid }
    }

    /// The last change answered before `t`: (valid after it, when, its
    /// bound).
    fn settled_before(&self, t: Instant) -> Option<(bool, Instant, Duration)> {
        let log = self.log.lock().unwrap();
        log.iter().rev().find_map(|c| {
            c.acked
                .filter(|k| *k <= t)
                .map(|k| (c.valid_after, k, c.bound))
        })
    }

    /// How many changes the log holds.
    pub fn changes(&self) -> usize {
        self.log.lock().unwrap().len()
    }

    /// The state after the last change in the log.
    pub fn is_valid_now(&self) -> bool {
        self.log
            .lock()
            .unwrap()
            .last()
            .is_none_or(|c| c.valid_after)
    }
}

/// The tokens a [`Load`] sends, by what the right answer is.
#[derive(Debug, Default, Clone)]
pub struct TokenMix {
    /// Valid and never changed; cached by the gate before the load starts.
    pub cached: Vec<String>,
    /// Valid, never asked before: each sent once (a store read), never
    /// reused. When the pool runs out the load counts it
    /// (`fresh_exhausted`) rather than reuse one.
    pub fresh: Vec<String>,
    /// Revoked or disabled after the gate had cached them: never allowed.
    pub revoked: Vec<String>,
    /// Changed by a [`Changer`] while the load runs: judged by their logs.
    pub tracked: Vec<std::sync::Arc<Tracked>>,
}

/// What a load saw so far.
#[derive(Debug, Default, Clone, Copy)]
pub struct LoadCounts {
    pub requests: u64,
    pub allowed: u64,
    /// An allow for a token that was invalid both when the request was
    /// sent and when it was answered (revoked, disabled past its bound,
    /// unknown): must stay 0.
    pub wrong_allows: u64,
    /// A 401/403 for a token valid both at send and at answer.
    pub wrong_denies: u64,
    /// 503 `store_unavailable`.
    pub unavailable: u64,
    /// 503 for a token that was cached valid (see [`Load::cache_epoch`]).
    pub cached_unavailable: u64,
    /// 503 for a fresh (uncached, valid) token.
    pub fresh_unavailable: u64,
    /// Fresh tokens sent (each once).
    pub fresh_sent: u64,
    /// Times the fresh pool was empty (a fresh token would have been
    /// reused): must stay 0.
    pub fresh_exhausted: u64,
    /// Answers about tracked tokens.
    pub tracked_requests: u64,
    /// Other 5xx answers.
    pub other_5xx: u64,
    /// No answer within 2 s.
    pub hangs: u64,
    pub max_503: Duration,
    pub max_latency: Duration,
    /// The longest a gate answered the old way about a tracked token after
    /// its change was answered (the request's send − the change's answer).
    pub max_enforcement_lag: Duration,
    /// Old-way answers to requests sent past the change's bound: must stay
    /// 0 (each is also a wrong allow or deny, unless the answer was a 503).
    pub late: u64,
}

impl LoadCounts {
    pub fn fivexx(&self) -> u64 {
        self.unavailable + self.other_5xx
    }

    /// The counts since `before` (maxima: since the last `reset_max`).
    pub fn since(&self, before: &LoadCounts) -> LoadCounts {
        LoadCounts {
            requests: self.requests - before.requests,
            allowed: self.allowed - before.allowed,
            wrong_allows: self.wrong_allows - before.wrong_allows,
            wrong_denies: self.wrong_denies - before.wrong_denies,
            unavailable: self.unavailable - before.unavailable,
            cached_unavailable: self.cached_unavailable - before.cached_unavailable,
            fresh_unavailable: self.fresh_unavailable - before.fresh_unavailable,
            fresh_sent: self.fresh_sent - before.fresh_sent,
            fresh_exhausted: self.fresh_exhausted - before.fresh_exhausted,
            tracked_requests: self.tracked_requests - before.tracked_requests,
            other_5xx: self.other_5xx - before.other_5xx,
            hangs: self.hangs - before.hangs,
            max_503: self.max_503,
            max_latency: self.max_latency,
            max_enforcement_lag: self.max_enforcement_lag,
            late: self.late - before.late,
        }
    }
}

#[derive(Default)]
struct LoadAtomics {
    requests: AtomicU64,
    allowed: AtomicU64,
    wrong_allows: AtomicU64,
    wrong_denies: AtomicU64,
    unavailable: AtomicU64,
    cached_unavailable: AtomicU64,
    fresh_unavailable: AtomicU64,
    fresh_sent: AtomicU64,
    fresh_exhausted: AtomicU64,
    tracked_requests: AtomicU64,
    other_5xx: AtomicU64,
    hangs: AtomicU64,
    max_503_us: AtomicU64,
    max_latency_us: AtomicU64,
    max_lag_us: AtomicU64,
    late: AtomicU64,
}

/// Which cached tokens are surely still in the gate's cache.
///
/// A cache entry lives `cache.ttl` from when it was put in (not from its
/// last use; `cache.stale_if_error` adds to that while the store fails),
/// so a token allowed a moment ago may be gone the next. The load knows an
/// entry's age only after a cache drop the test made and proved
/// ([`Load::cache_epoch`]): an entry put in after a drop that began at `t`
/// lives until `t + cover` at least.
struct CacheEpoch {
    id: AtomicU64,
    /// `t + cover`, as µs after the load's origin.
    until_us: AtomicU64,
    /// Per cached token: the epoch in which it was last allowed.
    allowed_in: Vec<AtomicU64>,
}

/// Worker tasks asking `/auth/nginx` about a mix of tokens (cached valid,
/// fresh valid, revoked, tracked, unknown), each at a steady pace, judging
/// every answer by the token's true state at send and at answer.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    counts: std::sync::Arc<LoadAtomics>,
    epoch: std::sync::Arc<CacheEpoch>,
    origin: Instant,
    refused_fresh: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// What one request was about.
#[derive(Clone, Copy)]
enum Kind {
    Cached(usize),
    Fresh(usize),
    Revoked,
    Tracked(usize),
    Unknown,
}

impl Load {
    /// `workers` tasks, each sending one request every `period`. Of 20
    /// requests: 10 cached, 4 tracked (or cached when there are none),
    /// 2 fresh, 1 revoked, 3 unknown.
    pub fn start(auth: SocketAddr, mix: TokenMix, workers: usize, period: Duration) -> Self {
        use std::sync::Arc;
        use std::sync::atomic::AtomicBool;
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(LoadAtomics::default());
        let origin = Instant::now();
        let epoch = Arc::new(CacheEpoch {
            id: AtomicU64::new(0),
            until_us: AtomicU64::new(0),
            allowed_in: (0..mix.cached.len())
                .map(|_| AtomicU64::new(u64::MAX))
                .collect(),
        });
        let refused_fresh = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mix = Arc::new(mix);
        let next_fresh = Arc::new(AtomicU64::new(0));
        let client: Client<HttpConnector, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        let tasks = (0..workers)
            .map(|w| {
                let (stop, counts, mix, next_fresh, client, epoch, refused_fresh) = (
                    stop.clone(),
                    counts.clone(),
                    mix.clone(),
                    next_fresh.clone(),
                    client.clone(),
                    epoch.clone(),
                    refused_fresh.clone(),
                );
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(period);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    let mut i = w as u64 * 7;
                    let us =
                        |t: Instant| u64::try_from((t - origin).as_micros()).unwrap_or(u64::MAX);
                    while !stop.load(Ordering::Relaxed) {
                        tick.tick().await;
                        i += 1;
                        let n = (i / 20) as usize;
                        let kind = match i % 20 {
                            10..=13 if !mix.tracked.is_empty() => {
                                Kind::Tracked((n * 4 + (i % 20) as usize) % mix.tracked.len())
                            }
                            0..=13 if !mix.cached.is_empty() => {
                                Kind::Cached((n * 14 + (i % 20) as usize) % mix.cached.len())
                            }
                            14 | 15 => {
                                let k = next_fresh.fetch_add(1, Ordering::Relaxed) as usize;
                                if k < mix.fresh.len() {
                                    Kind::Fresh(k)
                                } else {
                                    counts.fresh_exhausted.fetch_add(1, Ordering::Relaxed);
                                    Kind::Unknown
                                }
                            }
                            16 if !mix.revoked.is_empty() => Kind::Revoked,
                            _ => Kind::Unknown,
                        };
                        let token = match kind {
                            Kind::Cached(k) => mix.cached[k].clone(),
                            Kind::Tracked(k) => mix.tracked[k].secret.clone(),
                            Kind::Fresh(k) => {
                                counts.fresh_sent.fetch_add(1, Ordering::Relaxed);
                                mix.fresh[k].clone()
                            }
                            Kind::Revoked => mix.revoked[n % mix.revoked.len()].clone(),
                            Kind::Unknown => hawzu_gate::token::TokenSecret::generate()
                                .unwrap()
                                .expose()
                                .to_owned(),
                        };
                        let req = Request::builder()
                            .method(Method::GET)
                            .uri(format!("http://{auth}/auth/nginx"))
                            .header("authorization", format!("Bearer {token}"))
                            .header("x-original-method", "GET")
                            .header("x-original-uri", WS1_PROJECTS)
                            .body(Full::new(Bytes::new()))
                            .unwrap();
                        // Cached for sure: allowed since the last proven
                        // cache drop, which is recent enough.
                        let sent = Instant::now();
                        let epoch_now = epoch.id.load(Ordering::Acquire);
                        let surely_cached = match kind {
                            Kind::Cached(k) => {
                                epoch.allowed_in[k].load(Ordering::Relaxed) == epoch_now
                                    && us(sent) < epoch.until_us.load(Ordering::Relaxed)
                            }
                            _ => false,
                        };
                        let answer =
                            tokio::time::timeout(Duration::from_secs(2), client.request(req)).await;
                        let answered = Instant::now();
                        let took = answered - sent;
                        let took_us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
                        counts.requests.fetch_add(1, Ordering::Relaxed);
                        counts.max_latency_us.fetch_max(took_us, Ordering::Relaxed);
                        let status = match answer {
                            Ok(Ok(res)) => res.status(),
                            Ok(Err(_)) => StatusCode::BAD_GATEWAY,
                            Err(_) => {
                                counts.hangs.fetch_add(1, Ordering::Relaxed);
                                continue;
                            }
                        };
                        // The right answer at send and at answer.
                        let (at_send, at_answer) = match kind {
                            Kind::Cached(_) | Kind::Fresh(_) => (Truth::Valid, Truth::Valid),
                            Kind::Revoked | Kind::Unknown => (Truth::Invalid, Truth::Invalid),
                            Kind::Tracked(k) => {
                                let t = &mix.tracked[k];
                                (t.truth_at(sent), t.truth_at(answered))
                            }
                        };
                        let allowed = status.is_success();
                        let denied = matches!(status.as_u16(), 401 | 403);
                        if let Kind::Tracked(k) = kind {
                            counts.tracked_requests.fetch_add(1, Ordering::Relaxed);
                            // How long after a change a gate still answered
                            // the old way. Not while a later change is under
                            // way: it may already be in place in the store
                            // (applied, then answered 503 and retried), so an
                            // answer that follows it is not a late one.
                            if at_send != Truth::InDoubt
                                && let Some((valid, acked, bound)) =
                                    mix.tracked[k].settled_before(sent)
                                && ((allowed && !valid) || (denied && valid))
                            {
                                let lag = sent - acked;
                                counts.max_lag_us.fetch_max(
                                    u64::try_from(lag.as_micros()).unwrap_or(u64::MAX),
                                    Ordering::Relaxed,
                                );
                                if lag > bound {
                                    counts.late.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                        if allowed {
                            counts.allowed.fetch_add(1, Ordering::Relaxed);
                            if at_send == Truth::Invalid && at_answer == Truth::Invalid {
                                counts.wrong_allows.fetch_add(1, Ordering::Relaxed);
                            }
                            if let Kind::Cached(k) = kind {
                                epoch.allowed_in[k].store(epoch_now, Ordering::Relaxed);
                            }
                        } else if denied {
                            if at_send == Truth::Valid && at_answer == Truth::Valid {
                                counts.wrong_denies.fetch_add(1, Ordering::Relaxed);
                            }
                        } else if status == StatusCode::SERVICE_UNAVAILABLE {
                            counts.unavailable.fetch_add(1, Ordering::Relaxed);
                            counts.max_503_us.fetch_max(took_us, Ordering::Relaxed);
                            if surely_cached {
                                counts.cached_unavailable.fetch_add(1, Ordering::Relaxed);
                            }
                            if let Kind::Fresh(_) = kind {
                                counts.fresh_unavailable.fetch_add(1, Ordering::Relaxed);
                                refused_fresh.lock().unwrap().push(token);
                            }
                        } else {
                            counts.other_5xx.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        Self {
            stop,
            counts,
            epoch,
            origin,
            refused_fresh,
            tasks,
        }
    }

    pub fn counts(&self) -> LoadCounts {
        let c = &self.counts;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        LoadCounts {
            requests: get(&c.requests),
            allowed: get(&c.allowed),
            wrong_allows: get(&c.wrong_allows),
            wrong_denies: get(&c.wrong_denies),
            unavailable: get(&c.unavailable),
            cached_unavailable: get(&c.cached_unavailable),
            fresh_unavailable: get(&c.fresh_unavailable),
            fresh_sent: get(&c.fresh_sent),
            fresh_exhausted: get(&c.fresh_exhausted),
            tracked_requests: get(&c.tracked_requests),
            other_5xx: get(&c.other_5xx),
            hangs: get(&c.hangs),
            max_503: Duration::from_micros(get(&c.max_503_us)),
            max_latency: Duration::from_micros(get(&c.max_latency_us)),
            max_enforcement_lag: Duration::from_micros(get(&c.max_lag_us)),
            late: get(&c.late),
        }
    }

    /// Starts the maxima afresh (per fault).
    pub fn reset_max(&self) {
        self.counts.max_503_us.store(0, Ordering::Relaxed);
        self.counts.max_latency_us.store(0, Ordering::Relaxed);
        self.counts.max_lag_us.store(0, Ordering::Relaxed);
    }

    /// Every entry the gate holds for the cached tokens was put in after
    /// `began` (the gate had never seen them, or its whole cache was
    /// dropped, provably, by a drop that began then), so each lives until
    /// `began + cover` at least (`cover` = `cache.ttl`). From now on a 503
    /// for a cached token that the load saw allowed after this call, sent
    /// before `began + cover`, counts as `cached_unavailable`. Returns
    /// `began + cover`.
    pub fn cache_epoch(&self, began: Instant, cover: Duration) -> Instant {
        let until = began + cover;
        let us = u64::try_from((until - self.origin).as_micros()).unwrap_or(u64::MAX);
        self.epoch.until_us.store(us, Ordering::Relaxed);
        self.epoch.id.fetch_add(1, Ordering::Release);
        until
    }

    /// Fresh tokens that got 503 (taken: each is returned once).
    pub fn take_refused_fresh(&self) -> Vec<String> {
        std::mem::take(&mut *self.refused_fresh.lock().unwrap())
    }

    /// Waits until `n` more requests were answered (the load's own pace,
    /// not a fixed sleep).
    pub async fn run_for(&self, n: u64, deadline: Duration) {
        let target = self.counts().requests + n;
        eventually("the load to make progress", deadline, || async {
            (self.counts().requests >= target).then_some(())
        })
        .await;
    }

    pub async fn stop(mut self) -> LoadCounts {
        self.stop.store(true, Ordering::Relaxed);
        for t in std::mem::take(&mut self.tasks) {
            t.await.expect("a load worker panicked");
        }
        self.counts()
    }
}

/// Changes tracked tokens through a gate's admin API, one at a time, at a
/// steady pace: disable, enable, revoke. Every change goes into the
/// token's log before it is sent and gets its answer time when a try
/// succeeds; tries that fail (503 while Redis is away) are repeated until
/// one succeeds, and such a change gets the in-doubt bound (the failed try
/// may still have been written, without its event).
pub struct Changer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    bound_us: std::sync::Arc<AtomicU64>,
    sent: std::sync::Arc<std::sync::Mutex<Vec<(Instant, Duration)>>>,
    /// The latest `acked + bound` of any change so far.
    settled: std::sync::Arc<std::sync::Mutex<Option<Instant>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Changer {
    /// Changes under way at once (each lane has its own tokens), so that
    /// several are in flight during an outage.
    pub const LANES: usize = 4;

    /// `delivered`: the bound of a change made in one try while no fault is
    /// on; `in_doubt`: the bound of one that needed several tries.
    pub fn start(
        admin: Http,
        tracked: Vec<std::sync::Arc<Tracked>>,
        period: Duration,
        delivered: Duration,
        in_doubt: Duration,
    ) -> Self {
        use std::sync::Arc;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let bound_us = Arc::new(AtomicU64::new(delivered.as_micros() as u64));
        let sent = Arc::new(std::sync::Mutex::new(Vec::new()));
        let settled = Arc::new(std::sync::Mutex::new(None));
        let tasks: Vec<_> = (0..Self::LANES)
            .map(|lane| {
                let (stop, bound_us, sent, settled, admin) = (
                    stop.clone(),
                    bound_us.clone(),
                    sent.clone(),
                    settled.clone(),
                    admin.clone(),
                );
                let tracked: Vec<Arc<Tracked>> = tracked
                    .iter()
                    .skip(lane)
                    .step_by(Self::LANES)
                    .cloned()
                    .collect();
                tokio::spawn(async move {
                    let mut n: usize = lane;
                    while !stop.load(Ordering::Relaxed) {
                        tokio::time::sleep(period).await;
                        n += 1;
                        // Round-robin over the tokens not revoked yet.
                        let live: Vec<&Arc<Tracked>> = tracked
                            .iter()
                            .filter(|t| !t.revoked.load(Ordering::Relaxed))
                            .collect();
                        if live.is_empty() {
                            continue;
                        }
                        let t = live[n.wrapping_mul(7) % live.len()];
                        // Every 5th change a revoke, else flip.
                        let revoke = n.is_multiple_of(5) && live.len() > tracked.len() / 3;
                        let valid_now = t.is_valid_now();
                        let (method, path, valid_after) = if revoke {
                            (Method::DELETE, format!("/admin/v1/tokens/{}", t.id), false)
                        } else if valid_now {
                            (
                                Method::POST,
                                format!("/admin/v1/tokens/{}/disable", t.id),
                                false,
                            )
                        } else {
                            (
                                Method::POST,
                                format!("/admin/v1/tokens/{}/enable", t.id),
                                true,
                            )
                        };
                        let bound_at =
                            |b: &AtomicU64| Duration::from_micros(b.load(Ordering::Relaxed));
                        let started = Instant::now();
                        let index = {
                            let mut log = t.log.lock().unwrap();
                            log.push(Change {
                                valid_after,
                                sent: started,
                                acked: None,
                                bound: bound_at(&bound_us),
                            });
                            log.len() - 1
                        };
                        sent.lock().unwrap().push((started, bound_at(&bound_us)));
                        let mut tries = 0;
                        loop {
                            tries += 1;
                            let r = admin.send(method.clone(), &path, &[], None).await;
                            if r.status == StatusCode::OK {
                                break;
                            }
                            assert_eq!(
                                r.status,
                                StatusCode::SERVICE_UNAVAILABLE,
                                "{method} {path}: {:?}",
                                r.body
                            );
                            assert!(
                                started.elapsed() < Duration::from_secs(60),
                                "a change not written within 60 s"
                            );
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        let acked = Instant::now();
                        let mut log = t.log.lock().unwrap();
                        let c = &mut log[index];
                        c.acked = Some(acked);
                        c.bound = c.bound.max(bound_at(&bound_us));
                        if tries > 1 {
                            c.bound = c.bound.max(in_doubt);
                        }
                        let by = acked + c.bound;
                        let mut latest = settled.lock().unwrap();
                        *latest = Some(latest.map_or(by, |l: Instant| l.max(by)));
                        if revoke {
                            t.revoked.store(true, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        Self {
            stop,
            bound_us,
            sent,
            settled,
            tasks,
        }
    }

    /// When every change answered so far is past its bound (from then on a
    /// gate answering the old way about it is wrong).
    pub fn settled_by(&self) -> Instant {
        self.settled.lock().unwrap().unwrap_or_else(Instant::now)
    }

    /// The bound of changes sent or answered from now on.
    pub fn set_bound(&self, bound: Duration) {
        self.bound_us
            .store(bound.as_micros() as u64, Ordering::Relaxed);
    }

    /// How many changes were sent in `[from, to]`.
    pub fn sent_between(&self, from: Instant, to: Instant) -> usize {
        self.sent
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _)| *t >= from && *t <= to)
            .count()
    }

    pub async fn stop(mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        for t in std::mem::take(&mut self.tasks) {
            t.await.expect("the changer panicked");
        }
        self.sent.lock().unwrap().len()
    }
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

/// Creates `n` workspace tokens (viewer of `ws_1`) through the admin API,
/// trying again on 503 within 20 s; their secrets and ids.
pub async fn create_tokens(admin: &Http, n: usize, expires: &str) -> Vec<(String, String)> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        // Set-up: a busy machine can make a just-started Redis miss the
        // request-path timeout (503); try again, within a deadline. A try
        // that timed out may still have been written: one unused token.
        let body = workspace_token(&format!("load {i}"), "ws_1", "workspace_viewer", expires);
        let created = eventually("a token to be created", Duration::from_secs(20), || async {
            let r = admin.post("/admin/v1/tokens", body.clone()).await;
            (r.status != StatusCode::SERVICE_UNAVAILABLE).then_some(r)
        })
        .await;
        assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
        let v = created.json();
        out.push((
            v["secret"].as_str().unwrap().to_owned(),
            v["token"]["id"].as_str().unwrap().to_owned(),
        ));
    }
    out
}

/// Polls Redis at `url` with PING (each try bounded to 100 ms) until it
/// answers; how long that took. Unlike `redis-cli`, never stuck behind a
/// `CLIENT PAUSE`.
pub async fn wait_redis_answers(url: &str, deadline: Duration) -> Duration {
    let start = Instant::now();
    let client = redis::Client::open(url).unwrap();
    eventually("Redis to answer PING", deadline, || {
        let client = client.clone();
        async move {
            tokio::time::timeout(Duration::from_millis(100), async {
                let mut c = client.get_multiplexed_async_connection().await.ok()?;
                redis::cmd("PING").query_async::<String>(&mut c).await.ok()
            })
            .await
            .ok()
            .flatten()
            .map(|_| ())
        }
    })
    .await;
    start.elapsed()
}
