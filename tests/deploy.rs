//! The deploy files are real: every Kubernetes manifest validates against
//! the Kubernetes schemas (PyPI's `kubernetes-validate`, strict), every gate
//! config they carry passes `hawzu-gate check-config`, and the Helm chart
//! lints clean (Helm's own library, through PyPI's `helm-sdkpy`) with its
//! default values and with a values file for each mode, and renders to
//! manifests that validate too. The chart's `helm test` Pod renders for
//! every values file, and its script passes against a gate started as the
//! chart configures it (tests/deploy/helm.rs); its NetworkPolicy admits
//! only the ports its Service serves (tests/deploy/network_policy.rs); the
//! chart README's values table matches values.yaml
//! (tests/deploy/values_table.rs).
//!
//! Over 500 lines on purpose: one test per deploy file, sharing the tool
//! runners.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use yaml_rust2::{Yaml, YamlLoader};

// Only the harness's tool finder: a missing program or Python module stops
// a test with one line naming what to install.
#[path = "common/tools.rs"]
mod tools;
// A private CA and a localhost certificate (rcgen), for the TLS listeners
// of the gate the chart's `helm test` hook asks.
#[path = "common/certs.rs"]
#[allow(dead_code)]
mod certs;
// Loopback ports outside the ephemeral range, for the gate the hook asks.
#[path = "common/ports.rs"]
mod ports;
// The chart's `helm test` hook, and its README's values table.
#[path = "deploy/helm.rs"]
mod helm;
#[path = "deploy/network_policy.rs"]
mod network_policy;
#[path = "deploy/values_table.rs"]
mod values_table;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const BIN: &str = env!("CARGO_BIN_EXE_hawzu-gate");
/// Kubernetes version the manifests target.
const K8S: &str = "1.30.0";
/// Kinds whose CRD schemas are not bundled with kubernetes-validate; these
/// documents are checked for shape here instead.
const CRD_KINDS: [&str; 7] = [
    "Middleware",
    "IngressRoute",
    "SecurityPolicy",
    "ClientTrafficPolicy",
    "HTTPRoute",
    "AuthorizationPolicy",
    "ServiceMonitor",
];

fn manifests() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(Path::new(ROOT).join("deploy/k8s"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.push(Path::new(ROOT).join("deploy/ingress-nginx/ingress.yaml"));
    files.push(Path::new(ROOT).join("deploy/traefik/forward-auth.yaml"));
    files.sort();
    assert!(files.len() >= 10, "{files:?}");
    files
}

/// Runs kubernetes-validate on `file`; fails on any error, and on a missing
/// schema for anything but the known CRD kinds.
fn kubernetes_validate(file: &Path) {
    let out = tools::python3_with(&["kubernetes_validate"])
        .args(["-m", "kubernetes_validate", "--strict", "-k", K8S])
        .arg(file)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{}: {text}", file.display());
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let allowed_warning = line.starts_with("WARN")
            && line.contains("Couldn't find schema for kind")
            && CRD_KINDS
                .iter()
                .any(|k| line.contains(&format!("kind {k} ")));
        assert!(
            line.starts_with("INFO") && line.contains("passed") || allowed_warning,
            "{}: {line}",
            file.display()
        );
    }
}

