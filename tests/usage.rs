//! Usage per token, end to end: requests through the doors of two gates on
//! one Redis are summed and read from either; a known token's refusals
//! count with the last code, unknown tokens count nowhere; the counts of an
//! embedded gate survive its restart (pending ones flushed at shutdown);
//! the proxy, forward-auth and gRPC doors all count; the CLI shows it.
//! Unused tokens: `tests/usage_unused.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::time::Duration;

use hawzu_gate::token::{TokenId, TokenSecret};
use http::{Method, StatusCode};
use serde_json::Value;

use common::{
    GateProcess, InProcessGate, WS1_PROJECTS, create_token, eventually, listed, lose_id_key,
    redis_url, send, unique_prefix, workspace_token,
};

/// Longest wait for a flush (every 5 s) to reach the store.
const FLUSHED: Duration = Duration::from_secs(20);

async fn redis_gate(prefix: &str, extra: &[(&str, &str)]) -> InProcessGate {
    let url = redis_url();
    let mut env = vec![
        ("store.backend", "redis"),
        ("store.redis.url", url.as_str()),
        ("store.redis.key_prefix", prefix),
    ];
    env.extend_from_slice(extra);
    InProcessGate::start(&env).await
}

/// `/auth/nginx` for `GET path` with `secret`, from `client` with `agent`.
async fn ask(
    gate: &InProcessGate,
    secret: &str,
    path: &str,
    client: &str,
    agent: &str,
) -> StatusCode {
    send(gate.addrs.auth, Method::GET, "/auth/nginx")
        .token(secret)
        .original("GET", path)
        .header("x-forwarded-for", client)
        .header("user-agent", agent)
        .go()
        .await
        .status
}

