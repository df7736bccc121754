//! Unused tokens: `token list --unused` (never used, or not lately; a new
//! token is unused only since its creation) and the unused-token policy
//! (`usage.disable_unused_after`) on a fleet of two gates, each running
//! it: every unused token disabled once, as `policy:unused`, with one
//! `auto_disable` audit event.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::time::Duration;

use hawzu_gate::store::redis::RedisOptions;
use hawzu_gate::store::{RedisStore, TokenStore};
use hawzu_gate::token::record::RECORD_VERSION;
use hawzu_gate::token::{Scope, TokenId, TokenRecord, TokenSecret};
use http::StatusCode;
use jiff::{SignedDuration, Timestamp};
use serde_json::Value;

use common::{InProcessGate, create_token, eventually, redis_url, unique_prefix, workspace_token};

/// Longest wait for the policy's first sweep (at start).
const SWEPT: Duration = Duration::from_secs(20);

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

fn aged(name: &str, created_days_ago: i64, used_days_ago: Option<i64>) -> TokenRecord {
    let ago = |d: i64| {
        let t = Timestamp::now() - SignedDuration::from_hours(24 * d);
        Timestamp::from_second(t.as_second()).unwrap()
    };
    TokenRecord {
        v: RECORD_VERSION,
        id: TokenId::generate().unwrap(),
        name: name.into(),
        workspace_id: "ws_1".into(),
        scope: Scope::Workspace {
            role: "workspace_viewer".into(),
        },
        created_by: "tests".into(),
        created_at: ago(created_days_ago),
        expires_at: None,
        disabled_at: None,
        disabled_by: None,
        revoked_at: None,
        revoked_by: None,
        last_used_at: used_days_ago.map(ago),
        rotated_from: None,
        description: None,
        rotated_to: None,
        allow_from: Vec::new(),
        not_before: None,
        limits_by: None,
    }
}

/// Writes `records` into the Redis store under `prefix`, as the admin API
/// would have long ago.
async fn seed(prefix: &str, records: &[&TokenRecord]) {
    let store = RedisStore::new(RedisOptions {
        url: redis_url(),
        key_prefix: prefix.to_owned(),
        timeout: Duration::from_secs(10),
        retention: Duration::from_secs(30 * 24 * 3600),
    })
    .unwrap();
    for r in records {
        store
            .create(&TokenSecret::generate().unwrap().hash(), r)
            .await
            .unwrap();
    }
}

fn ids(list: &Value) -> Vec<String> {
    list["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn list_unused_shows_tokens_never_used_or_not_lately_and_never_a_new_one() {
    let prefix = unique_prefix("usage_unused_list");
    let never = aged("never used", 40, None);
    let lately = aged("used lately", 40, Some(2));
    let long_ago = aged("used long ago", 100, Some(45));
    seed(&prefix, &[&never, &lately, &long_ago]).await;
    let gate = redis_gate(&prefix, &[]).await;
    let (fresh, _) = create_token(
        &gate,
        workspace_token("fresh", "ws_1", "workspace_viewer", "7d"),
    )
    .await;
    let mut unused = ids(&gate.admin().get("/admin/v1/tokens?unused=30d").await.json());
    unused.sort();
    let mut expected = vec![never.id.to_string(), long_ago.id.to_string()];
    expected.sort();
    assert_eq!(unused, expected);
    assert!(
        !unused.contains(&fresh),
        "a new token is unused only since its creation"
    );
    let bad = gate.admin().get("/admin/v1/tokens?unused=soon").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.json()["fields"]["unused"].is_string());
}

