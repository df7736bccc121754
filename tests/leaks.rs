//! Leaked tokens revoke themselves (issue 14): GitHub's secret-scanning
//! partner protocol with real ECDSA P-256 signatures (the test makes its
//! own key pair and serves the key list over loopback in GitHub's JSON
//! shape), the public report door, and the operator's token prefix.
//!
//! Shown: a signed report revokes the token on every gate of a fleet
//! within the usual invalidation time, with one `leak_report` audit event;
//! a forged signature, an unknown key id, a body changed after signing, a
//! replay, look-alikes and a 10 MB body change nothing else; the public
//! door answers a real and an unknown token alike and is rate-limited per
//! client; tokens minted under an earlier prefix keep working.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use hawzu_gate::token::TokenSecret;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::{
    BIN, InProcessGate, create_token, eventually, listed, lose_id_key, nginx_auth, redis_url,
    unique_prefix, workspace_token,
};

// === GitHub, played by the test ===

/// The DER head of a P-256 SubjectPublicKeyInfo; the point follows.
const P256_SPKI_HEAD: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// A signing key of "GitHub".
struct SigningKey {
    id: String,
    pair: EcdsaKeyPair,
}

impl SigningKey {
    fn new(id: &str) -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        Self {
            id: id.to_owned(),
            pair,
        }
    }

    fn pem(&self) -> String {
        let mut der = P256_SPKI_HEAD.to_vec();
        der.extend_from_slice(self.pair.public_key().as_ref());
        let b64 = STANDARD.encode(der);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            lines.join("\n")
        )
    }

    /// The base64 DER signature of `body`, as GitHub sends it.
    fn sign(&self, body: &[u8]) -> String {
        let sig = self.pair.sign(&SystemRandom::new(), body).unwrap();
        STANDARD.encode(sig.as_ref())
    }
}

/// The key list, served over loopback in GitHub's JSON shape.
struct KeyServer {
    addr: SocketAddr,
    list: Arc<Mutex<String>>,
    fetches: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for KeyServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn key_list(keys: &[&SigningKey]) -> String {
    let keys: Vec<Value> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| json!({"key_identifier": k.id, "key": k.pem(), "is_current": i == 0}))
        .collect();
    json!({ "public_keys": keys }).to_string()
}

impl KeyServer {
    async fn start(keys: &[&SigningKey]) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let list = Arc::new(Mutex::new(key_list(keys)));
        let fetches = Arc::new(AtomicU64::new(0));
        let (l, f) = (list.clone(), fetches.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (l, f) = (l.clone(), f.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |_req| {
                        f.fetch_add(1, Ordering::SeqCst);
                        let body = l.lock().unwrap().clone();
                        async move {
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                                Bytes::from(body),
                            )))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            list,
            fetches,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/meta/public_keys/secret_scanning", self.addr)
    }

    fn serve(&self, keys: &[&SigningKey]) {
        *self.list.lock().unwrap() = key_list(keys);
    }

    fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::SeqCst)
    }
}

/// A report body in GitHub's shape.
fn report(tokens: &[&str]) -> Vec<u8> {
    let matches: Vec<Value> = tokens
        .iter()
        .map(|t| {
            json!({
                "token": t,
                "type": "hawzu_access_token",
                "url": "https://github.com/octo/app/blob/0a1b2c/config/.env",
                "source": "content",
            })
        })
        .collect();
    serde_json::to_vec(&matches).unwrap()
}

/// Hex SHA-256, as the feedback names a token.
fn sha256_hex(s: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, s.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// POSTs raw bytes with headers; (status, JSON body).
async fn post_raw(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = tokio::time::timeout(
        Duration::from_secs(30),
        client.request(req.body(Full::new(Bytes::from(body))).unwrap()),
    )
    .await
    .expect("an answer within GitHub's 30 s")
    .unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, value)
}

/// Sends `body` signed by `key` (named `key_id`) to the GitHub door.
async fn send_signed(
    leaks: SocketAddr,
    key_id: &str,
    signature: &str,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    post_raw(
        leaks,
        "/v1/leaks/github",
        &[
            ("content-type", "application/json"),
            ("github-public-key-identifier", key_id),
            ("github-public-key-signature", signature),
        ],
        body,
    )
    .await
}

// === gates ===

fn leaks_env(keys: &KeyServer) -> Vec<(&'static str, String)> {
    vec![
        ("listen.leaks", "127.0.0.1:0".to_owned()),
        ("leaks.github_keys_url", keys.url()),
    ]
}

async fn gate_with(extra: &[(&str, String)]) -> InProcessGate {
    let extra: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
    InProcessGate::start(&extra).await
}

fn redis_env(prefix: &str) -> Vec<(&'static str, String)> {
    vec![
        ("store.backend", "redis".to_owned()),
        ("store.redis.url", redis_url()),
        ("store.redis.key_prefix", prefix.to_owned()),
    ]
}

fn leaks_addr(gate: &InProcessGate) -> SocketAddr {
    gate.addrs.leaks.expect("listen.leaks is set")
}

