//! Envoy (gRPC and HTTP ext_authz), Traefik (forwardAuth) and Caddy running the
//! files `deploy/` ships, with only their addresses rewritten, in front of
//! a test API that echoes what it received: curl → proxy → gate → API.
//! Each shows what a user relies on: an allowed request reaches the API
//! with the gate's identity and none of the client's `X-Hawzu-*` (not even
//! one the gate did not set on that route), the token or an override; the
//! gate's refusals (status, code, challenge) reach the client; a confusing
//! path is never forwarded as something other than what was judged; a
//! revoked token is refused; and with the gate down the proxy refuses.
//! Caddy (both shipped files) runs the same scenario; tests/caddy_e2e.rs
//! adds its upgrade refusals, tests/nginx_e2e.rs covers nginx.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::path::Path;
use std::process::Command;

use common::{
    Forged, InProcessGate, Misspelled, Overrides, ShippedProxy, TestUpstream, free_port,
    proxy_judged_by_the_gate,
};

/// Envoy with `deploy/envoy/<file>`: its listener, admin port, API and
/// gate addresses replaced.
fn envoy(file: &str, gate: (&str, u16), upstream: u16) -> ShippedProxy {
    envoy_with(file, gate, upstream, &[])
}

/// [`envoy`] with more of the file replaced (`needle`, `with`).
fn envoy_with(
    file: &str,
    gate: (&str, u16),
    upstream: u16,
    more: &[(&str, String)],
) -> ShippedProxy {
    let port = free_port();
    let mut replace = vec![
        ("port_value: 9901", format!("port_value: {}", free_port())),
        ("address: 0.0.0.0", "address: 127.0.0.1".to_owned()),
        ("port_value: 10000", format!("port_value: {port}")),
        ("port_value: 3000", format!("port_value: {upstream}")),
        (gate.0, format!("port_value: {}", gate.1)),
    ];
    replace.extend(more.iter().cloned());
    ShippedProxy::start(
        "envoy",
        &format!("envoy/{file}"),
        &replace,
        "envoy.yaml",
        port,
        |conf: &Path, _dir: &Path| {
            let mut c = common::tool("envoy");
            c.arg("-c")
                .arg(conf)
                // Several Envoys side by side: no shared memory between them.
                .args([
                    "--disable-hot-restart",
                    "--concurrency",
                    "1",
                    "-l",
                    "warning",
                ]);
            c
        },
    )
}

const TRAEFIK_HOST: &str = "api.hawzu.example";

