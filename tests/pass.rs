//! `policy.other_credentials = "pass"` and `access = "public"` rules, on
//! real sockets: the API behind the gate also serves people (session
//! cookies, its own JWTs). A request with no Hawzu token is forwarded
//! untouched and with no identity, at the proxy, through nginx, and at the
//! Envoy doors; anything shaped like a Hawzu token is judged; whatever
//! passes is counted, logged and explained as passed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

/// Every identity name (default prefix) and every `headers.strip` name,
/// as the Envoy doors name them for removal when they set none.
const REMOVED: [&str; 16] = [
    "x-hawzu-token-id",
    "x-hawzu-token-type",
    "x-hawzu-workspace-id",
    "x-hawzu-project-id",
    "x-hawzu-role",
    "x-hawzu-permission",
    "x-hawzu-token-expires",
    "x-hawzu-error",
    "x-hawzu-passed",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-url",
    "x-rewrite-url",
    "x-original-uri",
    "x-forwarded-prefix",
];

mod common;

use std::collections::HashMap;

use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
    HttpRequest, Request as AttrRequest,
};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use http::{Method, StatusCode};
use serde_json::Value;

use common::{
    GateProcess, Http, InProcessGate, Nginx, TestUpstream, curl_async, curl_header, workspace_token,
};

const PROJECTS: &str = "/api/v1/workspaces/ws_1/projects";
const JWT: &str = "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl";
/// `Basic base64("ci:hwz_…")`: a Hawzu token sent as a password.
const BASIC_TOKEN: &str = "Basic Y2k6aHd6X3NlY3JldA==";

/// `other_credentials = "pass"` and one public route.
const PASS: &str = r#"
[policy]
other_credentials = "pass"

[[policy.rules]]
path = "/api/v1/status"
methods = ["GET", "HEAD"]
access = "public"
"#;

/// The headers the upstream received, lower-case name → values.
fn echoed(body: &[u8]) -> Value {
    serde_json::from_slice::<Value>(body).unwrap()["headers"].clone()
}