fn documents(file: &Path) -> Vec<Yaml> {
    YamlLoader::load_from_str(&std::fs::read_to_string(file).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

/// Every document names its kind and itself; CRD documents carry a spec.
fn check_shape(file: &Path, doc: &Yaml) {
    let kind = doc["kind"]
        .as_str()
        .unwrap_or_else(|| panic!("{}: a document without kind", file.display()));
    assert!(
        doc["apiVersion"].as_str().is_some(),
        "{}: {kind} without apiVersion",
        file.display()
    );
    assert!(
        doc["metadata"]["name"].as_str().is_some(),
        "{}: {kind} without a name",
        file.display()
    );
    if CRD_KINDS.contains(&kind) {
        assert!(
            !doc["spec"].is_badvalue(),
            "{}: {kind} without spec",
            file.display()
        );
    }
}

/// `hawzu-gate check-config` on every gate config a ConfigMap carries. TLS
/// tables are dropped first: their files exist only in the cluster.
fn check_gate_configs(file: &Path, docs: &[Yaml]) -> usize {
    let mut checked = 0;
    for doc in docs
        .iter()
        .filter(|d| d["kind"].as_str() == Some("ConfigMap"))
    {
        let Some(toml) = doc["data"]["hawzu-gate.toml"].as_str() else {
            continue;
        };
        let mut kept = String::new();
        let mut in_tls = false;
        for line in toml.lines() {
            let t = line.trim_start();
            if t.starts_with('[') {
                in_tls = t.starts_with("[tls.") || t.starts_with("[tls]");
            }
            if !in_tls {
                kept.push_str(line);
                kept.push('\n');
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hawzu-gate.toml");
        std::fs::write(&path, kept).unwrap();
        let out = Command::new(BIN)
            .args(["check-config", "--config"])
            .arg(&path)
            .env_remove("HAWZU_GATE_CONFIG")
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: check-config refused the gate config: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        checked += 1;
    }
    checked
}

#[test]
fn every_manifest_validates_and_its_gate_config_is_accepted() {
    let mut configs = 0;
    for file in manifests() {
        kubernetes_validate(&file);
        let docs = documents(&file);
        assert!(!docs.is_empty(), "{}", file.display());
        for doc in &docs {
            check_shape(&file, doc);
        }
        configs += check_gate_configs(&file, &docs);
    }
    assert!(
        configs >= 2,
        "the sidecar and standalone manifests carry gate configs"
    );
}

/// The plain manifests admit only the ports their Service serves, as the
/// chart does.
#[test]
fn the_gate_manifests_admit_only_the_served_ports() {
    for file in ["k8s/sidecar-proxy.yaml", "k8s/standalone.yaml"] {
        let path = Path::new(ROOT).join("deploy").join(file);
        network_policy::check(file, &documents(&path));
    }
}

#[test]
fn manifests_run_non_root_on_a_read_only_root_filesystem_with_probes() {
    for file in [
        Path::new(ROOT).join("deploy/k8s/sidecar-proxy.yaml"),
        Path::new(ROOT).join("deploy/k8s/standalone.yaml"),
    ] {
        let docs = documents(&file);
        let deployment = docs
            .iter()
            .find(|d| d["kind"].as_str() == Some("Deployment"))
            .unwrap();
        let pod = &deployment["spec"]["template"]["spec"];
        let gate = pod["containers"]
            .as_vec()
            .unwrap()
            .iter()
            .find(|c| c["image"].as_str().unwrap_or("").contains("hawzu-gate"))
            .unwrap_or_else(|| panic!("{}: no hawzu-gate container", file.display()));
        let sc = &gate["securityContext"];
        assert_eq!(
            sc["readOnlyRootFilesystem"].as_bool(),
            Some(true),
            "{}",
            file.display()
        );
        assert_eq!(sc["allowPrivilegeEscalation"].as_bool(), Some(false));
        let non_root = sc["runAsNonRoot"].as_bool() == Some(true)
            || pod["securityContext"]["runAsNonRoot"].as_bool() == Some(true);
        assert!(non_root, "{}", file.display());
        assert_eq!(
            gate["livenessProbe"]["httpGet"]["path"].as_str(),
            Some("/healthz")
        );
        // Ready once the store answers; then not taken out of service by
        // a store every gate shares (all unready at once would leave
        // nothing to route to), only by a shutdown.
        assert_eq!(
            gate["readinessProbe"]["httpGet"]["path"].as_str(),
            Some("/readyz?exclude=store")
        );
        let grace = pod["terminationGracePeriodSeconds"].as_i64().unwrap_or(30);
        assert!(
            grace > 25,
            "terminationGracePeriodSeconds above shutdown.grace"
        );
    }
}

/// The value of `name` in the gate container's rendered env, if set.
fn rendered_env(deployment: &Yaml, name: &str) -> Option<String> {
    deployment["spec"]["template"]["spec"]["containers"]
        .as_vec()?
        .iter()
        .filter(|c| c["name"].as_str() == Some("hawzu-gate"))
        .flat_map(|c| c["env"].as_vec().cloned().unwrap_or_default())
        .find(|e| e["name"].as_str() == Some(name))
        .and_then(|e| e["value"].as_str().map(str::to_owned))
}

/// Runs `helm/lint_chart.py` (helm-sdkpy) with `values` (a file in
/// helm/hawzu-gate/ci/); returns the rendered manifests file.
fn lint_chart(values: Option<&str>, out: &Path) -> PathBuf {
    let path = values.map(|v| Path::new(ROOT).join("helm/hawzu-gate/ci").join(v));
    let name = values.unwrap_or("default").replace('/', "_");
    let (result, rendered) = run_lint_chart(path.as_deref(), &name, out);
    assert!(
        result.status.success(),
        "helm lint ({values:?}) failed:\n{}{}",
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
    rendered
}

/// `helm/lint_chart.py -f values --render <out>/<name>.yaml`, as it ran.
fn run_lint_chart(values: Option<&Path>, name: &str, out: &Path) -> (Output, PathBuf) {
    let rendered = out.join(format!("{name}.yaml"));
    let mut cmd = tools::python3_with(&["yaml", "helm_sdkpy"]);
    cmd.arg(Path::new(ROOT).join("helm/lint_chart.py"));
    if let Some(v) = values {
        cmd.arg("-f").arg(v);
    }
    cmd.arg("--render").arg(&rendered);
    (cmd.output().unwrap(), rendered)
}

#[test]
fn the_helm_chart_lints_and_renders_valid_manifests_in_every_mode() {
    let out = tempfile::tempdir().unwrap();
    for values in [
        None,
        Some("sidecar-values.yaml"),
        Some("standalone-values.yaml"),
        Some("embedded-values.yaml"),
    ] {
        let rendered = lint_chart(values, out.path());
        kubernetes_validate(&rendered);
        let docs = documents(&rendered);
        let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
        assert!(
            kinds.contains(&"Deployment") && kinds.contains(&"Service"),
            "{values:?}: {kinds:?}"
        );
        for doc in &docs {
            check_shape(&rendered, doc);
        }
        assert_eq!(check_gate_configs(&rendered, &docs), 1, "{values:?}");
        helm::check_test_hook(&format!("{values:?}"), &docs);
        network_policy::check(&format!("{values:?}"), &docs);
        network_policy::admits_the_test_pod(&format!("{values:?}"), &docs);
        if values == Some("sidecar-values.yaml") {
            check_ops_off_the_serving_service(&format!("{values:?}"), &docs);
        }
        // Gates with the Redis store get past deploy/k8s/redis.yaml's policy.
        let deployment = docs
            .iter()
            .find(|d| d["kind"].as_str() == Some("Deployment"))
            .unwrap();
        if rendered_env(deployment, "HAWZU_GATE__STORE__BACKEND").as_deref() == Some("redis") {
            assert!(
                network_policy::admitted_to_redis(
                    &deployment["spec"]["template"]["metadata"]["labels"]
                ),
                "{values:?}: the gate's pods cannot reach deploy/k8s/redis.yaml's Redis"
            );
        }
        if values == Some("standalone-values.yaml") {
            assert!(kinds.contains(&"HorizontalPodAutoscaler"), "{kinds:?}");
            assert!(kinds.contains(&"PodDisruptionBudget"), "{kinds:?}");
            assert!(kinds.contains(&"ServiceMonitor"), "{kinds:?}");
        }
    }
}

/// The worked examples the README installs with hold no key or password:
/// one applied as it comes would be a secret everyone has read (in sidecar
/// mode the admin listener shares loopback with the API's container).
#[test]
fn no_values_file_ships_a_secret() {
    for values in [
        "helm/hawzu-gate/values.yaml",
        "helm/hawzu-gate/ci/sidecar-values.yaml",
        "helm/hawzu-gate/ci/standalone-values.yaml",
        "helm/hawzu-gate/ci/embedded-values.yaml",
    ] {
        let doc = documents(&Path::new(ROOT).join(values)).remove(0);
        let key = doc["admin"]["key"].as_str().unwrap_or_default();
        assert!(key.is_empty(), "{values}: admin.key is set");
        let url = doc["store"]["redis"]["url"].as_str().unwrap_or_default();
        let userinfo = url.split_once("://").map_or(url, |(_, rest)| rest);
        assert!(
            !userinfo.split('/').next().unwrap_or_default().contains('@'),
            "{values}: store.redis.url holds a password"
        );
    }
}

#[test]
fn a_bad_values_file_fails_the_lint() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "mode: sideways\n").unwrap();
    let result = tools::python3_with(&["yaml", "helm_sdkpy"])
        .arg(Path::new(ROOT).join("helm/lint_chart.py"))
        .arg("-f")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!result.status.success(), "lint accepted mode: sideways");
}

// === what reaches the API through each shipped proxy file ===

/// Headers a client may send that the API must never see: the bearer
/// secret, and the method and path overrides the gate did not judge
/// (`headers.strip`'s defaults).
const NEVER_FORWARDED: [&str; 8] = [
    "authorization",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-url",
    "x-rewrite-url",
    "x-original-uri",
    "x-forwarded-prefix",
];

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn strings(y: &Yaml) -> Vec<String> {
    y.as_vec()
        .map(|v| {
            v.iter()
                .filter_map(|s| s.as_str().map(str::to_ascii_lowercase))
                .collect()
        })
        .unwrap_or_default()
}

/// Every Envoy bootstrap shipped: the two files and the k8s ConfigMaps.
fn envoy_bootstraps() -> Vec<(String, Yaml, bool)> {
    let mut out = Vec::new();
    for (rel, http) in [
        ("deploy/envoy/envoy.yaml", false),
        ("deploy/envoy/envoy-http.yaml", true),
    ] {
        out.push((
            rel.to_owned(),
            documents(&Path::new(ROOT).join(rel))[0].clone(),
            http,
        ));
    }
    for (rel, http) in [
        ("deploy/k8s/envoy.yaml", false),
        ("deploy/k8s/envoy-http.yaml", true),
    ] {
        let docs = documents(&Path::new(ROOT).join(rel));
        let text = docs
            .iter()
            .find_map(|d| d["data"]["envoy.yaml"].as_str())
            .unwrap_or_else(|| panic!("{rel}: no envoy.yaml in a ConfigMap"));
        let boot = YamlLoader::load_from_str(text).unwrap().remove(0);
        out.push((rel.to_owned(), boot, http));
    }
    out
}

/// The HTTP connection managers of an Envoy bootstrap.
fn connection_managers(boot: &Yaml) -> Vec<&Yaml> {
    let mut out = Vec::new();
    for l in boot["static_resources"]["listeners"].as_vec().unwrap() {
        for chain in l["filter_chains"].as_vec().unwrap() {
            for f in chain["filters"].as_vec().unwrap() {
                if f["name"].as_str() == Some("envoy.filters.network.http_connection_manager") {
                    out.push(&f["typed_config"]);
                }
            }
        }
    }
    assert!(!out.is_empty());
    out
}

#[test]
fn every_envoy_file_refuses_underscore_headers_and_removes_the_token_and_overrides() {
    for (file, boot, _) in envoy_bootstraps() {
        for hcm in connection_managers(&boot) {
            assert_eq!(
                hcm["common_http_protocol_options"]["headers_with_underscores_action"].as_str(),
                Some("REJECT_REQUEST"),
                "{file}: a header named X_Hawzu_Role would reach the API"
            );
            let removed = strings(&hcm["route_config"]["request_headers_to_remove"]);
            for h in NEVER_FORWARDED {
                assert!(
                    removed.iter().any(|r| r == h),
                    "{file}: {h} is not in route_config.request_headers_to_remove"
                );
            }
        }
    }
}

#[test]
fn envoy_passes_each_clients_own_address_to_the_gate() {
    for (file, boot, http) in envoy_bootstraps() {
        for hcm in connection_managers(&boot) {
            // Envoy appends the peer it accepted to X-Forwarded-For and
            // reports it as the source address.
            assert_eq!(
                hcm["use_remote_address"].as_bool(),
                Some(true),
                "{file}: every client behind Envoy would count as one"
            );
            if !http {
                continue;
            }
            // HTTP mode: X-Forwarded-For is among the headers sent to the gate.
            let authz = hcm["http_filters"]
                .as_vec()
                .unwrap()
                .iter()
                .find(|f| f["name"].as_str() == Some("envoy.filters.http.ext_authz"))
                .unwrap_or_else(|| panic!("{file}: no ext_authz filter"));
            let sent: Vec<&str> = authz["typed_config"]["allowed_headers"]["patterns"]
                .as_vec()
                .unwrap()
                .iter()
                .filter_map(|p| p["exact"].as_str())
                .collect();
            assert!(
                sent.contains(&"x-forwarded-for"),
                "{file}: the gate never sees the client's address: {sent:?}"
            );
            for trace in ["traceparent", "tracestate"] {
                assert!(
                    sent.contains(&trace),
                    "{file}: the gate's span never links (or, with telemetry.join_proxy_traces, joins) the caller's trace (no {trace}): {sent:?}"
                );
            }
            // A name the API may read as the gate's own, spelled with
            // another separator, reaches the gate, which names it for
            // removal; ordinary names and pseudo-headers do not.
            let patterns: Vec<&str> = authz["typed_config"]["allowed_headers"]["patterns"]
                .as_vec()
                .unwrap()
                .iter()
                .filter_map(|p| p["safe_regex"]["regex"].as_str())
                .collect();
            let odd = [
                "x-hawzu.role",
                "x+hawzu+role",
                "x.forwarded.for",
                "x-http-method.override",
            ];
            let plain = ["content-type", "accept", ":path", "cookie"];
            let shown = |names: &[&str]| -> Vec<bool> {
                let each: Vec<Vec<bool>> = patterns
                    .iter()
                    .map(|p| regex_matches(&format!("^(?:{p})$"), names))
                    .collect();
                (0..names.len())
                    .map(|i| each.iter().any(|m| m[i]))
                    .collect()
            };
            assert_eq!(shown(&odd), vec![true; odd.len()], "{file}: {patterns:?}");
            assert_eq!(
                shown(&plain),
                vec![false; plain.len()],
                "{file}: {patterns:?}"
            );
        }
    }
}

#[test]
fn envoy_gateway_refuses_underscore_headers_and_removes_the_token_and_overrides() {
    let file = "deploy/k8s/envoy-gateway.yaml";
    let docs = documents(&Path::new(ROOT).join(file));
    let route = docs
        .iter()
        .find(|d| d["kind"].as_str() == Some("HTTPRoute"))
        .unwrap();
    for rule in route["spec"]["rules"].as_vec().unwrap() {
        let removed: Vec<String> = rule["filters"]
            .as_vec()
            .unwrap_or_else(|| panic!("{file}: a route rule without filters"))
            .iter()
            .filter(|f| f["type"].as_str() == Some("RequestHeaderModifier"))
            .flat_map(|f| strings(&f["requestHeaderModifier"]["remove"]))
            .collect();
        for h in NEVER_FORWARDED {
            assert!(removed.iter().any(|r| r == h), "{file}: {h} not removed");
        }
    }
    let client = docs
        .iter()
        .find(|d| d["kind"].as_str() == Some("ClientTrafficPolicy"))
        .unwrap_or_else(|| panic!("{file}: no ClientTrafficPolicy"));
    assert_eq!(
        client["spec"]["headers"]["withUnderscoresAction"].as_str(),
        Some("RejectRequest")
    );
}

/// Each Traefik router's middlewares, resolved: (forwardAuth, headers
/// middleware after it).
fn traefik_chains(file: &str) -> Vec<(Yaml, Vec<Yaml>)> {
    let docs = documents(&Path::new(ROOT).join(file));
    let mut chains = Vec::new();
    if file.ends_with("dynamic.yml") {
        let http = &docs[0]["http"];
        for (_, router) in http["routers"].as_hash().unwrap() {
            let mws: Vec<Yaml> = strings(&router["middlewares"])
                .iter()
                .map(|n| http["middlewares"][n.as_str()].clone())
                .collect();
            chains.push(split_chain(file, mws));
        }
    } else {
        let middleware = |name: &str| {
            docs.iter()
                .find(|d| {
                    d["kind"].as_str() == Some("Middleware")
                        && d["metadata"]["name"].as_str() == Some(name)
                })
                .unwrap_or_else(|| panic!("{file}: no Middleware {name}"))["spec"]
                .clone()
        };
        for route in docs
            .iter()
            .filter(|d| d["kind"].as_str() == Some("IngressRoute"))
        {
            for r in route["spec"]["routes"].as_vec().unwrap() {
                let mws: Vec<Yaml> = r["middlewares"]
                    .as_vec()
                    .unwrap()
                    .iter()
                    .map(|m| middleware(m["name"].as_str().unwrap()))
                    .collect();
                chains.push(split_chain(file, mws));
            }
        }
    }
    assert!(!chains.is_empty(), "{file}: no routers");
    chains
}

fn split_chain(file: &str, mws: Vec<Yaml>) -> (Yaml, Vec<Yaml>) {
    let at = mws
        .iter()
        .position(|m| !m["forwardAuth"].is_badvalue())
        .unwrap_or_else(|| panic!("{file}: a router without the gate's forwardAuth"));
    (mws[at]["forwardAuth"].clone(), mws[at + 1..].to_vec())
}

/// Whether Python's `re` (the same syntax as Go's for this) finds `regex`
/// in each name: one bool per name.
fn regex_matches(regex: &str, names: &[&str]) -> Vec<bool> {
    let out = tools::tool("python3")
        .args([
            "-c",
            "import re,sys; r=re.compile(sys.argv[1]); print(' '.join(str(bool(r.search(n))) for n in sys.argv[2:]))",
            regex,
        ])
        .args(names)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(|w| w == "True")
        .collect()
}

#[test]
fn every_traefik_file_strips_the_token_underscore_names_and_overrides_after_the_gate() {
    for file in [
        "deploy/traefik/dynamic.yml",
        "deploy/traefik/forward-auth.yaml",
        "deploy/k8s/traefik.yaml",
    ] {
        for (auth, after) in traefik_chains(file) {
            // Deleted from the request once the gate has answered: an empty
            // value in a headers middleware that runs after forwardAuth.
            let cleared: Vec<String> = after
                .iter()
                .filter_map(|m| m["headers"]["customRequestHeaders"].as_hash())
                .flat_map(|h| h.iter())
                .filter(|(_, v)| v.as_str() == Some(""))
                .filter_map(|(k, _)| k.as_str().map(str::to_ascii_lowercase))
                .collect();
            // Traefik hides Upgrade from the gate and would pass a
            // websocket upgrade on: it is deleted too.
            for h in NEVER_FORWARDED.iter().chain(&["upgrade"]) {
                assert!(
                    cleared.iter().any(|c| c == h),
                    "{file}: {h} reaches the API (no empty customRequestHeaders after forwardAuth)"
                );
            }
            // forwardAuth deletes what its regex matches before copying the
            // gate's answer: every spelling of the prefix, every "_" name.
            let regex = auth["authResponseHeadersRegex"].as_str().unwrap();
            let hostile = [
                "X-Hawzu-Role",
                "X_hawzu_role",
                "X-Hawzu_workspace_id",
                "X_hawzu-Project-Id",
                "X_http_method_override",
                // lighttpd and PHP fold these too.
                "X-Hawzu.Role",
                "X+Hawzu+Workspace+Id",
                "X.Forwarded.For",
                "X-Http-Method.Override",
            ];
            assert_eq!(
                regex_matches(regex, &hostile),
                vec![true; hostile.len()],
                "{file}: {regex} lets one of {hostile:?} through"
            );
            assert_eq!(
                regex_matches(regex, &["Content-Type", "X-Request-Id", "Accept"]),
                vec![false; 3],
                "{file}: {regex} would delete ordinary headers"
            );
        }
    }
}

#[test]
fn the_nginx_file_clears_the_token_and_overrides_for_the_api_only() {
    let conf = read("deploy/nginx/nginx.conf");
    let api = conf
        .split("location / {")
        .nth(1)
        .unwrap()
        .split("location ")
        .next()
        .unwrap()
        .to_ascii_lowercase();
    // Authorization reaches the API only when the gate passed a request
    // that presents no Hawzu token (X-Hawzu-Passed); by default it is "".
    let line = |text: &str, start: &str| {
        text.lines()
            .map(str::trim)
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("deploy/nginx/nginx.conf: no `{start}`"))
            .to_owned()
    };
    assert_eq!(
        line(&api, "proxy_set_header authorization "),
        "proxy_set_header authorization $hawzu_authorization;"
    );
    assert_eq!(
        line(&api, "proxy_set_header x-hawzu-passed "),
        "proxy_set_header x-hawzu-passed       \"\";"
    );
    let map = conf
        .split("map $hawzu_passed $hawzu_authorization {")
        .nth(1)
        .unwrap()
        .split('}')
        .next()
        .unwrap();
    let entries: Vec<Vec<&str>> = map
        .lines()
        .map(|l| l.split_whitespace().collect())
        .filter(|w: &Vec<&str>| !w.is_empty())
        .collect();
    assert_eq!(
        entries,
        [
            vec!["default", "\"\";"],
            vec!["no_token", "$http_authorization;"],
            vec!["public", "$http_authorization;"],
        ]
    );
    for h in NEVER_FORWARDED.iter().filter(|h| **h != "authorization") {
        assert!(
            api.contains(&format!("proxy_set_header {h} ")) && {
                let line = api
                    .lines()
                    .find(|l| {
                        l.trim_start()
                            .starts_with(&format!("proxy_set_header {h} "))
                    })
                    .unwrap();
                line.trim_end().ends_with("\"\";")
            },
            "deploy/nginx/nginx.conf: {h} is not cleared for the API"
        );
    }
    // The auth subrequest sets X-Original-URI itself for the gate.
    let auth = conf.split("location = /_hawzu_auth {").nth(1).unwrap();
    assert!(auth.contains("proxy_set_header X-Original-URI $request_uri;"));
}

#[test]
fn the_caddy_files_delete_hostile_headers_around_the_gate_and_refuse_upgrades() {
    for file in ["deploy/caddy/Caddyfile", "deploy/caddy/Caddyfile.sidecar"] {
        let text = read(file);
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.starts_with('#'))
            .collect();
        let at = |needle: &str| {
            lines
                .iter()
                .position(|l| l.eq_ignore_ascii_case(needle))
                .unwrap_or_else(|| panic!("{file}: no `{needle}`"))
        };
        let proxy = lines
            .iter()
            .position(|l| l.starts_with("reverse_proxy "))
            .unwrap();
        // In written order (a route block), before the API is reached.
        assert!(at("route {") < at("@upgrade header Upgrade *"));
        assert!(at("handle @upgrade {") < proxy);
        for d in ["request_header -X-Hawzu-*", "request_header -*_*"] {
            assert!(at(d) < proxy, "{file}: {d}");
        }
        let gate = lines
            .iter()
            .position(|l| l.starts_with("forward_auth "))
            .unwrap_or(proxy);
        assert!(at("request_header -X-Hawzu-*") < gate);
        for h in NEVER_FORWARDED {
            if h == "authorization" && gate == proxy {
                // The sidecar: the gate's proxy reads the token and removes it.
                continue;
            }
            let d = at(&format!("request_header -{h}"));
            // After the gate has read the request (the sidecar's gate is
            // the reverse_proxy itself), before the API is reached.
            let after_gate = gate == proxy || gate < d;
            assert!(
                after_gate && d < proxy,
                "{file}: {h} after the gate, before the API"
            );
        }
    }
}

