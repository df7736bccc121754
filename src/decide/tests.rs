use std::time::Duration;

use super::*;
use crate::cache::CacheOptions;
use crate::policy::roles::{RoleScope, Roles};
use crate::store::{EmbeddedStore, RedisStore, Store, redis::RedisOptions};
use crate::token::{ProjectGrant, Scope, TokenRecord, TokenSecret};

const WS: &str = "/api/v1/workspaces/ws_1";

fn now() -> Timestamp {
    "2027-01-01T00:00:00Z".parse().unwrap()
}

fn record(scope: Scope) -> TokenRecord {
    TokenRecord::sample(scope, now())
}

fn workspace(role: &str) -> Arc<CachedRecord> {
    Arc::new(CachedRecord::new(&record(Scope::Workspace {
        role: role.into(),
    })))
}

fn project(grants: &[(&str, &str)]) -> Arc<CachedRecord> {
    let projects = grants
        .iter()
        .map(|(p, r)| ProjectGrant {
            project_id: (*p).into(),
            role: (*r).into(),
        })
        .collect();
    Arc::new(CachedRecord::new(&record(Scope::Project { projects })))
}

fn policy() -> Policy {
    let runner = vec!["executions:read".to_owned(), "executions:write".to_owned()];
    Policy {
        roles: Roles::with_custom([("execution_runner", RoleScope::Any, runner.as_slice())])
            .unwrap(),
        ..Policy::default()
    }
}

/// The outcome as `Ok((role, project))` or `Err(code)`.
fn check(
    token: &Arc<CachedRecord>,
    method: Method,
    path: &str,
) -> Result<(String, Option<String>), DenyCode> {
    match authorize(&policy(), token.clone(), &method, path) {
        Decision::Allow(p) => Ok((p.role().to_owned(), p.project_id().map(str::to_owned))),
        Decision::Pass(p) => panic!("no public rule here, yet passed: {p:?}"),
        Decision::Deny(d) => Err(d.code),
    }
}

#[test]
fn the_guides_example_evaluates_each_project_independently() {
    // Project A → Project Manager, Project B → Project Viewer.
    let t = project(&[("proj_a", "project_manager"), ("proj_b", "project_viewer")]);
    let a = format!("{WS}/projects/proj_a");
    let b = format!("{WS}/projects/proj_b");
    let c = format!("{WS}/projects/proj_c");
    // Full access in A…
    for (m, p) in [
        (Method::GET, format!("{a}/testcases/tc_1")),
        (Method::POST, format!("{a}/testcases")),
        (Method::DELETE, format!("{a}/defects/d_1")),
        (Method::PATCH, a.clone()),
        (Method::PUT, format!("{a}/requirements/r_1")),
    ] {
        assert_eq!(
            check(&t, m.clone(), &p),
            Ok(("project_manager".into(), Some("proj_a".into()))),
            "{m} {p}"
        );
    }
    // …read-only in B, with B's role only…
    assert_eq!(
        check(&t, Method::GET, &format!("{b}/testcases")),
        Ok(("project_viewer".into(), Some("proj_b".into())))
    );
    for (m, p) in [
        (Method::POST, format!("{b}/testcases")),
        (Method::DELETE, format!("{b}/defects/d_1")),
        (Method::PATCH, b.clone()),
    ] {
        assert_eq!(
            check(&t, m.clone(), &p),
            Err(DenyCode::InsufficientRole),
            "{m} {p}"
        );
    }
    // …nothing elsewhere.
    assert_eq!(
        check(&t, Method::GET, &format!("{c}/testcases")),
        Err(DenyCode::ProjectNotGranted)
    );
}

#[test]
fn a_project_token_is_refused_on_workspace_level_routes() {
    let t = project(&[("proj_a", "project_manager")]);
    assert_eq!(
        check(&t, Method::GET, &format!("{WS}/projects")),
        Err(DenyCode::InsufficientRole)
    );
    assert_eq!(check(&t, Method::GET, WS), Err(DenyCode::InsufficientRole));
    assert_eq!(
        check(&t, Method::GET, &format!("{WS}/members")),
        Err(DenyCode::InsufficientRole)
    );
}

