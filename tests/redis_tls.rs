//! The Redis store over TLS (`rediss://`, standalone): a redis-server with
//! only a TLS port, its certificate from a private CA given as
//! `store.redis.ca_file`. Reads, writes and the invalidation subscription
//! all go over TLS; a gate that does not trust the CA gets nothing from it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::time::Duration;

use http::StatusCode;

use common::{
    InProcessGate, TestCerts, create_token, eventually, free_port, nginx_auth, unique_prefix,
    wait_until, workspace_token,
};

/// redis-server listening on TLS only.
struct TlsRedis {
    child: Option<Child>,
    port: u16,
    _certs: TestCerts,
    ca: std::path::PathBuf,
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        if let Some(c) = self.child.take() {
            common::stop_child(c, None, Duration::ZERO);
        }
    }
}

impl TlsRedis {
    fn start() -> Self {
        let certs = TestCerts::new();
        let server = certs.issue(&["localhost", "127.0.0.1"]);
        let port = free_port();
        let child = common::tool("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--tls-cert-file")
            .arg(&server.cert)
            .arg("--tls-key-file")
            .arg(&server.key)
            .arg("--tls-ca-cert-file")
            .arg(&certs.ca)
            .args(["--tls-auth-clients", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Owned before the wait, so a server that never listens is stopped too.
        let ca = certs.ca.clone();
        let redis = Self {
            child: Some(child),
            port,
            _certs: certs,
            ca,
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        wait_until(
            "redis-server (TLS) to listen",
            Duration::from_secs(10),
            || std::net::TcpStream::connect(addr).is_ok(),
        );
        // The key files must outlive the server's start-up only.
        drop(server);
        redis
    }
}

async fn gate(redis: &TlsRedis, prefix: &str, ca: Option<&str>) -> InProcessGate {
    let url = format!("rediss://127.0.0.1:{}", redis.port);
    let mut settings = vec![
        ("store.backend", "redis"),
        ("store.redis.url", url.as_str()),
        ("store.redis.key_prefix", prefix),
    ];
    if let Some(ca) = ca {
        settings.push(("store.redis.ca_file", ca));
    }
    InProcessGate::start(&settings).await
}

#[tokio::test]
async fn the_store_and_its_invalidations_work_over_tls() {
    let redis = TlsRedis::start();
    let prefix = unique_prefix("redis-tls");
    let ca = redis.ca.display().to_string();
    let a = gate(&redis, &prefix, Some(&ca)).await;
    let b = gate(&redis, &prefix, Some(&ca)).await;
    for g in [&a, &b] {
        eventually("ready over TLS", Duration::from_secs(10), || async {
            (g.ops().get("/readyz").await.status == StatusCode::OK).then_some(())
        })
        .await;
    }
    let (id, secret) =
        create_token(&a, workspace_token("CI", "ws_1", "workspace_viewer", "1m")).await;
    // B reads the record A wrote, and caches it.
    assert_eq!(nginx_auth(&b, &secret).await.status, StatusCode::OK);
    // A disables it; the event reaches B over its TLS subscription.
    let d = a
        .admin()
        .post_empty(&format!("/admin/v1/tokens/{id}/disable"))
        .await;
    assert_eq!(d.status, StatusCode::OK);
    eventually(
        "B to refuse the disabled token",
        Duration::from_secs(2),
        || async {
            let r = nginx_auth(&b, &secret).await;
            (r.header("x-hawzu-error") == Some("token_disabled")).then_some(())
        },
    )
    .await;

    // A gate that does not trust the CA (system roots only) gets nothing:
    // never ready, and an uncached token is refused, fail closed.
    let blind = gate(&redis, &prefix, None).await;
    let r = blind.ops().get("/readyz").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    let r = nginx_auth(&blind, &secret).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.header("x-hawzu-error"), Some("store_unavailable"));
}
