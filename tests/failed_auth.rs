//! Failed-auth limiting: a client that keeps sending invalid tokens is
//! refused with 429 `rate_limited` (401 on `/auth/nginx`) and `Retry-After`,
//! before its tokens cost a store read; other clients, and tokens the gate
//! holds as valid, are unaffected. Clients are told apart by address: the
//! peer, or what a trusted proxy forwarded for.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::net::IpAddr;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::address::Address as EnvoyAddress;
use envoy_types::pb::envoy::config::core::v3::{Address, SocketAddress};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
    HttpRequest, Peer, Request as AttrRequest,
};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use http::{Method, StatusCode};

use common::{
    Http, InProcessGate, TestUpstream, WS1_PROJECTS, create_token, eventually, workspace_token,
};

/// A well-formed token no store holds (a guess).
fn unknown() -> String {
    hawzu_gate::token::TokenSecret::generate()
        .unwrap()
        .expose()
        .to_owned()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

async fn valid_token(gate: &InProcessGate) -> String {
    create_token(
        gate,
        workspace_token("CI", "ws_1", "workspace_viewer", "1m"),
    )
    .await
    .1
}

/// Token reads the gate has made from its store (`store_calls_total{op="get"}`,
/// every result).
async fn store_reads(gate: &InProcessGate) -> f64 {
    let metrics = gate.ops().get("/metrics").await;
    String::from_utf8_lossy(&metrics.body)
        .lines()
        .filter(|l| l.starts_with(r#"hawzu_gate_store_calls_total{op="get","#))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn limited_gate(upstream: &TestUpstream, extra: &[(&str, &str)]) -> InProcessGate {
    let mut settings = vec![
        ("upstream.url", upstream.url()),
        ("failed_auth.limit", "3".to_owned()),
        ("failed_auth.window", "60s".to_owned()),
    ];
    settings.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    let pairs: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    InProcessGate::start(&pairs).await
}

#[tokio::test]
async fn proxy_refuses_a_guessing_client_and_no_one_else() {
    let unknown = unknown();
    let unknown = unknown.as_str();
    let upstream = TestUpstream::start().await;
    // No trusted proxies: each peer address is a client.
    let gate = limited_gate(&upstream, &[("trusted_proxies", "")]).await;
    let valid = valid_token(&gate).await;
    let base = format!("http://{}", gate.addrs.proxy);
    let attacker = Http::new(base.clone()).bound_to(ip("127.0.0.2"));
    let neighbour = Http::new(base.clone()).bound_to(ip("127.0.0.3"));

    // The attacker's valid token is in memory before the guessing starts.
    let cached = attacker.clone().bearer(&valid).get(WS1_PROJECTS).await;
    assert_eq!(cached.status, StatusCode::OK);

    for i in 0..3 {
        let a = attacker.clone().bearer(unknown).get(WS1_PROJECTS).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "guess {i}");
        assert_eq!(a.header("x-hawzu-error"), Some("unknown_token"));
    }
    // A 4th failure, and a forged header, are refused before any lookup: a
    // guess never asked before costs no store read (the read counter stands
    // still; from another client the same kind of guess is one read).
    let reads_before = store_reads(&gate).await;
    let fresh = self::unknown();
    for token in [fresh.as_str(), unknown, "hwz_nonsense", "not-even-a-token"] {
        let a = attacker.clone().bearer(token).get(WS1_PROJECTS).await;
        assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(a.header("x-hawzu-error"), Some("rate_limited"));
        // 3 failures per 60 s: one is forgiven every 20 s.
        assert_eq!(a.header("retry-after"), Some("20"));
        assert_eq!(a.json()["error"], "rate_limited");
    }
    assert_eq!(
        store_reads(&gate).await,
        reads_before,
        "a refused guess was looked up"
    );
    // The token memory holds as valid still works from that address…
    let a = attacker.clone().bearer(&valid).get(WS1_PROJECTS).await;
    assert_eq!(a.status, StatusCode::OK);
    // …and every other client is untouched, even with a bad token.
    let n = neighbour.clone().bearer(&valid).get(WS1_PROJECTS).await;
    assert_eq!(n.status, StatusCode::OK);
    let n = neighbour.clone().bearer(unknown).get(WS1_PROJECTS).await;
    assert_eq!(n.header("x-hawzu-error"), Some("unknown_token"));
    let reads_before = store_reads(&gate).await;
    let n = neighbour.clone().bearer(&fresh).get(WS1_PROJECTS).await;
    assert_eq!(n.header("x-hawzu-error"), Some("unknown_token"));
    assert_eq!(store_reads(&gate).await, reads_before + 1.0);

    // Refused requests never reached the upstream: 3 allowed requests did.
    assert_eq!(upstream.count(), 3);
    let metrics = gate.ops().get("/metrics").await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains(
            r#"hawzu_gate_decisions_total{code="rate_limited",door="proxy",outcome="deny"} 4"#
        ),
        "{text}"
    );
}

#[tokio::test]
async fn a_trusted_proxy_names_the_client_and_an_untrusted_one_cannot() {
    let unknown = unknown();
    let unknown = unknown.as_str();
    let upstream = TestUpstream::start().await;
    let gate = limited_gate(&upstream, &[("trusted_proxies", "127.0.0.1")]).await;
    let valid = valid_token(&gate).await;
    let auth = |from: &str, token: &str, xff: &str| {
        let http = gate.auth().bound_to(ip(from));
        let (token, xff) = (format!("Bearer {token}"), xff.to_owned());
        async move {
            let mut headers = vec![
                ("authorization", token.as_str()),
                ("x-original-method", "GET"),
                ("x-original-uri", WS1_PROJECTS),
            ];
            if !xff.is_empty() {
                headers.push(("x-forwarded-for", xff.as_str()));
            }
            http.send(Method::GET, "/auth/nginx", &headers, None).await
        }
    };
    // nginx (trusted, on 127.0.0.1) forwards for 192.0.2.10.
    for _ in 0..3 {
        let a = auth("127.0.0.1", unknown, "192.0.2.10").await;
        assert_eq!(a.header("x-hawzu-error"), Some("unknown_token"));
    }
    // nginx passes on only 401 and 403: the nginx door says 401, with the code.
    let a = auth("127.0.0.1", unknown, "192.0.2.10").await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(a.header("x-hawzu-error"), Some("rate_limited"));
    assert_eq!(a.header("retry-after"), Some("20"));
    assert!(a.body.is_empty());
    // The client's spoofed left-most entry does not move the blame.
    let a = auth("127.0.0.1", unknown, "203.0.113.5, 192.0.2.10").await;
    assert_eq!(a.header("x-hawzu-error"), Some("rate_limited"));
    // Another client behind the same nginx is untouched.
    let a = auth("127.0.0.1", &valid, "192.0.2.11").await;
    assert_eq!(a.status, StatusCode::OK);

    // An untrusted peer (127.0.0.4) cannot pose as someone else: its own
    // failures count against it whatever it forwards…
    for i in 0..3 {
        let a = auth("127.0.0.4", unknown, &format!("198.51.100.{i}")).await;
        assert_eq!(a.header("x-hawzu-error"), Some("unknown_token"));
    }
    let a = auth("127.0.0.4", unknown, "198.51.100.200").await;
    assert_eq!(a.header("x-hawzu-error"), Some("rate_limited"));
    // …nor put the blame on a real client.
    let a = auth("127.0.0.4", unknown, "192.0.2.11").await;
    assert_eq!(a.header("x-hawzu-error"), Some("rate_limited"));
    let a = auth("127.0.0.1", &valid, "192.0.2.12").await;
    assert_eq!(a.status, StatusCode::OK);
}

#[tokio::test]
async fn every_door_limits_and_the_limit_wears_off() {
    let unknown = unknown();
    let unknown = unknown.as_str();
    let upstream = TestUpstream::start().await;
    // 2 failures per 6 s: one is forgiven every 3 s, so every door below is
    // asked well inside the refusal, even on a busy machine.
    let gate = limited_gate(
        &upstream,
        &[
            ("trusted_proxies", "127.0.0.1"),
            ("failed_auth.limit", "2"),
            ("failed_auth.window", "6s"),
        ],
    )
    .await;
    // Connected before the first failure: the connect is not in the window.
    let mut grpc = AuthorizationClient::connect(format!("http://{}", gate.addrs.grpc))
        .await
        .unwrap();
    let traefik = |xff: &'static str| {
        let http = gate.auth();
        async move {
            http.request(Method::GET, "/auth/traefik")
                .token(unknown)
                .header("x-forwarded-method", "GET")
                .header("x-forwarded-uri", WS1_PROJECTS)
                .header("x-forwarded-for", xff)
                .go()
                .await
        }
    };
    traefik("192.0.2.20").await;
    traefik("192.0.2.20").await;
    let a = traefik("192.0.2.20").await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(a.header("retry-after"), Some("3"));
    // Envoy over HTTP: the same client, the same bucket.
    let a = gate
        .auth()
        .request(Method::GET, &format!("/envoy{WS1_PROJECTS}"))
        .token(unknown)
        .header("x-forwarded-for", "192.0.2.20")
        .go()
        .await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(a.json()["error"], "rate_limited");

    // gRPC: the downstream address Envoy reports is the client.
    let check = |source: &str| check_from(source, unknown);
    let denied =
        |res: envoy_types::pb::envoy::service::auth::v3::CheckResponse| match res.http_response {
            Some(HttpResponse::DeniedResponse(d)) => {
                let status = d.status.unwrap().code;
                let code = d
                    .headers
                    .iter()
                    .filter_map(|h| h.header.as_ref())
                    .find(|h| h.key == "x-hawzu-error")
                    .map(|h| h.value.clone());
                (status, code, res.status.unwrap().code)
            }
            other => panic!("expected a deny, got {other:?}"),
        };
    let (status, code, grpc_code) =
        denied(grpc.check(check("192.0.2.20")).await.unwrap().into_inner());
    assert_eq!((status, code.as_deref()), (429, Some("rate_limited")));
    assert_eq!(grpc_code, tonic::Code::ResourceExhausted as i32);
    let (_, code, _) = denied(grpc.check(check("192.0.2.21")).await.unwrap().into_inner());
    assert_eq!(code.as_deref(), Some("unknown_token"));

    // After Retry-After, the client may try again.
    eventually("the limit to wear off", Duration::from_secs(10), || async {
        let a = traefik("192.0.2.20").await;
        (a.header("x-hawzu-error") == Some("unknown_token")).then_some(())
    })
    .await;
}

