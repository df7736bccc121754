//! The forward-auth endpoints (each reading only its own proxy's headers),
//! Envoy's HTTP and gRPC ext_authz, `last_used_at` and `explain`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::collections::HashMap;

use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
    HttpRequest, Request as AttrRequest,
};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use http::{Method, StatusCode};
use serde_json::Value;

use common::{InProcessGate, WS1_PROJECTS, project_token, workspace_token};

use common::create_token as token;

#[tokio::test]
async fn traefik_reads_only_traefik_headers() {
    let gate = InProcessGate::embedded().await;
    let (_, viewer) = token(
        &gate,
        workspace_token("Viewer", "ws_1", "workspace_viewer", "1m"),
    )
    .await;
    let ask = |extra: Vec<(&'static str, &'static str)>| {
        let viewer = &viewer;
        let gate = &gate;
        async move {
            gate.auth()
                .request(Method::GET, "/auth/traefik")
                .token(viewer)
                .headers(&extra)
                .go()
                .await
        }
    };
    // Traefik's own headers decide: a read the viewer may do.
    let a = ask(vec![
        ("x-forwarded-method", "GET"),
        ("x-forwarded-uri", "/api/v1/workspaces/ws_1/projects?x=1"),
    ])
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.header("x-hawzu-permission"), Some("projects:read"));
    // A client's X-Original-Method changes nothing on this endpoint.
    let a = ask(vec![
        ("x-forwarded-method", "POST"),
        ("x-forwarded-uri", "/api/v1/workspaces/ws_1/projects"),
        ("x-original-method", "GET"),
    ])
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(a.json()["error"], "insufficient_role");
    // A client's X-Original-URI is not read either, and refused: Traefik
    // would pass it to the API (a path override on headers.strip).
    let a = ask(vec![
        ("x-forwarded-method", "GET"),
        ("x-forwarded-uri", "/api/v1/workspaces/ws_1/projects"),
        ("x-original-uri", "/api/v1/workspaces/ws_2/projects"),
    ])
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.json()["error"], "path_override");
    let a = ask(vec![
        ("x-original-method", "GET"),
        ("x-original-uri", "/api/v1/workspaces/ws_1/projects"),
    ])
    .await;
    assert_eq!(
        a.status,
        StatusCode::BAD_REQUEST,
        "no Traefik headers, no guess"
    );
    assert_eq!(a.json()["error"], "missing_original");
    let message = a.json()["message"].as_str().unwrap_or_default().to_owned();
    assert!(
        message.contains("X-Forwarded-Uri") && message.contains("X-Original-URI"),
        "the answer names the headers each endpoint needs: {message}"
    );
    // And nginx's endpoint ignores Traefik's headers.
    let a = gate
        .auth()
        .request(Method::GET, "/auth/nginx")
        .token(&viewer)
        .header("x-forwarded-method", "GET")
        .header("x-forwarded-uri", WS1_PROJECTS)
        .go()
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.body.is_empty());
}

#[tokio::test]
async fn nginx_refuses_two_disagreeing_originals() {
    let gate = InProcessGate::embedded().await;
    let (_, viewer) = token(
        &gate,
        workspace_token("Viewer", "ws_1", "workspace_viewer", "1m"),
    )
    .await;
    let send = |url: &'static str, uri: &'static str| {
        let viewer = &viewer;
        let gate = &gate;
        async move {
            gate.auth()
                .request(Method::GET, "/auth/nginx")
                .token(viewer)
                .header("x-original-method", "GET")
                .header("x-original-url", url)
                .header("x-original-uri", uri)
                .go()
                .await
        }
    };
    let ok = send(
        "https://api.hawzu.example/api/v1/workspaces/ws_1/projects?q=1",
        WS1_PROJECTS,
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK);
    let bad = send(
        "https://api.hawzu.example/api/v1/workspaces/ws_1/projects",
        "/api/v1/workspaces/ws_2/projects",
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.header("x-hawzu-error"), Some("ambiguous_path"));
}

