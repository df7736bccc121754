//! Context limits per token (`allow_from`, `not_before`) at every door —
//! proxy, `/auth/nginx`, `/auth/traefik`, `/envoy/…`, gRPC ext_authz, the
//! admin API — with the client address as `trusted_proxies` says; their
//! create/update validation and `explain`; the expiry a client and the API
//! are told (`Hawzu-Token-Expires`, `X-Hawzu-Token-Expires`); and the
//! `expiring` list filter. Both stores.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::collections::HashMap;

use envoy_types::pb::envoy::config::core::v3::address::Address as AddressKind;
use envoy_types::pb::envoy::config::core::v3::{Address, SocketAddress};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
    HttpRequest, Peer, Request as AttrRequest,
};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest, CheckResponse};
use http::{Method, StatusCode};
use serde_json::{Value, json};

use common::{Answer, Http, InProcessGate, TestUpstream, WS1_PROJECTS, workspace_token};

/// Creates a token; its id and secret.
async fn create(gate: &InProcessGate, body: Value) -> (String, String) {
    let a = gate.admin().post("/admin/v1/tokens", body).await;
    assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
    let v = a.json();
    (
        v["token"]["id"].as_str().unwrap().to_owned(),
        v["secret"].as_str().unwrap().to_owned(),
    )
}

