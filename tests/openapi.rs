//! `docs/admin-api.yaml` describes exactly the routes the admin router serves.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::collections::BTreeSet;

use hawzu_gate::admin::api::ROUTES;
use yaml_rust2::{Yaml, YamlLoader};

fn spec() -> Yaml {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/admin-api.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    YamlLoader::load_from_str(&text).unwrap().remove(0)
}

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

#[test]
fn every_router_route_is_described_and_nothing_else() {
    let spec = spec();
    assert!(spec["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = spec["paths"].as_hash().unwrap();
    let mut described = BTreeSet::new();
    for (path, item) in paths {
        for m in METHODS {
            if !item[m].is_badvalue() {
                described.insert((m.to_uppercase(), path.as_str().unwrap().to_owned()));
            }
        }
    }
    let served: BTreeSet<_> = ROUTES
        .iter()
        .map(|r| (r.method.as_str().to_owned(), r.template.to_owned()))
        .collect();
    let missing: Vec<_> = served.difference(&described).collect();
    assert!(
        missing.is_empty(),
        "routes missing from docs/admin-api.yaml: {missing:?}"
    );
    let stale: Vec<_> = described.difference(&served).collect();
    assert!(
        stale.is_empty(),
        "documented routes the router does not serve: {stale:?}"
    );
}

#[test]
fn every_operation_documents_its_auth_failure() {
    let spec = spec();
    for r in ROUTES {
        let op = &spec["paths"][r.template][r.method.as_str().to_lowercase().as_str()];
        assert!(
            !op["responses"]["401"].is_badvalue(),
            "{} {} lacks 401",
            r.method,
            r.template
        );
        assert!(op["operationId"].as_str().is_some());
    }
}