#[tokio::test]
async fn nginx_and_traefik_refuse_a_method_override_header_they_cannot_remove() {
    // /auth/nginx and /auth/traefik cannot take a header off the request
    // the proxy forwards: an X-HTTP-Method-Override the proxy's config does
    // not clear (ingress-nginx clears request headers only controller-wide)
    // would have Symfony or Laravel run a DELETE the gate judged as a GET.
    let gate = InProcessGate::embedded().await;
    let (_, viewer) = token(
        &gate,
        workspace_token("Viewer", "ws_1", "workspace_viewer", "1m"),
    )
    .await;
    for name in [
        "X-HTTP-Method-Override",
        "x_http_method",
        "X-Method-Override",
    ] {
        let a = gate
            .auth()
            .request(Method::GET, "/auth/nginx")
            .token(&viewer)
            .original("GET", WS1_PROJECTS)
            .header(name, "DELETE")
            .go()
            .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "nginx, {name}");
        assert_eq!(a.header("x-hawzu-error"), Some("method_override"), "{name}");
        let a = gate
            .auth()
            .request(Method::GET, "/auth/traefik")
            .token(&viewer)
            .header("x-forwarded-method", "GET")
            .header("x-forwarded-uri", WS1_PROJECTS)
            .header(name, "DELETE")
            .go()
            .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "traefik, {name}");
        assert_eq!(a.json()["error"], "method_override", "{name}");
    }
    // Not without one.
    let a = gate
        .auth()
        .request(Method::GET, "/auth/nginx")
        .token(&viewer)
        .original("GET", WS1_PROJECTS)
        .go()
        .await;
    assert_eq!(a.status, StatusCode::OK);
    // An operator whose API honours none takes them off headers.strip.
    let open = InProcessGate::start(&[("headers.strip", "")]).await;
    let (_, viewer) = token(
        &open,
        workspace_token("Viewer", "ws_1", "workspace_viewer", "1m"),
    )
    .await;
    let a = open
        .auth()
        .request(Method::GET, "/auth/nginx")
        .token(&viewer)
        .original("GET", WS1_PROJECTS)
        .header("X-HTTP-Method-Override", "DELETE")
        .go()
        .await;
    assert_eq!(a.status, StatusCode::OK);
}

#[tokio::test]
async fn envoy_http_names_the_client_headers_to_remove() {
    let gate = InProcessGate::embedded().await;
    let (_, ws) = token(
        &gate,
        workspace_token("Env", "ws_1", "workspace_viewer", "1m"),
    )
    .await;
    let a = gate
        .auth()
        .request(Method::GET, "/envoy/api/v1/workspaces/ws_1/projects?page=1")
        .token(&ws)
        .header("x-hawzu-role", "workspace_manager")
        .header("x-hawzu-project-id", "proj_z")
        .go()
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.header("x-hawzu-role"), Some("workspace_viewer"));
    let remove: Vec<&str> = a
        .header("x-envoy-auth-headers-to-remove")
        .unwrap()
        .split(',')
        .collect();
    // The client's project id is not set by this answer (workspace route),
    // so it is removed; the role is set (overwritten), so it is not.
    assert!(remove.contains(&"authorization"));
    assert!(remove.contains(&"x-hawzu-project-id"));
    assert!(!remove.contains(&"x-hawzu-role"), "{remove:?}");
    // The method is the original request's.
    let a = gate
        .auth()
        .request(Method::DELETE, "/envoy/api/v1/workspaces/ws_1/projects/p1")
        .token(&ws)
        .go()
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(a.json()["error"], "insufficient_role");
}

