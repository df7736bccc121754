//! Tests of `token::change`: rotate and update rules.

use super::*;
use crate::token::record::RECORD_VERSION;
use crate::token::{Scope, TokenState};

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn now() -> Timestamp {
    ts("2027-01-10T12:00:00Z")
}

fn record(expires_at: Option<&str>) -> TokenRecord {
    TokenRecord {
        v: RECORD_VERSION,
        id: TokenId::generate().unwrap(),
        name: "CI".into(),
        description: None,
        workspace_id: "ws_1".into(),
        scope: Scope::Workspace {
            role: "workspace_member".into(),
        },
        created_by: "admin".into(),
        created_at: ts("2027-01-01T00:00:00Z"),
        expires_at: expires_at.map(ts),
        disabled_at: None,
        disabled_by: None,
        revoked_at: None,
        revoked_by: None,
        last_used_at: None,
        rotated_from: None,
        rotated_to: None,
        allow_from: Vec::new(),
        not_before: None,
        limits_by: None,
    }
}

fn rotate(expires: Option<&str>, overlap: Option<&str>) -> RotateToken {
    RotateToken {
        expires: expires.map(str::to_owned),
        overlap: overlap.map(str::to_owned),
    }
}

fn fields(r: Result<impl std::fmt::Debug, ChangeRefusal>) -> FieldErrors {
    match r {
        Err(ChangeRefusal::Fields(f)) => f,
        other => panic!("expected field errors, got {other:?}"),
    }
}

fn state_code(r: Result<impl std::fmt::Debug, ChangeRefusal>) -> (&'static str, String) {
    match r {
        Err(ChangeRefusal::State { code, message }) => (code, message),
        other => panic!("expected a state refusal, got {other:?}"),
    }
}

#[test]
fn rotate_keeps_the_expiry_by_default_and_takes_a_new_one() {
    let old = record(Some("2027-01-11T00:00:00Z"));
    let lim = RotationLimits::default();
    let v = rotate(None, None).validate(&old, lim, now()).unwrap();
    assert_eq!(v.expires_at, old.expires_at);
    assert_eq!(v.old_until, now());
    let v = rotate(Some("3mo"), None)
        .validate(&old, lim, now())
        .unwrap();
    assert_eq!(v.expires_at, Some(ts("2027-04-10T12:00:00Z")));
    assert!(v.expires_given);
    let f = fields(rotate(Some("3m"), None).validate(&old, lim, now()));
    assert!(f["expires"].contains("a minute or a month"), "{f:?}");
}

#[test]
fn an_overlap_is_capped_by_the_configured_maximum() {
    let old = record(None);
    let lim = RotationLimits::default();
    let v = rotate(None, Some("24h"))
        .validate(&old, lim, now())
        .unwrap();
    assert_eq!(v.old_until, ts("2027-01-11T12:00:00Z"));
    let f = fields(rotate(None, Some("8d")).validate(&old, lim, now()));
    assert!(
        f["overlap"].contains("admin.max_rotation_overlap (7d)"),
        "{f:?}"
    );
    let f = fields(rotate(None, Some("soon")).validate(&old, lim, now()));
    assert!(f["overlap"].contains("24h"), "{f:?}");
}

#[test]
fn an_expired_token_rotates_within_the_grace_period_with_a_new_expiry() {
    let old = record(Some("2027-01-05T00:00:00Z"));
    let lim = RotationLimits::default();
    let f = fields(rotate(None, None).validate(&old, lim, now()));
    assert!(f["expires"].starts_with("is required"), "{f:?}");
    let v = rotate(Some("1w"), Some("1h"))
        .validate(&old, lim, now())
        .unwrap();
    assert_eq!(v.expires_at, Some(ts("2027-01-17T12:00:00Z")));
    assert_eq!(v.old_until, now(), "an expired value gets no overlap");
    let long_ago = record(Some("2027-01-03T11:59:59Z"));
    let (code, msg) = state_code(rotate(Some("1w"), None).validate(&long_ago, lim, now()));
    assert_eq!(code, "token_expired");
    assert!(msg.contains("admin.rotate_after_expiry (7d)"), "{msg}");
}

