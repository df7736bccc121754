//! The admin API and `/auth/nginx` on real sockets, against both stores:
//! the token lifecycle, the one-time secret, admin-key and delegated
//! (tokens:manage) authentication, escalation attempts, validation and
//! pagination.
//!
//! Over 500 lines on purpose: the admin API's contract, one endpoint after
//! another.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::time::{Duration, Instant};

use hawzu_gate::store::{RedisStore, TokenStore, redis::RedisOptions};
use hawzu_gate::token::record::RECORD_VERSION;
use hawzu_gate::token::{Scope, TokenId, TokenRecord, TokenSecret};
use http::{Method, StatusCode};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use common::{Answer, InProcessGate, nginx_auth, project_token, workspace_token};

async fn create(gate: &InProcessGate, body: Value) -> (Value, String) {
    let a = gate.admin().post("/admin/v1/tokens", body).await;
    assert_eq!(
        a.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    let v = a.json();
    (v["token"].clone(), v["secret"].as_str().unwrap().to_owned())
}

fn assert_denied(a: &Answer, code: &str) {
    assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{code}");
    assert_eq!(a.header("x-hawzu-error"), Some(code));
    let challenge = a.header("www-authenticate").unwrap();
    assert!(
        challenge.starts_with("Bearer realm=\"hawzu\""),
        "{challenge}"
    );
    if code != "missing_token" {
        assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    }
    assert!(a.body.is_empty(), "/auth/nginx answers carry no body");
    assert_eq!(a.header("content-length"), Some("0"));
}

fn assert_no_secret(a: &Answer, secret: &str) {
    let text = String::from_utf8_lossy(&a.body);
    assert!(!text.contains(&secret[4..]), "secret leaked in: {text}");
    for v in a.headers.values() {
        assert!(!v.to_str().unwrap_or("").contains(&secret[4..]));
    }
}

async fn lifecycle(gate: InProcessGate) {
    let (token, secret) = create(
        &gate,
        workspace_token("CI Runner", "ws_1", "workspace_member", "1m"),
    )
    .await;
    let id = token["id"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("hwz_") && secret.len() == 40);
    assert!(TokenSecret::parse(&secret).is_ok());
    assert_eq!(token["state"], "enabled");
    assert_eq!(token["name"], "CI Runner");
    assert_eq!(
        token["scope"],
        json!({ "type": "workspace", "role": "workspace_member" })
    );
    assert!(token.get("v").is_none());

    // Works at once.
    let a = nginx_auth(&gate, &secret).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.header("x-hawzu-token-id"), Some(id.as_str()));
    assert_eq!(a.header("x-hawzu-token-type"), Some("workspace"));
    assert_eq!(a.header("x-hawzu-workspace-id"), Some("ws_1"));
    assert!(a.body.is_empty());

    // The secret is in no other answer.
    let admin = gate.admin();
    let show = admin.get(&format!("/admin/v1/tokens/{id}")).await;
    assert_eq!(show.status, StatusCode::OK);
    assert_eq!(show.json()["token"]["id"], id.as_str());
    assert_no_secret(&show, &secret);
    let list = admin.get("/admin/v1/tokens?workspace=ws_1").await;
    assert_no_secret(&list, &secret);

    // Disable → refused; enable → accepted again.
    let d = admin
        .post_empty(&format!("/admin/v1/tokens/{id}/disable"))
        .await;
    assert_eq!(d.status, StatusCode::OK);
    assert_eq!(d.json()["token"]["state"], "disabled");
    assert_no_secret(&d, &secret);
    assert_denied(&nginx_auth(&gate, &secret).await, "token_disabled");
    // Disabling twice is harmless.
    assert_eq!(
        admin
            .post_empty(&format!("/admin/v1/tokens/{id}/disable"))
            .await
            .status,
        StatusCode::OK
    );
    let e = admin
        .post_empty(&format!("/admin/v1/tokens/{id}/enable"))
        .await;
    assert_eq!(e.json()["token"]["state"], "enabled");
    assert_eq!(nginx_auth(&gate, &secret).await.status, StatusCode::OK);

    // Rotate: new secret, same settings, old one refused at once.
    let r = admin
        .post_empty(&format!("/admin/v1/tokens/{id}/rotate"))
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let rv = r.json();
    let new_secret = rv["secret"].as_str().unwrap().to_owned();
    let new = &rv["token"];
    assert_ne!(new_secret, secret);
    assert_ne!(new["id"], id.as_str());
    assert_eq!(new["rotated_from"], id.as_str());
    for f in ["name", "workspace_id", "scope", "expires_at"] {
        assert_eq!(new[f], token[f], "{f} kept");
    }
    assert_denied(&nginx_auth(&gate, &secret).await, "token_revoked");
    assert_eq!(nginx_auth(&gate, &new_secret).await.status, StatusCode::OK);
    let old = admin.get(&format!("/admin/v1/tokens/{id}")).await.json();
    assert_eq!(old["token"]["state"], "revoked");
    // A revoked token cannot be rotated, enabled or disabled.
    for path in ["rotate", "enable", "disable"] {
        let a = admin
            .post_empty(&format!("/admin/v1/tokens/{id}/{path}"))
            .await;
        assert_eq!(a.status, StatusCode::CONFLICT, "{path}");
        assert_eq!(a.json()["error"], "token_revoked");
    }

    // Revoke: permanent, reported as revoked (tombstone), not unknown.
    let new_id = new["id"].as_str().unwrap();
    let rv = admin.delete(&format!("/admin/v1/tokens/{new_id}")).await;
    assert_eq!(rv.status, StatusCode::OK);
    assert_eq!(rv.json()["token"]["state"], "revoked");
    assert_no_secret(&rv, &new_secret);
    assert_denied(&nginx_auth(&gate, &new_secret).await, "token_revoked");
    assert_eq!(
        admin
            .delete(&format!("/admin/v1/tokens/{new_id}"))
            .await
            .status,
        StatusCode::OK
    );

    // Unknown, malformed, missing.
    let unknown = TokenSecret::generate().unwrap();
    assert_denied(&nginx_auth(&gate, unknown.expose()).await, "unknown_token");
    let mut typo = secret.clone().into_bytes();
    typo[10] = if typo[10] == b'a' { b'b' } else { b'a' };
    assert_denied(
        &nginx_auth(&gate, std::str::from_utf8(&typo).unwrap()).await,
        "malformed_token",
    );
    let none = gate
        .auth()
        .send(
            Method::GET,
            "/auth/nginx",
            &[
                ("x-original-method", "GET"),
                ("x-original-uri", common::WS1_PROJECTS),
            ],
            None,
        )
        .await;
    assert_denied(&none, "missing_token");
    assert_eq!(
        none.header("www-authenticate"),
        Some("Bearer realm=\"hawzu\"")
    );
    let two = gate
        .auth()
        .request(Method::GET, "/auth/nginx")
        .token(&new_secret)
        .header("authorization", "Bearer x")
        .original("GET", common::WS1_PROJECTS)
        .go()
        .await;
    assert_denied(&two, "malformed_token");
}

