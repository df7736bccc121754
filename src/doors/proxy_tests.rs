//! Unit tests of the proxy's header handling: `forwarded()` with trusted
//! and untrusted peers, and — through `Proxy::handle` on a loopback
//! listener in front of an echoing upstream — hop-by-hop stripping both
//! ways, the identity headers set and the client's own removed, and
//! `Authorization` forwarded only when `proxy.forward_authorization` says so.

use std::convert::Infallible;

use arc_swap::ArcSwap;
use http::HeaderName;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::cache::{CacheOptions, TokenCache};
use crate::clients::{FailedAuth, TrustedProxies};
use crate::config::{FailedAuthSettings, LimitSettings};
use crate::doors::listener::{ListenerState, Protocol, serve};
use crate::headers::IdentityHeaders;
use crate::policy::Policy;
use crate::store::{EmbeddedStore, Store, TokenStore};
use crate::token::{Scope, TokenRecord, TokenSecret};

// === forwarded() ===

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

fn all<'h>(h: &'h HeaderMap, name: &str) -> Vec<&'h str> {
    h.get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect()
}

/// `forwarded` as the proxy calls it: after the scan of the same headers.
fn forward_hop(h: &mut HeaderMap, peer: SocketAddr, tls: bool, trusted: bool) {
    let found = IdentityHeaders::default().scan(h);
    forwarded(h, found, peer, tls, trusted);
}

fn peer() -> SocketAddr {
    "10.0.0.7:5555".parse().unwrap()
}

const CLIENT_SENT: &[(&str, &str)] = &[
    ("host", "api.example"),
    ("x-forwarded-for", "6.6.6.6"),
    ("x-forwarded-proto", "https"),
    ("x-forwarded-host", "evil.example"),
    ("forwarded", "for=6.6.6.6;proto=https"),
    ("x-real-ip", "6.6.6.6"),
];

#[test]
fn an_untrusted_peer_gets_only_what_the_gate_saw() {
    let mut h = headers(CLIENT_SENT);
    forward_hop(&mut h, peer(), false, false);
    assert_eq!(all(&h, "x-forwarded-for"), ["10.0.0.7"]);
    assert_eq!(all(&h, "x-forwarded-proto"), ["http"]);
    assert_eq!(all(&h, "x-forwarded-host"), ["api.example"]);
    assert!(h.get("forwarded").is_none());
    assert!(h.get("x-real-ip").is_none());
    assert_eq!(all(&h, "host"), ["api.example"], "Host itself is kept");
}

#[test]
fn a_trusted_peers_values_are_kept_and_this_hop_appended() {
    let mut h = headers(CLIENT_SENT);
    forward_hop(&mut h, peer(), true, true);
    assert_eq!(all(&h, "x-forwarded-for"), ["6.6.6.6, 10.0.0.7"]);
    assert_eq!(all(&h, "x-forwarded-proto"), ["https, https"]);
    assert_eq!(all(&h, "x-forwarded-host"), ["evil.example, api.example"]);
    assert_eq!(all(&h, "forwarded"), ["for=6.6.6.6;proto=https"]);
    assert_eq!(all(&h, "x-real-ip"), ["6.6.6.6"]);
}

#[test]
fn several_lines_of_a_trusted_peer_become_one_joined_in_order() {
    let mut h = headers(&[
        ("x-forwarded-for", "1.1.1.1"),
        ("x-forwarded-for", "2.2.2.2, 3.3.3.3"),
    ]);
    forward_hop(&mut h, "[::1]:80".parse().unwrap(), false, true);
    assert_eq!(
        all(&h, "x-forwarded-for"),
        ["1.1.1.1, 2.2.2.2, 3.3.3.3, ::1"]
    );
}

#[test]
fn underscore_spellings_are_dropped_even_from_a_trusted_peer() {
    for trusted in [false, true] {
        let mut h = headers(&[
            ("x_forwarded_for", "6.6.6.6"),
            ("X_Forwarded-Proto", "https"),
            ("x-forwarded_host", "evil.example"),
            ("x_real_ip", "6.6.6.6"),
        ]);
        forward_hop(&mut h, peer(), false, trusted);
        let names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(
            names,
            ["x-forwarded-for", "x-forwarded-proto"],
            "trusted: {trusted}"
        );
        assert_eq!(all(&h, "x-forwarded-for"), ["10.0.0.7"]);
    }
}

