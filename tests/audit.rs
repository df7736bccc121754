//! The audit log (issue 13 item 4), against both stores: every admin
//! change is exactly one event with its actor, time, token, workspace,
//! before/after, client address and request id; read back through
//! `GET /admin/v1/audit` on either gate of a fleet, page by page; a token
//! caller reads its own workspace only; no secret or hash in the stored
//! bytes; bad queries named in a 400; the log stays bounded; the CLI.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::collections::BTreeSet;

use hawzu_gate::audit::{AuditEvent, AuditQuery, Origin, Position};
use hawzu_gate::store::{AuditLog, EmbeddedStore, RedisStore, redis::RedisOptions};
use hawzu_gate::token::record::RECORD_VERSION;
use hawzu_gate::token::{Scope, TokenId, TokenRecord, TokenSecret};
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

// === pages, filters, confinement, bad queries ===

#[tokio::test]
async fn pages_follow_the_cursor_without_repeats_or_gaps() {
    let gate = InProcessGate::embedded().await;
    let admin = gate.admin();
    for i in 0..5 {
        created(
            admin
                .post(
                    "/admin/v1/tokens",
                    workspace_token(&format!("t{i}"), "ws_1", "workspace_viewer", "7d"),
                )
                .await,
        )
        .await;
    }
    let first = admin.get("/admin/v1/audit?limit=2").await.json();
    assert_eq!(first["events"].as_array().unwrap().len(), 2);
    assert!(first["next_cursor"].is_string());
    let all = events(&admin, "limit=2").await;
    let names: Vec<&str> = all
        .iter()
        .map(|e| e["after"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["t4", "t3", "t2", "t1", "t0"]);
    let ids: BTreeSet<&str> = all.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 5);
    assert_eq!(events(&admin, "since=1h").await.len(), 5);
    let later = Timestamp::now() + jiff::SignedDuration::from_hours(1);
    assert!(events(&admin, &format!("since={later}")).await.is_empty());
    assert!(events(&admin, "workspace=ws_2").await.is_empty());
}

#[tokio::test]
async fn a_token_caller_reads_its_own_workspace_only_and_is_the_actor() {
    let gate = InProcessGate::embedded().await;
    let admin = gate.admin();
    let (manager_id, manager) = created(
        admin
            .post(
                "/admin/v1/tokens",
                workspace_token("Manager", "ws_1", "workspace_manager", "30d"),
            )
            .await,
    )
    .await;
    created(
        admin
            .post(
                "/admin/v1/tokens",
                workspace_token("Other", "ws_2", "workspace_viewer", "7d"),
            )
            .await,
    )
    .await;
    let caller = Http::new(format!("http://{}", gate.addrs.admin)).bearer(&manager);
    created(
        caller
            .post(
                "/admin/v1/tokens",
                workspace_token("Made by a token", "ws_1", "workspace_viewer", "7d"),
            )
            .await,
    )
    .await;
    let seen = events(&caller, "").await;
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen.iter().all(|e| e["workspace_id"] == "ws_1"));
    assert_eq!(seen[0]["actor"], format!("token:{manager_id}"));
    let other = caller.get("/admin/v1/audit?workspace=ws_2").await;
    assert_eq!(other.status, StatusCode::FORBIDDEN);
    // The admin key reads all three.
    assert_eq!(events(&admin, "").await.len(), 3);
}

#[tokio::test]
async fn bad_query_parameters_are_named_in_a_400() {
    let gate = InProcessGate::embedded().await;
    let a = gate
        .admin()
        .get("/admin/v1/audit?token=tok_x&since=soon&limit=0&cursor=zz&workspace=a%20b&colour=red")
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let v = a.json();
    assert_eq!(v["error"], "bad_request");
    let named: BTreeSet<&str> = v["fields"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        named,
        ["colour", "cursor", "limit", "since", "token", "workspace"]
            .into_iter()
            .collect()
    );
    let twice = gate.admin().get("/admin/v1/audit?limit=1&limit=2").await;
    assert_eq!(twice.status, StatusCode::BAD_REQUEST);
    let anonymous = Http::new(format!("http://{}", gate.addrs.admin))
        .get("/admin/v1/audit")
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
}

// === the stores: bounded, paged ===

