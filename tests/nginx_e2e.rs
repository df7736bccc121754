//! The ingress pattern with real parts: curl → Debian's nginx running
//! `deploy/nginx/nginx.conf` → `auth_request` to the gate's `/auth/nginx` →
//! a test upstream that echoes what it received: what an allowed request
//! carries to the API. Refusals are in `tests/nginx_refusals.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use common::{InProcessGate, Nginx, TestUpstream, curl, curl_async, curl_header, project_token};
use http::StatusCode;
use serde_json::Value;

async fn secret(gate: &InProcessGate, body: Value) -> String {
    let a = gate.admin().post("/admin/v1/tokens", body).await;
    assert_eq!(a.status, StatusCode::CREATED);
    a.json()["secret"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_auth_request_passes_identity_to_the_api() {
    let upstream = TestUpstream::start().await;
    let gate = InProcessGate::embedded().await;
    let project = secret(
        &gate,
        project_token("CI", "ws_1", &[("proj_a", "project_member")], "1m"),
    )
    .await;
    let nginx = Nginx::start(gate.addrs.auth, upstream.addr);
    let base = nginx.url();

    // Allowed: arrives with the identity headers; the client's spoofed
    // X-Hawzu-Role and its token never arrive.
    let url = format!("{base}/api/v1/workspaces/ws_1/projects/proj_a/testcases?page=2");
    let (status, headers, body) = tokio::task::spawn_blocking({
        let project = project.clone();
        move || {
            curl(&[
                "-X",
                "POST",
                "-H",
                &format!("Authorization: Bearer {project}"),
                "-H",
                "X-Hawzu-Token-Expires: 2999-01-01T00:00:00Z",
                "-H",
                "X-Hawzu-Role: workspace_manager",
                "-H",
                "X-Hawzu-Workspace-Id: ws_2",
                &url,
            ])
        }
    })
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let echo: Value = serde_json::from_str(&body).unwrap();
    let h = &echo["headers"];
    assert_eq!(h["x-hawzu-role"], serde_json::json!(["project_member"]));
    assert_eq!(h["x-hawzu-workspace-id"], serde_json::json!(["ws_1"]));
    assert_eq!(h["x-hawzu-project-id"], serde_json::json!(["proj_a"]));
    assert_eq!(h["x-hawzu-token-type"], serde_json::json!(["project"]));
    assert_eq!(
        h["x-hawzu-permission"],
        serde_json::json!(["testcases:write"])
    );
    assert!(
        h["x-hawzu-token-id"][0]
            .as_str()
            .unwrap()
            .starts_with("tok_")
    );
    assert!(h.get("authorization").is_none(), "token forwarded: {h}");
    // The token's expiry: to the API (never the client's own value), and
    // back to the client on the API's answer.
    let expires = h["x-hawzu-token-expires"][0].as_str().unwrap().to_owned();
    assert!(
        expires.ends_with('Z') && !expires.starts_with("2999"),
        "{h}"
    );
    // (curl_header reads header lines in lower case)
    let lower = expires.to_ascii_lowercase();
    assert_eq!(
        curl_header(&headers, "hawzu-token-expires"),
        [lower.as_str()]
    );
    assert_eq!(
        echo["uri"],
        "/api/v1/workspaces/ws_1/projects/proj_a/testcases?page=2"
    );
    assert_eq!(upstream.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_never_forwards_underscore_override_or_upgrade_headers() {
    let upstream = TestUpstream::start().await;
    let gate = InProcessGate::embedded().await;
    let project = secret(
        &gate,
        project_token("CI", "ws_1", &[("proj_a", "project_member")], "1m"),
    )
    .await;
    let nginx = Nginx::start(gate.addrs.auth, upstream.addr);
    let url = format!(
        "{}/api/v1/workspaces/ws_1/projects/proj_a/testcases",
        nginx.url()
    );
    let other = "/api/v1/workspaces/ws_2/settings/x";
    let is_method_override = |h: &str| {
        let h = h.to_ascii_lowercase().replace('_', "-");
        [
            "x-http-method-override:",
            "x-http-method:",
            "x-method-override:",
        ]
        .iter()
        .any(|m| h.starts_with(m))
    };
    let hostile: Vec<String> = vec![
        format!("Authorization: Bearer {project}"),
        "X_Hawzu_Role: workspace_manager".into(),
        "x-hawzu_workspace_id: ws_2".into(),
        "X_HAWZU-PROJECT-ID: proj_b".into(),
        // lighttpd and PHP read these as HTTP_X_HAWZU_ROLE and
        // HTTP_X_FORWARDED_FOR; nginx drops such names (ignore_invalid_headers).
        "X-Hawzu.Role: workspace_manager".into(),
        "X.Forwarded.For: 203.0.113.9".into(),
        "X-HTTP-Method-Override: DELETE".into(),
        "X-HTTP-Method: DELETE".into(),
        "X-Method-Override: DELETE".into(),
        "X_HTTP_Method_Override: DELETE".into(),
        format!("X-Original-URL: {other}"),
        format!("X-Rewrite-URL: {other}"),
        format!("X-Original-URI: {other}"),
        "X-Forwarded-Prefix: /api/v1/workspaces/ws_2".into(),
    ];
    let mut args: Vec<String> = vec!["-X".into(), "POST".into()];
    for h in &hostile {
        args.push("-H".into());
        args.push(h.clone());
    }
    // An upgrade on top of all that is refused by the gate (nginx shows it
    // the client's headers) with its own status and code.
    let mut upgrade = args.clone();
    for h in [
        "Upgrade: h2c",
        "Connection: Upgrade, HTTP2-Settings",
        "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA",
    ] {
        upgrade.push("-H".into());
        upgrade.push(h.into());
    }
    upgrade.push(url.clone());
    let (status, headers, body) = curl_async(upgrade).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        curl_header(&headers, "x-hawzu-error"),
        ["upgrade_refused"],
        "{headers:?}"
    );
    assert_eq!(upstream.count(), 0, "an upgrade reached the API");

    // A method override: /auth/nginx cannot take it off what nginx
    // forwards (ingress-nginx clears request headers only controller-wide),
    // so the gate refuses it, whatever the config does after.
    let mut overridden = args.clone();
    overridden.push(url.clone());
    let (status, headers, body) = curl_async(overridden).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        curl_header(&headers, "x-hawzu-error"),
        ["method_override"],
        "{headers:?}"
    );
    assert_eq!(upstream.count(), 0, "an override reached the API");
    // Nor X-Rewrite-URL, a path override nginx does not set (the door reads
    // nginx's own X-Original-URI/-URL, which the config sets over the
    // client's).
    let is_rewrite = |h: &str| h.to_ascii_lowercase().starts_with("x-rewrite-url:");
    let mut args: Vec<String> = vec!["-X".into(), "POST".into()];
    for h in hostile.iter().filter(|h| !is_method_override(h)) {
        args.push("-H".into());
        args.push(h.clone());
    }
    let mut rewritten = args.clone();
    rewritten.push(url.clone());
    let (status, headers, body) = curl_async(rewritten).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        curl_header(&headers, "x-hawzu-error"),
        ["path_override"],
        "{headers:?}"
    );
    assert_eq!(upstream.count(), 0, "an override reached the API");
    // Without either, the other path overrides and identity spoofs are
    // cleared.
    let mut args: Vec<String> = vec!["-X".into(), "POST".into()];
    for h in hostile
        .iter()
        .filter(|h| !is_method_override(h) && !is_rewrite(h))
    {
        args.push("-H".into());
        args.push(h.clone());
    }
    args.push(url);
    let (status, _, body) = curl_async(args).await;
    assert_eq!(status, 200, "{body}");
    let echo: Value = serde_json::from_str(&body).unwrap();
    let h = echo["headers"].as_object().unwrap();
    assert_eq!(echo["method"], "POST");
    let names: Vec<&String> = h.keys().collect();
    for name in names {
        assert!(!name.contains('_'), "{name} reached the API: {h:?}");
        for banned in [
            "authorization",
            "x-http-method-override",
            "x-http-method",
            "x-method-override",
            "x-original-url",
            "x-rewrite-url",
            "x-original-uri",
            "x-forwarded-prefix",
            "upgrade",
            "http2-settings",
        ] {
            assert_ne!(name, banned, "{name} reached the API: {h:?}");
        }
    }
    assert_eq!(h["x-hawzu-role"], serde_json::json!(["project_member"]));
    assert_eq!(h["x-hawzu-workspace-id"], serde_json::json!(["ws_1"]));
    assert_eq!(h["x-hawzu-project-id"], serde_json::json!(["proj_a"]));
}

#[test]
fn the_shipped_nginx_file_drops_underscore_headers_explicitly() {
    let conf = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/nginx/nginx.conf"
    ))
    .unwrap();
    let directives: Vec<String> = conf
        .lines()
        .map(|l| l.split('#').next().unwrap().trim().to_owned())
        .collect();
    for want in ["underscores_in_headers off;", "ignore_invalid_headers on;"] {
        assert!(
            directives.iter().any(|d| d == want),
            "deploy/nginx/nginx.conf does not say `{want}`"
        );
    }
}
