//! The token console (`admin.console = true`) on a real gate, real Redis
//! and a stand-in upstream: its sign-in, session cookie, CSRF and origin
//! checks and security headers over plain HTTP; then the guide's whole
//! flow driven in headless Chromium (Debian's `chromium` and
//! `chromium-driver`) through WebDriver.
//!
//! `HAWZU_CONSOLE_SCREENSHOTS=1` also writes Chromium's screenshots of the
//! main screens to `docs/console/*.png` (the README shows them).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;
#[path = "console/webdriver.rs"]
mod webdriver;

use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::{Value, json};

use common::{
    Answer, Http, InProcessGate, TestCerts, TestUpstream, create_token, eventually, project_token,
    redis_url, unique_prefix, workspace_token,
};
use webdriver::{Browser, key};

const TESTCASES: &str = "/api/v1/workspaces/ws_1/projects/proj_a/testcases";
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

async fn console_gate(test: &str, upstream: Option<&TestUpstream>, console: bool) -> InProcessGate {
    let prefix = unique_prefix(test);
    let url = upstream.map(|u| u.url());
    let mut extra = vec![
        ("store.backend", "redis"),
        ("store.redis.key_prefix", prefix.as_str()),
        ("admin.console", if console { "true" } else { "false" }),
    ];
    let redis = redis_url();
    extra.push(("store.redis.url", redis.as_str()));
    if let Some(u) = &url {
        extra.push(("upstream.url", u.as_str()));
    }
    InProcessGate::start(&extra).await
}

/// The admin listener without a bearer.
fn plain(gate: &InProcessGate) -> Http {
    Http::new(format!("http://{}", gate.addrs.admin))
}

fn origin(gate: &InProcessGate) -> String {
    format!("http://{}", gate.addrs.admin)
}

/// A signed-in console, as the browser holds it.
struct Session {
    cookie: String,
    csrf: String,
    origin: String,
}

async fn sign_in(gate: &InProcessGate, credential: &str) -> Answer {
    plain(gate)
        .send(
            Method::POST,
            "/console/session",
            &[("origin", &origin(gate)), ("sec-fetch-site", "same-origin")],
            Some(json!({ "credential": credential })),
        )
        .await
}

