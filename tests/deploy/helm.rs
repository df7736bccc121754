//! The chart's `helm test` hook (templates/tests/test-gate.yaml). No
//! cluster here: the hook Pod is checked as
//! rendered, then its own script (curl, as the Pod runs it) asks a gate
//! started from the chart's rendered ConfigMap and container environment,
//! reached through the rendered Service's port mapping — once while that
//! gate is not ready yet, which the hook must wait out.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use yaml_rust2::Yaml;

use super::{BIN, certs, documents, kubernetes_validate, run_lint_chart, tools};

const LISTENERS: [&str; 5] = ["proxy", "auth", "grpc", "ops", "admin"];

fn find<'a>(docs: &'a [Yaml], kind: &str) -> &'a Yaml {
    docs.iter()
        .find(|d| d["kind"].as_str() == Some(kind))
        .unwrap_or_else(|| panic!("no {kind} rendered"))
}

/// The `helm test` Pod among the rendered documents, if any.
fn hook_pod(docs: &[Yaml]) -> Option<&Yaml> {
    docs.iter().find(|d| {
        d["kind"].as_str() == Some("Pod")
            && d["metadata"]["annotations"]["helm.sh/hook"].as_str() == Some("test")
    })
}

/// The rendered hook: a test hook Pod that is deleted before the next run
/// and once it passed, runs non-root on a read-only root filesystem with
/// resources set, and that the gate's Service never selects.
pub fn check_test_hook(what: &str, docs: &[Yaml]) {
    let pod = hook_pod(docs).unwrap_or_else(|| panic!("{what}: no Pod with helm.sh/hook: test"));
    let policy = pod["metadata"]["annotations"]["helm.sh/hook-delete-policy"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: the test Pod has no hook-delete-policy"));
    assert!(
        policy.contains("before-hook-creation") && policy.contains("hook-succeeded"),
        "{what}: {policy}"
    );
    let spec = &pod["spec"];
    assert_eq!(spec["restartPolicy"].as_str(), Some("Never"), "{what}");
    assert_eq!(
        spec["automountServiceAccountToken"].as_bool(),
        Some(false),
        "{what}"
    );
    let containers = spec["containers"].as_vec().unwrap();
    assert_eq!(containers.len(), 1, "{what}");
    let c = &containers[0];
    assert_eq!(
        c["image"].as_str(),
        Some("curlimages/curl:8.11.1"),
        "{what}"
    );
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true), "{what}");
    assert_eq!(
        sc["allowPrivilegeEscalation"].as_bool(),
        Some(false),
        "{what}"
    );
    assert_eq!(
        sc["capabilities"]["drop"][0].as_str(),
        Some("ALL"),
        "{what}"
    );
    let non_root = sc["runAsNonRoot"].as_bool() == Some(true)
        || spec["securityContext"]["runAsNonRoot"].as_bool() == Some(true);
    assert!(non_root, "{what}: the test Pod may run as root");
    for k in ["requests", "limits"] {
        for r in ["cpu", "memory"] {
            assert!(
                c["resources"][k][r].as_str().is_some(),
                "{what}: test Pod resources.{k}.{r}"
            );
        }
    }
    let selector = find(docs, "Service")["spec"]["selector"].as_hash().unwrap();
    let labels = pod["metadata"]["labels"].as_hash().unwrap();
    assert!(
        !selector.iter().all(|(k, v)| labels.get(k) == Some(v)),
        "{what}: the Service would send clients to the test Pod"
    );
}

/// Renders `values` (YAML text) into `dir`; the documents, or the lint
/// output when the chart refused.
fn render(values: &str, dir: &Path, name: &str) -> Result<Vec<Yaml>, String> {
    let file = dir.join(format!("{name}-values.yaml"));
    std::fs::write(&file, values).unwrap();
    let (out, rendered) = run_lint_chart(Some(&file), name, dir);
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    kubernetes_validate(&rendered);
    Ok(documents(&rendered))
}

fn env_of(container: &Yaml) -> BTreeMap<String, String> {
    container["env"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?.to_owned(),
                e["value"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

/// The gate binary, stopped on drop.
struct Gate(Child, std::path::PathBuf);

impl Drop for Gate {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], super::ports::free_port()))
}

