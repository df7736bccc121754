//! The proxies in front of the gate, run from the files `deploy/` ships
//! (Envoy, Traefik, Caddy): a file used as shipped with only its addresses
//! rewritten, the program started on free ports and stopped with SIGTERM on
//! drop; and what every proxy test sends and checks — the headers a client
//! would smuggle, and that none of them reaches the API.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use http::StatusCode;
use serde_json::Value;

use super::gate::InProcessGate;
use super::http::{curl_async, curl_header};
use super::process::stop_child;
use super::tokens::{project_token, workspace_token};
use super::upstream::TestUpstream;
use super::wait_until;

// === a shipped proxy file, run ===

/// A proxy program running a file from `deploy/` with its addresses
/// replaced. Stopped (SIGTERM, then SIGKILL) on drop.
pub struct ShippedProxy {
    child: Option<Child>,
    name: &'static str,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl ShippedProxy {
    /// `file` under deploy/, each `(shipped, ours)` replaced (every
    /// `shipped` text must occur in the file: the test notices when the
    /// file changes under it), written into a temp dir as `write_as`;
    /// `command` gets the written file and the temp dir and returns the
    /// program to run, which must come to listen on `port`.
    pub fn start(
        name: &'static str,
        file: &str,
        replace: &[(&str, String)],
        write_as: &str,
        port: u16,
        command: impl FnOnce(&Path, &Path) -> Command,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let shipped = std::fs::read_to_string(deploy(file)).unwrap();
        let mut conf = shipped.clone();
        for (needle, with) in replace {
            assert!(
                shipped.contains(needle),
                "deploy/{file} no longer has `{needle}`"
            );
            conf = conf.replace(needle, with);
        }
        let path = dir.path().join(write_as);
        std::fs::write(&path, conf).unwrap();
        let log = std::fs::File::create(dir.path().join("proxy.log")).unwrap();
        let child = command(&path, dir.path())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut p = Self {
            child: Some(child),
            name,
            port,
            dir,
        };
        wait_until(
            &format!("{name} to listen"),
            Duration::from_secs(30),
            || {
                if let Some(status) = p.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                    panic!("{name} exited with {status}: {}", p.log());
                }
                std::net::TcpStream::connect(("127.0.0.1", p.port)).is_ok()
            },
        );
        p
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What the program wrote so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("proxy.log")).unwrap_or_default()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn name(&self) -> &'static str {
        self.name
    }
}

impl Drop for ShippedProxy {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            stop_child(child, Some("-TERM"), Duration::from_secs(5));
        }
    }
}

/// A file under `deploy/`.
pub fn deploy(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(file)
}

// === what a client smuggles, and what the API must not see ===

/// What a client sends to smuggle: identity headers in every spelling,
/// `X-Forwarded-Prefix`, its token, and a `Connection` header naming the
/// gate's identity headers (a proxy that applies it after setting them
/// from the gate's answer hands the API a request without them), as curl
/// arguments (method and path overrides: [`METHOD_OVERRIDES`],
/// [`PATH_OVERRIDES`]).
pub fn hostile_headers(token: &str) -> Vec<String> {
    let bearer = format!("Authorization: Bearer {token}");
    header_args(&[
        &bearer,
        "X-Hawzu-Role: workspace_manager",
        "X-Hawzu-Project-Id: proj_b",
        "X-Hawzu-Anything: else",
        "X-Hawzu-Token-Expires: 2999-01-01T00:00:00Z",
        "X-Forwarded-Prefix: /api/v1/workspaces/ws_2",
        "Connection: X-Hawzu-Permission, X-Hawzu-Project-Id, X-Hawzu-Token-Expires, X-Hawzu-Role",
    ])
}

/// The same, plus header names spelled with `_` (which Envoy refuses
/// outright, and nginx, Caddy and Traefik drop). A method override so
/// spelled is a method override (the gate folds `_` to `-`): see
/// [`METHOD_OVERRIDES`].
pub fn hostile_headers_with_underscores(token: &str) -> Vec<String> {
    let mut args = hostile_headers(token);
    for h in [
        "X_Hawzu_Role: workspace_manager",
        "x-hawzu_workspace_id: ws_2",
        "X_HAWZU-PROJECT-ID: proj_b",
    ] {
        args.push("-H".to_owned());
        args.push(h.to_owned());
    }
    args
}

