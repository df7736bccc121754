//! The deploy files are real: every Kubernetes manifest validates against
//! the Kubernetes schemas (PyPI's `kubernetes-validate`, strict), every gate
//! config they carry passes `hawzu-gate check-config`, and the Helm chart
//! lints clean (Helm's own library, through PyPI's `helm-sdkpy`) with its
//! default values and with a values file for each mode, and renders to
//! manifests that validate too.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::path::{Path, PathBuf};
use std::process::Command;

use yaml_rust2::{Yaml, YamlLoader};

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
    let out = Command::new("python3")
        .args(["-m", "kubernetes_validate", "--strict", "-k", K8S])
        .arg(file)
        .output()
        .expect(
            "kubernetes-validate must be installed (pip install kubernetes-validate; .ci/run does)",
        );
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
        assert_eq!(
            gate["readinessProbe"]["httpGet"]["path"].as_str(),
            Some("/readyz")
        );
        let grace = pod["terminationGracePeriodSeconds"].as_i64().unwrap_or(30);
        assert!(
            grace > 25,
            "terminationGracePeriodSeconds above shutdown.grace"
        );
    }
}

/// Runs `helm/lint_chart.py` (helm-sdkpy) with `values`; returns the
/// rendered manifests file.
fn lint_chart(values: Option<&str>, out: &Path) -> PathBuf {
    let rendered = out.join(format!(
        "{}.yaml",
        values.unwrap_or("default").replace('/', "_")
    ));
    let mut cmd = Command::new("python3");
    cmd.arg(Path::new(ROOT).join("helm/lint_chart.py"));
    if let Some(v) = values {
        cmd.arg("-f")
            .arg(Path::new(ROOT).join("helm/hawzu-gate/ci").join(v));
    }
    cmd.arg("--render").arg(&rendered);
    let result = cmd.output().expect(
        "python3 with helm-sdkpy (pip install --ignore-requires-python helm-sdkpy; .ci/run does)",
    );
    assert!(
        result.status.success(),
        "helm lint ({values:?}) failed:\n{}{}",
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
    rendered
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
        if values == Some("standalone-values.yaml") {
            assert!(kinds.contains(&"HorizontalPodAutoscaler"), "{kinds:?}");
            assert!(kinds.contains(&"PodDisruptionBudget"), "{kinds:?}");
            assert!(kinds.contains(&"ServiceMonitor"), "{kinds:?}");
        }
    }
}

#[test]
fn a_bad_values_file_fails_the_lint() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "mode: sideways\n").unwrap();
    let result = Command::new("python3")
        .arg(Path::new(ROOT).join("helm/lint_chart.py"))
        .arg("-f")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!result.status.success(), "lint accepted mode: sideways");
}
