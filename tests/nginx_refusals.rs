//! nginx's refusals with real parts: curl → Debian's nginx running
//! `deploy/nginx/nginx.conf` → `auth_request` to the gate's `/auth/nginx`.
//! Every refusal reaches the client with the gate's status, code and
//! challenge (exactly one `WWW-Authenticate` on 401 and 403), and nothing
//! refused reaches the API. What an allowed request carries to the API is
//! in `tests/nginx_e2e.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use common::{
    InProcessGate, Nginx, TestUpstream, curl_async, curl_header, project_token, workspace_token,
};
use http::StatusCode;
use serde_json::Value;

async fn secret(gate: &InProcessGate, body: Value) -> String {
    let a = gate.admin().post("/admin/v1/tokens", body).await;
    assert_eq!(a.status, StatusCode::CREATED);
    a.json()["secret"].as_str().unwrap().to_owned()
}

/// Every refusal through nginx: the gate's status and code, and exactly
/// the challenge the gate gave (one on 401 and 403, none otherwise).
/// nginx copies a 401's `WWW-Authenticate` itself; the file must not add
/// a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_gives_every_refusal_the_gates_one_challenge() {
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
    let (disabled_id, disabled) = common::create_token(
        &gate,
        workspace_token("Off", "ws_1", "workspace_viewer", "1m"),
    )
    .await;
    let (revoked_id, revoked) = common::create_token(
        &gate,
        workspace_token("Gone", "ws_1", "workspace_viewer", "1m"),
    )
    .await;
    let a = gate
        .admin()
        .post_empty(&format!("/admin/v1/tokens/{disabled_id}/disable"))
        .await;
    assert!(a.status.is_success(), "disable: {:?}", a.body);
    let a = gate
        .admin()
        .delete(&format!("/admin/v1/tokens/{revoked_id}"))
        .await;
    assert!(a.status.is_success(), "revoke: {:?}", a.body);
    let unknown = hawzu_gate::token::TokenSecret::generate().unwrap();
    let unknown = unknown.expose().to_owned();
    let nginx = Nginx::start(gate.addrs.auth, upstream.addr);
    let base = nginx.url();
    let ws1 = "/api/v1/workspaces/ws_1/projects";
    let invalid = |why: &str| {
        format!(r#"bearer realm="hawzu", error="invalid_token", error_description="{why}""#)
    };
    let scope = r#"bearer realm="hawzu", error="insufficient_scope""#;
    // (method, token, path, status, code, the one challenge if any)
    type Case<'a> = (
        &'a str,
        Option<&'a str>,
        &'a str,
        u16,
        &'a str,
        Option<String>,
    );
    let cases: Vec<Case<'_>> = vec![
        (
            "GET",
            None,
            ws1,
            401,
            "missing_token",
            Some(r#"bearer realm="hawzu""#.into()),
        ),
        (
            "GET",
            Some("hwz_000000000000000000000000000000000000"),
            ws1,
            401,
            "malformed_token",
            Some(invalid(
                "the authorization header does not hold a well-formed hawzu access token; send `authorization: bearer <access token>`, the whole value as it was created",
            )),
        ),
        (
            "GET",
            Some(&unknown),
            ws1,
            401,
            "unknown_token",
            Some(invalid("this access token is not known")),
        ),
        (
            "GET",
            Some(&disabled),
            ws1,
            401,
            "token_disabled",
            Some(invalid("this access token is disabled")),
        ),
        (
            "GET",
            Some(&revoked),
            ws1,
            401,
            "token_revoked",
            Some(invalid("this access token has been revoked")),
        ),
        (
            "POST",
            Some(&viewer),
            "/api/v1/workspaces/ws_1/projects/proj_a/testcases",
            403,
            "insufficient_role",
            Some(scope.into()),
        ),
        (
            "GET",
            Some(&viewer),
            "/settings/access-tokens",
            403,
            "no_matching_rule",
            Some(scope.into()),
        ),
        (
            "GET",
            Some(&viewer),
            "/api/v1/workspaces/ws_2/projects",
            403,
            "workspace_mismatch",
            Some(scope.into()),
        ),
        (
            "GET",
            Some(&project),
            "/api/v1/workspaces/ws_1/projects/proj_b/testcases",
            403,
            "project_not_granted",
            Some(scope.into()),
        ),
        (
            "GET",
            Some(&viewer),
            "/api/v1/workspaces/ws_1//projects",
            400,
            "ambiguous_path",
            None,
        ),
    ];
    for (method, token, path, want, code, challenge) in cases {
        let mut args = vec!["--path-as-is".to_owned(), "-X".into(), method.into()];
        if let Some(t) = token {
            args.push("-H".into());
            args.push(format!("Authorization: Bearer {t}"));
        }
        args.push(format!("{base}{path}"));
        let (status, headers, body) = curl_async(args).await;
        assert_eq!(status, want, "{code}: {headers:?} {body}");
        assert_eq!(
            curl_header(&headers, "x-hawzu-error"),
            [code],
            "{headers:?}"
        );
        let want_challenge: Vec<&str> = challenge.as_deref().into_iter().collect();
        assert_eq!(
            curl_header(&headers, "www-authenticate"),
            want_challenge,
            "{code}: one challenge, the gate's"
        );
        assert!(body.contains(code), "{code}: the body names it: {body}");
    }
    // Nothing refused reached the API.
    assert_eq!(upstream.count(), 0);
}

