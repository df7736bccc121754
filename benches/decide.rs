//! The decision on a cache hit, end to end (`decide`: extract, parse, hash,
//! cache hit, state, rule, role), and its pieces: rule matching on the
//! default set and on 500 rules, the identity headers, and what usage
//! counting adds per request.
//! Numbers and the commit they were measured on: docs/performance.md.

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use hawzu_gate::cache::{CacheOptions, TokenCache};
use hawzu_gate::decide::{ClientAddr, Credentials, Decision, RequestFacts, decide};
use hawzu_gate::headers::IdentityHeaders;
use hawzu_gate::policy::roles::Permission;
use hawzu_gate::policy::rules::{MethodSet, Rule, RuleSet, Template, normalize};
use hawzu_gate::policy::{OtherCredentials, Policy};
use hawzu_gate::store::{EmbeddedStore, Store, TokenStore};
use hawzu_gate::token::record::RECORD_VERSION;
use hawzu_gate::token::{ProjectGrant, Scope, TokenId, TokenRecord, TokenSecret};
use hawzu_gate::usage;
use http::{HeaderMap, Method};
use jiff::Timestamp;
use std::hint::black_box;

const PATH: &str = "/api/v1/workspaces/ws_1/projects/proj_b/testcases/tc_42/steps";

fn record() -> TokenRecord {
    TokenRecord {
        v: RECORD_VERSION,
        id: TokenId::generate().expect("random"),
        name: "CI Runner".into(),
        workspace_id: "ws_1".into(),
        scope: Scope::Project {
            projects: vec![
                ProjectGrant {
                    project_id: "proj_a".into(),
                    role: "project_manager".into(),
                },
                ProjectGrant {
                    project_id: "proj_b".into(),
                    role: "project_member".into(),
                },
            ],
        },
        created_by: "bench".into(),
        created_at: Timestamp::now(),
        expires_at: Some(Timestamp::now() + jiff::SignedDuration::from_hours(24)),
        disabled_at: None,
        disabled_by: None,
        revoked_at: None,
        revoked_by: None,
        last_used_at: None,
        rotated_from: None,
        description: None,
        rotated_to: None,
        allow_from: Vec::new(),
        not_before: None,
        limits_by: None,
    }
}

/// 499 rules that do not match `PATH`, then the default set.
/// A `POST` of [`PATH`] from loopback with `authorization`, now.
fn post_with(authorization: &str) -> RequestFacts<'_> {
    RequestFacts {
        method: &Method::POST,
        path: black_box(PATH),
        query: None,
        upgrade: false,
        override_header: None,
        credentials: Credentials::One(authorization.as_bytes()),
        now: Timestamp::now(),
        client: ClientAddr::Known(std::net::IpAddr::from([127, 0, 0, 1])),
    }
}

