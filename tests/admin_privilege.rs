//! Privilege and integrity of the admin plane (issue 10, items 1–3): a
//! `tokens:manage` caller never acts on a token above its own permissions,
//! a disable by the admin key is undone only by the admin key, and every
//! read-check-write (rotate above all) is one atomic step in both stores and
//! across gates.
//!
//! Over 500 lines on purpose: one table (action × caller × target role) and
//! the cases around it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::collections::BTreeSet;

use http::StatusCode;
use serde_json::{Value, json};

use common::{Answer, Http, InProcessGate, create_token, project_token, workspace_token};

/// `token_admin` holds `tokens:manage` and nothing else (the issue's role).
const TOKEN_ADMIN: (&str, &str) = ("roles.token_admin", "tokens:manage");

/// Every admin action on an existing token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Show,
    Disable,
    Enable,
    Revoke,
    Rotate,
    Explain,
}

const ACTIONS: [Action; 6] = [
    Action::Show,
    Action::Disable,
    Action::Enable,
    Action::Revoke,
    Action::Rotate,
    Action::Explain,
];

impl Action {
    async fn run(self, api: &Http, id: &str) -> Answer {
        match self {
            Action::Show => api.get(&format!("/admin/v1/tokens/{id}")).await,
            Action::Disable => {
                api.post_empty(&format!("/admin/v1/tokens/{id}/disable"))
                    .await
            }
            Action::Enable => {
                api.post_empty(&format!("/admin/v1/tokens/{id}/enable"))
                    .await
            }
            Action::Revoke => api.delete(&format!("/admin/v1/tokens/{id}")).await,
            Action::Rotate => {
                api.post_empty(&format!("/admin/v1/tokens/{id}/rotate"))
                    .await
            }
            Action::Explain => {
                api.post(
                    "/admin/v1/explain",
                    json!({
                        "token_id": id,
                        "method": "GET",
                        "path": "/api/v1/workspaces/ws_a/projects",
                    }),
                )
                .await
            }
        }
    }

    /// The status of a successful run.
    fn ok(self) -> StatusCode {
        match self {
            Action::Rotate => StatusCode::CREATED,
            _ => StatusCode::OK,
        }
    }
}

/// A create body for each target kind, all in workspace `ws_a`.
fn target_body(kind: &str) -> Value {
    match kind {
        "project_manager" => project_token("Target", "ws_a", &[("p1", "project_manager")], "1m"),
        role => workspace_token("Target", "ws_a", role, "1m"),
    }
}

/// Whether `secret` authenticates at `/auth/nginx` (allowed, or refused only
/// for what its role may do: never 401).
async fn authenticates(gate: &InProcessGate, secret: &str) -> bool {
    let a = common::nginx_check(gate, secret, "GET", "/api/v1/workspaces/ws_a/projects").await;
    assert!(
        a.status == StatusCode::OK
            || a.status == StatusCode::FORBIDDEN
            || a.status == StatusCode::UNAUTHORIZED,
        "{}",
        a.status
    );
    a.status != StatusCode::UNAUTHORIZED
}

/// The state of token `id` as the admin key sees it.
async fn state_of(gate: &InProcessGate, id: &str) -> Value {
    gate.admin()
        .get(&format!("/admin/v1/tokens/{id}"))
        .await
        .json()["token"]
        .clone()
}

