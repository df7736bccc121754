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
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    // Every Service that sends to the Deployment's pods (in sidecar mode
    // the ops port has a Service of its own).
    let services: Vec<&Yaml> = docs
        .iter()
        .filter(|d| d["kind"].as_str() == Some("Service"))
        .filter(|s| selects(&s["spec"]["selector"], pod_labels))
        .collect();
    assert!(
        !services.is_empty(),
        "{what}: no Service for the Deployment"
    );
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
    let served: BTreeSet<String> = services
        .iter()
        .flat_map(|s| s["spec"]["ports"].as_vec().unwrap())
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

// === who may reach Redis and the API in the plain manifests ===

/// Whether a `matchLabels` selector picks a pod with `labels` (an empty
/// selector picks every pod).
fn selects(selector: &Yaml, labels: &Yaml) -> bool {
    let labels = labels.as_hash().unwrap();
    selector
        .as_hash()
        .is_none_or(|s| s.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

fn yaml(text: &str) -> Yaml {
    yaml_rust2::YamlLoader::load_from_str(text)
        .unwrap()
        .remove(0)
}

/// The pod templates of a file's workloads: (name, labels, pod spec).
fn pods(docs: &[Yaml]) -> Vec<(String, &Yaml, &Yaml)> {
    docs.iter()
        .filter(|d| matches!(d["kind"].as_str(), Some("Deployment" | "StatefulSet")))
        .map(|d| {
            let t = &d["spec"]["template"];
            (
                d["metadata"]["name"].as_str().unwrap().to_owned(),
                &t["metadata"]["labels"],
                &t["spec"],
            )
        })
        .collect()
}

fn runs_image(spec: &Yaml, image: &str) -> bool {
    spec["containers"]
        .as_vec()
        .unwrap()
        .iter()
        .any(|c| c["image"].as_str().unwrap_or("").starts_with(image))
}

fn uses_redis(spec: &Yaml) -> bool {
    spec["containers"].as_vec().unwrap().iter().any(|c| {
        c["env"].as_vec().is_some_and(|env| {
            env.iter().any(|e| {
                e["name"].as_str() == Some("HAWZU_GATE__STORE__BACKEND")
                    && e["value"].as_str() == Some("redis")
            })
        })
    })
}

/// The NetworkPolicies of `docs` that select pods labelled `labels`.
fn policies_on<'a>(docs: &'a [Yaml], labels: &Yaml) -> Vec<&'a Yaml> {
    docs.iter()
        .filter(|d| d["kind"].as_str() == Some("NetworkPolicy"))
        .filter(|d| selects(&d["spec"]["podSelector"]["matchLabels"], labels))
        .collect()
}

/// The peers of a policy's ingress rules, each rule's list non-empty.
fn peers<'a>(what: &str, policy: &'a Yaml) -> Vec<&'a Yaml> {
    let types = policy["spec"]["policyTypes"].as_vec().unwrap();
    assert!(
        types.iter().any(|t| t.as_str() == Some("Ingress")),
        "{what}"
    );
    let rules = policy["spec"]["ingress"]
        .as_vec()
        .unwrap_or_else(|| panic!("{what}: no ingress rules"));
    let mut out = Vec::new();
    for rule in rules {
        let from = rule["from"].as_vec().map(Vec::as_slice).unwrap_or_default();
        assert!(
            !from.is_empty(),
            "{what}: a rule admitting anyone: {rule:?}"
        );
        out.extend(from);
    }
    out
}

/// An API pod of the forward-auth layouts: the API alone, no gate inside.
fn api_without_a_gate() -> Yaml {
    yaml("app: hawzu-api\napp.kubernetes.io/name: hawzu-api\napp.kubernetes.io/part-of: hawzu\n")
}

/// Whether the Redis policy of deploy/k8s/redis.yaml admits a pod with
/// `labels` (in Redis's namespace).
pub fn admitted_to_redis(labels: &Yaml) -> bool {
    let docs = super::documents(&std::path::Path::new(super::ROOT).join("deploy/k8s/redis.yaml"));
    let (_, redis, _) = pods(&docs)
        .into_iter()
        .find(|(_, _, spec)| runs_image(spec, "redis:"))
        .unwrap();
    policies_on(&docs, redis)
        .iter()
        .flat_map(|p| peers("deploy/k8s/redis.yaml", p))
        .any(|peer| {
            peer["namespaceSelector"].is_badvalue()
                && selects(&peer["podSelector"]["matchLabels"], labels)
        })
}

