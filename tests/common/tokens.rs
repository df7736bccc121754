//! Token fixtures: create bodies for workspace and project tokens, and
//! creating them through a gate's admin API. Never writes to a store
//! directly (see `store`).

use std::time::Duration;

use http::StatusCode;

use super::{Http, InProcessGate, eventually};

/// Creates a token through `gate`'s admin API: its (id, secret).
pub async fn create_token(gate: &InProcessGate, body: serde_json::Value) -> (String, String) {
    let v = gate.admin().post("/admin/v1/tokens", body).await.json();
    (
        v["token"]["id"].as_str().unwrap().to_owned(),
        v["secret"].as_str().unwrap().to_owned(),
    )
}

/// A create body for a workspace token.
pub fn workspace_token(name: &str, ws: &str, role: &str, expires: &str) -> serde_json::Value {
    serde_json::json!({
        "name": name,
        "workspace_id": ws,
        "scope": { "type": "workspace", "role": role },
        "expires": expires,
    })
}

/// A create body for a project token.
pub fn project_token(
    name: &str,
    ws: &str,
    grants: &[(&str, &str)],
    expires: &str,
) -> serde_json::Value {
    let projects: Vec<_> = grants
        .iter()
        .map(|(p, r)| serde_json::json!({ "project_id": p, "role": r }))
        .collect();
    serde_json::json!({
        "name": name,
        "workspace_id": ws,
        "scope": { "type": "project", "projects": projects },
        "expires": expires,
    })
}

/// Whether `ws_1`'s token list on `gate` shows `id`.
pub async fn listed(gate: &InProcessGate, id: &str) -> bool {
    gate.admin()
        .get("/admin/v1/tokens?workspace=ws_1")
        .await
        .json()["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["id"] == id)
}

/// Creates `n` workspace tokens (viewer of `ws_1`) through the admin API,
/// trying again on 503 within 20 s; their secrets and ids.
pub async fn create_tokens(admin: &Http, n: usize, expires: &str) -> Vec<(String, String)> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        // Set-up: a busy machine can make a just-started Redis miss the
        // request-path timeout (503); try again, within a deadline. A try
        // that timed out may still have been written: one unused token.
        let body = workspace_token(&format!("load {i}"), "ws_1", "workspace_viewer", expires);
        let created = eventually("a token to be created", Duration::from_secs(20), || async {
            let r = admin.post("/admin/v1/tokens", body.clone()).await;
            (r.status != StatusCode::SERVICE_UNAVAILABLE).then_some(r)
        })
        .await;
        assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
        let v = created.json();
        out.push((
            v["secret"].as_str().unwrap().to_owned(),
            v["token"]["id"].as_str().unwrap().to_owned(),
        ));
    }
    out
}
