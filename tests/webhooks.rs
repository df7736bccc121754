//! Webhooks against a real receiver on loopback: every lifecycle action is
//! one signed POST with its event id; a receiver that fails twice gets the
//! event on the third attempt; a gate killed mid-delivery leaves the event
//! to another gate (Redis) or to its restart (embedded), with the same id;
//! two gates on one Redis deliver each event once; an expiry notice goes
//! out once for a fleet; `events` filters; bad settings are refused naming
//! the key, and the secret is never shown.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};

use common::*;

const SECRET: &str = "whsec_test_0123456789abcdef";
const ADMIN_KEY: &str = "test-admin-key-0123456789abcdef0123456789";

// === a receiver ===

/// One POST the receiver got.
#[derive(Debug, Clone)]
struct Delivery {
    id: String,
    kind: String,
    signature: String,
    agent: String,
    body: Vec<u8>,
    /// What it answered (0: held, never answered).
    status: u16,
}

impl Delivery {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// What the receiver does with the next requests.
#[derive(Debug, Default)]
struct Script {
    /// Never answer this many first requests.
    hold: usize,
    /// Answer 500 to this many (after the held ones).
    fail: usize,
    /// Take this long over each 200.
    slow: Duration,
}

/// A webhook receiver on a loopback port: records every POST, answers as
/// its script says, 200 otherwise. Aborted on drop.
struct Receiver {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<Delivery>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    async fn start(script: Script) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(script));
        let (l, s) = (log.clone(), script.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (log, script) = (l.clone(), s.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let (log, script) = (log.clone(), script.clone());
                            async move { answer(req, log, script).await }
                        },
                    );
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self { addr, log, task }
    }

    fn url(&self) -> String {
        format!("http://{}/hooks/hawzu", self.addr)
    }

    fn deliveries(&self) -> Vec<Delivery> {
        self.log.lock().unwrap().clone()
    }

    /// Waits until at least `n` POSTs came.
    async fn wait_for(&self, n: usize, what: &str) -> Vec<Delivery> {
        eventually(what, Duration::from_secs(20), || async {
            let d = self.deliveries();
            (d.len() >= n).then_some(d)
        })
        .await
    }
}

async fn answer(
    req: http::Request<hyper::body::Incoming>,
    log: Arc<Mutex<Vec<Delivery>>>,
    script: Arc<Mutex<Script>>,
) -> Result<http::Response<Full<Bytes>>, std::convert::Infallible> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let (id, kind, signature, agent) = (
        header("hawzu-event-id"),
        header("hawzu-event-type"),
        header("hawzu-signature"),
        header("user-agent"),
    );
    let body = req.into_body().collect().await.unwrap().to_bytes().to_vec();
    let slow = script.lock().unwrap().slow;
    let status = {
        let mut s = script.lock().unwrap();
        if s.hold > 0 {
            s.hold -= 1;
            0
        } else if s.fail > 0 {
            s.fail -= 1;
            500
        } else {
            200
        }
    };
    log.lock().unwrap().push(Delivery {
        id,
        kind,
        signature,
        agent,
        body,
        status,
    });
    if status == 0 {
        // Held: the sender waits until it gives up or dies.
        std::future::pending::<()>().await;
    }
    if status == 200 {
        tokio::time::sleep(slow).await;
    }
    Ok(http::Response::builder()
        .status(status)
        .body(Full::new(Bytes::from_static(b"ok")))
        .unwrap())
}

/// The receiver's check, written here with ring (not with the gate's
/// code): `t=<secs>,v1=<hex HMAC-SHA256 of "<t>.<body>">`, `t` recent.
fn signature_valid(secret: &str, header: &str, body: &[u8]) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => v1 = Some(v.to_owned()),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    if (jiff::Timestamp::now().as_second() - t).abs() > 300 {
        return false;
    }
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let mut msg = format!("{t}.").into_bytes();
    msg.extend_from_slice(body);
    let expected: String = ring::hmac::sign(&key, &msg)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    expected == v1
}

// === gates ===