/// The gate as the rendered chart configures it: the ConfigMap's
/// hawzu-gate.toml (TLS files at `tls`), the gate container's environment
/// with every listener moved to a free loopback port; not started yet.
struct Planned {
    cmd: Command,
    log: std::path::PathBuf,
    ops: SocketAddr,
    /// The chart's listener port -> the loopback address serving it.
    ports: BTreeMap<i64, SocketAddr>,
}

fn plan_gate(docs: &[Yaml], dir: &Path, tls: &certs::TestCerts) -> Planned {
    let toml = find(docs, "ConfigMap")["data"]["hawzu-gate.toml"]
        .as_str()
        .unwrap()
        .replace(
            "/etc/hawzu-gate/tls/tls.crt",
            &tls.cert.display().to_string(),
        )
        .replace(
            "/etc/hawzu-gate/tls/tls.key",
            &tls.key.display().to_string(),
        );
    let config = dir.join("hawzu-gate.toml");
    std::fs::write(&config, toml).unwrap();
    let pod = &find(docs, "Deployment")["spec"]["template"]["spec"];
    let gate = pod["containers"]
        .as_vec()
        .unwrap()
        .iter()
        .find(|c| c["name"].as_str() == Some("hawzu-gate"))
        .unwrap();
    let mut env = env_of(gate);
    // valueFrom.secretKeyRef, from the chart's own Secret, as the kubelet would.
    for e in gate["env"].as_vec().unwrap() {
        let r = &e["valueFrom"]["secretKeyRef"];
        if r.is_badvalue() {
            continue;
        }
        let secret = docs
            .iter()
            .find(|d| d["kind"].as_str() == Some("Secret") && d["metadata"]["name"] == r["name"])
            .unwrap_or_else(|| panic!("no Secret {:?} rendered", r["name"]));
        let value = secret["data"][r["key"].as_str().unwrap()].as_str().unwrap();
        env.insert(e["name"].as_str().unwrap().to_owned(), base64(value));
    }
    env.insert("HAWZU_GATE_CONFIG".into(), config.display().to_string());
    env.insert(
        "HAWZU_GATE__DATA_DIR".into(),
        dir.join("data").display().to_string(),
    );
    let mut ports = BTreeMap::new();
    let mut ops = None;
    for l in LISTENERS {
        let name = format!("HAWZU_GATE__LISTEN__{}", l.to_ascii_uppercase());
        let chart: SocketAddr = env[&name].parse().unwrap();
        let local = free_addr();
        ports.insert(i64::from(chart.port()), local);
        env.insert(name, local.to_string());
        if l == "ops" {
            ops = Some(local);
        }
    }
    let log = dir.join("gate.log");
    let mut cmd = Command::new(BIN);
    cmd.args(
        gate["args"]
            .as_vec()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap()),
    )
    .env_clear()
    .envs(&env)
    .current_dir(dir)
    .stdout(std::fs::File::create(dir.join("gate.out")).unwrap())
    .stderr(std::fs::File::create(&log).unwrap());
    Planned {
        cmd,
        log,
        ops: ops.unwrap(),
        ports,
    }
}

/// Starts the planned gate; returns once it listens on ops.
fn start(mut planned: Planned) -> Gate {
    let mut gate = Gate(planned.cmd.spawn().unwrap(), planned.log);
    let ops = planned.ops;
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(ops).is_err() {
        if let Some(status) = gate.0.try_wait().unwrap() {
            panic!(
                "the gate exited with {status}: {}",
                std::fs::read_to_string(&gate.1).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "the gate never listened on ops");
        std::thread::sleep(Duration::from_millis(50));
    }
    gate
}

/// Answers the first request on `addr` with 503, as a gate that is not
/// ready yet; returns once the client has closed (so the port is free).
fn not_ready_once(addr: SocketAddr) -> std::thread::JoinHandle<()> {
    use std::io::{Read, Write};
    let listener = TcpListener::bind(addr).unwrap();
    std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = [0_u8; 4096];
        let mut seen = Vec::new();
        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = conn.read(&mut buf).unwrap();
            assert!(n > 0, "the hook closed before asking");
            seen.extend_from_slice(&buf[..n]);
        }
        conn.write_all(
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        )
        .unwrap();
        // The client closes first: its side keeps the TIME_WAIT.
        while conn.read(&mut buf).is_ok_and(|n| n > 0) {}
    })
}