async fn session(gate: &InProcessGate, credential: &str) -> Session {
    let a = sign_in(gate, credential).await;
    assert_eq!(
        a.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    let set = a.header("set-cookie").unwrap().to_owned();
    let cookie = set.split(';').next().unwrap().to_owned();
    Session {
        cookie,
        csrf: a.json()["csrf_token"].as_str().unwrap().to_owned(),
        origin: origin(gate),
    }
}

impl Session {
    /// A request as the console's page sends it.
    async fn send(
        &self,
        gate: &InProcessGate,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Answer {
        plain(gate)
            .send(
                method,
                path,
                &[
                    ("cookie", &self.cookie),
                    ("x-hawzu-csrf", &self.csrf),
                    ("origin", &self.origin),
                    ("sec-fetch-site", "same-origin"),
                ],
                body,
            )
            .await
    }
}

fn assert_console_headers(a: &Answer, what: &str) {
    assert_eq!(a.header("content-security-policy"), Some(CSP), "{what}");
    assert_eq!(
        a.header("x-content-type-options"),
        Some("nosniff"),
        "{what}"
    );
    assert_eq!(a.header("referrer-policy"), Some("no-referrer"), "{what}");
    assert_eq!(a.header("x-frame-options"), Some("DENY"), "{what}");
    assert_eq!(a.header("cache-control"), Some("no-store"), "{what}");
}

// === over plain HTTP ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_off_unless_configured_and_its_cookie_is_then_no_credential() {
    let gate = console_gate("console-off", None, false).await;
    for path in ["/console/", "/console/app.js", "/console/session"] {
        let a = plain(&gate).get(path).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{path}");
    }
    let a = sign_in(&gate, &gate.admin_key).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    // A cookie of the name is nothing to a gate without the console.
    let a = plain(&gate)
        .send(
            Method::GET,
            "/admin/v1/tokens",
            &[("cookie", "hawzu_console=x")],
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_console_answer_carries_the_csp_and_the_page_is_all_from_the_binary() {
    let gate = console_gate("console-headers", None, true).await;
    let page = plain(&gate).get("/console/").await;
    assert_eq!(page.status, StatusCode::OK);
    assert_console_headers(&page, "page");
    assert!(
        page.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    let html = String::from_utf8_lossy(&page.body).into_owned();
    assert!(
        !html.contains("<script>") && !html.contains("style="),
        "{html}"
    );
    for (path, ty) in [
        ("/console/app.js", "text/javascript"),
        ("/console/api.js", "text/javascript"),
        ("/console/console.css", "text/css"),
    ] {
        let a = plain(&gate).get(path).await;
        assert_eq!(a.status, StatusCode::OK, "{path}");
        assert!(a.header("content-type").unwrap().starts_with(ty), "{path}");
        assert_console_headers(&a, path);
    }
    let a = plain(&gate).get("/console/nothing.js").await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_console_headers(&a, "404");
    // Deeper than the console's own routes: still a console answer.
    let a = plain(&gate).get("/console/a/b").await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_console_headers(&a, "404 two segments down");
    // The admin API's JSON is never sniffed as something else either.
    let a = plain(&gate).get("/admin/v1/tokens").await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(a.header("x-content-type-options"), Some("nosniff"));
    let a = plain(&gate).get("/console").await;
    assert_eq!(a.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(a.header("location"), Some("/console/"));
    let a = sign_in(&gate, "wrong").await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_console_headers(&a, "sign-in refused");
}

/// Another service on the same host (any port) can set a second cookie of
/// the console's name for the browser to send: the 401s that follow are no
/// guess at a credential and must not lock the admin's address out of the
/// admin API (the wrong-key limit counts credentials that were wrong).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tossed_cookie_does_not_lock_the_browser_out() {
    let gate = console_gate("console-tossed", None, true).await;
    let a = sign_in(&gate, &gate.admin_key).await;
    assert_eq!(a.status, StatusCode::OK);
    let two = "hawzu_console=planted; hawzu_console=other";
    for _ in 0..40 {
        let a = plain(&gate)
            .send(Method::GET, "/admin/v1/tokens", &[("cookie", two)], None)
            .await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED);
        assert!(String::from_utf8_lossy(&a.body).contains("cookie once"));
    }
    let a = gate.admin().get("/admin/v1/tokens").await;
    assert_eq!(
        a.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_cookie_is_http_only_strict_and_ends_at_sign_out() {
    let gate = console_gate("console-cookie", None, true).await;
    let a = sign_in(&gate, &gate.admin_key).await;
    assert_eq!(a.status, StatusCode::OK);
    let set = a.header("set-cookie").unwrap();
    // Plain HTTP: no `Secure`, so not the `__Host-` name either.
    assert!(set.starts_with("hawzu_console="), "{set}");
    for part in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=28800"] {
        assert!(set.contains(part), "{set} lacks {part}");
    }
    assert!(!set.contains("Secure"), "{set}");
    let body = a.json();
    assert_eq!(body["caller"], "admin");
    assert!(!String::from_utf8_lossy(&a.body).contains(&gate.admin_key));

    let first = session(&gate, &gate.admin_key).await;
    let a = first
        .send(&gate, Method::GET, "/admin/v1/tokens", None)
        .await;
    assert_eq!(a.status, StatusCode::OK);
    // Signing in again from the same browser ends its earlier session.
    let a = plain(&gate)
        .send(
            Method::POST,
            "/console/session",
            &[("origin", &origin(&gate)), ("cookie", &first.cookie)],
            Some(json!({ "credential": gate.admin_key })),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    let a = first
        .send(&gate, Method::GET, "/admin/v1/tokens", None)
        .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    let s = session(&gate, &gate.admin_key).await;
    let a = s.send(&gate, Method::GET, "/console/session", None).await;
    assert_eq!(a.json()["csrf_token"], s.csrf.as_str());
    let a = s
        .send(&gate, Method::DELETE, "/console/session", None)
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    assert!(a.header("set-cookie").unwrap().contains("Max-Age=0"));
    // Revoked on the server: the old cookie is nothing now.
    let a = s.send(&gate, Method::GET, "/admin/v1/tokens", None).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
}

/// A session works only from the address that signed in: its cookie and
/// CSRF token, taken elsewhere (a log, another app on the host), are no
/// session there — neither for the API nor to read the CSRF token back —
/// and the session goes on for its own browser.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_cookie_works_only_from_the_address_that_signed_in() {
    let gate = console_gate("console-bound", None, true).await;
    let s = session(&gate, &gate.admin_key).await;
    let elsewhere = plain(&gate).bound_to("127.0.0.2".parse().unwrap());
    for path in ["/admin/v1/tokens", "/console/session"] {
        let a = elsewhere
            .send(
                Method::GET,
                path,
                &[
                    ("cookie", &s.cookie),
                    ("x-hawzu-csrf", &s.csrf),
                    ("origin", &s.origin),
                    ("sec-fetch-site", "same-origin"),
                ],
                None,
            )
            .await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{path}");
        assert!(
            !String::from_utf8_lossy(&a.body).contains(&s.csrf),
            "{path}"
        );
    }
    let a = s.send(&gate, Method::GET, "/admin/v1/tokens", None).await;
    assert_eq!(a.status, StatusCode::OK);
}

/// DNS rebinding: a page at `http://rebound.example:<port>` whose name is
/// pointed at the gate sends requests its browser calls same-origin (the
/// Host, the Origin and `Sec-Fetch-Site` all agree). Over plain HTTP the
/// console takes a sign-in or a change only at an address or `localhost`:
/// before, this page could sign in with guesses, reading the answers, and
/// use up the operator's wrong-key allowance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_pointed_at_a_plain_console_cannot_sign_in() {
    let gate = console_gate("console-rebind", None, true).await;
    let port = gate.addrs.admin.port();
    // A sign-in as a browser at `host` sends it.
    let sign_in_at = |host: String| {
        let gate = &gate;
        async move {
            plain(gate)
                .send(
                    Method::POST,
                    "/console/session",
                    &[
                        ("host", &host),
                        ("origin", &format!("http://{host}")),
                        ("sec-fetch-site", "same-origin"),
                    ],
                    Some(json!({ "credential": gate.admin_key })),
                )
                .await
        }
    };
    let a = sign_in_at(format!("rebound.example:{port}")).await;
    assert_eq!(
        a.status,
        StatusCode::FORBIDDEN,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    assert!(a.header("set-cookie").is_none());
    assert!(a.json()["message"].as_str().unwrap().contains("tls.admin"));
    // At its address, and at localhost, it signs in.
    for host in [format!("127.0.0.1:{port}"), format!("localhost:{port}")] {
        assert_eq!(
            sign_in_at(host.clone()).await.status,
            StatusCode::OK,
            "{host}"
        );
    }
}

/// The same rebound page with bearer guesses instead of a sign-in: a
/// browser's request (it carries `Origin` or `Sec-Fetch-Site`) to a name
/// over plain HTTP is refused before any credential is judged, so it reads
/// no answer to a guess and uses up nothing of the wrong-key allowance.
/// Before, 31 guesses locked the operator's chosen key out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_pointed_at_a_plain_admin_api_cannot_guess_keys_from_a_browser() {
    let chosen = "an-admin-key-chosen-by-hand-0123456789";
    let gate = InProcessGate::start(&[("admin.key", chosen)]).await;
    let rebound = format!("rebound.example:{}", gate.addrs.admin.port());
    for _ in 0..40 {
        let a = plain(&gate)
            .send(
                Method::GET,
                "/admin/v1/tokens",
                &[
                    ("host", &rebound),
                    ("origin", &format!("http://{rebound}")),
                    ("authorization", "Bearer a-guess-0123456789-0123456789-0123"),
                ],
                None,
            )
            .await;
        assert_eq!(
            a.status,
            StatusCode::FORBIDDEN,
            "{}",
            String::from_utf8_lossy(&a.body)
        );
    }
    let a = plain(&gate)
        .send(
            Method::GET,
            "/admin/v1/tokens",
            &[("authorization", &format!("Bearer {chosen}"))],
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    // The CLI (no Origin, no Sec-Fetch-Site) may name the gate by a name.
    let a = plain(&gate)
        .send(
            Method::GET,
            "/admin/v1/tokens",
            &[
                ("host", &rebound),
                ("authorization", &format!("Bearer {chosen}")),
            ],
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
}

/// A bearer sent with a session cookie is refused as ambiguous without
/// being judged, so it is no wrong key and uses up nothing of the wrong-key
/// allowance: a script with a cookie jar must not lock out an admin key
/// the operator chose (only a generated key is spared that limit). Before,
/// the 31st such request, and the key's own after it, got 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bearer_sent_with_a_cookie_is_not_a_wrong_key() {
    let chosen = "an-admin-key-chosen-by-hand-0123456789";
    let gate = InProcessGate::start(&[("admin.console", "true"), ("admin.key", chosen)]).await;
    let bearer = format!("Bearer {chosen}");
    for _ in 0..40 {
        let a = plain(&gate)
            .send(
                Method::GET,
                "/admin/v1/tokens",
                &[
                    ("authorization", &bearer),
                    ("cookie", "hawzu_console=left-over"),
                ],
                None,
            )
            .await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    }
    let a = plain(&gate)
        .send(
            Method::GET,
            "/admin/v1/tokens",
            &[("authorization", &bearer)],
            None,
        )
        .await;
    assert_eq!(
        a.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_is_refused_and_counted_in_the_wrong_key_limit() {
    let gate = console_gate("console-wrong", None, true).await;
    let a = sign_in(&gate, "hwzadm_not-the-key-at-all-0123456789").await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(a.json()["error"], "unauthorized");
    assert!(a.header("set-cookie").is_none());
    let body = String::from_utf8_lossy(&a.body).into_owned();
    assert!(!body.contains("not-the-key"), "{body}");
    let operator = session(&gate, &gate.admin_key).await;
    // The doors' limit: 30 wrong keys a minute, then 429 before any check.
    let mut limited = false;
    for _ in 0..40 {
        if sign_in(&gate, "wrong").await.status == StatusCode::TOO_MANY_REQUESTS {
            limited = true;
            break;
        }
    }
    assert!(limited, "40 wrong keys were never limited");
    assert_eq!(
        sign_in(&gate, "wrong").await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Whoever shares the operator's address cannot shut the operator out:
    // the (generated, unguessable) admin key's session goes on, and the key
    // signs in again.
    let a = operator
        .send(&gate, Method::GET, "/admin/v1/tokens", None)
        .await;
    assert_eq!(
        a.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    assert_eq!(sign_in(&gate, &gate.admin_key).await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_requests_riding_on_the_session_cookie_are_refused() {
    let gate = console_gate("console-csrf", None, true).await;
    let (id, _) = create_token(
        &gate,
        workspace_token("Target", "ws_1", "workspace_viewer", "7d"),
    )
    .await;
    let s = session(&gate, &gate.admin_key).await;
    let disable = format!("/admin/v1/tokens/{id}/disable");
    let refused = |a: &Answer, what: &str| {
        assert_eq!(
            a.status,
            StatusCode::FORBIDDEN,
            "{what}: {}",
            String::from_utf8_lossy(&a.body)
        );
    };
    // Each request rides on the session's cookie and lacks one thing.
    let evil = "http://evil.example";
    let cases: [(&str, Vec<(&str, &str)>); 7] = [
        // A form on another site posting to the admin API: its Origin,
        // its Sec-Fetch-Site, no CSRF header (a form cannot send one).
        (
            "cross-site form post",
            vec![
                ("origin", evil),
                ("sec-fetch-site", "cross-site"),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
        ),
        // Each check alone: the CSRF header missing, or wrong…
        ("no CSRF header", vec![("origin", &s.origin)]),
        (
            "a wrong CSRF token",
            vec![("origin", &s.origin), ("x-hawzu-csrf", "guess")],
        ),
        // …the right CSRF token from a foreign origin, or with no Origin.
        (
            "a foreign origin",
            vec![("origin", evil), ("x-hawzu-csrf", &s.csrf)],
        ),
        ("no Origin", vec![("x-hawzu-csrf", &s.csrf)]),
        // …or everything right but the browser's word that another site
        // (a sibling port, a subdomain) sent it.
        (
            "Sec-Fetch-Site same-site",
            vec![
                ("origin", &s.origin),
                ("x-hawzu-csrf", &s.csrf),
                ("sec-fetch-site", "same-site"),
            ],
        ),
        (
            "Sec-Fetch-Site cross-site",
            vec![
                ("origin", &s.origin),
                ("x-hawzu-csrf", &s.csrf),
                ("sec-fetch-site", "cross-site"),
            ],
        ),
    ];
    for (what, mut headers) in cases {
        headers.push(("cookie", &s.cookie));
        let a = plain(&gate)
            .send(Method::POST, &disable, &headers, None)
            .await;
        refused(&a, what);
    }
    // A sign-in forced from another site.
    let a = plain(&gate)
        .send(
            Method::POST,
            "/console/session",
            &[("origin", evil)],
            Some(json!({ "credential": gate.admin_key })),
        )
        .await;
    refused(&a, "a cross-site sign-in");
    // Nothing happened to the token; the console's own request works.
    let shown = gate
        .admin()
        .get(&format!("/admin/v1/tokens/{id}"))
        .await
        .json();
    assert_eq!(shown["token"]["state"], "enabled");
    let a = s.send(&gate, Method::POST, &disable, None).await;
    assert_eq!(a.status, StatusCode::OK);
    // A bearer and a cookie together are ambiguous.
    let a = gate
        .admin()
        .send(
            Method::GET,
            "/admin/v1/tokens",
            &[("cookie", &s.cookie)],
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manager_tokens_session_sees_its_workspace_and_ends_with_the_token() {
    let gate = console_gate("console-manager", None, true).await;
    let (manager_id, manager) = create_token(
        &gate,
        workspace_token("WS2 manager", "ws_2", "workspace_manager", "7d"),
    )
    .await;
    let (_, viewer) = create_token(
        &gate,
        workspace_token("WS2 viewer", "ws_2", "workspace_viewer", "7d"),
    )
    .await;
    let (other, _) = create_token(
        &gate,
        workspace_token("WS1 token", "ws_1", "workspace_viewer", "7d"),
    )
    .await;
    // A token without tokens:manage does not sign in.
    assert_eq!(sign_in(&gate, &viewer).await.status, StatusCode::FORBIDDEN);
    let s = session(&gate, &manager).await;
    let who = s
        .send(&gate, Method::GET, "/console/session", None)
        .await
        .json();
    assert_eq!(who["caller"], format!("token:{manager_id}"));
    assert_eq!(who["workspace"], "ws_2");
    let list = s
        .send(&gate, Method::GET, "/admin/v1/tokens", None)
        .await
        .json();
    let names: Vec<&str> = list["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"WS2 viewer") && !names.contains(&"WS1 token"),
        "{names:?}"
    );
    let a = s
        .send(
            &gate,
            Method::GET,
            &format!("/admin/v1/tokens/{other}"),
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    let a = s
        .send(&gate, Method::GET, "/admin/v1/tokens?workspace=ws_1", None)
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    // Disabled by the admin: the session ends with it.
    let a = gate
        .admin()
        .post_empty(&format!("/admin/v1/tokens/{manager_id}/disable"))
        .await;
    assert_eq!(a.status, StatusCode::OK);
    let a = s.send(&gate, Method::GET, "/admin/v1/tokens", None).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    let a = s.send(&gate, Method::GET, "/console/session", None).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);

    // So does a session whose token is revoked, or rotated (its old value
    // only overlaps for its clients: it manages nothing more).
    for end in ["revoke", "rotate"] {
        let (id, secret) = create_token(
            &gate,
            workspace_token("WS2 manager 2", "ws_2", "workspace_manager", "7d"),
        )
        .await;
        let s = session(&gate, &secret).await;
        let a = s.send(&gate, Method::GET, "/admin/v1/tokens", None).await;
        assert_eq!(a.status, StatusCode::OK, "{end}");
        let path = format!("/admin/v1/tokens/{id}");
        let a = if end == "revoke" {
            gate.admin().delete(&path).await
        } else {
            gate.admin()
                .post(&format!("{path}/rotate"), json!({"overlap": "1h"}))
                .await
        };
        assert!(a.status.is_success(), "{end}: {:?}", a.body);
        // Refused (the rotated value: 403, it may not manage tokens), and
        // the session is over.
        let a = s.send(&gate, Method::GET, "/admin/v1/tokens", None).await;
        let want = if end == "revoke" {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::FORBIDDEN
        };
        assert_eq!(a.status, want, "{end}: {:?}", a.body);
        let a = s.send(&gate, Method::GET, "/console/session", None).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{end}");
    }
}

/// One request over TLS to `localhost:port`, trusting the test CA: the
/// status, the headers and the JSON body (`null` when there is none).
async fn tls_send(
    certs: &TestCerts,
    port: u16,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (StatusCode, http::HeaderMap, Value) {
    use http_body_util::{BodyExt, Full};
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(certs.client_config(&[]))
        .https_only()
        .enable_http1()
        .build();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, Full<bytes::Bytes>>(https);
    let mut req = http::Request::builder()
        .method(method)
        .uri(format!("https://localhost:{port}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let bytes = body.map(|b| b.to_string()).unwrap_or_default();
    let res = client
        .request(req.body(Full::new(bytes::Bytes::from(bytes))).unwrap())
        .await
        .unwrap();
    let (parts, body) = res.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (parts.status, parts.headers, json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_the_cookie_is_secure_and_host_prefixed_and_the_origin_https() {
    let certs = TestCerts::new();
    let (cert, key) = (certs.cert.display(), certs.key.display());
    let gate = InProcessGate::start_with_toml(
        &format!(
            "[admin]\nconsole = true\n[tls.admin]\ncert_file = \"{cert}\"\nkey_file = \"{key}\"\n"
        ),
        &[],
    )
    .await;
    let port = gate.addrs.admin.port();
    let sign_in = |origin: String| {
        let body = json!({ "credential": gate.admin_key });
        let certs = &certs;
        async move {
            tls_send(
                certs,
                port,
                Method::POST,
                "/console/session",
                &[("origin", &origin)],
                Some(body),
            )
            .await
        }
    };
    // The plain-HTTP origin of the same host is another origin.
    let (status, _, _) = sign_in(format!("http://localhost:{port}")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, headers, body) = sign_in(format!("https://localhost:{port}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let set = headers.get("set-cookie").unwrap().to_str().unwrap();
    assert!(set.starts_with("__Host-hawzu_console="), "{set}");
    for part in ["; Secure", "; HttpOnly", "; SameSite=Strict", "; Path=/"] {
        assert!(set.contains(part), "{set} lacks {part}");
    }
    let cookie = set.split(';').next().unwrap().to_owned();
    let csrf = body["csrf_token"].as_str().unwrap().to_owned();
    let (status, _, _) = tls_send(
        &certs,
        port,
        Method::GET,
        "/admin/v1/tokens",
        &[("cookie", &cookie), ("x-hawzu-csrf", &csrf)],
        None,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the __Host- cookie is the credential over TLS"
    );
    // The plain name is not this listener's cookie.
    let plain_name = cookie.replace("__Host-", "");
    let (status, _, _) = tls_send(
        &certs,
        port,
        Method::GET,
        "/admin/v1/tokens",
        &[("cookie", &plain_name), ("x-hawzu-csrf", &csrf)],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

// === in Chromium ===

/// Writes a screenshot to docs/console/<name>.png when asked to.
/// Clicks Sign out, waits for the sign-in view, and checks that the
/// session cookie `held` names no live session on the server.
async fn signs_out_on_the_server(b: &Browser, gate: &InProcessGate, held: &str) {
    b.click("#sign-out").await;
    b.wait(
        "signed out",
        "!document.getElementById('sign-in-view').hidden",
    )
    .await;
    let a = plain(gate)
        .send(
            Method::GET,
            "/console/session",
            &[("cookie", &format!("hawzu_console={held}"))],
            None,
        )
        .await;
    assert_eq!(
        a.status,
        StatusCode::UNAUTHORIZED,
        "the session the browser held ended on the server"
    );
}

async fn screenshot(b: &Browser, name: &str) {
    if std::env::var("HAWZU_CONSOLE_SCREENSHOTS").as_deref() != Ok("1") {
        return;
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/console");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{name}.png")), b.screenshot().await).unwrap();
}

/// The cells of a token's row: data-col → text.
async fn row(b: &Browser, name: &str) -> Value {
    b.js(
        "for (const tr of document.querySelectorAll('#token-rows tr')) {
           if (tr.querySelector('.token-name').textContent !== arguments[0]) continue;
           const out = { id: tr.dataset.tokenId };
           for (const td of tr.querySelectorAll('td')) out[td.dataset.col] = td.textContent;
           return out;
         }
         return null;",
        json!([name]),
    )
    .await
}

async fn wait_row(b: &Browser, name: &str) -> Value {
    b.wait(
        &format!("the row of {name}"),
        &format!(
            "[...document.querySelectorAll('#token-rows .token-name')].some(a => a.textContent === {})",
            json!(name)
        ),
    )
    .await;
    row(b, name).await
}

/// Clicks `action` (`disable`, `rotate`…) in the row of `name`.
async fn row_action(b: &Browser, name: &str, action: &str) {
    let id = row(b, name).await["id"].as_str().unwrap().to_owned();
    b.click(&format!(
        "tr[data-token-id='{id}'] button[data-action='{action}']"
    ))
    .await;
}

async fn proxy_status(gate: &InProcessGate, secret: &str) -> StatusCode {
    gate.proxy()
        .request(Method::GET, TESTCASES)
        .token(secret)
        .go()
        .await
        .status
}

/// The secret in the dialog; then the dialog is closed (by keyboard) and
/// the value must be gone from the whole page.
async fn take_secret(b: &Browser) -> String {
    b.wait(
        "the secret dialog",
        "document.getElementById('secret-dialog').open",
    )
    .await;
    let secret = b
        .js(
            "return document.getElementById('secret-value').value;",
            json!([]),
        )
        .await
        .as_str()
        .unwrap()
        .to_owned();
    assert!(secret.starts_with("hwz_"), "{secret}");
    assert_eq!(b.focused().await, "secret-copy", "the dialog opens on Copy");
    b.keys(&[key::ENTER]).await; // Copy
    b.wait(
        "the copy to be confirmed",
        "document.getElementById('secret-copied').textContent !== ''",
    )
    .await;
    b.tab_to("secret-done").await;
    b.keys(&[key::ENTER]).await;
    b.wait(
        "the secret dialog to close",
        "!document.getElementById('secret-dialog').open",
    )
    .await;
    // Where the value could linger: the markup, every field, the
    // selection, the URL and the title. Named by place, never printed.
    let places = b
        .js(
            "const places = { html: document.documentElement.outerHTML, url: location.href, title: document.title, selection: String(window.getSelection()) };
             for (const i of document.querySelectorAll('input, textarea')) places['field #' + i.id] = i.value;
             return Object.entries(places).filter(([, v]) => v.includes(arguments[0])).map(([k]) => k);",
            json!([&secret[4..]]),
        )
        .await;
    assert_eq!(places, json!([]), "the secret is still in the page");
    assert!(!b.url().await.contains(&secret[4..]));
    secret
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guide_flow_works_end_to_end_in_chromium() {
    let upstream = TestUpstream::start().await;
    let gate = console_gate("console-browser", Some(&upstream), true).await;
    let base = format!("http://{}/console/", gate.addrs.admin);
    let b = Browser::start(1280, 900).await;

    // Sign-in refused with a wrong key, the error next to the field.
    b.goto(&base).await;
    b.wait(
        "the sign-in form",
        "!document.getElementById('sign-in-view').hidden",
    )
    .await;
    screenshot(&b, "sign-in").await;
    b.type_into("#credential", "hwzadm_wrong-key-0123456789012345678901")
        .await;
    b.keys(&[key::ENTER]).await;
    b.wait(
        "the sign-in error",
        "!document.getElementById('credential-error').hidden",
    )
    .await;
    let err = b.text("#credential-error").await;
    assert!(
        err.contains("Admin key or access token") && err.contains("not valid"),
        "{err}"
    );
    assert_eq!(
        b.js(
            "return document.getElementById('credential').getAttribute('aria-invalid')",
            json!([])
        )
        .await,
        "true"
    );
    assert!(b.cookies().await.is_empty(), "no session for a wrong key");

    // Sign in with the admin key.
    b.type_into("#credential", &gate.admin_key).await;
    b.keys(&[key::ENTER]).await;
    b.wait(
        "the token list",
        "!document.getElementById('list-view').hidden",
    )
    .await;
    let cookies = b.cookies().await;
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    assert_eq!(cookies[0]["name"], "hawzu_console");
    assert_eq!(cookies[0]["httpOnly"], true);
    assert_eq!(cookies[0]["sameSite"], "Strict");
    assert_eq!(
        b.js("return document.cookie", json!([])).await,
        "",
        "HttpOnly: no script sees it"
    );

    // Form errors name the field: the API's own field errors.
    b.click("#create-open").await;
    b.wait(
        "the create dialog",
        "document.getElementById('create-dialog').open",
    )
    .await;
    b.click("#c-submit").await;
    b.wait(
        "the name's error",
        "!document.getElementById('c-name-error').hidden",
    )
    .await;
    let err = b.text("#c-name-error").await;
    assert!(
        err.starts_with("Token name:") && err.contains("required"),
        "{err}"
    );
    let err = b.text("#c-workspace-error").await;
    assert!(err.starts_with("Workspace:"), "{err}");
    assert_eq!(
        b.focused().await,
        "c-name",
        "focus moves to the first field at fault"
    );

    // A workspace token, with the mouse.
    b.type_into("#c-name", "Reporting").await;
    b.type_into("#c-workspace", "ws_1").await;
    b.click("#c-role option[value='workspace_viewer']").await;
    b.click("#c-expires option[value='never']").await;
    assert!(
        b.js(
            "return !document.getElementById('c-expires-warning').hidden",
            json!([])
        )
        .await
            == true,
        "never expires comes with the advice to avoid it"
    );
    b.click("#c-expires option[value='1mo']").await;
    screenshot(&b, "create-workspace-token").await;
    b.click("#c-submit").await;
    b.wait(
        "the secret dialog",
        "document.getElementById('secret-dialog').open",
    )
    .await;
    wait_row(&b, "Reporting").await;
    screenshot(&b, "token-created").await;
    let reporting = take_secret(&b).await;
    assert_eq!(
        b.focused().await,
        "create-open",
        "focus returns to Create Token"
    );

    // A project token with two projects and two roles, keyboard only.
    b.keys(&[key::ENTER]).await; // Create Token has the focus
    b.wait(
        "the create dialog",
        "document.getElementById('create-dialog').open",
    )
    .await;
    assert_eq!(b.focused().await, "c-name");
    b.keys(&["CI Runner", key::TAB, "ws_1"]).await;
    b.tab_to("c-scope-workspace").await;
    b.keys(&[key::ARROW_DOWN]).await; // the Project radio
    b.wait(
        "the project rows",
        "!document.getElementById('c-project-scope').hidden",
    )
    .await;
    b.keys(&[key::TAB, "proj_a", key::TAB, key::END]).await; // the last role: Project Manager
    b.tab_to("c-add-project").await;
    b.keys(&[key::ENTER]).await;
    b.wait(
        "a second project row",
        "document.querySelectorAll('#c-projects li').length === 2",
    )
    .await;
    b.keys(&["proj_b", key::TAB, key::HOME]).await; // the first role: Project Viewer
    b.tab_to("c-expires").await;
    b.keys(&[key::ARROW_DOWN]).await; // 1 month → 6 months
    let chosen = b
        .js(
            "return [...document.querySelectorAll('#c-projects li')].map(li => [li.querySelector('.p-id').value, li.querySelector('.p-role').value]).concat([[document.getElementById('c-expires').value]]);",
            json!([]),
        )
        .await;
    assert_eq!(
        chosen,
        json!([
            ["proj_a", "project_manager"],
            ["proj_b", "project_viewer"],
            ["6mo"]
        ])
    );
    screenshot(&b, "create-project-token").await;
    b.tab_to("c-submit").await;
    b.keys(&[key::ENTER]).await;
    let ci = take_secret(&b).await;

    // Both in the list, every column of the guide.
    let r = wait_row(&b, "CI Runner").await;
    assert_eq!(r["type"], "Project");
    assert_eq!(
        r["projects"],
        "proj_a: Project Managerproj_b: Project Viewer"
    );
    assert_eq!(r["creator"], "admin");
    assert!(r["created"].as_str().unwrap().starts_with("20"), "{r}");
    assert!(r["expiry"].as_str().unwrap().contains("(in 18"), "{r}");
    assert_eq!(r["state"], "Enabled");
    let w = wait_row(&b, "Reporting").await;
    assert_eq!(w["type"], "Workspace");
    assert_eq!(w["projects"], "Workspace ws_1: Workspace Viewer");
    screenshot(&b, "token-list").await;

    // Used through the proxy.
    assert_eq!(proxy_status(&gate, &ci).await, StatusCode::OK);
    assert_eq!(proxy_status(&gate, &reporting).await, StatusCode::OK);

    // Search and a filter.
    b.type_into("#f-search", "CI Run").await;
    b.wait(
        "the search",
        "document.querySelectorAll('#token-rows tr').length === 1",
    )
    .await;
    b.type_into("#f-search", "").await;
    b.click("#f-type option[value='workspace']").await;
    b.wait("the type filter", "document.querySelectorAll('#token-rows tr').length === 1 && document.querySelector('#token-rows .token-name').textContent === 'Reporting'").await;
    b.click("#f-type option[value='']").await;
    wait_row(&b, "CI Runner").await;

    // Disable: the proxy refuses it.
    row_action(&b, "CI Runner", "disable").await;
    b.wait(
        "the disabled state",
        "document.querySelector(\"#token-rows tr[data-state='disabled']\") !== null",
    )
    .await;
    assert_eq!(row(&b, "CI Runner").await["state"], "Disabled");
    eventually(
        "the proxy to refuse the disabled token",
        Duration::from_secs(10),
        || async { (proxy_status(&gate, &ci).await == StatusCode::UNAUTHORIZED).then_some(()) },
    )
    .await;

    // Rotate with an overlap: old and new values both work.
    row_action(&b, "Reporting", "rotate").await;
    b.wait(
        "the rotate dialog",
        "document.getElementById('rotate-dialog').open",
    )
    .await;
    b.click("#r-overlap option[value='24h']").await;
    screenshot(&b, "rotate").await;
    b.click("#r-submit").await;
    let rotated = take_secret(&b).await;
    assert_ne!(rotated, reporting);
    assert_eq!(proxy_status(&gate, &rotated).await, StatusCode::OK);
    assert_eq!(
        proxy_status(&gate, &reporting).await,
        StatusCode::OK,
        "the overlap"
    );

    // The token's page: usage per day, last addresses, audit events, explain.
    b.wait(
        "the rotated token's row",
        "document.querySelectorAll('#token-rows tr').length === 3",
    )
    .await;
    let old_id = b
        .js("return [...document.querySelectorAll('#token-rows tr')].find(tr => tr.dataset.state === 'revoked' || tr.textContent.includes('old value works until')).dataset.tokenId", json!([]))
        .await;
    assert!(old_id.is_string(), "the old token shows its overlap");
    let ci_id = row(&b, "CI Runner").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    b.click(&format!("tr[data-token-id='{ci_id}'] .token-name"))
        .await;
    b.wait("the detail page", "document.getElementById('detail-title') && document.getElementById('detail-title').textContent === 'CI Runner'").await;
    assert!(b.url().await.ends_with(&format!("#/tokens/{ci_id}")));
    b.wait(
        "the audit events",
        "document.querySelector('#audit-events') !== null",
    )
    .await;
    let audit = b.text("#audit-events").await;
    assert!(
        audit.contains("disable") && audit.contains("create"),
        "{audit}"
    );
    // Usage is written every few seconds: reload the page until it shows.
    eventually("usage on the token's page", Duration::from_secs(30), || async {
        b.js("window.dispatchEvent(new HashChangeEvent('hashchange'))", json!([])).await;
        b.wait("the usage card", "document.getElementById('usage-totals') !== null || document.querySelector('#usage .form-error') !== null").await;
        let clients = b.text("#clients").await;
        (clients.contains("127.0.0.1") && b.text("#usage-totals").await.starts_with("1 allowed")).then_some(())
    })
    .await;
    let bars = b.js("return [...document.querySelectorAll('.chart .bar-allowed')].map(r => Number(r.getAttribute('data-count'))).reduce((a, n) => a + n, 0)", json!([])).await;
    assert_eq!(bars, 1, "one allowed request in the chart");
    b.click("#x-method option[value='GET']").await;
    b.type_into("#x-path", TESTCASES).await;
    b.click("#x-submit").await;
    b.wait(
        "the explanation",
        "document.querySelector('#explain-result .verdict') !== null",
    )
    .await;
    let verdict = b.text("#explain-result .verdict").await;
    assert!(
        verdict.starts_with("DENY (401)") && verdict.contains("token_disabled"),
        "{verdict}"
    );
    b.set_size(1280, 1500).await;
    b.js("window.scrollTo(0, 0)", json!([])).await;
    screenshot(&b, "token-detail").await;
    b.set_size(1280, 900).await;

    // Revoke (the new Reporting value), confirmed in a dialog.
    b.goto(&format!("{base}#/")).await;
    b.wait("the list again", "!document.getElementById('list-view').hidden && document.querySelectorAll('#token-rows tr').length === 3").await;
    let new_id = b
        .js("return [...document.querySelectorAll('#token-rows tr')].find(tr => tr.querySelector('.token-name').textContent === 'Reporting' && tr.dataset.state === 'enabled' && !tr.textContent.includes('old value works until')).dataset.tokenId", json!([]))
        .await;
    let new_id = new_id.as_str().unwrap().to_owned();
    b.click(&format!(
        "tr[data-token-id='{new_id}'] button[data-action='revoke']"
    ))
    .await;
    b.wait(
        "the confirm dialog",
        "document.getElementById('confirm-dialog').open",
    )
    .await;
    b.click("#confirm-ok").await;
    b.wait(
        "the revoked state",
        &format!(
            "document.querySelector(\"tr[data-token-id='{new_id}']\").dataset.state === 'revoked'"
        ),
    )
    .await;
    eventually(
        "the proxy to refuse the revoked value",
        Duration::from_secs(10),
        || async {
            (proxy_status(&gate, &rotated).await == StatusCode::UNAUTHORIZED).then_some(())
        },
    )
    .await;

    // A cross-site post with the browser's own session cookie: refused.
    let cookie = b.cookies().await[0]["value"].as_str().unwrap().to_owned();
    let a = plain(&gate)
        .send(
            Method::POST,
            &format!("/admin/v1/tokens/{ci_id}/enable"),
            &[
                ("cookie", &format!("hawzu_console={cookie}")),
                ("origin", "http://evil.example"),
                ("sec-fetch-site", "cross-site"),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(
        proxy_status(&gate, &ci).await,
        StatusCode::UNAUTHORIZED,
        "still disabled"
    );
    // The same, sent by Chromium itself: a page on another origin (another
    // port of 127.0.0.1 — the same site, so the Strict cookie goes along)
    // submits a form to the console's API as it loads.
    let action = format!("{}/admin/v1/tokens/{ci_id}/enable", origin(&gate));
    let page = common::Canned::start(
        "HTTP/1.1 200 OK\r\nContent-Type: text/html",
        &format!(
            "<!doctype html><form method=post action=\"{action}\"><input name=enable value=1></form>\
             <script>document.forms[0].submit()</script>"
        ),
    );
    b.goto(&format!("http://{}/", page.addr)).await;
    b.wait(
        "Chromium to submit the foreign form",
        "location.pathname.endsWith('/enable')",
    )
    .await;
    let shown = b.js("return document.body.innerText", json!([])).await;
    assert!(
        shown.as_str().is_some_and(|t| t.contains("\"error\"")),
        "the browser was shown a refusal: {shown}"
    );
    assert_eq!(
        proxy_status(&gate, &ci).await,
        StatusCode::UNAUTHORIZED,
        "still disabled after the browser's cross-origin post"
    );
    b.goto(&format!("{base}#/")).await;
    b.wait(
        "the list after the foreign page",
        "!document.getElementById('list-view').hidden && document.querySelectorAll('#token-rows tr').length === 3",
    )
    .await;

    // At a phone's width.
    b.set_size(375, 812).await;
    b.wait("the narrow layout", "window.innerWidth <= 400")
        .await;
    let fits = b
        .js(
            "return document.documentElement.scrollWidth <= window.innerWidth + 1",
            json!([]),
        )
        .await;
    assert_eq!(fits, true, "no sideways scrolling at 375 px");
    screenshot(&b, "token-list-phone").await;
    b.set_size(1280, 900).await;

    // No Content-Security-Policy violation on any page shown.
    let log = b.console_log().await;
    assert!(
        !log.iter().any(|m| m.contains("Content Security Policy") || m.contains("Content-Security-Policy")),
        "{log:?}"
    );

    // Chromium enforces that CSP on the page: a style attribute and an
    // inline script put in by script do nothing (CSSOM property sets are
    // not inline style, and do work; the page needs none).
    let enforced = b
        .js(
            "const d = document.createElement('div');
             d.textContent = 'x';
             d.setAttribute('style', 'color: rgb(255, 0, 0)');
             document.body.append(d);
             const attribute = getComputedStyle(d).color === 'rgb(255, 0, 0)';
             d.removeAttribute('style');
             d.style.color = 'rgb(0, 0, 255)';
             const cssom = getComputedStyle(d).color === 'rgb(0, 0, 255)';
             d.remove();
             const s = document.createElement('script');
             s.textContent = 'window.inlineRan = true';
             document.body.append(s);
             s.remove();
             return { attribute, cssom, inline_script: window.inlineRan === true };",
            json!([]),
        )
        .await;
    assert_eq!(
        enforced,
        json!({ "attribute": false, "cssom": true, "inline_script": false })
    );

    // Sign out; a workspace-scoped manager sees only its workspace.
    let (_, manager) = create_token(
        &gate,
        workspace_token("WS2 manager", "ws_2", "workspace_manager", "7d"),
    )
    .await;
    create_token(
        &gate,
        project_token("WS2 CI", "ws_2", &[("proj_z", "project_member")], "7d"),
    )
    .await;
    signs_out_on_the_server(&b, &gate, &cookie).await;
    b.type_into("#credential", &manager).await;
    b.keys(&[key::ENTER]).await;
    wait_row(&b, "WS2 CI").await;
    let names = b
        .js("return [...document.querySelectorAll('#token-rows .token-name')].map(a => a.textContent)", json!([]))
        .await;
    let names: Vec<&str> = names
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert!(
        !names.contains(&"CI Runner") && !names.contains(&"Reporting"),
        "{names:?}"
    );
    assert!(
        b.js(
            "return document.getElementById('f-workspace-field').hidden",
            json!([])
        )
        .await
            == true
    );
    b.goto(&format!("{base}#/tokens/{ci_id}")).await;
    b.wait(
        "the refusal",
        "document.querySelector('#detail-view .form-error') !== null",
    )
    .await;
    let err = b.text("#detail-view .form-error").await;
    assert!(err.contains("No token with id"), "{err}");
    // Its create dialog has the workspace fixed.
    b.goto(&format!("{base}#/")).await;
    b.wait("the list", "!document.getElementById('list-view').hidden")
        .await;
    b.click("#create-open").await;
    b.wait(
        "the create dialog",
        "document.getElementById('create-dialog').open",
    )
    .await;
    assert_eq!(
        b.js(
            "const w = document.getElementById('c-workspace'); return [w.value, w.readOnly]",
            json!([])
        )
        .await,
        json!(["ws_2", true])
    );
    b.keys(&[key::ESCAPE]).await;
    b.wait(
        "Escape to close the dialog",
        "!document.getElementById('create-dialog').open",
    )
    .await;
    assert_eq!(
        b.focused().await,
        "create-open",
        "focus back on Create Token"
    );

    // Nothing stored in the browser: no local or session storage.
    assert_eq!(
        b.js(
            "return localStorage.length + sessionStorage.length",
            json!([])
        )
        .await,
        0
    );

    // A sign-in in another tab replaces the cookie, and this page's CSRF
    // token with it: its Sign out still ends the session the browser
    // holds. Before, the stale token got 403, the page said "Signed out."
    // and the session lived on (30 min idle, 8 h in all).
    b.js(
        "fetch('/console/session', {method: 'POST', headers: {'Content-Type': 'application/json'},
           body: JSON.stringify({credential: arguments[0]})}).then(r => { window.resigned = r.status; });
         return null;",
        json!([manager]),
    )
    .await;
    b.wait("the other tab's sign-in", "window.resigned === 200")
        .await;
    let held = b.cookies().await[0]["value"].as_str().unwrap().to_owned();
    signs_out_on_the_server(&b, &gate, &held).await;
}