#[test]
fn without_a_host_no_forwarded_host_is_added() {
    let mut h = HeaderMap::new();
    forward_hop(&mut h, peer(), true, false);
    assert!(h.get("x-forwarded-host").is_none());
    assert_eq!(all(&h, "x-forwarded-proto"), ["https"]);
    let mut h = headers(&[("x-forwarded-host", "front.example")]);
    forward_hop(&mut h, peer(), false, true);
    assert_eq!(all(&h, "x-forwarded-host"), ["front.example"]);
}

#[test]
fn only_visible_ascii_is_repeated_in_forwarded_headers() {
    let odd = HeaderValue::from_bytes(b"caf\xe9.example").unwrap();
    let mut h = HeaderMap::new();
    h.insert("host", odd.clone());
    forward_hop(&mut h, peer(), false, false);
    assert!(h.get("x-forwarded-host").is_none(), "no Host to repeat");
    let mut h = HeaderMap::new();
    h.append("x-forwarded-for", odd);
    h.append("x-forwarded-for", HeaderValue::from_static("1.1.1.1"));
    forward_hop(&mut h, peer(), false, true);
    assert_eq!(all(&h, "x-forwarded-for"), ["1.1.1.1, 10.0.0.7"]);
}

// === Proxy::handle between a client and an echoing upstream ===

/// The upstream: answers with the request's headers as a JSON list of
/// pairs, plus hop-by-hop headers of its own that must not reach the client.
async fn echo_upstream() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = tcp.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<Incoming>| async move {
                    let seen: Vec<(String, String)> = req
                        .headers()
                        .iter()
                        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap().to_owned()))
                        .collect();
                    let res = Response::builder()
                        .header("connection", "x-upstream-hop")
                        .header("x-upstream-hop", "1")
                        .header("keep-alive", "timeout=5")
                        .header("x-upstream-kept", "1")
                        .body(Full::new(Bytes::from(serde_json::to_vec(&seen).unwrap())))
                        .unwrap();
                    Ok::<_, Infallible>(res)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, task)
}

/// A proxy door on a loopback port in front of [`echo_upstream`], with
/// one valid `workspace_viewer` token of `ws_1`.
struct Rig {
    addr: SocketAddr,
    secret: String,
    record: TokenRecord,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Drop for Rig {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn rig(forward_authorization: bool) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path(), Duration::from_secs(5))
        .await
        .unwrap();
    let options = CacheOptions {
        ttl: Duration::from_secs(60),
        negative_ttl: Duration::from_secs(5),
        max_entries: 100,
        stale_if_error: Duration::ZERO,
    };
    let cache = Arc::new(TokenCache::new(Store::Embedded(store), options));
    let secret = TokenSecret::generate().unwrap();
    let record = TokenRecord::sample(
        Scope::Workspace {
            role: "workspace_viewer".into(),
        },
        Timestamp::now(),
    );
    cache.create(&secret.hash(), &record).await.unwrap();
    let (usage, writer) = crate::usage::start(cache.clone());
    let shared = Arc::new(Shared::new(
        cache,
        Arc::new(ArcSwap::from_pointee(Policy::default())),
        IdentityHeaders::default(),
        usage,
        TrustedProxies::new(&[]),
        FailedAuth::new(&FailedAuthSettings::default()),
    ));
    let (upstream, upstream_task) = echo_upstream().await;
    let proxy = Proxy::new(
        shared.clone(),
        &UpstreamOptions {
            url: format!("http://{upstream}").parse().unwrap(),
            ca_file: None,
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(10),
            pool_idle_timeout: Duration::from_secs(10),
            pool_max_idle_per_host: 4,
            http2: false,
            forward_authorization,
        },
    )
    .unwrap();
    let state = ListenerState::new(
        "listen.proxy",
        &LimitSettings::default(),
        Protocol::Http,
        shared.render.clone(),
        &shared.metrics,
    );
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let front = tokio::spawn(serve(
        state,
        tcp,
        None,
        move |req, conn| proxy.clone().handle(req, conn),
        std::future::pending::<()>(),
        Duration::ZERO,
    ));
    Rig {
        addr,
        secret: secret.expose().to_owned(),
        record,
        tasks: vec![front, upstream_task, writer],
        _dir: dir,
    }
}

/// What the client got: status, headers (lower-case names), and the
/// upstream's echo of the headers it received.
struct Got {
    status: u16,
    headers: Vec<(String, String)>,
    upstream_saw: Vec<(String, String)>,
}