/// A gate newer than this nginx file (a deny code the map does not list
/// yet, as during an upgrade): the client still gets the gate's status and
/// its one challenge, not a 500 with the challenge twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_keeps_the_gates_status_and_one_challenge_for_a_code_it_does_not_know() {
    let upstream = TestUpstream::start().await;
    for (status, challenge) in [
        (
            "401 Unauthorized",
            r#"Bearer realm="hawzu", error="invalid_token""#,
        ),
        (
            "403 Forbidden",
            r#"Bearer realm="hawzu", error="insufficient_scope""#,
        ),
    ] {
        let gate = common::Canned::start(
            &format!(
                "HTTP/1.1 {status}\r\nWWW-Authenticate: {challenge}\r\nX-Hawzu-Error: from_a_newer_gate"
            ),
            "",
        );
        let nginx = Nginx::start(gate.addr, upstream.addr);
        let (got, headers, _) = curl_async(vec![
            "-H".into(),
            "Authorization: Bearer hwz_000000000000000000000000000000000000".into(),
            format!("{}/api/v1/workspaces/ws_1/projects", nginx.url()),
        ])
        .await;
        assert_eq!(got.to_string(), status[..3], "{headers:?}");
        assert_eq!(
            curl_header(&headers, "www-authenticate"),
            [challenge.to_ascii_lowercase()],
            "{status}: one challenge, the gate's"
        );
        assert_eq!(
            curl_header(&headers, "x-hawzu-error"),
            ["from_a_newer_gate"]
        );
    }
    assert_eq!(upstream.count(), 0);
}

/// Without nginx on PATH, a test that needs it stops with one line naming
/// the package (run here: this test binary again, with an empty PATH).
#[test]
fn without_nginx_a_test_says_which_package_to_install() {
    let empty = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "nginx_still_says_5xx_when_the_gate_cannot_be_reached",
        ])
        .env("PATH", empty.path())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "passed without nginx: {text}");
    assert!(
        text.lines()
            .any(|l| l == "nginx not found: apt-get install nginx-light (.ci/run installs it)"),
        "{text}"
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

#[test]
fn the_nginx_refusal_map_gives_every_gate_code_its_status() {
    use hawzu_gate::refusal::DenyCode;
    let conf = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/nginx/nginx.conf"
    ))
    .unwrap();
    let entries: std::collections::BTreeMap<&str, &str> = conf
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
            Some((code, words.next()?.trim_end_matches(';')))
        })
        .collect();
    // No code: the gate did not answer. A code the file does not know yet
    // (a newer gate): the gate's own status.
    assert_eq!(
        entries.get("\"\""),
        Some(&"500"),
        "no code: the gate failed"
    );
    assert_eq!(entries.get("default"), Some(&"$hawzu_status"));
    let map: std::collections::BTreeMap<&str, u16> = entries
        .iter()
        .filter_map(|(code, status)| Some((*code, status.parse().ok()?)))
        .collect();
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
