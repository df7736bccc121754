//! The chart README's values table (helm/hawzu-gate/README.md § Values)
//! against values.yaml: a value without a row, a row without a value, or a
//! scalar default that differs fails.

use std::collections::BTreeMap;
use std::path::Path;

use yaml_rust2::{Yaml, YamlLoader};

use super::ROOT;

/// Every leaf key path of values.yaml (a scalar, a list, or an empty map),
/// with the value.
fn leaves(prefix: &str, y: &Yaml, out: &mut Vec<(String, Yaml)>) {
    match y.as_hash() {
        Some(h) if !h.is_empty() => {
            for (k, v) in h {
                let k = k.as_str().unwrap();
                let path = if prefix.is_empty() {
                    k.to_owned()
                } else {
                    format!("{prefix}.{k}")
                };
                leaves(&path, v, out);
            }
        }
        _ => out.push((prefix.to_owned(), y.clone())),
    }
}

/// A scalar default as the README shows it: strings JSON-quoted.
fn shown(y: &Yaml) -> Option<String> {
    match y {
        Yaml::String(s) => Some(format!("{s:?}")),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Real(r) => Some(r.clone()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

#[test]
fn every_value_is_in_the_chart_readme_table_with_its_default() {
    let chart = Path::new(ROOT).join("helm/hawzu-gate");
    let values =
        YamlLoader::load_from_str(&std::fs::read_to_string(chart.join("values.yaml")).unwrap())
            .unwrap()
            .remove(0);
    let mut all = Vec::new();
    leaves("", &values, &mut all);
    assert!(all.len() > 80, "{}", all.len());
    let readme = std::fs::read_to_string(chart.join("README.md")).unwrap();
    // | `key.path` | `default` | description |
    let rows: BTreeMap<String, String> = readme
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.split(" | ").collect();
            (
                cells[0]
                    .trim_start_matches("| ")
                    .trim_matches('`')
                    .to_owned(),
                cells.get(1).copied().unwrap_or("").to_owned(),
            )
        })
        .collect();
    for (path, value) in &all {
        let default = rows
            .get(path)
            .unwrap_or_else(|| panic!("helm/hawzu-gate/README.md: no row for the value `{path}`"));
        if let Some(v) = shown(value) {
            assert_eq!(
                default,
                &format!("`{v}`"),
                "helm/hawzu-gate/README.md: the default of `{path}`"
            );
        }
    }
    for path in rows.keys() {
        assert!(
            all.iter().any(|(p, _)| p == path),
            "helm/hawzu-gate/README.md: `{path}` is not in values.yaml"
        );
    }
}
