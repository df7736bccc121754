use std::collections::HashMap;

use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use proptest::prelude::*;

use super::*;
use crate::decide::extract_token;
use crate::policy::rules::normalize;
use crate::token::TokenSecret;

fn check(method: &str, path: &str, headers: &[(&str, &str)]) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    method: method.into(),
                    path: path.into(),
                    headers: headers
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

fn bearer() -> String {
    format!("Bearer {}", TokenSecret::generate().unwrap().expose())
}

#[test]
fn a_check_reads_method_path_without_query_and_the_bearer_header() {
    let auth = bearer();
    let req = check(
        "GET",
        "/api/v1/workspaces/w?x=1",
        &[("authorization", &auth)],
    );
    let facts = facts_from_check(&req).unwrap();
    assert_eq!(facts.method, Method::GET);
    assert_eq!(facts.path, "/api/v1/workspaces/w");
    assert!(matches!(facts.credentials, Credentials::One(v) if v == auth.as_bytes()));
}

#[test]
fn a_check_reports_its_query_and_whether_it_asks_for_an_upgrade() {
    let req = check("GET", "/a?_method=DELETE", &[("upgrade", "h2c")]);
    let facts = facts_from_check(&req).unwrap();
    assert_eq!(facts.query, Some("_method=DELETE"));
    assert!(facts.upgrade);
    let req = check(
        "GET",
        "/a",
        &[("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA")],
    );
    let facts = facts_from_check(&req).unwrap();
    assert_eq!(facts.query, None);
    assert!(facts.upgrade);
    let mut req = check("GET", "/a", &[("connection", "keep-alive")]);
    if let Some(http) = req
        .attributes
        .as_mut()
        .and_then(|a| a.request.as_mut())
        .and_then(|r| r.http.as_mut())
    {
        http.query = "_method=DELETE".into();
    }
    let facts = facts_from_check(&req).unwrap();
    assert_eq!(
        facts.query,
        Some("_method=DELETE"),
        "a separate query is read too"
    );
    assert!(!facts.upgrade);
}

#[test]
fn a_check_that_does_not_name_its_request_is_unjudgeable() {
    let empty = CheckRequest::default();
    assert_eq!(
        facts_from_check(&empty).unwrap_err(),
        Unjudgeable { path: "" }
    );
    let bad = check("GE T", "/a", &[]);
    assert_eq!(
        facts_from_check(&bad).unwrap_err(),
        Unjudgeable { path: "/a" }
    );
}

/// Envoy's `encode_raw_headers`: the headers as a list in `header_map`,
/// `headers` empty. Read as Envoy would have merged them into `headers`.
fn raw_check(method: &str, path: &str, headers: &[(&str, &[u8])]) -> CheckRequest {
    use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
    let mut req = check(method, path, &[]);
    let http = req
        .attributes
        .as_mut()
        .and_then(|a| a.request.as_mut())
        .and_then(|r| r.http.as_mut())
        .unwrap();
    http.header_map = Some(HeaderMap {
        headers: headers
            .iter()
            .map(|(k, v)| HeaderValue {
                key: (*k).into(),
                raw_value: v.to_vec(),
                ..Default::default()
            })
            .collect(),
    });
    req
}

#[test]
fn a_check_with_the_headers_as_a_list_is_read_the_same() {
    let auth = bearer();
    let req = raw_check(
        "GET",
        "/api/v1/workspaces/w",
        &[
            ("authorization", auth.as_bytes()),
            ("Upgrade", b"websocket"),
            ("x-hawzu-role", b"owner"),
            ("x-request-id", b"abc"),
        ],
    );
    let facts = facts_from_check(&req).unwrap();
    assert!(matches!(facts.credentials, Credentials::One(v) if v == auth.as_bytes()));
    assert!(facts.upgrade);
    assert_eq!(
        facts.headers.get("x-hawzu-role").map(String::as_str),
        Some("owner")
    );
    assert_eq!(
        facts.headers.get("upgrade").map(String::as_str),
        Some("websocket")
    );

    // Repeated lines are kept apart in the list: two tokens are `Several`,
    // never the first of them; other names are joined as in `headers`.
    let req = raw_check(
        "GET",
        "/a",
        &[
            ("authorization", auth.as_bytes()),
            ("Authorization", b"Bearer x"),
            ("x-a", b"1"),
            ("X-A", b"2\xff"),
        ],
    );
    let facts = facts_from_check(&req).unwrap();
    assert!(matches!(facts.credentials, Credentials::Several));
    assert_eq!(
        facts.headers.get("x-a").map(String::as_str),
        Some("1,2\u{fffd}")
    );

    // Both forms at once is not something Envoy sends: refused.
    let mut req = raw_check("GET", "/a", &[("x-a", b"1")]);
    if let Some(http) = req
        .attributes
        .as_mut()
        .and_then(|a| a.request.as_mut())
        .and_then(|r| r.http.as_mut())
    {
        http.headers.insert("x-b".into(), "2".into());
    }
    assert!(facts_from_check(&req).is_err());
}