#[test]
fn a_workspace_token_stays_in_its_workspace() {
    let t = workspace("workspace_manager");
    assert_eq!(
        check(&t, Method::DELETE, &format!("{WS}/projects/p1/testcases/x")),
        Ok(("workspace_manager".into(), Some("p1".into())))
    );
    assert_eq!(
        check(&t, Method::GET, "/api/v1/workspaces/ws_2/projects"),
        Err(DenyCode::WorkspaceMismatch)
    );
    // A project token of another workspace is refused the same way.
    let p = project(&[("proj_a", "project_manager")]);
    assert_eq!(
        check(
            &p,
            Method::GET,
            "/api/v1/workspaces/ws_2/projects/proj_a/testcases"
        ),
        Err(DenyCode::WorkspaceMismatch)
    );
}

#[test]
fn workspace_roles_follow_the_permission_table() {
    let viewer = workspace("workspace_viewer");
    assert!(check(&viewer, Method::GET, &format!("{WS}/projects/p/reports")).is_ok());
    assert_eq!(
        check(&viewer, Method::POST, &format!("{WS}/projects/p/testcases")),
        Err(DenyCode::InsufficientRole)
    );
    assert_eq!(
        check(&viewer, Method::GET, &format!("{WS}/settings/sso")),
        Err(DenyCode::InsufficientRole)
    );
    let member = workspace("workspace_member");
    assert!(
        check(
            &member,
            Method::POST,
            &format!("{WS}/projects/p/executions")
        )
        .is_ok()
    );
    assert_eq!(
        check(
            &member,
            Method::DELETE,
            &format!("{WS}/projects/p/executions/e")
        ),
        Err(DenyCode::InsufficientRole)
    );
    let coordinator = workspace("workspace_coordinator");
    assert!(
        check(
            &coordinator,
            Method::DELETE,
            &format!("{WS}/projects/p/executions/e")
        )
        .is_ok()
    );
    assert!(
        check(
            &coordinator,
            Method::POST,
            &format!("{WS}/projects/p/reports")
        )
        .is_ok()
    );
    assert_eq!(
        check(&coordinator, Method::POST, &format!("{WS}/members")),
        Err(DenyCode::InsufficientRole)
    );
}

#[test]
fn a_custom_role_scoped_to_executions() {
    let t = project(&[("proj_a", "execution_runner")]);
    assert!(
        check(
            &t,
            Method::POST,
            &format!("{WS}/projects/proj_a/executions/run")
        )
        .is_ok()
    );
    assert!(check(&t, Method::GET, &format!("{WS}/projects/proj_a/executions")).is_ok());
    assert_eq!(
        check(&t, Method::GET, &format!("{WS}/projects/proj_a/testcases")),
        Err(DenyCode::InsufficientRole)
    );
}

#[test]
fn tokens_get_no_ui_access_and_ambiguous_paths_are_refused() {
    let t = workspace("workspace_manager");
    for p in ["/settings/access-tokens", "/", "/login", "/app/projects"] {
        assert_eq!(
            check(&t, Method::GET, p),
            Err(DenyCode::NoMatchingRule),
            "{p}"
        );
    }
    for p in [
        "/api/v1/workspaces/ws_1/projects/p/../../ws_2",
        "/api/v1/workspaces/ws_1/projects/p/%2e%2e/x",
        "/api/v1/workspaces/ws_1//projects",
        "/api/v1/workspaces/ws_1\\projects",
        "/api/v1/workspaces/ws_1/projects/p%2ftestcases",
    ] {
        assert_eq!(
            check(&t, Method::GET, p),
            Err(DenyCode::AmbiguousPath),
            "{p}"
        );
    }
}

#[test]
fn the_allow_names_the_role_and_permission_that_granted_it() {
    let t = project(&[("proj_a", "project_member")]);
    let path = format!("{WS}/projects/proj_a/testcases/1");
    let Decision::Allow(p) = authorize(&policy(), t, &Method::PUT, &path) else {
        panic!("allowed")
    };
    assert_eq!(p.role(), "project_member");
    assert_eq!(p.permission.to_string(), "testcases:write");
    assert_eq!(p.project_id(), Some("proj_a"));
    assert_eq!(p.kind(), TokenKind::Project);
}

// === extraction and state ===

fn extract(v: &str) -> Result<TokenSecret, DenyCode> {
    extract_token(Credentials::One(v.as_bytes()), &Default::default())
}

