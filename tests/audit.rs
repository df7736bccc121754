//! The audit log (issue 13 item 4), against both stores: every admin
//! change is exactly one event with its actor, time, token, workspace,
//! before/after, client address and request id, read back through
//! `GET /admin/v1/audit` on either gate of a fleet; no secret or hash in
//! the stored bytes; a change whose event cannot be written is answered as
//! done, counted and logged. (`tests/audit_log.rs`: reading the log.)

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use hawzu_gate::audit::Position;
use hawzu_gate::token::TokenSecret;
use http::{Method, StatusCode};
use jiff::Timestamp;
use serde_json::{Value, json};

use common::{Answer, GateProcess, Http, InProcessGate, redis_url, unique_prefix, workspace_token};

// === helpers ===

async fn created(a: Answer) -> (String, String) {
    assert_eq!(
        a.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    let v = a.json();
    (
        v["token"]["id"].as_str().unwrap().to_owned(),
        v["secret"].as_str().unwrap().to_owned(),
    )
}

/// Sends an admin request with `X-Request-Id: rid`; checks the answer
/// carries the same id back.
async fn act(admin: &Http, method: Method, path: &str, body: Option<Value>, rid: &str) -> Answer {
    let mut req = admin.request(method, path).header("x-request-id", rid);
    if let Some(b) = body {
        req = req.json(b);
    }
    let a = req.go().await;
    assert_eq!(a.header("x-request-id"), Some(rid), "{path}");
    a
}

/// Every event the query string selects, newest first, following cursors.
async fn events(admin: &Http, query: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/admin/v1/audit?{query}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let a = admin.get(&path).await;
        assert_eq!(
            a.status,
            StatusCode::OK,
            "{}",
            String::from_utf8_lossy(&a.body)
        );
        let v = a.json();
        out.extend(v["events"].as_array().unwrap().iter().cloned());
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return out,
        }
    }
}

fn whole_second(v: &Value) {
    let t = v.as_str().unwrap();
    assert!(
        t.len() == 20 && t.ends_with('Z') && t.parse::<Timestamp>().is_ok(),
        "not RFC 3339 to the second: {t}"
    );
}

/// The secret and its hash (hex and raw) appear nowhere in `bytes`.
fn assert_no_secret(bytes: &[u8], secret: &str) {
    let hash = TokenSecret::parse(secret).unwrap().hash();
    let text = String::from_utf8_lossy(bytes);
    assert!(!text.contains(&secret[4..]), "the secret is stored");
    assert!(!text.contains(&hash.to_hex()), "the hash (hex) is stored");
    assert!(
        !bytes.windows(32).any(|w| w == hash.0),
        "the hash (raw) is stored"
    );
}

// === each action, exactly its event ===

