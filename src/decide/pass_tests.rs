use super::*;

fn one(v: &str) -> bool {
    presents_token(Credentials::One(v.as_bytes()), &Default::default())
}

#[test]
fn anything_shaped_like_a_hawzu_token_is_presented_in_any_scheme_or_case() {
    for v in [
        "Bearer hwz_AAAA",
        "bearer   HWZ_short",
        "Token hwz_x",
        "hwz_",
        "Digest username=\"hwz_abc\"",
        "Bearer x, hwz_y",
        // base64("ci:hwz_secret") and base64("hwz_secret:")
        "Basic Y2k6aHd6X3NlY3JldA==",
        "basic aHd6X3NlY3JldDo",
    ] {
        assert!(one(v), "{v}");
    }
    assert!(presents_token(Credentials::Several, &Default::default()));
}

/// A well-formed token is presented whatever surrounds it: no word split
/// can know every wrapping (`Bearer;`, quotes, slashes, glued to other
/// characters), and its checksum tells it from a look-alike inside
/// another credential.
#[test]
fn a_well_formed_token_is_presented_in_any_wrapping() {
    let t = crate::token::TokenSecret::generate().unwrap();
    let t = t.expose();
    for v in [
        format!("Bearer;{t}"),
        format!("Bearer/{t}"),
        format!("Bearer.{t}"),
        format!("Bearer '{t}'"),
        format!("Token token='{t}'"),
        format!("Bearer x{t}y"),
        format!("Bearer eyJhbGciOiJIUzI1NiJ9.{t}.c2ln"),
    ] {
        assert!(one(&v), "{v}");
    }
}

#[test]
fn other_credentials_are_not_a_hawzu_token() {
    for v in [
        "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlX2h3el8",
        "Bearer opaque-session-xhwz_y",
        "Basic YWxpY2U6c2VjcmV0", // alice:secret
        "Basic !!!",
        "",
    ] {
        assert!(!one(v), "{v}");
    }
    assert!(!presents_token(Credentials::None, &Default::default()));
}

#[test]
fn base64_decodes_both_alphabets() {
    assert_eq!(base64_decode(b"aGk=").unwrap(), b"hi");
    assert_eq!(base64_decode(b"_-8").unwrap(), [0xff, 0xef]);
    assert!(base64_decode(b"a b").is_none());
}

// === decisions, over a real store ===

use std::time::Duration;

use http::Method;
use jiff::Timestamp;

use crate::cache::{CacheOptions, TokenCache};
use crate::config::RuleSettings;
use crate::decide::{ClientAddr, decide};
use crate::policy::roles::Permission;
use crate::policy::rules::{MethodSet, Rule, RuleSet, Template};
use crate::store::{EmbeddedStore, Store, TokenStore};
use crate::token::{Scope, TokenRecord, TokenSecret};

const WS_ROUTE: &str = "/api/v1/workspaces/ws_1/projects";

fn policy(other: OtherCredentials) -> Policy {
    let mut rules = vec![Rule {
        methods: MethodSet::parse(["GET", "HEAD"]).unwrap(),
        template: Template::parse("/api/v1/status").unwrap(),
        access: Access::Public,
        origin: "policy.rules[0]".into(),
    }];
    rules.extend(RuleSet::defaults().rules().iter().cloned());
    Policy {
        rules: RuleSet::new(rules),
        other_credentials: other,
        ..Policy::default()
    }
}

/// A store holding one valid workspace-viewer token of `ws_1`.
async fn store_with_token() -> (tempfile::TempDir, TokenCache<Store>, TokenSecret) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::Embedded(
        EmbeddedStore::open(dir.path(), Duration::from_secs(1))
            .await
            .unwrap(),
    );
    let cache = TokenCache::new(
        store,
        CacheOptions {
            ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(5),
            max_entries: 100,
            stale_if_error: Duration::ZERO,
        },
    );
    let secret = TokenSecret::generate().unwrap();
    let rec = TokenRecord::sample(
        Scope::Workspace {
            role: "workspace_viewer".into(),
        },
        Timestamp::UNIX_EPOCH,
    );
    cache.create(&secret.hash(), &rec).await.unwrap();
    (dir, cache, secret)
}

/// `passed:<reason>[+token]`, `allow` or the deny code.
async fn outcome(
    cache: &TokenCache<Store>,
    policy: &Policy,
    method: Method,
    target: &str,
    auth: Option<&str>,
    upgrade: bool,
) -> String {
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let facts = RequestFacts {
        method: &method,
        path,
        query,
        upgrade,
        override_header: None,
        credentials: auth.map_or(Credentials::None, |a| Credentials::One(a.as_bytes())),
        now: Timestamp::now(),
        client: ClientAddr::Unknown,
    };
    match decide(cache, policy, &facts).await {
        Decision::Allow(_) => "allow".into(),
        Decision::Pass(p) => format!(
            "passed:{}{}",
            p.reason.as_str(),
            if p.own_credentials() { "" } else { "+token" }
        ),
        Decision::Deny(d) => d.code.as_str().into(),
    }
}

const JWT: &str = "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2ln";