#[tokio::test]
async fn token_lifecycle_on_the_embedded_store() {
    lifecycle(InProcessGate::embedded().await).await;
}

#[tokio::test]
async fn token_lifecycle_on_redis() {
    lifecycle(InProcessGate::redis("lifecycle").await).await;
}

#[tokio::test]
async fn a_token_expires_at_the_exact_instant() {
    let gate = InProcessGate::redis("expiry").await;
    let s = &gate.loaded.settings.store;
    // Write a record that expires in 1 s straight into the gate's Redis.
    let store = RedisStore::new(RedisOptions {
        url: s.redis.url.clone(),
        key_prefix: s.redis.key_prefix.clone(),
        timeout: Duration::from_secs(1),
        retention: s.retention.0,
    })
    .unwrap();
    let secret = TokenSecret::generate().unwrap();
    let expires_at = Timestamp::now() + SignedDuration::from_secs(1);
    let record = TokenRecord {
        v: RECORD_VERSION,
        id: TokenId::generate().unwrap(),
        name: "short".into(),
        workspace_id: "ws_1".into(),
        scope: Scope::Workspace {
            role: "workspace_viewer".into(),
        },
        created_by: "tests".into(),
        created_at: Timestamp::now(),
        expires_at: Some(expires_at),
        disabled_at: None,
        disabled_by: None,
        revoked_at: None,
        revoked_by: None,
        last_used_at: None,
        rotated_from: None,
        description: None,
        rotated_to: None,
        allow_from: Vec::new(),
        not_before: None,
        limits_by: None,
    };
    store.create(&secret.hash(), &record).await.unwrap();
    // Ask until a request is sent after the instant. No tolerance: an
    // answer received before `expires_at` must be an allow, and a request
    // sent at or after it must be refused (the gate reads the clock per
    // request; this test shares it).
    let mut samples = Vec::new();
    loop {
        let sent = Timestamp::now();
        let a = nginx_auth(&gate, secret.expose()).await;
        let received = Timestamp::now();
        let after = sent >= expires_at;
        samples.push((sent, received, a));
        if after {
            break;
        }
        assert!(
            received < expires_at + SignedDuration::from_secs(5),
            "never sent a request after the instant"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut allowed_before = 0;
    for (sent, received, a) in &samples {
        if *received < expires_at {
            assert_eq!(
                a.status,
                StatusCode::OK,
                "refused before the instant: sent {sent}, expires {expires_at}"
            );
            allowed_before += 1;
        }
        if *sent >= expires_at {
            assert_denied(a, "token_expired");
        }
    }
    assert!(allowed_before > 0, "no answer came before the instant");
    let listed = gate
        .admin()
        .get(&format!("/admin/v1/tokens/{}", record.id))
        .await
        .json();
    assert_eq!(listed["token"]["state"], "expired");
}

#[tokio::test]
async fn admin_key_is_required_and_checked() {
    let gate = InProcessGate::embedded().await;
    let base = format!("http://{}", gate.addrs.admin);
    let a = common::Http::new(base.clone())
        .get("/admin/v1/tokens")
        .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(a.json()["error"], "unauthorized");
    assert_eq!(
        a.json()["message"],
        "Send the admin key as `Authorization: Bearer <key>`.",
        "the hint reaches the user whole (redaction leaves a placeholder alone)"
    );
    assert!(a.header("www-authenticate").unwrap().starts_with("Bearer"));
    let wrong = common::Http::new(base.clone()).bearer(&format!("{}x", gate.admin_key));
    assert_eq!(
        wrong.get("/admin/v1/tokens").await.status,
        StatusCode::UNAUTHORIZED
    );
    let basic = common::Http::new(base.clone())
        .send(
            Method::GET,
            "/admin/v1/tokens",
            &[("authorization", "Basic YWRtaW46YWRtaW4=")],
            None,
        )
        .await;
    assert_eq!(basic.status, StatusCode::UNAUTHORIZED);
    // Scheme is case-insensitive.
    let lower = common::Http::new(base)
        .send(
            Method::GET,
            "/admin/v1/tokens",
            &[("authorization", &format!("bearer {}", gate.admin_key))],
            None,
        )
        .await;
    assert_eq!(lower.status, StatusCode::OK);
    // The generated key file is private.
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(gate.loaded.settings.data_dir.join("admin.key")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
}

#[tokio::test]
async fn a_workspace_token_with_tokens_manage_manages_only_its_workspace() {
    let gate = InProcessGate::embedded().await;
    let (_, manager) = create(
        &gate,
        workspace_token("Admin tooling", "ws_a", "workspace_manager", "1y"),
    )
    .await;
    let (other, _) = create(
        &gate,
        workspace_token("Other", "ws_b", "workspace_viewer", "1w"),
    )
    .await;
    let as_manager = common::Http::new(format!("http://{}", gate.addrs.admin)).bearer(&manager);

    // Own workspace: allowed, and created_by names the token.
    let a = as_manager
        .post(
            "/admin/v1/tokens",
            workspace_token("Nightly", "ws_a", "workspace_member", "1m"),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED);
    let created_by = a.json()["token"]["created_by"].as_str().unwrap().to_owned();
    assert!(created_by.starts_with("token:tok_"), "{created_by}");

    // Another workspace: refused.
    let a = as_manager
        .post(
            "/admin/v1/tokens",
            workspace_token("Sneaky", "ws_b", "workspace_viewer", "1m"),
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(a.json()["error"], "forbidden");
    let a = as_manager.get("/admin/v1/tokens?workspace=ws_b").await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    // Other workspaces' tokens are invisible.
    let other_id = other["id"].as_str().unwrap();
    assert_eq!(
        as_manager
            .get(&format!("/admin/v1/tokens/{other_id}"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        as_manager
            .post_empty(&format!("/admin/v1/tokens/{other_id}/disable"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        as_manager
            .delete(&format!("/admin/v1/tokens/{other_id}"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    // A list without a workspace shows its own workspace only.
    let listed = as_manager.get("/admin/v1/tokens").await.json();
    let tokens = listed["tokens"].as_array().unwrap();
    assert!(!tokens.is_empty());
    assert!(tokens.iter().all(|t| t["workspace_id"] == "ws_a"));

    // Roles without tokens:manage, and project tokens, cannot use the API.
    let (_, member) = create(
        &gate,
        workspace_token("Member", "ws_a", "workspace_member", "1w"),
    )
    .await;
    let a = common::Http::new(format!("http://{}", gate.addrs.admin))
        .bearer(&member)
        .get("/admin/v1/tokens")
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let (_, project) = create(
        &gate,
        project_token("Proj", "ws_a", &[("p1", "project_manager")], "1w"),
    )
    .await;
    let a = common::Http::new(format!("http://{}", gate.addrs.admin))
        .bearer(&project)
        .get("/admin/v1/tokens")
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    // A disabled manager token loses its access at once.
    let listed = gate
        .admin()
        .get("/admin/v1/tokens?workspace=ws_a")
        .await
        .json();
    let manager_id = listed["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "Admin tooling")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    gate.admin()
        .post_empty(&format!("/admin/v1/tokens/{manager_id}/disable"))
        .await;
    let a = as_manager.get("/admin/v1/tokens").await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert!(a.json()["message"].as_str().unwrap().contains("disabled"));
}

#[tokio::test]
async fn a_token_cannot_create_a_token_above_its_own_role() {
    let gate = InProcessGate::start(&[(
        "roles.token_admin",
        "tokens:manage,testcases:read,testcases:write",
    )])
    .await;
    let (_, admin_token) = create(
        &gate,
        workspace_token("Token admin", "ws_a", "token_admin", "1y"),
    )
    .await;
    let api = common::Http::new(format!("http://{}", gate.addrs.admin)).bearer(&admin_token);

    // Escalation attempts: a broader workspace role, a manager, project roles.
    for body in [
        workspace_token("Escalate", "ws_a", "workspace_member", "1w"),
        workspace_token("Escalate", "ws_a", "workspace_manager", "1w"),
        project_token("Escalate", "ws_a", &[("p1", "project_viewer")], "1w"),
    ] {
        let a = api.post("/admin/v1/tokens", body).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN);
        let msg = a.json()["message"].as_str().unwrap().to_owned();
        assert!(msg.contains("above its own role"), "{msg}");
    }
    // Equal to its own role: allowed.
    let a = api
        .post(
            "/admin/v1/tokens",
            workspace_token("Same", "ws_a", "token_admin", "1w"),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED);
}

#[tokio::test]
async fn invalid_create_requests_get_field_errors() {
    let gate = InProcessGate::embedded().await;
    let admin = gate.admin();
    let a = admin
        .post(
            "/admin/v1/tokens",
            json!({
                "name": "  ",
                "workspace_id": "ws 1",
                "scope": { "type": "project", "projects": [
                    { "project_id": "p1", "role": "workspace_viewer" },
                    { "project_id": "p1", "role": "project_viewer" }
                ]},
                "expires": "2020-01-01",
            }),
        )
        .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
    let v = a.json();
    assert_eq!(v["error"], "validation_failed");
    let fields = v["fields"].as_object().unwrap();
    for f in [
        "name",
        "workspace_id",
        "scope.projects[0].role",
        "scope.projects[1].project_id",
        "expires",
    ] {
        assert!(fields.contains_key(f), "{f}: {v}");
    }
    let a = admin
        .post("/admin/v1/tokens", json!({ "name": "x", "color": "red" }))
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(
        a.json()["message"]
            .as_str()
            .unwrap()
            .contains("unknown field `color`")
    );
    let a = admin
        .send(
            Method::POST,
            "/admin/v1/tokens",
            &[("content-type", "application/json")],
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let big = json!({ "name": "x".repeat(70_000) });
    assert_eq!(
        admin.post("/admin/v1/tokens", big).await.status,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    // Nothing was created by any of these.
    assert_eq!(
        admin.get("/admin/v1/tokens").await.json()["tokens"],
        json!([])
    );
}

#[tokio::test]
async fn routes_ids_and_methods_are_checked() {
    let gate = InProcessGate::embedded().await;
    let admin = gate.admin();
    let a = admin.get("/admin/v1/tokens/tok_0000000000000000").await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(a.json()["error"], "not_found");
    let a = admin.get("/admin/v1/tokens/not-an-id").await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.json()["fields"]["id"].as_str().unwrap().contains("tok_"));
    let a = admin.send(Method::PUT, "/admin/v1/tokens", &[], None).await;
    assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(a.header("allow"), Some("POST, GET"));
    assert_eq!(admin.get("/nope").await.status, StatusCode::NOT_FOUND);
    let a = admin
        .get("/admin/v1/tokens?state=sleeping&limit=0&colour=red")
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let fields = a.json()["fields"].clone();
    assert!(
        fields["state"]
            .as_str()
            .unwrap()
            .contains("enabled, disabled, expired or revoked")
    );
    assert!(fields["limit"].as_str().unwrap().contains("1 to 500"));
    assert!(fields["colour"].is_string());
}

/// Methods the router does not name are refused before any key is looked
/// at, HEAD included (a GET route does not answer it).
#[tokio::test]
async fn unnamed_methods_are_refused_before_the_key_is_checked() {
    let gate = InProcessGate::embedded().await;
    let anonymous = common::Http::new(format!("http://{}", gate.addrs.admin));
    for (method, path, allow) in [
        (Method::HEAD, "/admin/v1/tokens", "POST, GET"),
        (Method::PUT, "/admin/v1/tokens", "POST, GET"),
        (
            Method::PUT,
            "/admin/v1/tokens/tok_0000000000000000",
            "GET, PATCH, DELETE",
        ),
        (
            Method::GET,
            "/admin/v1/tokens/tok_0000000000000000/rotate",
            "POST",
        ),
        (Method::OPTIONS, "/admin/v1/explain", "POST"),
    ] {
        let a = anonymous.send(method.clone(), path, &[], None).await;
        assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert_eq!(a.header("allow"), Some(allow), "{method} {path}");
    }
    assert_eq!(
        anonymous.get("/admin/v1/tokenz").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        anonymous.get("/admin/v1/tokens").await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn listing_filters_and_pages_through_the_api() {
    let gate = InProcessGate::redis("api_list").await;
    let mut ids = Vec::new();
    for i in 0..7 {
        let (t, _) = create(
            &gate,
            workspace_token(&format!("t{i}"), "ws_list", "workspace_viewer", "never"),
        )
        .await;
        ids.push(t["id"].as_str().unwrap().to_owned());
    }
    let (p, _) = create(
        &gate,
        project_token("proj", "ws_list", &[("p1", "project_member")], "1y"),
    )
    .await;
    let disabled = ids[0].clone();
    gate.admin()
        .post_empty(&format!("/admin/v1/tokens/{disabled}/disable"))
        .await;

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => {
                format!("/admin/v1/tokens?workspace=ws_list&type=workspace&limit=3&cursor={c}")
            }
            None => "/admin/v1/tokens?workspace=ws_list&type=workspace&limit=3".to_owned(),
        };
        let v = gate.admin().get(&q).await.json();
        for t in v["tokens"].as_array().unwrap() {
            assert_eq!(t["scope"]["type"], "workspace");
            seen.push((
                t["created_at"]
                    .as_str()
                    .unwrap()
                    .parse::<Timestamp>()
                    .unwrap(),
                t["id"].as_str().unwrap().to_owned(),
            ));
        }
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    // Newest first (tokens made in the same millisecond tie-break by id),
    // each exactly once.
    assert!(
        seen.windows(2).all(|w| w[0].0 >= w[1].0),
        "newest first: {seen:?}"
    );
    let mut got: Vec<String> = seen.into_iter().map(|(_, id)| id).collect();
    got.sort();
    ids.sort();
    assert_eq!(got, ids);
    let v = gate
        .admin()
        .get("/admin/v1/tokens?workspace=ws_list&state=disabled")
        .await
        .json();
    assert_eq!(v["tokens"].as_array().unwrap().len(), 1);
    assert_eq!(v["tokens"][0]["id"], disabled.as_str());
    let v = gate
        .admin()
        .get("/admin/v1/tokens?workspace=ws_list&type=project")
        .await
        .json();
    assert_eq!(v["tokens"][0]["id"], p["id"]);
}

#[tokio::test]
async fn the_store_being_away_fails_closed_with_503() {
    // A Redis that is not there: nothing is allowed, and the answer is prompt.
    let port = common::free_port();
    let gate = InProcessGate::start(&[
        ("store.backend", "redis"),
        ("store.redis.url", &format!("redis://127.0.0.1:{port}")),
    ])
    .await;
    let secret = TokenSecret::generate().unwrap();
    let start = Instant::now();
    let a = nginx_auth(&gate, secret.expose()).await;
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "took {:?}",
        start.elapsed()
    );
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(a.header("x-hawzu-error"), Some("store_unavailable"));
    assert_eq!(a.header("retry-after"), Some("1"));
    let a = gate
        .admin()
        .post(
            "/admin/v1/tokens",
            workspace_token("x", "ws", "workspace_viewer", "1w"),
        )
        .await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(a.json()["error"], "store_unavailable");
}

#[tokio::test]
async fn the_embedded_gate_keeps_tokens_across_a_restart() {
    let gate = InProcessGate::embedded().await;
    let (_, secret) = create(
        &gate,
        workspace_token("Keeps", "ws_1", "workspace_viewer", "1y"),
    )
    .await;
    let dir = gate.shutdown().await;
    let gate = InProcessGate::start_in(dir, &[]).await;
    assert_eq!(nginx_auth(&gate, &secret).await.status, StatusCode::OK);
}