/// A `[[webhooks]]` entry with fast timings (tests wait on conditions,
/// never on these).
fn hook_toml(name: &str, url: &str, events: &str, extra: &str) -> String {
    format!(
        "[[webhooks]]\nname = \"{name}\"\nurl = \"{url}\"\nsecret = \"{SECRET}\"\nevents = {events}\ntimeout = \"1s\"\nretry_initial = \"50ms\"\nretry_max = \"200ms\"\npoll_interval = \"20ms\"\nclaim_after = \"2s\"\n{extra}\n"
    )
}

async fn gate(backend: &str, prefix: &str, toml: &str, extra: &[(&str, &str)]) -> InProcessGate {
    let url = redis_url();
    let mut env: Vec<(&str, &str)> = extra.to_vec();
    if backend == "redis" {
        env.extend([
            ("store.backend", "redis"),
            ("store.redis.url", url.as_str()),
            ("store.redis.key_prefix", prefix),
        ]);
    }
    InProcessGate::start_with_toml(toml, &env).await
}

/// The audit log's event ids, oldest first.
async fn audit_ids(gate: &InProcessGate) -> Vec<String> {
    let v = gate.admin().get("/admin/v1/audit?limit=500").await.json();
    let mut ids: Vec<String> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    ids.reverse();
    ids
}

/// The webhook's consumer group on Redis: (pending, lag) — both 0 once
/// every event was delivered (or given up) and acknowledged.
async fn group_state(prefix: &str, group: &str) -> (i64, i64) {
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let groups: Vec<redis::Value> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(format!("{prefix}audit"))
        .query_async(&mut conn)
        .await
        .unwrap();
    for g in groups {
        let redis::Value::Array(fields) = g else {
            continue;
        };
        let mut map = std::collections::HashMap::new();
        for kv in fields.chunks(2) {
            if let [redis::Value::BulkString(k), v] = kv {
                map.insert(String::from_utf8_lossy(k).into_owned(), v.clone());
            }
        }
        if map.get("name") == Some(&redis::Value::BulkString(group.as_bytes().to_vec())) {
            let int = |k: &str| match map.get(k) {
                Some(redis::Value::Int(i)) => *i,
                _ => -1,
            };
            return (int("pending"), int("lag"));
        }
    }
    (-1, -1)
}

async fn metrics(gate: &InProcessGate) -> String {
    String::from_utf8_lossy(&gate.ops().get("/metrics").await.body).into_owned()
}

async fn settled(prefix: &str, group: &str) {
    eventually(
        "every event acknowledged",
        Duration::from_secs(20),
        || async { (group_state(prefix, group).await == (0, 0)).then_some(()) },
    )
    .await;
}