impl Got {
    fn values(list: &[(String, String)], name: &str) -> Vec<String> {
        list.iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn upstream(&self, name: &str) -> Vec<String> {
        Self::values(&self.upstream_saw, name)
    }

    fn client(&self, name: &str) -> Vec<String> {
        Self::values(&self.headers, name)
    }
}

/// Sends `GET /api/v1/workspaces/ws_1/projects` with these header lines
/// (exactly as written) on a fresh connection, and reads the answer to EOF.
async fn ask(addr: SocketAddr, lines: &[String]) -> Got {
    let mut head =
        "GET /api/v1/workspaces/ws_1/projects HTTP/1.1\r\nHost: api.example\r\n".to_owned();
    for l in lines {
        head.push_str(l);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .expect("an answer within 10 s")
        .unwrap();
    let text = String::from_utf8(buf).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete head");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let upstream_saw = if status == 200 {
        serde_json::from_str(body).expect("the upstream's echo")
    } else {
        Vec::new()
    };
    Got {
        status,
        headers,
        upstream_saw,
    }
}

#[tokio::test]
async fn hop_by_hop_headers_stop_at_the_gate_both_ways() {
    let rig = rig(false).await;
    let got = ask(
        rig.addr,
        &[
            format!("Authorization: Bearer {}", rig.secret),
            "Connection: close, X-Client-Hop".into(),
            "X-Client-Hop: 1".into(),
            "Keep-Alive: timeout=5".into(),
            "Proxy-Authorization: Basic eDp5".into(),
            "X-Client-Kept: 1".into(),
        ],
    )
    .await;
    assert_eq!(got.status, 200, "{:?}", got.headers);
    for name in [
        "connection",
        "x-client-hop",
        "keep-alive",
        "proxy-authorization",
    ] {
        assert_eq!(got.upstream(name), Vec::<String>::new(), "{name} upstream");
    }
    assert_eq!(got.upstream("x-client-kept"), ["1"]);
    for name in ["x-upstream-hop", "keep-alive"] {
        assert_eq!(
            got.client(name),
            Vec::<String>::new(),
            "{name} to the client"
        );
    }
    assert_eq!(got.client("x-upstream-kept"), ["1"]);
}

#[tokio::test]
async fn the_gate_sets_the_identity_and_removes_what_the_client_claimed() {
    let rig = rig(false).await;
    let got = ask(
        rig.addr,
        &[
            format!("Authorization: Bearer {}", rig.secret),
            "Connection: close".into(),
            "X-Hawzu-Role: workspace_admin".into(),
            "X_Hawzu_Project_Id: p_9".into(),
            "x-hawzu-anything: 1".into(),
            "X-HTTP-Method-Override: DELETE".into(),
            "X-Forwarded-For: 6.6.6.6".into(),
        ],
    )
    .await;
    assert_eq!(got.status, 200, "{:?}", got.headers);
    assert_eq!(got.upstream("x-hawzu-token-id"), [rig.record.id.as_str()]);
    assert_eq!(got.upstream("x-hawzu-token-type"), ["workspace"]);
    assert_eq!(got.upstream("x-hawzu-workspace-id"), ["ws_1"]);
    assert_eq!(got.upstream("x-hawzu-role"), ["workspace_viewer"]);
    assert_eq!(got.upstream("x-hawzu-permission").len(), 1);
    for name in [
        "x_hawzu_project_id",
        "x-hawzu-project-id",
        "x-hawzu-anything",
        "x-http-method-override",
    ] {
        assert_eq!(got.upstream(name), Vec::<String>::new(), "{name}");
    }
    // The loopback client is not a trusted proxy: its claim is replaced.
    assert_eq!(got.upstream("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(got.upstream("x-forwarded-proto"), ["http"]);
    assert_eq!(got.upstream("x-forwarded-host"), ["api.example"]);
    let id = got.client("x-request-id");
    assert_eq!(id.len(), 1, "{:?}", got.headers);
    assert_eq!(got.upstream("x-request-id"), id);
}

#[tokio::test]
async fn authorization_reaches_the_upstream_only_when_configured() {
    for forward in [false, true] {
        let rig = rig(forward).await;
        let bearer = format!("Bearer {}", rig.secret);
        let got = ask(
            rig.addr,
            &[
                format!("Authorization: {bearer}"),
                "Connection: close".into(),
            ],
        )
        .await;
        assert_eq!(got.status, 200, "{:?}", got.headers);
        let want = if forward { vec![bearer] } else { Vec::new() };
        assert_eq!(got.upstream("authorization"), want, "forward: {forward}");
    }
}