#[test]
fn bearer_scheme_is_case_insensitive() {
    let t = TokenSecret::generate().unwrap();
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let got = extract(&format!("{scheme} {}", t.expose())).unwrap();
        assert_eq!(got.hash(), t.hash());
    }
    assert!(extract(&format!("Bearer    {}", t.expose())).is_ok());
}

#[test]
fn missing_and_malformed_are_told_apart() {
    let t = TokenSecret::generate().unwrap();
    assert_eq!(
        extract_token(Credentials::None, &Default::default()).unwrap_err(),
        DenyCode::MissingToken
    );
    assert_eq!(
        extract_token(Credentials::Several, &Default::default()).unwrap_err(),
        DenyCode::MalformedToken
    );
    assert_eq!(
        extract("Basic dXNlcjpwYXNz").unwrap_err(),
        DenyCode::MissingToken
    );
    assert_eq!(
        extract(&format!("Basic {}", t.expose())).unwrap_err(),
        DenyCode::MalformedToken
    );
    assert_eq!(extract(t.expose()).unwrap_err(), DenyCode::MalformedToken);
    assert_eq!(
        extract("Bearer hwz_short").unwrap_err(),
        DenyCode::MalformedToken
    );
    assert_eq!(
        extract(&format!("Bearer {} extra", t.expose())).unwrap_err(),
        DenyCode::MalformedToken
    );
    assert_eq!(
        extract(&format!("Bearer {} ", t.expose())).unwrap_err(),
        DenyCode::MalformedToken
    );
    assert_eq!(
        extract_token(Credentials::One(b"Bearer \xff\xfe"), &Default::default()).unwrap_err(),
        DenyCode::MalformedToken
    );
}

#[test]
fn state_checks_follow_the_documented_order() {
    let mut rec = record(Scope::Workspace {
        role: "workspace_viewer".into(),
    });
    rec.expires_at = Some(now());
    assert_eq!(check_state(&rec, now()), Err(DenyCode::TokenExpired));
    assert_eq!(
        check_state(&rec, now() - jiff::SignedDuration::from_nanos(1)),
        Ok(())
    );
    rec.disabled_at = Some(now());
    assert_eq!(check_state(&rec, now()), Err(DenyCode::TokenDisabled));
    rec.revoked_at = Some(now());
    assert_eq!(check_state(&rec, now()), Err(DenyCode::TokenRevoked));
}

// === decide, end to end over a real store ===

fn options() -> CacheOptions {
    CacheOptions {
        ttl: Duration::from_secs(60),
        negative_ttl: Duration::from_secs(5),
        max_entries: 1000,
        stale_if_error: Duration::ZERO,
    }
}

async fn run(cache: &TokenCache<Store>, auth: Option<String>, now: Timestamp) -> Option<DenyCode> {
    let path = format!("{WS}/projects/p/testcases");
    let facts = RequestFacts {
        method: &Method::GET,
        path: &path,
        query: None,
        upgrade: false,
        override_header: None,
        credentials: auth
            .as_deref()
            .map_or(Credentials::None, |a| Credentials::One(a.as_bytes())),
        now,
        client: ClientAddr::Known(std::net::IpAddr::from([192, 0, 2, 7])),
    };
    decide(cache, &policy(), &facts).await.code()
}

