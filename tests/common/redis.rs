//! Single Redis servers for tests: a throwaway `redis-server` (`RedisServer`),
//! a node a test may kill and restart (`RedisNode`), `redis-cli`, a PING
//! poll, and a relay that holds back Redis's answers (`LateAnswers`).
//! Every process is stopped on drop; never touches the gate.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use super::{eventually, free_port, port_open, stop_child, wait_until};

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
        let child = super::tool("redis-server")
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
            .unwrap();
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

// === Redis nodes, Sentinel and Cluster (redis_faults, redis_topologies, chaos) ===

/// Runs `redis-cli -p <port> <args…>` and returns what it printed.
pub fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = super::tool("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stderr(Stdio::null())
        .output()
        .unwrap();
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

    /// Freezes the server (`SIGSTOP`): its connections stay open, it
    /// answers nothing until [`RedisNode::resume`].
    #[allow(dead_code)] // not every test binary freezes a server
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaws a server [`RedisNode::pause`] froze (`SIGCONT`).
    #[allow(dead_code)]
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("the server runs").id();
        let ok = std::process::Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} {pid}");
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
        let child = super::tool("redis-server")
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
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

// === answers that come late ===

/// A TCP relay in front of a Redis server that, once armed, holds back
/// the answer to the first command containing `trigger` (and whatever
/// follows it on that connection) for `delay`: Redis has run the command,
/// its client stops waiting first — a write that landed, reported as a
/// timeout. Stops with the test's runtime.
pub struct LateAnswers {
    pub port: u16,
    armed: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// How many held answers have been passed on, and how many had been
    /// at the last [`Self::arm`].
    released: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    released_at_arm: std::sync::atomic::AtomicUsize,
}

impl LateAnswers {
    pub async fn start(redis_port: u16, trigger: &'static [u8], delay: Duration) -> Self {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let armed = Arc::new(AtomicBool::new(false));
        let arm = armed.clone();
        let released = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let passed = released.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", redis_port)).await
                else {
                    continue;
                };
                let (mut client_rx, mut client_tx) = client.into_split();
                let (mut server_rx, mut server_tx) = server.into_split();
                let hold = Arc::new(AtomicBool::new(false));
                let (arm, hold_in, passed) = (arm.clone(), hold.clone(), passed.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n @ 1..) = client_rx.read(&mut buf).await {
                        let chunk = &buf[..n];
                        if chunk.windows(trigger.len()).any(|w| w == trigger)
                            && arm.swap(false, Ordering::SeqCst)
                        {
                            hold_in.store(true, Ordering::SeqCst);
                        }
                        if server_tx.write_all(chunk).await.is_err() {
                            break;
                        }
                    }
                });
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n @ 1..) = server_rx.read(&mut buf).await {
                        let held = hold.swap(false, Ordering::SeqCst);
                        if held {
                            tokio::time::sleep(delay).await;
                        }
                        if client_tx.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        if held {
                            passed.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                });
            }
        });
        Self {
            port,
            armed,
            released,
            released_at_arm: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The next command containing the trigger gets its answer late.
    pub fn arm(&self) {
        use std::sync::atomic::Ordering;
        self.released_at_arm
            .store(self.released.load(Ordering::SeqCst), Ordering::SeqCst);
        self.armed.store(true, Ordering::SeqCst);
    }

    /// Waits (up to 10 s) until the answers held since the last
    /// [`Self::arm`] have been passed on: the connection they were held
    /// on answers again at once. (Changes go on a connection of their
    /// own: a read answering says nothing about it.)
    #[allow(dead_code)] // not every test binary waits
    pub async fn wait_released(&self) {
        use std::sync::atomic::Ordering;
        let before = self.released_at_arm.load(Ordering::SeqCst);
        eventually(
            "the held answer passed on",
            Duration::from_secs(10),
            || async { (self.released.load(Ordering::SeqCst) > before).then_some(()) },
        )
        .await;
    }
}