#[test]
fn ingress_nginx_clears_the_token_overrides_and_upgrade_connection_for_the_api() {
    for file in [
        "deploy/ingress-nginx/ingress.yaml",
        "deploy/k8s/ingress-nginx.yaml",
    ] {
        let docs = documents(&Path::new(ROOT).join(file));
        let cm = docs
            .iter()
            .find(|d| {
                d["kind"].as_str() == Some("ConfigMap")
                    && d["metadata"]["name"].as_str() == Some("hawzu-api-proxy-headers")
            })
            .unwrap_or_else(|| panic!("{file}: no ConfigMap hawzu-api-proxy-headers"));
        let ingress = docs
            .iter()
            .find(|d| d["kind"].as_str() == Some("Ingress"))
            .unwrap();
        assert_eq!(
            ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/connection-proxy-header"]
                .as_str(),
            Some("keep-alive"),
            "{file}: the API would get Connection: upgrade with a client's Upgrade: h2c"
        );
        let data = cm["data"].as_hash().unwrap();
        // Upgrade and h2c's HTTP2-Settings are cleared too, as in every
        // other proxy file: the gate never sees them on the subrequest. So
        // are the two X-Hawzu-* names a gate answer carries but the
        // auth-response-headers list does not (nginx.conf clears them): a
        // client's own `X-Hawzu-Passed: public` would reach the API.
        for h in NEVER_FORWARDED.iter().chain(&[
            "upgrade",
            "http2-settings",
            "x-hawzu-error",
            "x-hawzu-passed",
        ]) {
            assert!(
                data.iter().any(
                    |(k, v)| k.as_str().is_some_and(|k| k.eq_ignore_ascii_case(h))
                        && v.as_str() == Some("")
                ),
                "{file}: {h} not cleared"
            );
        }
    }
}

