#![allow(clippy::unwrap_used)] // tests may panic

use super::*;
use crate::token::Scope;

fn record() -> TokenRecord {
    TokenRecord {
        name: "CI Runner".into(),
        created_by: "admin".into(),
        ..TokenRecord::sample(
            Scope::Workspace {
                role: "workspace_member".into(),
            },
            "2026-12-04T16:00:00.123Z".parse().unwrap(),
        )
    }
}

fn origin() -> Origin {
    Origin {
        actor: "admin".into(),
        client: Some("127.0.0.1".into()),
        request_id: Some("req-1".into()),
    }
}

#[test]
fn a_change_shows_only_the_fields_that_changed_to_the_second() {
    let before = record();
    let mut after = before.clone();
    after.disabled_at = Some("2026-12-04T17:00:00.999Z".parse().unwrap());
    after.disabled_by = Some("admin".into());
    after.last_used_at = Some(Timestamp::now());
    let now: Timestamp = "2026-12-04T17:00:00.999Z".parse().unwrap();
    let e = AuditEvent::changed(Action::Disable, &origin(), now, &before, &after);
    assert_eq!(
        serde_json::to_value(&e.before).unwrap(),
        serde_json::json!({"disabled_at": null, "disabled_by": null})
    );
    assert_eq!(
        serde_json::to_value(&e.after).unwrap(),
        serde_json::json!({"disabled_at": "2026-12-04T17:00:00Z", "disabled_by": "admin"})
    );
    let wire = serde_json::to_value(&e).unwrap();
    assert_eq!(wire["time"], "2026-12-04T17:00:00Z");
    assert_eq!(wire["action"], "disable");
    assert_eq!(wire["client"], "127.0.0.1");
    assert!(wire.get("id").is_none(), "no id before the store gives one");
}

#[test]
fn a_create_shows_every_public_field_and_nothing_else() {
    let r = record();
    let e = AuditEvent::created(&origin(), Timestamp::now(), &r);
    let keys: Vec<&str> = e.after.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "allow_from",
            "created_at",
            "created_by",
            "description",
            "disabled_at",
            "disabled_by",
            "expires_at",
            "limits_by",
            "name",
            "not_before",
            "revoked_at",
            "revoked_by",
            "rotated_from",
            "rotated_to",
            "scope",
            "workspace_id"
        ]
    );
    assert!(e.before.is_empty());
    assert_eq!(e.after["created_at"], "2026-12-04T16:00:00Z");
}

#[test]
fn the_prepared_actions_carry_their_reason_and_actor() {
    let before = record();
    let mut after = before.clone();
    after.disabled_at = Some(Timestamp::now());
    let e = AuditEvent::auto_disabled(Timestamp::now(), &before, &after, "unused for 30 days");
    assert_eq!(
        (e.action, e.actor.as_str(), e.client.as_deref()),
        (Action::AutoDisable, "gate", None)
    );
    assert_eq!(serde_json::to_value(e.action).unwrap(), "auto_disable");
    let l = AuditEvent::leak_reported(
        &Origin::system("leak-report:github"),
        Timestamp::now(),
        &before,
        &after,
        "found in a public repository",
    );
    assert_eq!(l.action.as_str(), "leak_report");
    assert_eq!(l.reason.as_deref(), Some("found in a public repository"));
}

#[test]
fn stored_events_read_back_with_their_position_as_id() {
    let e = AuditEvent::created(&origin(), Timestamp::now(), &record());
    let raw = e.to_stored();
    let p: Position = "1733330000000-7".parse().unwrap();
    let back = AuditEvent::from_stored(p, &raw).unwrap();
    assert_eq!(back.id, "1733330000000-7");
    assert_eq!(
        AuditEvent {
            id: String::new(),
            ..back
        },
        e
    );
}

#[test]
fn positions_parse_strictly_and_order_by_time_then_sequence() {
    for bad in ["", "1", "1-", "-1", "a-1", "1-1-1", "+1-0", "1 -0"] {
        assert_eq!(bad.parse::<Position>(), Err(BadPosition), "{bad:?}");
    }
    let a: Position = "5-9".parse().unwrap();
    let b: Position = "6-0".parse().unwrap();
    assert!(a < b);
    assert_eq!(b.to_string(), "6-0");
}

#[test]
fn queries_match_a_rotate_by_either_token() {
    let old = record();
    let mut old_after = old.clone();
    let new = record();
    old_after.rotated_to = Some(new.id.clone());
    let e = AuditEvent::rotated(&origin(), Timestamp::now(), &old, &old_after, &new);
    let q = |t: &TokenId| AuditQuery {
        token: Some(t.clone()),
        workspace: None,
        since: None,
        cursor: None,
        limit: 10,
        visible: Visible::all(),
    };
    assert!(q(&old.id).matches(&e));
    assert!(q(&new.id).matches(&e));
    assert!(!q(&TokenId::generate().unwrap()).matches(&e));
}

#[test]
fn every_action_has_its_webhook_event_type_in_the_list() {
    let types: Vec<&str> = Action::ALL.iter().map(|a| a.event_type()).collect();
    assert_eq!(types, EVENT_TYPES);
    assert_eq!(Action::LeakReport.event_type(), "token.leaked");
}

#[test]
fn an_expiry_notice_is_the_gate_s_with_its_window_and_changes_nothing() {
    let mut r = record();
    r.expires_at = Some("2026-12-10T16:00:00.5Z".parse().unwrap());
    let e = AuditEvent::expiry_notice(Timestamp::now(), &r, "7d");
    assert_eq!(e.action, Action::ExpiryNotice);
    assert_eq!(e.actor, "gate");
    assert_eq!(e.within.as_deref(), Some("7d"));
    assert!(e.before.is_empty() && e.after.is_empty());
    assert_eq!(
        e.reason.as_deref(),
        Some("expires at 2026-12-10T16:00:00Z, within 7d")
    );
    let json = serde_json::to_value(&e).unwrap();
    assert_eq!(json["action"], "expiry_notice");
    assert_eq!(json["within"], "7d");
    // Events without a window keep their shape.
    let created =
        serde_json::to_value(AuditEvent::created(&origin(), Timestamp::now(), &r)).unwrap();
    assert!(created.get("within").is_none());
}
