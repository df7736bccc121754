//! The reverse-proxy door on real sockets: identity and forwarding headers,
//! denies that never reach the API, upstream faults (a kept connection the
//! upstream closes as a request arrives among them), HTTP/2 from clients
//! (h2c and ALPN over TLS), an https upstream with a private CA, and 200 MB
//! streamed both ways with flat memory.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::{
    GateProcess, InProcessGate, TestCerts, TestUpstream, curl, project_token, workspace_token,
};

const TESTCASES: &str = "/api/v1/workspaces/ws_1/projects/proj_a/testcases";

async fn token(gate: &InProcessGate, body: Value) -> String {
    let a = gate.admin().post("/admin/v1/tokens", body).await;
    assert_eq!(a.status, StatusCode::CREATED);
    a.json()["secret"].as_str().unwrap().to_owned()
}

async fn gate_for(upstream: &TestUpstream, extra: &[(&str, &str)]) -> InProcessGate {
    let url = upstream.url();
    let mut all = vec![("upstream.url", url.as_str())];
    all.extend_from_slice(extra);
    InProcessGate::start(&all).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_requests_arrive_with_identity_and_forwarding_headers() {
    let upstream = TestUpstream::start().await;
    let gate = gate_for(&upstream, &[]).await;
    let secret = token(
        &gate,
        project_token("CI", "ws_1", &[("proj_a", "project_member")], "1m"),
    )
    .await;
    let a = gate
        .proxy()
        .request(
            Method::POST,
            &format!("{TESTCASES}/tc_1/steps?expand=all&x=%20y"),
        )
        .token(&secret)
        .header("x-hawzu-role", "workspace_manager")
        .header("x-hawzu-project-id", "proj_z")
        .header("x-hawzu-anything", "spoof")
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-request-id", "req-123")
        .header("connection", "x-drop-me")
        .header("x-drop-me", "1")
        .header("keep-alive", "timeout=5")
        .header("te", "trailers")
        .header("host", "api.hawzu.example")
        .json(serde_json::json!({"name": "step"}))
        .go()
        .await;
    assert_eq!(
        a.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    assert_eq!(a.header("x-request-id"), Some("req-123"));
    assert!(
        a.header("keep-alive").is_none(),
        "hop-by-hop header from upstream kept"
    );
    let echo = a.json();
    let h = &echo["headers"];
    let one = |name: &str| h[name][0].as_str().map(str::to_owned);
    assert_eq!(echo["method"], "POST");
    assert_eq!(
        echo["uri"],
        format!("{TESTCASES}/tc_1/steps?expand=all&x=%20y")
    );
    assert_eq!(one("x-hawzu-role").as_deref(), Some("project_member"));
    assert_eq!(one("x-hawzu-project-id").as_deref(), Some("proj_a"));
    assert_eq!(one("x-hawzu-workspace-id").as_deref(), Some("ws_1"));
    assert_eq!(one("x-hawzu-token-type").as_deref(), Some("project"));
    assert_eq!(
        one("x-hawzu-permission").as_deref(),
        Some("testcases:write")
    );
    assert!(one("x-hawzu-token-id").unwrap().starts_with("tok_"));
    assert!(
        h.get("x-hawzu-anything").is_none(),
        "spoofed header arrived"
    );
    assert_eq!(h["x-hawzu-role"].as_array().unwrap().len(), 1);
    assert!(h.get("authorization").is_none(), "token forwarded");
    for hop in ["connection", "x-drop-me", "keep-alive", "te"] {
        assert!(h.get(hop).is_none(), "{hop} forwarded: {h}");
    }
    assert_eq!(
        one("x-forwarded-for").as_deref(),
        Some("203.0.113.7, 127.0.0.1")
    );
    assert_eq!(one("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(
        one("x-forwarded-host").as_deref(),
        Some("api.hawzu.example")
    );
    assert_eq!(one("host").as_deref(), Some("api.hawzu.example"));
    assert_eq!(one("x-request-id").as_deref(), Some("req-123"));

    // Without a request id, one is made and returned both ways.
    let a = gate
        .proxy()
        .request(Method::GET, TESTCASES)
        .token(&secret)
        .go()
        .await;
    let id = a.header("x-request-id").unwrap().to_owned();
    assert!(id.starts_with("hg-"), "{id}");
    assert_eq!(a.json()["headers"]["x-request-id"][0], id.as_str());
}

#[tokio::test]
async fn refused_requests_never_reach_the_api() {
    let upstream = TestUpstream::start().await;
    let gate = gate_for(&upstream, &[]).await;
    let viewer = token(
        &gate,
        workspace_token("Viewer", "ws_1", "workspace_viewer", "1m"),
    )
    .await;
    let cases: [(Method, &str, Option<&str>, StatusCode, &str); 5] = [
        (
            Method::GET,
            TESTCASES,
            None,
            StatusCode::UNAUTHORIZED,
            "missing_token",
        ),
        (
            Method::POST,
            TESTCASES,
            Some(viewer.as_str()),
            StatusCode::FORBIDDEN,
            "insufficient_role",
        ),
        (
            Method::GET,
            "/settings/access-tokens",
            Some(viewer.as_str()),
            StatusCode::FORBIDDEN,
            "no_matching_rule",
        ),
        (
            Method::GET,
            "/api/v1/workspaces/ws_1/projects/proj_a/%2e%2e/testcases",
            Some(viewer.as_str()),
            StatusCode::BAD_REQUEST,
            "ambiguous_path",
        ),
        (
            Method::GET,
            "/api/v1/workspaces/ws_1/projects/proj_a/testcases/..",
            Some(viewer.as_str()),
            StatusCode::BAD_REQUEST,
            "ambiguous_path",
        ),
    ];
    for (method, path, tok, status, code) in cases {
        let mut req = gate.proxy().request(method, path);
        if let Some(t) = tok {
            req = req.token(t);
        }
        let a = req.go().await;
        assert_eq!(a.status, status, "{code}");
        assert_eq!(a.header("x-hawzu-error"), Some(code));
        let body = a.json();
        assert_eq!(body["error"], code);
        assert!(body["message"].as_str().unwrap().len() > 10);
        assert_eq!(body["request_id"], a.header("x-request-id").unwrap());
        if status != StatusCode::BAD_REQUEST {
            assert!(
                a.header("www-authenticate")
                    .unwrap()
                    .starts_with("Bearer realm=\"hawzu\"")
            );
        }
    }
    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn authorization_is_forwarded_only_when_configured() {
    let upstream = TestUpstream::start().await;
    let gate = gate_for(&upstream, &[("proxy.forward_authorization", "true")]).await;
    let secret = token(
        &gate,
        workspace_token("Fwd", "ws_1", "workspace_viewer", "1m"),
    )
    .await;
    let a = gate
        .proxy()
        .request(Method::GET, common::WS1_PROJECTS)
        .token(&secret)
        .go()
        .await;
    assert_eq!(
        a.json()["headers"]["authorization"][0],
        format!("Bearer {secret}")
    );

    // Not configured (the default): the upstream never sees the token.
    let upstream = TestUpstream::start().await;
    let gate = gate_for(&upstream, &[]).await;
    let secret = token(
        &gate,
        workspace_token("Kept", "ws_1", "workspace_viewer", "1m"),
    )
    .await;
    let a = gate
        .proxy()
        .request(Method::GET, common::WS1_PROJECTS)
        .token(&secret)
        .go()
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(upstream.count(), 1, "the request reached the upstream");
    let headers = &a.json()["headers"];
    assert!(headers.is_object(), "{headers}");
    assert_eq!(headers["authorization"], Value::Null, "{headers}");
    assert!(
        !headers.to_string().contains(&secret[4..]),
        "the token in another header: {headers}"
    );
}

#[tokio::test]
async fn upstream_down_is_502_at_once_and_slow_is_504() {
    // Nothing listens on the upstream port.
    let port = common::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let gate = InProcessGate::start(&[("upstream.url", &url)]).await;
    let secret = token(
        &gate,
        workspace_token("Down", "ws_1", "workspace_viewer", "1m"),
    )
    .await;
    let start = Instant::now();
    let a = gate
        .proxy()
        .request(Method::GET, common::WS1_PROJECTS)
        .token(&secret)
        .go()
        .await;
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "took {:?}",
        start.elapsed()
    );
    assert_eq!(a.status, StatusCode::BAD_GATEWAY);
    assert_eq!(a.json()["error"], "upstream_unavailable");

    let upstream = TestUpstream::start().await;
    let gate = gate_for(&upstream, &[("upstream.timeout", "200ms")]).await;
    let secret = token(
        &gate,
        workspace_token("Slow", "ws_1", "workspace_viewer", "1m"),
    )
    .await;
    let start = Instant::now();
    let a = gate
        .proxy()
        .request(
            Method::GET,
            &format!("{}?slow_ms=2000", common::WS1_PROJECTS),
        )
        .token(&secret)
        .go()
        .await;
    assert_eq!(a.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(a.json()["error"], "upstream_timeout");
    // Never before the timeout, and not much after it.
    assert!(
        start.elapsed() >= Duration::from_millis(200),
        "took {:?}",
        start.elapsed()
    );
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "took {:?}",
        start.elapsed()
    );
}

/// An upstream that answers the first request of each connection and
/// closes the connection on the second without answering, as an API whose
/// keep-alive timeout fires just as the gate sends on a kept connection.
/// Every request head it read, in order.
async fn closing_upstream() -> (String, Arc<Mutex<Vec<String>>>) {
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", tcp.local_addr().unwrap());
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = tcp.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                for nth in 0.. {
                    // The head, then as much body as it announces.
                    let end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        let mut chunk = [0u8; 4096];
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    let length: usize = head
                        .to_ascii_lowercase()
                        .lines()
                        .find_map(|l| {
                            l.strip_prefix("content-length:")
                                .map(|n| n.trim().parse().unwrap())
                        })
                        .unwrap_or(0);
                    while buf.len() < end + length {
                        let mut chunk = [0u8; 4096];
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..end + length);
                    seen.lock().unwrap().push(head);
                    if nth > 0 {
                        return;
                    }
                    let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nanswered";
                    if s.write_all(ok).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, heads)
}

#[tokio::test]
async fn a_kept_connection_closed_unanswered_costs_a_get_nothing_and_a_post_a_502() {
    let (url, heads) = closing_upstream().await;
    // One door thread: one pool, so the second request finds the first's
    // connection kept.
    let gate = InProcessGate::start(&[
        ("upstream.url", url.as_str()),
        ("runtime.worker_threads", "1"),
    ])
    .await;
    let secret = token(
        &gate,
        workspace_token("Kept", "ws_1", "workspace_manager", "1m"),
    )
    .await;
    let path = common::WS1_PROJECTS;
    let count = |line: &str| {
        heads
            .lock()
            .unwrap()
            .iter()
            .filter(|h| h.starts_with(line))
            .count()
    };
    let get = || gate.proxy().request(Method::GET, path).token(&secret).go();

    let first = get().await;
    assert_eq!(
        (first.status, &first.body[..]),
        (StatusCode::OK, &b"answered"[..])
    );
    // Idle long enough to be a connection the upstream may have closed
    // unseen; taken, closed unanswered: sent again on a new one.
    let idle = || tokio::time::sleep(hawzu_gate::doors::upstream::SENT_AGAIN_AFTER);
    idle().await;
    let again = get().await;
    assert_eq!(
        (again.status, &again.body[..]),
        (StatusCode::OK, &b"answered"[..])
    );
    assert_eq!(
        count(&format!("GET {path} ")),
        3,
        "the second GET went twice"
    );

    // A POST is never sent twice: the client is told.
    idle().await;
    let post = gate
        .proxy()
        .request(Method::POST, path)
        .token(&secret)
        .json(serde_json::json!({"name": "run 1"}))
        .go()
        .await;
    assert_eq!(post.status, StatusCode::BAD_GATEWAY);
    assert_eq!(post.json()["error"], "upstream_error");
    assert_eq!(count(&format!("POST {path} ")), 1, "the POST went once");

    // The gate goes on: a new connection answers.
    assert_eq!(get().await.status, StatusCode::OK);

    // Counted once: the GET sent again.
    let metrics = gate.ops().get("/metrics").await;
    let text = String::from_utf8(metrics.body.to_vec()).unwrap();
    assert!(
        text.lines()
            .any(|l| l == "hawzu_gate_upstream_resent_total 1"),
        "{}",
        text.lines()
            .filter(|l| l.contains("resent"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_clients_are_served_over_h2c_and_alpn() {
    let upstream = TestUpstream::start().await;
    let certs = TestCerts::new();
    let cert = certs.cert.display().to_string();
    let key = certs.key.display().to_string();
    let gate = gate_for(
        &upstream,
        &[("tls.proxy.cert_file", &cert), ("tls.proxy.key_file", &key)],
    )
    .await;
    let secret = token(
        &gate,
        workspace_token("H2", "ws_1", "workspace_viewer", "1m"),
    )
    .await;
    let request = |scheme: &str| {
        Request::builder()
            .uri(format!(
                "{scheme}://localhost:{}{}",
                gate.addrs.proxy.port(),
                common::WS1_PROJECTS
            ))
            .header("authorization", format!("Bearer {secret}"))
            .body(Full::new(Bytes::new()))
            .unwrap()
    };

    // TLS with ALPN: the client asks for h2 and gets it.
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(certs.client_config(&[]))
        .https_only()
        .enable_all_versions()
        .build();
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(https);
    let res = client.request(request("https")).await.unwrap();
    assert_eq!(res.version(), Version::HTTP_2);
    assert_eq!(res.status(), StatusCode::OK);
    let echo: Value =
        serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
    // The upstream hop is HTTP/1.1 with the client's authority as Host.
    assert_eq!(echo["version"], "HTTP/1.1");
    assert_eq!(
        echo["headers"]["host"][0],
        format!("localhost:{}", gate.addrs.proxy.port())
    );
    assert_eq!(echo["headers"]["x-forwarded-proto"][0], "https");

    // And HTTP/1.1 over the same TLS listener.
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(certs.client_config(&[]))
        .https_only()
        .enable_http1()
        .build();
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(https);
    let res = client.request(request("https")).await.unwrap();
    assert_eq!(res.version(), Version::HTTP_11);
    assert_eq!(res.status(), StatusCode::OK);

    // h2c with prior knowledge on a plain listener.
    let plain = gate_for(&upstream, &[]).await;
    let secret = token(
        &plain,
        workspace_token("H2C", "ws_1", "workspace_viewer", "1m"),
    )
    .await;
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(HttpConnector::new());
    let req = Request::builder()
        .uri(format!(
            "http://{}{}",
            plain.addrs.proxy,
            common::WS1_PROJECTS
        ))
        .header("authorization", format!("Bearer {secret}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let res = client.request(req).await.unwrap();
    assert_eq!(res.version(), Version::HTTP_2);
    assert_eq!(res.status(), StatusCode::OK);
}

/// The console's session cookie is the gate's credential, like the token
/// in `Authorization`: a browser sends it to every port of the host (the
/// API behind the proxy door among them), and it never reaches the API.
/// The API's own cookies do, as sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consoles_session_cookie_never_reaches_the_api() {
    let upstream = TestUpstream::start().await;
    let gate = gate_for(&upstream, &[]).await;
    let secret = token(
        &gate,
        workspace_token("Cookies", "ws_1", "workspace_viewer", "1m"),
    )
    .await;
    let cases: [(&[&str], Option<&str>); 4] = [
        (
            &["app=1; hawzu_console=s3cret; theme=dark"],
            Some("app=1; theme=dark"),
        ),
        (&["__Host-hawzu_console=s3cret"], None),
        (&["app=1", "hawzu_console=s3cret"], Some("app=1")),
        (
            &["xhawzu_console=kept; app=2"],
            Some("xhawzu_console=kept; app=2"),
        ),
    ];
    for (sent, want) in cases {
        let mut req = gate
            .proxy()
            .request(Method::GET, common::WS1_PROJECTS)
            .token(&secret);
        for c in sent {
            req = req.header("cookie", c);
        }
        let a = req.go().await;
        assert_eq!(a.status, StatusCode::OK, "{sent:?}");
        let echo = a.json();
        let got: Vec<&str> = echo["headers"]["cookie"]
            .as_array()
            .map(|v| v.iter().map(|c| c.as_str().unwrap()).collect())
            .unwrap_or_default();
        assert_eq!(
            got.join("; ").is_empty(),
            want.is_none(),
            "{sent:?}: {got:?}"
        );
        if let Some(want) = want {
            assert_eq!(got.join("; "), want, "{sent:?}");
        }
        assert!(!echo.to_string().contains("s3cret"), "{sent:?}: {echo}");
    }
}

/// What the gate owns on an answer never comes from the upstream: its
/// deny-code header (a client reads it as the gate's refusal) and the
/// console's session cookie (a browser would carry it to the console's port
/// of the same host, ending the admin's session there). The upstream's
/// other cookies and headers pass as sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_cannot_answer_with_what_the_gate_owns() {
    let upstream = common::Canned::start(
        "HTTP/1.1 200 OK\r\nX-Hawzu-Error: token_revoked\r\n\
         Set-Cookie: __Host-hawzu_console=planted; Path=/; Secure\r\n\
         Set-Cookie: theme=dark; Path=/\r\n\
         Set-Cookie: hawzu_console=planted; Path=/\r\n\
         Set-Cookie: =hawzu_console=nameless; Path=/\r\n\
         Set-Cookie: xhawzu_console=kept; Path=/\r\nX-Api-Version: 3",
        "ok",
    );
    let url = format!("http://{}", upstream.addr);
    let gate = InProcessGate::start(&[("upstream.url", url.as_str())]).await;
    let secret = token(
        &gate,
        workspace_token("Answers", "ws_1", "workspace_viewer", "1m"),
    )
    .await;
    let a = gate
        .proxy()
        .request(Method::GET, common::WS1_PROJECTS)
        .token(&secret)
        .go()
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.header("x-hawzu-error").is_none(), "{:?}", a.headers);
    let cookies: Vec<&str> = a
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(
        cookies,
        ["theme=dark; Path=/", "xhawzu_console=kept; Path=/"],
        "{:?}",
        a.headers
    );
    assert_eq!(a.header("x-api-version"), Some("3"));
}

/// A client's request trailers never reach the API: an HTTP/1.1 upstream
/// never got them (the gate strips `Trailer`, and hyper sends only
/// declared ones), and an HTTP/2 upstream does not either — a trailer is
/// a header the gate never judged (`X-Hawzu-Role: admin` here, which the
/// gate strips from the head).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_trailers_never_reach_the_api() {
    let upstream = TestUpstream::start().await;
    let gate = gate_for(&upstream, &[("upstream.http2", "true")]).await;
    let secret = token(
        &gate,
        workspace_token("Trailers", "ws_1", "workspace_member", "1m"),
    )
    .await;
    let stream = tokio::net::TcpStream::connect(gate.addrs.proxy)
        .await
        .unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let mut trailers = http::HeaderMap::new();
    trailers.insert("x-hawzu-role", "workspace_admin".parse().unwrap());
    trailers.insert("x-checksum", "abc".parse().unwrap());
    let frames = futures_util::stream::iter([
        Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(Bytes::from_static(b"run"))),
        Ok(hyper::body::Frame::trailers(trailers)),
    ]);
    let req = Request::post(format!(
        "http://{}{}/p1/testcases/t1?upload",
        gate.addrs.proxy,
        common::WS1_PROJECTS
    ))
    .header("authorization", format!("Bearer {secret}"))
    .body(http_body_util::StreamBody::new(frames))
    .unwrap();
    let res = send.send_request(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let seen: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(seen["received"], 3, "{seen}");
    assert_eq!(seen["trailers"], serde_json::json!([]), "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_upstream_is_spoken_to_over_h2c() {
    let upstream = TestUpstream::start().await;
    let gate = gate_for(&upstream, &[("upstream.http2", "true")]).await;
    let secret = token(
        &gate,
        workspace_token("H2", "ws_1", "workspace_viewer", "1m"),
    )
    .await;
    for _ in 0..3 {
        let a = gate
            .proxy()
            .request(Method::GET, &format!("{}?page=2", common::WS1_PROJECTS))
            .token(&secret)
            .go()
            .await;
        assert_eq!(
            a.status,
            StatusCode::OK,
            "{}",
            String::from_utf8_lossy(&a.body)
        );
        let echo = a.json();
        assert_eq!(echo["version"], "HTTP/2.0");
        assert!(
            echo["uri"]
                .as_str()
                .unwrap()
                .ends_with(&format!("{}?page=2", common::WS1_PROJECTS)),
            "{echo}"
        );
        assert_eq!(echo["headers"]["x-hawzu-workspace-id"][0], "ws_1");
        assert!(echo["headers"].get("authorization").is_none());
    }
    assert_eq!(upstream.count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_upstream_with_a_private_ca() {
    let certs = TestCerts::new();
    let server =
        hawzu_gate::tls::server_config(&certs.cert, &certs.key, None, &[b"http/1.1"]).unwrap();
    let upstream = TestUpstream::start_tls(server).await;
    let url = format!("https://localhost:{}", upstream.addr.port());
    let ca = certs.ca.display().to_string();

    let gate = InProcessGate::start(&[("upstream.url", &url), ("upstream.ca_file", &ca)]).await;
    let secret = token(
        &gate,
        workspace_token("TLS", "ws_1", "workspace_viewer", "1m"),
    )
    .await;
    let a = gate
        .proxy()
        .request(Method::GET, common::WS1_PROJECTS)
        .token(&secret)
        .go()
        .await;
    assert_eq!(
        a.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&a.body)
    );

    // Without the CA the upstream's certificate is not trusted: 502.
    let gate = InProcessGate::start(&[("upstream.url", &url)]).await;
    let secret = token(
        &gate,
        workspace_token("TLS", "ws_1", "workspace_viewer", "1m"),
    )
    .await;
    let a = gate
        .proxy()
        .request(Method::GET, common::WS1_PROJECTS)
        .token(&secret)
        .go()
        .await;
    assert_eq!(a.status, StatusCode::BAD_GATEWAY);
    assert_eq!(upstream.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_megabytes_stream_both_ways_with_flat_memory() {
    const SIZE: u64 = 200 * 1000 * 1000;
    let upstream = TestUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gate = GateProcess::start(
        dir.path(),
        &format!("[upstream]\nurl = \"{}\"\n", upstream.url()),
    );
    let run = gate.cli(&[
        "token",
        "create",
        "--name",
        "Big",
        "--workspace",
        "ws_1",
        "--project",
        "proj_a=project_member",
        "--expires",
        "1w",
        "--json",
    ]);
    let secret = run.json()["secret"].as_str().unwrap().to_owned();
    let auth = format!("Authorization: Bearer {secret}");
    let base = format!("http://{}{TESTCASES}", gate.proxy);
    let (rss_before, _) = gate.rss_kib();

    // Download: 200 MB from the upstream, counted by curl.
    let url = format!("{base}?download={SIZE}");
    let auth2 = auth.clone();
    let (status, _, size) = tokio::task::spawn_blocking(move || {
        curl(&[
            "-H",
            &auth2,
            "-o",
            "/dev/null",
            "-w",
            "%{size_download}",
            &url,
        ])
    })
    .await
    .unwrap();
    assert_eq!(status, 200);
    assert_eq!(size.trim(), SIZE.to_string());

    // Upload: 200 MB from a pipe, chunked, counted by the upstream.
    let url = format!("{base}?upload=1");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "head -c {SIZE} /dev/zero | curl -s --max-time 60 -X POST -T - -H '{auth}' '{url}'"
            ))
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["received"], SIZE);

    let (rss_after, peak) = gate.rss_kib();
    println!(
        "gate RSS before {rss_before} KiB, after {rss_after} KiB, peak {peak} KiB for 2 x {} MB",
        SIZE / 1_000_000
    );
    // Streaming, not buffering: the peak stays far below one body.
    assert!(
        peak < rss_before + 64 * 1024,
        "peak {peak} KiB vs {rss_before} KiB before"
    );
}

/// W3C trace context passes through the proxy door unchanged, so the API's
/// spans join the caller's trace (issue 17 item 5, the propagation half).
#[tokio::test]
async fn trace_context_reaches_the_api_unchanged() {
    let upstream = TestUpstream::start().await;
    let gate = gate_for(&upstream, &[]).await;
    let secret = token(
        &gate,
        workspace_token("Traced", "ws_1", "workspace_viewer", "1m"),
    )
    .await;
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let state = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE";
    let a = gate
        .proxy()
        .request(Method::GET, "/api/v1/workspaces/ws_1/projects")
        .token(&secret)
        .header("traceparent", parent)
        .header("tracestate", state)
        .header("baggage", "userId=alice")
        .go()
        .await;
    assert_eq!(a.status, StatusCode::OK);
    let echo = a.json();
    let h = &echo["headers"];
    assert_eq!(h["traceparent"], serde_json::json!([parent]), "{h}");
    assert_eq!(h["tracestate"], serde_json::json!([state]), "{h}");
    assert_eq!(h["baggage"], serde_json::json!(["userId=alice"]), "{h}");
}
