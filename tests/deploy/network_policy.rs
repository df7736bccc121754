//! The chart's NetworkPolicy: traffic reaches the chart's pods only on the
//! ports its Service serves. In sidecar mode the API container shares the
//! pod, so a port it opens besides the gate's (its own listener, should it
//! bind every address) is not among them: nothing reaches the API around
//! the gate.

use std::collections::BTreeSet;

use yaml_rust2::Yaml;

fn only<'a>(what: &str, docs: &'a [Yaml], kind: &str) -> &'a Yaml {
    let mut found = docs.iter().filter(|d| d["kind"].as_str() == Some(kind));
    let one = found
        .next()
        .unwrap_or_else(|| panic!("{what}: no {kind} rendered"));
    assert!(found.next().is_none(), "{what}: several {kind}s");
    one
}

fn port_name(y: &Yaml) -> String {
    y.as_str()
        .map(str::to_owned)
        .or_else(|| y.as_i64().map(|n| n.to_string()))
        .unwrap_or_else(|| panic!("a port that is neither a name nor a number: {y:?}"))
}

/// The policy selects exactly the Deployment's pods, governs ingress, and
/// admits the Service's target ports and nothing else.
pub fn check(what: &str, docs: &[Yaml]) {
    let policy = only(what, docs, "NetworkPolicy");
    let deployment = only(what, docs, "Deployment");
    let service = only(what, docs, "Service");
    assert_eq!(
        policy["spec"]["podSelector"]["matchLabels"], deployment["spec"]["selector"]["matchLabels"],
        "{what}: the policy selects other pods than the Deployment's"
    );
    let types: Vec<&str> = policy["spec"]["policyTypes"]
        .as_vec()
        .map(|v| v.iter().filter_map(Yaml::as_str).collect())
        .unwrap_or_default();
    assert_eq!(types, ["Ingress"], "{what}");
    let rules = policy["spec"]["ingress"]
        .as_vec()
        .unwrap_or_else(|| panic!("{what}: no ingress rules"));
    let mut admitted = BTreeSet::new();
    for rule in rules {
        let ports = rule["ports"]
            .as_vec()
            .unwrap_or_else(|| panic!("{what}: a rule admitting every port: {rule:?}"));
        for p in ports {
            assert_eq!(p["protocol"].as_str(), Some("TCP"), "{what}: {p:?}");
            admitted.insert(port_name(&p["port"]));
        }
    }
    let served: BTreeSet<String> = service["spec"]["ports"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|p| port_name(&p["targetPort"]))
        .collect();
    assert_eq!(
        admitted, served,
        "{what}: admitted ports against served ones"
    );
}

/// Where the policy narrows who may connect, the chart's own `helm test`
/// Pod is still among them (its checks ask the serving and ops ports).
pub fn admits_the_test_pod(what: &str, docs: &[Yaml]) {
    let policy = only(what, docs, "NetworkPolicy");
    for rule in policy["spec"]["ingress"].as_vec().unwrap() {
        let Some(peers) = rule["from"].as_vec() else {
            continue; // anyone
        };
        assert!(
            peers.iter().any(|p| {
                p["podSelector"]["matchLabels"]["app.kubernetes.io/component"].as_str()
                    == Some("helm-test")
            }),
            "{what}: a narrowed rule leaves the helm test Pod out: {rule:?}"
        );
    }
}