// === holes found reviewing the deploy files ===

/// No manifest carries a Secret with a placeholder: a file applied as it
/// comes would run Redis and the admin API with a password everyone has
/// read. Each file's "Try it" creates the Secrets with random values first.
#[test]
fn no_manifest_ships_a_placeholder_secret_and_try_it_makes_random_ones() {
    for file in manifests() {
        let text = std::fs::read_to_string(&file).unwrap();
        for doc in documents(&file) {
            assert_ne!(
                doc["kind"].as_str(),
                Some("Secret"),
                "{}: ships a Secret ({:?}): applying the file applies its values",
                file.display(),
                doc["metadata"]["name"]
            );
        }
        let uses = |name: &str| text.contains(&format!("name: {name}\n"));
        for (secret, key) in [("hawzu-redis", "password"), ("hawzu-gate", "admin-key")] {
            if !(text.contains("secretKeyRef")
                && uses(secret)
                && text.contains(&format!("key: {key}")))
            {
                continue;
            }
            let create = format!("create secret generic {secret}");
            let at = text
                .find(&create)
                .unwrap_or_else(|| panic!("{}: Try it never creates {secret}", file.display()));
            // The command, to the first line not continued with "\".
            let mut command = String::new();
            for line in text[at..].lines() {
                command.push_str(line);
                if !line.trim_end().ends_with('\\') {
                    break;
                }
            }
            let value = command
                .split(&format!("--from-literal={key}="))
                .nth(1)
                .unwrap_or_else(|| panic!("{}: {command}", file.display()));
            let random = if key == "admin-key" {
                // The generated form (`hwzadm_` and 43 letters and digits),
                // which the wrong-key limit never locks out.
                value.starts_with("\"hwzadm_$(") && value.contains("/dev/urandom")
            } else {
                value.starts_with("\"$") && text.contains("openssl rand")
            };
            assert!(
                random,
                "{}: {secret} made from a fixed value, or not in the admin key's generated form: {command}",
                file.display()
            );
        }
    }
}