/// Ids of the tokens in `ws_a` whose `rotated_from` is `id`.
async fn successors_of(gate: &InProcessGate, id: &str) -> Vec<String> {
    let listed = gate
        .admin()
        .get("/admin/v1/tokens?workspace=ws_a&limit=500")
        .await
        .json();
    listed["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["rotated_from"] == id)
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn every_action_on_an_existing_token_checks_the_caller_against_the_target() {
    let gate = InProcessGate::start(&[TOKEN_ADMIN]).await;
    let admin_url = format!("http://{}", gate.addrs.admin);
    // The callers: the admin key, and two token callers of workspace ws_a.
    let (_, manager) = create_token(
        &gate,
        workspace_token("Manager caller", "ws_a", "workspace_manager", "1y"),
    )
    .await;
    let (_, token_admin) = create_token(
        &gate,
        workspace_token("Token-admin caller", "ws_a", "token_admin", "1y"),
    )
    .await;
    let callers: [(&str, Http); 3] = [
        ("admin key", gate.admin()),
        (
            "workspace_manager",
            Http::new(admin_url.clone()).bearer(&manager),
        ),
        (
            "token_admin",
            Http::new(admin_url.clone()).bearer(&token_admin),
        ),
    ];
    // Which targets each caller may act on: the admin key on all; a token
    // caller on those whose permissions are a subset of its own.
    let targets = [
        "workspace_manager",
        "workspace_viewer",
        "token_admin",
        "project_manager",
    ];
    let allowed = |caller: &str, target: &str| match caller {
        "admin key" | "workspace_manager" => true,
        _ => target == "token_admin",
    };

    let mut failures = Vec::new();
    for action in ACTIONS {
        for (caller, api) in &callers {
            for target in targets {
                let (id, secret) = create_token(&gate, target_body(target)).await;
                if action == Action::Enable {
                    // Disabled by a token caller that may: a disable by the
                    // admin key has its own rule (tested below).
                    let a = Action::Disable.run(&callers[1].1, &id).await;
                    assert_eq!(a.status, StatusCode::OK);
                }
                let before = state_of(&gate, &id).await;
                let a = action.run(api, &id).await;
                let want = if allowed(caller, target) {
                    action.ok()
                } else {
                    StatusCode::FORBIDDEN
                };
                if a.status != want {
                    failures.push(format!(
                        "{action:?} by {caller} on a {target} token: {} (want {want}) {}",
                        a.status,
                        String::from_utf8_lossy(&a.body)
                    ));
                    continue;
                }
                if want == StatusCode::FORBIDDEN {
                    let body = a.json();
                    assert_eq!(body["error"], "forbidden", "{body}");
                    let message = body["message"].as_str().unwrap();
                    assert!(message.contains("above its own"), "{message}");
                    // Nothing of the target was shown, nothing changed, no
                    // successor was made, and its secret still works.
                    assert!(body.get("token").is_none(), "{body}");
                    assert!(body.get("secret").is_none(), "{body}");
                    assert_eq!(state_of(&gate, &id).await, before, "{action:?} changed it");
                    assert!(successors_of(&gate, &id).await.is_empty());
                    if action != Action::Enable {
                        assert!(
                            authenticates(&gate, &secret).await,
                            "{action:?} on {target}"
                        );
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn a_tokens_manage_token_cannot_rotate_a_manager_token_into_its_own_hands() {
    // The issue's reproduction, step by step.
    let gate = InProcessGate::start(&[TOKEN_ADMIN]).await;
    let (manager_id, manager_secret) = create_token(
        &gate,
        workspace_token("Manager", "ws_a", "workspace_manager", "1y"),
    )
    .await;
    let (_, token_admin) = create_token(
        &gate,
        workspace_token("Token admin", "ws_a", "token_admin", "1y"),
    )
    .await;
    let api = Http::new(format!("http://{}", gate.addrs.admin)).bearer(&token_admin);
    let created = api
        .post(
            "/admin/v1/tokens",
            workspace_token("Escalate", "ws_a", "workspace_manager", "1w"),
        )
        .await;
    assert_eq!(created.status, StatusCode::FORBIDDEN);
    let rotated = api
        .post_empty(&format!("/admin/v1/tokens/{manager_id}/rotate"))
        .await;
    assert_eq!(rotated.status, StatusCode::FORBIDDEN);
    assert!(!String::from_utf8_lossy(&rotated.body).contains("hwz_"));
    assert!(authenticates(&gate, &manager_secret).await);
    // Nor may it list what it may not touch.
    let listed = api.get("/admin/v1/tokens").await.json();
    let ids: BTreeSet<&str> = listed["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert!(!ids.contains(manager_id.as_str()), "{listed}");
    assert!(!ids.is_empty(), "it sees its own level: {listed}");
}

#[tokio::test]
async fn a_disable_by_the_admin_key_is_undone_only_by_the_admin_key() {
    let gate = InProcessGate::start(&[TOKEN_ADMIN]).await;
    let admin_url = format!("http://{}", gate.addrs.admin);
    let (_, manager) = create_token(
        &gate,
        workspace_token("Manager caller", "ws_a", "workspace_manager", "1y"),
    )
    .await;
    let (_, token_admin) = create_token(
        &gate,
        workspace_token("Token-admin caller", "ws_a", "token_admin", "1y"),
    )
    .await;
    let (id, secret) = create_token(&gate, target_body("token_admin")).await;
    let a = gate
        .admin()
        .post_empty(&format!("/admin/v1/tokens/{id}/disable"))
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json()["token"]["disabled_by"], "admin");

    for caller in [&manager, &token_admin] {
        let a = Http::new(admin_url.clone())
            .bearer(caller)
            .post_empty(&format!("/admin/v1/tokens/{id}/enable"))
            .await;
        assert_eq!(a.status, StatusCode::FORBIDDEN);
        let message = a.json()["message"].as_str().unwrap().to_owned();
        assert!(message.contains("admin key"), "{message}");
        assert_eq!(state_of(&gate, &id).await["state"], "disabled");
    }
    assert!(!authenticates(&gate, &secret).await);
    // A token caller may disable it again (idempotent) and revoke it; the
    // admin key may enable it.
    let a = gate
        .admin()
        .post_empty(&format!("/admin/v1/tokens/{id}/enable"))
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.json()["token"].get("disabled_by").is_none());
    assert!(authenticates(&gate, &secret).await);

    // A disable by a token caller names it, and any caller that may act on
    // the token may undo it.
    let a = Http::new(admin_url.clone())
        .bearer(&manager)
        .post_empty(&format!("/admin/v1/tokens/{id}/disable"))
        .await;
    let by = a.json()["token"]["disabled_by"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(by.starts_with("token:tok_"), "{by}");
    let a = Http::new(admin_url)
        .bearer(&token_admin)
        .post_empty(&format!("/admin/v1/tokens/{id}/enable"))
        .await;
    assert_eq!(
        a.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
}

/// Limits the admin key put on a token (an incident response: narrow a
/// suspect CI token to the build network, or hold it back until later)
/// are lifted only by the admin key, as its disable is undone only by it;
/// a token caller may narrow them further.
#[tokio::test]
async fn limits_set_with_the_admin_key_are_lifted_only_by_the_admin_key() {
    let gate = InProcessGate::start(&[TOKEN_ADMIN]).await;
    let admin_url = format!("http://{}", gate.addrs.admin);
    let (_, manager) = create_token(
        &gate,
        workspace_token("Token-admin caller", "ws_a", "token_admin", "1y"),
    )
    .await;
    let api = Http::new(admin_url).bearer(&manager);
    let (id, _) = create_token(&gate, target_body("token_admin")).await;
    let days = |n: i64| {
        (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24 * n))
            .round(jiff::Unit::Second)
            .unwrap()
            .to_string()
    };
    let patch = |body: Value| {
        let path = format!("/admin/v1/tokens/{id}");
        let api = &api;
        async move { api.send(http::Method::PATCH, &path, &[], Some(body)).await }
    };
    let a = gate
        .admin()
        .send(
            http::Method::PATCH,
            &format!("/admin/v1/tokens/{id}"),
            &[],
            Some(json!({"allow_from": ["10.0.0.0/8"], "not_before": days(10)})),
        )
        .await;
    assert_eq!(
        a.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    assert_eq!(a.json()["token"]["limits_by"], "admin");
    for lift in [
        json!({"allow_from": []}),
        json!({"allow_from": ["0.0.0.0/0"]}),
        json!({"allow_from": ["10.0.0.0/8", "192.0.2.0/24"]}),
        json!({"not_before": ""}),
        json!({"not_before": days(5)}),
    ] {
        let a = patch(lift.clone()).await;
        assert_eq!(
            a.status,
            StatusCode::FORBIDDEN,
            "{lift}: {}",
            String::from_utf8_lossy(&a.body)
        );
        let message = a.json()["message"].as_str().unwrap().to_owned();
        assert!(message.contains("admin key"), "{message}");
    }
    let shown = state_of(&gate, &id).await;
    assert_eq!(shown["allow_from"], json!(["10.0.0.0/8"]));
    // Narrowing is allowed, and the limits stay the admin key's.
    let a = patch(json!({"allow_from": ["10.1.0.0/16"], "not_before": days(15)})).await;
    assert_eq!(
        a.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    assert_eq!(a.json()["token"]["limits_by"], "admin");
    assert_eq!(
        patch(json!({"allow_from": ["10.0.0.0/8"]})).await.status,
        StatusCode::FORBIDDEN
    );
    // The admin key lifts them; limits a token caller sets, any caller
    // that may act on the token may change.
    let a = gate
        .admin()
        .send(
            http::Method::PATCH,
            &format!("/admin/v1/tokens/{id}"),
            &[],
            Some(json!({"allow_from": [], "not_before": ""})),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(
        a.json()["token"].get("limits_by").is_none(),
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    let a = patch(json!({"allow_from": ["10.0.0.0/8"]})).await;
    assert_eq!(a.status, StatusCode::OK);
    let by = a.json()["token"]["limits_by"].as_str().unwrap().to_owned();
    assert!(by.starts_with("token:tok_"), "{by}");
    assert_eq!(
        patch(json!({"allow_from": []})).await.status,
        StatusCode::OK
    );
}

/// Six rotates of one token at once: exactly one succeeds, the others get
/// 409 `token_revoked`, and exactly one successor exists.
async fn concurrent_rotates_leave_one_successor(gates: &[&InProcessGate]) {
    let (id, old_secret) = create_token(
        gates[0],
        workspace_token("Rotated", "ws_a", "workspace_member", "1m"),
    )
    .await;
    let calls = (0..6).map(|i| {
        let api = gates[i % gates.len()].admin();
        let path = format!("/admin/v1/tokens/{id}/rotate");
        async move { api.post_empty(&path).await }
    });
    let answers = futures_util::future::join_all(calls).await;
    let mut created = Vec::new();
    for a in &answers {
        match a.status {
            StatusCode::CREATED => created.push(a.json()),
            StatusCode::CONFLICT => assert_eq!(a.json()["error"], "token_revoked"),
            other => panic!(
                "rotate answered {other}: {}",
                String::from_utf8_lossy(&a.body)
            ),
        }
    }
    assert_eq!(created.len(), 1, "exactly one rotate wins: {answers:?}");
    let new_id = created[0]["token"]["id"].as_str().unwrap().to_owned();
    let new_secret = created[0]["secret"].as_str().unwrap().to_owned();
    assert_eq!(successors_of(gates[0], &id).await, vec![new_id]);
    assert_eq!(state_of(gates[0], &id).await["state"], "revoked");
    for gate in gates {
        assert!(!authenticates(gate, &old_secret).await);
        assert!(authenticates(gate, &new_secret).await);
    }
}

#[tokio::test]
async fn concurrent_rotates_of_one_token_leave_one_successor_on_the_embedded_store() {
    let gate = InProcessGate::embedded().await;
    for _ in 0..3 {
        concurrent_rotates_leave_one_successor(&[&gate]).await;
    }
}

#[tokio::test]
async fn concurrent_rotates_of_one_token_leave_one_successor_on_redis() {
    let gate = InProcessGate::redis("rotate_race").await;
    for _ in 0..3 {
        concurrent_rotates_leave_one_successor(&[&gate]).await;
    }
}

#[tokio::test]
async fn concurrent_rotates_across_two_gates_on_one_redis_leave_one_successor() {
    let prefix = common::unique_prefix("rotate_race_fleet");
    let url = common::redis_url();
    let settings = [
        ("store.backend", "redis"),
        ("store.redis.url", url.as_str()),
        ("store.redis.key_prefix", prefix.as_str()),
        (
            "admin.key",
            "a-test-admin-key-that-is-long-enough-0123456789",
        ),
    ];
    let a = InProcessGate::start(&settings).await;
    let b = InProcessGate::start(&settings).await;
    for _ in 0..3 {
        concurrent_rotates_leave_one_successor(&[&a, &b]).await;
    }
}

/// Enable and revoke of one disabled token at once, many times: a revoke
/// is never undone by an enable that read the record before it.
async fn enable_never_revives_a_concurrent_revoke(gate: &InProcessGate) {
    for _ in 0..10 {
        let (id, secret) = create_token(
            gate,
            workspace_token("Raced", "ws_a", "workspace_member", "1m"),
        )
        .await;
        gate.admin()
            .post_empty(&format!("/admin/v1/tokens/{id}/disable"))
            .await;
        let enable = gate.admin();
        let revoke = gate.admin();
        let enable_path = format!("/admin/v1/tokens/{id}/enable");
        let revoke_path = format!("/admin/v1/tokens/{id}");
        let (e, r) = tokio::join!(enable.post_empty(&enable_path), revoke.delete(&revoke_path));
        assert_eq!(r.status, StatusCode::OK);
        assert!(
            e.status == StatusCode::OK || e.status == StatusCode::CONFLICT,
            "{}",
            e.status
        );
        assert_eq!(state_of(gate, &id).await["state"], "revoked");
        assert!(!authenticates(gate, &secret).await);
    }
}

#[tokio::test]
async fn enable_never_revives_a_concurrent_revoke_on_either_store() {
    enable_never_revives_a_concurrent_revoke(&InProcessGate::embedded().await).await;
    enable_never_revives_a_concurrent_revoke(&InProcessGate::redis("enable_revoke_race").await)
        .await;
}

#[tokio::test]
async fn a_rotated_managers_old_value_cannot_manage_tokens_during_the_overlap() {
    // The overlap lets API traffic move to the new value; the old one is
    // on its way out and must not mint what outlives it, nor take the
    // successor from its rightful holder.
    let gate = InProcessGate::start(&[TOKEN_ADMIN]).await;
    let admin_url = format!("http://{}", gate.addrs.admin);
    let (manager, old) = create_token(
        &gate,
        workspace_token("Manager", "ws_a", "token_admin", "never"),
    )
    .await;
    let rotated = gate
        .admin()
        .post(
            &format!("/admin/v1/tokens/{manager}/rotate"),
            json!({"overlap": "24h"}),
        )
        .await;
    assert_eq!(rotated.status, StatusCode::CREATED);
    let rotated = rotated.json();
    let successor = rotated["token"]["id"].as_str().unwrap().to_owned();
    let new = rotated["secret"].as_str().unwrap().to_owned();
    assert!(authenticates(&gate, &old).await, "the overlap runs");

    let by_old = Http::new(admin_url.clone()).bearer(&old);
    let a = by_old
        .post(
            "/admin/v1/tokens",
            workspace_token("Way back in", "ws_a", "token_admin", "never"),
        )
        .await;
    assert_eq!(
        a.status,
        StatusCode::FORBIDDEN,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    assert!(a.json()["message"].as_str().unwrap().contains("rotated"));
    let a = by_old
        .post_empty(&format!("/admin/v1/tokens/{successor}/rotate"))
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert!(
        authenticates(&gate, &new).await,
        "the successor is untouched"
    );
    assert_eq!(
        by_old.get("/admin/v1/tokens").await.status,
        StatusCode::FORBIDDEN
    );

    // The new value manages as the old one did.
    let a = Http::new(admin_url)
        .bearer(&new)
        .post(
            "/admin/v1/tokens",
            workspace_token("Made by the successor", "ws_a", "token_admin", "never"),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED);
}

#[tokio::test]
async fn a_token_caller_cannot_mint_a_token_that_outlives_it() {
    let gate = InProcessGate::start(&[TOKEN_ADMIN]).await;
    let admin_url = format!("http://{}", gate.addrs.admin);
    let (caller_id, week) = create_token(
        &gate,
        workspace_token("Week-long caller", "ws_a", "token_admin", "1w"),
    )
    .await;
    let api = Http::new(admin_url.clone()).bearer(&week);
    // `1w` too: counted from now, it ends after the caller's own week.
    for expires in ["never", "1y", "1m", "1w"] {
        let a = api
            .post(
                "/admin/v1/tokens",
                workspace_token("Longer", "ws_a", "token_admin", expires),
            )
            .await;
        assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{expires}");
        let fields = &a.json()["fields"];
        let why = fields["expires"].as_str().unwrap();
        assert!(why.contains("creating token"), "{why}");
        assert!(!String::from_utf8_lossy(&a.body).contains("hwz_"));
    }
    // Up to its own expiry is fine.
    let own_expiry = state_of(&gate, &caller_id).await["expires_at"]
        .as_str()
        .unwrap()
        .to_owned();
    let tomorrow = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24)).to_string();
    for expires in [tomorrow.as_str(), own_expiry.as_str()] {
        let a = api
            .post(
                "/admin/v1/tokens",
                workspace_token("Shorter", "ws_a", "token_admin", expires),
            )
            .await;
        assert_eq!(
            a.status,
            StatusCode::CREATED,
            "{expires}: {}",
            String::from_utf8_lossy(&a.body)
        );
    }
    // A caller that never expires may create a token that never expires.
    let (_, forever) = create_token(
        &gate,
        workspace_token("Forever caller", "ws_a", "token_admin", "never"),
    )
    .await;
    let a = Http::new(admin_url)
        .bearer(&forever)
        .post(
            "/admin/v1/tokens",
            workspace_token("Forever too", "ws_a", "token_admin", "never"),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED);
}

#[tokio::test]
async fn token_names_with_bidirectional_controls_are_refused() {
    let gate = InProcessGate::embedded().await;
    // (status, the `name` field's refusal) of a create named `name`.
    let create = |name: &'static str| {
        let admin = gate.admin();
        async move {
            let a = admin
                .post(
                    "/admin/v1/tokens",
                    workspace_token(name, "ws_a", "workspace_viewer", "1w"),
                )
                .await;
            let why = a.json()["fields"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            (a.status, why)
        }
    };
    for name in [
        "CI \u{202E}rennuR",
        "a\u{2066}b\u{2069}",
        "\u{200F}Nightly",
        "Sync\u{061C}",
    ] {
        let (status, why) = create(name).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{name:?}");
        assert!(why.contains("bidirectional"), "{why}");
    }
    // Nor characters that show nothing, or break a line where it is shown:
    // "CI Runner" and "CI Runner\u{200B}" would look the same in a list.
    for name in [
        "CI Runner\u{200B}",
        "CI\u{2060}Runner",
        "\u{FEFF}Nightly",
        "Sync\u{00AD}",
        "line\u{2028}break",
        "para\u{2029}graph",
        "tag\u{E0041}",
        "note\u{FFF9}x",
        "CI Runner\u{3164}",
        "CI\u{034F} Runner",
    ] {
        let (status, why) = create(name).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{name:?}");
        assert!(why.contains("invisible"), "{why}");
    }
    // Joiners that scripts and emoji need stay (Persian ZWNJ, a family),
    // and ordinary Unicode is fine.
    for name in [
        "می\u{200C}خواهم",
        "team \u{1F468}\u{200D}\u{1F469}\u{200D}\u{1F467}",
        "Zürich CI — 夜間",
    ] {
        assert_eq!(create(name).await.0, StatusCode::CREATED, "{name:?}");
    }
}

/// A manager token the admin limited to some networks (`allow_from`)
/// cannot hand out a secret usable from elsewhere: not by creating one,
/// not by widening or clearing a token's `allow_from` (its own above all),
/// not by rotating a token that is usable from elsewhere. Within its own
/// networks, all three work.
#[tokio::test]
async fn a_token_caller_limited_to_networks_cannot_mint_a_way_out_of_them() {
    let gate = InProcessGate::start(&[TOKEN_ADMIN]).await;
    let admin_url = format!("http://{}", gate.addrs.admin);
    let mut limited = workspace_token("Office manager", "ws_a", "token_admin", "1m");
    limited["allow_from"] = json!(["127.0.0.0/8"]);
    let (caller_id, secret) = create_token(&gate, limited).await;
    let api = Http::new(admin_url).bearer(&secret);
    let (wide_id, _) = create_token(
        &gate,
        workspace_token("Anywhere", "ws_a", "token_admin", "1w"),
    )
    .await;

    let with = |nets: Value| {
        let mut body = workspace_token("Made", "ws_a", "token_admin", "1w");
        if !nets.is_null() {
            body["allow_from"] = nets;
        }
        body
    };
    // Creating: usable from anywhere, or from a network beyond its own.
    for nets in [
        Value::Null,
        json!([]),
        json!(["10.0.0.0/8"]),
        json!(["0.0.0.0/0"]),
        json!(["126.0.0.0/7"]),
    ] {
        let a = api.post("/admin/v1/tokens", with(nets.clone())).await;
        assert_eq!(
            a.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{nets}: {}",
            String::from_utf8_lossy(&a.body)
        );
        let why = a.json()["fields"]["allow_from"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(why.contains("127.0.0.0/8"), "{why}");
    }
    // Widening or clearing one's own limits, or another token's.
    for target in [caller_id.as_str(), wide_id.as_str()] {
        for nets in [json!([]), json!(["10.0.0.0/8"])] {
            let a = api
                .send(
                    http::Method::PATCH,
                    &format!("/admin/v1/tokens/{target}"),
                    &[],
                    Some(json!({ "allow_from": nets })),
                )
                .await;
            assert_eq!(
                a.status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{target} {nets}: {}",
                String::from_utf8_lossy(&a.body)
            );
        }
    }
    assert_eq!(
        state_of(&gate, &caller_id).await["allow_from"],
        json!(["127.0.0.0/8"])
    );
    // Rotating a token usable from anywhere: a new secret usable from
    // anywhere.
    let a = api
        .post_empty(&format!("/admin/v1/tokens/{wide_id}/rotate"))
        .await;
    assert_eq!(
        a.status,
        StatusCode::FORBIDDEN,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    assert!(successors_of(&gate, &wide_id).await.is_empty());

    // Within its own networks: all three.
    let a = api
        .post(
            "/admin/v1/tokens",
            with(json!(["127.0.0.1", "127.1.0.0/16"])),
        )
        .await;
    assert_eq!(
        a.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    let a = api
        .send(
            http::Method::PATCH,
            &format!("/admin/v1/tokens/{wide_id}"),
            &[],
            Some(json!({ "allow_from": ["127.0.0.1"] })),
        )
        .await;
    assert_eq!(
        a.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    let a = api
        .post_empty(&format!("/admin/v1/tokens/{wide_id}/rotate"))
        .await;
    assert_eq!(
        a.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    // The admin key is not limited.
    let a = gate
        .admin()
        .post("/admin/v1/tokens", with(Value::Null))
        .await;
    assert_eq!(a.status, StatusCode::CREATED);
}

/// A token caller's listing shows only the tokens it may act on, and its
/// cursors name none of the others: paging one token at a time through a
/// workspace whose tokens are mostly above the caller, every cursor and
/// every token shown is one of the caller's own reach, every one of those
/// is shown once, and a refusal to act on a token above it names none of
/// that token's permissions.
#[tokio::test]
async fn a_token_callers_listing_and_cursors_reveal_no_token_above_it() {
    listing_reveals_nothing_above(&InProcessGate::start(&[TOKEN_ADMIN]).await).await;
    let prefix = common::unique_prefix("listing_cursors");
    let url = common::redis_url();
    let on_redis = InProcessGate::start(&[
        TOKEN_ADMIN,
        ("store.backend", "redis"),
        ("store.redis.url", &url),
        ("store.redis.key_prefix", &prefix),
    ])
    .await;
    listing_reveals_nothing_above(&on_redis).await;
}

async fn listing_reveals_nothing_above(gate: &InProcessGate) {
    let admin_url = format!("http://{}", gate.addrs.admin);
    let (caller_id, secret) =
        create_token(gate, workspace_token("Lister", "ws_a", "token_admin", "1y")).await;
    let mut reachable = BTreeSet::from([caller_id.clone()]);
    let mut hidden = BTreeSet::new();
    // Runs of six tokens above it: longer than one call reads with
    // `limit=1`, so a page also ends on tokens it may not see.
    for i in 0..15 {
        let (role, set) = if i % 7 == 0 {
            ("token_admin", &mut reachable)
        } else {
            ("workspace_manager", &mut hidden)
        };
        let (id, _) =
            create_token(gate, workspace_token(&format!("t{i}"), "ws_a", role, "1y")).await;
        set.insert(id);
    }
    let api = Http::new(admin_url).bearer(&secret);
    let (pages, cursors) = follow_cursors(&api, "/admin/v1/tokens?limit=1").await;
    let mut seen = Vec::new();
    for page in &pages {
        let text = page.to_string();
        for id in &hidden {
            assert!(!text.contains(id.as_str()), "{id} revealed in {text}");
        }
        for t in page["tokens"].as_array().unwrap() {
            seen.push(t["id"].as_str().unwrap().to_owned());
        }
    }
    // Some page ended on tokens it may not see: its cursor is an instant.
    assert!(
        cursors.iter().any(|c| c.ends_with(".tok_zzzzzzzzzzzzzzzz")),
        "{cursors:?}"
    );
    assert_eq!(seen.len(), reachable.len(), "{seen:?}");
    assert_eq!(seen.iter().cloned().collect::<BTreeSet<_>>(), reachable);

    let above = hidden.iter().next().unwrap();
    let a = api.get(&format!("/admin/v1/tokens/{above}")).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let message = a.json()["message"].as_str().unwrap().to_owned();
    assert!(message.contains("above its own role"), "{message}");
    assert!(!message.contains("workspace:"), "{message}");
}

/// The same for the audit log: a token caller following its cursors one
/// event at a time sees the events of tokens within its reach, each once,
/// and no cursor of its pages is the position of an event it may not see
/// (which told when tokens above it changed, one by one).
#[tokio::test]
async fn a_token_callers_audit_cursors_reveal_no_event_above_it() {
    let gate = InProcessGate::start(&[TOKEN_ADMIN]).await;
    let (_, secret) = create_token(
        &gate,
        workspace_token("Auditor", "ws_a", "token_admin", "1y"),
    )
    .await;
    let mut hidden_ids = Vec::new();
    for i in 0..12 {
        let role = if i % 6 == 0 {
            "token_admin"
        } else {
            "workspace_manager"
        };
        let (id, _) =
            create_token(&gate, workspace_token(&format!("a{i}"), "ws_a", role, "1y")).await;
        if role == "workspace_manager" {
            hidden_ids.push(id);
        }
    }
    // Every event's position, from the admin key's view.
    let all = gate.admin().get("/admin/v1/audit?limit=200").await.json();
    let hidden_positions: Vec<String> = all["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| hidden_ids.iter().any(|id| e["token_id"] == id.as_str()))
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(hidden_positions.len(), hidden_ids.len());

    let api = Http::new(format!("http://{}", gate.addrs.admin)).bearer(&secret);
    let (pages, cursors) = follow_cursors(&api, "/admin/v1/audit?limit=1").await;
    for c in &cursors {
        assert!(
            !hidden_positions.iter().any(|p| p == c),
            "cursor {c} is a hidden event"
        );
    }
    let mut seen = Vec::new();
    for page in &pages {
        for e in page["events"].as_array().unwrap() {
            assert!(
                !hidden_ids.iter().any(|id| e["token_id"] == id.as_str()),
                "{e}"
            );
            seen.push(e["id"].as_str().unwrap().to_owned());
        }
    }
    // The caller's own creation and the two token_admin tokens'.
    assert_eq!(seen.len(), 3, "{seen:?}");
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "{seen:?}");
}

/// Every page of `first` (a path with `limit=`), following `next_cursor`
/// to the end (at most 50 pages): the pages, and the cursors handed back.
async fn follow_cursors(api: &Http, first: &str) -> (Vec<Value>, Vec<String>) {
    let mut pages = Vec::new();
    let mut cursors: Vec<String> = Vec::new();
    for _ in 0..50 {
        let path = match cursors.last() {
            Some(c) => format!("{first}&cursor={c}"),
            None => first.to_owned(),
        };
        let a = api.get(&path).await;
        assert_eq!(
            a.status,
            StatusCode::OK,
            "{}",
            String::from_utf8_lossy(&a.body)
        );
        let page = a.json();
        let next = page["next_cursor"].as_str().map(str::to_owned);
        pages.push(page);
        match next {
            Some(c) => cursors.push(c),
            None => return (pages, cursors),
        }
    }
    panic!("more than 50 pages of {first}");
}

/// One workspace's tokens make at most `admin.change_limit` changes per
/// `admin.change_window` on a gate: the next is 429 `rate_limited` with
/// `Retry-After`, and logged as not done, never stored. Another workspace's
/// tokens, reads, and the admin key go on.
#[tokio::test]
async fn one_workspaces_tokens_cannot_flood_the_shared_logs_with_changes() {
    let gate = InProcessGate::start(&[
        TOKEN_ADMIN,
        ("admin.change_limit", "3"),
        ("admin.change_window", "1h"),
    ])
    .await;
    let admin_url = format!("http://{}", gate.addrs.admin);
    let caller = |ws: &str| workspace_token("Tenant tooling", ws, "token_admin", "1y");
    let (_, a) = create_token(&gate, caller("ws_a")).await;
    let (_, b) = create_token(&gate, caller("ws_b")).await;
    let a = Http::new(admin_url.clone()).bearer(&a);
    let b = Http::new(admin_url).bearer(&b);
    let (id, _) = create_token(&gate, target_body("token_admin")).await;
    // Three changes (the repeated disable too), then none.
    for _ in 0..3 {
        let r = a
            .post_empty(&format!("/admin/v1/tokens/{id}/disable"))
            .await;
        assert_eq!(r.status, StatusCode::OK);
    }
    let refused = a.post_empty(&format!("/admin/v1/tokens/{id}/enable")).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.json()["error"], "rate_limited");
    assert_eq!(refused.header("retry-after"), Some("1200"));
    let created = a
        .post(
            "/admin/v1/tokens",
            workspace_token("More", "ws_a", "token_admin", "1w"),
        )
        .await;
    assert_eq!(created.status, StatusCode::TOO_MANY_REQUESTS);
    // Reads go on.
    assert_eq!(
        a.get(&format!("/admin/v1/tokens/{id}")).await.status,
        StatusCode::OK
    );
    // Another workspace's tokens, and the admin key, are not held back.
    let other = b
        .post(
            "/admin/v1/tokens",
            workspace_token("Theirs", "ws_b", "token_admin", "1w"),
        )
        .await;
    assert_eq!(other.status, StatusCode::CREATED);
    for _ in 0..5 {
        let r = gate
            .admin()
            .post_empty(&format!("/admin/v1/tokens/{id}/enable"))
            .await;
        assert_eq!(r.status, StatusCode::OK);
    }
    // Refused changes are not in the audit log, nor repeats that changed
    // nothing: one disable.
    let events = gate
        .admin()
        .get("/admin/v1/audit?workspace=ws_a")
        .await
        .json();
    let by_a = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["actor"].as_str().is_some_and(|s| s.starts_with("token:")))
        .count();
    assert_eq!(by_a, 1, "{events}");
}

/// Under the minute's limit, a tenant's tokens still make at most
/// `admin.daily_change_limit` changes a day on a gate (300 a minute alone
/// is 432,000 audit events a day, enough to push every other workspace's
/// events out of the shared log in a few days); the next is 429 naming
/// the daily limit, with the refill interval as `Retry-After`.
#[tokio::test]
async fn one_workspaces_tokens_make_at_most_the_daily_limit_of_changes() {
    let gate = InProcessGate::start(&[TOKEN_ADMIN, ("admin.daily_change_limit", "4")]).await;
    let admin_url = format!("http://{}", gate.addrs.admin);
    let (_, a) = create_token(
        &gate,
        workspace_token("Tenant tooling", "ws_a", "token_admin", "1y"),
    )
    .await;
    let a = Http::new(admin_url).bearer(&a);
    let (id, _) = create_token(&gate, target_body("token_admin")).await;
    for i in 0..4 {
        let op = if i % 2 == 0 { "disable" } else { "enable" };
        let r = a.post_empty(&format!("/admin/v1/tokens/{id}/{op}")).await;
        assert_eq!(r.status, StatusCode::OK, "{i}");
    }
    let refused = a
        .post_empty(&format!("/admin/v1/tokens/{id}/disable"))
        .await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.json()["error"], "rate_limited");
    assert!(
        refused.json()["message"]
            .as_str()
            .unwrap()
            .contains("admin.daily_change_limit"),
        "{}",
        String::from_utf8_lossy(&refused.body)
    );
    // A day over four changes: one every 6 h.
    assert_eq!(refused.header("retry-after"), Some("21600"));
    // A revoke is never held to the day's limit (an incident's revokes are
    // not slowed; a token is revoked once).
    let (other, _) = create_token(&gate, target_body("token_admin")).await;
    let revoked = a.delete(&format!("/admin/v1/tokens/{other}")).await;
    assert_eq!(revoked.status, StatusCode::OK);
    let m = gate.ops().get("/metrics").await;
    let text = String::from_utf8_lossy(&m.body);
    assert!(
        text.contains("result=\"daily_change_limited\""),
        "told apart in the metric"
    );
    // Reads and the admin key go on.
    assert_eq!(
        a.get(&format!("/admin/v1/tokens/{id}")).await.status,
        StatusCode::OK
    );
    let r = gate
        .admin()
        .post_empty(&format!("/admin/v1/tokens/{id}/disable"))
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn a_token_whose_role_is_not_defined_is_reached_by_the_admin_key_alone() {
    // A role taken out of the config for a while (a rollback, a rename)
    // holds nothing today and everything again when it comes back: no
    // token caller may act on such a token, and nobody may rotate it into
    // a fresh secret that regains the role later.
    let prefix = common::unique_prefix("undefined_role");
    let url = common::redis_url();
    let shared = [
        ("store.backend", "redis"),
        ("store.redis.url", url.as_str()),
        ("store.redis.key_prefix", prefix.as_str()),
        (
            "admin.key",
            "a-test-admin-key-that-is-long-enough-0123456789",
        ),
        TOKEN_ADMIN,
    ];
    let mut with_role = shared.to_vec();
    with_role.push(("roles.deployer", "settings:manage,projects:read"));
    let before = InProcessGate::start(&with_role).await;
    let (target, _) = create_token(
        &before,
        workspace_token("Deployer", "ws_a", "deployer", "1m"),
    )
    .await;
    let (_, clerk) = create_token(
        &before,
        workspace_token("Clerk", "ws_a", "token_admin", "1m"),
    )
    .await;
    // With the role defined the clerk is below it.
    let by_clerk = Http::new(format!("http://{}", before.addrs.admin)).bearer(&clerk);
    assert_eq!(
        Action::Rotate.run(&by_clerk, &target).await.status,
        StatusCode::FORBIDDEN
    );

    // A gate of the same fleet without the role.
    let after = InProcessGate::start(&shared).await;
    let by_clerk = Http::new(format!("http://{}", after.addrs.admin)).bearer(&clerk);
    for action in ACTIONS {
        let a = action.run(&by_clerk, &target).await;
        assert_eq!(
            a.status,
            StatusCode::FORBIDDEN,
            "{action:?}: {}",
            String::from_utf8_lossy(&a.body)
        );
    }
    let a = after
        .admin()
        .post_empty(&format!("/admin/v1/tokens/{target}/rotate"))
        .await;
    assert_eq!(
        a.status,
        StatusCode::FORBIDDEN,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    assert!(String::from_utf8_lossy(&a.body).contains("roles.deployer"));
    assert!(successors_of(&after, &target).await.is_empty());
    // Nor is it in the clerk's list.
    let listed = by_clerk.get("/admin/v1/tokens?limit=500").await.json();
    assert!(
        !listed["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == target.as_str()),
        "{listed}"
    );
    // The admin key still sees, disables and revokes it.
    assert_eq!(
        Action::Show.run(&after.admin(), &target).await.status,
        StatusCode::OK
    );
    assert_eq!(
        Action::Disable.run(&after.admin(), &target).await.status,
        StatusCode::OK
    );
    assert_eq!(
        Action::Revoke.run(&after.admin(), &target).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn one_workspaces_tokens_cannot_hammer_the_shared_store_with_reads() {
    // A read may scan thousands of audit entries or usage hours on the
    // store every tenant's token checks share: token callers' reads are
    // limited per workspace too (the admin key's never are).
    let gate = InProcessGate::start(&[
        TOKEN_ADMIN,
        ("admin.read_limit", "3"),
        ("admin.change_window", "1h"),
    ])
    .await;
    let admin_url = format!("http://{}", gate.addrs.admin);
    let caller = |ws: &str| workspace_token("Tenant tooling", ws, "token_admin", "1y");
    let (_, a) = create_token(&gate, caller("ws_a")).await;
    let (_, b) = create_token(&gate, caller("ws_b")).await;
    let a = Http::new(admin_url.clone()).bearer(&a);
    let b = Http::new(admin_url).bearer(&b);
    for _ in 0..3 {
        assert_eq!(a.get("/admin/v1/roles").await.status, StatusCode::OK);
    }
    let refused = a.get("/admin/v1/audit?limit=1").await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.json()["error"], "rate_limited");
    assert!(
        refused.json()["message"]
            .as_str()
            .unwrap()
            .contains("admin.read_limit"),
        "{:?}",
        refused.body
    );
    // Until the audit read's whole cost (the whole burst of 3 here) is
    // back: 3 × 1200 s, not one refill interval.
    assert_eq!(refused.header("retry-after"), Some("3600"));
    // Changes are counted apart; another workspace and the admin key read on.
    let made = a
        .post(
            "/admin/v1/tokens",
            workspace_token("More", "ws_a", "token_admin", "1w"),
        )
        .await;
    assert_eq!(made.status, StatusCode::CREATED);
    assert_eq!(b.get("/admin/v1/tokens").await.status, StatusCode::OK);
    for _ in 0..5 {
        assert_eq!(
            gate.admin().get("/admin/v1/audit").await.status,
            StatusCode::OK
        );
    }
    let metrics = String::from_utf8(gate.ops().get("/metrics").await.body.to_vec()).unwrap();
    assert!(metrics.contains("result=\"read_limited\""), "{metrics}");
}

/// A read is charged what it may cost the shared store, not one call: a
/// list may walk four index pages, an audit read scan 5,000 entries, a
/// usage read one key per hour of its window — counted as 4, 10 and 10
/// reads (the whole burst when the limit is smaller). Before, 600 audit
/// reads a minute were 3 million scanned entries.
#[tokio::test]
async fn a_read_is_charged_what_it_may_cost_the_store() {
    let gate = InProcessGate::start(&[
        TOKEN_ADMIN,
        ("admin.read_limit", "20"),
        ("admin.change_window", "1h"),
    ])
    .await;
    let admin_url = format!("http://{}", gate.addrs.admin);
    let caller = |ws: &str| workspace_token("Tenant tooling", ws, "token_admin", "1y");
    let mut callers = Vec::new();
    for ws in ["ws_a", "ws_b", "ws_c"] {
        let (_, secret) = create_token(&gate, caller(ws)).await;
        callers.push(Http::new(admin_url.clone()).bearer(&secret));
    }
    let got = |c: &Http, path: &'static str, times: usize| {
        let c = c.clone();
        async move {
            let mut statuses = Vec::new();
            for _ in 0..times {
                statuses.push(c.get(path).await.status.as_u16());
            }
            statuses
        }
    };
    assert_eq!(
        got(&callers[0], "/admin/v1/audit", 3).await,
        [200, 200, 429]
    );
    assert_eq!(
        got(&callers[1], "/admin/v1/tokens", 6).await,
        [200, 200, 200, 200, 200, 429]
    );
    assert_eq!(
        got(&callers[2], "/admin/v1/roles", 21)
            .await
            .iter()
            .filter(|s| **s == 200)
            .count(),
        20
    );
}

// === a caller revoked while its request is in flight ===

/// Token reads the gate has made from its store (every result): a token
/// caller's first request on a gate reads its record once, when it is
/// authenticated, before any body is read.
async fn store_reads(gate: &InProcessGate) -> f64 {
    let metrics = gate.ops().get("/metrics").await;
    String::from_utf8_lossy(&metrics.body)
        .lines()
        .filter(|l| l.starts_with(r#"hawzu_gate_store_calls_total{op="get","#))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A request to `gate`'s admin listener whose head and first `sent` body
/// bytes are on the wire, and that was authenticated (its caller's record
/// read); `finish` sends the rest and reads the answer.
struct InFlight {
    write: tokio::net::tcp::OwnedWriteHalf,
    rest: Vec<u8>,
    answer: tokio::task::JoinHandle<Vec<u8>>,
}

impl InFlight {
    async fn start(
        gate: &InProcessGate,
        method: &str,
        path: &str,
        secret: &str,
        body: &Value,
        sent: usize,
    ) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let body = serde_json::to_vec(body).unwrap();
        let reads = store_reads(gate).await;
        let stream = tokio::net::TcpStream::connect(gate.addrs.admin)
            .await
            .unwrap();
        let (mut read, mut write) = stream.into_split();
        let answer = tokio::spawn(async move {
            let mut out = Vec::new();
            read.read_to_end(&mut out).await.unwrap();
            out
        });
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {secret}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            gate.addrs.admin,
            body.len()
        );
        write.write_all(head.as_bytes()).await.unwrap();
        write.write_all(&body[..sent]).await.unwrap();
        common::eventually(
            "the in-flight request's caller to be read from the store",
            std::time::Duration::from_secs(10),
            || async { (store_reads(gate).await > reads).then_some(()) },
        )
        .await;
        Self {
            write,
            rest: body[sent..].to_vec(),
            answer,
        }
    }

    /// Sends the rest of the body: the status and the JSON answer.
    async fn finish(mut self) -> (u16, Value) {
        use tokio::io::AsyncWriteExt;
        self.write.write_all(&self.rest).await.unwrap();
        let raw = tokio::time::timeout(std::time::Duration::from_secs(10), self.answer)
            .await
            .expect("answered")
            .unwrap();
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, serde_json::from_str(body).unwrap_or(Value::Null))
    }
}

/// A manager token revoked (by the admin key, on this gate or another of
/// the fleet) while one of its requests is still sending its body changes
/// nothing when the body ends: 401 as any request of a revoked token, no
/// token made or changed, no audit event in its name. The caller is
/// judged again, from the store, after the body is read.
#[tokio::test]
async fn a_manager_revoked_while_its_request_is_in_flight_changes_nothing() {
    let prefix = common::unique_prefix("revoked_in_flight");
    let url = common::redis_url();
    let settings = [
        TOKEN_ADMIN,
        ("store.backend", "redis"),
        ("store.redis.url", url.as_str()),
        ("store.redis.key_prefix", prefix.as_str()),
        (
            "admin.key",
            "a-test-admin-key-that-is-long-enough-0123456789",
        ),
    ];
    let a = InProcessGate::start(&settings).await;
    let b = InProcessGate::start(&settings).await;
    let (target, _) = create_token(&a, target_body("workspace_member")).await;
    let asks = [
        (
            "POST",
            "/admin/v1/tokens".to_owned(),
            workspace_token("Persisted", "ws_a", "token_admin", "1w"),
        ),
        (
            "PATCH",
            format!("/admin/v1/tokens/{target}"),
            json!({"name": "Persisted"}),
        ),
        (
            "POST",
            format!("/admin/v1/tokens/{target}/rotate"),
            json!({"expires": "1w"}),
        ),
    ];
    for (revoker, where_) in [(&a, "the same gate"), (&b, "another gate")] {
        for (method, path, body) in &asks {
            let (manager_id, manager) = create_token(
                revoker,
                workspace_token("Manager", "ws_a", "token_admin", "1y"),
            )
            .await;
            let flight = InFlight::start(&a, method, path, &manager, body, 10).await;
            let revoked = revoker
                .admin()
                .delete(&format!("/admin/v1/tokens/{manager_id}"))
                .await;
            assert_eq!(revoked.status, StatusCode::OK);
            assert_eq!(revoked.json()["token"]["state"], "revoked");
            let (status, answer) = flight.finish().await;
            assert_eq!(
                status, 401,
                "{method} {path}, revoked on {where_}: {answer}"
            );
            assert!(
                answer["message"].as_str().unwrap().contains("revoked"),
                "{answer}"
            );
            let listed = a
                .admin()
                .get("/admin/v1/tokens?workspace=ws_a&limit=500")
                .await
                .json();
            let tokens = listed["tokens"].as_array().unwrap();
            assert!(
                tokens.iter().all(|t| t["name"] != "Persisted"),
                "{method} {path}, revoked on {where_}: {listed}"
            );
            assert!(
                tokens.iter().all(|t| t["rotated_from"] != target.as_str()),
                "{method} {path}, revoked on {where_}: {listed}"
            );
            let events = a
                .admin()
                .get("/admin/v1/audit?workspace=ws_a&limit=500")
                .await
                .json();
            let actor = format!("token:{manager_id}");
            assert!(
                events["events"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|e| e["actor"] != actor.as_str()),
                "{method} {path}, revoked on {where_}: {events}"
            );
        }
    }
}

// === the admin key's repeat of a change takes it over ===

/// A disable or limits a token caller made (or the unused-token policy's
/// disable) that the admin key then asks for again — the state already
/// so — become the admin key's: `disabled_by`/`limits_by` read `admin`,
/// and the token caller can no longer undo them. Else an incident
/// response that found a tenant's disable in place would leave the tenant
/// in control.
#[tokio::test]
async fn the_admin_key_repeating_a_tenants_disable_or_limits_takes_them_over() {
    let prefix = common::unique_prefix("admin_takes_over");
    let url = common::redis_url();
    let gate = InProcessGate::start(&[
        TOKEN_ADMIN,
        ("store.backend", "redis"),
        ("store.redis.url", url.as_str()),
        ("store.redis.key_prefix", prefix.as_str()),
    ])
    .await;
    let (_, manager) = create_token(
        &gate,
        workspace_token("Manager", "ws_a", "token_admin", "1y"),
    )
    .await;
    let m = Http::new(format!("http://{}", gate.addrs.admin)).bearer(&manager);
    let body = |a: &Answer| String::from_utf8_lossy(&a.body).into_owned();

    // A disable.
    let (id, _) = create_token(&gate, target_body("token_admin")).await;
    let a = m
        .post_empty(&format!("/admin/v1/tokens/{id}/disable"))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", body(&a));
    let a = gate
        .admin()
        .post_empty(&format!("/admin/v1/tokens/{id}/disable"))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", body(&a));
    assert_eq!(a.json()["token"]["disabled_by"], "admin", "{}", body(&a));
    let a = m.post_empty(&format!("/admin/v1/tokens/{id}/enable")).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", body(&a));
    assert_eq!(state_of(&gate, &id).await["state"], "disabled");

    // The unused-token policy's disable.
    let (id, _) = create_token(&gate, target_body("token_admin")).await;
    let store = hawzu_gate::store::RedisStore::new(hawzu_gate::store::redis::RedisOptions {
        url: url.clone(),
        key_prefix: prefix.clone(),
        timeout: std::time::Duration::from_secs(10),
        retention: std::time::Duration::from_secs(24 * 3600),
    })
    .unwrap();
    let token_id = hawzu_gate::token::TokenId::parse(&id).unwrap();
    hawzu_gate::store::update(&store, &token_id, |r| {
        Ok::<_, std::convert::Infallible>(Some(hawzu_gate::token::TokenRecord {
            disabled_at: Some(jiff::Timestamp::now()),
            disabled_by: Some("policy:unused".into()),
            ..r.clone()
        }))
    })
    .await
    .unwrap();
    let a = gate
        .admin()
        .post_empty(&format!("/admin/v1/tokens/{id}/disable"))
        .await;
    assert_eq!(a.json()["token"]["disabled_by"], "admin", "{}", body(&a));
    let a = m.post_empty(&format!("/admin/v1/tokens/{id}/enable")).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", body(&a));

    // Limits.
    let (id, _) = create_token(&gate, target_body("token_admin")).await;
    let patch = |api: Http, body: Value| {
        let path = format!("/admin/v1/tokens/{id}");
        async move { api.send(http::Method::PATCH, &path, &[], Some(body)).await }
    };
    let limits = json!({"allow_from": ["10.0.0.0/8"]});
    let a = patch(m.clone(), limits.clone()).await;
    assert_eq!(a.status, StatusCode::OK, "{}", body(&a));
    assert!(
        a.json()["token"]["limits_by"]
            .as_str()
            .unwrap()
            .starts_with("token:"),
        "{}",
        body(&a)
    );
    let a = patch(gate.admin(), limits).await;
    assert_eq!(a.status, StatusCode::OK, "{}", body(&a));
    assert_eq!(a.json()["token"]["limits_by"], "admin", "{}", body(&a));
    let a = patch(m.clone(), json!({"allow_from": []})).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", body(&a));
    assert_eq!(
        state_of(&gate, &id).await["allow_from"],
        json!(["10.0.0.0/8"])
    );
}

/// A manager whose `id:` key Redis lost (eviction, a fail-over) signs in by
/// its secret's hash, and is judged again before a change by that hash too:
/// its changes are not refused as an unknown token (which neither it nor
/// the admin key, finding tokens by id, could mend), and the change writes
/// the key again.
#[tokio::test]
async fn a_manager_whose_id_key_was_lost_still_makes_changes() {
    let prefix = common::unique_prefix("lost_manager_id");
    let url = common::redis_url();
    let gate = InProcessGate::start(&[
        ("store.backend", "redis"),
        ("store.redis.url", url.as_str()),
        ("store.redis.key_prefix", prefix.as_str()),
        TOKEN_ADMIN,
    ])
    .await;
    let (clerk_id, clerk) =
        create_token(&gate, workspace_token("Clerk", "ws_a", "token_admin", "1m")).await;
    let (target, _) =
        create_token(&gate, workspace_token("Peer", "ws_a", "token_admin", "1m")).await;
    common::lose_id_key(&prefix, &clerk_id).await;
    let by_clerk = Http::new(format!("http://{}", gate.addrs.admin)).bearer(&clerk);
    let a = by_clerk
        .post(&format!("/admin/v1/tokens/{target}/disable"), json!({}))
        .await;
    assert_eq!(
        a.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
}
