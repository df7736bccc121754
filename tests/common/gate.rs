//! The gate under test: in-process (`InProcessGate`, port-0 listeners) or as
//! the real binary (`GateProcess`, with its CLI). Both stop on drop. Never
//! sends requests itself beyond what start-up needs: see `http`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use hawzu_gate::config::{self, Loaded};
use hawzu_gate::server::{Addresses, Bound, Control};

use super::{Http, free_port, port_open, redis_url, stop_child, unique_prefix, wait_until};

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
        Self::start_with(dir, None, extra).await
    }

    /// Starts a gate with `toml` as its config file (for what env variables
    /// cannot say, such as `[[policy.rules]]`) and `extra` as env.
    pub async fn start_with_toml(toml: &str, extra: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hawzu-gate.toml");
        std::fs::write(&file, toml).unwrap();
        Self::start_with(dir, Some(&file), extra).await
    }

    async fn start_with(
        dir: tempfile::TempDir,
        file: Option<&Path>,
        extra: &[(&str, &str)],
    ) -> Self {
        let env = test_config(&dir.path().join("data"), extra);
        let loaded = config::load_from(file, env).expect("test config is valid");
        // A gate shut down on this directory a moment ago may still hold
        // the embedded store's file lock in a background task winding down
        // (a new process never meets this): poll, with a deadline.
        let started = std::time::Instant::now();
        let bound = loop {
            match Bound::new(&loaded).await {
                Ok(b) => break b,
                Err(e)
                    if e.to_string().contains("already open")
                        && started.elapsed() < std::time::Duration::from_secs(10) =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                Err(e) => panic!("gate starts: {e:?}"),
            }
        };
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
