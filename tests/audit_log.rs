//! The audit log read back (issue 13 item 4): pages that follow the
//! cursor, `since` and `workspace` filters, a token caller confined to its
//! own workspace, bad queries named in a 400; both stores bounded by
//! `audit.max_events` and paged past a Redis batch; `hawzu-gate audit` as a
//! table and as JSON. (`tests/audit.rs`: each change, exactly its event.)

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::collections::BTreeSet;

use hawzu_gate::audit::{AuditEvent, AuditQuery, Origin, Position, Visible};
use hawzu_gate::store::{AuditLog, EmbeddedStore, RedisStore, redis::RedisOptions};
use hawzu_gate::token::record::RECORD_VERSION;
use hawzu_gate::token::{Scope, TokenId, TokenRecord};
use http::StatusCode;
use jiff::Timestamp;
use serde_json::Value;

use common::{Answer, GateProcess, Http, InProcessGate, redis_url, unique_prefix, workspace_token};

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

/// A disable, enable, revoke or update that finds the token already as
/// asked changes nothing, and writes no event (nor, the audit log being
/// the webhooks' outbox, any webhook): one tenant's token repeating one
/// cannot push other workspaces' events out of the log all share
/// (`audit.max_events`). On the embedded store (trimmed exactly) and on
/// Redis (trimmed by whole stream nodes: the count is what is checked).
#[tokio::test]
async fn repeats_that_change_nothing_write_no_event_and_push_no_one_out() {
    let prefix = unique_prefix("audit-repeats");
    let url = redis_url();
    let common = [
        ("roles.token_admin", "tokens:manage"),
        ("audit.max_events", "8"),
    ];
    let redis = [
        ("store.backend", "redis"),
        ("store.redis.url", url.as_str()),
        ("store.redis.key_prefix", prefix.as_str()),
    ];
    for (store, extra) in [("embedded", &[][..]), ("redis", &redis[..])] {
        let mut settings = common.to_vec();
        settings.extend_from_slice(extra);
        let gate = InProcessGate::start(&settings).await;
        let admin = gate.admin();
        let (theirs, _) = make(&admin, "Theirs", "ws_b", "workspace_viewer", "7d").await;
        let (_, manager) = make(&admin, "Manager", "ws_a", "token_admin", "30d").await;
        let tenant = Http::new(format!("http://{}", gate.addrs.admin)).bearer(&manager);
        let (id, _) = make(&tenant, "Target", "ws_a", "token_admin", "7d").await;
        let disable = format!("/admin/v1/tokens/{id}/disable");
        let enable = format!("/admin/v1/tokens/{id}/enable");
        let token = format!("/admin/v1/tokens/{id}");
        // One real change each, then many that change nothing.
        assert_eq!(tenant.post_empty(&disable).await.status, StatusCode::OK);
        let before = events(&admin, "").await.len();
        assert_eq!(before, 4, "{store}");
        for _ in 0..6 {
            assert_eq!(tenant.post_empty(&disable).await.status, StatusCode::OK);
            let same = tenant
                .send(
                    http::Method::PATCH,
                    &token,
                    &[],
                    Some(serde_json::json!({"name": "Target"})),
                )
                .await;
            assert_eq!(same.status, StatusCode::OK, "{store}");
        }
        assert_eq!(tenant.post_empty(&enable).await.status, StatusCode::OK);
        for _ in 0..6 {
            assert_eq!(tenant.post_empty(&enable).await.status, StatusCode::OK);
        }
        assert_eq!(tenant.delete(&token).await.status, StatusCode::OK);
        for _ in 0..6 {
            assert_eq!(tenant.delete(&token).await.status, StatusCode::OK);
        }
        let seen = events(&admin, "").await;
        let actions: Vec<&str> = seen.iter().map(|e| e["action"].as_str().unwrap()).collect();
        assert_eq!(
            actions,
            ["revoke", "enable", "disable", "create", "create", "create"],
            "{store}"
        );
        assert!(
            seen.iter()
                .filter(|e| e["action"] != "create")
                .all(|e| e["before"] != serde_json::json!({})),
            "{store}: {seen:?}"
        );
        let kept = events(&admin, "workspace=ws_b").await;
        assert_eq!(kept.len(), 1, "{store}");
        assert_eq!(kept[0]["token_id"], theirs.as_str(), "{store}");
    }
}

