//! The ext_authz translation (`facts_from_check`): any `CheckRequest`, from
//! raw protobuf bytes or from chosen fields, never panics, and never yields
//! an allow-relevant fact (the method, the normalized path, the bearer
//! token) that differs from what the HTTP doors derive from the same
//! method, request target and headers.
#![no_main]

use std::collections::HashMap;
use std::sync::LazyLock;

use arbitrary::Arbitrary;
use envoy_types::ext_authz::v3::pb::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use hawzu_gate::decide::{Credentials, extract_token};
use hawzu_gate::doors::credentials;
use hawzu_gate::doors::ext_authz::{Unjudgeable, facts_from_check};
use hawzu_gate::policy::rules::normalize;
use libfuzzer_sys::fuzz_target;
use prost::Message;

/// A well-formed token (zeros, with its checksum), so that the fuzzer
/// reaches the allow-relevant cases without guessing a CRC.
static TOKEN: LazyLock<String> = LazyLock::new(|| {
    const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let body = format!("hwz_{}", "0".repeat(30));
    let mut sum = crc32fast::hash(body.as_bytes());
    let mut check = [0u8; 6];
    for slot in check.iter_mut().rev() {
        *slot = BASE62[(sum % 62) as usize];
        sum /= 62;
    }
    body + std::str::from_utf8(&check).expect("ascii")
});

const KEYS: [&str; 6] = [
    "authorization",
    "Authorization",
    "AUTHORIZATION",
    "x-request-id",
    "x-hawzu-role",
    "host",
];
const PATH_ATOMS: [&str; 14] = [
    "/api/v1/workspaces/ws_1",
    "/projects/p1",
    "/testcases/t1",
    "/",
    "?",
    "#",
    "%2f",
    "%41",
    "a",
    " ",
    "..",
    "http://h",
    "*",
    "\u{e9}",
];

#[derive(Arbitrary, Debug)]
enum Key {
    Known(u8),
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum Value {
    Bearer(u8),
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum Path {
    Atoms(Vec<u8>),
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum Input {
    Proto(Vec<u8>),
    Fields {
        /// 0: no attributes, 1: no request, 2: no http, else all present.
        depth: u8,
        method: String,
        path: Path,
        headers: Vec<(Key, Value)>,
    },
}

fn check_request(input: &Input) -> Option<CheckRequest> {
    let Input::Fields {
        depth,
        method,
        path,
        headers,
    } = input
    else {
        let Input::Proto(bytes) = input else {
            return None;
        };
        return CheckRequest::decode(bytes.as_slice()).ok();
    };
    let path = match path {
        Path::Raw(s) => s.clone(),
        Path::Atoms(a) => a
            .iter()
            .take(16)
            .map(|i| PATH_ATOMS[*i as usize % PATH_ATOMS.len()])
            .collect(),
    };
    let mut map = HashMap::new();
    for (k, v) in headers.iter().take(8) {
        let k = match k {
            Key::Known(i) => KEYS[*i as usize % KEYS.len()].to_owned(),
            Key::Raw(s) => s.clone(),
        };
        let v = match v {
            Value::Bearer(0) => format!("Bearer {}", *TOKEN),
            Value::Bearer(1) => format!("bearer  {}", *TOKEN),
            Value::Bearer(2) => format!("Bearer {0}, Bearer {0}", *TOKEN),
            Value::Bearer(_) => TOKEN.clone(),
            Value::Raw(s) => s.clone(),
        };
        map.insert(k, v);
    }
    let http = HttpRequest {
        method: method.clone(),
        path,
        headers: map,
        ..Default::default()
    };
    let request = (*depth > 2).then(|| Request {
        http: Some(http),
        ..Default::default()
    });
    let attributes = (*depth > 1).then(|| AttributeContext {
        request: request.or_else(|| (*depth == 2).then(Request::default)),
        ..Default::default()
    });
    Some(CheckRequest {
        attributes: attributes.or_else(|| (*depth == 1).then(AttributeContext::default)),
    })
}

fuzz_target!(|input: Input| {
    let Some(req) = check_request(&input) else {
        return;
    };
    let facts = match facts_from_check(&req) {
        Ok(facts) => facts,
        Err(Unjudgeable { path }) => {
            let http = req
                .attributes
                .as_ref()
                .and_then(|a| a.request.as_ref())
                .and_then(|r| r.http.as_ref());
            assert_eq!(path, http.map_or("", |h| h.path.as_str()));
            return;
        }
    };
    let Some(http) = req
        .attributes
        .as_ref()
        .and_then(|a| a.request.as_ref())
        .and_then(|r| r.http.as_ref())
    else {
        unreachable!("judged without HTTP attributes");
    };
    assert_eq!(facts.method.as_str(), http.method);
    assert!(http.path.starts_with(facts.path));
    assert!(!facts.path.contains('?'));

    // Allow-relevant only when the path is accepted and a token extracted.
    let Ok(ours) = normalize(facts.path) else {
        return;
    };
    let Ok(token) = extract_token(facts.credentials) else {
        return;
    };

    // The same request as an HTTP door sees it, when HTTP can carry it.
    let mut builder = http::Request::builder()
        .method(http.method.as_str())
        .uri(http.path.as_str());
    for (k, v) in &http.headers {
        builder = builder.header(k.as_str(), v.as_str());
    }
    let Ok(theirs) = builder.body(()) else {
        return;
    };
    assert_eq!(&facts.method, theirs.method());
    let their_path = normalize(theirs.uri().path()).map(|p| {
        p.segments()
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
    });
    let our_path: Vec<String> = ours.segments().iter().map(|s| s.to_string()).collect();
    assert_eq!(
        Ok(our_path),
        their_path,
        "{:?} vs {:?}",
        facts.path,
        theirs.uri()
    );
    let their_token = match credentials(theirs.headers()) {
        c @ Credentials::One(_) => extract_token(c).ok(),
        _ => None,
    };
    assert_eq!(
        Some(token.hash()),
        their_token.map(|t| t.hash()),
        "{:?}",
        http.headers
    );
});