/// A Secret's `data` value (standard base64, padded).
fn base64(text: &str) -> String {
    let (mut bits, mut n, mut out) = (0_u32, 0, Vec::new());
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => continue,
        };
        bits = (bits << 6) | u32::from(v);
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// The hook's URLs, with `<service host>:<service port>` replaced by the
/// loopback address of the listener the Service sends that port to
/// (Service port -> targetPort name -> container port -> listener).
fn rewrite_urls(
    docs: &[Yaml],
    env: &mut BTreeMap<String, String>,
    ports: &BTreeMap<i64, SocketAddr>,
) {
    let deployment = &find(docs, "Deployment")["spec"]["template"]["spec"];
    let container_ports: Vec<&Yaml> = deployment["containers"]
        .as_vec()
        .unwrap()
        .iter()
        .filter(|c| c["name"].as_str() == Some("hawzu-gate"))
        .flat_map(|c| c["ports"].as_vec().unwrap())
        .collect();
    // Every Service (in sidecar mode the ops port has one of its own).
    for service in docs
        .iter()
        .filter(|d| d["kind"].as_str() == Some("Service"))
    {
        let host = format!(
            "{}.{}.svc",
            service["metadata"]["name"].as_str().unwrap(),
            service["metadata"]["namespace"].as_str().unwrap()
        );
        for p in service["spec"]["ports"].as_vec().unwrap() {
            let target = p["targetPort"].as_str().unwrap();
            let container = container_ports
                .iter()
                .find(|c| c["name"].as_str() == Some(target))
                .unwrap_or_else(|| panic!("Service targetPort {target} names no container port"));
            let local = ports[&container["containerPort"].as_i64().unwrap()];
            let from = format!("{host}:{}", p["port"].as_i64().unwrap());
            for v in env.values_mut() {
                // "://host:port" then "/" or the end: never a longer port.
                let Some(at) = v.find(&format!("://{from}")) else {
                    continue;
                };
                let end = at + 3 + from.len();
                if v[end..].is_empty() || v[end..].starts_with('/') {
                    v.replace_range(at + 3..end, &local.to_string());
                }
            }
        }
    }
    for k in ["HAWZU_OPS_URL", "HAWZU_DENY_URL"] {
        assert!(
            env[k].contains("://127.0.0.1:"),
            "{k}={} not served",
            env[k]
        );
    }
}

/// Runs the hook container's command and script as the Pod would, with
/// `env`; when `late` is given, its ops port first answers 503 (a gate not
/// ready yet) and the gate starts only once the hook has asked. Returns
/// (success, stdout + stderr, the late gate).
fn run_hook(
    container: &Yaml,
    env: &BTreeMap<String, String>,
    late: Option<Planned>,
) -> (bool, String, Option<Gate>) {
    let command: Vec<&str> = container["command"]
        .as_vec()
        .unwrap()
        .iter()
        .chain(container["args"].as_vec().unwrap())
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(command[..2], ["/bin/sh", "-c"]);
    tools::tool("curl");
    let not_ready = late.as_ref().map(|p| not_ready_once(p.ops));
    let child = Command::new(command[0])
        .args(&command[1..])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap())
        .envs(env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let gate = late.map(|planned| {
        not_ready.unwrap().join().unwrap();
        start(planned)
    });
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text, gate)
}