#[test]
fn revoked_disabled_and_already_rotated_tokens_do_not_rotate() {
    let lim = RotationLimits::default();
    let mut old = record(None);
    old.disabled_at = Some(now());
    assert_eq!(
        state_code(rotate(None, None).validate(&old, lim, now())).0,
        "token_disabled"
    );
    let mut old = record(None);
    old.revoked_at = Some(now());
    assert_eq!(
        state_code(rotate(None, None).validate(&old, lim, now())).0,
        "token_revoked"
    );
    let mut old = record(None);
    old.revoked_at = Some(ts("2027-01-11T00:00:00Z"));
    old.rotated_to = Some(TokenId::generate().unwrap());
    assert_eq!(old.state(now()), TokenState::Enabled);
    assert_eq!(old.works_until(now()), old.revoked_at);
    assert_eq!(
        state_code(rotate(None, None).validate(&old, lim, now())).0,
        "token_revoked"
    );
    assert_eq!(old.state(ts("2027-01-11T00:00:00Z")), TokenState::Revoked);
}

fn update(json: &str) -> UpdateToken {
    serde_json::from_str(json).unwrap()
}

#[test]
fn update_changes_name_and_description_and_shortens_the_expiry() {
    let rec = record(Some("2027-03-01T00:00:00Z"));
    let next = update(r#"{"name":" Nightly ","description":"runs at 2","expires":"2027-02-01"}"#)
        .apply(&rec, now())
        .unwrap()
        .unwrap();
    assert_eq!(next.name, "Nightly");
    assert_eq!(next.description.as_deref(), Some("runs at 2"));
    assert_eq!(next.expires_at, Some(ts("2027-02-01T00:00:00Z")));
    let cleared = update(r#"{"description":""}"#)
        .apply(&next, now())
        .unwrap()
        .unwrap();
    assert_eq!(cleared.description, None);
    assert_eq!(update(r#"{"name":"CI"}"#).apply(&rec, now()).unwrap(), None);
}

#[test]
fn update_never_lengthens_nor_widens() {
    let rec = record(Some("2027-03-01T00:00:00Z"));
    for later in ["1y", "never", "2027-03-02"] {
        let body = format!(r#"{{"expires":"{later}"}}"#);
        let f = fields(update(&body).apply(&rec, now()));
        assert!(f["expires"].starts_with("can only be shortened"), "{f:?}");
    }
    let f = fields(
        update(r#"{"name":"x","scope":{"type":"workspace","role":"workspace_manager"},"workspace_id":"ws_2","colour":1}"#)
            .apply(&rec, now()),
    );
    assert!(f["scope"].contains("never widens"), "{f:?}");
    assert!(f["workspace_id"].contains("cannot be changed"), "{f:?}");
    assert!(f["colour"].contains("not a field"), "{f:?}");
    let f = fields(update("{}").apply(&rec, now()));
    assert!(f["body"].contains("at least one"), "{f:?}");
    let never = record(None);
    let next = update(r#"{"expires":"1w"}"#)
        .apply(&never, now())
        .unwrap()
        .unwrap();
    assert_eq!(next.expires_at, Some(ts("2027-01-17T12:00:00Z")));
}

#[test]
fn update_replaces_and_clears_context_limits_and_keeps_them_workable() {
    let r = record(Some("2027-03-01T00:00:00Z"));
    let limited = update(r#"{"allow_from":["10.0.0.0/8"],"not_before":"2027-02-01T00:00:00Z"}"#)
        .apply(&r, now())
        .unwrap()
        .unwrap();
    assert_eq!(limited.allow_from[0].to_string(), "10.0.0.0/8");
    assert_eq!(limited.not_before, Some(ts("2027-02-01T00:00:00Z")));
    // An expiry shortened to before the start would never work.
    let f = fields(update(r#"{"expires":"2027-01-20"}"#).apply(&limited, now()));
    assert!(f["not_before"].contains("never work"), "{f:?}");
    let cleared = update(r#"{"allow_from":[],"not_before":""}"#)
        .apply(&limited, now())
        .unwrap()
        .unwrap();
    assert!(!cleared.has_context_limits());
    let f = fields(update(r#"{"allow_from":["10.1.2.3/8"]}"#).apply(&r, now()));
    assert!(f["allow_from[0]"].contains("10.0.0.0"), "{f:?}");
    // A rotate's successor keeps the start, so its expiry must be after it.
    let f = fields(rotate(Some("2027-01-20"), None).validate(
        &limited,
        RotationLimits::default(),
        now(),
    ));
    assert!(f["expires"].contains("not_before"), "{f:?}");
}