#[test]
fn envoy_gateway_shows_the_gate_upgrade_requests() {
    // Envoy Gateway enables websocket upgrades on HTTPRoutes: the gate must
    // see Upgrade (and h2c's HTTP2-Settings) to refuse them
    // (upgrade_refused), or it judges a plain GET and the API gets a
    // WebSocket.
    let file = "deploy/k8s/envoy-gateway.yaml";
    let docs = documents(&Path::new(ROOT).join(file));
    let policy = docs
        .iter()
        .find(|d| d["kind"].as_str() == Some("SecurityPolicy"))
        .unwrap();
    // Unset: Envoy sends the gate every header, and no list of exact
    // names could show it X-Hawzu.Role (which lighttpd and PHP read as
    // HTTP_X_HAWZU_ROLE) to name for removal.
    let sent = strings(&policy["spec"]["extAuth"]["headersToExtAuth"]);
    assert!(
        sent.is_empty(),
        "{file}: headersToExtAuth hides other headers from the gate: {sent:?}"
    );
}

/// nginx at the edge names the peer it accepted, never the client's own
/// X-Forwarded-For with the peer appended: the gate walks the list right
/// to left past trusted addresses, so a client whose own address is
/// trusted would name any address (allow_from, a victim's failed-auth
/// bucket).
#[test]
fn nginx_sends_the_peer_it_accepted_as_the_only_forwarded_for() {
    let conf = read("deploy/nginx/nginx.conf");
    let live: Vec<&str> = conf
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    assert!(
        !live
            .iter()
            .any(|l| l.contains("$proxy_add_x_forwarded_for")),
        "deploy/nginx/nginx.conf appends to the client's own X-Forwarded-For"
    );
    for location in ["location = /_hawzu_auth {", "location / {"] {
        let block = conf.split(location).nth(1).unwrap();
        let block = block.split("location ").next().unwrap();
        assert!(
            block
                .lines()
                .any(|l| l.trim() == "proxy_set_header X-Forwarded-For $remote_addr;"),
            "deploy/nginx/nginx.conf: {location} does not set X-Forwarded-For to $remote_addr"
        );
    }
}