/// A rotate makes a token: its event carries the successor whole
/// (`new_token`, as a create's `after`: its expiry, creator, limits), not
/// only its id — a manager rotating a one-week token into an eleven-month
/// one leaves that trace.
#[tokio::test]
async fn a_rotate_event_records_the_successor_it_made() {
    let prefix = unique_prefix("audit-rotate");
    let url = redis_url();
    let gate = InProcessGate::start(&[
        ("roles.token_admin", "tokens:manage"),
        ("store.backend", "redis"),
        ("store.redis.url", url.as_str()),
        ("store.redis.key_prefix", prefix.as_str()),
    ])
    .await;
    let admin = gate.admin();
    let (manager_id, manager) = make(&admin, "Manager", "ws_1", "token_admin", "1y").await;
    let tenant = Http::new(format!("http://{}", gate.addrs.admin)).bearer(&manager);
    let (id, _) = make(&tenant, "CI", "ws_1", "token_admin", "1w").await;
    let rotated = tenant
        .post(
            &format!("/admin/v1/tokens/{id}/rotate"),
            serde_json::json!({"expires": "11mo"}),
        )
        .await;
    assert_eq!(
        rotated.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&rotated.body)
    );
    let new = rotated.json()["token"].clone();
    let seen = events(&admin, &format!("token={id}")).await;
    let rotate = seen.iter().find(|e| e["action"] == "rotate").unwrap();
    assert_eq!(rotate["new_token_id"], new["id"]);
    let successor = &rotate["new_token"];
    assert_eq!(successor["expires_at"], new["expires_at"], "{rotate}");
    assert_eq!(
        successor["created_by"],
        format!("token:{manager_id}"),
        "{rotate}"
    );
    assert_eq!(successor["rotated_from"], id.as_str(), "{rotate}");
    assert_eq!(successor["name"], "CI", "{rotate}");
    // The old token's own change stays in before/after.
    assert_eq!(rotate["after"]["rotated_to"], new["id"], "{rotate}");
}

/// Creates a token through `http` (the admin key or a token caller).
async fn make(http: &Http, name: &str, ws: &str, role: &str, expires: &str) -> (String, String) {
    created(
        http.post("/admin/v1/tokens", workspace_token(name, ws, role, expires))
            .await,
    )
    .await
}

#[tokio::test]
async fn a_token_caller_reads_only_what_it_may_act_on_and_is_the_actor() {
    // `token_admin` holds tokens:manage and nothing else.
    let gate = InProcessGate::start(&[("roles.token_admin", "tokens:manage")]).await;
    let admin = gate.admin();
    let as_token = |secret: &str| Http::new(format!("http://{}", gate.addrs.admin)).bearer(secret);
    let (manager_id, manager) = make(&admin, "Manager", "ws_1", "workspace_manager", "30d").await;
    make(&admin, "Other", "ws_2", "workspace_viewer", "7d").await;
    let (helper_id, helper) = make(&admin, "Helper", "ws_1", "token_admin", "30d").await;
    make(
        &as_token(&manager),
        "By manager",
        "ws_1",
        "workspace_viewer",
        "7d",
    )
    .await;
    make(&as_token(&helper), "By helper", "ws_1", "token_admin", "7d").await;

    let names = |seen: &[Value]| -> Vec<String> {
        seen.iter()
            .map(|e| e["after"]["name"].as_str().unwrap().to_owned())
            .collect()
    };
    // The manager reaches every token of ws_1; nothing of ws_2.
    let by_manager = events(&as_token(&manager), "").await;
    assert_eq!(
        names(&by_manager),
        ["By helper", "By manager", "Helper", "Manager"]
    );
    assert_eq!(by_manager[0]["actor"], format!("token:{helper_id}"));
    assert_eq!(by_manager[1]["actor"], format!("token:{manager_id}"));
    // The helper sees only tokens within its own role, as its token list.
    let by_helper = events(&as_token(&helper), "").await;
    assert_eq!(names(&by_helper), ["By helper", "Helper"]);
    let other = as_token(&manager)
        .get("/admin/v1/audit?workspace=ws_2")
        .await;
    assert_eq!(other.status, StatusCode::FORBIDDEN);
    // The admin key reads all five.
    assert_eq!(events(&admin, "").await.len(), 5);
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
        revoked_by: None,
        last_used_at: None,
        rotated_from: None,
        rotated_to: None,
        allow_from: Vec::new(),
        not_before: None,
        limits_by: None,
    }
}

fn everything(limit: usize) -> AuditQuery {
    AuditQuery {
        token: None,
        workspace: None,
        since: None,
        cursor: None,
        limit,
        visible: Visible::all(),
    }
}