// === tests ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_lifecycle_action_is_one_signed_post_with_its_audit_id() {
    for backend in ["embedded", "redis"] {
        let receiver = Receiver::start(Script::default()).await;
        let prefix = unique_prefix("webhooks_each");
        let g = gate(
            backend,
            &prefix,
            &hook_toml("audit-sink", &receiver.url(), "[\"*\"]", ""),
            &[],
        )
        .await;
        let admin = g.admin();
        let (id, secret) = create_token(
            &g,
            workspace_token("CI Runner", "ws_1", "workspace_member", "30d"),
        )
        .await;
        let t = |p: &str| format!("/admin/v1/tokens/{id}{p}");
        let r = admin
            .send(
                http::Method::PATCH,
                &t(""),
                &[],
                Some(json!({"description": "nightly"})),
            )
            .await;
        assert_eq!(r.status, 200, "{backend}: update");
        assert_eq!(admin.post_empty(&t("/disable")).await.status, 200);
        assert_eq!(admin.post_empty(&t("/enable")).await.status, 200);
        let rotated = admin.post(&t("/rotate"), json!({})).await;
        assert_eq!(rotated.status, 201, "{backend}: rotate");
        let new_secret = rotated.json()["secret"].as_str().unwrap().to_owned();
        let new_id = rotated.json()["token"]["id"].as_str().unwrap().to_owned();
        let r = admin.delete(&format!("/admin/v1/tokens/{new_id}")).await;
        assert_eq!(r.status, 200, "{backend}: revoke");

        let want = [
            "token.created",
            "token.updated",
            "token.disabled",
            "token.enabled",
            "token.rotated",
            "token.revoked",
        ];
        let got = receiver.wait_for(want.len(), "six deliveries").await;
        let ids = audit_ids(&g).await;
        assert_eq!(ids.len(), want.len(), "{backend}: one audit event each");
        if backend == "redis" {
            settled(&prefix, "webhook:audit-sink").await;
        }
        let got = if backend == "redis" {
            receiver.deliveries()
        } else {
            got
        };
        assert_eq!(
            got.len(),
            want.len(),
            "{backend}: exactly one POST each: {got:?}"
        );
        for (i, d) in got.iter().enumerate() {
            let body = d.json();
            assert_eq!(d.kind, want[i], "{backend}: in order");
            assert_eq!(body["type"], want[i]);
            assert_eq!(d.id, ids[i], "{backend}: the event id is the audit id");
            assert_eq!(body["id"], ids[i]);
            assert_eq!(body["audit"]["id"], ids[i]);
            assert!(
                signature_valid(SECRET, &d.signature, &d.body),
                "{backend}: {} signed: {}",
                d.kind,
                d.signature
            );
            assert!(
                !signature_valid("whsec_another_secret_xyz", &d.signature, &d.body),
                "a wrong secret does not verify"
            );
            assert!(d.agent.starts_with("hawzu-gate/"), "{}", d.agent);
            assert_eq!(body["token"]["workspace_id"], "ws_1");
            assert_eq!(body["token"]["name"], "CI Runner");
            let text = String::from_utf8_lossy(&d.body);
            for s in [&secret, &new_secret, &SECRET.to_owned()] {
                assert!(!text.contains(s.as_str()), "{backend}: no secret in a body");
            }
            assert!(!text.contains("hwz_"), "{backend}: no token value: {text}");
        }
        assert_eq!(got[0].json()["token"]["id"], id);
        assert_eq!(got[4].json()["token"]["new_token_id"], new_id);
        assert_eq!(got[5].json()["token"]["id"], new_id);
        // Counted once the gate has read the receiver's answer, which may
        // be a moment after the receiver has the request.
        eventually("six deliveries counted", Duration::from_secs(5), || async {
            metrics(&g)
                .await
                .contains(
                    "hawzu_gate_webhook_deliveries_total{result=\"delivered\",webhook=\"audit-sink\"} 6",
                )
                .then_some(())
        })
        .await;
    }
}