/// Found by the `ext_authz_facts` fuzz target: a check carrying both
/// `authorization` and `Authorization` was read as the lower-case one alone,
/// where an HTTP door sees two values and refuses them.
#[test]
fn authorization_spelled_in_two_cases_is_two_values() {
    let auth = bearer();
    let req = check(
        "GET",
        "/a",
        &[("Authorization", &auth), ("authorization", &auth)],
    );
    let facts = facts_from_check(&req).unwrap();
    assert!(matches!(facts.credentials, Credentials::Several));
    // One value under any spelling is read, as an HTTP door reads it.
    let req = check("GET", "/a", &[("Authorization", &auth)]);
    let facts = facts_from_check(&req).unwrap();
    assert!(matches!(facts.credentials, Credentials::One(v) if v == auth.as_bytes()));
}

/// What decides an allow: the method, the normalized segments (if the
/// path is accepted) and the bearer token's hash (if one was extracted).
type AllowFacts = (Method, Option<Vec<String>>, Option<[u8; 32]>);

/// The facts an HTTP door derives for the same method, target and headers,
/// when HTTP can carry them.
fn http_door(method: &str, target: &str, headers: &HashMap<String, String>) -> Option<AllowFacts> {
    let mut b = http::Request::builder().method(method).uri(target);
    for (k, v) in headers {
        b = b.header(k.as_str(), v.as_str());
    }
    let req = b.body(()).ok()?;
    let path = normalize(req.uri().path())
        .ok()
        .map(|p| p.segments().iter().map(|s| s.to_string()).collect());
    let token = extract_token(
        super::super::credentials(req.headers()),
        &Default::default(),
    )
    .ok()
    .map(|t| t.hash().0);
    Some((req.method().clone(), path, token))
}

fn target() -> impl Strategy<Value = String> {
    let atoms = prop::sample::select(vec![
        "/api/v1/workspaces/ws_1",
        "/projects/p1",
        "/testcases",
        "/",
        "?",
        "#",
        " ",
        "%2f",
        "%41",
        "a",
        "..",
        "http://h",
        "*",
        "é",
    ]);
    prop_oneof![
        prop::collection::vec(atoms, 0..8).prop_map(|a| a.concat()),
        "\\PC{0,24}",
    ]
}

fn header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "authorization",
            "Authorization",
            "AUTHORIZATION",
            "host"
        ])
        .prop_map(str::to_owned),
        "[a-zA-Z-]{1,12}",
    ]
}

/// A placeholder the test replaces with a freshly generated token.
const TOKEN: &str = "hwz_TOKEN";

fn header_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(format!("Bearer {TOKEN}")),
        Just(format!("bearer   {TOKEN}")),
        Just(format!("Bearer {TOKEN}, Bearer {TOKEN}")),
        Just(TOKEN.to_owned()),
        "\\PC{0,16}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn translation_never_panics_and_agrees_with_the_http_doors(
        method in prop_oneof![
            prop::sample::select(vec!["GET", "POST", "DELETE", "get", ""]).prop_map(str::to_owned),
            "\\PC{0,8}",
        ],
        path in target(),
        auth in (
            prop::sample::select(vec!["authorization", "Authorization", "AUTHORIZATION"]),
            header_value(),
        ),
        extra in prop::collection::vec((header_name(), header_value()), 0..3),
    ) {
        let token = TokenSecret::generate().unwrap();
        let headers: Vec<(String, String)> = std::iter::once((auth.0.to_owned(), auth.1))
            .chain(extra)
            .map(|(k, v)| (k, v.replace(TOKEN, token.expose())))
            .collect();
        let pairs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let req = check(&method, &path, &pairs);
        let Ok(facts) = facts_from_check(&req) else {
            prop_assert!(Method::from_bytes(method.as_bytes()).is_err());
            return Ok(());
        };
        prop_assert_eq!(facts.method.as_str(), method.as_str());
        prop_assert!(path.starts_with(facts.path) && !facts.path.contains('?'));

        // Allow-relevant: an accepted path and an extracted token.
        let ours = normalize(facts.path)
            .ok()
            .map(|p| p.segments().iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let our_token = extract_token(facts.credentials, &Default::default()).ok().map(|t| t.hash().0);
        let (Some(ours), Some(our_token)) = (ours, our_token) else {
            return Ok(());
        };
        let http = &req.attributes.as_ref().unwrap().request.as_ref().unwrap().http;
        if let Some((m, theirs, their_token)) = http_door(&method, &path, &http.as_ref().unwrap().headers) {
            prop_assert_eq!(m, facts.method);
            prop_assert_eq!(Some(ours), theirs, "{:?}", path);
            prop_assert_eq!(Some(our_token), their_token, "{:?}", headers);
        }
    }
}