/// A Redis store under `prefix` (its own keys), as the gate opens one.
fn redis_store(prefix: &str) -> RedisStore {
    RedisStore::new(RedisOptions {
        url: redis_url(),
        key_prefix: prefix.to_owned(),
        timeout: std::time::Duration::from_secs(5),
        retention: std::time::Duration::from_secs(3600),
    })
    .unwrap()
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
    // The workspace's index dropped the trimmed events with them.
    let by_ws = store
        .audit_page(&AuditQuery {
            workspace: Some("ws_1".into()),
            ..everything(10)
        })
        .await
        .unwrap();
    let kept: Vec<String> = by_ws.events.iter().map(|e| e.id.clone()).collect();
    assert_eq!(kept, last3);
    drop(store);
    use redb::{ReadableDatabase as _, ReadableTableMetadata as _};
    let db = redb::Database::create(dir.path().join("tokens.redb")).unwrap();
    let txn = db.begin_read().unwrap();
    let index: redb::TableDefinition<'_, (&str, u64, u64), ()> =
        redb::TableDefinition::new("audit_by_workspace");
    assert_eq!(txn.open_table(index).unwrap().len().unwrap(), 3);
}

#[tokio::test]
async fn redis_stream_is_trimmed_near_max_events_and_pages_through_batches() {
    let prefix = unique_prefix("audit-bound");
    let store = redis_store(&prefix).with_audit_max_events(10);
    append_in_workspace(&store, "ws_idle", 5).await;
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
    // A workspace's index goes with the stream as it is written to…
    let zcard = |ws: &'static str| {
        let key = store.audit_index_key(ws);
        let client = client.clone();
        async move {
            let mut conn = client.get_multiplexed_async_connection().await.unwrap();
            redis::cmd("ZCARD")
                .arg(key)
                .query_async::<usize>(&mut conn)
                .await
                .unwrap()
        }
    };
    assert_eq!(zcard("ws_1").await, len);
    // … and an idle one's is rid of what the stream trimmed by the
    // fleet's periodic pass.
    assert_eq!(zcard("ws_idle").await, 5);
    assert!(
        store
            .index_audit_log(std::time::Duration::from_secs(60))
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(zcard("ws_idle").await, 0);
    let indexed: Vec<String> = redis::cmd("SMEMBERS")
        .arg(format!("{prefix}audit-ws{{{prefix}audit}}"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(indexed, ["ws_1"]);
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

/// `n` creates in workspace `ws`, in order.
async fn append_in_workspace(log: &impl AuditLog, ws: &str, n: usize) -> Vec<Position> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let r = TokenRecord {
            workspace_id: ws.into(),
            ..record()
        };
        let e = AuditEvent::created(&Origin::system("tests"), Timestamp::now(), &r);
        out.push(log.append(&e).await.unwrap());
    }
    out
}

/// A workspace's pages hold its events and positions only: however many
/// events of other workspaces lie between its own, a page neither stops
/// short at the scan bound nor hands back as its cursor the position of
/// another workspace's event (which told one tenant when others changed
/// their tokens, and how many changes they made).
async fn a_workspace_page_reveals_no_other_workspace(log: &impl AuditLog) {
    let own_old = append_in_workspace(log, "ws_1", 1).await;
    let others = append_in_workspace(log, "ws_2", hawzu_gate::audit::MAX_SCAN + 1).await;
    let own_new = append_in_workspace(log, "ws_1", 1).await;
    let others: BTreeSet<Position> = others.into_iter().collect();
    let query = AuditQuery {
        workspace: Some("ws_1".into()),
        ..everything(10)
    };
    let page = log.audit_page(&query).await.unwrap();
    let seen: Vec<Position> = page.events.iter().map(|e| e.id.parse().unwrap()).collect();
    assert!(
        page.next.is_none_or(|c| !others.contains(&c)),
        "the cursor {:?} is another workspace's event",
        page.next
    );
    assert_eq!(seen, [own_new[0], own_old[0]], "next: {:?}", page.next);
    assert_eq!(page.next, None);
    // From a cursor: the older one, then the end.
    let older = log
        .audit_page(&AuditQuery {
            limit: 1,
            cursor: Some(own_new[0]),
            ..query.clone()
        })
        .await
        .unwrap();
    let ids: Vec<String> = older.events.iter().map(|e| e.id.clone()).collect();
    assert_eq!(ids, [own_old[0].to_string()]);
    assert!(older.next.is_none_or(|c| !others.contains(&c)), "{older:?}");
}

#[tokio::test]
async fn embedded_workspace_pages_reveal_no_other_workspace() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path(), std::time::Duration::from_secs(5))
        .await
        .unwrap();
    a_workspace_page_reveals_no_other_workspace(&store).await;
}