/// Every manifest that runs Redis ships a policy on the Redis pods that
/// admits its port only from the gates' pods (standalone, and the API pods
/// in sidecar mode, where the gate runs inside them); an API pod without a
/// gate, or any other pod, writes no token record into Redis.
#[test]
fn every_redis_manifest_admits_only_the_gates_pods() {
    let all: Vec<(String, Vec<Yaml>)> = super::manifests()
        .iter()
        .map(|p| (p.display().to_string(), super::documents(p)))
        .collect();
    let gates: Vec<(String, Yaml)> = all
        .iter()
        .flat_map(|(f, docs)| {
            pods(docs)
                .into_iter()
                .filter(|(_, _, spec)| runs_image(spec, "hawzu-gate:") && uses_redis(spec))
                .map(move |(n, labels, _)| (format!("{f}: {n}"), labels.clone()))
        })
        .collect();
    assert_eq!(
        gates.len(),
        2,
        "the standalone and sidecar gates: {gates:?}"
    );
    let mut redis_files = 0;
    for (file, docs) in &all {
        for (name, labels, _) in pods(docs)
            .into_iter()
            .filter(|(_, _, spec)| runs_image(spec, "redis:"))
        {
            redis_files += 1;
            let what = format!("{file}: {name}");
            let policies = policies_on(docs, labels);
            assert!(
                !policies.is_empty(),
                "{what}: no NetworkPolicy selects the Redis pods"
            );
            let mut admitted = Vec::new();
            for policy in policies {
                for rule in policy["spec"]["ingress"].as_vec().into_iter().flatten() {
                    let ports = rule["ports"]
                        .as_vec()
                        .unwrap_or_else(|| panic!("{what}: a rule admitting every port"));
                    for p in ports {
                        let port = port_name(&p["port"]);
                        assert!(port == "redis" || port == "6379", "{what}: {port}");
                    }
                }
                for peer in peers(&what, policy) {
                    assert!(
                        peer["namespaceSelector"].is_badvalue() && peer["ipBlock"].is_badvalue(),
                        "{what}: a peer beyond the gate's pods: {peer:?}"
                    );
                    let selector = &peer["podSelector"]["matchLabels"];
                    assert!(
                        selector.as_hash().is_some_and(|s| !s.is_empty()),
                        "{what}: a peer selecting every pod: {peer:?}"
                    );
                    assert!(
                        !selects(selector, &api_without_a_gate()),
                        "{what}: an API pod without a gate reaches Redis: {peer:?}"
                    );
                    let some_gate: Vec<&String> = gates
                        .iter()
                        .filter(|(_, l)| selects(selector, l))
                        .map(|(n, _)| n)
                        .collect();
                    assert!(
                        !some_gate.is_empty(),
                        "{what}: {peer:?} selects no gate's pods"
                    );
                    admitted.extend(some_gate);
                }
            }
            for (gate, _) in &gates {
                assert!(
                    admitted.contains(&gate),
                    "{what}: {gate} cannot reach Redis"
                );
            }
        }
    }
    assert!(redis_files >= 1, "deploy/k8s/redis.yaml runs Redis");
}

/// The forward-auth layouts route to a Service `hawzu-api` that reaches the
/// API directly: each ships a policy on the API pods that admits only its
/// proxy (the pods it defines, or the controller's namespace and pods), so
/// no pod calls the API with X-Hawzu-* headers of its own making.
#[test]
fn every_forward_auth_manifest_admits_only_its_proxy_to_the_api() {
    for file in [
        "deploy/k8s/ingress-nginx.yaml",
        "deploy/k8s/traefik.yaml",
        "deploy/k8s/envoy.yaml",
        "deploy/k8s/envoy-http.yaml",
        "deploy/k8s/envoy-gateway.yaml",
        "deploy/ingress-nginx/ingress.yaml",
        "deploy/traefik/forward-auth.yaml",
    ] {
        let docs = super::documents(&std::path::Path::new(super::ROOT).join(file));
        let policies = policies_on(&docs, &api_without_a_gate());
        let policies: Vec<&Yaml> = policies
            .into_iter()
            .filter(|p| {
                p["spec"]["podSelector"]["matchLabels"]
                    .as_hash()
                    .is_some_and(|s| !s.is_empty())
            })
            .collect();
        assert!(
            !policies.is_empty(),
            "{file}: no NetworkPolicy selects the API pods"
        );
        let own: Vec<&Yaml> = pods(&docs).into_iter().map(|(_, l, _)| l).collect();
        for policy in policies {
            for peer in peers(file, policy) {
                assert!(peer["ipBlock"].is_badvalue(), "{file}: {peer:?}");
                let pod = &peer["podSelector"]["matchLabels"];
                let ns = &peer["namespaceSelector"]["matchLabels"];
                assert!(
                    pod.as_hash().is_some_and(|s| !s.is_empty()),
                    "{file}: a peer admitting every pod of a namespace: {peer:?}"
                );
                if ns.is_badvalue() {
                    // The proxy's pods, defined in this file.
                    assert!(
                        own.iter().any(|l| selects(pod, l)),
                        "{file}: {peer:?} selects none of the file's proxy pods"
                    );
                } else {
                    assert!(
                        ns.as_hash().is_some_and(|s| !s.is_empty()),
                        "{file}: {peer:?}"
                    );
                }
                assert!(
                    !selects(pod, &api_without_a_gate()),
                    "{file}: the API admits itself: {peer:?}"
                );
            }
        }
    }
}