/// The same, plus header names that fold into protected ones with another
/// separator than `-` or `_` (lighttpd and PHP read `X-Hawzu.Role` as
/// `HTTP_X_HAWZU_ROLE`), and a method override so spelled.
pub fn hostile_headers_with_separators(token: &str) -> Vec<String> {
    let mut args = hostile_headers(token);
    for h in [
        "X-Hawzu.Role: workspace_manager",
        "x+hawzu+workspace+id: ws_2",
        "X~Hawzu~Project~Id: proj_b",
        "X.Forwarded.For: 203.0.113.9",
        "X-HTTP-Method.Override: DELETE",
    ] {
        args.push("-H".to_owned());
        args.push(h.to_owned());
    }
    args
}

/// The request the test upstream echoed carries only the gate's identity
/// headers: none of the client's, no token, no override, no upgrade.
pub fn assert_clean(echo: &Value, role: &str, project: Option<&str>) {
    let h = echo["headers"].as_object().unwrap();
    for name in h.keys() {
        assert!(
            name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'),
            "{name} reached the API: {h:?}"
        );
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
    assert_eq!(h["x-hawzu-role"], serde_json::json!([role]), "{h:?}");
    assert!(h.contains_key("x-hawzu-permission"), "{h:?}");
    assert_eq!(
        h["x-hawzu-workspace-id"],
        serde_json::json!(["ws_1"]),
        "{h:?}"
    );
    match project {
        Some(p) => assert_eq!(h["x-hawzu-project-id"], serde_json::json!([p]), "{h:?}"),
        None => assert!(h.get("x-hawzu-project-id").is_none(), "{h:?}"),
    }
    // The token's expiry, as the gate said it: never the client's.
    let expires = h["x-hawzu-token-expires"].as_array().unwrap();
    assert_eq!(expires.len(), 1, "{h:?}");
    let expires = expires[0].as_str().unwrap();
    assert!(
        expires.ends_with('Z') && !expires.starts_with("2999"),
        "{h:?}"
    );
}

// === the scenario every proxy in front of the gate must pass ===

async fn secret(gate: &InProcessGate, body: Value) -> String {
    let a = gate.admin().post("/admin/v1/tokens", body).await;
    assert_eq!(a.status, StatusCode::CREATED);
    a.json()["secret"].as_str().unwrap().to_owned()
}

/// curl arguments for `path` through the proxy, with the Host Traefik's
/// router matches.
pub fn url_args(base: &str, host: Option<&str>, path: &str) -> Vec<String> {
    let mut args = vec!["--path-as-is".to_owned()];
    if let Some(h) = host {
        args.push("-H".to_owned());
        args.push(format!("Host: {h}"));
    }
    args.push(format!("{base}{path}"));
    args
}

/// Polls until the proxy routes to the gate (Traefik loads its file after
/// it listens): a request without a token gets the gate's 401.
pub async fn wait_routed(base: &str, host: Option<&str>) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (status, headers, _) =
            curl_async(url_args(base, host, "/api/v1/workspaces/ws_1/projects")).await;
        if status == 401 && curl_header(&headers, "x-hawzu-error") == ["missing_token"] {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the proxy never routed to the gate (last: {status} {headers:?})"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The method overrides a client sends to have the API run a method the
/// gate did not judge.
pub const METHOD_OVERRIDES: [&str; 3] = [
    "X-HTTP-Method-Override: DELETE",
    "X-HTTP-Method: DELETE",
    "X-Method-Override: DELETE",
];

/// The path overrides a client sends to have the API serve a path the gate
/// did not judge.
pub const PATH_OVERRIDES: [&str; 3] = [
    "X-Original-URL: /api/v1/workspaces/ws_2/settings/x",
    "X-Rewrite-URL: /api/v1/workspaces/ws_2/settings/x",
    "X-Original-URI: /api/v1/workspaces/ws_2/settings/x",
];

/// What a shipped setup does with a method or path override header.
#[derive(Clone, Copy)]
pub enum Overrides {
    /// Removed before the API (the gate's proxy, the Envoy doors).
    Removed,
    /// Refused by the gate, 400 `method_override` or `path_override`: a
    /// forward-auth door (`/auth/traefik`) cannot take a header off what
    /// its proxy forwards.
    Refused,
}

/// What a shipped setup does with the headers a client forges.
#[derive(Clone, Copy)]
pub struct Forged {
    /// Names spelled with `_` (`X_Hawzu_Role`).
    pub underscores: Misspelled,
    /// Names spelled with another separator (`X-Hawzu.Role`).
    pub separators: Misspelled,
    /// Method and path override headers.
    pub overrides: Overrides,
}

/// `headers` as curl arguments.
fn header_args(headers: &[&str]) -> Vec<String> {
    headers
        .iter()
        .flat_map(|h| ["-H".to_owned(), (*h).to_owned()])
        .collect()
}

/// What a setup does with client header names that fold into protected
/// ones: spelled with `_` (`X_Hawzu_Role`), or with another separator
/// (`X-Hawzu.Role`).
#[derive(Clone, Copy)]
pub enum Misspelled {
    /// Refused outright: by Envoy (`headers_with_underscores_action:
    /// REJECT_REQUEST`), or by the gate at a door that cannot remove them
    /// (400 `ambiguous_header`).
    Refused,
    /// Dropped or deleted before the API (the Caddyfile, nginx, or the gate
    /// naming them for removal).
    Dropped,
}

/// Everything one proxy must show; `gate_down_status` is what the client
/// gets once the gate is gone.
pub async fn proxy_judged_by_the_gate(
    gate: InProcessGate,
    upstream: &TestUpstream,
    proxy: &ShippedProxy,
    host: Option<&str>,
    forged: Forged,
    gate_down_status: u16,
) {
    let name = proxy.name();
    let base = proxy.url();
    wait_routed(&base, host).await;
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

    // Allowed, with everything a client could try to smuggle: the API sees
    // the method and path judged and only the gate's identity.
    let mut args = vec!["-X".to_owned(), "POST".to_owned()];
    args.extend(hostile_headers(&project));
    args.extend(url_args(
        &base,
        host,
        "/api/v1/workspaces/ws_1/projects/proj_a/testcases?page=2",
    ));
    let (status, headers, body) = curl_async(args).await;
    assert_eq!(status, 200, "{name}: {body}\n{}", proxy.log());
    let echo: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echo["method"], "POST", "{name}");
    // Envoy (HTTP and gRPC ext_authz, as shipped) hands the client its
    // token's expiry; Traefik and Caddy's forward auth cannot (design.md,
    // "Expiry for the client").
    if name == "envoy" {
        let sent = echo["headers"]["x-hawzu-token-expires"][0]
            .as_str()
            .unwrap()
            .to_ascii_lowercase();
        assert_eq!(
            curl_header(&headers, "hawzu-token-expires"),
            [sent.as_str()],
            "{name}"
        );
    }
    assert_eq!(
        echo["uri"], "/api/v1/workspaces/ws_1/projects/proj_a/testcases?page=2",
        "{name}"
    );
    assert_clean(&echo, "project_member", Some("proj_a"));

    // A workspace route: the gate sets no X-Hawzu-Project-Id, and the
    // client's never arrives either.
    let mut args = hostile_headers(&viewer);
    args.extend(url_args(&base, host, "/api/v1/workspaces/ws_1/projects"));
    let (status, _, body) = curl_async(args).await;
    assert_eq!(status, 200, "{name}: {body}");
    assert_clean(
        &serde_json::from_str(&body).unwrap(),
        "workspace_viewer",
        None,
    );
    let mut allowed = 2;
    assert_eq!(upstream.count(), allowed, "{name}");

    // Method and path overrides on a POST the token may make.
    let with = |overriding: &[&str]| {
        let mut args = vec!["-X".to_owned(), "POST".to_owned()];
        args.extend(hostile_headers(&project));
        args.extend(header_args(overriding));
        args.extend(url_args(
            &base,
            host,
            "/api/v1/workspaces/ws_1/projects/proj_a/testcases",
        ));
        args
    };
    match forged.overrides {
        Overrides::Refused => {
            for (overriding, code) in [
                (&METHOD_OVERRIDES, "method_override"),
                (&PATH_OVERRIDES, "path_override"),
            ] {
                let (status, _, body) = curl_async(with(overriding)).await;
                assert_eq!(status, 400, "{name}: {body}");
                let refusal: Value = serde_json::from_str(&body).unwrap();
                assert_eq!(refusal["error"], code, "{name}");
            }
        }
        Overrides::Removed => {
            let (status, _, body) =
                curl_async(with(&[METHOD_OVERRIDES, PATH_OVERRIDES].concat())).await;
            assert_eq!(status, 200, "{name}: {body}");
            let echo: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(echo["method"], "POST", "{name}");
            assert_clean(&echo, "project_member", Some("proj_a"));
            allowed += 1;
        }
    }
    assert_eq!(upstream.count(), allowed, "{name}");

    // Header names with `_`: never read by the API as an identity.
    let mut args = hostile_headers_with_underscores(&viewer);
    args.extend(url_args(&base, host, "/api/v1/workspaces/ws_1/projects"));
    let (status, _, body) = curl_async(args).await;
    match forged.underscores {
        Misspelled::Refused => assert_eq!(status, 400, "{name}: {body}"),
        Misspelled::Dropped => {
            assert_eq!(status, 200, "{name}: {body}");
            assert_clean(
                &serde_json::from_str(&body).unwrap(),
                "workspace_viewer",
                None,
            );
            allowed += 1;
        }
    }
    assert_eq!(upstream.count(), allowed, "{name}");

    // Names with another separator: the same.
    let mut args = hostile_headers_with_separators(&viewer);
    args.extend(url_args(&base, host, "/api/v1/workspaces/ws_1/projects"));
    let (status, _, body) = curl_async(args).await;
    match forged.separators {
        Misspelled::Refused => assert_eq!(status, 400, "{name}: {body}"),
        Misspelled::Dropped => {
            assert_eq!(status, 200, "{name}: {body}");
            let echo: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(echo["method"], "GET", "{name}");
            assert_clean(&echo, "workspace_viewer", None);
            allowed += 1;
        }
    }
    assert_eq!(upstream.count(), allowed, "{name}");

    // The gate's refusals reach the client: status, code and challenge.
    let (status, headers, _) =
        curl_async(url_args(&base, host, "/api/v1/workspaces/ws_1/projects")).await;
    assert_eq!(status, 401, "{name}");
    assert_eq!(
        curl_header(&headers, "x-hawzu-error"),
        ["missing_token"],
        "{name}"
    );
    assert_eq!(
        curl_header(&headers, "www-authenticate"),
        [r#"bearer realm="hawzu""#],
        "{name}"
    );
    let mut args = vec!["-H".to_owned(), format!("Authorization: Bearer {viewer}")];
    args.extend(url_args(&base, host, "/api/v1/workspaces/ws_2/projects"));
    let (status, headers, _) = curl_async(args).await;
    assert_eq!(status, 403, "{name}");
    assert_eq!(
        curl_header(&headers, "x-hawzu-error"),
        ["workspace_mismatch"],
        "{name}"
    );
    assert_eq!(
        curl_header(&headers, "www-authenticate"),
        [r#"bearer realm="hawzu", error="insufficient_scope""#],
        "{name}"
    );
    let mut args = vec!["-H".to_owned(), "Authorization: Bearer hwz_nope".to_owned()];
    args.extend(url_args(&base, host, "/api/v1/workspaces/ws_1/projects"));
    let (status, headers, _) = curl_async(args).await;
    assert_eq!(status, 401, "{name}");
    assert_eq!(
        curl_header(&headers, "x-hawzu-error"),
        ["malformed_token"],
        "{name}"
    );
    assert!(
        curl_header(&headers, "www-authenticate")
            .first()
            .is_some_and(|c| c.contains(r#"error="invalid_token""#)),
        "{name}: {headers:?}"
    );

    // Path confusion: a path that could be read two ways is refused, or
    // reaches the API exactly as judged — never as another path. The
    // viewer may read ws_1, never ws_2's settings.
    for path in [
        "/api/v1/workspaces/ws_1//projects",
        "/api/v1/workspaces/ws_1/projects/../../ws_2/settings",
        "/api/v1/workspaces/ws_1/projects/%2e%2e/%2e%2e/ws_2/settings",
        "/api/v1/workspaces/ws_1/projects%2F..%2F..%2Fws_2%2Fsettings",
        "/api/v1/workspaces/ws_1/./projects",
    ] {
        let mut args = vec!["-H".to_owned(), format!("Authorization: Bearer {viewer}")];
        args.extend(url_args(&base, host, path));
        let (status, _, body) = curl_async(args).await;
        if status == 200 {
            allowed += 1;
            let uri = serde_json::from_str::<Value>(&body).unwrap()["uri"]
                .as_str()
                .unwrap()
                .to_owned();
            assert_eq!(
                uri, "/api/v1/workspaces/ws_1/projects",
                "{name}: {path} allowed and forwarded as {uri}"
            );
        }
        assert_eq!(upstream.count(), allowed, "{name}: {path} ({status})");
    }

    // A revoked token is refused at once (this gate made the change).
    let id = gate
        .admin()
        .get("/admin/v1/tokens?workspace=ws_1")
        .await
        .json()["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "Reports")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = gate.admin().delete(&format!("/admin/v1/tokens/{id}")).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let mut args = vec!["-H".to_owned(), format!("Authorization: Bearer {viewer}")];
    args.extend(url_args(&base, host, "/api/v1/workspaces/ws_1/projects"));
    let (status, headers, _) = curl_async(args.clone()).await;
    assert_eq!(status, 401, "{name}");
    assert_eq!(
        curl_header(&headers, "x-hawzu-error"),
        ["token_revoked"],
        "{name}"
    );
    assert_eq!(
        upstream.count(),
        allowed,
        "{name}: a refused request reached the API"
    );

    // The gate gone: the proxy refuses (fails closed), nothing reaches the API.
    let mut args = vec!["-H".to_owned(), format!("Authorization: Bearer {project}")];
    args.extend(url_args(
        &base,
        host,
        "/api/v1/workspaces/ws_1/projects/proj_a/testcases",
    ));
    drop(gate.shutdown().await);
    let (status, _, body) = curl_async(args).await;
    assert_eq!(
        status, gate_down_status,
        "{name} with the gate down: {body}"
    );
    assert_eq!(
        upstream.count(),
        allowed,
        "{name}: the API was reached without the gate"
    );
}

/// Caddy with `deploy/caddy/<file>`: its site address on a free port, its
/// admin endpoint off (tests run side by side), `addrs` replaced.
pub fn caddy(file: &str, addrs: &[(&str, std::net::SocketAddr)]) -> ShippedProxy {
    let port = super::free_port();
    let mut replace = vec![
        (
            "http://127.0.0.1:8000 {",
            format!("http://127.0.0.1:{port} {{"),
        ),
        ("auto_https off", "auto_https off\n\tadmin off".to_owned()),
    ];
    replace.extend(addrs.iter().map(|(n, a)| (*n, a.to_string())));
    ShippedProxy::start(
        "caddy",
        &format!("caddy/{file}"),
        &replace,
        "Caddyfile",
        port,
        |conf: &Path, dir: &Path| {
            let mut c = super::tool("caddy");
            c.args(["run", "--adapter", "caddyfile", "--config"])
                .arg(conf)
                // Caddy keeps state under these; keep it in the temp dir.
                .env("HOME", dir)
                .env("XDG_DATA_HOME", dir)
                .env("XDG_CONFIG_HOME", dir);
            c
        },
    )
}