#[tokio::test]
async fn a_receiver_failing_twice_gets_the_event_on_the_third_attempt() {
    let receiver = Receiver::start(Script {
        hold: 0,
        fail: 2,
        ..Script::default()
    })
    .await;
    let g = gate(
        "embedded",
        "",
        &hook_toml("flaky", &receiver.url(), "[\"token.created\"]", ""),
        &[],
    )
    .await;
    create_token(&g, workspace_token("CI", "ws_1", "workspace_viewer", "30d")).await;
    let got = receiver.wait_for(3, "three attempts").await;
    let statuses: Vec<u16> = got.iter().map(|d| d.status).collect();
    assert_eq!(statuses, [500, 500, 200]);
    assert!(
        got.iter().all(|d| d.id == got[0].id),
        "same event id: {got:?}"
    );
    assert!(got.iter().all(|d| d.body == got[0].body), "same body");
    assert!(
        got.iter()
            .all(|d| signature_valid(SECRET, &d.signature, &d.body))
    );
    let metrics = eventually("the delivery counted", Duration::from_secs(5), || async {
        let m = metrics(&g).await;
        m.contains("result=\"delivered\",webhook=\"flaky\"} 1")
            .then_some(m)
    })
    .await;
    assert!(
        metrics.contains(
            "hawzu_gate_webhook_deliveries_total{result=\"retried\",webhook=\"flaky\"} 2"
        ),
        "{metrics}"
    );
    assert!(
        metrics
            .contains("hawzu_gate_webhook_deliveries_total{result=\"failed\",webhook=\"flaky\"} 0"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("hawzu_gate_webhook_last_success_timestamp_seconds{webhook=\"flaky\"} 0"),
        "{metrics}"
    );
    assert_eq!(receiver.deliveries().len(), 3, "nothing after the 200");
}

#[tokio::test]
async fn an_event_is_given_up_after_max_attempts_and_counted_failed() {
    let receiver = Receiver::start(Script {
        hold: 0,
        fail: 100,
        ..Script::default()
    })
    .await;
    let g = gate(
        "embedded",
        "",
        &hook_toml("down", &receiver.url(), "[\"*\"]", "max_attempts = 3"),
        &[],
    )
    .await;
    create_token(&g, workspace_token("CI", "ws_1", "workspace_viewer", "30d")).await;
    let metrics = eventually("the event given up", Duration::from_secs(10), || async {
        let m = metrics(&g).await;
        m.contains("result=\"failed\",webhook=\"down\"} 1")
            .then_some(m)
    })
    .await;
    assert!(
        metrics.contains("result=\"retried\",webhook=\"down\"} 2"),
        "{metrics}"
    );
    assert_eq!(receiver.deliveries().len(), 3);
    // The next event is sent: a given-up one does not block the webhook.
    create_token(
        &g,
        workspace_token("CI 2", "ws_1", "workspace_viewer", "30d"),
    )
    .await;
    receiver.wait_for(4, "the next event").await;
}

#[tokio::test]
async fn only_the_subscribed_events_are_sent() {
    let receiver = Receiver::start(Script::default()).await;
    let g = gate(
        "embedded",
        "",
        &hook_toml("revocations", &receiver.url(), "[\"token.revoked\"]", ""),
        &[],
    )
    .await;
    let (id, _) = create_token(&g, workspace_token("CI", "ws_1", "workspace_viewer", "30d")).await;
    let admin = g.admin();
    admin
        .post_empty(&format!("/admin/v1/tokens/{id}/disable"))
        .await;
    admin.delete(&format!("/admin/v1/tokens/{id}")).await;
    let (later, _) = create_token(
        &g,
        workspace_token("CI 2", "ws_1", "workspace_viewer", "30d"),
    )
    .await;
    admin.delete(&format!("/admin/v1/tokens/{later}")).await;
    let got = receiver.wait_for(2, "two revocations").await;
    let kinds: Vec<&str> = got.iter().map(|d| d.kind.as_str()).collect();
    assert_eq!(kinds, ["token.revoked", "token.revoked"], "{got:?}");
    assert_eq!(got[0].json()["token"]["id"], id);
    assert_eq!(got[1].json()["token"]["id"], later);
}

#[tokio::test]
async fn a_leak_report_is_one_token_leaked_post_with_the_reports_url_and_source() {
    let receiver = Receiver::start(Script::default()).await;
    let g = gate(
        "embedded",
        "",
        &hook_toml("leaks", &receiver.url(), "[\"token.leaked\"]", ""),
        &[("listen.leaks", "127.0.0.1:0")],
    )
    .await;
    let (id, secret) =
        create_token(&g, workspace_token("CI", "ws_1", "workspace_viewer", "30d")).await;
    let door = Http::new(format!("http://{}", g.addrs.leaks.unwrap()));
    let report = json!({"token": secret, "url": "https://pastebin.example/x", "source": "a log"});
    assert_eq!(door.post("/v1/leaks", report.clone()).await.status, 202);

    let got = receiver.wait_for(1, "the token.leaked event").await;
    let d = &got[0];
    assert_eq!(d.kind, "token.leaked", "{got:?}");
    assert!(signature_valid(SECRET, &d.signature, &d.body));
    let body = d.json();
    assert_eq!(body["token"]["id"], id);
    assert_eq!(body["actor"], "leaks:public");
    let reason = body["reason"].as_str().unwrap();
    assert!(
        reason.contains("source: a log") && reason.contains("url: https://pastebin.example/x"),
        "{reason}"
    );
    assert_eq!(body["audit"]["reason"], body["reason"]);
    assert!(
        !String::from_utf8_lossy(&d.body).contains(&secret[4..]),
        "no secret in the webhook"
    );

    // Reported again: already revoked, no second event. Once that report
    // is handled, another token's report follows: its event is the next
    // (and only other) POST.
    assert_eq!(door.post("/v1/leaks", report).await.status, 202);
    eventually(
        "the second report to be handled",
        Duration::from_secs(5),
        || async {
            metrics(&g)
                .await
                .contains("hawzu_gate_leak_reports_total{result=\"already_revoked\"} 1")
                .then_some(())
        },
    )
    .await;
    let (other, other_secret) = create_token(
        &g,
        workspace_token("CI 2", "ws_1", "workspace_viewer", "30d"),
    )
    .await;
    let report =
        json!({"token": other_secret, "url": "https://pastebin.example/y", "source": "a log"});
    assert_eq!(door.post("/v1/leaks", report).await.status, 202);
    let got = receiver.wait_for(2, "the other token's event").await;
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[1].json()["token"]["id"], other);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gates_on_one_redis_deliver_each_event_once() {
    let receiver = Receiver::start(Script::default()).await;
    let prefix = unique_prefix("webhooks_fleet");
    let toml = hook_toml("fleet", &receiver.url(), "[\"*\"]", "");
    let a = gate("redis", &prefix, &toml, &[]).await;
    let b = gate("redis", &prefix, &toml, &[]).await;
    let n = 12;
    for i in 0..n {
        let g = if i % 2 == 0 { &a } else { &b };
        create_token(
            g,
            workspace_token(&format!("t{i}"), "ws_1", "workspace_viewer", "30d"),
        )
        .await;
    }
    receiver.wait_for(n, "every event").await;
    settled(&prefix, "webhook:fleet").await;
    let got = receiver.deliveries();
    let mut ids: Vec<&str> = got.iter().map(|d| d.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(got.len(), n, "one POST per event across the fleet");
    assert_eq!(ids.len(), n);
    assert_eq!(audit_ids(&a).await.len(), n);
}

/// `[[webhooks]]` plus a Redis store and an admin key, for a gate process.
fn process_toml(store: &str, hook: &str) -> String {
    format!("[admin]\nkey = \"{ADMIN_KEY}\"\n{store}\n{hook}")
}

fn process_admin(gate: &GateProcess) -> Http {
    Http::new(format!("http://{}", gate.admin)).bearer(ADMIN_KEY)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_killed_mid_delivery_leaves_the_event_to_another_gate() {
    let receiver = Receiver::start(Script {
        hold: 1,
        ..Script::default()
    })
    .await;
    let prefix = unique_prefix("webhooks_killed");
    let dir = tempfile::tempdir().unwrap();
    let store = format!(
        "[store]\nbackend = \"redis\"\n[store.redis]\nurl = \"{}\"\nkey_prefix = \"{prefix}\"\n",
        redis_url()
    );
    let hook = hook_toml("killed", &receiver.url(), "[\"*\"]", "");
    let a = GateProcess::start(dir.path(), &process_toml(&store, &hook));
    let created = process_admin(&a)
        .post(
            "/admin/v1/tokens",
            workspace_token("CI", "ws_1", "workspace_viewer", "30d"),
        )
        .await;
    assert_eq!(created.status, 201);
    let held = receiver.wait_for(1, "the held request").await;
    assert_eq!(held[0].status, 0);
    // SIGKILL while the receiver holds the request: nothing acknowledged.
    drop(a);
    assert_eq!(group_state(&prefix, "webhook:killed").await.0, 1, "pending");
    // A surviving gate of the fleet takes it over after claim_after.
    let b = gate("redis", &prefix, &hook, &[]).await;
    let got = receiver.wait_for(2, "the event sent again").await;
    assert_eq!(got[1].status, 200);
    assert_eq!(got[1].id, got[0].id, "the same event id");
    assert_eq!(got[1].body, got[0].body);
    assert!(signature_valid(SECRET, &got[1].signature, &got[1].body));
    settled(&prefix, "webhook:killed").await;
    assert_eq!(receiver.deliveries().len(), 2);
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_gate_killed_mid_delivery_sends_the_event_again_after_restart() {
    let receiver = Receiver::start(Script {
        hold: 1,
        ..Script::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let hook = hook_toml("restart", &receiver.url(), "[\"*\"]", "");
    let toml = process_toml("", &hook);
    let a = GateProcess::start(dir.path(), &toml);
    let created = process_admin(&a)
        .post(
            "/admin/v1/tokens",
            workspace_token("CI", "ws_1", "workspace_viewer", "30d"),
        )
        .await;
    assert_eq!(created.status, 201);
    receiver.wait_for(1, "the held request").await;
    drop(a); // SIGKILL mid-delivery
    let b = GateProcess::start(dir.path(), &toml);
    let got = receiver.wait_for(2, "the event sent again").await;
    assert_eq!(
        (got[1].id.as_str(), got[1].status),
        (got[0].id.as_str(), 200)
    );
    // The cursor moved past it: the next event is the only new POST.
    process_admin(&b)
        .post(
            "/admin/v1/tokens",
            workspace_token("CI 2", "ws_1", "workspace_viewer", "30d"),
        )
        .await;
    let got = receiver.wait_for(3, "the next event").await;
    assert_ne!(got[2].id, got[0].id);
    // Killed only once it has marked the event done (a kill between the
    // receiver's 200 and the mark sends it again: at least once).
    let ops = Http::new(format!("http://{}", b.ops));
    common::eventually(
        "the delivery to be marked done",
        Duration::from_secs(10),
        || {
            let ops = ops.clone();
            async move {
                let text = String::from_utf8_lossy(&ops.get("/metrics").await.body).into_owned();
                text.lines()
                    .any(|l| {
                        l.starts_with("hawzu_gate_webhook_deliveries_total{")
                            && l.contains("result=\"delivered\"")
                            && l.ends_with(" 2")
                    })
                    .then_some(())
            }
        },
    )
    .await;
    drop(b);
    // Restarted once more, nothing is sent again.
    let c = GateProcess::start(dir.path(), &toml);
    process_admin(&c)
        .post(
            "/admin/v1/tokens",
            workspace_token("CI 3", "ws_1", "workspace_viewer", "30d"),
        )
        .await;
    let got = receiver.wait_for(4, "the third event").await;
    let kinds: Vec<(&str, &str)> = got
        .iter()
        .map(|d| (d.id.as_str(), d.kind.as_str()))
        .collect();
    assert_eq!(got.len(), 4, "{kinds:?}");
    assert_ne!(got[3].id, got[2].id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiry_notice_goes_out_once_for_a_fleet() {
    let receiver = Receiver::start(Script::default()).await;
    let prefix = unique_prefix("webhooks_expiring");
    let toml = hook_toml("expiry", &receiver.url(), "[\"token.expiring\"]", "");
    let scan = [("tokens.expiry_scan_interval", "50ms")];
    let a = gate("redis", &prefix, &toml, &scan).await;
    let b = gate("redis", &prefix, &toml, &scan).await;
    let (week, _) = create_token(
        &a,
        workspace_token("weekly", "ws_1", "workspace_viewer", "3d"),
    )
    .await;
    let first = receiver.wait_for(1, "the 7-day notice").await;
    assert_eq!(first[0].kind, "token.expiring");
    let body = first[0].json();
    assert_eq!(body["within"], "7d");
    assert_eq!(body["token"]["id"], week);
    assert_eq!(body["actor"], "gate");
    assert!(signature_valid(SECRET, &first[0].signature, &first[0].body));
    // Both gates go on scanning; a token within a day gets the 1-day
    // notice, and by then the first one has been looked at many times.
    let (day, _) = create_token(
        &b,
        workspace_token("daily", "ws_1", "workspace_viewer", "12h"),
    )
    .await;
    receiver.wait_for(2, "the 1-day notice").await;
    settled(&prefix, "webhook:expiry").await;
    let got = receiver.deliveries();
    let seen: Vec<(String, String)> = got
        .iter()
        .map(|d| {
            let b = d.json();
            (
                b["token"]["id"].as_str().unwrap().to_owned(),
                b["within"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (week.clone(), "7d".to_owned()),
            (day.clone(), "1d".to_owned())
        ],
        "one notice per token, from one gate"
    );
    // The notice is in the audit log, once.
    let v = a
        .admin()
        .get(&format!("/admin/v1/audit?token={week}"))
        .await
        .json();
    let notices = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "expiry_notice")
        .count();
    assert_eq!(notices, 1, "{v}");
}

#[tokio::test]
async fn without_webhooks_nothing_is_read_or_created_in_redis() {
    let prefix = unique_prefix("webhooks_none");
    let g = gate(
        "redis",
        &prefix,
        "",
        &[("tokens.expiry_scan_interval", "50ms")],
    )
    .await;
    create_token(&g, workspace_token("CI", "ws_1", "workspace_viewer", "2d")).await;
    // The audit stream exists (the create) and has no consumer group; no
    // expiry notice is written.
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let groups: Vec<redis::Value> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(format!("{prefix}audit"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(groups.is_empty(), "{groups:?}");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}notice:*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(keys.is_empty(), "{keys:?}");
}

#[tokio::test]
async fn the_consumers_of_gates_that_are_gone_are_forgotten_but_never_one_holding_events() {
    use hawzu_gate::audit::AuditEvent;
    use hawzu_gate::store::{AuditLog, Outbox, RedisStore, redis::RedisOptions};
    let prefix = unique_prefix("webhooks_prune");
    let store = RedisStore::with_topology(
        standalone(&redis_url()),
        RedisOptions {
            url: String::new(),
            key_prefix: prefix.clone(),
            timeout: Duration::from_secs(10),
            retention: Duration::from_secs(3600),
        },
    )
    .unwrap();
    store.outbox_open("prune").await.unwrap();
    let event: AuditEvent = serde_json::from_value(json!({
        "time": "2026-12-04T00:00:00Z", "action": "create", "actor": "admin",
        "token_id": "tok_0123456789abcdef", "workspace_id": "ws_1",
        "before": {}, "after": {}, "client": null, "request_id": null
    }))
    .unwrap();
    store.append(&event).await.unwrap();
    let claim = Duration::from_secs(60);
    // `holder` takes the event and dies with it; `idle` read nothing.
    assert_eq!(
        store
            .outbox_take("prune", "holder", claim, 16)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        store
            .outbox_take("prune", "idle", claim, 16)
            .await
            .unwrap()
            .is_empty()
    );
    // (A read that finds nothing makes no consumer on Redis 7.0.)
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: i64 = redis::cmd("XGROUP")
        .arg("CREATECONSUMER")
        .arg(format!("{prefix}audit"))
        .arg("webhook:prune")
        .arg("idle")
        .query_async(&mut conn)
        .await
        .unwrap();
    let pruned = store
        .outbox_prune("prune", "me", Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(pruned, 1, "only the consumer holding nothing");
    // The event is still there for someone to take over.
    assert_eq!(group_state(&prefix, "webhook:prune").await.0, 1);
    let taken = store
        .outbox_take("prune", "me", Duration::ZERO, 16)
        .await
        .unwrap();
    assert_eq!(taken.len(), 1, "taken over from the dead holder");
    // A recent consumer is kept: `me` was just seen.
    assert_eq!(
        store
            .outbox_prune("prune", "other", Duration::from_secs(3600))
            .await
            .unwrap(),
        0
    );
}

// === settings ===

fn load(toml: &str) -> Result<hawzu_gate::config::Loaded, String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hawzu-gate.toml");
    std::fs::write(&file, toml).unwrap();
    hawzu_gate::config::load_from(Some(&file), Default::default()).map_err(|e| e.to_string())
}

#[test]
fn bad_webhook_settings_are_refused_naming_the_key_and_never_the_secret() {
    let hook = |body: &str| format!("[[webhooks]]\n{body}\n");
    let cases = [
        (
            "url = \"ftp://x.example/h\"\nsecret = \"0123456789abcdef0\"\nevents = [\"*\"]",
            "webhooks[0].url",
        ),
        (
            "url = \"https://x.example/h\"\nsecret = \"short-secret\"\nevents = [\"*\"]",
            "webhooks[0].secret",
        ),
        (
            "url = \"https://x.example/h\"\nevents = [\"*\"]",
            "webhooks[0].secret",
        ),
        (
            "url = \"https://x.example/h\"\nsecret = \"0123456789abcdef0\"\nevents = []",
            "webhooks[0].events",
        ),
        (
            "url = \"https://x.example/h\"\nsecret = \"0123456789abcdef0\"\nevents = [\"token.created\", \"token.exploded\"]",
            "webhooks[0].events[1]",
        ),
        (
            "url = \"https://u:p@x.example/h\"\nsecret = \"0123456789abcdef0\"\nevents = [\"*\"]",
            "webhooks[0].url",
        ),
        (
            "url = \"https://x.example/h\"\nsecret = \"0123456789abcdef0\"\nevents = [\"*\"]\ntimeout = \"10s\"\nclaim_after = \"15s\"",
            "webhooks[0].claim_after",
        ),
    ];
    for (body, key) in cases {
        let e = load(&hook(body)).expect_err(body);
        assert!(e.contains(key), "{body}: {e}");
        assert!(!e.contains("short-secret"), "{e}");
    }
    // Two entries on one host need their own names.
    let two = format!(
        "{}{}",
        hook("url = \"https://x.example/a\"\nsecret = \"0123456789abcdef0\"\nevents = [\"*\"]"),
        hook("url = \"https://x.example/b\"\nsecret = \"0123456789abcdef0\"\nevents = [\"*\"]"),
    );
    let e = load(&two).unwrap_err();
    assert!(e.contains("webhooks[1].name"), "{e}");
    let ok = load(&hook(
        "url = \"https://x.example/a\"\nsecret = \"0123456789abcdef0\"\nevents = [\"*\"]",
    ))
    .unwrap();
    assert_eq!(ok.settings.webhooks[0].name(), "x.example");
    let debug = format!("{:?}", ok.settings.webhooks[0]);
    assert!(!debug.contains("0123456789abcdef0"), "{debug}");
}

#[test]
fn check_config_redacts_the_secret_and_reads_the_secret_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hawzu-gate.toml");
    let run = |toml: &str| {
        std::fs::write(&file, toml).unwrap();
        std::process::Command::new(BIN)
            .args(["check-config", "--json", "--config"])
            .arg(&file)
            .output()
            .unwrap()
    };
    let out = run(&format!(
        "[[webhooks]]\nurl = \"https://x.example/h\"\nsecret = \"{SECRET}\"\nevents = [\"*\"]\n"
    ));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(!stdout.contains(SECRET), "{stdout}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["settings"]["webhooks"][0]["secret"], "***");
    assert_eq!(v["settings"]["webhooks"][0]["max_attempts"], 8);
    // A secret file that is missing, or too short, is refused at start.
    let missing = dir.path().join("no-such-secret");
    let out = run(&format!(
        "[[webhooks]]\nurl = \"https://x.example/h\"\nsecret_file = \"{}\"\nevents = [\"*\"]\n",
        missing.display()
    ));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("webhooks[0].secret_file"), "{stderr}");
    let weak = dir.path().join("weak");
    std::fs::write(&weak, "tooshort\n").unwrap();
    let out = run(&format!(
        "[[webhooks]]\nurl = \"https://x.example/h\"\nsecret_file = \"{}\"\nevents = [\"*\"]\n",
        weak.display()
    ));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("webhooks[0].secret_file") && !stderr.contains("tooshort"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_retrying_one_event_leaves_no_other_event_to_be_sent_twice() {
    // A gate that took several events at once and retries the first for
    // longer than claim_after must not leave the others waiting in its
    // name: another gate would take them over, and both would send them.
    // The receiver holds one request (its attempt times out after 1 s) so
    // that the next events pile up, then fails 40 (about 4 s of retries by
    // both gates, past claim_after's 2 s), then takes 300 ms over each 200
    // (so the two gates' sends overlap).
    let receiver = Receiver::start(Script {
        hold: 1,
        fail: 40,
        slow: Duration::from_millis(300),
    })
    .await;
    let prefix = unique_prefix("webhooks_batch");
    let toml = hook_toml(
        "batch",
        &receiver.url(),
        "[\"token.created\"]",
        "max_attempts = 100",
    );
    let a = gate("redis", &prefix, &toml, &[]).await;
    let b = gate("redis", &prefix, &toml, &[]).await;
    create_token(&a, workspace_token("t0", "ws_1", "workspace_viewer", "30d")).await;
    receiver.wait_for(1, "the first event's held attempt").await;
    futures_util::future::join_all((1..6).map(|i| {
        create_token(
            &b,
            workspace_token(&format!("t{i}"), "ws_1", "workspace_viewer", "30d"),
        )
    }))
    .await;
    let delivered = |d: &[Delivery]| {
        let mut ok: Vec<String> = d
            .iter()
            .filter(|d| d.status == 200)
            .map(|d| d.id.clone())
            .collect();
        ok.sort_unstable();
        ok
    };
    eventually("every event delivered", Duration::from_secs(40), || async {
        let mut ok = delivered(&receiver.deliveries());
        ok.dedup();
        (ok.len() == 6).then_some(())
    })
    .await;
    settled(&prefix, "webhook:batch").await;
    let ok = delivered(&receiver.deliveries());
    let mut once = ok.clone();
    once.dedup();
    assert_eq!(ok, once, "an event was delivered twice: {ok:?}");
}