/// The audit events of token `id` whose action is `leak_report`.
async fn leak_events(gate: &InProcessGate, id: &str) -> Vec<Value> {
    let v = gate
        .admin()
        .get(&format!("/admin/v1/audit?token={id}"))
        .await
        .json();
    v["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "leak_report")
        .cloned()
        .collect()
}

/// The `leak_report` events of token `id` once there are any: each is
/// written just after its revocation, which a test sees first.
async fn written_leak_events(gate: &InProcessGate, id: &str) -> Vec<Value> {
    eventually("the leak_report event", Duration::from_secs(5), || async {
        let events = leak_events(gate, id).await;
        (!events.is_empty()).then_some(events)
    })
    .await
}

/// Sends `body`, signed, while `relay` holds back the answer to its write
/// (503: Redis made it, the gate stopped waiting); waits until token `id`
/// reads revoked through `gate` and the held answers have come, and sends
/// it again, as GitHub does. The retry's feedback.
async fn sent_again_after_a_lost_answer(
    relay: &common::LateAnswers,
    gate: &InProcessGate,
    github: &SigningKey,
    body: &[u8],
    id: &str,
) -> Value {
    let signature = github.sign(body);
    relay.arm();
    let (status, first) =
        send_signed(leaks_addr(gate), &github.id, &signature, body.to_vec()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{first}");
    eventually(
        "the revocation in Redis",
        Duration::from_secs(10),
        || async { (state_of(gate, id).await == "revoked").then_some(()) },
    )
    .await;
    relay.wait_released().await;
    let (status, feedback) =
        send_signed(leaks_addr(gate), &github.id, &signature, body.to_vec()).await;
    assert_eq!(status, StatusCode::OK, "{feedback}");
    feedback
}

/// Rotates token `id` with a week's overlap: the successor's id and secret.
async fn rotated_with_overlap(gate: &InProcessGate, id: &str) -> (String, String) {
    let rotated = gate
        .admin()
        .post(
            &format!("/admin/v1/tokens/{id}/rotate"),
            json!({"overlap": "7d"}),
        )
        .await;
    assert_eq!(rotated.status, StatusCode::CREATED);
    let v = rotated.json();
    (
        v["token"]["id"].as_str().unwrap().to_owned(),
        v["secret"].as_str().unwrap().to_owned(),
    )
}

/// One series of the gate's metrics (`name{labels}` as exposed).
async fn metric(gate: &InProcessGate, series: &str) -> f64 {
    let text = String::from_utf8(gate.ops().get("/metrics").await.body.to_vec()).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{series} not exported"))
}

async fn state_of(gate: &InProcessGate, id: &str) -> String {
    let v = gate
        .admin()
        .get(&format!("/admin/v1/tokens/{id}"))
        .await
        .json();
    v["token"]["state"].as_str().unwrap_or_default().to_owned()
}

// === GitHub secret scanning ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_github_report_revokes_the_token_on_every_gate_of_the_fleet() {
    let github = SigningKey::new("gh-key-1");
    let keys = KeyServer::start(&[&github]).await;
    let prefix = unique_prefix("leaks-fleet");
    let mut env = redis_env(&prefix);
    env.extend(leaks_env(&keys));
    let a = gate_with(&env).await;
    let b = gate_with(&redis_env(&prefix)).await;
    assert!(b.addrs.leaks.is_none(), "listen.leaks is off unless set");
    let (id, secret) =
        create_token(&a, workspace_token("CI", "ws_1", "workspace_viewer", "30d")).await;
    // Both gates hold the token in their caches.
    for g in [&a, &b] {
        assert_eq!(nginx_auth(g, &secret).await.status, StatusCode::OK);
    }

    let body = report(&[&secret]);
    let signature = github.sign(&body);
    let started = Instant::now();
    let (status, feedback) =
        send_signed(leaks_addr(&a), &github.id, &signature, body.clone()).await;
    assert_eq!(status, StatusCode::OK, "{feedback}");
    assert_eq!(
        feedback,
        json!([{
            "token_hash": sha256_hex(&secret),
            "token_type": "hawzu_access_token",
            "label": "true_positive",
        }])
    );
    // Every gate refuses it within the usual invalidation time.
    for g in [&a, &b] {
        let refused = eventually(
            "the revocation to reach the gate",
            Duration::from_secs(2),
            || async {
                let r = nginx_auth(g, &secret).await;
                (r.status == StatusCode::UNAUTHORIZED).then_some(r)
            },
        )
        .await;
        assert_eq!(refused.header("x-hawzu-error"), Some("token_revoked"));
    }
    let took = started.elapsed();
    eprintln!("report to revoked on both gates: {took:?}");
    assert_eq!(state_of(&b, &id).await, "revoked");

    // One audit event: the reason `leaked`, with the report's url and source.
    let events = leak_events(&b, &id).await;
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(e["actor"], "leaks:github");
    let reason = e["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("leaked (reported by github; source: content; url: https://github.com/octo/app/blob/0a1b2c/config/.env"),
        "{reason}"
    );
    assert!(e["after"]["revoked_at"].is_string(), "{e}");
    assert_eq!(e["after"]["revoked_by"], "leaks:github", "{e}");
    assert!(
        !e.to_string().contains(&secret[4..]),
        "no secret in the event"
    );

    // A replayed (still valid) report is idempotent: same answer, no second event.
    let (status, again) = send_signed(leaks_addr(&a), &github.id, &signature, body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again, feedback);
    assert_eq!(leak_events(&a, &id).await.len(), 1);
    assert_eq!(
        metric(&a, "hawzu_gate_leak_reports_total{result=\"revoked\"}").await,
        1.0
    );
    assert_eq!(
        metric(
            &a,
            "hawzu_gate_leak_reports_total{result=\"already_revoked\"}"
        )
        .await,
        1.0
    );
}

/// A live token whose `id:` key Redis lost (evicted under a `maxmemory`
/// policy, or a fail-over before it replicated) is still found by its
/// secret: a leak report revokes it — it is not told a false positive —
/// and the revocation makes the key again, so the admin API finds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaked_token_whose_id_key_was_lost_is_still_revoked() {
    let github = SigningKey::new("gh-key-1");
    let keys = KeyServer::start(&[&github]).await;
    let prefix = unique_prefix("leaks-lost-id");
    let mut env = redis_env(&prefix);
    env.extend(leaks_env(&keys));
    let a = gate_with(&env).await;
    let (id, secret) =
        create_token(&a, workspace_token("CI", "ws_1", "workspace_viewer", "30d")).await;
    lose_id_key(&prefix, &id).await;
    assert_eq!(nginx_auth(&a, &secret).await.status, StatusCode::OK);
    // A list meanwhile cannot tell the lost key from a dropped record, and
    // takes the token's index entries away.
    assert!(!listed(&a, &id).await);

    let body = report(&[&secret]);
    let signature = github.sign(&body);
    let (status, feedback) = send_signed(leaks_addr(&a), &github.id, &signature, body).await;
    assert_eq!(status, StatusCode::OK, "{feedback}");
    assert_eq!(feedback[0]["label"], "true_positive", "{feedback}");
    let refused = eventually("the revocation", Duration::from_secs(2), || async {
        let r = nginx_auth(&a, &secret).await;
        (r.status == StatusCode::UNAUTHORIZED).then_some(r)
    })
    .await;
    assert_eq!(refused.header("x-hawzu-error"), Some("token_revoked"));
    assert_eq!(state_of(&a, &id).await, "revoked");
    assert!(listed(&a, &id).await, "the revocation indexes it again");
    assert_eq!(leak_events(&a, &id).await.len(), 1);
}

/// A report whose revocation Redis made but whose answer came after the
/// gate stopped waiting (GitHub got 503), sent again: the retry finds the
/// token revoked — by this reporter, a moment ago — so it is the same
/// revocation. It is told to every gate (the first try's event never went
/// out: another gate would serve the token from its cache for its whole
/// `cache.ttl`) and written in the audit log, once. Before, the retry
/// answered `true_positive` from the record alone, told nobody and wrote
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_whose_revocation_landed_after_its_timeout_is_told_and_audited_by_the_retry() {
    let github = SigningKey::new("gh-key-1");
    let keys = KeyServer::start(&[&github]).await;
    let redis = common::RedisServer::start();
    // The compare-and-set is a script: its answer comes 1 s late.
    let relay = common::LateAnswers::start(redis.port, b"EVALSHA", Duration::from_secs(1)).await;
    let prefix = unique_prefix("leaks-late");
    let direct = format!("redis://127.0.0.1:{}", redis.port);
    let store = |url: &str| {
        vec![
            ("store.backend", "redis".to_owned()),
            ("store.redis.url", url.to_owned()),
            ("store.redis.key_prefix", prefix.clone()),
        ]
    };
    let mut env = store(&relay.url());
    env.extend(leaks_env(&keys));
    env.push(("store.timeout", "300ms".to_owned()));
    let a = gate_with(&env).await;
    let mut env = store(&direct);
    env.push(("cache.ttl", "1h".to_owned()));
    let b = gate_with(&env).await;
    // A first compare-and-set loads the script (a NOSCRIPT answer held
    // back would hold back a command Redis never ran).
    let (warm, _) = create_token(
        &a,
        workspace_token("Warm", "ws_1", "workspace_viewer", "30d"),
    )
    .await;
    let warmed = a
        .admin()
        .post_empty(&format!("/admin/v1/tokens/{warm}/disable"))
        .await;
    assert_eq!(warmed.status, StatusCode::OK);
    let (id, secret) =
        create_token(&a, workspace_token("CI", "ws_1", "workspace_viewer", "30d")).await;
    // Gate b holds it in its cache.
    assert_eq!(nginx_auth(&b, &secret).await.status, StatusCode::OK);

    let body = report(&[&secret]);
    let signature = github.sign(&body);
    let feedback = sent_again_after_a_lost_answer(&relay, &a, &github, &body, &id).await;
    assert_eq!(feedback[0]["label"], "true_positive", "{feedback}");
    let refused = eventually(
        "the revocation to reach gate b",
        Duration::from_secs(5),
        || async {
            let r = nginx_auth(&b, &secret).await;
            (r.status == StatusCode::UNAUTHORIZED).then_some(r)
        },
    )
    .await;
    assert_eq!(refused.header("x-hawzu-error"), Some("token_revoked"));
    let events = written_leak_events(&a, &id).await;
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(e["actor"], "leaks:github");
    // The revocation's own time, and the record as it found it.
    let revoked_at = a
        .admin()
        .get(&format!("/admin/v1/tokens/{id}"))
        .await
        .json()["token"]["revoked_at"]
        .clone();
    assert_eq!(e["time"], revoked_at, "{e}");
    assert_eq!(e["before"]["revoked_at"], Value::Null, "{e}");
    assert!(
        e["reason"]
            .as_str()
            .unwrap()
            .starts_with("leaked (reported by github"),
        "{e}"
    );
    // A third report is a replay: no second event.
    let (status, _) = send_signed(leaks_addr(&a), &github.id, &signature, body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(leak_events(&a, &id).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reports_of_one_token_on_two_gates_revoke_it_once() {
    let github = SigningKey::new("gh-key-1");
    let keys = KeyServer::start(&[&github]).await;
    let mut env = redis_env(&unique_prefix("leaks-race"));
    env.extend(leaks_env(&keys));
    let (a, b) = (gate_with(&env).await, gate_with(&env).await);
    let (id, secret) =
        create_token(&a, workspace_token("CI", "ws_1", "workspace_viewer", "30d")).await;
    let body = report(&[&secret]);
    let signature = github.sign(&body);
    let mut sent = Vec::new();
    for i in 0..20 {
        let to = leaks_addr(if i % 2 == 0 { &a } else { &b });
        let (body, signature, key) = (body.clone(), signature.clone(), github.id.clone());
        sent.push(tokio::spawn(async move {
            send_signed(to, &key, &signature, body).await
        }));
        // And the public door, at the same time.
        let secret = secret.clone();
        sent.push(tokio::spawn(async move {
            let a = common::Http::new(format!("http://{to}"))
                .post("/v1/leaks", json!({ "token": secret }))
                .await;
            (a.status, Value::Null)
        }));
    }
    for s in sent {
        let (status, v) = s.await.unwrap();
        assert!(
            status == StatusCode::OK || status == StatusCode::ACCEPTED,
            "{status} {v}"
        );
        if status == StatusCode::OK {
            assert_eq!(v[0]["label"], "true_positive");
        }
    }
    eventually(
        "every public report to be judged",
        Duration::from_secs(5),
        || async {
            let mut judged = 0.0;
            for g in [&a, &b] {
                for r in ["revoked", "already_revoked"] {
                    judged += metric(
                        g,
                        &format!("hawzu_gate_leak_reports_total{{result=\"{r}\"}}"),
                    )
                    .await;
                }
            }
            (judged == 40.0).then_some(())
        },
    )
    .await;
    assert_eq!(leak_events(&a, &id).await.len(), 1);
    let revoked = metric(&a, "hawzu_gate_leak_reports_total{result=\"revoked\"}").await
        + metric(&b, "hawzu_gate_leak_reports_total{result=\"revoked\"}").await;
    assert_eq!(revoked, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_unknown_tampered_and_oversized_reports_change_nothing() {
    let github = SigningKey::new("gh-key-1");
    let forger = SigningKey::new("gh-key-1");
    let keys = KeyServer::start(&[&github]).await;
    let prefix = unique_prefix("leaks-refused");
    let mut env = redis_env(&prefix);
    env.extend(leaks_env(&keys));
    let gate = gate_with(&env).await;
    let leaks = leaks_addr(&gate);
    let (id, secret) = create_token(
        &gate,
        workspace_token("CI", "ws_1", "workspace_viewer", "30d"),
    )
    .await;
    let body = report(&[&secret]);

    // A forged signature: the right key id, another key.
    let (status, v) = send_signed(leaks, &github.id, &forger.sign(&body), body.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(v["error"], "signature_invalid");
    let fetched = keys.fetches();
    assert_eq!(fetched, 1, "the key list was read once");

    // A key id GitHub does not list: refused, and the list is not read
    // again for every forged id (at most once a minute).
    for n in 0..5 {
        let (status, v) = send_signed(
            leaks,
            &format!("no-such-key-{n}"),
            &github.sign(&body),
            body.clone(),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(v["error"], "unknown_key");
    }
    assert_eq!(
        keys.fetches(),
        fetched,
        "unknown ids do not refetch within a minute"
    );

    // The body changed after signing.
    let signature = github.sign(&body);
    let mut changed = body.clone();
    let at = changed.len() - 3;
    changed[at] = b'X';
    let (status, v) = send_signed(leaks, &github.id, &signature, changed).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(v["error"], "signature_invalid");

    // No signature at all.
    let (status, v) = post_raw(leaks, "/v1/leaks/github", &[], body.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(v["error"], "signature_missing");

    // A 10 MB body: refused by its declared size before any of it is read
    // (the test sends the head only and gets the answer).
    let mut stream = tokio::net::TcpStream::connect(leaks).await.unwrap();
    let head = format!(
        "POST /v1/leaks/github HTTP/1.1\r\nhost: gate\r\ncontent-type: application/json\r\ncontent-length: {}\r\ngithub-public-key-identifier: {}\r\ngithub-public-key-signature: {}\r\n\r\n",
        10 * 1024 * 1024,
        github.id,
        signature
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer))
        .await
        .expect("413 before the body is read")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("payload_too_large"), "{answer}");

    // A 10 MB body with no length (chunked): cut once it passes
    // leaks.max_body_bytes (4 MiB). The client may see the 413 or a reset
    // (the gate stops reading); the gate counts it either way.
    let mut stream = tokio::net::TcpStream::connect(leaks).await.unwrap();
    let head = format!(
        "POST /v1/leaks/github HTTP/1.1\r\nhost: gate\r\ntransfer-encoding: chunked\r\ngithub-public-key-identifier: {}\r\ngithub-public-key-signature: {}\r\n\r\n",
        github.id, signature
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = format!("100000\r\n{}\r\n", " ".repeat(0x10_0000));
    for _ in 0..10 {
        if stream.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let mut answer = vec![0u8; 4096];
    if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer)).await
    {
        let answer = String::from_utf8_lossy(&answer[..n]);
        assert!(n == 0 || answer.starts_with("HTTP/1.1 413"), "{answer}");
    }
    drop(stream);
    eventually(
        "the cut body to be counted",
        Duration::from_secs(5),
        || async {
            let n = metric(&gate, "hawzu_gate_leak_reports_total{result=\"too_large\"}").await;
            (n == 2.0).then_some(())
        },
    )
    .await;

    // Nothing changed: the token works, no event, nothing revoked.
    assert_eq!(nginx_auth(&gate, &secret).await.status, StatusCode::OK);
    assert_eq!(state_of(&gate, &id).await, "enabled");
    assert!(leak_events(&gate, &id).await.is_empty());
    assert_eq!(
        metric(
            &gate,
            "hawzu_gate_leak_reports_total{result=\"unverified\"}"
        )
        .await,
        8.0
    );
}

/// Sends a GitHub report's head declaring `length` bytes and `sent` of
/// them; the connection stays open for the caller.
async fn head_and_part(
    leaks: SocketAddr,
    key_id: &str,
    length: usize,
    sent: usize,
) -> tokio::net::TcpStream {
    head_and_part_from(leaks, None, key_id, length, sent).await
}

/// As [`head_and_part`], from client address `from` as a trusted proxy
/// in front names it (`X-Forwarded-For`).
async fn head_and_part_from(
    leaks: SocketAddr,
    from: Option<&str>,
    key_id: &str,
    length: usize,
    sent: usize,
) -> tokio::net::TcpStream {
    let mut stream = tokio::net::TcpStream::connect(leaks).await.unwrap();
    let forwarded = from.map_or(String::new(), |a| format!("x-forwarded-for: {a}\r\n"));
    let head = format!(
        "POST /v1/leaks/github HTTP/1.1\r\nhost: gate\r\n{forwarded}content-type: application/json\r\ncontent-length: {length}\r\ngithub-public-key-identifier: {key_id}\r\ngithub-public-key-signature: AAAA\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&vec![b' '; sent]).await.unwrap();
    stream
}

/// The gate's answer on `stream` within `within`: its status line.
async fn answer_on(stream: &mut tokio::net::TcpStream, within: Duration) -> String {
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(within, stream.read(&mut answer))
        .await
        .expect("an answer in time")
        .unwrap();
    String::from_utf8_lossy(&answer[..n]).into_owned()
}

/// A GitHub report from `from` whose body sends `sent` of `length` bytes
/// and then a byte every 200 ms (`trickle`) or nothing more: its answer,
/// read as it comes, and when.
fn unsigned_report(
    leaks: SocketAddr,
    from: String,
    key_id: String,
    length: usize,
    sent: usize,
    trickle: bool,
    started: Instant,
) -> tokio::task::JoinHandle<(String, Duration)> {
    tokio::spawn(async move {
        let stream = head_and_part_from(leaks, Some(&from), &key_id, length, sent).await;
        let (mut read, mut write) = stream.into_split();
        let dripping = tokio::spawn(async move {
            while trickle && write.write_all(b" ").await.is_ok() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            // Held open, sending nothing, until the answer.
            std::future::pending::<()>().await;
            drop(write);
        });
        let mut answer = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(20), read.read(&mut answer))
            .await
            .expect("every report is answered")
            .unwrap_or(0);
        dripping.abort();
        (
            String::from_utf8_lossy(&answer[..n]).into_owned(),
            started.elapsed(),
        )
    })
}

/// A gate whose GitHub door reads bodies of 1 MiB at most, `mib` MiB of
/// them at once, each within `deadline` (the rate check forgiving 60 s).
async fn gate_with_budget(keys: &KeyServer, mib: usize, deadline: &str) -> InProcessGate {
    let mut env = leaks_env(keys);
    env.extend([
        ("leaks.max_body_bytes", (1024 * 1024).to_string()),
        (
            "leaks.max_unverified_bytes",
            (mib * 1024 * 1024).to_string(),
        ),
        ("limits.body_read_timeout", deadline.to_owned()),
        ("limits.body_rate_grace", "60s".to_owned()),
    ]);
    gate_with(&env).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_bodies_cannot_fill_the_gates_memory() {
    // The GitHub door faces the internet: before a report's signature is
    // checked, its body is the only thing the gate holds for a stranger.
    let github = SigningKey::new("gh-key-1");
    let keys = KeyServer::start(&[&github]).await;
    let gate = gate_with_budget(&keys, 2, "4s").await;
    let leaks = leaks_addr(&gate);
    let signed = |from: &'static str| {
        let body = report(&["hwz_not-a-token"]);
        let signature = github.sign(&body);
        let id = github.id.clone();
        async move {
            post_raw(
                leaks,
                "/v1/leaks/github",
                &[
                    ("content-type", "application/json"),
                    ("x-forwarded-for", from),
                    ("github-public-key-identifier", &id),
                    ("github-public-key-signature", &signature),
                ],
                body,
            )
            .await
        }
    };

    // A key id GitHub does not list is refused from the head: the body is
    // never read (it is never sent here).
    let mut stream = head_and_part(leaks, "no-such-key", 1024 * 1024, 0).await;
    let answer = answer_on(&mut stream, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(answer.contains("unknown_key"), "{answer}");

    // Three reports under a listed key, each declaring 1 MiB and sending
    // a byte every 200 ms: a body holds what it sent, not what it
    // declared, so GitHub's report is judged meanwhile (before: the two
    // first held the whole 2 MiB budget by their declared lengths).
    let started = Instant::now();
    let trickling: Vec<_> = (0..3)
        .map(|i| {
            let from = format!("203.0.113.{}", 10 + i);
            unsigned_report(
                leaks,
                from,
                github.id.clone(),
                1024 * 1024,
                1000,
                true,
                started,
            )
        })
        .collect();
    eventually(
        "the trickling bodies to be read",
        Duration::from_secs(5),
        || async {
            let held = metric(&gate, "hawzu_gate_leak_unverified_bytes").await;
            (held >= 3000.0).then_some(())
        },
    )
    .await;
    let (status, answer) = signed("192.0.2.10").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    // A body must come whole within limits.body_read_timeout, however
    // steadily it trickles (the rate check forgives 60 s here).
    for t in trickling {
        let (answer, at) = t.await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(at < Duration::from_secs(20), "cut after {at:?}");
    }

    // Two bodies from two addresses that send almost all of their 1 MiB at
    // once and stall hold the whole budget: a third report is refused as
    // its bytes come (503 overloaded) until they are cut.
    let started = Instant::now();
    let stalled: Vec<_> = (0..2)
        .map(|i| {
            let from = format!("198.51.100.{}", 10 + i);
            let sent = 1024 * 1024 - 16;
            unsigned_report(
                leaks,
                from,
                github.id.clone(),
                1024 * 1024,
                sent,
                false,
                started,
            )
        })
        .collect();
    // Watched on the gauge, not probed: a probe's own body, held while
    // the stalled ones come, could take the bytes one of them needs.
    eventually(
        "the stalled bodies to hold the budget",
        Duration::from_secs(3),
        || async {
            let held = metric(&gate, "hawzu_gate_leak_unverified_bytes").await;
            (held == (2 * (1024 * 1024 - 16)) as f64).then_some(())
        },
    )
    .await;
    let (status, answer) = signed("192.0.2.11").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    assert_eq!(answer["error"], "overloaded", "{answer}");
    for t in stalled {
        let (answer, _) = t.await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    }
    assert_eq!(
        metric(&gate, "hawzu_gate_leak_unverified_bytes").await,
        0.0,
        "the cut bodies give their bytes back"
    );
    eventually(
        "a signed report to be judged again",
        Duration::from_secs(5),
        || async { (signed("192.0.2.12").await.0 == StatusCode::OK).then_some(()) },
    )
    .await;
    // Cut by the gate (counted), not dropped: the unknown key, the three
    // trickling and the two stalled.
    eventually(
        "the cut bodies to be counted",
        Duration::from_secs(5),
        || async {
            let n = metric(
                &gate,
                "hawzu_gate_leak_reports_total{result=\"unverified\"}",
            )
            .await;
            (n == 6.0).then_some(())
        },
    )
    .await;
    assert!(
        metric(
            &gate,
            "hawzu_gate_leak_reports_total{result=\"overloaded\"}"
        )
        .await
            >= 1.0
    );
}

/// One address (an IPv6 /64) holds at most one report's worth of the
/// budget: bodies that send almost all they declared at once and stall
/// until `body_read_timeout` cuts them — fewer failures a minute than
/// `failed_auth` allows — held the whole budget from four connections,
/// and GitHub's own reports got 503 for as long as the stranger kept it
/// up. (Trickling bodies hold only what they sent:
/// `unsigned_bodies_cannot_fill_the_gates_memory`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_hold_the_whole_report_budget() {
    let github = SigningKey::new("gh-key-1");
    let keys = KeyServer::start(&[&github]).await;
    let gate = gate_with_budget(&keys, 4, "10s").await;
    let leaks = leaks_addr(&gate);
    let started = Instant::now();
    let stalled: Vec<_> = (0..4)
        .map(|_| {
            let sent = 1024 * 1024 - 16;
            let from = "203.0.113.66".to_owned();
            unsigned_report(
                leaks,
                from,
                github.id.clone(),
                1024 * 1024,
                sent,
                false,
                started,
            )
        })
        .collect();
    // GitHub's report, from its own address, is judged meanwhile.
    eventually(
        "the stranger's bodies past its share to be refused",
        Duration::from_secs(5),
        || async {
            let n = metric(
                &gate,
                "hawzu_gate_leak_reports_total{result=\"overloaded\"}",
            )
            .await;
            (n >= 3.0).then_some(())
        },
    )
    .await;
    let body = report(&["hwz_not-a-token"]);
    let (status, answer) = post_raw(
        leaks,
        "/v1/leaks/github",
        &[
            ("content-type", "application/json"),
            ("x-forwarded-for", "192.0.2.10"),
            ("github-public-key-identifier", &github.id),
            ("github-public-key-signature", &github.sign(&body)),
        ],
        body.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    // The stranger's bodies past its share were refused as they came
    // (well before the 10 s cut); at most one was read to its stall.
    let mut refused = 0;
    for t in stalled {
        let (answer, at) = t.await.unwrap();
        if answer.starts_with("HTTP/1.1 503") {
            assert!(answer.contains("overloaded"), "{answer}");
            assert!(at < Duration::from_secs(5), "{at:?}");
            refused += 1;
        } else {
            assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        }
    }
    assert!(refused >= 3, "{refused} of 4 refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_whose_reports_keep_failing_waits() {
    // Forged reports count against the sender's address as wrong keys do:
    // one address cannot keep the door (and its body budget) busy.
    let github = SigningKey::new("gh-key-1");
    let forger = SigningKey::new("gh-key-1");
    let keys = KeyServer::start(&[&github]).await;
    let mut env = leaks_env(&keys);
    env.extend([
        ("failed_auth.limit", "3".to_owned()),
        ("failed_auth.window", "60s".to_owned()),
    ]);
    let gate = gate_with(&env).await;
    let leaks = leaks_addr(&gate);
    let body = report(&["hwz_not-a-token"]);
    for _ in 0..3 {
        let (status, v) = send_signed(leaks, &github.id, &forger.sign(&body), body.clone()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{v}");
    }
    let (status, v) = send_signed(leaks, &github.id, &github.sign(&body), body.clone()).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert_eq!(v["error"], "rate_limited");

    // So do bodies declared too large, refused before they are read (they
    // were not counted before, and an address already waiting was told
    // 413, not 429).
    env.push(("leaks.max_body_bytes", "1024".to_owned()));
    let gate = gate_with(&env).await;
    let leaks = leaks_addr(&gate);
    let large = vec![b' '; 1025];
    for _ in 0..3 {
        let (status, v) = send_signed(leaks, &github.id, &github.sign(&large), large.clone()).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
        assert!(
            v["message"]
                .as_str()
                .unwrap()
                .contains("leaks.max_body_bytes"),
            "{v}"
        );
    }
    let (status, v) = send_signed(leaks, &github.id, &github.sign(&large), large).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{v}");
    let (status, v) = send_signed(leaks, &github.id, &github.sign(&body), body).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_look_alikes_are_false_positives_without_a_store_read() {
    let github = SigningKey::new("gh-key-1");
    let keys = KeyServer::start(&[&github]).await;
    let gate = gate_with(&leaks_env(&keys)).await;
    // Random values a scanner's regex matches: `hwz_` + 36 base62, whose
    // checksum does not hold.
    const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut random = [0u8; 36 * 10_000];
    getrandom::fill(&mut random).unwrap();
    let look_alikes: Vec<String> = random
        .chunks(36)
        .map(|c| {
            let body: String = c
                .iter()
                .map(|b| BASE62[usize::from(*b) % 62] as char)
                .collect();
            format!("hwz_{body}")
        })
        .filter(|t| TokenSecret::parse(t).is_err())
        .collect();
    assert!(look_alikes.len() > 9_990);
    let refs: Vec<&str> = look_alikes.iter().map(String::as_str).collect();
    let body = report(&refs);
    let signature = github.sign(&body);
    let reads = "hawzu_gate_store_calls_total{op=\"get\",result=\"ok\"}";
    let before = metric(&gate, reads).await;

    let started = Instant::now();
    let (status, feedback) = send_signed(leaks_addr(&gate), &github.id, &signature, body).await;
    let took = started.elapsed();
    eprintln!("{} look-alikes judged in {took:?}", look_alikes.len());
    assert_eq!(status, StatusCode::OK);
    let feedback = feedback.as_array().unwrap();
    assert_eq!(feedback.len(), look_alikes.len());
    for (f, t) in feedback.iter().zip(&look_alikes) {
        assert_eq!(f["label"], "false_positive");
        assert_eq!(f["token_hash"], sha256_hex(t));
    }
    assert_eq!(
        metric(&gate, reads).await,
        before,
        "no store read for a bad checksum"
    );
    assert!(took < Duration::from_secs(10), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_real_and_unknown_matches_are_answered_well_inside_githubs_30_seconds() {
    let github = SigningKey::new("gh-key-1");
    let keys = KeyServer::start(&[&github]).await;
    let mut env = redis_env(&unique_prefix("leaks-many"));
    env.extend(leaks_env(&keys));
    let gate = gate_with(&env).await;
    let real = common::create_tokens(&gate.admin(), 100, "30d").await;
    // Well-formed values that are no token: each one a store read.
    let unknown: Vec<String> = (0..2_000)
        .map(|_| TokenSecret::generate().unwrap().expose().to_owned())
        .collect();
    let mut values: Vec<&str> = real.iter().map(|(secret, _)| secret.as_str()).collect();
    values.extend(unknown.iter().map(String::as_str));
    let body = report(&values);
    let started = Instant::now();
    let (status, feedback) =
        send_signed(leaks_addr(&gate), &github.id, &github.sign(&body), body).await;
    let took = started.elapsed();
    eprintln!(
        "{} real + {} unknown judged in {took:?}",
        real.len(),
        unknown.len()
    );
    assert_eq!(status, StatusCode::OK);
    let labels: Vec<&str> = feedback
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels.len(), values.len());
    assert!(labels[..100].iter().all(|l| *l == "true_positive"));
    assert!(labels[100..].iter().all(|l| *l == "false_positive"));
    assert!(took < Duration::from_secs(10), "{took:?}");
    for (_, id) in real.iter().take(3) {
        assert_eq!(state_of(&gate, id).await, "revoked");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_github_stopped_listing_is_refused_once_the_list_is_stale() {
    let old = SigningKey::new("gh-old");
    let new = SigningKey::new("gh-new");
    let keys = KeyServer::start(&[&old]).await;
    let mut env = leaks_env(&keys);
    env.push(("leaks.github_keys_ttl", "1s".to_owned()));
    let gate = gate_with(&env).await;
    let leaks = leaks_addr(&gate);
    let body = report(&["hwz_not-a-token"]);
    let (status, _) = send_signed(leaks, &old.id, &old.sign(&body), body.clone()).await;
    assert_eq!(status, StatusCode::OK);

    // GitHub rotates: the old key is no longer listed.
    keys.serve(&[&new]);
    let (status, v) = eventually("the old key to be refused", Duration::from_secs(5), || {
        let body = body.clone();
        let sig = old.sign(&body);
        async move {
            let (status, v) = send_signed(leaks, "gh-old", &sig, body).await;
            (status != StatusCode::OK).then_some((status, v))
        }
    })
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(v["error"], "unknown_key");
    let (status, _) = send_signed(leaks, &new.id, &new.sign(&body), body).await;
    assert_eq!(status, StatusCode::OK);
}

/// A list that cannot be read again (GitHub down or rate-limited) does not
/// stop the revocation of real leaks at once: the last list read answers
/// for one more TTL, then the reports wait (503) for a list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_refresh_keeps_the_last_list_for_one_more_ttl() {
    let github = SigningKey::new("gh-key-1");
    let keys = KeyServer::start(&[&github]).await;
    let mut env = leaks_env(&keys);
    env.push(("leaks.github_keys_ttl", "2s".to_owned()));
    let gate = gate_with(&env).await;
    let leaks = leaks_addr(&gate);
    let body = report(&["hwz_not-a-token"]);
    let send = || {
        let body = body.clone();
        let signature = github.sign(&body);
        let id = github.id.clone();
        async move { send_signed(leaks, &id, &signature, body).await }
    };
    assert_eq!(send().await.0, StatusCode::OK);
    assert_eq!(keys.fetches(), 1);
    *keys.list.lock().unwrap() = "<html>rate limited</html>".to_owned();
    let (status, v) = eventually("a refresh to be tried", Duration::from_secs(10), || async {
        let answer = send().await;
        (keys.fetches() >= 2).then_some(answer)
    })
    .await;
    assert_eq!(status, StatusCode::OK, "answered from the last list: {v}");
    eventually(
        "the last list to be given up",
        Duration::from_secs(10),
        || async {
            let (status, v) = send().await;
            (status == StatusCode::SERVICE_UNAVAILABLE && v["error"] == "keys_unavailable")
                .then_some(())
        },
    )
    .await;
}

/// While the key list cannot be read (GitHub unreachable, rate-limited,
/// answering garbage), reports do not make the gate read it again one
/// after another: at most once per `REFETCH_GAP` (a minute), whatever the
/// reports name — or anyone on the internet could keep the gate fetching
/// (and spend GitHub's 60 unauthenticated requests an hour, so that the
/// real reports after it find no keys either).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_list_that_cannot_be_read_is_not_read_again_for_every_report() {
    let github = SigningKey::new("gh-key-1");
    let keys = KeyServer::start(&[&github]).await;
    *keys.list.lock().unwrap() = "<html>rate limited</html>".to_owned();
    let gate = gate_with(&leaks_env(&keys)).await;
    let leaks = leaks_addr(&gate);
    let body = report(&["hwz_not-a-token"]);
    for n in 0..10 {
        let id = if n % 2 == 0 {
            github.id.clone()
        } else {
            format!("forged-{n}")
        };
        let (status, v) = send_signed(leaks, &id, &github.sign(&body), body.clone()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{n}: {v}");
        assert_eq!(v["error"], "keys_unavailable", "{n}: {v}");
    }
    assert_eq!(keys.fetches(), 1, "the list was read once, not per report");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_can_come_from_a_file_for_air_gapped_gates() {
    let github = SigningKey::new("gh-file");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys.json");
    std::fs::write(&file, key_list(&[&github])).unwrap();
    let gate = gate_with(&[
        ("listen.leaks", "127.0.0.1:0".to_owned()),
        ("leaks.github_keys_file", file.display().to_string()),
    ])
    .await;
    let (id, secret) = create_token(
        &gate,
        workspace_token("CI", "ws_1", "workspace_viewer", "30d"),
    )
    .await;
    let body = report(&[&secret]);
    let (status, v) = send_signed(leaks_addr(&gate), &github.id, &github.sign(&body), body).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v[0]["label"], "true_positive");
    assert_eq!(state_of(&gate, &id).await, "revoked");

    // A missing file stops the start, naming the key.
    let env = common::test_config(
        &dir.path().join("data2"),
        &[
            ("listen.leaks", "127.0.0.1:0"),
            ("leaks.github_keys_file", "/nonexistent/keys.json"),
        ],
    );
    let loaded = hawzu_gate::config::load_from(None, env).unwrap();
    let err = hawzu_gate::server::Bound::new(&loaded).await.unwrap_err();
    assert!(err.to_string().contains("leaks.github_keys_file"), "{err}");
}

// === the public report door ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_public_door_revokes_a_real_token_and_answers_an_unknown_one_alike() {
    let keys = KeyServer::start(&[&SigningKey::new("k")]).await;
    let gate = gate_with(&leaks_env(&keys)).await;
    let door = common::Http::new(format!("http://{}", leaks_addr(&gate)));
    let (id, secret) = create_token(
        &gate,
        workspace_token("CI", "ws_1", "workspace_viewer", "30d"),
    )
    .await;
    let unknown = TokenSecret::generate().unwrap();

    let report =
        |t: &str| json!({"token": t, "url": "https://pastebin.example/x", "source": "a log"});
    let real_answer = door.post("/v1/leaks", report(&secret)).await;
    let unknown_answer = door.post("/v1/leaks", report(unknown.expose())).await;
    // Same status, same body but for the hash of what was sent.
    assert_eq!(real_answer.status, StatusCode::ACCEPTED);
    assert_eq!(unknown_answer.status, real_answer.status);
    let (mut r, mut u) = (real_answer.json(), unknown_answer.json());
    assert_eq!(r["token_hash"], sha256_hex(&secret));
    assert_eq!(u["token_hash"], sha256_hex(unknown.expose()));
    r.as_object_mut().unwrap().remove("token_hash");
    u.as_object_mut().unwrap().remove("token_hash");
    assert_eq!(r, u);

    // The real token is revoked, with one event naming the public door.
    eventually(
        "the reported token to be revoked",
        Duration::from_secs(5),
        || async { (state_of(&gate, &id).await == "revoked").then_some(()) },
    )
    .await;
    // The event is written just after the revoke (the report was answered
    // before either): wait for it, then make sure no second one follows.
    let events = written_leak_events(&gate, &id).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["actor"], "leaks:public");
    assert!(
        events[0]["reason"].as_str().unwrap().starts_with(
            "leaked (reported by public; source: a log; url: https://pastebin.example/x"
        )
    );
    // Similar time: the lookup runs after the answer. Median of 5 each, for
    // a second real token (the first may be revoked by now; no matter).
    let times = |n: usize, token: String| {
        let door = door.clone();
        async move {
            let mut t = Vec::new();
            for _ in 0..n {
                let start = Instant::now();
                let a = door.post("/v1/leaks", json!({"token": token})).await;
                t.push(start.elapsed());
                assert!(
                    a.status == StatusCode::ACCEPTED || a.status == StatusCode::TOO_MANY_REQUESTS
                );
            }
            t.sort();
            t[n / 2]
        }
    };
    let (_, second) = create_token(
        &gate,
        workspace_token("CI 2", "ws_1", "workspace_viewer", "30d"),
    )
    .await;
    let real_median = times(5, second).await;
    let unknown_median = times(5, unknown.expose().to_owned()).await;
    eprintln!("public door: real {real_median:?}, unknown {unknown_median:?}");
    let slack = Duration::from_millis(50);
    assert!(
        real_median <= unknown_median * 3 + slack && unknown_median <= real_median * 3 + slack,
        "real {real_median:?}, unknown {unknown_median:?}"
    );

    // This listener serves the two doors only: never the admin API.
    let a = door.get("/admin/v1/tokens").await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(
        door.get("/v1/leaks").await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    // Not a token at all: said so (the format is public).
    let a = door.post("/v1/leaks", json!({"token": "hwz_nope"})).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.json()["error"], "not_a_token");
}

/// The public door answers 202 ("if this is a token of this gate, it is
/// revoked now") before the lookup, so its reporter never sends it again:
/// a lookup the store fails is tried again until the store answers. Before,
/// a report made while Redis was away was counted, logged and dropped: the
/// leaked token kept working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_report_made_while_the_store_is_away_is_judged_once_it_is_back() {
    let keys = KeyServer::start(&[&SigningKey::new("k")]).await;
    let dir = tempfile::tempdir().unwrap();
    let node = common::RedisNode::start_with(common::free_port(), dir.path(), &["--save", ""]);
    let mut env = vec![
        ("store.backend", "redis".to_owned()),
        (
            "store.redis.url",
            format!("redis://127.0.0.1:{}", node.port),
        ),
        ("store.redis.key_prefix", unique_prefix("leaks-away")),
    ];
    env.extend(leaks_env(&keys));
    let gate = gate_with(&env).await;
    let door = common::Http::new(format!("http://{}", leaks_addr(&gate)));
    let (id, secret) = create_token(
        &gate,
        workspace_token("CI", "ws_1", "workspace_viewer", "30d"),
    )
    .await;

    node.pause();
    let answer = door.post("/v1/leaks", json!({"token": secret})).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    eventually("the lookup to fail", Duration::from_secs(15), || async {
        let failed = metric(
            &gate,
            "hawzu_gate_leak_reports_total{result=\"store_error\"}",
        )
        .await;
        (failed >= 1.0).then_some(())
    })
    .await;
    node.resume();
    eventually(
        "the reported token to be revoked",
        Duration::from_secs(15),
        || async { (state_of(&gate, &id).await == "revoked").then_some(()) },
    )
    .await;
    let events = written_leak_events(&gate, &id).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["actor"], "leaks:public");
    assert_eq!(
        metric(&gate, "hawzu_gate_leak_reports_total{result=\"revoked\"}").await,
        1.0
    );
}

/// A leaked value is public: anyone may report it again and again. Once
/// it is revoked, a fresh public report costs reads only — never a write
/// that every gate hears and re-reads the token for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_replays_of_a_revoked_value_write_nothing() {
    let keys = KeyServer::start(&[&SigningKey::new("k")]).await;
    let mut env = redis_env(&unique_prefix("leaks-replay"));
    env.extend(leaks_env(&keys));
    let gate = gate_with(&env).await;
    let door = common::Http::new(format!("http://{}", leaks_addr(&gate)));
    let (id, secret) = create_token(
        &gate,
        workspace_token("CI", "ws_1", "workspace_viewer", "30d"),
    )
    .await;
    let report = json!({"token": secret});
    assert_eq!(
        door.post("/v1/leaks", report.clone()).await.status,
        StatusCode::ACCEPTED
    );
    // The first report judged whole (its write counted once it returned,
    // a moment after the revocation is visible).
    eventually("the revocation", Duration::from_secs(5), || async {
        let judged = metric(&gate, "hawzu_gate_leak_reports_total{result=\"revoked\"}").await;
        (judged == 1.0).then_some(())
    })
    .await;
    assert_eq!(state_of(&gate, &id).await, "revoked");
    let writes = || async {
        let text = String::from_utf8(gate.ops().get("/metrics").await.body.to_vec()).unwrap();
        text.lines()
            .filter(|l| l.starts_with(r#"hawzu_gate_store_calls_total{op="replace","#))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    let before = writes().await;
    for _ in 0..5 {
        assert_eq!(
            door.post("/v1/leaks", report.clone()).await.status,
            StatusCode::ACCEPTED
        );
    }
    eventually("the replays judged", Duration::from_secs(5), || async {
        let judged = metric(
            &gate,
            "hawzu_gate_leak_reports_total{result=\"already_revoked\"}",
        )
        .await;
        (judged == 5.0).then_some(())
    })
    .await;
    assert_eq!(writes().await, before, "a replay wrote the record");
    assert_eq!(leak_events(&gate, &id).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_public_door_limits_each_client_like_failed_authentications() {
    let keys = KeyServer::start(&[&SigningKey::new("k")]).await;
    let mut env = leaks_env(&keys);
    env.push(("failed_auth.limit", "3".to_owned()));
    env.push(("failed_auth.window", "60s".to_owned()));
    env.push(("trusted_proxies", String::new()));
    let gate = gate_with(&env).await;
    let base = format!("http://{}", leaks_addr(&gate));
    let one = common::Http::new(base.clone()).bound_to("127.0.0.1".parse().unwrap());
    let two = common::Http::new(base).bound_to("127.0.0.2".parse().unwrap());
    let guess = || json!({"token": TokenSecret::generate().unwrap().expose()});
    for _ in 0..3 {
        assert_eq!(
            one.post("/v1/leaks", guess()).await.status,
            StatusCode::ACCEPTED
        );
    }
    let limited = one.post("/v1/leaks", guess()).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.json()["error"], "rate_limited");
    assert!(limited.header("retry-after").is_some());
    // Another client is not held back by the first.
    assert_eq!(
        two.post("/v1/leaks", guess()).await.status,
        StatusCode::ACCEPTED
    );
}

// === the operator's prefix ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_minted_under_an_earlier_prefix_keeps_working() {
    let github = SigningKey::new("gh");
    let keys = KeyServer::start(&[&github]).await;
    let first = InProcessGate::embedded().await;
    let (old_id, old) = create_token(
        &first,
        workspace_token("old", "ws_1", "workspace_viewer", "30d"),
    )
    .await;
    assert!(old.starts_with("hwz_"));
    let dir = first.shutdown().await;

    // The operator moves to `acme_`, accepting `hwz_` still.
    let url = keys.url();
    let second = InProcessGate::start_in(
        dir,
        &[
            ("tokens.prefix", "acme_"),
            ("tokens.accepted_prefixes", "hwz_"),
            ("listen.leaks", "127.0.0.1:0"),
            ("leaks.github_keys_url", &url),
        ],
    )
    .await;
    assert_eq!(nginx_auth(&second, &old).await.status, StatusCode::OK);
    let (_, new) = create_token(
        &second,
        workspace_token("new", "ws_1", "workspace_viewer", "30d"),
    )
    .await;
    assert!(new.starts_with("acme_") && new.len() == 5 + 36, "{new}");
    assert_eq!(nginx_auth(&second, &new).await.status, StatusCode::OK);
    // Another prefix is not a token here.
    let stranger = new.replacen("acme_", "zork_", 1);
    let a = nginx_auth(&second, &stranger).await;
    assert_eq!(a.header("x-hawzu-error"), Some("malformed_token"));

    // Both prefixes can be reported; the old token is revoked by its report.
    let body = report(&[&old, &stranger]);
    let (status, v) = send_signed(leaks_addr(&second), &github.id, &github.sign(&body), body).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v[0]["label"], "true_positive");
    assert_eq!(v[1]["label"], "false_positive");
    assert_eq!(state_of(&second, &old_id).await, "revoked");
}

#[test]
fn a_bad_prefix_is_refused_at_start_up_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (key, value) in [
        ("tokens.prefix", "Hwz-"),
        ("tokens.prefix", "hwzadm_"),
        ("tokens.prefix", "hwz"),
        ("tokens.accepted_prefixes", "hwz_,old"),
    ] {
        let env = common::test_config(dir.path(), &[(key, value)]);
        let err = hawzu_gate::config::load_from(None, env)
            .unwrap_err()
            .to_string();
        assert!(err.contains(key), "{key}={value}: {err}");
    }
    // An admin key the admin API would read as a token.
    let env = common::test_config(
        dir.path(),
        &[
            ("tokens.prefix", "acme_"),
            ("admin.key", "acme_0123456789abcdefghijklmnopqrstuvwxyz"),
        ],
    );
    let err = hawzu_gate::config::load_from(None, env)
        .unwrap_err()
        .to_string();
    assert!(err.contains("admin.key"), "{err}");
    assert!(
        !err.contains("0123456789abcdef"),
        "the key is not shown: {err}"
    );
    // The leaks listener never shares the admin API's address.
    let env = common::test_config(
        dir.path(),
        &[
            ("listen.admin", "127.0.0.1:9191"),
            ("listen.leaks", "127.0.0.1:9191"),
        ],
    );
    let err = hawzu_gate::config::load_from(None, env)
        .unwrap_err()
        .to_string();
    assert!(err.contains("listen.leaks"), "{err}");
    // Keys only over TLS (or loopback).
    let env = common::test_config(
        dir.path(),
        &[("leaks.github_keys_url", "http://keys.example/meta")],
    );
    let err = hawzu_gate::config::load_from(None, env)
        .unwrap_err()
        .to_string();
    assert!(err.contains("leaks.github_keys_url"), "{err}");
}

#[test]
fn leaks_pattern_prints_the_regex_for_the_configured_prefixes() {
    let dir = tempfile::tempdir().unwrap();
    let run = |env: &[(&str, &str)]| {
        let mut cmd = std::process::Command::new(BIN);
        cmd.args(["leaks", "pattern"]).current_dir(dir.path());
        cmd.env_remove("HAWZU_GATE_CONFIG");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    assert_eq!(run(&[]), r"\b(?:hwz_)[0-9A-Za-z]{36}\b");
    let pattern = run(&[
        ("HAWZU_GATE__TOKENS__PREFIX", "acme_"),
        ("HAWZU_GATE__TOKENS__ACCEPTED_PREFIXES", "hwz_"),
    ]);
    assert_eq!(pattern, r"\b(?:acme_|hwz_)[0-9A-Za-z]{36}\b");
    let re = regex::Regex::new(&pattern).unwrap();
    let token = TokenSecret::generate().unwrap();
    let text = format!("API_KEY={} # oops", token.expose());
    assert_eq!(re.find(&text).unwrap().as_str(), token.expose());
    assert!(!re.is_match("hwz_short"));
}

/// A leaked value that a rotation made takes the value it replaced with it
/// while their overlap runs: whoever holds one may hold both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaked_successor_ends_its_predecessors_overlap() {
    let keys = KeyServer::start(&[&SigningKey::new("k")]).await;
    let gate = gate_with(&leaks_env(&keys)).await;
    let door = common::Http::new(format!("http://{}", leaks_addr(&gate)));
    let (id, old_secret) = create_token(
        &gate,
        workspace_token("CI", "ws_1", "workspace_viewer", "30d"),
    )
    .await;
    let (_, new_secret) = rotated_with_overlap(&gate, &id).await;
    assert_eq!(nginx_auth(&gate, &old_secret).await.status, StatusCode::OK);

    let answer = door
        .post(
            "/v1/leaks",
            json!({"token": new_secret, "url": "https://pastebin.example/x", "source": "a log"}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    for secret in [&new_secret, &old_secret] {
        let refused = eventually("both values refused", Duration::from_secs(2), || async {
            let r = nginx_auth(&gate, secret).await;
            (r.status == StatusCode::UNAUTHORIZED).then_some(r)
        })
        .await;
        assert_eq!(refused.header("x-hawzu-error"), Some("token_revoked"));
    }
    // Each ended value's event is written just after its revocation.
    let events = written_leak_events(&gate, &id).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(
        events[0]["reason"]
            .as_str()
            .unwrap()
            .contains("its successor"),
        "{events:?}"
    );
}

/// Along a chain too: the value before the leaked one's predecessor, still
/// in its own overlap, goes with them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaked_value_ends_every_overlap_of_its_chain() {
    let keys = KeyServer::start(&[&SigningKey::new("k")]).await;
    let gate = gate_with(&leaks_env(&keys)).await;
    let door = common::Http::new(format!("http://{}", leaks_addr(&gate)));
    let (id, first) = create_token(
        &gate,
        workspace_token("CI", "ws_1", "workspace_viewer", "30d"),
    )
    .await;
    let mut secrets = vec![first];
    let mut current = id.clone();
    for _ in 0..2 {
        let (next, secret) = rotated_with_overlap(&gate, &current).await;
        current = next;
        secrets.push(secret);
    }
    for s in &secrets {
        assert_eq!(nginx_auth(&gate, s).await.status, StatusCode::OK);
    }
    let answer = door
        .post(
            "/v1/leaks",
            json!({"token": secrets[2], "url": "https://pastebin.example/x", "source": "a log"}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    for secret in secrets.iter().rev() {
        let refused = eventually("every value refused", Duration::from_secs(2), || async {
            let r = nginx_auth(&gate, secret).await;
            (r.status == StatusCode::UNAUTHORIZED).then_some(r)
        })
        .await;
        assert_eq!(refused.header("x-hawzu-error"), Some("token_revoked"));
    }
    // Each ended value's event is written just after its revocation.
    let events = written_leak_events(&gate, &id).await;
    assert_eq!(events.len(), 1, "{events:?}");
}

/// A leaked successor whose predecessor's overlap Redis ended while the
/// answer was lost (GitHub got 503): GitHub sends the report again, the
/// walk finds the predecessor ended by this reporter a moment ago, and its
/// `leak_report` event — never written by the first try — is written now,
/// once. Before, the retry found it revoked and wrote nothing for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_predecessor_whose_overlap_end_landed_after_its_timeout_is_audited_by_the_retry() {
    let github = SigningKey::new("gh-key-1");
    let keys = KeyServer::start(&[&github]).await;
    let redis = common::RedisServer::start();
    // Only a write of the predecessor names its successor: that
    // compare-and-set's answer comes 1 s late.
    let relay =
        common::LateAnswers::start(redis.port, b"\"rotated_to\":\"", Duration::from_secs(1)).await;
    let mut env = vec![
        ("store.backend", "redis".to_owned()),
        ("store.redis.url", relay.url()),
        ("store.redis.key_prefix", unique_prefix("leaks-late-chain")),
        ("store.timeout", "300ms".to_owned()),
    ];
    env.extend(leaks_env(&keys));
    let gate = gate_with(&env).await;
    let (old_id, old_secret) = create_token(
        &gate,
        workspace_token("CI", "ws_1", "workspace_viewer", "30d"),
    )
    .await;
    let (new_id, new_secret) = rotated_with_overlap(&gate, &old_id).await;

    let body = report(&[&new_secret]);
    let signature = github.sign(&body);
    // Redis ends the predecessor's overlap all the same.
    sent_again_after_a_lost_answer(&relay, &gate, &github, &body, &old_id).await;
    let events = written_leak_events(&gate, &old_id).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(
        events[0]["reason"]
            .as_str()
            .unwrap()
            .contains("its successor"),
        "{events:?}"
    );
    assert_eq!(events[0]["before"]["revoked_at"], Value::Null, "{events:?}");
    assert_eq!(leak_events(&gate, &new_id).await.len(), 1);
    // A third report: no second event for either.
    let (status, _) = send_signed(leaks_addr(&gate), &github.id, &signature, body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(leak_events(&gate, &old_id).await.len(), 1);
    assert_eq!(leak_events(&gate, &new_id).await.len(), 1);
    assert_eq!(
        nginx_auth(&gate, &old_secret).await.status,
        StatusCode::UNAUTHORIZED
    );
}
