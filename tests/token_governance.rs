//! Governance (`[tokens]`: the longest lifetime and the highest role,
//! globally and per workspace) at create, rotate and update; the
//! `hawzu_gate_tokens_expiring` gauge from the background scan; and
//! self-inspection (`GET /.well-known/hawzu-token`) on the proxy and auth
//! listeners.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::{Value, json};

use common::{InProcessGate, TestUpstream, eventually, project_token, workspace_token};

const GOVERNED: &str = r#"
[tokens]
max_lifetime = "90d"
max_role = "workspace_member"

[tokens.workspaces."ws_strict"]
max_lifetime = "7d"
max_role = "workspace_viewer"
"#;

async fn created(gate: &InProcessGate, body: Value) -> Value {
    let a = gate.admin().post("/admin/v1/tokens", body).await;
    assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
    a.json()
}

async fn refused_fields(gate: &InProcessGate, body: Value) -> Value {
    let a = gate.admin().post("/admin/v1/tokens", body).await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{:?}", a.body);
    a.json()["fields"].clone()
}

#[tokio::test]
async fn lifetimes_and_roles_are_held_to_the_limits_at_create_rotate_and_update() {
    let gate = InProcessGate::start_with_toml(GOVERNED, &[]).await;
    // Create: `never`, a later expiry and a higher role are refused, each
    // naming its limit.
    let f = refused_fields(
        &gate,
        workspace_token("A", "ws_1", "workspace_viewer", "never"),
    )
    .await;
    assert!(
        f["expires"]
            .as_str()
            .unwrap()
            .contains("tokens.max_lifetime is 90d"),
        "{f}"
    );
    let f = refused_fields(
        &gate,
        workspace_token("A", "ws_1", "workspace_viewer", "1y"),
    )
    .await;
    assert!(f["expires"].as_str().unwrap().contains("90d"), "{f}");
    let f = refused_fields(
        &gate,
        workspace_token("A", "ws_1", "workspace_manager", "30d"),
    )
    .await;
    assert!(
        f["scope.role"]
            .as_str()
            .unwrap()
            .contains("tokens.max_role (`workspace_member`)"),
        "{f}"
    );
    // Project roles too, by permission subset.
    created(
        &gate,
        project_token("P", "ws_1", &[("proj_a", "project_member")], "30d"),
    )
    .await;
    let f = refused_fields(
        &gate,
        project_token(
            "P",
            "ws_1",
            &[("proj_a", "project_viewer"), ("proj_b", "project_manager")],
            "30d",
        ),
    )
    .await;
    assert!(f["scope.projects[1].role"].is_string(), "{f}");
    // A workspace's own limits apply on top of the global ones.
    let f = refused_fields(
        &gate,
        workspace_token("S", "ws_strict", "workspace_member", "3d"),
    )
    .await;
    assert!(
        f["scope.role"].as_str().unwrap().contains("ws_strict"),
        "{f}"
    );
    let f = refused_fields(
        &gate,
        workspace_token("S", "ws_strict", "workspace_viewer", "30d"),
    )
    .await;
    assert!(
        f["expires"]
            .as_str()
            .unwrap()
            .contains(r#"tokens.workspaces."ws_strict".max_lifetime (7d)"#),
        "{f}"
    );

    // Rotate: a successor's expiry within the limit; update: a new expiry too.
    let ok = created(
        &gate,
        workspace_token("R", "ws_1", "workspace_member", "60d"),
    )
    .await;
    let id = ok["token"]["id"].as_str().unwrap().to_owned();
    let a = gate
        .admin()
        .post(
            &format!("/admin/v1/tokens/{id}/rotate"),
            json!({"expires": "1y"}),
        )
        .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{:?}", a.body);
    assert!(
        a.json()["fields"]["expires"]
            .as_str()
            .unwrap()
            .contains("90d")
    );
    let a = gate
        .admin()
        .post(
            &format!("/admin/v1/tokens/{id}/rotate"),
            json!({"expires": "80d"}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
    let new_id = a.json()["token"]["id"].as_str().unwrap().to_owned();
    let a = gate
        .admin()
        .request(Method::PATCH, &format!("/admin/v1/tokens/{new_id}"))
        .json(json!({"expires": "30d"}))
        .go()
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
}

#[tokio::test]
async fn a_bad_limit_is_refused_at_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hawzu-gate.toml");
    for (toml, key) in [
        (
            "[tokens]\nmax_lifetime = \"forever\"\n",
            "tokens.max_lifetime",
        ),
        ("[tokens]\nmax_role = \"boss\"\n", "tokens.max_role"),
        (
            "[tokens.workspaces.\"ws_1\"]\nmax_lifetime = \"5m\"\n",
            "tokens.workspaces.\"ws_1\".max_lifetime",
        ),
    ] {
        std::fs::write(&file, toml).unwrap();
        let env = common::test_config(dir.path(), &[]);
        let err = hawzu_gate::config::load_from(Some(&file), env).unwrap_err();
        assert!(err.to_string().contains(key), "{key}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_expiring_gauge_counts_usable_tokens_per_workspace_and_window() {
    let gate = InProcessGate::start(&[("tokens.expiry_scan_interval", "200ms")]).await;
    for (ws, expires) in [
        ("ws_1", "12h"),
        ("ws_1", "5d"),
        ("ws_1", "20d"),
        ("ws_1", "never"),
        ("ws_2", "3d"),
    ] {
        created(&gate, workspace_token("E", ws, "workspace_viewer", expires)).await;
    }
    let off = created(
        &gate,
        workspace_token("Off", "ws_2", "workspace_viewer", "2d"),
    )
    .await;
    let off = off["token"]["id"].as_str().unwrap().to_owned();
    gate.admin()
        .post_empty(&format!("/admin/v1/tokens/{off}/disable"))
        .await;
    let want = [
        ("ws_1", "1d", 1),
        ("ws_1", "7d", 2),
        ("ws_1", "30d", 3),
        ("ws_2", "1d", 0),
        ("ws_2", "7d", 1),
        ("ws_2", "30d", 1),
    ];
    let ops = gate.ops();
    eventually(
        "the scan to count every token",
        Duration::from_secs(10),
        || {
            let ops = ops.clone();
            async move {
                let text = String::from_utf8(ops.get("/metrics").await.body.to_vec()).unwrap();
                want.iter()
                    .all(|(ws, w, n)| {
                        text.contains(&format!(
                            "hawzu_gate_tokens_expiring{{within=\"{w}\",workspace=\"{ws}\"}} {n}\n"
                        ))
                    })
                    .then_some(())
            }
        },
    )
    .await;
}

/// `hawzu_gate_chore_runs_total{chore="expiry-scan",result="done"}` of a
/// gate.
async fn scans_done(gate: &InProcessGate) -> u64 {
    let text = String::from_utf8(gate.ops().get("/metrics").await.body.to_vec()).unwrap();
    text.lines()
        .find_map(|l| {
            l.strip_prefix("hawzu_gate_chore_runs_total{chore=\"expiry-scan\",result=\"done\"} ")
        })
        .expect("the chore's run counter in /metrics")
        .parse()
        .unwrap()
}

async fn gauge_shows(gate: &InProcessGate, ws: &str, within: &str, n: u64) -> bool {
    let text = String::from_utf8(gate.ops().get("/metrics").await.body.to_vec()).unwrap();
    text.contains(&format!(
        "hawzu_gate_tokens_expiring{{within=\"{within}\",workspace=\"{ws}\"}} {n}\n"
    ))
}

/// The expiry scan reads every token: a fleet runs it on one gate at a
/// time, and every gate's gauge shows what that gate counted. Two gates on
/// one Redis: while both run, one scans round after round and the other
/// only reads the rows it shared; when the scanning gate stops, the other
/// takes the chore over within two intervals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_scans_for_expiring_tokens_on_one_gate_at_a_time() {
    let prefix = common::unique_prefix("expiry-chore");
    let redis = common::redis_url();
    let settings = [
        ("store.backend", "redis"),
        ("store.redis.url", redis.as_str()),
        ("store.redis.key_prefix", prefix.as_str()),
        ("tokens.expiry_scan_interval", "500ms"),
        ("store.timeout", "2s"),
    ];
    let a = InProcessGate::start(&settings).await;
    let b = InProcessGate::start(&settings).await;
    created(&a, workspace_token("E", "ws_1", "workspace_viewer", "5d")).await;
    for gate in [&a, &b] {
        eventually(
            "both gauges to count the token",
            Duration::from_secs(10),
            || async { gauge_shows(gate, "ws_1", "7d", 1).await.then_some(()) },
        )
        .await;
    }
    // One scan a round, not one per gate: six more scans take six rounds
    // (a round late on a loaded machine only slows them), where two gates
    // scanning each would do them in three. A hand-over in between (a
    // store error gives the chore up) adds one scan at most.
    let started = std::time::Instant::now();
    let before = [scans_done(&a).await, scans_done(&b).await];
    let ran = eventually("six more scans", Duration::from_secs(30), || async {
        let ran = [
            scans_done(&a).await - before[0],
            scans_done(&b).await - before[1],
        ];
        (ran[0] + ran[1] >= 6).then_some(ran)
    })
    .await;
    let rounds = started.elapsed().as_millis().div_ceil(500);
    assert!(
        u128::from(ran[0] + ran[1]) <= rounds + 2,
        "{ran:?} scans in {rounds} rounds: both gates scanned"
    );
    assert!(ran[0].min(ran[1]) <= 1, "{ran:?}: both gates kept scanning");
    // The scanning gate stops: the other takes over, and its own count
    // moves with the store.
    let (scanning, other) = if ran[0] >= ran[1] { (a, b) } else { (b, a) };
    scanning.shutdown().await;
    let taken = scans_done(&other).await;
    created(
        &other,
        workspace_token("E", "ws_1", "workspace_viewer", "5d"),
    )
    .await;
    eventually(
        "the other gate to take the scan over",
        Duration::from_secs(10),
        || async {
            (scans_done(&other).await > taken && gauge_shows(&other, "ws_1", "7d", 2).await)
                .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_can_ask_what_it_is_and_nothing_reaches_the_api() {
    let upstream = TestUpstream::start().await;
    let url = upstream.url();
    let gate = InProcessGate::start(&[("upstream.url", url.as_str())]).await;
    let body = project_token(
        "CI Runner",
        "ws_1",
        &[("proj_a", "project_member"), ("proj_b", "project_viewer")],
        "30d",
    );
    let made = created(&gate, body).await;
    let id = made["token"]["id"].as_str().unwrap().to_owned();
    let secret = made["secret"].as_str().unwrap().to_owned();
    let expires = made["token"]["expires_at"].as_str().unwrap().to_owned();

    for (listener, http) in [("proxy", gate.proxy()), ("auth", gate.auth())] {
        let a = http
            .request(Method::GET, "/.well-known/hawzu-token")
            .token(&secret)
            .go()
            .await;
        assert_eq!(a.status, StatusCode::OK, "{listener}: {:?}", a.body);
        let v = a.json();
        assert_eq!(v["id"], id.as_str(), "{listener}");
        assert_eq!(v["name"], "CI Runner");
        assert_eq!(v["type"], "project");
        assert_eq!(v["workspace_id"], "ws_1");
        assert_eq!(v["expires_at"], expires.as_str());
        assert_eq!(v["scopes"][0]["project_id"], "proj_a");
        assert_eq!(v["scopes"][1]["role"], "project_viewer");
        let perms = v["scopes"][1]["permissions"].as_array().unwrap();
        assert!(perms.iter().any(|p| p == "testcases:read"), "{v}");
        assert!(!perms.iter().any(|p| p == "testcases:write"), "{v}");
        assert!(!a.body.windows(4).any(|w| w == b"hwz_"), "never the secret");
        assert_eq!(a.header("cache-control"), Some("no-store"));
        assert_eq!(a.header("hawzu-token-expires"), Some(expires.as_str()));

        // Refused like any request when the token is not valid.
        let a = http
            .request(Method::GET, "/.well-known/hawzu-token")
            .go()
            .await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{listener}");
        assert_eq!(a.json()["error"], "missing_token");
        let a = http
            .request(Method::GET, "/.well-known/hawzu-token")
            .token("hwz_000000000000000000000000000000AAAAAA")
            .go()
            .await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{listener}");
    }
    gate.admin()
        .post_empty(&format!("/admin/v1/tokens/{id}/disable"))
        .await;
    let a = gate
        .proxy()
        .request(Method::GET, "/.well-known/hawzu-token")
        .token(&secret)
        .go()
        .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(a.json()["error"], "token_disabled");
    assert_eq!(upstream.count(), 0, "self-inspection is never forwarded");
}

#[tokio::test]
async fn a_token_caller_learns_nothing_of_another_workspaces_limits() {
    // Another tenant's limits are its own business: a token of ws_1 asking
    // to create in ws_secret is refused for the workspace, whatever it
    // asked, never with ws_secret's limits.
    let gate = InProcessGate::start_with_toml(
        "[tokens.workspaces.\"ws_secret\"]\nmax_lifetime = \"7d\"\nmax_role = \"workspace_viewer\"\n",
        &[("roles.token_admin", "tokens:manage")],
    )
    .await;
    let caller = created(
        &gate,
        workspace_token("Manager", "ws_1", "token_admin", "never"),
    )
    .await;
    let api = common::Http::new(format!("http://{}", gate.addrs.admin))
        .bearer(caller["secret"].as_str().unwrap());
    for (role, expires) in [
        ("workspace_viewer", "never"),
        ("workspace_member", "1d"),
        ("no_such_role", "1d"),
        ("workspace_viewer", "1d"),
    ] {
        for ws in ["ws_secret", "ws_other"] {
            let a = api
                .post(
                    "/admin/v1/tokens",
                    workspace_token("Probe", ws, role, expires),
                )
                .await;
            let body = String::from_utf8_lossy(&a.body).into_owned();
            assert_eq!(
                a.status,
                StatusCode::FORBIDDEN,
                "{ws} {role} {expires}: {body}"
            );
            assert!(
                !body.contains("ws_secret\"") && !body.contains("7d"),
                "{body}"
            );
            assert!(body.contains("manages workspace `ws_1` only"), "{body}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asking_again_and_again_reads_the_store_once() {
    // Any valid token, whatever its role, may ask what it is: at line rate
    // that must not become a store read per request (counted, or not).
    let gate = InProcessGate::start(&[]).await;
    let made = created(
        &gate,
        workspace_token("CI Runner", "ws_1", "workspace_viewer", "30d"),
    )
    .await;
    let secret = made["secret"].as_str().unwrap().to_owned();
    let gets = || async {
        let text = String::from_utf8(gate.ops().get("/metrics").await.body.to_vec()).unwrap();
        text.lines()
            .filter(|l| l.starts_with("hawzu_gate_store_calls_total{op=\"get\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    // The token in the cache first: its own lookup is then no read.
    let a = gate
        .proxy()
        .request(Method::GET, "/api/v1/workspaces/ws_1/projects")
        .token(&secret)
        .go()
        .await;
    assert_ne!(a.status, StatusCode::UNAUTHORIZED);
    let before = gets().await;
    // Twenty at once: they share one read.
    let asked = futures_util::future::join_all((0..20).map(|_| {
        gate.proxy()
            .request(Method::GET, "/.well-known/hawzu-token")
            .token(&secret)
            .go()
    }))
    .await;
    for a in asked {
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.json()["name"], "CI Runner");
    }
    // One read of the whole record, for the name, counted as every store
    // call is.
    let read = gets().await - before;
    assert_eq!(read, 1.0, "store reads for 20 inspections");
}