#[tokio::test]
async fn decide_walks_the_whole_path_over_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::Embedded(
        EmbeddedStore::open(dir.path(), Duration::from_secs(1))
            .await
            .unwrap(),
    );
    let cache = TokenCache::new(store, options());
    let bearer = |s: &TokenSecret| Some(format!("Bearer {}", s.expose()));

    let secret = TokenSecret::generate().unwrap();
    let mut rec = record(Scope::Workspace {
        role: "workspace_viewer".into(),
    });
    rec.expires_at = Some(Timestamp::now() + jiff::SignedDuration::from_hours(1));
    cache.create(&secret.hash(), &rec).await.unwrap();

    assert_eq!(run(&cache, bearer(&secret), Timestamp::now()).await, None);
    assert_eq!(
        run(&cache, None, Timestamp::now()).await,
        Some(DenyCode::MissingToken)
    );
    assert_eq!(
        run(&cache, Some("Bearer hwz_nope".into()), Timestamp::now()).await,
        Some(DenyCode::MalformedToken)
    );
    let unknown = TokenSecret::generate().unwrap();
    assert_eq!(
        run(&cache, bearer(&unknown), Timestamp::now()).await,
        Some(DenyCode::UnknownToken)
    );
    // Cached, and still refused at the instant of expiry.
    assert_eq!(
        run(&cache, bearer(&secret), rec.expires_at.unwrap()).await,
        Some(DenyCode::TokenExpired)
    );

    let stored = cache.find(&rec.id).await.unwrap().unwrap();
    let disabled = TokenRecord {
        disabled_at: Some(Timestamp::now()),
        ..rec.clone()
    };
    assert!(cache.replace(&stored, &disabled).await.unwrap());
    assert_eq!(
        run(&cache, bearer(&secret), Timestamp::now()).await,
        Some(DenyCode::TokenDisabled)
    );
    let stored = cache.find(&rec.id).await.unwrap().unwrap();
    let revoked = TokenRecord {
        revoked_at: Some(Timestamp::now()),
        ..disabled
    };
    assert!(cache.replace(&stored, &revoked).await.unwrap());
    assert_eq!(
        run(&cache, bearer(&secret), Timestamp::now()).await,
        Some(DenyCode::TokenRevoked)
    );
}

#[tokio::test]
async fn an_unreachable_store_fails_closed() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let store = Store::Redis(
        RedisStore::new(RedisOptions {
            url: format!("redis://127.0.0.1:{port}"),
            key_prefix: "x:".into(),
            timeout: Duration::from_millis(100),
            retention: Duration::from_secs(3600),
        })
        .unwrap(),
    );
    let cache = TokenCache::new(store, options());
    let secret = TokenSecret::generate().unwrap();
    let got = run(
        &cache,
        Some(format!("Bearer {}", secret.expose())),
        Timestamp::now(),
    )
    .await;
    assert_eq!(got, Some(DenyCode::StoreUnavailable));
    // Errors are not cached: the hash is not remembered as missing.
    cache.sync().await;
    assert_eq!(cache.entry_count(), 0);
}

// === hostile Authorization values ===

fn authorization_value() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
    use proptest::prelude::*;
    let token = TokenSecret::generate()
        .unwrap()
        .expose()
        .as_bytes()
        .to_vec();
    let scheme = prop::sample::select(vec!["Bearer", "bearer", "BEARER", "Basic", "Bearer:", ""]);
    let sep = prop::sample::select(vec![" ", "   ", "\t", ""]);
    let junk = prop::collection::vec(any::<u8>(), 0..6);
    let tail = prop_oneof![3 => Just(Vec::new()), 1 => junk.clone()];
    prop_oneof![
        3 => (scheme, sep, junk, tail, any::<bool>()).prop_map(
            move |(scheme, sep, before, after, keep)| {
                let mut v = format!("{scheme}{sep}").into_bytes();
                if keep {
                    v.extend(&token);
                } else {
                    v.extend(before);
                    v.extend(&token[..token.len() / 2]);
                }
                v.extend(after);
                v
            }
        ),
        1 => prop::collection::vec(any::<u8>(), 0..64),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

    #[test]
    fn bearer_extraction_accepts_only_one_well_formed_token(value in authorization_value()) {
        match extract_token(Credentials::One(&value), &Default::default()) {
            Ok(secret) => {
                // `Bearer` (any case), one or more spaces, the token, nothing else.
                let (scheme, rest) = value.split_at(6);
                proptest::prop_assert!(scheme.eq_ignore_ascii_case(b"bearer"));
                proptest::prop_assert!(rest.len() > 40 && rest.starts_with(b" "));
                proptest::prop_assert_eq!(rest.trim_ascii_start(), secret.expose().as_bytes());
            }
            Err(code) => proptest::prop_assert!(
                matches!(code, DenyCode::MissingToken | DenyCode::MalformedToken),
                "{:?}",
                code
            ),
        }
    }
}

