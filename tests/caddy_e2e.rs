//! The shipped Caddy files with real parts: curl → Caddy running
//! `deploy/caddy/Caddyfile` (forward_auth to `/auth/traefik`) or
//! `deploy/caddy/Caddyfile.sidecar` (in front of the gate's proxy) → a test
//! upstream that echoes what it received.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::time::Duration;

use common::{
    InProcessGate, TestUpstream, curl_async, curl_header, free_port, project_token, wait_until,
    workspace_token,
};
use http::StatusCode;
use serde_json::Value;

/// Caddy running a shipped Caddyfile with its addresses replaced (and its
/// admin endpoint off, so tests can run side by side). Stopped on drop.
struct Caddy {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl Caddy {
    /// `file` under deploy/caddy; `(shipped, ours)` address replacements.
    fn start(file: &str, addrs: &[(&str, SocketAddr)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let shipped = std::fs::read_to_string(format!(
            "{}/deploy/caddy/{file}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let mut conf = shipped.clone();
        let listen = format!("127.0.0.1:{port}");
        for (needle, with) in [
            ("http://127.0.0.1:8000 {", format!("http://{listen} {{")),
            ("auto_https off", "auto_https off\n\tadmin off".to_owned()),
        ]
        .into_iter()
        .chain(addrs.iter().map(|(n, a)| ((*n), a.to_string())))
        {
            assert!(
                shipped.contains(needle),
                "deploy/caddy/{file} no longer has `{needle}`"
            );
            conf = conf.replace(needle, &with);
        }
        let path = dir.path().join("Caddyfile");
        std::fs::write(&path, conf).unwrap();
        let child = common::tool("caddy")
            .args(["run", "--adapter", "caddyfile", "--config"])
            .arg(&path)
            // Caddy keeps state under these; keep it in the temp dir.
            .env("HOME", dir.path())
            .env("XDG_DATA_HOME", dir.path())
            .env("XDG_CONFIG_HOME", dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("caddy.log")).unwrap(),
            ))
            .spawn()
            .unwrap();
        let mut c = Self {
            child: Some(child),
            port,
            dir,
        };
        wait_until("caddy to listen", Duration::from_secs(20), || {
            if let Some(status) = c.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                let log =
                    std::fs::read_to_string(c.dir.path().join("caddy.log")).unwrap_or_default();
                panic!("caddy exited with {status}: {log}");
            }
            std::net::TcpStream::connect(("127.0.0.1", c.port)).is_ok()
        });
        c
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Caddy {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

async fn secret(gate: &InProcessGate, body: Value) -> String {
    let a = gate.admin().post("/admin/v1/tokens", body).await;
    assert_eq!(a.status, StatusCode::CREATED);
    a.json()["secret"].as_str().unwrap().to_owned()
}

/// What a client sends to smuggle: identity headers in every spelling,
/// method and path overrides, and its token.
fn hostile_headers(token: &str) -> Vec<String> {
    let other = "/api/v1/workspaces/ws_2/settings/x";
    let mut args = Vec::new();
    for h in [
        format!("Authorization: Bearer {token}"),
        "X-Hawzu-Role: workspace_manager".to_owned(),
        "X-Hawzu-Project-Id: proj_b".to_owned(),
        "X-Hawzu-Anything: else".to_owned(),
        "X_Hawzu_Role: workspace_manager".to_owned(),
        "x-hawzu_workspace_id: ws_2".to_owned(),
        "X_HAWZU-PROJECT-ID: proj_b".to_owned(),
        "X-HTTP-Method-Override: DELETE".to_owned(),
        "X-HTTP-Method: DELETE".to_owned(),
        "X-Method-Override: DELETE".to_owned(),
        "X_HTTP_Method_Override: DELETE".to_owned(),
        format!("X-Original-URL: {other}"),
        format!("X-Rewrite-URL: {other}"),
        format!("X-Original-URI: {other}"),
        "X-Forwarded-Prefix: /api/v1/workspaces/ws_2".to_owned(),
    ] {
        args.push("-H".to_owned());
        args.push(h);
    }
    args
}

/// The echoed request carries only the gate's identity headers.
fn assert_clean(echo: &Value, role: &str, project: Option<&str>) {
    let h = echo["headers"].as_object().unwrap();
    for name in h.keys() {
        assert!(!name.contains('_'), "{name} reached the API: {h:?}");
        assert!(
            ![
                "authorization",
                "x-http-method-override",
                "x-http-method",
                "x-method-override",
                "x-original-url",
                "x-rewrite-url",
                "x-original-uri",
                "x-forwarded-prefix",
                "x-hawzu-anything",
                "upgrade",
                "http2-settings",
            ]
            .contains(&name.as_str()),
            "{name} reached the API: {h:?}"
        );
    }
    assert_eq!(h["x-hawzu-role"], serde_json::json!([role]));
    assert_eq!(h["x-hawzu-workspace-id"], serde_json::json!(["ws_1"]));
    match project {
        Some(p) => assert_eq!(h["x-hawzu-project-id"], serde_json::json!([p])),
        None => assert!(h.get("x-hawzu-project-id").is_none(), "{h:?}"),
    }
}

/// An h2c upgrade (with a valid token) is refused by Caddy itself.
async fn assert_upgrade_refused(base: &str, token: &str) {
    let (status, headers, body) = curl_async(vec![
        "--http1.1".into(),
        "-H".into(),
        format!("Authorization: Bearer {token}"),
        "-H".into(),
        "Upgrade: h2c".into(),
        "-H".into(),
        "Connection: Upgrade, HTTP2-Settings".into(),
        "-H".into(),
        "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA".into(),
        format!("{base}/api/v1/workspaces/ws_1/projects/proj_a/testcases"),
    ])
    .await;
    assert_eq!(status, 400, "{headers:?} {body}");
    assert_eq!(curl_header(&headers, "x-hawzu-error"), ["upgrade_refused"]);
    // Any other upgrade too.
    let (status, _, _) = curl_async(vec![
        "-H".into(),
        format!("Authorization: Bearer {token}"),
        "-H".into(),
        "Upgrade: websocket".into(),
        "-H".into(),
        "Connection: Upgrade".into(),
        format!("{base}/api/v1/workspaces/ws_1/projects/proj_a/testcases"),
    ])
    .await;
    assert_eq!(status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_forward_auth_passes_only_the_gates_identity_to_the_api() {
    let upstream = TestUpstream::start().await;
    let gate = InProcessGate::embedded().await;
    let project = secret(
        &gate,
        project_token("CI", "ws_1", &[("proj_a", "project_member")], "1m"),
    )
    .await;
    let viewer = secret(
        &gate,
        workspace_token("Reports", "ws_1", "workspace_viewer", "1m"),
    )
    .await;
    let caddy = Caddy::start(
        "Caddyfile",
        &[
            ("127.0.0.1:8081", gate.addrs.auth),
            ("127.0.0.1:3000", upstream.addr),
        ],
    );
    let base = caddy.url();

    // Allowed, with everything a client could try to smuggle.
    let mut args = vec!["-X".to_owned(), "POST".to_owned()];
    args.extend(hostile_headers(&project));
    args.push(format!(
        "{base}/api/v1/workspaces/ws_1/projects/proj_a/testcases?page=2"
    ));
    let (status, _, body) = curl_async(args).await;
    assert_eq!(status, 200, "{body}");
    let echo: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echo["method"], "POST");
    assert_eq!(
        echo["uri"],
        "/api/v1/workspaces/ws_1/projects/proj_a/testcases?page=2"
    );
    assert_clean(&echo, "project_member", Some("proj_a"));

    // A workspace route: the gate sets no X-Hawzu-Project-Id, and the
    // client's never arrives either.
    let mut args = hostile_headers(&viewer);
    args.push(format!("{base}/api/v1/workspaces/ws_1/projects"));
    let (status, _, body) = curl_async(args).await;
    assert_eq!(status, 200, "{body}");
    assert_clean(
        &serde_json::from_str(&body).unwrap(),
        "workspace_viewer",
        None,
    );
    let allowed = upstream.count();
    assert_eq!(allowed, 2);

    assert_upgrade_refused(&base, &project).await;

    // The gate's refusals reach the client as they came.
    let (status, headers, body) =
        curl_async(vec![format!("{base}/api/v1/workspaces/ws_1/projects")]).await;
    assert_eq!(status, 401);
    assert_eq!(curl_header(&headers, "x-hawzu-error"), ["missing_token"]);
    assert_eq!(
        curl_header(&headers, "www-authenticate"),
        [r#"bearer realm="hawzu""#]
    );
    assert!(body.contains("missing_token"), "{body}");
    let (status, headers, _) = curl_async(vec![
        "-H".into(),
        format!("Authorization: Bearer {viewer}"),
        format!("{base}/api/v1/workspaces/ws_2/projects"),
    ])
    .await;
    assert_eq!(status, 403);
    assert_eq!(
        curl_header(&headers, "x-hawzu-error"),
        ["workspace_mismatch"]
    );
    let (status, headers, _) = curl_async(vec![
        "--path-as-is".into(),
        "-H".into(),
        format!("Authorization: Bearer {viewer}"),
        format!("{base}/api/v1/workspaces/ws_1//projects"),
    ])
    .await;
    assert_eq!(status, 400);
    assert_eq!(curl_header(&headers, "x-hawzu-error"), ["ambiguous_path"]);
    assert_eq!(
        upstream.count(),
        allowed,
        "a refused request reached the API"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_in_front_of_the_gates_proxy_passes_only_the_gates_identity() {
    let upstream = TestUpstream::start().await;
    let gate =
        InProcessGate::start(&[("upstream.url", &format!("http://{}", upstream.addr))]).await;
    let project = secret(
        &gate,
        project_token("CI", "ws_1", &[("proj_a", "project_member")], "1m"),
    )
    .await;
    let caddy = Caddy::start("Caddyfile.sidecar", &[("127.0.0.1:8080", gate.addrs.proxy)]);
    let base = caddy.url();

    let mut args = vec!["-X".to_owned(), "POST".to_owned()];
    args.extend(hostile_headers(&project));
    args.push(format!(
        "{base}/api/v1/workspaces/ws_1/projects/proj_a/testcases"
    ));
    let (status, _, body) = curl_async(args).await;
    assert_eq!(status, 200, "{body}");
    let echo: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echo["method"], "POST");
    assert_clean(&echo, "project_member", Some("proj_a"));
    assert_eq!(upstream.count(), 1);

    assert_upgrade_refused(&base, &project).await;
    let (status, headers, _) =
        curl_async(vec![format!("{base}/api/v1/workspaces/ws_1/projects")]).await;
    assert_eq!(status, 401);
    assert_eq!(curl_header(&headers, "x-hawzu-error"), ["missing_token"]);
    assert_eq!(upstream.count(), 1, "a refused request reached the API");
}