async fn usage(gate: &InProcessGate, id: &str, query: &str) -> Value {
    let a = gate
        .admin()
        .get(&format!("/admin/v1/tokens/{id}/usage{query}"))
        .await;
    assert_eq!(
        a.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    a.json()
}

/// The usage of `id` on `gate` once its totals are `(allowed, refused)`.
async fn usage_when(gate: &InProcessGate, id: &str, allowed: u64, refused: u64) -> Value {
    eventually("the usage to be flushed", FLUSHED, || async {
        let u = usage(gate, id, "").await;
        (u["totals"]["allowed"] == allowed && u["totals"]["refused"] == refused).then_some(u)
    })
    .await
}

#[tokio::test]
async fn requests_through_two_gates_on_one_redis_are_summed_and_read_from_either() {
    let prefix = unique_prefix("usage_fleet");
    let a = redis_gate(&prefix, &[]).await;
    let b = redis_gate(&prefix, &[]).await;
    let (id, secret) = create_token(
        &a,
        workspace_token("CI Runner", "ws_1", "workspace_viewer", "7d"),
    )
    .await;
    for _ in 0..3 {
        assert_eq!(
            ask(&a, &secret, WS1_PROJECTS, "203.0.113.7", "ci-runner/1.0").await,
            200
        );
    }
    for _ in 0..2 {
        assert_eq!(
            ask(&b, &secret, WS1_PROJECTS, "198.51.100.4", "curl/8.5.0").await,
            200
        );
    }
    // A refusal of the known token on gate B (no rule for this path).
    assert_eq!(
        ask(
            &b,
            &secret,
            "/settings/access-tokens",
            "198.51.100.4",
            "curl/8.5.0"
        )
        .await,
        403
    );

    let from_a = usage_when(&a, &id, 5, 1).await;
    let from_b = usage_when(&b, &id, 5, 1).await;
    assert_eq!(from_a["totals"], from_b["totals"]);
    let hours = from_b["hours"].as_array().unwrap();
    let summed: u64 = hours.iter().map(|h| h["allowed"].as_u64().unwrap()).sum();
    assert_eq!(summed, 5, "the hours add up to the totals: {hours:?}");
    assert_eq!(from_b["last_refusal"]["code"], "no_matching_rule");

    let clients: Vec<(String, String)> = from_a["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["address"].as_str().unwrap().to_owned(),
                c["user_agent"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        clients.contains(&("203.0.113.7".into(), "ci-runner/1.0".into()))
            && clients.contains(&("198.51.100.4".into(), "curl/8.5.0".into())),
        "each gate's client, as trusted_proxies says: {clients:?}"
    );

    // The list shows the week's requests of each token.
    let list = a
        .admin()
        .get("/admin/v1/tokens?workspace=ws_1")
        .await
        .json();
    let listed = &list["tokens"][0];
    assert_eq!(listed["id"], id.as_str());
    assert_eq!(
        listed["requests_7d"],
        serde_json::json!({"allowed": 5, "refused": 1})
    );
}

#[tokio::test]
async fn a_known_tokens_refusals_count_with_the_last_code_and_unknown_tokens_nowhere() {
    let gate = InProcessGate::embedded().await;
    let (id, secret) = create_token(
        &gate,
        workspace_token("Nightly", "ws_1", "workspace_viewer", "7d"),
    )
    .await;
    assert_eq!(
        ask(&gate, &secret, WS1_PROJECTS, "192.0.2.1", "nightly/2").await,
        200
    );
    let r = gate
        .admin()
        .post_empty(&format!("/admin/v1/tokens/{id}/disable"))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        ask(&gate, &secret, WS1_PROJECTS, "192.0.2.1", "nightly/2").await,
        401
    );
    // Not a token the gate knows: counted for no token.
    let unknown = TokenSecret::generate().unwrap();
    assert_eq!(
        ask(&gate, unknown.expose(), WS1_PROJECTS, "192.0.2.1", "x").await,
        401
    );

    // The proxy door counts too (allowed, whatever the upstream on the
    // default address, usually none, answered).
    let (proxied, proxied_secret) = create_token(
        &gate,
        workspace_token("Proxied", "ws_1", "workspace_viewer", "7d"),
    )
    .await;
    let answer = gate
        .proxy()
        .request(Method::GET, WS1_PROJECTS)
        .token(&proxied_secret)
        .header("user-agent", "through-the-proxy/1")
        .go()
        .await;
    assert!(
        answer.status != StatusCode::UNAUTHORIZED && answer.status != StatusCode::FORBIDDEN,
        "{}",
        answer.status
    );
    let p = usage_when(&gate, &proxied, 1, 0).await;
    assert_eq!(p["clients"][0]["user_agent"], "through-the-proxy/1");

    // Asking the gate what a token is (self-inspection) is a use of it too:
    // whoever holds a leaked value and looks it up leaves a trace. (A token
    // of its own: a token's clients are noted at most once a second,
    // `CLIENT_GAP_MS`, and the proxied request above may be that recent.)
    let (inspected, inspected_secret) = create_token(
        &gate,
        workspace_token("Inspected", "ws_1", "workspace_viewer", "7d"),
    )
    .await;
    let answer = gate
        .proxy()
        .request(Method::GET, "/.well-known/hawzu-token")
        .token(&inspected_secret)
        .header("user-agent", "who-am-i/1")
        .header("x-forwarded-for", "192.0.2.77")
        .go()
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    let p = usage_when(&gate, &inspected, 1, 0).await;
    let clients: Vec<(&str, &str)> = p["clients"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| Some((c["address"].as_str()?, c["user_agent"].as_str()?)))
        .collect();
    assert!(clients.contains(&("192.0.2.77", "who-am-i/1")), "{p}");

    let u = usage_when(&gate, &id, 1, 1).await;
    assert_eq!(u["last_refusal"]["code"], "token_disabled");
    assert!(u["last_refusal"]["at"].as_str().unwrap().ends_with('Z'));

    // The caller check and the query's own checks.
    let bad = gate
        .admin()
        .get(&format!("/admin/v1/tokens/{id}/usage?since=1m&x=1"))
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let fields = &bad.json()["fields"];
    assert!(
        fields["since"].is_string() && fields["x"].is_string(),
        "{fields}"
    );
    let missing = gate
        .admin()
        .get(&format!(
            "/admin/v1/tokens/{}/usage",
            TokenId::generate().unwrap()
        ))
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

/// A token whose `id:` key Redis lost (evicted under a `volatile-*`
/// policy, or a fail-over before it replicated) still authorizes by its
/// secret, and a list meanwhile takes its index entries away (it cannot
/// tell the lost key from a dropped record's). Its next use makes both
/// again, so it can be shown, listed and revoked by id: with an expiry and
/// without one.
#[tokio::test]
async fn a_token_whose_id_key_was_lost_is_found_by_id_again_once_used() {
    let prefix = unique_prefix("usage_lost_id");
    let gate = redis_gate(&prefix, &[]).await;
    for expires in ["30d", "never"] {
        let (id, secret) = create_token(
            &gate,
            workspace_token("CI", "ws_1", "workspace_viewer", expires),
        )
        .await;
        lose_id_key(&prefix, &id).await;
        assert!(!listed(&gate, &id).await, "{expires}: the list lost it");
        let show = format!("/admin/v1/tokens/{id}");
        assert_eq!(gate.admin().get(&show).await.status, StatusCode::NOT_FOUND);

        assert_eq!(
            ask(&gate, &secret, WS1_PROJECTS, "192.0.2.1", "ci/1").await,
            StatusCode::OK
        );
        eventually("the token found by id again", FLUSHED, || async {
            (gate.admin().get(&show).await.status == StatusCode::OK).then_some(())
        })
        .await;
        assert!(listed(&gate, &id).await, "{expires}: listed again");
        let revoked = gate.admin().delete(&show).await;
        assert_eq!(revoked.status, StatusCode::OK, "{expires}: revoked by id");
        assert_eq!(
            ask(&gate, &secret, WS1_PROJECTS, "192.0.2.1", "ci/1").await,
            StatusCode::UNAUTHORIZED
        );
    }
}

#[tokio::test]
async fn a_token_caller_sees_usage_only_of_tokens_it_may_reach() {
    let gate = InProcessGate::embedded().await;
    let (_, manager) = create_token(
        &gate,
        workspace_token("Admin bot", "ws_1", "workspace_manager", "7d"),
    )
    .await;
    let (viewer_id, _) = create_token(
        &gate,
        workspace_token("Viewer", "ws_1", "workspace_viewer", "7d"),
    )
    .await;
    let (other_ws, _) = create_token(
        &gate,
        workspace_token("Elsewhere", "ws_2", "workspace_viewer", "7d"),
    )
    .await;
    let (mgr_id, _) = create_token(
        &gate,
        workspace_token("Another manager", "ws_1", "workspace_manager", "7d"),
    )
    .await;
    let (_, coordinator) = create_token(
        &gate,
        workspace_token("Coordinator bot", "ws_1", "workspace_coordinator", "7d"),
    )
    .await;
    let as_token =
        |secret: &str| common::Http::new(format!("http://{}", gate.addrs.admin)).bearer(secret);
    let ok = as_token(&manager)
        .get(&format!("/admin/v1/tokens/{viewer_id}/usage"))
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    let hidden = as_token(&manager)
        .get(&format!("/admin/v1/tokens/{other_ws}/usage"))
        .await;
    assert_eq!(
        hidden.status,
        StatusCode::NOT_FOUND,
        "another workspace's token"
    );
    // A coordinator has no tokens:manage: not a caller at all.
    let refused = as_token(&coordinator)
        .get(&format!("/admin/v1/tokens/{mgr_id}/usage"))
        .await;
    assert!(
        refused.status == StatusCode::FORBIDDEN || refused.status == StatusCode::UNAUTHORIZED,
        "{}",
        refused.status
    );
}

#[tokio::test]
async fn usage_survives_a_restart_of_an_embedded_gate_with_pending_counts_flushed_at_shutdown() {
    let gate = InProcessGate::embedded().await;
    let (id, secret) = create_token(
        &gate,
        workspace_token("Restart", "ws_1", "workspace_viewer", "7d"),
    )
    .await;
    for _ in 0..4 {
        assert_eq!(
            ask(&gate, &secret, WS1_PROJECTS, "192.0.2.9", "r/1").await,
            200
        );
    }
    let dir = gate.shutdown().await;
    let again = InProcessGate::start_in(dir, &[]).await;
    // No waiting: what was counted was written when the gate stopped.
    let u = usage(&again, &id, "?since=24h").await;
    assert_eq!(u["totals"], serde_json::json!({"allowed": 4, "refused": 0}));
    assert_eq!(u["clients"][0]["address"], "192.0.2.9");
    assert_eq!(u["clients"][0]["user_agent"], "r/1");
}

#[test]
fn the_cli_shows_usage_and_lists_requests_of_the_last_week() {
    let dir = tempfile::tempdir().unwrap();
    let gate = GateProcess::start(dir.path(), "");
    let created = gate.cli(&[
        "token",
        "create",
        "--name",
        "CI Runner",
        "--workspace",
        "ws_1",
        "--role",
        "workspace_viewer",
        "--expires",
        "7d",
        "--json",
    ]);
    assert_eq!(created.code, 0, "{}", created.stderr);
    let v = created.json();
    let id = v["token"]["id"].as_str().unwrap().to_owned();
    let secret = v["secret"].as_str().unwrap().to_owned();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for _ in 0..2 {
            let s = send(gate.auth, Method::GET, "/auth/nginx")
                .token(&secret)
                .original("GET", WS1_PROJECTS)
                .header("user-agent", "ci-runner/1.0")
                .go()
                .await
                .status;
            assert_eq!(s, 200);
        }
    });
    common::wait_until("the usage to be flushed", FLUSHED, || {
        gate.cli(&["token", "usage", &id, "--json"]).json()["totals"]["allowed"] == 2
    });
    let text = gate.cli(&["token", "usage", &id, "--since", "24h"]);
    assert_eq!(text.code, 0, "{}", text.stderr);
    for expected in [
        "allowed       2",
        "refused       0",
        "ci-runner/1.0",
        "127.0.0.1",
        "HOUR",
    ] {
        assert!(
            text.stdout.contains(expected),
            "{expected:?} in:\n{}",
            text.stdout
        );
    }
    let list = gate.cli(&["token", "list"]);
    assert!(
        list.stdout.lines().next().unwrap().ends_with("REQ 7D"),
        "{}",
        list.stdout
    );
    assert!(
        list.stdout.lines().nth(1).unwrap().ends_with(" 2"),
        "{}",
        list.stdout
    );
    let json = gate.cli(&["token", "list", "--json"]).json();
    assert_eq!(json["tokens"][0]["requests_7d"]["allowed"], 2);
    let unused = gate
        .cli(&["token", "list", "--unused", "30d", "--json"])
        .json();
    assert_eq!(
        unused["tokens"],
        serde_json::json!([]),
        "a new token is not unused"
    );

    let bad = gate.cli(&["token", "usage", &id, "--since", "400d"]);
    assert_eq!(bad.code, 1, "beyond usage.retention: {}", bad.stderr);
    assert!(bad.stderr.contains("--since"), "{}", bad.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grpc_door_counts_with_the_clients_user_agent() {
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
        HttpRequest, Request as AttrRequest,
    };
    use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
    use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};

    let gate = InProcessGate::embedded().await;
    let (id, secret) = create_token(
        &gate,
        workspace_token("Envoy", "ws_1", "workspace_viewer", "7d"),
    )
    .await;
    let mut client = AuthorizationClient::connect(format!("http://{}", gate.addrs.grpc))
        .await
        .unwrap();
    let check = |path: &str| CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(AttrRequest {
                http: Some(HttpRequest {
                    method: "GET".into(),
                    path: path.into(),
                    headers: [
                        ("authorization".to_owned(), format!("Bearer {secret}")),
                        ("user-agent".to_owned(), "envoy-client/3".to_owned()),
                    ]
                    .into_iter()
                    .collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    let ok = client
        .check(check(WS1_PROJECTS))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.status.unwrap().code, 0, "allowed");
    let no = client.check(check("/login")).await.unwrap().into_inner();
    assert_eq!(no.status.unwrap().code, 7, "PERMISSION_DENIED");

    let u = usage_when(&gate, &id, 1, 1).await;
    assert_eq!(u["last_refusal"]["code"], "no_matching_rule");
    assert_eq!(u["clients"][0]["user_agent"], "envoy-client/3");
}