/// A store file from before the workspace index: its events are indexed
/// when it is opened, so a tenant still reads its history.
#[tokio::test]
async fn embedded_events_from_before_the_index_are_indexed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let timeout = std::time::Duration::from_secs(5);
    let written = {
        let store = EmbeddedStore::open(dir.path(), timeout).await.unwrap();
        let mut w = append_in_workspace(&store, "ws_1", 2).await;
        append_in_workspace(&store, "ws_2", 1).await;
        w.extend(append_in_workspace(&store, "ws_1", 1).await);
        w
    };
    let file = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "redb"))
        .expect("the store file");
    let ws1 = AuditQuery {
        workspace: Some("ws_1".into()),
        ..everything(10)
    };
    let index: redb::TableDefinition<'_, (&str, u64, u64), ()> =
        redb::TableDefinition::new("audit_by_workspace");
    {
        let db = redb::Database::create(&file).unwrap();
        let txn = db.begin_write().unwrap();
        assert!(txn.delete_table(index).unwrap(), "the index table exists");
        let indexed: redb::TableDefinition<'_, &str, (u64, u64)> =
            redb::TableDefinition::new("audit_indexed");
        assert!(txn.delete_table(indexed).unwrap(), "the marker exists");
        txn.commit().unwrap();
    }
    let store = EmbeddedStore::open(dir.path(), timeout).await.unwrap();
    let page = store.audit_page(&ws1).await.unwrap();
    let ids: Vec<String> = page.events.iter().map(|e| e.id.clone()).collect();
    let want: Vec<String> = written.iter().rev().map(|p| p.to_string()).collect();
    assert_eq!(ids, want);
    drop(store);

    // A downgrade: a version without the index appends one event and
    // trims the oldest; back on this one, the index follows both.
    use redb::{ReadableDatabase as _, ReadableTable as _, ReadableTableMetadata as _};
    let newer = {
        let db = redb::Database::create(&file).unwrap();
        let txn = db.begin_write().unwrap();
        let log: redb::TableDefinition<'_, (u64, u64), &[u8]> = redb::TableDefinition::new("audit");
        let newer = {
            let mut log = txn.open_table(log).unwrap();
            let (ms, _) = log.last().unwrap().unwrap().0.value();
            let r = TokenRecord {
                workspace_id: "ws_1".into(),
                ..record()
            };
            let e = AuditEvent::created(&Origin::system("tests"), Timestamp::now(), &r);
            log.insert((ms + 1, 0), &e.to_stored()[..]).unwrap();
            log.pop_first().unwrap();
            Position { ms: ms + 1, seq: 0 }
        };
        txn.commit().unwrap();
        newer
    };
    let store = EmbeddedStore::open(dir.path(), timeout).await.unwrap();
    let page = store.audit_page(&ws1).await.unwrap();
    let ids: Vec<String> = page.events.iter().map(|e| e.id.clone()).collect();
    let mut want = vec![newer.to_string()];
    want.extend(written[1..].iter().rev().map(|p| p.to_string()));
    assert_eq!(ids, want);
    drop(store);
    let db = redb::Database::create(&file).unwrap();
    let txn = db.begin_read().unwrap();
    assert_eq!(
        txn.open_table(index).unwrap().len().unwrap(),
        4,
        "the trimmed event's entry dropped: 3 of ws_1, 1 of ws_2"
    );
}

