//! The gate process over its life: graceful SIGTERM with a request in
//! flight, SIGHUP reloads (a bad config refused, a good one applied), and TLS
//! on every listener (each one asked over TLS: the proxy, forward-auth,
//! ext_authz gRPC by a tonic client, ops, and admin with mTLS) with
//! certificates reloaded when their files change, without
//! dropping open connections; and a second gate on a running one's ports
//! refusing to start.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
    HttpRequest, Request as AttrRequest,
};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use http::{Request, StatusCode};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tonic::transport::Channel;

use common::{GateProcess, Http, TestCerts, TestUpstream, WS1_PROJECTS, curl, eventually};

fn signal(gate: &GateProcess, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &gate.pid().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

fn token(gate: &GateProcess, args: &[&str]) -> String {
    let mut all = vec![
        "token",
        "create",
        "--name",
        "Life",
        "--workspace",
        "ws_1",
        "--expires",
        "1w",
        "--json",
    ];
    all.extend_from_slice(args);
    let run = gate.cli(&all);
    assert_eq!(run.code, 0, "{run:?}");
    run.json()["secret"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_turns_readiness_off_and_lets_the_request_in_flight_finish() {
    let upstream = TestUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut gate = GateProcess::start(
        dir.path(),
        &format!(
            "[upstream]\nurl = \"{}\"\n[shutdown]\ngrace = \"10s\"\n",
            upstream.url()
        ),
    );
    let secret = token(&gate, &["--role", "workspace_viewer"]);
    let ops = Http::new(format!("http://{}", gate.ops));
    assert_eq!(ops.get("/readyz").await.status, StatusCode::OK);

    // A slow request is in flight at the upstream…
    let url = format!("http://{}{WS1_PROJECTS}?slow_ms=1500", gate.proxy);
    let auth = format!("Authorization: Bearer {secret}");
    let in_flight = tokio::task::spawn_blocking(move || curl(&["-H", &auth, &url]));
    eventually(
        "the request to reach the upstream",
        Duration::from_secs(5),
        || async { (upstream.count() == 1).then_some(()) },
    )
    .await;

    // …when SIGTERM comes: readiness is 503 at once, new connections are refused.
    let stop = Instant::now();
    signal(&gate, "-TERM");
    let v = eventually("readiness to turn 503", Duration::from_secs(5), || async {
        let r = ops.get("/readyz").await;
        (r.status == StatusCode::SERVICE_UNAVAILABLE).then(|| r.json())
    })
    .await;
    assert_eq!(v["checks"]["shutting_down"], true);
    // At once: before the request in flight (1.5 s at the upstream) is done,
    // so readiness did not wait for draining.
    assert!(
        !in_flight.is_finished(),
        "readiness turned 503 only after {:?}, when the request in flight had ended",
        stop.elapsed()
    );
    eventually(
        "the proxy to stop accepting",
        Duration::from_secs(5),
        || async {
            std::net::TcpStream::connect(gate.proxy)
                .is_err()
                .then_some(())
        },
    )
    .await;

    // The request in flight still completes, and the gate exits 0.
    let (status, _, body) = in_flight.await.unwrap();
    assert_eq!(status, 200, "{body}");
    let exit = tokio::task::spawn_blocking(move || gate.wait_exit())
        .await
        .unwrap();
    assert!(exit.success(), "{exit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_a_good_config_and_refuses_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let good = "[roles]\nexecution_runner = [\"executions:read\", \"executions:write\"]\n";
    let gate = GateProcess::start(dir.path(), good);
    let secret = token(&gate, &["--project", "proj_a=execution_runner"]);
    let path = "/api/v1/workspaces/ws_1/projects/proj_a/executions/run";
    let check = |secret: String, method: &'static str| {
        let auth = gate.auth;
        async move {
            common::nginx_check_at(auth, &secret, method, path)
                .await
                .status
        }
    };
    assert_eq!(check(secret.clone(), "POST").await, StatusCode::OK);

    // A bad config: refused with a log line naming the fault; the old one serves.
    let config = std::fs::read_to_string(&gate.config).unwrap();
    std::fs::write(
        &gate.config,
        config.replace("executions:write", "executions:launch"),
    )
    .unwrap();
    signal(&gate, "-HUP");
    eventually(
        "the refusal to be logged",
        Duration::from_secs(5),
        || async { gate.log_text().contains("reload refused").then_some(()) },
    )
    .await;
    let log = gate.log_text();
    assert!(
        log.contains("roles: role `execution_runner`: unknown action `launch`"),
        "{log}"
    );
    assert_eq!(check(secret.clone(), "POST").await, StatusCode::OK);

    // A good new config: the role loses write, at once, without a restart.
    std::fs::write(&gate.config, config.replace(", \"executions:write\"", "")).unwrap();
    signal(&gate, "-HUP");
    eventually("the new roles to apply", Duration::from_secs(5), || async {
        (check(secret.clone(), "POST").await == StatusCode::FORBIDDEN).then_some(())
    })
    .await;
    assert_eq!(check(secret.clone(), "GET").await, StatusCode::OK);
    // The swap comes first, then its log line (written a moment later).
    eventually(
        "the reload to be logged",
        Duration::from_secs(5),
        || async { gate.log_text().contains("config reloaded").then_some(()) },
    )
    .await;
}

/// A SIGHUP that finds the file empty or half written (rewritten in place
/// while the signal came: `cat > gate.toml`, a reloader that fires on the
/// truncate) lacks sections the running config's file had. Before, it
/// parsed, and default roles, rules and no `[tokens]` governance went into
/// force: a custom role gone, tokens made meanwhile free of
/// `max_lifetime` for good. Now such a reload is refused whole; an edit
/// that keeps every section (here one that also changes `[store]`, which
/// waits for a restart) applies as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_of_a_file_that_lost_sections_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let good = "[roles]\nexecution_runner = [\"executions:read\", \"executions:write\"]\n[tokens]\nmax_lifetime = \"30d\"\n";
    let gate = GateProcess::start(dir.path(), good);
    let secret = token(&gate, &["--project", "proj_a=execution_runner"]);
    let path = "/api/v1/workspaces/ws_1/projects/proj_a/executions/run";
    let check = |secret: String| {
        let auth = gate.auth;
        async move {
            common::nginx_check_at(auth, &secret, "POST", path)
                .await
                .status
        }
    };
    assert_eq!(check(secret.clone()).await, StatusCode::OK);
    let config = std::fs::read_to_string(&gate.config).unwrap();
    for (i, written) in ["", "[roles]\nexecution_runner = [\"executions:read\"]\n"]
        .into_iter()
        .enumerate()
    {
        std::fs::write(&gate.config, written).unwrap();
        signal(&gate, "-HUP");
        eventually(
            "the refusal to be logged",
            Duration::from_secs(5),
            || async { (gate.log_text().matches("reload refused").count() > i).then_some(()) },
        )
        .await;
        let log = gate.log_text();
        assert!(log.contains("tokens"), "names what it lacks: {log}");
        assert!(!log.contains("config reloaded"), "{log}");
        assert_eq!(check(secret.clone()).await, StatusCode::OK, "{written:?}");
        // Governance stands: no never-expiring token. (The file put back
        // first, unsignalled: the CLI finds the gate through it.)
        std::fs::write(&gate.config, &config).unwrap();
        let never = gate.cli(&[
            "token",
            "create",
            "--name",
            "n",
            "--workspace",
            "ws_1",
            "--role",
            "workspace_member",
            "--expires",
            "never",
        ]);
        assert_ne!(never.code, 0, "{never:?}");
        assert!(never.stderr.contains("max_lifetime"), "{never:?}");
    }
    // Every section kept, one more added: applied (the role loses write),
    // the store's change logged as waiting for a restart.
    let edited = config.replace(", \"executions:write\"", "") + "\n[store]\ntimeout = \"300ms\"\n";
    std::fs::write(&gate.config, edited).unwrap();
    signal(&gate, "-HUP");
    eventually("the new roles to apply", Duration::from_secs(5), || async {
        (check(secret.clone()).await == StatusCode::FORBIDDEN).then_some(())
    })
    .await;
    eventually(
        "the reload to be logged",
        Duration::from_secs(5),
        || async {
            let log = gate.log_text();
            (log.contains("config reloaded") && log.contains("store")).then_some(())
        },
    )
    .await;
}

fn tls_config_toml(certs: &TestCerts, client_ca: bool) -> String {
    let mut out = String::new();
    for listener in ["proxy", "auth", "grpc", "admin", "ops"] {
        out.push_str(&format!(
            "[tls.{listener}]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            certs.cert.display(),
            certs.key.display()
        ));
        if client_ca && listener == "admin" {
            out.push_str(&format!("client_ca_file = \"{}\"\n", certs.ca.display()));
        }
    }
    out
}

/// A TLS connection to `port` (HTTP/1.1, trusting the test CA).
async fn open_tls(
    certs: &TestCerts,
    port: u16,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(certs.client_config(&[b"http/1.1"])));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await.unwrap()
}

/// One `/auth/nginx` request on an open HTTP/1.1 connection; its status.
async fn ask_nginx(
    conn: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    secret: &str,
) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request = format!(
        "GET /auth/nginx HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {secret}\r\n\
         X-Original-Method: GET\r\nX-Original-URI: {WS1_PROJECTS}\r\n\r\n"
    );
    conn.write_all(request.as_bytes()).await.unwrap();
    // The answers carry no body: read up to the end of the head.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        conn.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head);
    text.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// An ext_authz client for `port` over TLS, trusting the test CA: tonic
/// over a rustls stream that offered only `h2`.
async fn grpc_over_tls(certs: &TestCerts, port: u16) -> AuthorizationClient<Channel> {
    let config = Arc::new(certs.client_config(&[b"h2"]));
    let connector = tower::service_fn(move |_: http::Uri| {
        let connector = tokio_rustls::TlsConnector::from(config.clone());
        async move {
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
            let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
            let tls = connector.connect(name, tcp).await?;
            assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
        }
    });
    let channel = tonic::transport::Endpoint::from_shared(format!("http://localhost:{port}"))
        .unwrap()
        .timeout(Duration::from_secs(5))
        .connect_with_connector(connector)
        .await
        .unwrap();
    AuthorizationClient::new(channel)
}

/// An ext_authz check of `GET` on the ws_1 projects route.
fn check_request(authorization: &str) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(AttrRequest {
                http: Some(HttpRequest {
                    method: "GET".into(),
                    path: WS1_PROJECTS.into(),
                    headers: [("authorization".to_owned(), authorization.to_owned())].into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

/// The certificate a fresh TLS connection to `port` is shown (DER).
async fn presented_cert(certs: &TestCerts, port: u16) -> Vec<u8> {
    let config = Arc::new(certs.client_config(&[]));
    let connector = tokio_rustls::TlsConnector::from(config);
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_on_every_listener_with_mtls_admin_and_certificates_reloaded_live() {
    let certs = TestCerts::new();
    let upstream = TestUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gate = GateProcess::start(
        dir.path(),
        &format!(
            "[upstream]\nurl = \"{}\"\n{}",
            upstream.url(),
            tls_config_toml(&certs, true)
        ),
    );

    // The CLI reaches the mTLS admin listener with the CA and a client certificate…
    let url = format!("https://localhost:{}", gate.admin.port());
    let ca = certs.ca.display().to_string();
    let (cert, key) = (
        certs.cert.display().to_string(),
        certs.key.display().to_string(),
    );
    let with_cert = [
        "--admin-url",
        &url,
        "--admin-ca",
        &ca,
        "--admin-cert",
        &cert,
        "--admin-cert-key",
        &key,
    ];
    let mut args = vec![
        "token",
        "create",
        "--name",
        "TLS",
        "--workspace",
        "ws_1",
        "--role",
        "workspace_viewer",
        "--expires",
        "1w",
        "--json",
    ];
    args.extend_from_slice(&with_cert);
    let run = gate.cli(&args);
    assert_eq!(run.code, 0, "{run:?}");
    let secret = run.json()["secret"].as_str().unwrap().to_owned();
    // …and is refused without one.
    // (exit 3: no HTTP answer, the handshake is refused).
    let run = gate.cli(&["token", "list", "--admin-url", &url, "--admin-ca", &ca]);
    assert_eq!(run.code, 3, "{run:?}");

    // The doors and ops answer over TLS (HTTP/2 by ALPN).
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(certs.client_config(&[]))
        .https_only()
        .enable_all_versions()
        .build();
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(https);
    let get = |port: u16, path: &str, headers: Vec<(&str, String)>| {
        let mut req = Request::builder().uri(format!("https://localhost:{port}{path}"));
        for (k, v) in headers {
            req = req.header(k, v);
        }
        client.request(req.body(Full::new(Bytes::new())).unwrap())
    };
    let res = get(gate.ops.port(), "/readyz", vec![]).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let auth_headers = vec![
        ("authorization", format!("Bearer {secret}")),
        ("x-original-method", "GET".to_owned()),
        ("x-original-uri", WS1_PROJECTS.to_owned()),
    ];
    let res = get(gate.auth.port(), "/auth/nginx", auth_headers.clone())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.version(), http::Version::HTTP_2);
    // The proxy door: allowed, and passed on to the (plain) upstream.
    let res = get(
        gate.proxy.port(),
        WS1_PROJECTS,
        vec![("authorization", format!("Bearer {secret}"))],
    )
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.version(), http::Version::HTTP_2);
    assert_eq!(upstream.count(), 1);
    // The gRPC door: Envoy's ext_authz over TLS (a tonic client, h2 by ALPN).
    let mut grpc = grpc_over_tls(&certs, gate.grpc.port()).await;
    let allowed = grpc
        .check(check_request(&format!("Bearer {secret}")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(allowed.status.unwrap().code, 0, "OK");
    let denied = grpc
        .check(check_request("Bearer hwz_not_a_token"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(denied.status.unwrap().code, 16, "UNAUTHENTICATED");
    // A plain-text gRPC client gets nothing from the TLS listener.
    let plain = tonic::transport::Endpoint::from_shared(format!("http://{}", gate.grpc))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
        .connect()
        .await;
    if let Ok(channel) = plain {
        let refused = AuthorizationClient::new(channel)
            .check(check_request(&format!("Bearer {secret}")))
            .await;
        assert!(refused.is_err(), "plain gRPC answered: {refused:?}");
    }

    // An open connection, made before the certificate changes…
    let before = presented_cert(&certs, gate.auth.port()).await;
    let mut open = open_tls(&certs, gate.auth.port()).await;
    assert_eq!(ask_nginx(&mut open, &secret).await, 200);

    // …then new files at the same paths: a new key and certificate, same CA.
    let renewed = certs.renew();
    std::fs::copy(&renewed.cert, &certs.cert).unwrap();
    std::fs::copy(&renewed.key, &certs.key).unwrap();
    let after = eventually(
        "the new certificate to be served",
        Duration::from_secs(10),
        || async {
            let now = presented_cert(&certs, gate.auth.port()).await;
            (now != before).then_some(now)
        },
    )
    .await;
    assert_ne!(after, before);
    // The swap comes first, then its log line (written a moment later).
    eventually(
        "the certificate reload to be logged",
        Duration::from_secs(5),
        || async {
            gate.log_text()
                .contains("certificate files changed; reloaded")
                .then_some(())
        },
    )
    .await;
    // The connection opened before still serves, on its old session.
    assert_eq!(ask_nginx(&mut open, &secret).await, 200);
}

/// Client certificates turned on by a SIGHUP stay on when the certificate
/// files change next (the watcher reads the settings as reloaded, not as
/// started); a reload cannot turn them off while running; and a listener a
/// reload gives TLS says it needs a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_turned_on_by_a_reload_stay_on() {
    let certs = TestCerts::new();
    let dir = tempfile::tempdir().unwrap();
    let admin_tls = |ca: bool| {
        let mut t = format!(
            "[tls.admin]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            certs.cert.display(),
            certs.key.display()
        );
        if ca {
            t.push_str(&format!("client_ca_file = \"{}\"\n", certs.ca.display()));
        }
        t
    };
    let gate = GateProcess::start(dir.path(), &admin_tls(false));
    let url = format!("https://localhost:{}", gate.admin.port());
    let ca = certs.ca.display().to_string();
    // Exit 3 when the handshake is refused for want of a client certificate.
    let without_cert = || {
        gate.cli(&["token", "list", "--admin-url", &url, "--admin-ca", &ca])
            .code
    };
    assert_eq!(without_cert(), 0);
    let rewrite = |from: &str, to: &str| {
        let config = std::fs::read_to_string(&gate.config).unwrap();
        assert!(config.contains(from), "{config}");
        std::fs::write(&gate.config, config.replace(from, to)).unwrap();
        signal(&gate, "-HUP");
    };

    rewrite(&admin_tls(false), &admin_tls(true));
    eventually(
        "client certificates required",
        Duration::from_secs(10),
        || async { (without_cert() == 3).then_some(()) },
    )
    .await;

    // The certificate renewed in place: re-read, with the client CA.
    let renewed = certs.renew();
    std::fs::copy(&renewed.cert, &certs.cert).unwrap();
    std::fs::copy(&renewed.key, &certs.key).unwrap();
    eventually(
        "the certificate reload to be logged",
        Duration::from_secs(10),
        || async {
            gate.log_text()
                .contains("certificate files changed; reloaded")
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        without_cert(),
        3,
        "the renewal turned client certificates off"
    );

    // Off again by SIGHUP: refused, they stay required.
    rewrite(&admin_tls(true), &admin_tls(false));
    eventually(
        "the refusal to be logged",
        Duration::from_secs(5),
        || async {
            gate.log_text()
                .contains("client certificates cannot be turned off while running")
                .then_some(())
        },
    )
    .await;
    assert_eq!(without_cert(), 3);

    // TLS for a plain listener: it needs a restart, and the reload says so.
    let ops_tls = admin_tls(false).replace("[tls.admin]", "[tls.ops]");
    rewrite(&admin_tls(false), &format!("{}{ops_tls}", admin_tls(true)));
    eventually("the restart notice", Duration::from_secs(5), || async {
        let log = gate.log_text();
        (log.contains("take effect only after a restart") && log.contains("tls.ops")).then_some(())
    })
    .await;
}

/// A second gate started on the ports of a running one (other ports free)
/// must not start: with `SO_REUSEPORT` alone it would join the first gate's
/// socket group and answer half its traffic with its own settings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_gate_on_the_same_ports_refuses_to_start() {
    let upstream = TestUpstream::start().await;
    let first_dir = tempfile::tempdir().unwrap();
    let first = GateProcess::start(
        first_dir.path(),
        &format!("[upstream]\nurl = \"{}\"\n", upstream.url()),
    );
    let secret = token(&first, &["--role", "workspace_viewer"]);

    for shared in ["proxy", "auth"] {
        let dir = tempfile::tempdir().unwrap();
        let free = || std::net::SocketAddr::from(([127, 0, 0, 1], common::free_port()));
        let (proxy, auth) = match shared {
            "proxy" => (first.proxy, free()),
            _ => (free(), first.auth),
        };
        let config = dir.path().join("second.toml");
        std::fs::write(
            &config,
            format!(
                "data_dir = \"{}\"\n[upstream]\nurl = \"{}\"\n[listen]\nproxy = \"{proxy}\"\nauth = \"{auth}\"\ngrpc = \"{}\"\nadmin = \"{}\"\nops = \"{}\"\n",
                dir.path().join("data").display(),
                upstream.url(),
                free(),
                free(),
                free(),
            ),
        )
        .unwrap();
        let log = dir.path().join("second.log");
        let mut child = Command::new(common::BIN)
            .args(["serve", "--config"])
            .arg(&config)
            .env_remove("RUST_LOG")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("a second gate sharing listen.{shared} kept running");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let stderr = std::fs::read_to_string(&log).unwrap();
        assert!(!status.success(), "{stderr}");
        assert!(
            stderr.contains(&format!("listen.{shared}")) && stderr.contains("in use"),
            "the error names the listener and the cause: {stderr}"
        );
    }

    // The first gate kept all of its traffic.
    let url = format!("http://{}{WS1_PROJECTS}", first.proxy);
    let auth = format!("Authorization: Bearer {secret}");
    for _ in 0..10 {
        let (status, _, body) = curl(&["-H", &auth, &url]);
        assert_eq!(status, 200, "{body}");
    }
}