#[tokio::test]
async fn the_unused_policy_disables_each_unused_token_once_on_a_fleet_and_says_so() {
    let prefix = unique_prefix("usage_unused_policy");
    let never = aged("never used", 40, None);
    let lately = aged("used lately", 40, Some(2));
    let mut by_admin = aged("disabled by an operator", 40, None);
    by_admin.disabled_at = Some(Timestamp::from_second(Timestamp::now().as_second() - 60).unwrap());
    by_admin.disabled_by = Some("admin".into());
    seed(&prefix, &[&never, &lately, &by_admin]).await;
    // Two gates run the policy (one of them sweeps: a fleet chore).
    let policy = [("usage.disable_unused_after", "30d")];
    let a = redis_gate(&prefix, &policy).await;
    let b = redis_gate(&prefix, &policy).await;
    let (fresh, _) = create_token(
        &a,
        workspace_token("fresh", "ws_1", "workspace_viewer", "7d"),
    )
    .await;

    let show = |gate: &InProcessGate, id: String| {
        let admin = gate.admin();
        async move { admin.get(&format!("/admin/v1/tokens/{id}")).await.json() }
    };
    let disabled = eventually("the policy to disable the unused token", SWEPT, || async {
        let t = show(&b, never.id.to_string()).await;
        (t["token"]["state"] == "disabled").then_some(t)
    })
    .await;
    assert_eq!(disabled["token"]["disabled_by"], "policy:unused");
    let at = disabled["token"]["disabled_at"].clone();
    // One write, seen alike through both gates.
    let from_a = show(&a, never.id.to_string()).await;
    assert_eq!(from_a["token"]["disabled_at"], at);
    // One of the two swept (a fleet chore; the next sweep is an hour on).
    let sweeps = |gate: &InProcessGate| {
        let ops = gate.ops();
        async move {
            let text = String::from_utf8(ops.get("/metrics").await.body.to_vec()).unwrap();
            text.lines()
                .find_map(|l| {
                    l.strip_prefix(
                        "hawzu_gate_chore_runs_total{chore=\"unused-sweep\",result=\"done\"} ",
                    )
                })
                .expect("the sweep's run counter in /metrics")
                .parse::<u64>()
                .unwrap()
        }
    };
    let ran = eventually(
        "the sweep to be counted",
        Duration::from_secs(10),
        || async {
            let ran = (sweeps(&a).await, sweeps(&b).await);
            (ran.0 + ran.1 >= 1).then_some(ran)
        },
    )
    .await;
    assert_eq!(
        ran.0 + ran.1,
        1,
        "{ran:?}: one gate sweeps, the other skips"
    );
    for (id, state, by) in [
        (lately.id.to_string(), "enabled", Value::Null),
        (fresh.clone(), "enabled", Value::Null),
        (by_admin.id.to_string(), "disabled", Value::from("admin")),
    ] {
        let t = show(&a, id.clone()).await;
        assert_eq!(t["token"]["state"], state, "{id}");
        assert_eq!(
            t["token"]
                .get("disabled_by")
                .cloned()
                .unwrap_or(Value::Null),
            by,
            "{id}"
        );
    }
    // One audit event, by the gate, with the reason, readable from either gate.
    let events = b
        .admin()
        .get(&format!("/admin/v1/audit?token={}", never.id))
        .await
        .json();
    let events = events["events"].as_array().unwrap().clone();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["action"], "auto_disable");
    assert_eq!(events[0]["actor"], "gate");
    assert!(
        events[0]["reason"]
            .as_str()
            .unwrap()
            .contains("unused for 40 days"),
        "{}",
        events[0]["reason"]
    );
    assert_eq!(events[0]["after"]["disabled_by"], "policy:unused");
    // A token caller may enable what the policy disabled (not an operator's
    // decision).
    let (_, manager) = create_token(
        &a,
        workspace_token("bot", "ws_1", "workspace_manager", "7d"),
    )
    .await;
    let enabled = common::Http::new(format!("http://{}", a.addrs.admin))
        .bearer(&manager)
        .post_empty(&format!("/admin/v1/tokens/{}/enable", never.id))
        .await;
    assert_eq!(enabled.status, StatusCode::OK);
}

#[tokio::test]
async fn a_manager_token_used_only_on_the_admin_api_is_not_unused() {
    // A CI job that only manages tokens calls the admin API, never the
    // API behind the gate: that is use, and the unused policy must not
    // take it for a forgotten token.
    let gate = InProcessGate::start(&[("roles.token_admin", "tokens:manage")]).await;
    let (id, manager) = common::create_token(
        &gate,
        common::workspace_token("Token manager", "ws_1", "token_admin", "30d"),
    )
    .await;
    let api = common::Http::new(format!("http://{}", gate.addrs.admin)).bearer(&manager);
    assert_eq!(
        api.get("/admin/v1/tokens").await.status,
        http::StatusCode::OK
    );
    common::eventually(
        "the admin API use to be noted",
        std::time::Duration::from_secs(15),
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
}