#[tokio::test]
async fn refuse_is_todays_behaviour_except_on_a_public_route() {
    let (_dir, cache, secret) = store_with_token().await;
    let p = policy(OtherCredentials::Refuse);
    let token = format!("Bearer {}", secret.expose());
    let run = |m, path, auth| outcome(&cache, &p, m, path, auth, false);
    assert_eq!(run(Method::GET, WS_ROUTE, None).await, "missing_token");
    assert_eq!(
        run(Method::GET, WS_ROUTE, Some(JWT)).await,
        "malformed_token"
    );
    assert_eq!(run(Method::GET, WS_ROUTE, Some(&token)).await, "allow");
    assert_eq!(
        run(Method::GET, "/api/v1/status", None).await,
        "passed:public"
    );
    assert_eq!(
        run(Method::GET, "/api/v1/status", Some(JWT)).await,
        "passed:public"
    );
    // Only the methods the public rule names; an ambiguous path is no
    // public route.
    assert_eq!(
        run(Method::POST, "/api/v1/status", None).await,
        "missing_token"
    );
    assert_eq!(
        run(Method::GET, "/api/v1/./status", None).await,
        "missing_token"
    );
}

#[tokio::test]
async fn pass_lets_other_credentials_through_and_judges_every_hawzu_token() {
    let (_dir, cache, secret) = store_with_token().await;
    let p = policy(OtherCredentials::Pass);
    let token = format!("Bearer {}", secret.expose());
    let unknown = format!("Bearer {}", TokenSecret::generate().unwrap().expose());
    let run = |m, path, auth| outcome(&cache, &p, m, path, auth, false);
    assert_eq!(run(Method::GET, WS_ROUTE, None).await, "passed:no_token");
    assert_eq!(
        run(Method::DELETE, "/settings/", Some(JWT)).await,
        "passed:no_token"
    );
    assert_eq!(run(Method::GET, WS_ROUTE, Some(&token)).await, "allow");
    assert_eq!(
        run(Method::POST, WS_ROUTE, Some(&token)).await,
        "insufficient_role"
    );
    assert_eq!(
        run(Method::GET, WS_ROUTE, Some(&unknown)).await,
        "unknown_token"
    );
    let wrapped = format!("Bearer;{}", secret.expose());
    for malformed in [
        "Bearer hwz_short",
        "bearer HWZ_abc",
        "Token hwz_abc",
        "Basic Y2k6aHd6X3NlY3JldA==",
        &wrapped,
    ] {
        assert_eq!(
            run(Method::GET, WS_ROUTE, Some(malformed)).await,
            "malformed_token",
            "{malformed}"
        );
    }
    // A passed request is still one the gate can forward as what it saw.
    assert_eq!(
        run(Method::GET, &format!("{WS_ROUTE}?_method=DELETE"), None).await,
        "method_override"
    );
    assert_eq!(
        outcome(&cache, &p, Method::GET, WS_ROUTE, None, true).await,
        "upgrade_refused"
    );
}

#[tokio::test]
async fn a_hawzu_token_on_a_public_route_is_judged_then_passed_without_identity() {
    let (_dir, cache, secret) = store_with_token().await;
    let p = policy(OtherCredentials::Refuse);
    let token = format!("Bearer {}", secret.expose());
    let unknown = format!("Bearer {}", TokenSecret::generate().unwrap().expose());
    let run = |auth| outcome(&cache, &p, Method::GET, "/api/v1/status", auth, false);
    assert_eq!(run(Some(&token)).await, "passed:public+token");
    assert_eq!(run(Some(&unknown)).await, "unknown_token");
    assert_eq!(run(Some("Bearer hwz_bad")).await, "malformed_token");
}

#[test]
fn a_rule_is_public_or_needs_a_permission_never_both() {
    let rule = |permission: Option<&str>, access: Option<&str>| RuleSettings {
        path: "/health".into(),
        methods: vec!["GET".into()],
        permission: permission.map(str::to_owned),
        access: access.map(str::to_owned),
    };
    let build = |r: RuleSettings| {
        crate::config::PolicySettings {
            rules: vec![r],
            ..Default::default()
        }
        .build(&Default::default(), |key, why| format!("{key}: {why}"))
    };
    let public = build(rule(None, Some("public"))).unwrap();
    assert_eq!(public.rules.rules()[0].access, Access::Public);
    assert!(public.rules.has_public());
    let needs = build(rule(Some("workspace:read"), None)).unwrap();
    assert_eq!(
        needs.rules.rules()[0].access,
        Access::Permission(Permission::parse("workspace:read").unwrap())
    );
    assert!(!needs.rules.has_public());
    let both = build(rule(Some("workspace:read"), Some("public"))).unwrap_err();
    assert!(both.starts_with("policy.rules[0]: names both"), "{both}");
    let neither = build(rule(None, None)).unwrap_err();
    assert!(neither.contains("access = \"public\""), "{neither}");
    let other = build(rule(None, Some("open"))).unwrap_err();
    assert!(other.contains("`open` is not an access"), "{other}");
}

#[test]
fn other_credentials_is_refuse_by_default_and_a_bad_value_names_both_choices() {
    use crate::config::{env_name, load_from};
    let load = |v: Option<&str>| {
        let env = v
            .map(|v| (env_name("policy.other_credentials"), v.to_owned()))
            .into_iter()
            .collect();
        load_from(None, env).map(|l| l.policy.other_credentials)
    };
    assert_eq!(load(None).unwrap(), OtherCredentials::Refuse);
    assert_eq!(load(Some("pass")).unwrap(), OtherCredentials::Pass);
    let err = load(Some("allow")).unwrap_err().to_string();
    assert!(
        err.contains("policy.other_credentials")
            && err.contains("use refuse")
            && err.contains("or pass"),
        "{err}"
    );
}