/// Create, update, disable, enable, rotate, revoke on `gate`: exactly six
/// events, each with its fields. Returns the secrets handed out.
async fn every_action_is_one_event(gate: &InProcessGate) -> Vec<String> {
    let admin = gate.admin();
    let (id, secret) = created(
        act(
            &admin,
            Method::POST,
            "/admin/v1/tokens",
            Some(workspace_token(
                "CI Runner",
                "ws_audit",
                "workspace_member",
                "1y",
            )),
            "rid-create",
        )
        .await,
    )
    .await;
    let path = format!("/admin/v1/tokens/{id}");
    let ok = |a: Answer| {
        assert_eq!(
            a.status,
            StatusCode::OK,
            "{}",
            String::from_utf8_lossy(&a.body)
        )
    };
    ok(act(
        &admin,
        Method::PATCH,
        &path,
        Some(json!({"name": "CI Runner 2"})),
        "rid-update",
    )
    .await);
    ok(act(
        &admin,
        Method::POST,
        &format!("{path}/disable"),
        None,
        "rid-disable",
    )
    .await);
    ok(act(
        &admin,
        Method::POST,
        &format!("{path}/enable"),
        None,
        "rid-enable",
    )
    .await);
    let (new_id, new_secret) = created(
        act(
            &admin,
            Method::POST,
            &format!("{path}/rotate"),
            None,
            "rid-rotate",
        )
        .await,
    )
    .await;
    ok(act(
        &admin,
        Method::DELETE,
        &format!("/admin/v1/tokens/{new_id}"),
        None,
        "rid-revoke",
    )
    .await);
    // A refused change is no event.
    let refused = act(
        &admin,
        Method::POST,
        &format!("{path}/disable"),
        None,
        "rid-refused",
    )
    .await;
    assert_eq!(refused.status, StatusCode::CONFLICT);

    let all = events(&admin, "workspace=ws_audit").await;
    let actions: Vec<&str> = all.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(
        actions,
        ["revoke", "rotate", "enable", "disable", "update", "create"]
    );
    let rids: Vec<&str> = all
        .iter()
        .map(|e| e["request_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        rids,
        [
            "rid-revoke",
            "rid-rotate",
            "rid-enable",
            "rid-disable",
            "rid-update",
            "rid-create"
        ]
    );
    let ids: Vec<Position> = all
        .iter()
        .map(|e| e["id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    for e in &all {
        assert_eq!(e["actor"], "admin");
        assert_eq!(e["client"], "127.0.0.1");
        assert_eq!(e["workspace_id"], "ws_audit");
        whole_second(&e["time"]);
    }
    let [revoke, rotate, enable, disable, update, create] = &all[..] else {
        unreachable!()
    };
    assert_eq!(create["token_id"], id.as_str());
    assert_eq!(create["before"], json!({}));
    assert_eq!(create["after"]["name"], "CI Runner");
    assert_eq!(
        create["after"]["scope"],
        json!({"type": "workspace", "role": "workspace_member"})
    );
    whole_second(&create["after"]["created_at"]);
    assert_eq!(update["before"], json!({"name": "CI Runner"}));
    assert_eq!(update["after"], json!({"name": "CI Runner 2"}));
    assert_eq!(
        disable["before"],
        json!({"disabled_at": null, "disabled_by": null})
    );
    assert_eq!(disable["after"]["disabled_by"], "admin");
    whole_second(&disable["after"]["disabled_at"]);
    assert_eq!(
        enable["after"],
        json!({"disabled_at": null, "disabled_by": null})
    );
    assert_eq!(rotate["token_id"], id.as_str());
    assert_eq!(rotate["new_token_id"], new_id.as_str());
    assert_eq!(rotate["after"]["rotated_to"], new_id.as_str());
    assert_eq!(rotate["before"]["revoked_at"], Value::Null);
    assert_eq!(revoke["token_id"], new_id.as_str());
    whole_second(&revoke["after"]["revoked_at"]);

    // By token: the old token's events, and the rotate for its successor.
    let old: Vec<Value> = events(&admin, &format!("token={id}")).await;
    assert_eq!(old.len(), 5);
    let new_events = events(&admin, &format!("token={new_id}")).await;
    let new: Vec<&str> = new_events
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(new, ["revoke", "rotate"]);
    // The answers hold no secret either.
    let text = admin.get("/admin/v1/audit").await;
    assert_no_secret(&text.body, &secret);
    assert_no_secret(&text.body, &new_secret);
    vec![secret, new_secret]
}

#[tokio::test]
async fn embedded_every_action_is_exactly_one_event_and_no_secret_is_stored() {
    let gate = InProcessGate::embedded().await;
    let data = gate.loaded.settings.data_dir.clone();
    let secrets = every_action_is_one_event(&gate).await;
    let _dir = gate.shutdown().await;
    // The raw stored events: the redb table, read with the gate stopped.
    let db = redb::Database::open(data.join("tokens.redb")).unwrap();
    let txn = redb::ReadableDatabase::begin_read(&db).unwrap();
    let table: redb::TableDefinition<'_, (u64, u64), &[u8]> = redb::TableDefinition::new("audit");
    let log = txn.open_table(table).unwrap();
    let mut raw = Vec::new();
    for entry in redb::ReadableTable::iter(&log).unwrap() {
        raw.extend_from_slice(entry.unwrap().1.value());
    }
    assert!(raw.len() > 100, "six events are stored");
    for s in &secrets {
        assert_no_secret(&raw, s);
    }
}

#[tokio::test]
async fn redis_every_action_is_exactly_one_event_and_no_secret_is_stored() {
    let gate = InProcessGate::redis("audit-actions").await;
    let prefix = gate.loaded.settings.store.redis.key_prefix.clone();
    let secrets = every_action_is_one_event(&gate).await;
    // The raw stream, as any Redis client sees it.
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let raw: redis::Value = redis::cmd("XRANGE")
        .arg(format!("{prefix}audit"))
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    let bytes = format!("{raw:?}").into_bytes();
    let count: usize = redis::cmd("XLEN")
        .arg(format!("{prefix}audit"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(count, 6);
    for s in &secrets {
        assert_no_secret(&bytes, s);
    }
}

// === a fleet ===

#[tokio::test]
async fn an_action_on_one_gate_is_read_on_another() {
    let prefix = unique_prefix("audit-fleet");
    let env = [
        ("store.backend", "redis"),
        ("store.redis.url", &redis_url()),
        ("store.redis.key_prefix", &prefix),
    ];
    let a = InProcessGate::start(&env).await;
    let b = InProcessGate::start(&env).await;
    let (id, _) = created(
        act(
            &a.admin(),
            Method::POST,
            "/admin/v1/tokens",
            Some(workspace_token("Fleet", "ws_1", "workspace_viewer", "7d")),
            "rid-a-create",
        )
        .await,
    )
    .await;
    act(
        &b.admin(),
        Method::POST,
        &format!("/admin/v1/tokens/{id}/disable"),
        None,
        "rid-b-disable",
    )
    .await;
    for gate in [&a, &b] {
        let seen = events(&gate.admin(), &format!("token={id}")).await;
        let got: Vec<(&str, &str)> = seen
            .iter()
            .map(|e| {
                (
                    e["action"].as_str().unwrap(),
                    e["request_id"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [("disable", "rid-b-disable"), ("create", "rid-a-create")]
        );
    }
}

// === a change whose event cannot be written ===

/// The value of `hawzu_gate_audit_events_total{result="…"}` at `ops`.
async fn audit_metric(ops: &Http, result: &str) -> u64 {
    let text = String::from_utf8(ops.get("/metrics").await.body.to_vec()).unwrap();
    let series = format!("hawzu_gate_audit_events_total{{result=\"{result}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .unwrap_or_else(|| panic!("no {series} in /metrics"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_change_whose_event_cannot_be_written_is_answered_as_done_counted_and_logged() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique_prefix("audit-failed");
    let gate = GateProcess::start(
        dir.path(),
        &format!(
            "[store]\nbackend = \"redis\"\n[store.redis]\nurl = \"{}\"\nkey_prefix = \"{prefix}\"\n",
            redis_url()
        ),
    );
    let key = hawzu_gate::admin::read_key_file(&dir.path().join("data/admin.key")).unwrap();
    let admin = Http::new(format!("http://{}", gate.admin)).bearer(&key);
    let ops = Http::new(format!("http://{}", gate.ops));
    let (id, secret) = created(
        admin
            .post(
                "/admin/v1/tokens",
                workspace_token("Unaudited", "ws_1", "workspace_viewer", "7d"),
            )
            .await,
    )
    .await;
    assert_eq!(audit_metric(&ops, "recorded").await, 1);
    // The stream's key now holds a string: every XADD fails (WRONGTYPE),
    // while the token's own keys work.
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("SET")
        .arg(format!("{prefix}audit"))
        .arg("not a stream")
        .query_async(&mut conn)
        .await
        .unwrap();
    let d = admin
        .post_empty(&format!("/admin/v1/tokens/{id}/disable"))
        .await;
    assert_eq!(
        d.status,
        StatusCode::OK,
        "the change happened: it is answered so"
    );
    assert_eq!(d.json()["token"]["state"], "disabled");
    let asked = common::nginx_check_at(gate.auth, &secret, "GET", common::WS1_PROJECTS).await;
    assert_eq!(asked.header("x-hawzu-error"), Some("token_disabled"));
    assert_eq!(audit_metric(&ops, "failed").await, 1);
    assert_eq!(audit_metric(&ops, "recorded").await, 1);
    // The event is in the error log whole, and the secret is not.
    let log = gate.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("NOT recorded"))
        .unwrap_or_else(|| panic!("no error line for the lost event: {log}"));
    assert!(
        line.contains("ERROR") && line.contains(&id) && line.contains("disable"),
        "{line}"
    );
    assert_no_secret(log.as_bytes(), &secret);
    // Reading a log that cannot be read is a 503, never an empty page.
    let read = admin.get("/admin/v1/audit").await;
    assert_eq!(read.status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn a_tenant_sees_the_address_and_request_id_of_its_own_tokens_changes_only() {
    // The operator's address and request id (an admin-key change) and a
    // leak reporter's are not a tenant's to read; its own managers' are.
    let gate = InProcessGate::start(&[
        ("roles.token_admin", "tokens:manage"),
        ("listen.leaks", "127.0.0.1:0"),
    ])
    .await;
    let admin = gate.admin();
    let (_, manager) = created(
        admin
            .post(
                "/admin/v1/tokens",
                workspace_token("Manager", "ws_1", "token_admin", "30d"),
            )
            .await,
    )
    .await;
    let tenant = Http::new(format!("http://{}", gate.addrs.admin)).bearer(&manager);
    let (target, deputy) = created(
        tenant
            .post(
                "/admin/v1/tokens",
                workspace_token("Deputy", "ws_1", "token_admin", "1d"),
            )
            .await,
    )
    .await;
    let a = admin
        .send(
            http::Method::POST,
            &format!("/admin/v1/tokens/{target}/disable"),
            &[("x-request-id", "operator-change-42")],
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    // Someone reports the secret at the public door: revoked, by them.
    let leaks = Http::new(format!("http://{}", gate.addrs.leaks.unwrap()));
    let a = leaks.post("/v1/leaks", json!({"token": deputy})).await;
    assert_eq!(a.status, StatusCode::ACCEPTED);
    let seen = common::eventually(
        "the leak report's event",
        std::time::Duration::from_secs(5),
        || async {
            let seen = events(&tenant, &format!("token={target}")).await;
            seen.iter()
                .any(|e| e["actor"] == "leaks:public")
                .then_some(seen)
        },
    )
    .await;
    let by = |actor: &str| {
        seen.iter()
            .find(|e| e["actor"].as_str().unwrap().starts_with(actor))
            .unwrap_or_else(|| panic!("an event by {actor}: {seen:?}"))
            .clone()
    };
    assert_eq!(by("token:")["client"], "127.0.0.1");
    assert_eq!(by("admin")["client"], Value::Null, "{seen:?}");
    assert_eq!(by("leaks:")["client"], Value::Null, "{seen:?}");
    assert!(by("token:")["request_id"].is_string(), "{seen:?}");
    assert_eq!(by("admin")["request_id"], Value::Null, "{seen:?}");
    assert_eq!(by("leaks:")["request_id"], Value::Null, "{seen:?}");
    // The admin key reads both.
    let all = events(&admin, &format!("token={target}")).await;
    assert!(all.iter().all(|e| e["client"] == "127.0.0.1"), "{all:?}");
    assert!(
        all.iter()
            .any(|e| e["actor"] == "admin" && e["request_id"] == "operator-change-42"),
        "{all:?}"
    );
}

/// A manager sees the address and request id of changes only by tokens it
/// may act on (itself, or one within its role): a narrower manager reading
/// the log does not learn where a workspace manager works from — as it may
/// not read that token's usage or record. Before, every `token:` actor's
/// were shown to every manager of the workspace.
#[tokio::test]
async fn a_manager_sees_no_address_of_a_manager_above_its_role() {
    let gate = InProcessGate::start(&[
        ("roles.token_admin", "tokens:manage,testcases:read"),
        ("roles.ci_reader", "testcases:read"),
    ])
    .await;
    let admin = gate.admin();
    let (_, high) = created(
        admin
            .post(
                "/admin/v1/tokens",
                workspace_token("High", "ws_1", "workspace_manager", "30d"),
            )
            .await,
    )
    .await;
    let (_, low) = created(
        admin
            .post(
                "/admin/v1/tokens",
                workspace_token("Low", "ws_1", "token_admin", "30d"),
            )
            .await,
    )
    .await;
    let (target, _) = created(
        admin
            .post(
                "/admin/v1/tokens",
                workspace_token("Target", "ws_1", "ci_reader", "30d"),
            )
            .await,
    )
    .await;
    let as_high = Http::new(format!("http://{}", gate.addrs.admin)).bearer(&high);
    let a = as_high
        .send(
            Method::POST,
            &format!("/admin/v1/tokens/{target}/disable"),
            &[("x-request-id", "high-change-7")],
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    let as_low = Http::new(format!("http://{}", gate.addrs.admin)).bearer(&low);
    let seen = events(&as_low, &format!("token={target}")).await;
    let disable = seen
        .iter()
        .find(|e| e["action"] == "disable")
        .unwrap_or_else(|| panic!("the disable: {seen:?}"));
    assert!(disable["actor"].as_str().unwrap().starts_with("token:"));
    assert_eq!(disable["client"], Value::Null, "{disable}");
    assert_eq!(disable["request_id"], Value::Null, "{disable}");
    // A manager within its role (the same role here) is shown whole.
    let (_, peer) = created(
        admin
            .post(
                "/admin/v1/tokens",
                workspace_token("Peer", "ws_1", "token_admin", "30d"),
            )
            .await,
    )
    .await;
    let as_peer = Http::new(format!("http://{}", gate.addrs.admin)).bearer(&peer);
    let a = as_peer
        .send(
            Method::POST,
            &format!("/admin/v1/tokens/{target}/enable"),
            &[("x-request-id", "peer-change-8")],
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    let seen = events(&as_low, &format!("token={target}")).await;
    let enable = seen
        .iter()
        .find(|e| e["action"] == "enable")
        .unwrap_or_else(|| panic!("the enable: {seen:?}"));
    assert_eq!(enable["client"], "127.0.0.1", "{enable}");
    assert_eq!(enable["request_id"], "peer-change-8", "{enable}");
    // The workspace manager reads its own change whole.
    let mine = events(&as_high, &format!("token={target}")).await;
    let disable = mine.iter().find(|e| e["action"] == "disable").unwrap();
    assert_eq!(disable["client"], "127.0.0.1");
    assert_eq!(disable["request_id"], "high-change-7");
}

/// A revoke or disable that Redis made but whose answer came after the
/// gate stopped waiting (the caller got 503), retried: the retry finds it
/// made. The change happened, so its event is in the log — written by the
/// retry, once, with the change's own time. Before, the retry changed
/// nothing and wrote nothing: a revocation no audit showed.
#[tokio::test]
async fn a_change_that_landed_after_its_timeout_is_audited_by_the_retry() {
    let redis = common::RedisServer::start();
    // The compare-and-set is a script: its answer comes 1 s late.
    let relay =
        common::LateAnswers::start(redis.port, b"EVALSHA", std::time::Duration::from_secs(1)).await;
    let url = relay.url();
    let prefix = unique_prefix("audit-late");
    let gate = InProcessGate::start(&[
        ("store.backend", "redis"),
        ("store.redis.url", url.as_str()),
        ("store.redis.key_prefix", prefix.as_str()),
        ("store.timeout", "300ms"),
    ])
    .await;
    let admin = gate.admin();
    // A first compare-and-set loads the script (a NOSCRIPT answer held
    // back would hold back a command Redis never ran).
    let (warm, _) = created(
        admin
            .post(
                "/admin/v1/tokens",
                workspace_token("Warm", "ws_warm", "workspace_member", "7d"),
            )
            .await,
    )
    .await;
    let warmed = admin
        .post_empty(&format!("/admin/v1/tokens/{warm}/disable"))
        .await;
    assert_eq!(warmed.status, StatusCode::OK);
    for (path, action, state) in [
        ("", "revoke", "revoked"),
        ("/disable", "disable", "disabled"),
    ] {
        let (id, _) = created(
            admin
                .post(
                    "/admin/v1/tokens",
                    workspace_token("Late", "ws_late", "workspace_member", "7d"),
                )
                .await,
        )
        .await;
        let token = format!("/admin/v1/tokens/{id}");
        let change = |rid: &'static str| {
            let admin = admin.clone();
            let path = format!("{token}{path}");
            async move {
                let method = if action == "revoke" {
                    Method::DELETE
                } else {
                    Method::POST
                };
                act(&admin, method, &path, None, rid).await
            }
        };
        relay.arm();
        let first = change("late-first").await;
        assert_eq!(
            first.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{action}: {}",
            String::from_utf8_lossy(&first.body)
        );
        // Redis made it all the same.
        common::eventually(action, std::time::Duration::from_secs(10), || async {
            let a = admin.get(&token).await;
            (a.status == StatusCode::OK && a.json()["token"]["state"] == state).then_some(())
        })
        .await;
        // The changes' connection answers again.
        relay.wait_released().await;
        let retry = change("late-retry").await;
        assert_eq!(retry.status, StatusCode::OK, "{action}");
        // A third call is a repeat: no second event.
        assert_eq!(change("late-repeat").await.status, StatusCode::OK);
        let seen = events(&admin, &format!("token={id}")).await;
        let actions: Vec<&str> = seen.iter().map(|e| e["action"].as_str().unwrap()).collect();
        assert_eq!(actions, [action, "create"], "{seen:?}");
        let event = &seen[0];
        assert_eq!(event["actor"], "admin");
        assert_eq!(event["request_id"], "late-retry");
        // The change's own time, not the retry's.
        let stamp = admin.get(&token).await.json()["token"][format!("{state}_at")].clone();
        assert_eq!(event["time"], stamp, "{event}");
        assert_eq!(
            event["before"][format!("{state}_at")],
            Value::Null,
            "{event}"
        );
    }
}

/// Repeats of one revoke sent at once (a client retrying before its first
/// try's answer came): one change, so one event — the repeats that find it
/// made write it only if nobody did, under the change's claim. On both
/// stores, several rounds (a check-then-write lets two through now and
/// then).
#[tokio::test]
async fn concurrent_repeats_of_a_change_leave_exactly_one_event() {
    let prefix = unique_prefix("audit-once");
    let url = redis_url();
    let redis = [
        ("store.backend", "redis"),
        ("store.redis.url", url.as_str()),
        ("store.redis.key_prefix", prefix.as_str()),
    ];
    for (store, extra) in [("embedded", &[][..]), ("redis", &redis[..])] {
        let gate = InProcessGate::start(extra).await;
        let admin = gate.admin();
        for round in 0..10 {
            let (id, _) = created(
                admin
                    .post(
                        "/admin/v1/tokens",
                        workspace_token("Once", "ws_once", "workspace_member", "7d"),
                    )
                    .await,
            )
            .await;
            let path = format!("/admin/v1/tokens/{id}");
            let calls = (0..6).map(|_| {
                let (admin, path) = (admin.clone(), path.clone());
                async move { admin.delete(&path).await.status }
            });
            for status in futures_util::future::join_all(calls).await {
                assert_eq!(status, StatusCode::OK, "{store} round {round}");
            }
            let seen = events(&admin, &format!("token={id}")).await;
            let actions: Vec<&str> = seen.iter().map(|e| e["action"].as_str().unwrap()).collect();
            assert_eq!(actions, ["revoke", "create"], "{store} round {round}");
        }
    }
}

/// A revoke stamped by a rotate without overlap, or by the end of an
/// overlap (its successor revoked), is that event's: a `DELETE` of the old
/// token by the same caller afterwards finds it revoked and writes no
/// second, false `revoke` event (whose `before` would show a rotated token
/// never revoked).
#[tokio::test]
async fn a_delete_after_a_rotate_or_an_ended_overlap_writes_no_second_revoke() {
    let gate = InProcessGate::start(&[]).await;
    let admin = gate.admin();
    let make = || async {
        created(
            admin
                .post(
                    "/admin/v1/tokens",
                    workspace_token("Rotated", "ws_rot", "workspace_member", "7d"),
                )
                .await,
        )
        .await
        .0
    };
    let actions = |id: String| {
        let admin = admin.clone();
        async move {
            let seen = events(&admin, &format!("token={id}")).await;
            seen.iter()
                .filter(|e| e["token_id"] == id.as_str())
                .map(|e| e["action"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    // Rotated without overlap: revoked at once.
    let a = make().await;
    let r = admin
        .post_empty(&format!("/admin/v1/tokens/{a}/rotate"))
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(
        admin.delete(&format!("/admin/v1/tokens/{a}")).await.status,
        StatusCode::OK
    );
    assert_eq!(actions(a).await, ["rotate", "create"]);
    // Rotated with an overlap, then its successor revoked: the overlap ends.
    let a = make().await;
    let r = admin
        .post(
            &format!("/admin/v1/tokens/{a}/rotate"),
            json!({"overlap": "1h"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let b = r.json()["token"]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        admin.delete(&format!("/admin/v1/tokens/{b}")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        admin.delete(&format!("/admin/v1/tokens/{a}")).await.status,
        StatusCode::OK
    );
    assert_eq!(actions(a).await, ["revoke", "rotate", "create"]);
}
