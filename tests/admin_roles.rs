//! What a token can do, without guessing: `GET /admin/v1/roles` lists every
//! role (built-in and from config) with its permissions, for any
//! authenticated caller, and a token's show answer lists its permissions
//! per scope. And which ids it may name: a workspace or project id off
//! `policy.id_pattern` is refused at create, the pattern in the message.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use http::StatusCode;
use serde_json::Value;

use common::{Http, InProcessGate, create_token, project_token, workspace_token};

fn role<'a>(roles: &'a Value, name: &str) -> &'a Value {
    roles["roles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("{name} listed in {roles}"))
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn every_role_is_listed_with_its_permissions_for_any_authenticated_caller() {
    let gate = InProcessGate::start(&[
        ("roles.execution_runner", "executions:read,executions:write"),
        ("roles.token_admin", "tokens:manage"),
    ])
    .await;
    let a = gate.admin().get("/admin/v1/roles").await;
    assert_eq!(a.status, StatusCode::OK);
    let roles = a.json();
    let names: Vec<&str> = roles["roles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "workspace_viewer",
            "workspace_member",
            "workspace_coordinator",
            "workspace_manager",
            "project_viewer",
            "project_member",
            "project_coordinator",
            "project_manager",
            "execution_runner",
            "token_admin",
        ]
    );
    let viewer = role(&roles, "workspace_viewer");
    assert_eq!(viewer["scope"], "workspace");
    assert_eq!(viewer["builtin"], true);
    let perms = strings(&viewer["permissions"]);
    assert!(perms.contains(&"testcases:read") && !perms.contains(&"settings:read"));
    assert!(!perms.iter().any(|p| p.ends_with(":write")), "{perms:?}");
    assert_eq!(role(&roles, "project_manager")["scope"], "project");
    let runner = role(&roles, "execution_runner");
    assert_eq!(runner["scope"], "any");
    assert_eq!(runner["builtin"], false);
    assert_eq!(
        strings(&runner["permissions"]),
        ["executions:read", "executions:write"]
    );

    // A tokens:manage token may read it; no key, or a wrong one, may not.
    let (_, secret) = create_token(
        &gate,
        workspace_token("Token admin", "ws_1", "token_admin", "1w"),
    )
    .await;
    let base = format!("http://{}", gate.addrs.admin);
    let a = Http::new(base.clone())
        .bearer(&secret)
        .get("/admin/v1/roles")
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json(), roles);
    let a = Http::new(base.clone()).get("/admin/v1/roles").await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    let a = Http::new(base)
        .bearer("hwzadm_wrongwrongwrongwrongwrongwrongwrongwro")
        .get("/admin/v1/roles")
        .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn show_lists_the_permissions_of_each_scope() {
    let gate = InProcessGate::embedded().await;
    let (id, _) = create_token(
        &gate,
        project_token(
            "Two projects",
            "ws_1",
            &[("proj_a", "project_manager"), ("proj_b", "project_viewer")],
            "1w",
        ),
    )
    .await;
    let v = gate
        .admin()
        .get(&format!("/admin/v1/tokens/{id}"))
        .await
        .json();
    assert_eq!(v["token"]["id"], id.as_str());
    let scopes = v["permissions"].as_array().unwrap();
    assert_eq!(scopes.len(), 2, "{v}");
    assert_eq!(scopes[0]["scope"], "project");
    assert_eq!(scopes[0]["project_id"], "proj_a");
    assert_eq!(scopes[0]["role"], "project_manager");
    assert_eq!(scopes[0]["role_defined"], true);
    let a = strings(&scopes[0]["permissions"]);
    assert!(a.contains(&"testcases:delete") && a.contains(&"members:manage"));
    assert!(
        !a.iter()
            .any(|p| p.starts_with("tokens:") || p.starts_with("workspace:"))
    );
    assert_eq!(scopes[1]["project_id"], "proj_b");
    let b = strings(&scopes[1]["permissions"]);
    assert!(b.contains(&"testcases:read") && !b.contains(&"testcases:write"));

    let (id, _) = create_token(
        &gate,
        workspace_token("Member", "ws_1", "workspace_member", "1w"),
    )
    .await;
    let v = gate
        .admin()
        .get(&format!("/admin/v1/tokens/{id}"))
        .await
        .json();
    let scopes = v["permissions"].as_array().unwrap();
    assert_eq!(scopes.len(), 1);
    assert_eq!(scopes[0]["scope"], "workspace");
    assert_eq!(scopes[0]["project_id"], Value::Null);
    assert!(strings(&scopes[0]["permissions"]).contains(&"executions:write"));
}

#[tokio::test]
async fn an_id_off_the_pattern_is_refused_at_create_naming_field_and_pattern() {
    // The default pattern: the shape of the Hawzu API's ids.
    let gate = InProcessGate::embedded().await;
    for ws in ["_ws", "-ws", "ws.1", "ws 1"] {
        let a = gate
            .admin()
            .post(
                "/admin/v1/tokens",
                workspace_token("Odd", ws, "workspace_viewer", "1w"),
            )
            .await;
        assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{ws:?}");
        let why = a.json()["fields"]["workspace_id"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            why.contains("^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$") && why.contains("policy.id_pattern"),
            "{ws:?}: {why}"
        );
    }
    let a = gate
        .admin()
        .post(
            "/admin/v1/tokens",
            project_token(
                "Odd",
                "ws_1",
                &[("proj_a", "project_viewer"), ("_b", "project_viewer")],
                "1w",
            ),
        )
        .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
    let fields = a.json()["fields"].clone();
    assert!(
        fields.get("scope.projects[0].project_id").is_none(),
        "{fields}"
    );
    assert!(
        fields["scope.projects[1].project_id"]
            .as_str()
            .unwrap()
            .contains("id pattern"),
        "{fields}"
    );

    // A configured pattern: only ids of that shape.
    let gate = InProcessGate::start(&[("policy.id_pattern", "ws_[0-9]+|proj_[a-z]+")]).await;
    let a = gate
        .admin()
        .post(
            "/admin/v1/tokens",
            workspace_token("Acme", "acme", "workspace_viewer", "1w"),
        )
        .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        a.json()["fields"]["workspace_id"]
            .as_str()
            .unwrap()
            .contains("`ws_[0-9]+|proj_[a-z]+`"),
    );
    // Anchored: a prefix that matches is not enough.
    let a = gate
        .admin()
        .post(
            "/admin/v1/tokens",
            workspace_token("Prefix", "ws_1x", "workspace_viewer", "1w"),
        )
        .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
    create_token(
        &gate,
        project_token("Fine", "ws_7", &[("proj_abc", "project_viewer")], "1w"),
    )
    .await;
}