#[tokio::test]
async fn the_admin_listener_refuses_a_key_guesser() {
    let upstream = TestUpstream::start().await;
    let gate = limited_gate(&upstream, &[("roles.token_admin", "tokens:manage")]).await;
    let base = format!("http://{}", gate.addrs.admin);
    let guesser = Http::new(base.clone())
        .bound_to(ip("127.0.0.2"))
        .bearer("not-the-admin-key-but-long-enough-to-look-like-one");
    for _ in 0..3 {
        let a = guesser.get("/admin/v1/tokens").await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    }
    let a = guesser.get("/admin/v1/tokens").await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(a.json()["error"], "rate_limited");
    assert_eq!(a.header("retry-after"), Some("20"));
    // The admin key itself is never locked out: every operator behind one
    // address (`kubectl port-forward` makes them all 127.0.0.1), and any
    // page a browser there opens, shares the bucket — whoever fills it
    // must not shut the operator out. Its check is one hash, no store read;
    // a guess of it is still refused (and 256 bits are guessed by no one).
    let same = Http::new(base.clone())
        .bound_to(ip("127.0.0.2"))
        .bearer(&gate.admin_key);
    assert_eq!(same.get("/admin/v1/tokens").await.status, StatusCode::OK);
    let a = guesser.get("/admin/v1/tokens").await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    // A token from that address waits: its check reads the store.
    let (_, manager) = common::create_token(
        &gate,
        common::workspace_token("Manager", "ws_1", "token_admin", "1d"),
    )
    .await;
    let token = Http::new(base.clone())
        .bound_to(ip("127.0.0.2"))
        .bearer(&manager);
    assert_eq!(
        token.get("/admin/v1/tokens").await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    // A key the operator chose may be weaker than a generated one: it stays
    // under the limit.
    let chosen = "an-operator-chosen-admin-key-of-40-chars";
    let gate = limited_gate(&upstream, &[("admin.key", chosen)]).await;
    let base = format!("http://{}", gate.addrs.admin);
    let guesser = Http::new(base.clone())
        .bound_to(ip("127.0.0.2"))
        .bearer("not-the-admin-key-but-long-enough-to-look-like-one");
    for _ in 0..4 {
        guesser.get("/admin/v1/tokens").await;
    }
    let same = Http::new(base.clone())
        .bound_to(ip("127.0.0.2"))
        .bearer(chosen);
    assert_eq!(
        same.get("/admin/v1/tokens").await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    // The operator on another address is served.
    let operator = Http::new(base)
        .bound_to(ip("127.0.0.3"))
        .bearer(&gate.admin_key);
    assert_eq!(
        operator.get("/admin/v1/tokens").await.status,
        StatusCode::OK
    );
}

/// A peer outside `trusted_proxies` that sends forwarding headers is most
/// often the operator's own ingress left off the list (then everyone behind
/// it shares one bucket): the gate says so once, naming the peer and the
/// setting — not for a trusted proxy, and not again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_forwarder_is_pointed_out_once() {
    let dir = tempfile::tempdir().unwrap();
    let gate = common::GateProcess::start(dir.path(), "trusted_proxies = [\"127.0.0.1\"]\n");
    let unknown = unknown();
    let ask = |from: &str| {
        let http = Http::new(format!("http://{}", gate.auth)).bound_to(ip(from));
        let token = format!("Bearer {unknown}");
        async move {
            let headers = [
                ("authorization", token.as_str()),
                ("x-original-method", "GET"),
                ("x-original-uri", WS1_PROJECTS),
                ("x-forwarded-for", "192.0.2.10"),
            ];
            http.send(Method::GET, "/auth/nginx", &headers, None).await
        }
    };
    let hint = "is not in trusted_proxies but sent X-Forwarded-For";
    ask("127.0.0.1").await;
    ask("127.0.0.2").await;
    ask("127.0.0.3").await;
    let log = common::eventually("the hint", Duration::from_secs(5), || async {
        let log = gate.log_text();
        log.contains(hint).then_some(log)
    })
    .await;
    assert_eq!(log.matches(hint).count(), 1, "{log}");
    assert!(log.contains("127.0.0.2 is not in trusted_proxies"), "{log}");
}

/// The same over gRPC: an Envoy (Envoy Gateway's, or an Istio sidecar)
/// whose address is not in `trusted_proxies` reports each client's address
/// in the check, and the gate counts them all as that Envoy — one client's
/// bad tokens get everyone behind it refused. Said once, naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_grpc_caller_naming_clients_is_pointed_out() {
    let dir = tempfile::tempdir().unwrap();
    let gate = common::GateProcess::start(dir.path(), "trusted_proxies = [\"10.9.9.9\"]\n");
    let mut grpc = AuthorizationClient::connect(format!("http://{}", gate.grpc))
        .await
        .unwrap();
    let unknown = unknown();
    let check = |source: &str| check_from(source, &unknown);
    for source in ["192.0.2.10", "192.0.2.11"] {
        grpc.check(check(source)).await.unwrap();
    }
    let hint = "127.0.0.1 is not in trusted_proxies but reported a client address";
    let log = common::eventually("the hint", Duration::from_secs(5), || async {
        let log = gate.log_text();
        log.contains(hint).then_some(log)
    })
    .await;
    assert_eq!(log.matches("is not in trusted_proxies").count(), 1, "{log}");
}

/// A check of `GET` on a workspace route with `bearer`, naming `source` as
/// the downstream client, as Envoy sends it.
fn check_from(source: &str, bearer: &str) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(Peer {
                address: Some(Address {
                    address: Some(EnvoyAddress::SocketAddress(SocketAddress {
                        address: source.to_owned(),
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            }),
            request: Some(AttrRequest {
                http: Some(HttpRequest {
                    method: "GET".into(),
                    path: WS1_PROJECTS.into(),
                    headers: [("authorization".to_owned(), format!("Bearer {bearer}"))].into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}