#[test]
fn the_helm_test_hook_passes_against_the_gate_the_chart_configures_and_fails_on_a_wrong_answer() {
    let certs = certs::TestCerts::new();
    let redis = std::env::var("HAWZU_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let prefix = format!(
        "hawzu-test:helm:{}:{}:",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    // A fleet on Redis, the URL and admin key in the chart's Secret.
    let fleet = format!(
        "replicaCount: 2\nadmin: {{key: helm-test-admin-key-0123456789abcdefghij}}\n\
         store: {{backend: redis, redis: {{url: \"{redis}\", keyPrefix: \"{prefix}\"}}}}\n"
    );
    for (name, values) in [
        ("standalone-redis", fleet.as_str()),
        ("standalone", ""),
        (
            "standalone-tls",
            "tls: {enabled: true, secretName: gate-tls, listeners: [auth, ops]}\n",
        ),
        ("sidecar", "mode: sidecar\n"),
        (
            "sidecar-tls",
            "mode: sidecar\ntls: {enabled: true, secretName: gate-tls, listeners: [proxy, ops]}\n",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let docs = render(values, dir.path(), name).unwrap_or_else(|e| panic!("{name}: {e}"));
        check_test_hook(name, &docs);
        let planned = plan_gate(&docs, dir.path(), &certs);
        let container = &hook_pod(&docs).unwrap()["spec"]["containers"][0];
        let mut env = env_of(container);
        assert_eq!(
            env["HAWZU_CURL_TLS"] == "--insecure",
            name.ends_with("-tls"),
            "{name}: {env:?}"
        );
        rewrite_urls(&docs, &mut env, &planned.ports);
        // Plain standalone: the hook asks before the gate is ready (503),
        // and waits for it.
        let (_gate, late) = if name == "standalone" {
            (None, Some(planned))
        } else {
            (Some(start(planned)), None)
        };
        let (ok, text, _late_gate) = run_hook(container, &env, late);
        assert!(ok, "{name}: the helm test failed:\n{text}");
        assert!(text.contains("/readyz -> 200"), "{name}: {text}");
        if name == "standalone" {
            assert!(text.contains("readyz answered 503"), "{name}: {text}");
        }
        assert!(
            text.contains("without a token -> 401 missing_token"),
            "{name}: {text}"
        );
        // Not vacuous: a door that lets the request through fails the test.
        let ops = env["HAWZU_OPS_URL"].clone();
        env.insert("HAWZU_DENY_URL".into(), format!("{ops}/readyz"));
        let (ok, text, _) = run_hook(container, &env, None);
        assert!(!ok, "{name}: a 200 passed the helm test:\n{text}");
        assert!(text.contains("want '401 missing_token'"), "{name}: {text}");
    }
}

#[test]
fn the_helm_test_hook_is_optional_and_presents_a_client_certificate_where_one_is_required() {
    let dir = tempfile::tempdir().unwrap();
    let off = render("tests: {enabled: false}\n", dir.path(), "off").unwrap();
    assert!(
        hook_pod(&off).is_none(),
        "tests.enabled=false rendered the hook"
    );
    // values.schema.json: a misspelled key, or a path that is not one.
    for bad in [
        "tests: {imagee: busybox}\n",
        "tests: {deniedPath: \"api v1\"}\n",
    ] {
        assert!(render(bad, dir.path(), "bad").is_err(), "{bad}");
    }

    // Client certificates on ops: the kubelet's probes present none, so no
    // pod would ever be ready — refused, saying why.
    let probed = "tls: {enabled: true, secretName: gate-tls, listeners: [auth, ops], \
                  clientCa: {key: ca.crt, listeners: [ops]}}\n";
    let refused = render(probed, dir.path(), "mtls-ops").unwrap_err();
    assert!(
        refused.contains("kubelet") && refused.contains("tls.clientCa.listeners"),
        "{refused}"
    );
    let mtls = "tls: {enabled: true, secretName: gate-tls, listeners: [auth, ops], \
                clientCa: {key: ca.crt, listeners: [auth]}}\n";
    let refused = render(mtls, dir.path(), "mtls").unwrap_err();
    assert!(
        refused.contains("tests.clientCertSecret") && refused.contains("auth"),
        "{refused}"
    );
    let docs = render(
        &format!("{mtls}tests: {{clientCertSecret: helm-test-client}}\n"),
        dir.path(),
        "mtls-cert",
    )
    .unwrap();
    check_test_hook("mtls", &docs);
    let pod = &hook_pod(&docs).unwrap()["spec"];
    assert_eq!(
        env_of(&pod["containers"][0])["HAWZU_CURL_TLS"],
        "--insecure --cert /etc/hawzu-gate-test/tls/tls.crt --key /etc/hawzu-gate-test/tls/tls.key"
    );
    assert_eq!(
        pod["volumes"][0]["secret"]["secretName"].as_str(),
        Some("helm-test-client")
    );
}

#[test]
fn the_leaks_listener_is_off_by_default_and_public_on_its_own_port_when_set() {
    let dir = tempfile::tempdir().unwrap();
    let gate_container = |docs: &[Yaml]| {
        find(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
            .as_vec()
            .unwrap()
            .iter()
            .find(|c| c["name"].as_str() == Some("hawzu-gate"))
            .unwrap()
            .clone()
    };
    let port_names = |y: &Yaml, key: &str| -> Vec<String> {
        y[key]
            .as_vec()
            .unwrap()
            .iter()
            .filter_map(|p| p["name"].as_str().map(str::to_owned))
            .collect()
    };
    let off = render("{}\n", dir.path(), "leaks-off").unwrap();
    let c = gate_container(&off);
    assert!(!env_of(&c).contains_key("HAWZU_GATE__LISTEN__LEAKS"));
    assert!(!port_names(&c, "ports").contains(&"leaks".to_owned()));
    assert!(!port_names(&find(&off, "Service")["spec"], "ports").contains(&"leaks".to_owned()));

    let on = render("listeners: {leaks: 8443}\n", dir.path(), "leaks-on").unwrap();
    let c = gate_container(&on);
    assert_eq!(env_of(&c)["HAWZU_GATE__LISTEN__LEAKS"], "0.0.0.0:8443");
    assert_eq!(env_of(&c)["HAWZU_GATE__LISTEN__ADMIN"], "127.0.0.1:9091");
    assert!(port_names(&c, "ports").contains(&"leaks".to_owned()));
    assert!(port_names(&find(&on, "Service")["spec"], "ports").contains(&"leaks".to_owned()));
    assert!(render("listeners: {leaks: -1}\n", dir.path(), "leaks-bad").is_err());
    // The one listener meant for the Internet can have TLS of its own.
    let tls = render(
        "listeners: {leaks: 8443}\ntls: {enabled: true, secretName: gate-tls, listeners: [auth, grpc, leaks]}\n",
        dir.path(),
        "leaks-tls",
    )
    .unwrap();
    let toml = find(&tls, "ConfigMap")["data"]["hawzu-gate.toml"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(toml.contains("[tls.leaks]"), "{toml}");
}

/// A disruption budget a fleet can never satisfy blocks every node drain:
/// refused, saying which values to change. A fleet's pods are spread over
/// nodes by default.
#[test]
fn a_fleet_neither_blocks_node_drains_nor_sits_on_one_node() {
    let dir = tempfile::tempdir().unwrap();
    for (values, says) in [
        (
            "store: {backend: redis, redis: {url: \"redis://redis:6379\"}}\nautoscaling: {enabled: true, minReplicas: 1}\n",
            "autoscaling.minReplicas",
        ),
        (
            "store: {backend: redis, redis: {url: \"redis://redis:6379\"}}\nreplicaCount: 2\npodDisruptionBudget: {enabled: true, minAvailable: 2}\n",
            "replicaCount",
        ),
    ] {
        let refused = render(values, dir.path(), "pdb").unwrap_err();
        assert!(refused.contains(says), "{values}: {refused}");
    }
    let fine = render(
        "store: {backend: redis, redis: {url: \"redis://redis:6379\"}}\nautoscaling: {enabled: true, minReplicas: 2}\n",
        dir.path(),
        "pdb-ok",
    )
    .unwrap();
    assert_eq!(
        find(&fine, "PodDisruptionBudget")["spec"]["minAvailable"].as_i64(),
        Some(1)
    );
    // A fleet is spread over nodes unless told otherwise; one pod is not.
    let spread =
        &find(&fine, "Deployment")["spec"]["template"]["spec"]["topologySpreadConstraints"];
    assert_eq!(
        spread[0]["topologyKey"].as_str(),
        Some("kubernetes.io/hostname"),
        "{spread:?}"
    );
    let single = render("{}\n", dir.path(), "single").unwrap();
    assert!(
        find(&single, "Deployment")["spec"]["template"]["spec"]["topologySpreadConstraints"]
            .is_badvalue()
    );
}
