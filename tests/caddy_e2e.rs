//! What only Caddy shows, with the shipped files: an upgrade (h2c, or
//! any other) is refused by Caddy itself, before the gate or the API, in
//! both `deploy/caddy/Caddyfile` (forward_auth to `/auth/traefik`) and
//! `deploy/caddy/Caddyfile.sidecar` (in front of the gate's proxy). What
//! every proxy must show (identity, smuggled headers, refusals, path
//! confusion, revocation, the gate down) runs for both files in
//! tests/proxies_e2e.rs.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use common::{InProcessGate, TestUpstream, curl_async, curl_header, project_token};
use http::StatusCode;

async fn project_secret(gate: &InProcessGate) -> String {
    let a = gate
        .admin()
        .post(
            "/admin/v1/tokens",
            project_token("CI", "ws_1", &[("proj_a", "project_member")], "1m"),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED);
    a.json()["secret"].as_str().unwrap().to_owned()
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
async fn caddy_forward_auth_refuses_upgrades_itself() {
    let upstream = TestUpstream::start().await;
    let gate = InProcessGate::embedded().await;
    let token = project_secret(&gate).await;
    let caddy = common::caddy(
        "Caddyfile",
        &[
            ("127.0.0.1:8081", gate.addrs.auth),
            ("127.0.0.1:3000", upstream.addr),
        ],
    );
    assert_upgrade_refused(&caddy.url(), &token).await;
    assert_eq!(upstream.count(), 0, "an upgrade reached the API");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_in_front_of_the_gates_proxy_refuses_upgrades_itself() {
    let upstream = TestUpstream::start().await;
    let gate =
        InProcessGate::start(&[("upstream.url", &format!("http://{}", upstream.addr))]).await;
    let token = project_secret(&gate).await;
    let caddy = common::caddy("Caddyfile.sidecar", &[("127.0.0.1:8080", gate.addrs.proxy)]);
    assert_upgrade_refused(&caddy.url(), &token).await;
    assert_eq!(upstream.count(), 0, "an upgrade reached the API");
}
