//! Overload and slow clients: per-listener limits on connections and
//! requests answer 503 with `Retry-After` at once; slow, idle and oversized
//! clients are cut off without holding a worker; and 10k idle connections do
//! not stop fresh requests.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::{
    ACK, GateProcess, HEADERS, InProcessGate, PING, RawH2, TestUpstream, WS1_PROJECTS,
    create_token, eventually, workspace_token,
};

async fn valid_token(gate: &InProcessGate) -> String {
    create_token(
        gate,
        workspace_token("CI", "ws_1", "workspace_viewer", "1m"),
    )
    .await
    .1
}

/// One HTTP/1.1 request over a fresh connection; the whole answer as text.
async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// A Prometheus sample value from the gate's `/metrics`.
async fn sample(gate: &InProcessGate, series: &str) -> Option<f64> {
    let text = gate.ops().get("/metrics").await;
    String::from_utf8_lossy(&text.body)
        .lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test]
async fn requests_beyond_the_limit_get_503_at_once() {
    let upstream = TestUpstream::start().await;
    let gate = InProcessGate::start(&[
        ("upstream.url", &upstream.url()),
        ("limits.max_requests", "2"),
    ])
    .await;
    let token = valid_token(&gate).await;
    let proxy = gate.proxy().bearer(&token);
    let slow = format!("{WS1_PROJECTS}?slow_ms=2000");
    let busy: Vec<_> = (0..2)
        .map(|_| {
            let (proxy, slow) = (proxy.clone(), slow.clone());
            tokio::spawn(async move { proxy.get(&slow).await })
        })
        .collect();
    eventually(
        "both slow requests upstream",
        Duration::from_secs(5),
        || async { (upstream.count() == 2).then_some(()) },
    )
    .await;

    // At once: well before the 2 s the held requests take (no queue).
    let start = Instant::now();
    let a = proxy.get(WS1_PROJECTS).await;
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(a.header("retry-after"), Some("1"));
    assert_eq!(a.header("x-hawzu-error"), Some("overloaded"));
    assert_eq!(a.json()["error"], "overloaded");
    assert_eq!(
        upstream.count(),
        2,
        "the refused request never went upstream"
    );
    // Other listeners have their own limits.
    assert_eq!(gate.ops().get("/healthz").await.status, StatusCode::OK);

    for b in busy {
        assert_eq!(b.await.unwrap().status, StatusCode::OK);
    }
    assert_eq!(proxy.get(WS1_PROJECTS).await.status, StatusCode::OK);
    assert_eq!(
        sample(
            &gate,
            r#"hawzu_gate_overload_refusals_total{limit="requests",listener="proxy"}"#
        )
        .await,
        Some(1.0)
    );
}

