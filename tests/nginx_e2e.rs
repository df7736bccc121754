//! The ingress pattern with real parts: curl → Debian's nginx running
//! `deploy/nginx/nginx.conf` → `auth_request` to the gate's `/auth/nginx` →
//! a test upstream that echoes what it received.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use common::{InProcessGate, Nginx, TestUpstream, curl, project_token, workspace_token};
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