fn no_identity(h: &Value) {
    let names: Vec<&String> = h.as_object().unwrap().keys().collect();
    assert!(
        names
            .iter()
            .all(|n| !n.starts_with("x-hawzu") && !n.starts_with("x_hawzu")),
        "identity headers reached the API: {names:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_forwards_other_credentials_untouched_and_judges_every_hawzu_token() {
    let upstream = TestUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gate = GateProcess::start(
        dir.path(),
        &format!("[upstream]\nurl = \"{}\"\n{PASS}", upstream.url()),
    );
    let proxy = Http::new(format!("http://{}", gate.proxy));
    let run = gate.cli(&[
        "token",
        "create",
        "--name",
        "CI",
        "--workspace",
        "ws_1",
        "--role",
        "workspace_viewer",
        "--expires",
        "1w",
        "--json",
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    let secret = run.json()["secret"].as_str().unwrap().to_owned();
    let spoof = [
        ("x-hawzu-role", "workspace_manager"),
        ("x-hawzu-token-id", "tok_AAAAAAAAAAAAAAAA"),
        ("x-hawzu-passed", "no_token"),
    ];

    // A session cookie: forwarded with the cookie, without the spoofed
    // identity.
    let a = proxy
        .request(Method::DELETE, PROJECTS)
        .header("cookie", "session=s3ss10n")
        .headers(&spoof)
        .go()
        .await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    let h = echoed(&a.body);
    assert_eq!(h["cookie"], serde_json::json!(["session=s3ss10n"]));
    no_identity(&h);

    // The API's own bearer (a JWT): forwarded as it came, for the API.
    let a = proxy
        .request(Method::GET, "/settings/profile")
        .header("authorization", JWT)
        .headers(&spoof)
        .go()
        .await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    let h = echoed(&a.body);
    assert_eq!(h["authorization"], serde_json::json!([JWT]));
    no_identity(&h);

    // A Hawzu token is judged as ever: allowed with its identity (and
    // never forwarded), refused beyond its role.
    let a = proxy
        .request(Method::GET, PROJECTS)
        .token(&secret)
        .headers(&spoof)
        .go()
        .await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    let h = echoed(&a.body);
    assert_eq!(h["x-hawzu-role"], serde_json::json!(["workspace_viewer"]));
    assert!(h.get("authorization").is_none(), "{h}");
    assert!(h.get("x-hawzu-passed").is_none(), "{h}");
    let a = proxy
        .request(Method::POST, PROJECTS)
        .token(&secret)
        .go()
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(a.json()["error"], "insufficient_role");

    // Anything shaped like a Hawzu token is judged, never passed.
    let forwarded = upstream.count();
    for bad in [
        "Bearer hwz_not_a_token",
        "bearer HWZ_short",
        "Token hwz_x",
        BASIC_TOKEN,
    ] {
        let a = proxy
            .request(Method::GET, PROJECTS)
            .header("authorization", bad)
            .header("cookie", "session=s3ss10n")
            .go()
            .await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{bad}");
        assert_eq!(a.json()["error"], "malformed_token", "{bad}");
    }
    // Two Authorization headers, one a JWT: ambiguous, judged.
    let a = proxy
        .request(Method::GET, PROJECTS)
        .header("authorization", JWT)
        .header("authorization", JWT)
        .go()
        .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(upstream.count(), forwarded, "a Hawzu-shaped request passed");

    // A public route: passed with a valid token too, without its identity
    // or its value.
    let a = proxy
        .request(Method::GET, "/api/v1/status")
        .token(&secret)
        .go()
        .await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    let h = echoed(&a.body);
    no_identity(&h);
    assert!(h.get("authorization").is_none(), "{h}");

    // Counted and logged as passed.
    let metrics = Http::new(format!("http://{}", gate.ops))
        .get("/metrics")
        .await;
    let text = String::from_utf8(metrics.body.to_vec()).unwrap();
    assert!(
        text.contains(r#"hawzu_gate_decisions_total{code="none",door="proxy",outcome="passed"} 3"#),
        "{text}"
    );

    // `explain` tells it.
    let run = gate.cli(&["explain", "--method", "GET", "--path", PROJECTS]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.starts_with("passed: no Hawzu token"),
        "{}",
        run.stdout
    );
    let run = gate.cli(&["explain", "--method", "GET", "--path", PROJECTS, "--json"]);
    let v = run.json();
    assert_eq!(v["decision"], "passed");
    assert_eq!(v["token"], Value::Null);

    let mut gate = gate;
    assert!(gate.terminate().success());
    let log = gate.log_text();
    let passed: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("hawzu_gate::access") && l.contains(r#"code="passed""#))
        .collect();
    assert_eq!(passed.len(), 3, "{log}");
    assert!(
        !log.contains("s3ss10n") && !log.contains("eyJzdWIi"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuse_stays_the_default_and_a_public_route_passes_anyway() {
    let upstream = TestUpstream::start().await;
    let rules = PASS.replace("other_credentials = \"pass\"", "");
    let url = upstream.url();
    let gate = InProcessGate::start_with_toml(&rules, &[("upstream.url", &url)]).await;
    let a = gate
        .proxy()
        .request(Method::GET, PROJECTS)
        .header("authorization", JWT)
        .go()
        .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(a.json()["error"], "malformed_token");
    let a = gate.proxy().request(Method::GET, PROJECTS).go().await;
    assert_eq!(a.json()["error"], "missing_token");
    assert_eq!(upstream.count(), 0);

    let a = gate
        .proxy()
        .request(Method::GET, "/api/v1/status")
        .header("cookie", "session=s3ss10n")
        .go()
        .await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    // …only for the methods the rule names.
    let a = gate
        .proxy()
        .request(Method::POST, "/api/v1/status")
        .go()
        .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_forwards_a_passed_request_with_its_own_credentials_and_no_identity() {
    let upstream = TestUpstream::start().await;
    let gate = InProcessGate::start_with_toml(PASS, &[]).await;
    let created = gate
        .admin()
        .post(
            "/admin/v1/tokens",
            workspace_token("CI", "ws_1", "workspace_viewer", "1m"),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let secret = created.json()["secret"].as_str().unwrap().to_owned();
    let nginx = Nginx::start(gate.addrs.auth, upstream.addr);
    let url = format!("{}{PROJECTS}", nginx.url());
    let spoof = [
        "-H",
        "X-Hawzu-Role: workspace_manager",
        "-H",
        "X-Hawzu-Passed: no_token",
    ];
    let get = |extra: &[&str]| {
        let mut args: Vec<String> = spoof.iter().map(|s| (*s).to_owned()).collect();
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args.push(url.clone());
        curl_async(args)
    };

    // A cookie: passed, no identity.
    let (status, _, body) = get(&["-H", "Cookie: session=s3ss10n"]).await;
    assert_eq!(status, 200, "{body}");
    let h = echoed(body.as_bytes());
    assert_eq!(h["cookie"], serde_json::json!(["session=s3ss10n"]));
    no_identity(&h);
    assert!(h.get("authorization").is_none(), "{h}");

    // A JWT: passed, and the API gets it.
    let jwt = format!("Authorization: {JWT}");
    let (status, _, body) = get(&["-H", &jwt]).await;
    assert_eq!(status, 200, "{body}");
    let h = echoed(body.as_bytes());
    assert_eq!(h["authorization"], serde_json::json!([JWT]));
    no_identity(&h);

    // A Hawzu token: judged; its identity arrives, its value does not.
    let bearer = format!("Authorization: Bearer {secret}");
    let (status, _, body) = get(&["-H", &bearer]).await;
    assert_eq!(status, 200, "{body}");
    let h = echoed(body.as_bytes());
    assert_eq!(h["x-hawzu-role"], serde_json::json!(["workspace_viewer"]));
    assert!(h.get("authorization").is_none(), "{h}");
    assert!(h.get("x-hawzu-passed").is_none(), "{h}");

    // A malformed Hawzu token: refused, never passed.
    let forwarded = upstream.count();
    for bad in [
        "Authorization: Bearer hwz_nope",
        &format!("Authorization: {BASIC_TOKEN}"),
    ] {
        let (status, headers, _) = get(&["-H", bad]).await;
        assert_eq!(status, 401, "{bad}");
        assert_eq!(curl_header(&headers, "x-hawzu-error"), ["malformed_token"]);
    }
    assert_eq!(upstream.count(), forwarded);
}

fn check(path: &str, headers: &[(&str, &str)]) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(AttrRequest {
                http: Some(HttpRequest {
                    method: "GET".into(),
                    path: path.into(),
                    headers: headers
                        .iter()
                        .map(|(k, v)| ((*k).into(), (*v).into()))
                        .collect::<HashMap<String, String>>(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_envoy_doors_allow_a_passed_request_with_no_identity_and_keep_its_credentials() {
    let gate = InProcessGate::start_with_toml(PASS, &[]).await;
    let mut client = AuthorizationClient::connect(format!("http://{}", gate.addrs.grpc))
        .await
        .unwrap();
    let res = client
        .check(check(
            PROJECTS,
            &[
                ("authorization", JWT),
                ("x-hawzu-role", "workspace_manager"),
            ],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(res.status.as_ref().unwrap().code, 0, "OK");
    let Some(HttpResponse::OkResponse(ok)) = res.http_response else {
        panic!("an OkHttpResponse")
    };
    assert!(ok.headers.is_empty(), "no identity: {:?}", ok.headers);
    // Every identity name, seen or not; never the request's own
    // credentials.
    assert_eq!(ok.headers_to_remove, REMOVED);

    // The same check with the headers as a list (Envoy's
    // `encode_raw_headers`): the spoofed header is still removed, and a
    // repeated one read as the list says.
    let raw = |headers: &[(&str, &str)]| {
        let mut req = check(PROJECTS, &[]);
        let http = req
            .attributes
            .as_mut()
            .and_then(|a| a.request.as_mut())
            .and_then(|r| r.http.as_mut())
            .unwrap();
        http.header_map = Some(HeaderMap {
            headers: headers
                .iter()
                .map(|(k, v)| HeaderValue {
                    key: (*k).into(),
                    raw_value: v.as_bytes().to_vec(),
                    ..Default::default()
                })
                .collect(),
        });
        req
    };
    let res = client
        .check(raw(&[
            ("authorization", JWT),
            ("x-hawzu-role", "workspace_manager"),
            ("x-hawzu-role", "owner"),
        ]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(res.status.as_ref().unwrap().code, 0, "OK");
    let Some(HttpResponse::OkResponse(ok)) = res.http_response else {
        panic!("an OkHttpResponse")
    };
    assert!(ok.headers.is_empty(), "no identity: {:?}", ok.headers);
    // Every identity name, seen or not; never the request's own
    // credentials.
    assert_eq!(ok.headers_to_remove, REMOVED);
    let res = client
        .check(raw(&[("authorization", "Bearer hwz_nope")]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(res.status.unwrap().code, 16, "UNAUTHENTICATED");

    let res = client
        .check(check(PROJECTS, &[("authorization", "Bearer hwz_nope")]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(res.status.unwrap().code, 16, "UNAUTHENTICATED");

    // Envoy's HTTP mode: 200, and the identity names removed (the spoofed
    // one among them), not the request's credentials.
    let a = gate
        .auth()
        .request(Method::GET, &format!("/envoy{PROJECTS}"))
        .header("authorization", JWT)
        .header("x-hawzu-role", "workspace_manager")
        .go()
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(
        a.header("x-envoy-auth-headers-to-remove"),
        Some(REMOVED.join(",").as_str())
    );
    assert!(a.header("x-hawzu-role").is_none());
    // Traefik: 200 with nothing to copy.
    let a = gate
        .auth()
        .request(Method::GET, "/auth/traefik")
        .header("x-forwarded-method", "GET")
        .header("x-forwarded-uri", PROJECTS)
        .header("cookie", "session=s3ss10n")
        .go()
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.headers.keys().all(|n| !n.as_str().starts_with("x-hawzu")));
}

/// One HTTP/1.1 request written as given over a fresh connection; the
/// whole answer as text.
async fn raw(addr: std::net::SocketAddr, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Requests the gate cannot forward as it judged them are refused, never
/// forwarded: two `Host` lines (RFC 9112 §3.2: 400; the gate would have
/// forwarded both, and which one the API reads is its own guess), and a
/// target that is not a path (authority form — judged as the path "",
/// forwarded as "/"). In pass mode nothing else stops them: no token,
/// nothing judged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_host_lines_or_an_authority_form_target_are_refused_and_never_forwarded() {
    let upstream = TestUpstream::start().await;
    let gate = InProcessGate::start_with_toml(PASS, &[("upstream.url", &upstream.url())]).await;
    let proxy = gate.addrs.proxy;
    // The same request, once well-formed: forwarded (pass mode).
    let ok = raw(
        proxy,
        &format!("GET {PROJECTS} HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert!(ok.starts_with("HTTP/1.1 200 "), "{ok}");
    assert_eq!(upstream.count(), 1);
    let mut answers = Vec::new();
    for request in [
        format!(
            "GET {PROJECTS} HTTP/1.1\r\nHost: api\r\nHost: internal\r\nConnection: close\r\n\r\n"
        ),
        "GET internal:443 HTTP/1.1\r\nHost: internal:443\r\nConnection: close\r\n\r\n".to_owned(),
        "CONNECT internal:443 HTTP/1.1\r\nHost: internal:443\r\nConnection: close\r\n\r\n"
            .to_owned(),
    ] {
        let answer = raw(proxy, &request).await;
        let first = request.lines().next().unwrap().to_owned();
        eprintln!("{first}: {}", answer.lines().next().unwrap_or(""));
        answers.push((first, answer));
    }
    for (first, answer) in answers {
        assert!(answer.starts_with("HTTP/1.1 400 "), "{first}: {answer}");
        assert!(
            answer.contains(r#""error":"ambiguous_path""#),
            "{first}: {answer}"
        );
    }
    assert_eq!(upstream.count(), 1, "nothing refused was forwarded");
}

/// HTTP/2 lets a client send each cookie as a field of its own (browsers
/// do); an HTTP/1.1 upstream must get them as one `Cookie` line, joined
/// with "; " (RFC 9113 §8.2.3), not several lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_cookie_fields_reach_an_http1_upstream_as_one_cookie_line() {
    use http_body_util::BodyExt;
    let upstream = TestUpstream::start().await;
    let gate = InProcessGate::start_with_toml(PASS, &[("upstream.url", &upstream.url())]).await;
    let io = hyper_util::rt::TokioIo::new(
        tokio::net::TcpStream::connect(gate.addrs.proxy)
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
    tokio::spawn(conn);
    let req = http::Request::get(format!("http://api{PROJECTS}"))
        .header("cookie", "session=abc")
        .header("cookie", "theme=dark")
        .body(http_body_util::Empty::new())
        .unwrap();
    let res = send.send_request(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let h = echoed(&body);
    assert_eq!(
        h["cookie"],
        serde_json::json!(["session=abc; theme=dark"]),
        "{h}"
    );
}