fn five_hundred_rules() -> RuleSet {
    let mut rules = Vec::new();
    for i in 0..499 {
        rules.push(Rule {
            methods: MethodSet::parse(["GET", "POST"]).expect("methods"),
            template: Template::parse(&format!(
                "/api/v1/workspaces/{{workspace}}/projects/{{project}}/custom{i}/**"
            ))
            .expect("template"),
            access: Permission::parse("testcases:read")
                .expect("permission")
                .into(),
            origin: format!("policy.rules[{i}]"),
        });
    }
    rules.extend(RuleSet::defaults().rules().iter().cloned());
    RuleSet::new(rules)
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = TokenSecret::generate().expect("random");
    let cache = rt.block_on(async {
        let store = Store::Embedded(
            EmbeddedStore::open(dir.path(), Duration::from_secs(5))
                .await
                .expect("store"),
        );
        let cache = TokenCache::new(
            store,
            CacheOptions {
                ttl: Duration::from_secs(3600),
                negative_ttl: Duration::from_secs(5),
                max_entries: 1000,
                stale_if_error: Duration::ZERO,
            },
        );
        cache
            .create(&secret.hash(), &record())
            .await
            .expect("create");
        cache.lookup(&secret.hash()).await.expect("warm");
        Arc::new(cache)
    });
    let policy = Policy::default();
    let header = format!("Bearer {}", secret.expose());

    c.bench_function("decide/cache_hit_allow", |b| {
        b.to_async(&rt).iter(|| async {
            let facts = post_with(&header);
            matches!(decide(&cache, &policy, &facts).await, Decision::Allow(_))
        })
    });
    // Pass mode, a request carrying its own bearer (a JWT of about a
    // kilobyte): judged without a lookup — the cost of making sure it is
    // not a Hawzu token in disguise.
    let pass = Policy {
        other_credentials: OtherCredentials::Pass,
        ..Policy::default()
    };
    let jwt = format!(
        "Bearer eyJhbGciOiJSUzI1NiJ9.{}.{}",
        "eyJzdWIiOiJhbGljZSJ9".repeat(40),
        "c2lnbmF0dXJl".repeat(12)
    );
    c.bench_function("decide/pass_jwt", |b| {
        b.to_async(&rt).iter(|| async {
            let facts = post_with(&jwt);
            matches!(decide(&cache, &pass, &facts).await, Decision::Pass(_))
        })
    });
    c.bench_function("cache/hit", |b| {
        let hash = secret.hash();
        b.to_async(&rt)
            .iter(|| async { cache.lookup(black_box(&hash)).await.is_ok() })
    });

    let defaults = RuleSet::defaults();
    let many = five_hundred_rules();
    c.bench_function("rules/normalize", |b| {
        b.iter(|| normalize(black_box(PATH)).is_ok())
    });
    c.bench_function("rules/match_default_set", |b| {
        b.iter(|| {
            let path = normalize(black_box(PATH)).expect("normal");
            defaults.find(&Method::POST, &path).is_some()
        })
    });
    c.bench_function("rules/match_500_rules", |b| {
        b.iter(|| {
            let path = normalize(black_box(PATH)).expect("normal");
            many.find(&Method::POST, &path).is_some()
        })
    });

    let headers = IdentityHeaders::default();
    let principal = rt.block_on(async {
        let facts = RequestFacts {
            method: &Method::POST,
            path: PATH,
            query: None,
            upgrade: false,
            override_header: None,
            credentials: Credentials::One(header.as_bytes()),
            now: Timestamp::now(),
            client: ClientAddr::Known(std::net::IpAddr::from([127, 0, 0, 1])),
        };
        match decide(&cache, &policy, &facts).await {
            Decision::Allow(p) => p,
            Decision::Pass(p) => panic!("bench token passed unjudged: {p:?}"),
            Decision::Deny(d) => panic!("bench token refused: {:?}", d.code),
        }
    });
    // What the lifecycle adds per request for usage (the doors already
    // hold `now`): `usage/count` is the count of a known token (one atomic
    // add, the client's fingerprint, two loads) from the same client as
    // the last request, the common case; `usage/note` the last-use check
    // that was there before.
    let (usage, _writer) = rt.block_on(async { usage::start(cache.clone()) });
    let peer = std::net::IpAddr::from([10, 1, 2, 3]);
    let now = Timestamp::now();
    c.bench_function("usage/count", |b| {
        b.iter(|| {
            usage.count(
                &principal.record,
                None,
                black_box(now),
                || black_box(peer),
                Some(black_box(b"python-requests/2.31.0".as_slice())),
            );
        })
    });
    c.bench_function("usage/note", |b| {
        b.iter(|| usage.note(&principal, || None, black_box(now)))
    });

    let mut incoming = HeaderMap::new();
    for (k, v) in [
        ("host", "api.hawzu.example"),
        ("authorization", header.as_str()),
        ("content-type", "application/json"),
        ("x-hawzu-role", "spoof"),
        ("user-agent", "bench"),
    ] {
        incoming.insert(
            http::HeaderName::from_static(k),
            http::HeaderValue::from_str(v).expect("value"),
        );
    }
    c.bench_function("headers/strip_and_inject", |b| {
        b.iter(|| {
            let mut h = incoming.clone();
            headers.strip(&mut h);
            h.remove(http::header::AUTHORIZATION);
            headers.insert(&mut h, black_box(&principal));
            h.len()
        })
    });
}

criterion_group!(decide_benches, benches);
criterion_main!(decide_benches);