fn viewer_with(limits: Value) -> Value {
    let mut body = workspace_token("Limited", "ws_1", "workspace_viewer", "1mo");
    for (k, v) in limits.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

/// The answers of every HTTP door for `secret` from client `xff` (sent by
/// 127.0.0.1, a trusted proxy by default): proxy, nginx, traefik, envoy.
async fn http_doors(gate: &InProcessGate, secret: &str, xff: &str) -> Vec<(&'static str, Answer)> {
    let mut out = Vec::new();
    let proxy = gate
        .proxy()
        .request(Method::GET, WS1_PROJECTS)
        .token(secret)
        .header("x-forwarded-for", xff)
        .go()
        .await;
    out.push(("proxy", proxy));
    let nginx = gate
        .auth()
        .request(Method::GET, "/auth/nginx")
        .token(secret)
        .original("GET", WS1_PROJECTS)
        .header("x-forwarded-for", xff)
        .go()
        .await;
    out.push(("nginx", nginx));
    let traefik = gate
        .auth()
        .request(Method::GET, "/auth/traefik")
        .token(secret)
        .header("x-forwarded-method", "GET")
        .header("x-forwarded-uri", WS1_PROJECTS)
        .header("x-forwarded-for", xff)
        .go()
        .await;
    out.push(("traefik", traefik));
    let envoy = gate
        .auth()
        .request(Method::GET, &format!("/envoy{WS1_PROJECTS}"))
        .token(secret)
        .header("x-forwarded-for", xff)
        .go()
        .await;
    out.push(("envoy", envoy));
    out
}

/// A gRPC check for `secret`, with Envoy reporting `source` as the
/// downstream client.
async fn grpc_check(gate: &InProcessGate, secret: &str, source: &str) -> CheckResponse {
    let mut client = AuthorizationClient::connect(format!("http://{}", gate.addrs.grpc))
        .await
        .unwrap();
    let headers = HashMap::from([("authorization".to_owned(), format!("Bearer {secret}"))]);
    let req = CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(Peer {
                address: Some(Address {
                    address: Some(AddressKind::SocketAddress(SocketAddress {
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
                    headers,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    client.check(req).await.unwrap().into_inner()
}

fn grpc_denied_status(res: &CheckResponse) -> Option<i32> {
    match &res.http_response {
        Some(HttpResponse::DeniedResponse(d)) => d.status.as_ref().map(|s| s.code),
        _ => None,
    }
}

/// Every door allows `secret` from `ok` and refuses it from `bad` with
/// `code` and `status`.
async fn every_door(
    gate: &InProcessGate,
    secret: &str,
    ok: Option<&str>,
    bad: &str,
    code: &str,
    status: u16,
) {
    if let Some(ok) = ok {
        for (door, a) in http_doors(gate, secret, ok).await {
            assert_eq!(a.status, StatusCode::OK, "{door} from {ok}: {:?}", a.body);
        }
        let res = grpc_check(gate, secret, ok).await;
        assert_eq!(res.status.as_ref().unwrap().code, 0, "grpc from {ok}");
    }
    for (door, a) in http_doors(gate, secret, bad).await {
        assert_eq!(a.status.as_u16(), status, "{door} from {bad}");
        assert_eq!(a.header("x-hawzu-error"), Some(code), "{door}");
        let challenge = a.header("www-authenticate").unwrap_or_default();
        let want = if status == 401 {
            "invalid_token"
        } else {
            "insufficient_scope"
        };
        assert!(challenge.contains(want), "{door}: {challenge}");
        if door != "nginx" {
            assert_eq!(a.json()["error"], code, "{door}");
        }
    }
    let res = grpc_check(gate, secret, bad).await;
    assert_eq!(
        grpc_denied_status(&res),
        Some(i32::from(status)),
        "grpc from {bad}"
    );
}

async fn limits_hold_at_every_door(gate: InProcessGate) {
    let (id, secret) = create(
        &gate,
        viewer_with(json!({"allow_from": ["203.0.113.0/24", "2001:db8::/32"]})),
    )
    .await;
    every_door(
        &gate,
        &secret,
        Some("203.0.113.9"),
        "198.51.100.1",
        "address_not_allowed",
        403,
    )
    .await;
    // IPv4-mapped IPv6 is the IPv4 client; IPv6 networks match IPv6 clients.
    every_door(
        &gate,
        &secret,
        Some("::ffff:203.0.113.10"),
        "2001:db9::1",
        "address_not_allowed",
        403,
    )
    .await;
    every_door(
        &gate,
        &secret,
        Some("2001:db8::42"),
        "10.0.0.1",
        "address_not_allowed",
        403,
    )
    .await;

    // A peer that is not a trusted proxy is the client, whatever its
    // X-Forwarded-For says (127.0.0.2 is not in the default list).
    let untrusted =
        Http::new(format!("http://{}", gate.addrs.proxy)).bound_to("127.0.0.2".parse().unwrap());
    let a = untrusted
        .request(Method::GET, WS1_PROJECTS)
        .token(&secret)
        .header("x-forwarded-for", "203.0.113.9")
        .go()
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(a.json()["error"], "address_not_allowed");

    // Shown, explained, and lifted by an update (the change is seen at once).
    let shown = gate
        .admin()
        .get(&format!("/admin/v1/tokens/{id}"))
        .await
        .json();
    assert_eq!(
        shown["token"]["allow_from"],
        json!(["203.0.113.0/24", "2001:db8::/32"])
    );
    let explain = |client: Option<&str>| {
        let mut body = json!({"token_id": id, "method": "GET", "path": WS1_PROJECTS});
        if let Some(c) = client {
            body["client"] = json!(c);
        }
        let admin = gate.admin();
        async move { admin.post("/admin/v1/explain", body).await.json() }
    };
    let e = explain(Some("203.0.113.9")).await;
    assert_eq!(e["decision"], "allow", "{e}");
    let e = explain(Some("198.51.100.1")).await;
    assert_eq!(e["code"], "address_not_allowed", "{e}");
    assert_eq!(e["status"], 403);
    assert!(
        e["steps"].to_string().contains("198.51.100.1 is not"),
        "{e}"
    );
    let e = explain(None).await;
    assert_eq!(e["code"], "address_not_allowed", "{e}");
    assert!(
        e["steps"]
            .to_string()
            .contains("no client address was given"),
        "{e}"
    );

    let a = gate
        .admin()
        .request(Method::PATCH, &format!("/admin/v1/tokens/{id}"))
        .json(json!({"allow_from": []}))
        .go()
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    assert!(a.json()["token"].get("allow_from").is_none());
    for (door, a) in http_doors(&gate, &secret, "198.51.100.1").await {
        assert_eq!(
            a.status,
            StatusCode::OK,
            "{door} after the limit was lifted"
        );
    }

    // Not before: refused (401) until then, at every door; an update moves it.
    let (id, early) = create(&gate, viewer_with(json!({"not_before": "2d"}))).await;
    every_door(
        &gate,
        &early,
        None,
        "203.0.113.9",
        "token_not_yet_valid",
        401,
    )
    .await;
    let e = gate
        .admin()
        .post(
            "/admin/v1/explain",
            json!({"token_id": id, "method": "GET", "path": WS1_PROJECTS}),
        )
        .await
        .json();
    assert_eq!(e["code"], "token_not_yet_valid", "{e}");
    let a = gate
        .admin()
        .request(Method::PATCH, &format!("/admin/v1/tokens/{id}"))
        .json(json!({"not_before": ""}))
        .go()
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    for (door, a) in http_doors(&gate, &early, "203.0.113.9").await {
        assert_eq!(a.status, StatusCode::OK, "{door} once started");
    }
    gate.shutdown().await;
}

async fn with_upstream(upstream: &TestUpstream, store: &[(&str, &str)]) -> InProcessGate {
    let url = upstream.url();
    let mut all = vec![("upstream.url", url.as_str())];
    all.extend_from_slice(store);
    InProcessGate::start(&all).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn address_and_start_limits_hold_at_every_door_embedded() {
    let upstream = TestUpstream::start().await;
    limits_hold_at_every_door(with_upstream(&upstream, &[]).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn address_and_start_limits_hold_at_every_door_redis() {
    let upstream = TestUpstream::start().await;
    let prefix = common::unique_prefix("token_limits");
    let redis = common::redis_url();
    let gate = with_upstream(
        &upstream,
        &[
            ("store.backend", "redis"),
            ("store.redis.url", &redis),
            ("store.redis.key_prefix", &prefix),
        ],
    )
    .await;
    limits_hold_at_every_door(gate).await;
}

#[tokio::test]
async fn ambiguous_or_impossible_limits_are_refused_naming_the_field() {
    let gate = InProcessGate::embedded().await;
    let refused = |limits: Value| {
        let admin = gate.admin();
        async move {
            let a = admin.post("/admin/v1/tokens", viewer_with(limits)).await;
            assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{:?}", a.body);
            a.json()["fields"].clone()
        }
    };
    let f = refused(json!({"allow_from": ["10.1.2.3/8"]})).await;
    assert!(
        f["allow_from[0]"].as_str().unwrap().contains("10.0.0.0"),
        "{f}"
    );
    let f = refused(json!({"allow_from": ["10.0.0.0/8", "somewhere"]})).await;
    assert!(
        f["allow_from[1]"]
            .as_str()
            .unwrap()
            .contains("not an IP address"),
        "{f}"
    );
    let f = refused(json!({"not_before": "2y"})).await;
    assert!(
        f["not_before"].as_str().unwrap().contains("never work"),
        "{f}"
    );
    let f = refused(json!({"not_before": "never"})).await;
    assert!(f["not_before"].is_string(), "{f}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_answers_carry_the_expiry_and_never_expiring_tokens_none() {
    let upstream = TestUpstream::start().await;
    let gate = with_upstream(&upstream, &[]).await;
    let (id, secret) = create(&gate, viewer_with(json!({}))).await;
    let shown = gate
        .admin()
        .get(&format!("/admin/v1/tokens/{id}"))
        .await
        .json();
    let expires = shown["token"]["expires_at"].as_str().unwrap().to_owned();
    let (_, forever) = create(
        &gate,
        workspace_token("Forever", "ws_1", "workspace_viewer", "never"),
    )
    .await;

    // Proxy: the client reads Hawzu-Token-Expires; the API gets
    // X-Hawzu-Token-Expires, never the client's own.
    let a = gate
        .proxy()
        .request(Method::GET, WS1_PROJECTS)
        .token(&secret)
        .header("x-hawzu-token-expires", "2999-01-01T00:00:00Z")
        .go()
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.header("hawzu-token-expires"), Some(expires.as_str()));
    assert_eq!(
        a.json()["headers"]["x-hawzu-token-expires"],
        json!([expires])
    );
    let a = gate
        .proxy()
        .request(Method::GET, WS1_PROJECTS)
        .token(&forever)
        .header("x-hawzu-token-expires", "2999-01-01T00:00:00Z")
        .go()
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.header("hawzu-token-expires"), None);
    assert!(a.json()["headers"].get("x-hawzu-token-expires").is_none());

    // Forward auth: both, for the proxy to pass on.
    for (door, a) in http_doors(&gate, &secret, "203.0.113.9").await {
        if door == "proxy" {
            continue;
        }
        assert_eq!(
            a.header("x-hawzu-token-expires"),
            Some(expires.as_str()),
            "{door}"
        );
        assert_eq!(
            a.header("hawzu-token-expires"),
            Some(expires.as_str()),
            "{door}"
        );
    }
    // gRPC: the identity header for the API, a response header for the client.
    let res = grpc_check(&gate, &secret, "203.0.113.9").await;
    let Some(HttpResponse::OkResponse(ok)) = res.http_response else {
        panic!("an OkHttpResponse")
    };
    let value_of = |list: &[envoy_types::pb::envoy::config::core::v3::HeaderValueOption],
                    name: &str| {
        list.iter()
            .filter_map(|h| h.header.as_ref())
            .find(|h| h.key == name)
            .map(|h| h.value.clone())
    };
    assert_eq!(
        value_of(&ok.headers, "x-hawzu-token-expires"),
        Some(expires.clone())
    );
    assert_eq!(
        value_of(&ok.response_headers_to_add, "hawzu-token-expires"),
        Some(expires)
    );
}

#[tokio::test]
async fn the_expiring_filter_lists_usable_tokens_expiring_within_the_window() {
    let gate = InProcessGate::embedded().await;
    let (soon, _) = create(
        &gate,
        workspace_token("Soon", "ws_1", "workspace_viewer", "12h"),
    )
    .await;
    let (week, _) = create(
        &gate,
        workspace_token("Week", "ws_1", "workspace_viewer", "5d"),
    )
    .await;
    let (_, _) = create(
        &gate,
        workspace_token("Month", "ws_1", "workspace_viewer", "20d"),
    )
    .await;
    let (_, _) = create(
        &gate,
        workspace_token("Never", "ws_1", "workspace_viewer", "never"),
    )
    .await;
    let (disabled, _) = create(
        &gate,
        workspace_token("Off", "ws_1", "workspace_viewer", "2d"),
    )
    .await;
    let a = gate
        .admin()
        .post_empty(&format!("/admin/v1/tokens/{disabled}/disable"))
        .await;
    assert_eq!(a.status, StatusCode::OK);
    let ids = |q: &'static str| {
        let admin = gate.admin();
        async move {
            let v = admin.get(&format!("/admin/v1/tokens?{q}")).await.json();
            let mut ids: Vec<String> = v["tokens"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["id"].as_str().unwrap().to_owned())
                .collect();
            ids.sort();
            ids
        }
    };
    let mut want = vec![soon.clone(), week];
    want.sort();
    assert_eq!(ids("expiring=7d").await, want);
    assert_eq!(ids("expiring=1d").await, vec![soon]);
    assert_eq!(ids("expiring=30d").await.len(), 3);
    let a = gate.admin().get("/admin/v1/tokens?expiring=soon").await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.json()["fields"]["expiring"].is_string());
}

#[test]
fn the_cli_sets_limits_lists_expiring_tokens_and_explains_with_a_client() {
    let dir = tempfile::tempdir().unwrap();
    let gate = common::GateProcess::start(dir.path(), "");
    let run = gate.cli(&[
        "token",
        "create",
        "--name",
        "Deploy",
        "--workspace",
        "ws_1",
        "--role",
        "workspace_viewer",
        "--expires",
        "3d",
        "--allow-from",
        "203.0.113.0/24",
        "--allow-from",
        "::ffff:198.51.100.0/120",
        "--not-before",
        "2020-01-01",
        "--json",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let v = run.json();
    let id = v["token"]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        v["token"]["allow_from"],
        json!(["203.0.113.0/24", "198.51.100.0/24"])
    );
    assert_eq!(v["token"]["not_before"], "2020-01-01T00:00:00Z");
    let show = gate.cli(&["token", "show", &id]);
    assert!(
        show.stdout
            .contains("allow from    203.0.113.0/24, 198.51.100.0/24"),
        "{}",
        show.stdout
    );

    // A network with host bits is refused naming the field (exit 1).
    let run = gate.cli(&[
        "token",
        "create",
        "--name",
        "Bad",
        "--workspace",
        "ws_1",
        "--role",
        "workspace_viewer",
        "--expires",
        "3d",
        "--allow-from",
        "10.1.2.3/8",
    ]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(run.stderr.contains("--allow-from #1"), "{}", run.stderr);

    let list = gate.cli(&["token", "list", "--expiring", "7d", "--json"]);
    assert_eq!(list.code, 0, "{}", list.stderr);
    assert_eq!(list.json()["tokens"][0]["id"], id.as_str());
    let list = gate.cli(&["token", "list", "--expiring", "1d", "--json"]);
    assert_eq!(list.json()["tokens"], json!([]));

    let explain = |client: &str| {
        gate.cli(&[
            "explain",
            "--token-id",
            &id,
            "--method",
            "GET",
            "--path",
            WS1_PROJECTS,
            "--client",
            client,
        ])
    };
    let run = explain("203.0.113.9");
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let run = explain("192.0.2.1");
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(
        run.stdout.contains("deny: address_not_allowed (403)"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("client 192.0.2.1 is not"),
        "{}",
        run.stdout
    );

    let run = gate.cli(&["token", "update", &id, "--allow-anywhere", "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.json()["token"].get("allow_from").is_none());
}

#[tokio::test]
async fn a_managing_token_is_held_to_its_addresses_at_the_admin_api_too() {
    let gate = InProcessGate::embedded().await;
    let base = format!("http://{}", gate.addrs.admin);
    for (nets, want) in [
        (json!(["10.0.0.0/8"]), StatusCode::FORBIDDEN),
        (json!(["127.0.0.0/8"]), StatusCode::OK),
    ] {
        let mut body = workspace_token("Manager", "ws_1", "workspace_manager", "1mo");
        body["allow_from"] = nets;
        let (_, secret) = create(&gate, body).await;
        // The admin listener's client is its peer (127.0.0.1 here).
        let a = Http::new(base.clone())
            .bearer(&secret)
            .get("/admin/v1/tokens")
            .await;
        assert_eq!(a.status, want, "{:?}", a.body);
        if want == StatusCode::FORBIDDEN {
            assert!(
                a.json()["message"]
                    .as_str()
                    .unwrap()
                    .contains("client address"),
                "{:?}",
                a.body
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_the_gate_cannot_name_is_not_the_proxy_in_front_of_it() {
    // A token limited to the proxy's own network (127.0.0.1 here: the
    // ingress's 10.0.0.0/8 in a cluster). A trusted proxy that forwards
    // something other than an address as the client must not make the
    // proxy the client: every client behind it would pass `allow_from`.
    let upstream = TestUpstream::start().await;
    let gate = with_upstream(&upstream, &[]).await;
    let (_, secret) = create(
        &gate,
        viewer_with(serde_json::json!({"allow_from": ["127.0.0.1/32"]})),
    )
    .await;
    for xff in ["unknown", "not an address", "198.51.100.7, garbage"] {
        for (door, a) in http_doors(&gate, &secret, xff).await {
            assert_eq!(a.status, StatusCode::FORBIDDEN, "{door} from {xff:?}");
            assert_eq!(
                a.header("x-hawzu-error"),
                Some("address_not_allowed"),
                "{door} from {xff:?}"
            );
        }
    }
    // Envoy's source in a form no address parses from (and none at all).
    for source in ["garbage", ""] {
        let res = grpc_check(&gate, &secret, source).await;
        assert_eq!(grpc_denied_status(&res), Some(403), "grpc from {source:?}");
    }
    // What proxies write with a port is still the address it names
    // (Azure Application Gateway: `ip:port`; `[v6]:port`).
    for (xff, allowed) in [
        ("127.0.0.1:51000", true),
        ("198.51.100.7:51000", false),
        ("[::1]:443", false),
    ] {
        for (door, a) in http_doors(&gate, &secret, xff).await {
            let want = if allowed {
                StatusCode::OK
            } else {
                StatusCode::FORBIDDEN
            };
            assert_eq!(a.status, want, "{door} from {xff:?}");
        }
    }
    // Still allowed where the client is named and inside the limit.
    for (door, a) in http_doors(&gate, &secret, "127.0.0.1").await {
        assert_eq!(a.status, StatusCode::OK, "{door}");
    }
}

/// At `/auth/*`, `/envoy` and the gRPC door the peer is the proxy asking,
/// never the client. A proxy outside `trusted_proxies` (an ingress whose
/// pod network is not listed: the shipped default) cannot name the client
/// either — and it is not the client: a token limited to the proxy's
/// network would pass for every client on the Internet behind it. Before,
/// each of these answered 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_proxy_asking_is_not_the_client() {
    let upstream = TestUpstream::start().await;
    let gate = with_upstream(&upstream, &[("trusted_proxies", "192.0.2.0/24")]).await;
    let (_, secret) = create(
        &gate,
        viewer_with(serde_json::json!({"allow_from": ["127.0.0.1/32"]})),
    )
    .await;
    for xff in [Some("203.0.113.9"), Some("127.0.0.1"), None] {
        let mut asked = http_doors(&gate, &secret, xff.unwrap_or("")).await;
        // The reverse proxy's peer is its client: judged as itself.
        let (door, proxy) = asked.remove(0);
        assert_eq!(door, "proxy");
        assert_eq!(proxy.status, StatusCode::OK, "proxy: {:?}", proxy.body);
        if xff.is_none() {
            asked = Vec::new();
            for (door, path, original) in [
                ("nginx", "/auth/nginx".to_owned(), true),
                ("envoy", format!("/envoy{WS1_PROJECTS}"), false),
            ] {
                let mut req = gate.auth().request(Method::GET, &path).token(&secret);
                if original {
                    req = req.original("GET", WS1_PROJECTS);
                }
                asked.push((door, req.go().await));
            }
        }
        for (door, a) in asked {
            assert_eq!(a.status, StatusCode::FORBIDDEN, "{door} from {xff:?}");
            assert_eq!(
                a.header("x-hawzu-error"),
                Some("address_not_allowed"),
                "{door} from {xff:?}"
            );
        }
    }
    for source in ["203.0.113.9", "127.0.0.1"] {
        let res = grpc_check(&gate, &secret, source).await;
        assert_eq!(grpc_denied_status(&res), Some(403), "grpc from {source:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxy_that_names_no_client_is_not_the_client() {
    // At /auth/* and /envoy the peer is the proxy asking. Without
    // X-Forwarded-For a trusted proxy names no client: a token limited to
    // the proxy's network must not pass for everyone behind it.
    let gate = InProcessGate::embedded().await;
    let (_, secret) = create(
        &gate,
        viewer_with(serde_json::json!({"allow_from": ["127.0.0.1/32"]})),
    )
    .await;
    let nginx = gate
        .auth()
        .request(Method::GET, "/auth/nginx")
        .token(&secret)
        .original("GET", WS1_PROJECTS)
        .go()
        .await;
    assert_eq!(nginx.status, StatusCode::FORBIDDEN);
    assert_eq!(nginx.header("x-hawzu-error"), Some("address_not_allowed"));
    let envoy = gate
        .auth()
        .request(Method::GET, &format!("/envoy{WS1_PROJECTS}"))
        .token(&secret)
        .go()
        .await;
    assert_eq!(envoy.status, StatusCode::FORBIDDEN);
    // Self-inspection on the same listener: the same rule.
    let inspect = gate
        .auth()
        .request(Method::GET, "/.well-known/hawzu-token")
        .token(&secret)
        .go()
        .await;
    assert_eq!(inspect.status, StatusCode::FORBIDDEN);
    assert_eq!(inspect.json()["error"], "address_not_allowed");
    // Named, and inside the limit: allowed.
    let named = gate
        .auth()
        .request(Method::GET, "/auth/nginx")
        .token(&secret)
        .original("GET", WS1_PROJECTS)
        .header("x-forwarded-for", "127.0.0.1")
        .go()
        .await;
    assert_eq!(named.status, StatusCode::OK);
}
