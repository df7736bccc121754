//! The container image, built and run here without a daemon or a registry:
//! `deploy/image/assemble.sh` lays out the binary and its libraries,
//! `buildah` (vfs storage in a temp dir) builds `deploy/image/Containerfile`
//! from scratch, and the image's own root filesystem is run the way a
//! runtime would: a private mount namespace, the root bind-mounted
//! read-only, a tmpfs at data_dir, the image's environment and user
//! (65532). `podman run` cannot run it on this machine: crun's
//! `setrlimit(RLIMIT_NOFILE)` is refused here, even with `--ulimit host`
//! or the current limits (docs/operations.md § The image).
//!
//! Also: hadolint is clean on both recipes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{Http, free_port, stop_child, workspace_token};
use http::StatusCode;
use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const IMAGE: &str = "localhost/hawzu-gate:test";

/// buildah with its own storage under a temp dir (nothing left in
/// /var/lib/containers); images and containers removed on drop.
struct Buildah {
    storage: tempfile::TempDir,
    containers: Vec<String>,
}

impl Buildah {
    fn new() -> Self {
        Self {
            storage: tempfile::tempdir().unwrap(),
            containers: Vec::new(),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        let s = self.storage.path();
        let out = common::tool("buildah")
            .arg("--storage-driver=vfs")
            .arg(format!("--root={}", s.join("root").display()))
            .arg(format!("--runroot={}", s.join("run").display()))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "buildah {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn text(&self, args: &[&str]) -> String {
        String::from_utf8(self.run(args).stdout)
            .unwrap()
            .trim()
            .to_owned()
    }

    /// A working container of `image`, its root filesystem mounted.
    fn mount(&mut self, image: &str) -> PathBuf {
        let ctr = self.text(&["from", "--quiet", "--pull=never", image]);
        let mnt = self.text(&["mount", &ctr]);
        self.containers.push(ctr);
        PathBuf::from(mnt)
    }
}

impl Drop for Buildah {
    fn drop(&mut self) {
        for c in std::mem::take(&mut self.containers) {
            let s = self.storage.path();
            let _ = Command::new("buildah")
                .arg("--storage-driver=vfs")
                .arg(format!("--root={}", s.join("root").display()))
                .arg(format!("--runroot={}", s.join("run").display()))
                .args(["rm", &c])
                .output();
        }
    }
}

fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

/// Builds the image from the binary these tests run.
fn build(b: &Buildah) -> Value {
    let ctx = tempfile::tempdir().unwrap();
    let out = Command::new("sh")
        .arg(Path::new(ROOT).join("deploy/image/assemble.sh"))
        .arg(env!("CARGO_BIN_EXE_hawzu-gate"))
        .arg(ctx.path().join("rootfs"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "assemble.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    b.run(&[
        "build",
        "--quiet",
        "--layers=false",
        "-f",
        &Path::new(ROOT)
            .join("deploy/image/Containerfile")
            .display()
            .to_string(),
        "-t",
        IMAGE,
        &ctx.path().display().to_string(),
    ]);
    serde_json::from_str(&b.text(&["inspect", "--type", "image", IMAGE])).unwrap()
}

#[test]
fn the_image_is_built_from_scratch_and_runs_read_only_as_non_root() {
    assert!(
        is_root(),
        "tests/image.rs needs root (unshare --mount and chroot, as a container runtime does); CI runs as root"
    );
    let mut b = Buildah::new();
    let inspect = build(&b);

    // What the image says about itself.
    let config = &inspect["OCIv1"]["config"];
    assert_eq!(config["User"], "65532:65532");
    assert_eq!(
        config["Entrypoint"],
        serde_json::json!(["/usr/local/bin/hawzu-gate"])
    );
    assert_eq!(config["Cmd"], serde_json::json!(["serve"]));
    assert!(
        config["Volumes"]["/var/lib/hawzu-gate"].is_object(),
        "{config}"
    );
    let env: Vec<String> = config["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert!(env.contains(&"HAWZU_GATE__DATA_DIR=/var/lib/hawzu-gate".to_owned()));
    let layers = inspect["OCIv1"]["rootfs"]["diff_ids"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "one layer, no base image");

    // The root filesystem holds the gate, its libraries and nothing to
    // run besides it (no shell).
    let root = b.mount(IMAGE);
    assert!(root.join("usr/local/bin/hawzu-gate").is_file());
    assert!(!root.join("bin/sh").exists(), "a shell in the image");
    let files = walk(&root);
    assert!(files.len() < 15, "unexpected files in the image: {files:?}");
    // data_dir belongs to the image's user, and no one else may write it:
    // a runtime's anonymous volume for it (podman run, docker run) copies
    // this owner and mode.
    // COPY makes what it copies root's unless told otherwise.
    {
        use std::os::unix::fs::MetadataExt;
        let data = std::fs::metadata(root.join("var/lib/hawzu-gate")).unwrap();
        assert_eq!(
            (data.uid(), data.gid(), data.mode() & 0o022),
            (65532, 65532, 0),
            "data_dir's owner, and no one else may write it"
        );
        let parent = std::fs::metadata(root.join("var/lib")).unwrap();
        assert_eq!(
            (parent.uid(), parent.mode() & 0o022),
            (0, 0),
            "/var/lib stays root's"
        );
    }

    // Run it as a runtime would: a private mount namespace, the image root
    // read-only, tmpfs at data_dir, the image's user and environment; the
    // host's network, so the listeners move to free loopback ports.
    let ports = [
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    ];
    let admin_key = "hwzadm_image_test_key_0123456789abcdefghijklmnop";
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "mount --bind {r} {r} && mount -o remount,bind,ro {r} && \
             mount -t tmpfs -o uid=65532,gid=65532,mode=0700,size=64m tmpfs {r}/var/lib/hawzu-gate && \
             exec chroot --userspec=65532:65532 {r} /usr/local/bin/hawzu-gate serve",
            r = root.display()
        ))
        .env_clear();
    for e in &env {
        let (k, v) = e.split_once('=').unwrap();
        cmd.env(k, v);
    }
    for (key, port) in ["PROXY", "AUTH", "GRPC", "OPS", "ADMIN"].iter().zip(ports) {
        cmd.env(
            format!("HAWZU_GATE__LISTEN__{key}"),
            format!("127.0.0.1:{port}"),
        );
    }
    cmd.env("HAWZU_GATE__ADMIN__KEY", admin_key)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let pid = child.id();
    let ops = format!("http://127.0.0.1:{}", ports[3]);
    let auth = format!("127.0.0.1:{}", ports[1]);
    let admin = format!("http://127.0.0.1:{}", ports[4]);
    common::wait_until(
        "the image's gate to listen",
        Duration::from_secs(30),
        || {
            if let Ok(Some(status)) = child.try_wait() {
                let mut err = String::new();
                std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
                panic!("the image's gate exited with {status}: {err}");
            }
            std::net::TcpStream::connect(("127.0.0.1", ports[3])).is_ok()
        },
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let http = Http::new(ops);
        common::eventually("/readyz to answer 200", Duration::from_secs(30), || async {
            (http.get("/readyz").await.status == StatusCode::OK).then_some(())
        })
        .await;
    });

    // The process: the image's user, on a read-only root.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid.split_whitespace().skip(1).all(|u| u == "65532"),
        "{uid}"
    );
    let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    let root_mount = mounts
        .lines()
        .find(|l| l.split_whitespace().nth(4) == Some("/"))
        .unwrap();
    assert!(
        root_mount
            .split_whitespace()
            .nth(5)
            .unwrap()
            .split(',')
            .any(|o| o == "ro"),
        "root not read-only: {root_mount}"
    );

    // A token round trip through the image's gate.
    rt.block_on(async {
        let created = Http::new(admin)
            .bearer(admin_key)
            .post(
                "/admin/v1/tokens",
                workspace_token("image", "ws_1", "workspace_viewer", "7d"),
            )
            .await;
        assert_eq!(created.status, StatusCode::CREATED);
        let secret = created.json()["secret"].as_str().unwrap().to_owned();
        let ask = |token: Option<String>| {
            let auth = auth.clone();
            async move {
                let mut r = common::send(auth.parse().unwrap(), http::Method::GET, "/auth/nginx")
                    .original("GET", "/api/v1/workspaces/ws_1/projects");
                if let Some(t) = &token {
                    r = r.token(t);
                }
                r.go().await.status
            }
        };
        assert_eq!(ask(Some(secret)).await, StatusCode::OK);
        assert_eq!(ask(None).await, StatusCode::UNAUTHORIZED);
    });

    // SIGTERM, as at a pod's end: a clean stop (exit 0), within the grace.
    common::send_signal("-TERM", &[pid]);
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(30) {
            stop_child(child, None, Duration::ZERO);
            panic!("the image's gate did not stop within 30 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "stopped with {status}");

    let size = b.text(&["images", "--format", "{{.Size}}", IMAGE]);
    println!(
        "image size (this test's binary, {}): {size}",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
}

/// Every file under `dir` (relative paths).
fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out
}

#[test]
fn hadolint_is_clean_on_both_recipes() {
    for file in ["deploy/Dockerfile", "deploy/image/Containerfile"] {
        let out = common::tool("hadolint")
            .arg(Path::new(ROOT).join(file))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "hadolint {file}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