/// Only the proxies belong in trusted_proxies, never the pod network:
/// every pod is a client too, and a trusted client names any address in
/// X-Forwarded-For. The shipped configs and the README's example trust
/// no IPv4 range wider than a /24.
#[test]
fn no_shipped_config_trusts_a_whole_pod_network() {
    let mut entries: Vec<(String, String)> = Vec::new();
    for file in [
        "deploy/k8s/standalone.yaml",
        "deploy/k8s/sidecar-proxy.yaml",
    ] {
        for doc in documents(&Path::new(ROOT).join(file)) {
            let Some(toml) = doc["data"]["hawzu-gate.toml"].as_str() else {
                continue;
            };
            for line in toml.lines().map(str::trim) {
                if let Some(list) = line.strip_prefix("trusted_proxies = ") {
                    let list: Vec<String> = serde_json::from_str(list).unwrap();
                    entries.extend(list.into_iter().map(|e| (file.to_owned(), e)));
                }
            }
        }
    }
    for values in [
        "helm/hawzu-gate/values.yaml",
        "helm/hawzu-gate/ci/sidecar-values.yaml",
        "helm/hawzu-gate/ci/standalone-values.yaml",
        "helm/hawzu-gate/ci/embedded-values.yaml",
    ] {
        let doc = documents(&Path::new(ROOT).join(values)).remove(0);
        for e in strings(&doc["config"]["trustedProxies"]) {
            entries.push((values.to_owned(), e));
        }
    }
    for file in ["README.md", "docs/operations.md"] {
        for (i, _) in read(file).match_indices("TRUSTED_PROXIES=") {
            let rest = &read(file)[i + "TRUSTED_PROXIES=".len()..];
            let value: String = rest
                .chars()
                .take_while(|c| !c.is_whitespace() && *c != '`' && *c != ')')
                .collect();
            entries.extend(value.split(',').map(|e| (file.to_owned(), e.to_owned())));
        }
    }
    assert!(entries.len() >= 3, "{entries:?}");
    for (file, entry) in entries {
        let Some((addr, bits)) = entry.split_once('/') else {
            continue; // one address
        };
        let bits: u8 = bits.parse().unwrap();
        if addr.contains('.') {
            assert!(
                bits >= 24,
                "{file}: trusts {entry}, a whole network of clients"
            );
        } else {
            assert!(
                bits >= 120,
                "{file}: trusts {entry}, a whole network of clients"
            );
        }
    }
}