/// Events a gate wrote without indexing them (a gate of an earlier
/// version, during a rolling upgrade) are indexed by the next gate's
/// start; a second pass looks only at what came after the first.
#[tokio::test]
async fn redis_events_written_without_the_index_are_indexed_at_start() {
    let prefix = unique_prefix("audit-backfill");
    let store = redis_store(&prefix);
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    // As an earlier gate wrote them: the stream only.
    let mut old = Vec::new();
    for ws in ["ws_1", "ws_2", "ws_1"] {
        let r = TokenRecord {
            workspace_id: ws.into(),
            ..record()
        };
        let e = AuditEvent::created(&Origin::system("tests"), Timestamp::now(), &r);
        let id: String = redis::cmd("XADD")
            .arg(format!("{prefix}audit"))
            .arg("*")
            .arg("event")
            .arg(e.to_stored())
            .query_async(&mut conn)
            .await
            .unwrap();
        old.push((ws, id));
    }
    let ws1 = AuditQuery {
        workspace: Some("ws_1".into()),
        ..everything(10)
    };
    assert!(store.audit_page(&ws1).await.unwrap().events.is_empty());
    // One gate of a fleet at a time: the pass takes a claim for a minute.
    let claim = format!("{prefix}audit-indexing{{{prefix}audit}}");
    let release = || async {
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let _: i64 = redis::cmd("DEL")
            .arg(&claim)
            .query_async(&mut conn)
            .await
            .unwrap();
    };
    assert_eq!(
        store
            .index_audit_log(std::time::Duration::from_secs(60))
            .await
            .unwrap(),
        Some(3)
    );
    assert_eq!(
        store
            .index_audit_log(std::time::Duration::from_secs(60))
            .await
            .unwrap(),
        None,
        "claimed"
    );
    release().await;
    let ids: Vec<String> = store
        .audit_page(&ws1)
        .await
        .unwrap()
        .events
        .iter()
        .map(|e| e.id.clone())
        .collect();
    assert_eq!(ids, [old[2].1.clone(), old[0].1.clone()]);
    // Indexed as they are written from now on; the next start looks at
    // those only.
    append_in_workspace(&store, "ws_1", 2).await;
    assert_eq!(store.audit_page(&ws1).await.unwrap().events.len(), 4);
    assert_eq!(
        store
            .index_audit_log(std::time::Duration::from_secs(60))
            .await
            .unwrap(),
        Some(2)
    );
    release().await;
    assert_eq!(
        store
            .index_audit_log(std::time::Duration::from_secs(60))
            .await
            .unwrap(),
        Some(0)
    );
}

/// A workspace's index entry whose event the stream trimmed is skipped
/// (and removed), not an error or a hole in the page.
#[tokio::test]
async fn redis_a_trimmed_event_leaves_no_hole_in_its_workspace_pages() {
    let prefix = unique_prefix("audit-trimmed");
    let store = redis_store(&prefix);
    let written = append_in_workspace(&store, "ws_1", 4).await;
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    // Exactly, as `MAXLEN ~` does in whole nodes once the log is full.
    let _: i64 = redis::cmd("XTRIM")
        .arg(format!("{prefix}audit"))
        .arg("MAXLEN")
        .arg(2)
        .query_async(&mut conn)
        .await
        .unwrap();
    let page = store
        .audit_page(&AuditQuery {
            workspace: Some("ws_1".into()),
            ..everything(10)
        })
        .await
        .unwrap();
    let ids: Vec<String> = page.events.iter().map(|e| e.id.clone()).collect();
    assert_eq!(ids, [written[3].to_string(), written[2].to_string()]);
    assert_eq!(page.next, None);
    let left: i64 = redis::cmd("ZCARD")
        .arg(store.audit_index_key("ws_1"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(left, 2, "the trimmed events' entries removed");
}

/// A workspace's pages past one batch of its index (200), from cursors at
/// every page size, interleaved with another workspace's events: each of
/// its events once, newest first, none of the other's.
#[tokio::test]
async fn redis_workspace_pages_follow_the_cursor_across_index_batches() {
    let store = redis_store(&unique_prefix("audit-ws-pages"));
    let mut own = Vec::new();
    for _ in 0..150 {
        own.extend(append_in_workspace(&store, "ws_1", 3).await);
        append_in_workspace(&store, "ws_2", 1).await;
    }
    own.reverse();
    for limit in [1, 199, 200, 201, 500] {
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = store
                .audit_page(&AuditQuery {
                    workspace: Some("ws_1".into()),
                    cursor,
                    ..everything(limit)
                })
                .await
                .unwrap();
            seen.extend(
                page.events
                    .iter()
                    .map(|e| e.id.parse::<Position>().unwrap()),
            );
            match page.next {
                Some(c) => cursor = Some(c),
                None => break,
            }
            if limit == 1 && seen.len() > 20 {
                break;
            }
        }
        let want = if limit == 1 {
            &own[..seen.len()]
        } else {
            &own[..]
        };
        assert_eq!(seen, want, "limit {limit}");
    }
}

#[tokio::test]
async fn redis_workspace_pages_reveal_no_other_workspace() {
    let store = redis_store(&unique_prefix("audit-ws"));
    a_workspace_page_reveals_no_other_workspace(&store).await;
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