fn record() -> TokenRecord {
    TokenRecord {
        v: RECORD_VERSION,
        id: TokenId::generate().unwrap(),
        name: "bounded".into(),
        description: None,
        workspace_id: "ws_1".into(),
        scope: Scope::Workspace {
            role: "workspace_viewer".into(),
        },
        created_by: "tests".into(),
        created_at: Timestamp::now(),
        expires_at: None,
        disabled_at: None,
        disabled_by: None,
        revoked_at: None,
        last_used_at: None,
        rotated_from: None,
        rotated_to: None,
    }
}

fn everything(limit: usize) -> AuditQuery {
    AuditQuery {
        token: None,
        workspace: None,
        since: None,
        cursor: None,
        limit,
    }
}

async fn append_n(log: &impl AuditLog, n: usize) -> Vec<Position> {
    let mut out = Vec::new();
    for _ in 0..n {
        let e = AuditEvent::created(&Origin::system("tests"), Timestamp::now(), &record());
        out.push(log.append(&e).await.unwrap());
    }
    out
}

#[tokio::test]
async fn embedded_log_keeps_exactly_the_last_max_events() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path(), std::time::Duration::from_secs(5))
        .await
        .unwrap()
        .with_audit_max_events(3);
    let written = append_n(&store, 5).await;
    assert!(written.windows(2).all(|w| w[0] < w[1]), "{written:?}");
    let page = store.audit_page(&everything(10)).await.unwrap();
    let kept: Vec<String> = page.events.iter().map(|e| e.id.clone()).collect();
    let last3: Vec<String> = written[2..].iter().rev().map(|p| p.to_string()).collect();
    assert_eq!(kept, last3);
    assert_eq!(page.next, None);
}

#[tokio::test]
async fn redis_stream_is_trimmed_near_max_events_and_pages_through_batches() {
    let prefix = unique_prefix("audit-bound");
    let store = RedisStore::new(RedisOptions {
        url: redis_url(),
        key_prefix: prefix.clone(),
        timeout: std::time::Duration::from_secs(5),
        retention: std::time::Duration::from_secs(3600),
    })
    .unwrap()
    .with_audit_max_events(10);
    let written = append_n(&store, 450).await;
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let len: usize = redis::cmd("XLEN")
        .arg(format!("{prefix}audit"))
        .query_async(&mut conn)
        .await
        .unwrap();
    // `MAXLEN ~` trims whole stream nodes (100 entries by default).
    assert!((10..=110).contains(&len), "XLEN {len}");
    // One page larger than a Redis batch (200), from a cursor.
    let store = store.with_audit_max_events(1000);
    append_n(&store, 240).await;
    let first = store.audit_page(&everything(1)).await.unwrap();
    let rest = store
        .audit_page(&AuditQuery {
            cursor: first.next,
            ..everything(230)
        })
        .await
        .unwrap();
    assert_eq!(rest.events.len(), 230);
    assert!(rest.events[0].id.parse::<Position>().unwrap() < first.next.unwrap());
    assert!(written.len() == 450);
}

// === the CLI ===

#[test]
fn the_cli_lists_the_log_as_a_table_and_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let gate = GateProcess::start(dir.path(), "");
    let made = gate.cli(&[
        "token",
        "create",
        "--name",
        "CLI",
        "--workspace",
        "ws_1",
        "--role",
        "workspace_viewer",
        "--expires",
        "7d",
        "--json",
    ]);
    assert_eq!(made.code, 0, "{}", made.stderr);
    let id = made.json()["token"]["id"].as_str().unwrap().to_owned();
    assert_eq!(gate.cli(&["token", "disable", &id]).code, 0);
    let show = gate.cli(&["token", "show", &id]);
    assert!(
        show.stdout
            .contains(&format!("history       hawzu-gate audit --token {id}")),
        "{}",
        show.stdout
    );
    let table = gate.cli(&["audit", "--token", &id]);
    assert_eq!(table.code, 0, "{}", table.stderr);
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert!(lines[0].starts_with("TIME"), "{}", table.stdout);
    assert!(lines[1].contains("disable") && lines[1].contains("disabled_at"));
    assert!(lines[2].contains("create") && lines[2].contains("127.0.0.1"));
    let json = gate
        .cli(&["audit", "--json", "--since", "1h", "--all"])
        .json();
    assert_eq!(json["events"].as_array().unwrap().len(), 2);
    assert_eq!(json["next_cursor"], Value::Null);
    let bad = gate.cli(&["audit", "--since", "soon"]);
    assert_eq!(bad.code, 1);
    assert!(bad.stderr.contains("--since"), "{}", bad.stderr);
    let usage = gate.cli(&["audit", "--token", "nope"]);
    assert_eq!(usage.code, 2);
}
