//! The ingress pattern with real parts: curl → Debian's nginx running
//! `deploy/nginx/nginx.conf` → `auth_request` to the gate's `/auth/nginx` →
//! a test upstream that echoes what it received.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use common::{
    InProcessGate, Nginx, TestUpstream, curl, curl_async, curl_header, project_token,
    workspace_token,
};
use http::StatusCode;
use serde_json::Value;

async fn secret(gate: &InProcessGate, body: Value) -> String {
    let a = gate.admin().post("/admin/v1/tokens", body).await;
    assert_eq!(a.status, StatusCode::CREATED);
    a.json()["secret"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_auth_request_passes_identity_and_refuses_with_challenges() {
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
    let nginx = Nginx::start(gate.addrs.auth, upstream.addr);
    let base = nginx.url();

    // Allowed: arrives with the identity headers; the client's spoofed
    // X-Hawzu-Role and its token never arrive.
    let url = format!("{base}/api/v1/workspaces/ws_1/projects/proj_a/testcases?page=2");
    let (status, _, body) = tokio::task::spawn_blocking({
        let project = project.clone();
        move || {
            curl(&[
                "-X",
                "POST",
                "-H",
                &format!("Authorization: Bearer {project}"),
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
    assert_eq!(
        echo["uri"],
        "/api/v1/workspaces/ws_1/projects/proj_a/testcases?page=2"
    );
    let allowed = upstream.count();
    assert_eq!(allowed, 1);

    // Refused: 403 with the scope challenge; 401 with the bearer challenge.
    let cases = [
        (
            format!("{base}/api/v1/workspaces/ws_1/projects/proj_a/testcases"),
            Some(viewer.clone()),
            "POST",
            403,
            "insufficient_role",
        ),
        (
            format!("{base}/api/v1/workspaces/ws_1/projects"),
            None,
            "GET",
            401,
            "missing_token",
        ),
        (
            format!("{base}/settings/access-tokens"),
            Some(viewer.clone()),
            "GET",
            403,
            "no_matching_rule",
        ),
        (
            format!("{base}/api/v1/workspaces/ws_2/projects"),
            Some(viewer.clone()),
            "GET",
            403,
            "workspace_mismatch",
        ),
        (
            format!("{base}/api/v1/workspaces/ws_1/projects/proj_b/testcases"),
            Some(project.clone()),
            "GET",
            403,
            "project_not_granted",
        ),
    ];
    for (url, token, method, want, code) in cases {
        let (status, headers, _) = tokio::task::spawn_blocking(move || {
            let mut args = vec!["-X".to_owned(), method.to_owned()];
            if let Some(t) = token {
                args.push("-H".into());
                args.push(format!("Authorization: Bearer {t}"));
            }
            args.push(url);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            curl(&args)
        })
        .await
        .unwrap();
        assert_eq!(status, want, "{code}");
        assert!(
            headers.contains(&format!("x-hawzu-error: {code}")),
            "{code}: {headers:?}"
        );
        let challenge = headers
            .iter()
            .find_map(|l| l.strip_prefix("www-authenticate: "))
            .unwrap_or_else(|| panic!("{code}: no challenge in {headers:?}"));
        if want == 401 {
            assert_eq!(challenge, r#"bearer realm="hawzu""#);
        } else {
            assert_eq!(
                challenge,
                r#"bearer realm="hawzu", error="insufficient_scope""#
            );
        }
    }
    // Nothing refused reached the API.
    assert_eq!(upstream.count(), allowed);

    // An unknown token is refused as such.
    let (status, headers, _) = tokio::task::spawn_blocking({
        let url = format!("{base}/api/v1/workspaces/ws_1/projects");
        move || {
            curl(&[
                "-H",
                "Authorization: Bearer hwz_000000000000000000000000000000000000",
                &url,
            ])
        }
    })
    .await
    .unwrap();
    assert_eq!(status, 401);
    assert!(
        headers.contains(&"x-hawzu-error: malformed_token".to_owned()),
        "{headers:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_passes_each_refusal_on_with_the_gates_status_code_and_headers() {
    let upstream = TestUpstream::start().await;
    // A small failed-auth limit, so the fourth bad token is over it.
    let gate = InProcessGate::start(&[("failed_auth.limit", "3")]).await;
    let viewer = secret(
        &gate,
        workspace_token("Reports", "ws_1", "workspace_viewer", "1m"),
    )
    .await;
    let nginx = Nginx::start(gate.addrs.auth, upstream.addr);
    let base = nginx.url();
    let bearer = |t: &str| format!("Authorization: Bearer {t}");

    // 400: a path the gate refuses as ambiguous (nginx itself merges the
    // slashes for its location match, but asks about the raw URI).
    let (status, headers, body) = curl_async(vec![
        "--path-as-is".into(),
        "-H".into(),
        bearer(&viewer),
        format!("{base}/api/v1/workspaces/ws_1//projects"),
    ])
    .await;
    assert_eq!(status, 400, "{headers:?} {body}");
    assert_eq!(curl_header(&headers, "x-hawzu-error"), ["ambiguous_path"]);
    assert!(
        body.contains("ambiguous_path"),
        "the body names the code: {body}"
    );

    // 401 and 403 keep their one challenge each.
    let (status, headers, _) =
        curl_async(vec![format!("{base}/api/v1/workspaces/ws_1/projects")]).await;
    assert_eq!(status, 401);
    assert_eq!(curl_header(&headers, "x-hawzu-error"), ["missing_token"]);
    assert_eq!(
        curl_header(&headers, "www-authenticate"),
        [r#"bearer realm="hawzu""#]
    );
    let (status, headers, _) = curl_async(vec![
        "-X".into(),
        "DELETE".into(),
        "-H".into(),
        bearer(&viewer),
        format!("{base}/api/v1/workspaces/ws_1/projects/proj_a"),
    ])
    .await;
    assert_eq!(status, 403);
    assert_eq!(
        curl_header(&headers, "x-hawzu-error"),
        ["insufficient_role"]
    );
    assert_eq!(
        curl_header(&headers, "www-authenticate"),
        [r#"bearer realm="hawzu", error="insufficient_scope""#]
    );

    // 429: three bad tokens are 401, the fourth is over the limit. The
    // gate says 401 rate_limited to nginx; the client sees 429.
    let bad = "hwz_000000000000000000000000000000000000"; // bad checksum
    for _ in 0..3 {
        let (status, _, _) = curl_async(vec![
            "-H".into(),
            bearer(bad),
            format!("{base}/api/v1/workspaces/ws_1/projects"),
        ])
        .await;
        assert_eq!(status, 401);
    }
    let (status, headers, body) = curl_async(vec![
        "-H".into(),
        bearer(bad),
        format!("{base}/api/v1/workspaces/ws_1/projects"),
    ])
    .await;
    assert_eq!(status, 429, "{headers:?} {body}");
    assert_eq!(curl_header(&headers, "x-hawzu-error"), ["rate_limited"]);
    assert_eq!(curl_header(&headers, "retry-after").len(), 1, "{headers:?}");
    assert!(
        curl_header(&headers, "www-authenticate").is_empty(),
        "{headers:?}"
    );
    // Nothing refused reached the API.
    assert_eq!(upstream.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_says_503_when_the_gate_says_its_store_is_away() {
    let upstream = TestUpstream::start().await;
    let port = common::free_port();
    let gate = InProcessGate::start(&[
        ("store.backend", "redis"),
        ("store.redis.url", &format!("redis://127.0.0.1:{port}")),
    ])
    .await;
    let nginx = Nginx::start(gate.addrs.auth, upstream.addr);
    // A well-formed token is looked up, and the store is not there.
    let token = hawzu_gate::token::TokenSecret::generate().unwrap();
    let (status, headers, body) = curl_async(vec![
        "-H".into(),
        format!("Authorization: Bearer {}", token.expose()),
        format!("{}/api/v1/workspaces/ws_1/projects", nginx.url()),
    ])
    .await;
    assert_eq!(status, 503, "{headers:?} {body}");
    assert_eq!(
        curl_header(&headers, "x-hawzu-error"),
        ["store_unavailable"]
    );
    assert_eq!(curl_header(&headers, "retry-after"), ["1"]);
    assert_eq!(upstream.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_still_says_5xx_when_the_gate_cannot_be_reached() {
    let upstream = TestUpstream::start().await;
    let nowhere: std::net::SocketAddr = ([127, 0, 0, 1], common::free_port()).into();
    let nginx = Nginx::start(nowhere, upstream.addr);
    let (status, headers, _) = curl_async(vec![
        "-H".into(),
        "Authorization: Bearer hwz_000000000000000000000000000000000000".into(),
        format!("{}/api/v1/workspaces/ws_1/projects", nginx.url()),
    ])
    .await;
    assert!((500..600).contains(&status), "{status} {headers:?}");
    assert!(
        curl_header(&headers, "x-hawzu-error").is_empty(),
        "{headers:?}"
    );
    assert_eq!(upstream.count(), 0);
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
    let mut args: Vec<String> = vec!["-X".into(), "POST".into()];
    for h in [
        format!("Authorization: Bearer {project}"),
        "X_Hawzu_Role: workspace_manager".into(),
        "x-hawzu_workspace_id: ws_2".into(),
        "X_HAWZU-PROJECT-ID: proj_b".into(),
        "X-HTTP-Method-Override: DELETE".into(),
        "X-HTTP-Method: DELETE".into(),
        "X-Method-Override: DELETE".into(),
        "X_HTTP_Method_Override: DELETE".into(),
        format!("X-Original-URL: {other}"),
        format!("X-Rewrite-URL: {other}"),
        format!("X-Original-URI: {other}"),
        "X-Forwarded-Prefix: /api/v1/workspaces/ws_2".into(),
    ] {
        args.push("-H".into());
        args.push(h);
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

#[test]
fn the_nginx_refusal_map_gives_every_gate_code_its_status() {
    use hawzu_gate::refusal::DenyCode;
    let conf = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/nginx/nginx.conf"
    ))
    .unwrap();
    let map: std::collections::BTreeMap<&str, u16> = conf
        .split("map $hawzu_error $hawzu_refusal {")
        .nth(1)
        .expect("deploy/nginx/nginx.conf maps the gate's code to a status")
        .split('}')
        .next()
        .unwrap()
        .lines()
        .filter_map(|l| {
            let mut words = l.split('#').next()?.split_whitespace();
            let code = words.next()?;
            let status = words.next()?.trim_end_matches(';').parse().ok()?;
            Some((code, status))
        })
        .collect();
    assert_eq!(map.get("default"), Some(&500), "no code: the gate failed");
    for code in DenyCode::ALL {
        let want = match code {
            DenyCode::RateLimited => 429,
            code => code.status(),
        };
        assert_eq!(
            map.get(code.as_str()),
            Some(&want),
            "{} in deploy/nginx/nginx.conf's map",
            code.as_str()
        );
    }
    assert_eq!(map.get("overloaded"), Some(&503));
}
