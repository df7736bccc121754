use super::*;
use crate::token::{Scope, TokenId, record::RECORD_VERSION};

fn token() -> TokenSecret {
    TokenSecret::generate().unwrap()
}

fn extract(v: &str) -> Result<TokenSecret, DenyCode> {
    extract_token(Credentials::One(v.as_bytes()))
}

#[test]
fn bearer_scheme_is_case_insensitive() {
    let t = token();
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let got = extract(&format!("{scheme} {}", t.expose())).unwrap();
        assert_eq!(got.hash(), t.hash());
    }
    assert!(extract(&format!("Bearer    {}", t.expose())).is_ok());
}

#[test]
fn missing_and_malformed_are_told_apart() {
    let t = token();
    assert_eq!(
        extract_token(Credentials::None).unwrap_err(),
        DenyCode::MissingToken
    );
    assert_eq!(
        extract_token(Credentials::Several).unwrap_err(),
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
        extract_token(Credentials::One(b"Bearer \xff\xfe")).unwrap_err(),
        DenyCode::MalformedToken
    );
}

#[test]
fn state_checks_follow_the_documented_order() {
    let now: Timestamp = "2027-01-01T00:00:00Z".parse().unwrap();
    let mut rec = TokenRecord {
        v: RECORD_VERSION,
        id: TokenId::generate().unwrap(),
        name: "CI".into(),
        workspace_id: "ws".into(),
        scope: Scope::Workspace {
            role: "workspace_viewer".into(),
        },
        created_by: "alice".into(),
        created_at: now,
        expires_at: Some(now),
        disabled_at: None,
        revoked_at: None,
        last_used_at: None,
        rotated_from: None,
    };
    assert_eq!(check_state(&rec, now), Err(DenyCode::TokenExpired));
    rec.disabled_at = Some(now);
    assert_eq!(check_state(&rec, now), Err(DenyCode::TokenDisabled));
    rec.revoked_at = Some(now);
    assert_eq!(check_state(&rec, now), Err(DenyCode::TokenRevoked));
    rec.revoked_at = None;
    rec.disabled_at = None;
    rec.expires_at = None;
    assert_eq!(check_state(&rec, now), Ok(()));
}

#[test]
fn every_code_has_status_message_and_challenge() {
    for code in DenyCode::ALL {
        assert!(!code.message().is_empty());
        match code {
            DenyCode::StoreUnavailable => {
                assert_eq!(code.status(), 503);
                assert!(code.challenge().is_none());
            }
            DenyCode::MissingToken => {
                assert_eq!(code.status(), 401);
                assert_eq!(code.challenge().unwrap(), r#"Bearer realm="hawzu""#);
            }
            _ => {
                assert_eq!(code.status(), 401);
                let c = code.challenge().unwrap();
                assert!(
                    c.starts_with(
                        r#"Bearer realm="hawzu", error="invalid_token", error_description=""#
                    ),
                    "{c}"
                );
            }
        }
    }
}