#[test]
fn istio_sends_every_request_to_the_gate() {
    // A notPaths exemption lets /healthz?anything reach the API unjudged,
    // with the client's Authorization and X-Hawzu-* headers.
    let file = "deploy/k8s/istio.yaml";
    let docs = documents(&Path::new(ROOT).join(file));
    let policy = docs
        .iter()
        .find(|d| d["kind"].as_str() == Some("AuthorizationPolicy"))
        .unwrap();
    assert_eq!(policy["spec"]["action"].as_str(), Some("CUSTOM"));
    let rules = policy["spec"]["rules"].as_vec().unwrap();
    assert!(
        !rules.is_empty(),
        "{file}: no rule: the policy matches nothing"
    );
    assert!(
        rules
            .iter()
            .any(|r| r.as_hash().is_some_and(|h| h.is_empty())),
        "{file}: no rule matching every request: {rules:?}"
    );
}

/// The sidecar's serving Service (the API's public entry, possibly a
/// LoadBalancer) publishes the gate's proxy and nothing else: /metrics
/// stays on a ClusterIP Service of its own.
fn check_ops_off_the_serving_service(what: &str, docs: &[Yaml]) {
    let services: Vec<&Yaml> = docs
        .iter()
        .filter(|d| d["kind"].as_str() == Some("Service"))
        .collect();
    let targets = |s: &Yaml| -> Vec<String> {
        s["spec"]["ports"]
            .as_vec()
            .unwrap()
            .iter()
            .filter_map(|p| p["targetPort"].as_str().map(str::to_owned))
            .collect()
    };
    let serving = services
        .iter()
        .find(|s| targets(s).iter().any(|t| t == "proxy"))
        .unwrap_or_else(|| panic!("{what}: no Service for the proxy"));
    assert!(
        !targets(serving).iter().any(|t| t == "ops"),
        "{what}: the API's Service publishes the ops port: {:?}",
        targets(serving)
    );
    let ops = services
        .iter()
        .find(|s| targets(s).iter().any(|t| t == "ops"))
        .unwrap_or_else(|| panic!("{what}: no Service for the ops port"));
    assert_eq!(
        ops["spec"]["type"].as_str().unwrap_or("ClusterIP"),
        "ClusterIP",
        "{what}"
    );
}