/// Traefik with `deploy/traefik/dynamic.yml` (file provider), the gate's
/// and the API's addresses replaced; the entry point on a free port.
fn traefik(gate_auth: u16, upstream: u16) -> ShippedProxy {
    let port = free_port();
    ShippedProxy::start(
        "traefik",
        "traefik/dynamic.yml",
        &[
            (
                "http://127.0.0.1:8081/auth/traefik\"",
                format!("http://127.0.0.1:{gate_auth}/auth/traefik\""),
            ),
            (
                "url: \"http://127.0.0.1:3000\"",
                format!("url: \"http://127.0.0.1:{upstream}\""),
            ),
        ],
        "dynamic.yml",
        port,
        move |conf: &Path, _dir: &Path| {
            let mut c = common::tool("traefik");
            c.arg(format!("--entryPoints.web.address=127.0.0.1:{port}"))
                .arg(format!("--providers.file.filename={}", conf.display()))
                .args([
                    "--global.checkNewVersion=false",
                    "--global.sendAnonymousUsage=false",
                    "--log.level=ERROR",
                ]);
            c
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_grpc_ext_authz_as_shipped_is_judged_by_the_gate() {
    let upstream = TestUpstream::start().await;
    let gate = InProcessGate::embedded().await;
    let proxy = envoy(
        "envoy.yaml",
        ("port_value: 9001", gate.addrs.grpc.port()),
        upstream.addr.port(),
    );
    // status_on_error: ServiceUnavailable.
    proxy_judged_by_the_gate(
        gate,
        &upstream,
        &proxy,
        None,
        Forged {
            underscores: Misspelled::Refused,
            separators: Misspelled::Dropped,
            overrides: Overrides::Removed,
        },
        503,
    )
    .await;
}

/// Envoy told to send the headers as a list (`encode_raw_headers: true`:
/// `header_map`, not `headers`) is judged the same: the token read, a
/// client's `X-Hawzu-*` removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_grpc_ext_authz_with_raw_headers_is_judged_by_the_gate() {
    let upstream = TestUpstream::start().await;
    let gate = InProcessGate::embedded().await;
    let proxy = envoy_with(
        "envoy.yaml",
        ("port_value: 9001", gate.addrs.grpc.port()),
        upstream.addr.port(),
        &[(
            "transport_api_version: V3\n",
            "transport_api_version: V3\n                      encode_raw_headers: true\n"
                .to_owned(),
        )],
    );
    proxy_judged_by_the_gate(
        gate,
        &upstream,
        &proxy,
        None,
        Forged {
            underscores: Misspelled::Refused,
            separators: Misspelled::Dropped,
            overrides: Overrides::Removed,
        },
        503,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_http_ext_authz_as_shipped_is_judged_by_the_gate() {
    let upstream = TestUpstream::start().await;
    let gate = InProcessGate::embedded().await;
    let proxy = envoy(
        "envoy-http.yaml",
        ("port_value: 8081", gate.addrs.auth.port()),
        upstream.addr.port(),
    );
    proxy_judged_by_the_gate(
        gate,
        &upstream,
        &proxy,
        None,
        Forged {
            underscores: Misspelled::Refused,
            separators: Misspelled::Dropped,
            overrides: Overrides::Removed,
        },
        503,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traefik_forward_auth_as_shipped_is_judged_by_the_gate() {
    let upstream = TestUpstream::start().await;
    let gate = InProcessGate::embedded().await;
    let proxy = traefik(gate.addrs.auth.port(), upstream.addr.port());
    // Traefik answers 500 when its forwardAuth server cannot be reached.
    proxy_judged_by_the_gate(
        gate,
        &upstream,
        &proxy,
        Some(TRAEFIK_HOST),
        Forged {
            underscores: Misspelled::Refused,
            separators: Misspelled::Refused,
            overrides: Overrides::Refused,
        },
        500,
    )
    .await;
}

/// The proxy's own command (not a test of the gate): the shipped files
/// are valid for the program that reads them.
#[test]
fn envoy_validates_both_shipped_files() {
    for file in ["envoy.yaml", "envoy-http.yaml"] {
        let out = Command::new("envoy")
            .args(["--mode", "validate", "-c"])
            .arg(common::deploy(&format!("envoy/{file}")))
            .args(["--disable-hot-restart", "-l", "error"])
            .output()
            .unwrap_or_else(|_| panic!("{}", common::missing_line("envoy")));
        assert!(
            out.status.success(),
            "{file}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_forward_auth_as_shipped_is_judged_by_the_gate() {
    let upstream = TestUpstream::start().await;
    let gate = InProcessGate::embedded().await;
    let proxy = common::caddy(
        "Caddyfile",
        &[
            ("127.0.0.1:8081", gate.addrs.auth),
            ("127.0.0.1:3000", upstream.addr),
        ],
    );
    // Caddy answers 502 when forward_auth cannot reach the gate.
    proxy_judged_by_the_gate(
        gate,
        &upstream,
        &proxy,
        None,
        Forged {
            underscores: Misspelled::Dropped,
            separators: Misspelled::Refused,
            overrides: Overrides::Refused,
        },
        502,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_in_front_of_the_gates_proxy_as_shipped_is_judged_by_the_gate() {
    let upstream = TestUpstream::start().await;
    let gate =
        InProcessGate::start(&[("upstream.url", &format!("http://{}", upstream.addr))]).await;
    let proxy = common::caddy("Caddyfile.sidecar", &[("127.0.0.1:8080", gate.addrs.proxy)]);
    proxy_judged_by_the_gate(
        gate,
        &upstream,
        &proxy,
        None,
        Forged {
            underscores: Misspelled::Dropped,
            separators: Misspelled::Dropped,
            overrides: Overrides::Removed,
        },
        502,
    )
    .await;
}
