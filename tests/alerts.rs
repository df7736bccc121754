//! The alert rules and the Grafana dashboard in deploy/ are checked by the
//! tools that run them: `promtool check rules` and `promtool test rules`
//! (deploy/prometheus/alerts.test.yml: store down, invalidations lost, a
//! failed-auth spike, each first healthy and silent), every dashboard
//! query parsed by promtool too, and every metric either names checked
//! against the families the gate registers (`Metrics::families`), so a
//! renamed metric breaks this test, not an operator's pager.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

#[path = "common/tools.rs"]
mod tools;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use hawzu_gate::metrics::Metrics;
use yaml_rust2::YamlLoader;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn deploy(rel: &str) -> PathBuf {
    Path::new(ROOT).join("deploy").join(rel)
}

fn promtool(args: &[&str], dir: &Path) {
    let out = tools::tool("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every `hawzu_gate_…` name in `expr`, with a histogram's `_bucket`,
/// `_sum` and `_count` series mapped to their family.
fn metric_names(expr: &str, families: &BTreeSet<String>) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("hawzu_gate_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|base| families.contains(*base)))
            .unwrap_or(name);
        names.push(family.to_owned());
        rest = &tail[end..];
    }
    names
}

fn families() -> BTreeSet<String> {
    Metrics::new().families().iter().cloned().collect()
}

/// (alert name, expression) of every rule in the rules file.
fn rules() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(deploy("prometheus/alerts.rules.yml")).unwrap();
    let docs = YamlLoader::load_from_str(&text).unwrap();
    let mut out = Vec::new();
    for group in docs[0]["groups"].as_vec().unwrap() {
        for rule in group["rules"].as_vec().unwrap() {
            out.push((
                rule["alert"].as_str().unwrap().to_owned(),
                rule["expr"].as_str().unwrap().to_owned(),
            ));
        }
    }
    out
}

/// (panel title, expression) of every query of the dashboard.
fn dashboard_queries() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(deploy("grafana/hawzu-gate.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut out = Vec::new();
    for panel in dash["panels"].as_array().unwrap() {
        let title = panel["title"].as_str().unwrap();
        for target in panel["targets"].as_array().unwrap() {
            out.push((
                title.to_owned(),
                target["expr"].as_str().unwrap().to_owned(),
            ));
        }
    }
    out
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    let dir = deploy("prometheus");
    promtool(&["check", "rules", "alerts.rules.yml"], &dir);
    promtool(&["test", "rules", "alerts.test.yml"], &dir);
}

#[test]
fn alert_rules_name_only_metrics_the_gate_exports() {
    let families = families();
    assert!(families.contains("hawzu_gate_decisions_total"));
    let rules = rules();
    assert!(rules.len() >= 4, "rules read: {rules:?}");
    for (alert, expr) in &rules {
        let names = metric_names(expr, &families);
        assert!(!names.is_empty(), "{alert} names no gate metric: {expr}");
        for name in names {
            assert!(
                families.contains(&name),
                "{alert} uses {name}, which the gate does not export"
            );
        }
    }
    // The alerts the operations guide promises are all there.
    let names: BTreeSet<&str> = rules.iter().map(|(a, _)| a.as_str()).collect();
    for wanted in [
        "HawzuGateStoreDown",
        "HawzuGateInvalidationsLost",
        "HawzuGateFailedAuthSpike",
    ] {
        assert!(names.contains(wanted), "{wanted} missing");
    }
}

#[test]
fn every_dashboard_query_parses_and_names_exported_metrics() {
    let families = families();
    let queries = dashboard_queries();
    assert!(queries.len() >= 10, "queries read: {}", queries.len());
    // Grafana's variables replaced the way Grafana would, each query then
    // given to promtool as a recording rule: it parses PromQL.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, (title, expr)) in queries.iter().enumerate() {
        let names = metric_names(expr, &families);
        assert!(!names.is_empty(), "{title}: names no gate metric: {expr}");
        for name in names {
            assert!(
                families.contains(&name),
                "panel {title:?} uses {name}, which the gate does not export"
            );
        }
        let concrete = expr
            .replace("$__rate_interval", "1m")
            .replace("$job", ".*")
            .replace("$instance", ".*");
        assert!(
            !concrete.contains('$'),
            "{title}: unknown variable in {expr}"
        );
        let quoted = serde_json::to_string(&concrete).unwrap();
        rules.push_str(&format!(
            "      - record: dashboard:q{i}\n        expr: {quoted}\n"
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("dashboard.rules.yml"), rules).unwrap();
    promtool(&["check", "rules", "dashboard.rules.yml"], dir.path());
}

#[test]
fn metric_names_maps_histogram_series_to_their_family() {
    let families = families();
    assert_eq!(
        metric_names(
            "histogram_quantile(0.99, rate(hawzu_gate_decision_duration_seconds_bucket[5m])) + hawzu_gate_nope",
            &families
        ),
        ["hawzu_gate_decision_duration_seconds", "hawzu_gate_nope"]
    );
}