#[test]
fn the_sidecar_manifest_keeps_ops_off_the_apis_service() {
    let file = "deploy/k8s/sidecar-proxy.yaml";
    check_ops_off_the_serving_service(file, &documents(&Path::new(ROOT).join(file)));
}

// === memory: what the limits let the gate hold fits its memory limit ===

/// Bytes of a Kubernetes quantity (`256Mi`, `1Gi`, `500M`).
fn quantity(q: &str) -> u64 {
    let (n, unit) = q.split_at(q.find(|c: char| !c.is_ascii_digit()).unwrap_or(q.len()));
    let n: u64 = n.parse().unwrap_or_else(|_| panic!("quantity {q}"));
    n * match unit {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "K" | "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        other => panic!("quantity unit {other}"),
    }
}

/// For each gate container in `docs`: its memory limit holds what its
/// settings let it hold at worst (docs/operations.md "Sizing"): ~17 MiB
/// idle, ~660 bytes per cached token, ~330 bytes per failed-auth client,
/// ~22 KB per kept-alive connection on each listener bound off loopback.
/// An OOM kill empties the cache of a whole pod.
fn memory_fits(what: &str, docs: &[Yaml]) -> usize {
    let mut checked = 0;
    let toml = docs
        .iter()
        .filter(|d| d["kind"].as_str() == Some("ConfigMap"))
        .find_map(|d| d["data"]["hawzu-gate.toml"].as_str());
    for d in docs
        .iter()
        .filter(|d| d["kind"].as_str() == Some("Deployment"))
    {
        let Some(containers) = d["spec"]["template"]["spec"]["containers"].as_vec() else {
            continue;
        };
        let Some(gate) = containers
            .iter()
            .find(|c| c["name"].as_str() == Some("hawzu-gate"))
        else {
            continue;
        };
        let limit = quantity(
            gate["resources"]["limits"]["memory"]
                .as_str()
                .unwrap_or_else(|| panic!("{what}: the gate has no memory limit")),
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hawzu-gate.toml");
        // TLS files and the like are checked elsewhere: the limits only.
        let kept: String = toml
            .unwrap_or("")
            .split("\n[tls")
            .next()
            .unwrap()
            .to_owned();
        std::fs::write(&file, kept).unwrap();
        let env: std::collections::BTreeMap<String, String> = gate["env"]
            .as_vec()
            .map(|v| {
                v.iter()
                    .filter_map(|e| {
                        Some((
                            e["name"].as_str()?.to_owned(),
                            e["value"].as_str()?.to_owned(),
                        ))
                    })
                    .filter(|(k, _)| k.starts_with("HAWZU_GATE__"))
                    .collect()
            })
            .unwrap_or_default();
        let s = hawzu_gate::config::load_from(Some(&file), env)
            .unwrap_or_else(|e| panic!("{what}: {e}"))
            .settings;
        let public = s
            .listen
            .all()
            .iter()
            .filter(|(_, a)| !a.ip().is_loopback())
            .count() as u64;
        let failed_auth = if s.failed_auth.limit > 0 {
            s.failed_auth.max_clients as u64 * 330
        } else {
            0
        };
        let worst = (17 << 20)
            + s.cache.max_entries as u64 * 660
            + failed_auth
            + public * s.limits.max_connections as u64 * 22_000;
        assert!(
            worst <= limit,
            "{what}: at worst {} MiB (cache {} entries, {public} listeners off loopback × {} connections) against a memory limit of {} MiB: lower cache.max_entries or limits.max_connections, or raise the limit",
            worst >> 20,
            s.cache.max_entries,
            s.limits.max_connections,
            limit >> 20
        );
        checked += 1;
    }
    checked
}

#[test]
fn the_gates_memory_limit_holds_what_its_settings_let_it_hold() {
    for file in [
        "deploy/k8s/standalone.yaml",
        "deploy/k8s/sidecar-proxy.yaml",
    ] {
        let docs = documents(&Path::new(ROOT).join(file));
        assert_eq!(memory_fits(file, &docs), 1, "{file}");
    }
    let out = tempfile::tempdir().unwrap();
    for values in [
        None,
        Some("sidecar-values.yaml"),
        Some("standalone-values.yaml"),
        Some("embedded-values.yaml"),
    ] {
        let docs = documents(&lint_chart(values, out.path()));
        assert_eq!(
            memory_fits(&format!("chart {values:?}"), &docs),
            1,
            "{values:?}"
        );
    }
}
