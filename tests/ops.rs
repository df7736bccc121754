//! Operating the gate: Prometheus metrics after real traffic (checked by
//! `promtool`), liveness and readiness, and logs that carry one access event
//! per request and never a secret.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::io::Write;
use std::process::Stdio;

use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
    HttpRequest, Request as AttrRequest,
};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use http::{Method, StatusCode};
use serde_json::Value;

use common::{
    GateProcess, InProcessGate, TestUpstream, WS1_PROJECTS, curl, nginx_auth, workspace_token,
};

/// Sends real traffic through every door.
async fn traffic(gate: &InProcessGate) -> String {
    let v = gate
        .admin()
        .post(
            "/admin/v1/tokens",
            workspace_token("Metrics", "ws_1", "workspace_viewer", "1m"),
        )
        .await
        .json();
    let secret = v["secret"].as_str().unwrap().to_owned();
    let id = v["token"]["id"].as_str().unwrap().to_owned();
    for _ in 0..3 {
        assert_eq!(nginx_auth(gate, &secret).await.status, StatusCode::OK);
    }
    nginx_auth(gate, "hwz_notatoken").await;
    gate.auth()
        .request(Method::GET, "/auth/traefik")
        .token(&secret)
        .header("x-forwarded-method", "POST")
        .header("x-forwarded-uri", WS1_PROJECTS)
        .go()
        .await;
    gate.auth()
        .request(Method::GET, &format!("/envoy{WS1_PROJECTS}"))
        .token(&secret)
        .go()
        .await;
    let p = gate
        .proxy()
        .request(Method::GET, WS1_PROJECTS)
        .token(&secret)
        .go()
        .await;
    assert_eq!(p.status, StatusCode::OK);
    gate.proxy()
        .request(Method::GET, "/settings/access-tokens")
        .token(&secret)
        .go()
        .await;
    gate.admin().get(&format!("/admin/v1/tokens/{id}")).await;
    gate.admin()
        .get("/admin/v1/tokens/tok_0000000000000000")
        .await;
    secret
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_after_real_traffic_pass_promtool_and_hold_no_ids() {
    let upstream = TestUpstream::start().await;
    let url = upstream.url();
    let gate = InProcessGate::start(&[("upstream.url", &url)]).await;
    let secret = traffic(&gate).await;
    let m = gate.ops().get("/metrics").await;
    assert_eq!(m.status, StatusCode::OK);
    assert!(
        m.header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = String::from_utf8(m.body.to_vec()).unwrap();

    for name in [
        "hawzu_gate_decisions_total",
        "hawzu_gate_decision_duration_seconds_bucket",
        "hawzu_gate_cache_hits_total",
        "hawzu_gate_cache_negative_hits_total",
        "hawzu_gate_cache_misses_total",
        "hawzu_gate_cache_evictions_total",
        "hawzu_gate_cache_entries",
        "hawzu_gate_store_calls_total",
        "hawzu_gate_store_call_duration_seconds_bucket",
        "hawzu_gate_invalidations_received_total",
        "hawzu_gate_pubsub_connected",
        "hawzu_gate_upstream_requests_total",
        "hawzu_gate_upstream_duration_seconds_bucket",
        "hawzu_gate_upstream_resent_total",
        "hawzu_gate_admin_operations_total",
    ] {
        assert!(text.contains(name), "{name} missing");
    }
    let value = |series: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(series))
            .unwrap_or_else(|| panic!("no {series}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(
        value(r#"hawzu_gate_decisions_total{code="none",door="nginx",outcome="allow"}"#),
        3.0
    );
    assert_eq!(
        value(r#"hawzu_gate_decisions_total{code="malformed_token",door="nginx",outcome="deny"}"#),
        1.0
    );
    assert_eq!(
        value(
            r#"hawzu_gate_decisions_total{code="insufficient_role",door="traefik",outcome="deny"}"#
        ),
        1.0
    );
    assert_eq!(
        value(r#"hawzu_gate_decisions_total{code="none",door="envoy_http",outcome="allow"}"#),
        1.0
    );
    assert_eq!(
        value(r#"hawzu_gate_decisions_total{code="none",door="proxy",outcome="allow"}"#),
        1.0
    );
    assert_eq!(
        value(r#"hawzu_gate_decisions_total{code="no_matching_rule",door="proxy",outcome="deny"}"#),
        1.0
    );
    assert_eq!(
        value(r#"hawzu_gate_upstream_requests_total{class="2xx"}"#),
        1.0
    );
    assert_eq!(
        value(r#"hawzu_gate_admin_operations_total{op="create",result="ok"}"#),
        1.0
    );
    assert_eq!(
        value(r#"hawzu_gate_admin_operations_total{op="show",result="not_found"}"#),
        1.0
    );
    assert_eq!(
        value(r#"hawzu_gate_admin_operations_total{op="show",result="ok"}"#),
        1.0
    );
    assert!(value("hawzu_gate_cache_hits_total") >= 5.0);
    assert_eq!(value("hawzu_gate_cache_misses_total"), 1.0);
    assert_eq!(value("hawzu_gate_cache_entries"), 1.0);

    // Bounded labels: no token id, no secret, no path.
    assert!(!text.contains("tok_"), "a token id is a label");
    assert!(!text.contains(&secret[4..]));
    assert!(!text.contains("/api/v1"), "a path is a label");

    // Prometheus' own checker accepts the exposition.
    let mut promtool = common::tool("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn health_and_readiness_report_the_store() {
    let gate = InProcessGate::embedded().await;
    let h = gate.ops().get("/healthz").await;
    assert_eq!(h.status, StatusCode::OK);
    let r = gate.ops().get("/readyz").await;
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    assert_eq!(v["ready"], true);
    assert_eq!(v["checks"]["store"], "ok");
    assert_eq!(v["checks"]["config"], "loaded");

    // Redis away: alive, but not ready, and the detail says why — in the
    // gate's terms: the store's own text (an address, a Redis message) is
    // for the log, not for whoever can reach the ops port.
    let port = common::free_port();
    let gate = InProcessGate::start(&[
        ("store.backend", "redis"),
        ("store.redis.url", &format!("redis://127.0.0.1:{port}")),
    ])
    .await;
    assert_eq!(gate.ops().get("/healthz").await.status, StatusCode::OK);
    let r = gate.ops().get("/readyz").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    let v = r.json();
    assert_eq!(v["ready"], false);
    assert_eq!(
        v["checks"]["store"], "unavailable: the token store did not answer within 250ms",
        "{v}"
    );
    assert_eq!(v["checks"]["subscription"], "down");

    // A server answering every command with an error of its own: its words
    // stay in the log.
    let refuser = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let refuser_addr = refuser.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut conn, _)) = refuser.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                while let Ok(n) = conn.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    // One error per command: a command starts a line with `*`.
                    let commands = (0..n)
                        .filter(|&i| buf[i] == b'*' && (i == 0 || buf[..i].ends_with(b"\r\n")))
                        .count()
                        .max(1);
                    let errors = "-ERR internal detail at 10.9.8.7\r\n".repeat(commands);
                    if conn.write_all(errors.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let gate = InProcessGate::start(&[
        ("store.backend", "redis"),
        ("store.redis.url", &format!("redis://{refuser_addr}")),
    ])
    .await;
    let r = gate.ops().get("/readyz").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    let body = String::from_utf8_lossy(&r.body);
    assert!(!body.contains("10.9.8.7"), "{body}");
    assert_eq!(
        r.json()["checks"]["store"],
        "unavailable: it failed (the gate's log has its error)",
        "{body}"
    );
    // A gate that never reached its store has nothing cached: leaving the
    // store out does not make it ready.
    let r = gate.ops().get("/readyz?exclude=store").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.json()["excluded"], serde_json::json!(["store"]));
    let r = gate.ops().get("/readyz?exclude=config").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        String::from_utf8_lossy(&r.body).contains("exclude=store"),
        "{}",
        String::from_utf8_lossy(&r.body)
    );

    // Redis there: ready once subscribed.
    let gate = InProcessGate::redis("ready").await;
    let v = common::eventually("readiness", std::time::Duration::from_secs(10), || async {
        let r = gate.ops().get("/readyz").await;
        (r.status == StatusCode::OK).then(|| r.json())
    })
    .await;
    assert_eq!(v["checks"]["subscription"], "up");
}

/// What an orchestrator's readiness probe asks: once a gate has been
/// ready, a store shared by every gate of a fleet going away takes it out
/// of service no more (cached tokens keep working; every gate unready at
/// once would leave nothing to route to). `/readyz` and the gauge still
/// say it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_without_the_store_holds_once_ready() {
    let mut redis = common::RedisServer::start();
    let gate = InProcessGate::start(&[
        ("store.backend", "redis"),
        ("store.redis.url", &redis.url()),
    ])
    .await;
    common::eventually("readiness", std::time::Duration::from_secs(10), || async {
        let r = gate.ops().get("/readyz?exclude=store").await;
        (r.status == StatusCode::OK).then_some(())
    })
    .await;
    redis.stop();
    let whole = common::eventually(
        "the store gone",
        std::time::Duration::from_secs(10),
        || async {
            let r = gate.ops().get("/readyz").await;
            (r.json()["checks"]["store"] != "ok").then_some(r)
        },
    )
    .await;
    assert_eq!(whole.json()["ready"], false);
    let r = gate.ops().get("/readyz?exclude=store").await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.json()["ready"], true);
    assert_ne!(r.json()["checks"]["store"], "ok");
    assert_eq!(r.json()["excluded"], serde_json::json!(["store"]));
    let metrics = String::from_utf8(gate.ops().get("/metrics").await.body.to_vec()).unwrap();
    assert!(
        metrics.lines().any(|l| l == "hawzu_gate_ready 0"),
        "the gauge says the whole answer"
    );
}

/// Every door — the proxy, `/auth/nginx`, `/auth/traefik`, `/envoy/…` and
/// gRPC — with secrets in the header, the path and the query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_have_one_access_event_per_request_and_no_secret() {
    let upstream = TestUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut gate = GateProcess::start(
        dir.path(),
        &format!(
            "[log]\nformat = \"json\"\n[upstream]\nurl = \"{}\"\n",
            upstream.url()
        ),
    );
    let create = gate.cli(&[
        "token",
        "create",
        "--name",
        "Logs",
        "--workspace",
        "ws_1",
        "--role",
        "workspace_member",
        "--expires",
        "1w",
        "--json",
    ]);
    let secret = create.json()["secret"].as_str().unwrap().to_owned();
    let id = create.json()["token"]["id"].as_str().unwrap().to_owned();
    let admin_key = hawzu_gate::admin::read_key_file(&dir.path().join("data/admin.key")).unwrap();
    let proxy = format!("http://{}", gate.proxy);
    let auth = format!("Authorization: Bearer {secret}");
    // The last character changed (to one it is not: a secret may end in `x`).
    let last = if secret.ends_with('x') { 'y' } else { 'x' };
    let typo = format!("Authorization: Bearer {}{last}", &secret[..39]);
    // Allowed, refused, malformed, a token pasted in the path and the query.
    let urls = [
        (
            format!("{proxy}{WS1_PROJECTS}?page=1&token={secret}"),
            auth.clone(),
        ),
        (
            format!("{proxy}/api/v1/workspaces/ws_1/projects/p/testcases/{secret}"),
            auth.clone(),
        ),
        (format!("{proxy}/settings/access-tokens"), auth.clone()),
        (format!("{proxy}{WS1_PROJECTS}"), typo.clone()),
        (
            format!("{proxy}{WS1_PROJECTS}"),
            "Authorization: hwz_raw_value_without_scheme".to_owned(),
        ),
    ];
    // The forward-auth doors, asked about the same kinds of request.
    let auth_door = format!("http://{}", gate.auth);
    let with_query = format!("{WS1_PROJECTS}?page=1&token={secret}");
    let in_path = format!("/api/v1/workspaces/ws_1/projects/p/testcases/{secret}");
    let doors: Vec<(&str, String, Vec<String>)> = vec![
        (
            "nginx",
            format!("{auth_door}/auth/nginx"),
            vec![
                auth.clone(),
                "X-Original-Method: GET".into(),
                format!("X-Original-URI: {with_query}"),
            ],
        ),
        (
            "traefik",
            format!("{auth_door}/auth/traefik"),
            vec![
                typo.clone(),
                "X-Forwarded-Method: GET".into(),
                format!("X-Forwarded-Uri: {in_path}"),
            ],
        ),
        (
            "envoy_http",
            format!("{auth_door}/envoy{with_query}"),
            vec![auth.clone()],
        ),
    ];
    // (request id, door, status the client saw)
    let mut sent: Vec<(String, &str, u16)> = Vec::new();
    for (i, (url, header)) in urls.iter().enumerate() {
        let rid = format!("req-{i}");
        let (status, _, _) = tokio::task::spawn_blocking({
            let (url, header, rid) = (url.clone(), header.clone(), rid.clone());
            move || curl(&["-H", &header, "-H", &format!("X-Request-Id: {rid}"), &url])
        })
        .await
        .unwrap();
        sent.push((rid, "proxy", status));
    }
    // The deny codes the forward-auth doors answered, to name in a failure.
    let mut codes: Vec<String> = Vec::new();
    for (door, url, headers) in doors {
        let rid = format!("req-{}", sent.len());
        let (status, answer_headers, _) = tokio::task::spawn_blocking({
            let rid = rid.clone();
            move || {
                let mut args = vec![format!("X-Request-Id: {rid}")];
                args.extend(headers);
                let mut argv: Vec<&str> = Vec::new();
                for h in &args {
                    argv.extend(["-H", h.as_str()]);
                }
                argv.push(&url);
                curl(&argv)
            }
        })
        .await
        .unwrap();
        codes.extend(
            answer_headers
                .iter()
                .filter(|h| h.to_ascii_lowercase().starts_with("x-hawzu-error:"))
                .map(|h| format!("{rid}: {h}")),
        );
        sent.push((rid, door, status));
    }
    // And Envoy's gRPC check.
    let rid = format!("req-{}", sent.len());
    let mut grpc = AuthorizationClient::connect(format!("http://{}", gate.grpc))
        .await
        .unwrap();
    let checked = grpc
        .check(CheckRequest {
            attributes: Some(AttributeContext {
                request: Some(AttrRequest {
                    http: Some(HttpRequest {
                        method: "GET".into(),
                        path: with_query.clone(),
                        headers: [
                            ("authorization".to_owned(), format!("Bearer {secret}")),
                            ("x-request-id".to_owned(), rid.clone()),
                        ]
                        .into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(checked.status.unwrap().code, 0, "allowed over gRPC");
    sent.push((rid, "grpc", 200));
    let statuses: Vec<u16> = sent.iter().map(|(_, _, s)| *s).collect();
    // proxy: allowed, allowed, no rule, a typo, no scheme; nginx allowed,
    // traefik a typo, envoy allowed, gRPC allowed.
    assert_eq!(
        statuses,
        [200, 200, 403, 401, 401, 200, 401, 200, 200],
        "{sent:?} {codes:?}"
    );
    assert_eq!(gate.cli(&["token", "disable", &id]).code, 0);
    assert!(gate.terminate().success());

    let log = gate.log_text();
    for leak in [
        &secret[4..],
        &secret[10..30],
        &typo[22..],
        "hwz_raw_value_without_scheme",
        &admin_key[7..],
    ] {
        assert!(
            !log.contains(leak),
            "secret or Authorization value in the log: {leak}\n{log}"
        );
    }
    assert!(!log.to_ascii_lowercase().contains("authorization: bearer"));

    // Every line is JSON; every request has one access event with its fields.
    let events: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let access: Vec<&Value> = events
        .iter()
        .filter(|e| e["target"] == "hawzu_gate::access")
        .collect();
    for (rid, door, status) in &sent {
        let matching: Vec<_> = access
            .iter()
            .filter(|e| e["request_id"] == rid.as_str())
            .collect();
        assert_eq!(matching.len(), 1, "one access event for {rid}");
        // Each door logs its own requests, with the status the client saw,
        // and never the query (where a secret was).
        assert_eq!(matching[0]["door"], *door, "{rid}: {}", matching[0]);
        assert_eq!(matching[0]["status"], *status, "{rid}: {}", matching[0]);
        let path = matching[0]["path"].as_str().unwrap();
        assert!(!path.contains('?'), "{rid}: {path}");
    }
    let first = access.iter().find(|e| e["request_id"] == "req-0").unwrap();
    assert_eq!(first["door"], "proxy");
    assert_eq!(first["method"], "GET");
    assert_eq!(first["path"], WS1_PROJECTS, "no query in the path");
    assert_eq!(first["status"], 200);
    assert_eq!(first["code"], "allow");
    assert_eq!(first["token_id"], id.as_str());
    assert_eq!(first["workspace_id"], "ws_1");
    assert!(first["latency_us"].as_u64().is_some());
    let third = access.iter().find(|e| e["request_id"] == "req-2").unwrap();
    assert_eq!(third["status"], 403);
    assert_eq!(third["code"], "no_matching_rule");
    // Admin events say who did what to which token.
    let admin: Vec<&Value> = events
        .iter()
        .filter(|e| e["target"] == "hawzu_gate::admin")
        .collect();
    assert!(
        admin
            .iter()
            .any(|e| e["op"] == "create" && e["token_id"] == id.as_str() && e["by"].is_string())
    );
    assert!(
        admin
            .iter()
            .any(|e| e["op"] == "disable" && e["token_id"] == id.as_str())
    );
}

/// Whoever reaches the ops port (0.0.0.0 in the image; probes need it)
/// must not be able to keep the shared store busy: a readiness check asks
/// the store at most about once a second, however many probes come, and
/// probes at once share one ping.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_probes_share_one_store_ping_a_second() {
    let gate = InProcessGate::embedded().await;
    let pings = || async {
        let m = String::from_utf8(gate.ops().get("/metrics").await.body.to_vec()).unwrap();
        m.lines()
            .filter(|l| l.starts_with("hawzu_gate_store_calls_total{op=\"ping\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    let before = pings().await;
    let started = std::time::Instant::now();
    let probes = (0..50).map(|_| async {
        let r = gate.ops().get("/readyz").await;
        assert_eq!(r.status, StatusCode::OK);
    });
    futures_util::future::join_all(probes).await;
    for _ in 0..50 {
        assert_eq!(gate.ops().get("/readyz").await.status, StatusCode::OK);
    }
    let seconds = started.elapsed().as_secs_f64().ceil();
    let asked = pings().await - before;
    assert!(
        asked <= seconds + 1.0,
        "{asked} store pings for 100 probes in {seconds} s"
    );
}

/// A write the token file could not take (a full disk; here the gate's
/// file-size limit, set with `prlimit`) stops redb until the file is
/// opened again. Before, every later call — the revoke below among them —
/// answered 503 until the gate was restarted (and without its SIGXFSZ
/// handler the limit killed the gate). Now the file is opened again at the
/// failure: once there is room, the revoke goes through.
#[tokio::test]
async fn the_embedded_store_takes_writes_again_once_the_disk_has_room() {
    let dir = tempfile::tempdir().unwrap();
    let mut gate = GateProcess::start(dir.path(), "");
    let key = hawzu_gate::admin::read_key_file(&dir.path().join("data/admin.key")).unwrap();
    let admin = common::Http::new(format!("http://{}", gate.admin)).bearer(&key);
    let token = || workspace_token("Disk", "ws_1", "workspace_viewer", "1w");
    let made = admin.post("/admin/v1/tokens", token()).await;
    assert_eq!(made.status, StatusCode::CREATED);
    let id = made.json()["token"]["id"].as_str().unwrap().to_owned();
    let fsize = |limit: &str| {
        let pid = gate.pid().to_string();
        let out = std::process::Command::new("prlimit")
            .args(["--pid", &pid, &format!("--fsize={limit}")])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    };

    // No write past the file's first 4 KiB.
    fsize("4096:unlimited");
    let refused = admin.post("/admin/v1/tokens", token()).await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    let revoke = admin.delete(&format!("/admin/v1/tokens/{id}")).await;
    assert_eq!(revoke.status, StatusCode::SERVICE_UNAVAILABLE);

    // Room again.
    fsize("unlimited:unlimited");
    common::eventually(
        "the revoke to go through",
        std::time::Duration::from_secs(10),
        || async {
            let r = admin.delete(&format!("/admin/v1/tokens/{id}")).await;
            (r.status == StatusCode::OK).then_some(())
        },
    )
    .await;
    let shown = admin.get(&format!("/admin/v1/tokens/{id}")).await;
    assert_eq!(shown.json()["token"]["state"], "revoked");
    let made = admin.post("/admin/v1/tokens", token()).await;
    assert_eq!(made.status, StatusCode::CREATED);
    let ready = common::Http::new(format!("http://{}", gate.ops))
        .get("/readyz")
        .await;
    assert_eq!(ready.status, StatusCode::OK);
    assert!(
        gate.log_text().contains("opened again and takes calls"),
        "{}",
        gate.log_text()
    );
    gate.terminate();
}