#[tokio::test]
async fn connections_beyond_the_limit_are_told_to_come_back() {
    let gate = InProcessGate::start(&[("limits.max_connections", "3")]).await;
    let auth = gate.addrs.auth;
    let held: Vec<_> = (0..3).map(|_| TcpStream::connect(auth).unwrap()).collect();
    eventually("3 open connections", Duration::from_secs(5), || async {
        (sample(&gate, r#"hawzu_gate_open_connections{listener="auth"}"#).await == Some(3.0))
            .then_some(())
    })
    .await;
    let start = Instant::now();
    let answer = raw(auth, b"GET /auth/nginx HTTP/1.1\r\nHost: gate\r\nX-Original-Method: GET\r\nX-Original-URI: /api/v1/workspaces/ws_1/projects\r\n\r\n").await;
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
    assert!(answer.contains("retry-after: 1\r\n"), "{answer}");
    assert!(answer.contains(r#""error":"overloaded""#), "{answer}");
    let body = answer.split("\r\n\r\n").nth(1).unwrap();
    serde_json::from_str::<serde_json::Value>(body).expect("a whole JSON body");

    // One goes away: a fresh connection is served again.
    drop(held);
    eventually("a fresh connection served", Duration::from_secs(5), || async {
        let a = raw(auth, b"GET /auth/nginx HTTP/1.1\r\nHost: gate\r\nX-Original-Method: GET\r\nX-Original-URI: /api/v1/workspaces/ws_1/projects\r\nConnection: close\r\n\r\n").await;
        a.starts_with("HTTP/1.1 401 ").then_some(())
    })
    .await;
}

#[tokio::test]
async fn slowloris_clients_are_cut_off_and_hold_no_worker() {
    // One door thread, so a held worker would show at once. The header
    // timeout is long enough that a fresh request answered within the bound
    // below cannot have waited for a slow client to be cut off.
    const HEADER_TIMEOUT: Duration = Duration::from_secs(3);
    const FRESH_BOUND: Duration = Duration::from_secs(1);
    const _: () = assert!(FRESH_BOUND.as_millis() * 2 < HEADER_TIMEOUT.as_millis());
    let gate = InProcessGate::start(&[
        ("runtime.worker_threads", "1"),
        ("limits.header_read_timeout", "3s"),
    ])
    .await;
    let auth = gate.addrs.auth;
    // 200 clients, each sending a header line a byte every 100 ms (8 s).
    let slow: Vec<_> = (0..200)
        .map(|_| {
            tokio::spawn(async move {
                let start = Instant::now();
                let mut s = tokio::net::TcpStream::connect(auth).await.unwrap();
                s.write_all(b"GET /auth/nginx HTTP/1.1\r\nHost: gate\r\nX-Original-Method: GET\r\nX-Original-URI: /api/v1/workspaces/ws_1/projects\r\n")
                    .await
                    .unwrap();
                for b in [b'a'; 80] {
                    if s.write_all(&[b]).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                // The gate has closed it: reading ends (or fails) at once.
                let mut buf = Vec::new();
                let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
                start.elapsed()
            })
        })
        .collect();
    // Meanwhile, while every slow client is still connected (for the whole
    // header timeout), fresh requests are answered promptly.
    let began = Instant::now();
    let mut asked = 0;
    while began.elapsed() + FRESH_BOUND < HEADER_TIMEOUT || asked < 5 {
        let start = Instant::now();
        let a = gate
            .auth()
            .send(
                http::Method::GET,
                "/auth/nginx",
                &[
                    ("x-original-method", "GET"),
                    ("x-original-uri", WS1_PROJECTS),
                ],
                None,
            )
            .await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED);
        // Below the header timeout with room to spare: a request that had to
        // wait for a held worker to be freed would take at least that long.
        assert!(
            start.elapsed() < FRESH_BOUND,
            "fresh request {asked} took {:?} (header timeout {HEADER_TIMEOUT:?})",
            start.elapsed()
        );
        asked += 1;
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    for s in slow {
        let held = s.await.unwrap();
        // Cut off near the 3 s timeout, long before the 8 s it asked for
        // (plus the 5 s it would then wait to read).
        assert!(held < Duration::from_secs(6), "held {held:?}");
    }
}

#[tokio::test]
async fn oversized_heads_get_431() {
    let gate = InProcessGate::start(&[("limits.max_header_bytes", "16384")]).await;
    let auth = gate.addrs.auth;
    let big = format!(
        "GET /auth/nginx HTTP/1.1\r\nHost: gate\r\nX-Original-Method: GET\r\nX-Original-URI: /api/v1/workspaces/ws_1/projects\r\nAuthorization: Bearer {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let a = raw(auth, big.as_bytes()).await;
    assert!(a.starts_with("HTTP/1.1 431 "), "{a}");
    let many: String = (0..101).map(|i| format!("X-H{i}: v\r\n")).collect();
    let a = raw(
        auth,
        format!("GET /auth/nginx HTTP/1.1\r\nHost: gate\r\nX-Original-Method: GET\r\nX-Original-URI: /api/v1/workspaces/ws_1/projects\r\n{many}\r\n").as_bytes(),
    )
    .await;
    assert!(a.starts_with("HTTP/1.1 431 "), "{a}");
    // Just under the limits is served.
    let fits: String = (0..90).map(|i| format!("X-H{i}: v\r\n")).collect();
    let a = raw(
        auth,
        format!("GET /auth/nginx HTTP/1.1\r\nHost: gate\r\nX-Original-Method: GET\r\nX-Original-URI: /api/v1/workspaces/ws_1/projects\r\nConnection: close\r\n{fits}\r\n").as_bytes(),
    )
    .await;
    assert!(a.starts_with("HTTP/1.1 401 "), "{a}");

    // HTTP/2: the same count (hyper bounds it by size alone there).
    let io = hyper_util::rt::TokioIo::new(tokio::net::TcpStream::connect(auth).await.unwrap());
    let (mut send, conn) = hyper::client::conn::http2::handshake::<
        _,
        _,
        http_body_util::Empty<bytes::Bytes>,
    >(hyper_util::rt::TokioExecutor::new(), io)
    .await
    .unwrap();
    tokio::spawn(conn);
    for (n, want) in [(101, 431), (90, 401)] {
        let mut req = http::Request::get(format!("http://{auth}/auth/nginx"))
            .header("x-original-method", "GET")
            .header("x-original-uri", "/api/v1/workspaces/ws_1/projects");
        for i in 0..n {
            req = req.header(format!("x-h{i}"), "v");
        }
        let res = send
            .send_request(req.body(http_body_util::Empty::new()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), want, "{n} headers over HTTP/2");
    }
    // A browser's cookies, one field each (HTTP/2 allows it): one header,
    // as HTTP/1.1 has them on one line.
    let mut req = http::Request::get(format!("http://{auth}/auth/nginx"))
        .header("x-original-method", "GET")
        .header("x-original-uri", "/api/v1/workspaces/ws_1/projects");
    for i in 0..150 {
        req = req.header("cookie", format!("c{i}=v"));
    }
    let res = send
        .send_request(req.body(http_body_util::Empty::new()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 401, "150 cookie fields over HTTP/2");
}

#[tokio::test]
async fn idle_connections_are_closed() {
    let gate = InProcessGate::start(&[
        ("limits.idle_timeout", "300ms"),
        ("limits.header_read_timeout", "30s"),
    ])
    .await;
    // HTTP/1.1: one request, then silence.
    let mut s = tokio::net::TcpStream::connect(gate.addrs.auth)
        .await
        .unwrap();
    s.write_all(b"GET /auth/nginx HTTP/1.1\r\nHost: gate\r\nX-Original-Method: GET\r\nX-Original-URI: /api/v1/workspaces/ws_1/projects\r\n\r\n")
        .await
        .unwrap();
    let start = Instant::now();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .expect("closed by the gate")
        .unwrap();
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 401 "));
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );

    // HTTP/2 (prior knowledge): the gate ends the idle connection (GOAWAY).
    let io = hyper_util::rt::TokioIo::new(
        tokio::net::TcpStream::connect(gate.addrs.ops)
            .await
            .unwrap(),
    );
    let (mut send, conn) = hyper::client::conn::http2::handshake::<
        _,
        _,
        http_body_util::Empty<bytes::Bytes>,
    >(hyper_util::rt::TokioExecutor::new(), io)
    .await
    .unwrap();
    let conn = tokio::spawn(conn);
    let res = send
        .send_request(
            http::Request::get(format!("http://{}/healthz", gate.addrs.ops))
                .body(http_body_util::Empty::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    drop(res);
    let start = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .expect("the gate closes an idle HTTP/2 connection")
        .unwrap()
        .unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
}

/// An HTTP/2 client that made one request and then ignores the gate's
/// PING is closed all the same: the idle close's GOAWAY waits for the
/// PING's answer, and a connection that never gives it is dropped a
/// bounded time later (`limits.idle_timeout` or `limits.header_read_timeout`,
/// the shorter), on every listener.
#[tokio::test]
async fn an_http2_client_that_never_acks_the_goaway_ping_is_dropped() {
    let gate = InProcessGate::start(&[
        ("limits.idle_timeout", "300ms"),
        ("limits.header_read_timeout", "2s"),
    ])
    .await;
    let listeners = [
        ("ops", gate.addrs.ops, "/healthz"),
        ("auth", gate.addrs.auth, "/auth/nginx"),
        ("proxy", gate.addrs.proxy, WS1_PROJECTS),
        (
            "grpc",
            gate.addrs.grpc,
            "/envoy.service.auth.v3.Authorization/Check",
        ),
    ];
    let clients = listeners.map(|(name, addr, path)| {
        tokio::spawn(async move {
            let mut c = RawH2::connect(addr, &[]).await;
            c.request(1, "GET", "gate", path, &[]).await;
            let start = Instant::now();
            // Answered, then the GOAWAY's PING is never acked; the gate
            // must end the connection on its own.
            let mut answered = false;
            let mut pinged = false;
            let end = tokio::time::timeout(
                Duration::from_secs(5),
                c.until(Duration::from_secs(60), |f| {
                    answered |= f.kind == HEADERS && f.stream == 1;
                    pinged |= f.kind == PING && f.flags & ACK == 0;
                    false
                }),
            )
            .await;
            // `None` inside: the gate ended the connection.
            (name, answered, pinged, end.is_ok().then(|| start.elapsed()))
        })
    });
    let mut outcomes = Vec::new();
    for client in clients {
        let outcome = client.await.unwrap();
        eprintln!(
            "{}: pinged {}, closed after {:?}",
            outcome.0, outcome.2, outcome.3
        );
        outcomes.push(outcome);
    }
    for (name, answered, _, closed) in outcomes {
        assert!(answered, "{name}: the request was answered");
        let took = closed.unwrap_or_else(|| panic!("{name}: still open after 5 s"));
        assert!(took < Duration::from_secs(3), "{name}: {took:?}");
    }
}

/// A connection that never starts a request — nothing sent, or only the
/// HTTP/2 preface and settings, or a TLS handshake and then nothing — is
/// closed once `limits.header_read_timeout` has passed, not after
/// `limits.idle_timeout` (two minutes by default): holding a connection
/// slot costs a slowloris client as much as a slow head does.
#[tokio::test]
async fn a_connection_that_starts_no_request_is_closed_at_the_head_timeout() {
    let gate = InProcessGate::start(&[
        ("limits.idle_timeout", "60s"),
        ("limits.header_read_timeout", "500ms"),
    ])
    .await;
    let closed_within = |mut s: tokio::net::TcpStream, first: &'static [u8]| async move {
        s.write_all(first).await.unwrap();
        let start = Instant::now();
        let mut out = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
        (read.is_ok(), start.elapsed())
    };
    // Nothing at all.
    let s = tokio::net::TcpStream::connect(gate.addrs.proxy)
        .await
        .unwrap();
    let (closed, took) = closed_within(s, b"").await;
    assert!(closed && took < Duration::from_secs(5), "silent: {took:?}");
    // The HTTP/2 preface and an empty SETTINGS frame, then nothing.
    let s = tokio::net::TcpStream::connect(gate.addrs.proxy)
        .await
        .unwrap();
    let (closed, took) = closed_within(
        s,
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00",
    )
    .await;
    assert!(
        closed && took < Duration::from_secs(5),
        "h2 preface: {took:?}"
    );
    // Half of the HTTP/2 preface.
    let s = tokio::net::TcpStream::connect(gate.addrs.proxy)
        .await
        .unwrap();
    let (closed, took) = closed_within(s, b"PRI * HTTP/2").await;
    assert!(
        closed && took < Duration::from_secs(5),
        "half a preface: {took:?}"
    );
}

#[test]
fn ten_thousand_idle_connections_do_not_stop_fresh_requests() {
    let dir = tempfile::tempdir().unwrap();
    let gate = GateProcess::start(
        dir.path(),
        "[limits]\nheader_read_timeout = \"60s\"\nidle_timeout = \"60s\"\n",
    );
    let (rss_before, _) = gate.rss_kib();
    let start = Instant::now();
    let idle: Vec<TcpStream> = (0..10_000)
        .map(|_| TcpStream::connect(gate.auth).expect("connect"))
        .collect();
    let opened = start.elapsed();
    // Every one is accepted and held open by the gate.
    let metrics = |gate: &GateProcess| {
        let mut s = TcpStream::connect(gate.ops).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: gate\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text
    };
    common::wait_until("10k connections held", Duration::from_secs(30), || {
        metrics(&gate).contains("hawzu_gate_open_connections{listener=\"auth\"} 10000")
    });
    let (rss_held, _) = gate.rss_kib();
    // A fresh client is served at once, on the same listener.
    for _ in 0..10 {
        let start = Instant::now();
        let mut s = TcpStream::connect(gate.auth).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET /auth/nginx HTTP/1.1\r\nHost: gate\r\nX-Original-Method: GET\r\nX-Original-URI: /api/v1/workspaces/ws_1/projects\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 401 "), "{answer}");
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
    }
    eprintln!(
        "10k idle connections opened in {opened:?}; gate RSS {rss_before} KiB → {rss_held} KiB ({} bytes per connection)",
        (rss_held.saturating_sub(rss_before)) * 1024 / 10_000
    );
    drop(idle);
}
