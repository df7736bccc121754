//! nginx running the shipped `deploy/nginx/nginx.conf`, pointed at a test's
//! gate and upstream; stopped with SIGTERM (then SIGKILL) on drop.

use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::time::Duration;

use super::{free_port, port_open, stop_child, tool, wait_until};

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
        let child = tool("nginx")
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&path)
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
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