/// Every identity name the gate may set (default prefix).
const IDENTITY: [&str; 9] = [
    "x-hawzu-token-id",
    "x-hawzu-token-type",
    "x-hawzu-workspace-id",
    "x-hawzu-project-id",
    "x-hawzu-role",
    "x-hawzu-permission",
    "x-hawzu-token-expires",
    "x-hawzu-error",
    "x-hawzu-passed",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_doors_remove_every_identity_name_they_do_not_set_seen_or_not() {
    // Envoy shows an authorizer only the headers its config lets through
    // (HTTP ext_authz: Host, Method, Path, Content-Length, Authorization by
    // default; Envoy Gateway: headersToExtAuth). A client's X-Hawzu-Role
    // the gate never saw must still not reach the API: on a pass (no
    // identity) every identity name goes, on an allow every one not set.
    let gate = InProcessGate::start(&[("policy.other_credentials", "pass")]).await;
    let (_, ws) = token(
        &gate,
        workspace_token("Env", "ws_1", "workspace_viewer", "never"),
    )
    .await;
    let listed = |v: Option<&str>| -> Vec<String> {
        v.unwrap_or("")
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    };
    // HTTP, passed: another credential, nothing shown.
    let a = gate
        .auth()
        .request(Method::GET, "/envoy/api/v1/workspaces/ws_1/projects")
        .header("authorization", "Basic dXNlcjpwdw==")
        .go()
        .await;
    assert_eq!(a.status, StatusCode::OK);
    let remove = listed(a.header("x-envoy-auth-headers-to-remove"));
    for name in IDENTITY {
        assert!(
            remove.contains(&name.to_owned()),
            "pass: {name} in {remove:?}"
        );
    }
    assert!(!remove.contains(&"authorization".to_owned()), "its own");
    // HTTP, allowed (workspace token, never expires): the project id and
    // the expiry are not set, so they go too.
    let a = gate
        .auth()
        .request(Method::GET, "/envoy/api/v1/workspaces/ws_1/projects")
        .token(&ws)
        .go()
        .await;
    assert_eq!(a.status, StatusCode::OK);
    let remove = listed(a.header("x-envoy-auth-headers-to-remove"));
    for name in [
        "x-hawzu-project-id",
        "x-hawzu-token-expires",
        "x-hawzu-error",
        "x-hawzu-passed",
    ] {
        assert!(
            remove.contains(&name.to_owned()),
            "allow: {name} in {remove:?}"
        );
    }
    for name in ["x-hawzu-role", "x-hawzu-token-id", "x-hawzu-workspace-id"] {
        assert!(
            !remove.contains(&name.to_owned()),
            "set, not removed: {name}"
        );
    }

    // gRPC, the same.
    let mut client = AuthorizationClient::connect(format!("http://{}", gate.addrs.grpc))
        .await
        .unwrap();
    let res = client
        .check(check_request(
            "GET",
            WS1_PROJECTS,
            &[("authorization", "Basic dXNlcjpwdw==")],
        ))
        .await
        .unwrap()
        .into_inner();
    let Some(HttpResponse::OkResponse(ok)) = res.http_response else {
        panic!("an OkHttpResponse")
    };
    for name in IDENTITY {
        assert!(
            ok.headers_to_remove.contains(&name.to_owned()),
            "grpc pass: {name} in {:?}",
            ok.headers_to_remove
        );
    }
    let auth = format!("Bearer {ws}");
    let res = client
        .check(check_request(
            "GET",
            WS1_PROJECTS,
            &[("authorization", &auth)],
        ))
        .await
        .unwrap()
        .into_inner();
    let Some(HttpResponse::OkResponse(ok)) = res.http_response else {
        panic!("an OkHttpResponse")
    };
    for name in ["x-hawzu-project-id", "x-hawzu-token-expires"] {
        assert!(
            ok.headers_to_remove.contains(&name.to_owned()),
            "grpc allow: {name} in {:?}",
            ok.headers_to_remove
        );
    }
    for h in &ok.headers {
        let name = &h.header.as_ref().unwrap().key;
        assert!(
            !ok.headers_to_remove.contains(name),
            "{name} set and removed"
        );
    }
}

fn check_request(method: &str, path: &str, headers: &[(&str, &str)]) -> CheckRequest {
    let headers: HashMap<String, String> = headers
        .iter()
        .map(|(k, v)| ((*k).into(), (*v).into()))
        .collect();
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(AttrRequest {
                http: Some(HttpRequest {
                    method: method.into(),
                    path: path.into(),
                    headers,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_grpc_check_allows_with_headers_and_denies_with_status() {
    let gate = InProcessGate::embedded().await;
    let (_, p) = token(
        &gate,
        project_token("Grpc", "ws_1", &[("proj_a", "project_coordinator")], "1m"),
    )
    .await;
    let mut client = AuthorizationClient::connect(format!("http://{}", gate.addrs.grpc))
        .await
        .unwrap();

    let auth = format!("Bearer {p}");
    let res = client
        .check(check_request(
            "DELETE",
            "/api/v1/workspaces/ws_1/projects/proj_a/defects/d1?force=1",
            &[
                ("authorization", &auth),
                ("x-hawzu-role", "spoof"),
                ("x-hawzu-extra", "spoof"),
            ],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(res.status.as_ref().unwrap().code, 0, "OK");
    let Some(HttpResponse::OkResponse(ok)) = res.http_response else {
        panic!("an OkHttpResponse")
    };
    let set: HashMap<String, String> = ok
        .headers
        .iter()
        .map(|h| {
            let hv = h.header.as_ref().unwrap();
            (hv.key.clone(), hv.value.clone())
        })
        .collect();
    assert_eq!(set["x-hawzu-role"], "project_coordinator");
    assert_eq!(set["x-hawzu-project-id"], "proj_a");
    assert_eq!(set["x-hawzu-permission"], "defects:delete");
    // Overwrite, not append.
    assert!(
        ok.headers.iter().all(|h| h.append_action == 2),
        "OverwriteIfExistsOrAdd"
    );
    assert!(ok.headers_to_remove.contains(&"authorization".to_owned()));
    assert!(ok.headers_to_remove.contains(&"x-hawzu-extra".to_owned()));
    // Never remove what was just set: Envoy removes after setting.
    for name in set.keys() {
        assert!(
            !ok.headers_to_remove.contains(name),
            "{name} both set and removed"
        );
    }

    // Denied: the HTTP status, challenge, code and JSON body.
    let res = client
        .check(check_request(
            "GET",
            "/api/v1/workspaces/ws_1/projects/proj_b/defects",
            &[("authorization", &auth)],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(res.status.as_ref().unwrap().code, 7, "PERMISSION_DENIED");
    let Some(HttpResponse::DeniedResponse(denied)) = res.http_response else {
        panic!("a DeniedHttpResponse")
    };
    assert_eq!(denied.status.unwrap().code, 403);
    let headers: HashMap<String, String> = denied
        .headers
        .iter()
        .map(|h| {
            let hv = h.header.as_ref().unwrap();
            (hv.key.clone(), hv.value.clone())
        })
        .collect();
    assert_eq!(headers["x-hawzu-error"], "project_not_granted");
    assert_eq!(
        headers["www-authenticate"],
        r#"Bearer realm="hawzu", error="insufficient_scope""#
    );
    let body: Value = serde_json::from_str(&denied.body).unwrap();
    assert_eq!(body["error"], "project_not_granted");

    // No token: 401 with the bearer challenge.
    let res = client
        .check(check_request(
            "GET",
            "/api/v1/workspaces/ws_1/projects",
            &[],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(res.status.as_ref().unwrap().code, 16, "UNAUTHENTICATED");
    let Some(HttpResponse::DeniedResponse(denied)) = res.http_response else {
        panic!("a DeniedHttpResponse")
    };
    assert_eq!(denied.status.unwrap().code, 401);

    // A request id is kept only when sane, as at every door: 1–128
    // visible ASCII characters; else the gate makes one.
    for (sent, kept) in [
        ("envoy-7f3a", true),
        (&*"x".repeat(129), false),
        ("line\nbreak", false),
    ] {
        let res = client
            .check(check_request(
                "GET",
                "/api/v1/workspaces/ws_1/projects",
                &[("x-request-id", sent)],
            ))
            .await
            .unwrap()
            .into_inner();
        let Some(HttpResponse::DeniedResponse(denied)) = res.http_response else {
            panic!("a DeniedHttpResponse")
        };
        let id = denied
            .headers
            .iter()
            .filter_map(|h| h.header.as_ref())
            .find(|h| h.key == "x-request-id")
            .map(|h| h.value.clone())
            .unwrap();
        assert_eq!(id == sent, kept, "{sent:?} → {id:?}");
        assert!(kept || id.starts_with("hg-"), "{id}");
    }
}

/// The request path only notes a use; the store write is done later, in the
/// background. With Redis holding every write (`CLIENT PAUSE 3000 WRITE`:
/// reads are served, writes wait), allowed requests are still answered at
/// once — far inside the pause and the 10 s store timeout that a write on
/// the path would have to wait out — and the write lands after the pause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_used_at_is_written_off_the_request_path() {
    let redis = common::RedisServer::start();
    let gate = InProcessGate::start(&[
        ("store.backend", "redis"),
        ("store.redis.url", &redis.url()),
        ("store.redis.key_prefix", "usage:"),
        ("store.timeout", "10s"),
    ])
    .await;
    let (id, secret) = token(
        &gate,
        workspace_token("Used", "ws_1", "workspace_viewer", "1m"),
    )
    .await;
    let pause = common::redis_cli(redis.port, &["CLIENT", "PAUSE", "3000", "WRITE"]);
    assert_eq!(pause, "OK");
    let paused = std::time::Instant::now();
    // The first request reads the token (a read: served) and notes its use.
    for i in 0..20 {
        let start = std::time::Instant::now();
        let a = common::nginx_auth(&gate, &secret).await;
        assert_eq!(a.status, StatusCode::OK);
        assert!(
            start.elapsed() < std::time::Duration::from_secs(1),
            "request {i} took {:?}: it waited for a store write",
            start.elapsed()
        );
    }
    let answered = paused.elapsed();
    let used = common::eventually(
        "last_used_at to be written",
        std::time::Duration::from_secs(30),
        || async {
            let v = gate
                .admin()
                .get(&format!("/admin/v1/tokens/{id}"))
                .await
                .json();
            v["token"]["last_used_at"].as_str().map(str::to_owned)
        },
    )
    .await;
    let written = paused.elapsed();
    println!(
        "20 requests answered {answered:?} into the pause; written {written:?} after it began"
    );
    // Redis could not have taken the write before the pause ended.
    assert!(written >= std::time::Duration::from_secs(3), "{written:?}");
    let used: jiff::Timestamp = used.parse().unwrap();
    assert!(jiff::Timestamp::now().duration_since(used) < jiff::SignedDuration::from_secs(60));
}

/// Uses still pending when the gate stops are written on shutdown, and the
/// list shows `last_used_at` as `get` does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_used_at_is_written_by_shutdown_at_the_latest_and_listed() {
    let gate = InProcessGate::embedded().await;
    let (id, secret) = token(
        &gate,
        workspace_token("Used", "ws_1", "workspace_viewer", "1m"),
    )
    .await;
    let before = gate
        .admin()
        .get(&format!("/admin/v1/tokens/{id}"))
        .await
        .json();
    assert_eq!(before["token"]["last_used_at"], Value::Null);
    for _ in 0..50 {
        assert_eq!(
            common::nginx_auth(&gate, &secret).await.status,
            StatusCode::OK
        );
    }
    // Pending uses are written at the latest on shutdown.
    let dir = gate.shutdown().await;
    let gate = InProcessGate::start_in(dir, &[]).await;
    let after = gate
        .admin()
        .get(&format!("/admin/v1/tokens/{id}"))
        .await
        .json();
    let used: jiff::Timestamp = after["token"]["last_used_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(jiff::Timestamp::now().duration_since(used) < jiff::SignedDuration::from_secs(60));
    let listed = gate.admin().get("/admin/v1/tokens").await.json();
    assert_eq!(
        listed["tokens"][0]["last_used_at"],
        after["token"]["last_used_at"]
    );
}

#[tokio::test]
async fn explain_says_which_rule_role_and_permission_decided() {
    let gate = InProcessGate::embedded().await;
    let (id, _) = token(
        &gate,
        project_token(
            "Explain",
            "ws_1",
            &[("proj_a", "project_manager"), ("proj_b", "project_viewer")],
            "1m",
        ),
    )
    .await;
    let explain = |method: &str, path: &str| {
        let body = serde_json::json!({ "token_id": id, "method": method, "path": path });
        let gate = &gate;
        async move { gate.admin().post("/admin/v1/explain", body).await }
    };
    let v = explain("POST", "/api/v1/workspaces/ws_1/projects/proj_b/testcases")
        .await
        .json();
    assert_eq!(v["decision"], "deny");
    assert_eq!(v["code"], "insufficient_role");
    assert_eq!(v["status"], 403);
    assert_eq!(v["role"], "project_viewer");
    assert_eq!(v["rule"]["permission"], "testcases:write");
    assert_eq!(v["rule"]["origin"], "default");
    let steps = v["steps"].to_string();
    assert!(
        steps.contains("role project_viewer lacks testcases:write"),
        "{steps}"
    );

    let v = explain("GET", "/api/v1/workspaces/ws_1/projects/proj_a/testcases")
        .await
        .json();
    assert_eq!(v["decision"], "allow");
    assert_eq!(v["role"], "project_manager");
    assert_eq!(v["project"], "proj_a");
    assert_eq!(v["permission"], "testcases:read");

    let v = explain("GET", "/settings/access-tokens").await.json();
    assert_eq!(v["code"], "no_matching_rule");
    assert_eq!(v["rule"], Value::Null);

    // As at the doors: a method override in the query, a look-alike dot
    // segment.
    let v = explain(
        "POST",
        "/api/v1/workspaces/ws_1/projects/proj_a/testcases?_method=DELETE",
    )
    .await
    .json();
    assert_eq!(v["code"], "method_override");
    assert_eq!(v["status"], 400);
    let v = explain(
        "GET",
        "/api/v1/workspaces/ws_1/projects/proj_a/testcases/..%20/x",
    )
    .await
    .json();
    assert_eq!(v["code"], "ambiguous_path");
    assert!(
        v["steps"].to_string().contains("segment of dots alone"),
        "{v}"
    );

    let a = explain("get me", "nope").await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let fields = a.json()["fields"].clone();
    assert!(fields["method"].is_string() && fields["path"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_token_on_a_workspace_route_is_told_the_reason_explain_gives() {
    let gate = InProcessGate::embedded().await;
    let (id, p) = token(
        &gate,
        project_token("CI", "ws_1", &[("proj_a", "project_manager")], "1m"),
    )
    .await;
    let reason = "the route names no project, and a project token acts only inside its projects";
    let want = format!("The token's role does not allow this request: {reason}.");
    // The JSON doors: the code stays, the message carries the reason.
    let a = gate
        .auth()
        .request(Method::GET, "/auth/traefik")
        .header("x-forwarded-method", "GET")
        .header("x-forwarded-uri", WS1_PROJECTS)
        .token(&p)
        .go()
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(a.json()["error"], "insufficient_role");
    assert_eq!(a.json()["message"], want.as_str());
    let a = gate
        .auth()
        .request(Method::GET, &format!("/envoy{WS1_PROJECTS}"))
        .token(&p)
        .go()
        .await;
    assert_eq!(a.json()["message"], want.as_str());
    let a = gate
        .proxy()
        .request(Method::GET, WS1_PROJECTS)
        .token(&p)
        .go()
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(a.json()["message"], want.as_str());
    // A role that lacks the permission keeps the code's own message.
    let (_, viewer) = token(
        &gate,
        project_token("View", "ws_1", &[("proj_a", "project_viewer")], "1m"),
    )
    .await;
    let a = gate
        .auth()
        .request(
            Method::DELETE,
            &format!("/envoy{WS1_PROJECTS}/proj_a/testcases"),
        )
        .token(&viewer)
        .go()
        .await;
    assert_eq!(a.json()["error"], "insufficient_role");
    assert_eq!(
        a.json()["message"],
        "The token's role does not allow this request."
    );
    // …and explain gives the same reason.
    let v = gate
        .admin()
        .post(
            "/admin/v1/explain",
            serde_json::json!({"token_id": id, "method": "GET", "path": WS1_PROJECTS}),
        )
        .await
        .json();
    assert!(v["steps"].to_string().contains(reason), "{v}");
}