/// A rotation's overlap is a revocation still to come: the value works
/// until that instant, and a cached record is refused from it on, with no
/// store read.
#[test]
fn a_future_revocation_ends_a_cached_token_at_its_instant() {
    let end = now() + jiff::SignedDuration::from_hours(24);
    let rec = TokenRecord {
        revoked_at: Some(end),
        rotated_to: Some(crate::token::TokenId::generate().unwrap()),
        ..record(Scope::Workspace {
            role: "workspace_viewer".into(),
        })
    };
    let cached = CachedRecord::new(&rec);
    let before = end - jiff::SignedDuration::from_nanos(1);
    assert_eq!(check_cached_state(&cached, before), Ok(()));
    assert_eq!(check_state(&rec, before), Ok(()));
    assert_eq!(
        check_cached_state(&cached, end),
        Err(DenyCode::TokenRevoked)
    );
    assert_eq!(check_state(&rec, end), Err(DenyCode::TokenRevoked));
}

#[test]
fn context_limits_refuse_early_use_and_other_addresses() {
    let at = |s: &str| s.parse::<Timestamp>().unwrap();
    let ip = |s: &str| ClientAddr::Known(s.parse().unwrap());
    let mut r = record(Scope::Workspace {
        role: "workspace_viewer".into(),
    });
    // No limits: no client address is ever asked for.
    let plain = CachedRecord::new(&r);
    assert!(plain.limits().is_none());
    let asked = std::sync::atomic::AtomicBool::new(false);
    let lazy = || {
        asked.store(true, std::sync::atomic::Ordering::Relaxed);
        crate::decide::Client::is(std::net::IpAddr::from([192, 0, 2, 7]))
    };
    assert_eq!(
        check_context(&plain, now(), ClientAddr::Lazy(&lazy)),
        Ok(())
    );
    assert!(!asked.load(std::sync::atomic::Ordering::Relaxed));

    r.not_before = Some(at("2027-01-02T00:00:00Z"));
    r.allow_from = vec![
        "10.0.0.0/8".parse().unwrap(),
        "2001:db8::/32".parse().unwrap(),
    ];
    let limited = CachedRecord::new(&r);
    // Before its start: not yet valid, whatever the address.
    assert_eq!(
        check_context(&limited, now(), ip("10.1.2.3")),
        Err(DenyCode::TokenNotYetValid)
    );
    let later = at("2027-01-02T00:00:00Z");
    assert_eq!(check_context(&limited, later, ip("10.1.2.3")), Ok(()));
    // IPv4-mapped IPv6 is the IPv4 address.
    assert_eq!(
        check_context(&limited, later, ip("::ffff:10.9.9.9")),
        Ok(())
    );
    assert_eq!(check_context(&limited, later, ip("2001:db8::1")), Ok(()));
    assert_eq!(
        check_context(&limited, later, ip("192.0.2.7")),
        Err(DenyCode::AddressNotAllowed)
    );
    // An unknown client is refused: deny by default.
    assert_eq!(
        check_context(&limited, later, ClientAddr::Unknown),
        Err(DenyCode::AddressNotAllowed)
    );
}

/// A revocation stamped by a gate whose clock runs ahead is in force at
/// once on a gate whose clock lags: only a rotation's overlap is a
/// revocation still to come.
#[test]
fn a_revocation_stamped_by_a_clock_ahead_is_in_force_on_a_gate_behind() {
    let ahead = now() + jiff::SignedDuration::from_secs(5);
    let ws = || {
        record(Scope::Workspace {
            role: "workspace_member".into(),
        })
    };
    let judged = |r: &TokenRecord| check_cached_state(&CachedRecord::new(r), now());
    // Revoked at once (no successor) by a gate 5 s ahead.
    let revoked = TokenRecord {
        revoked_at: Some(ahead),
        ..ws()
    };
    assert!(revoked.is_revoked_at(now()));
    assert_eq!(judged(&revoked), Err(DenyCode::TokenRevoked));
    // `explain` judges the record itself, the same way.
    assert_eq!(check_state(&revoked, now()), Err(DenyCode::TokenRevoked));
    // A rotation's overlap ending at that instant: works until then.
    let successor = crate::token::TokenId::generate().unwrap();
    let overlap = TokenRecord {
        revoked_at: Some(ahead),
        rotated_to: Some(successor),
        ..ws()
    };
    assert!(!overlap.is_revoked_at(now()));
    assert_eq!(judged(&overlap), Ok(()));
    assert_eq!(
        check_cached_state(&CachedRecord::new(&overlap), ahead),
        Err(DenyCode::TokenRevoked)
    );
}
