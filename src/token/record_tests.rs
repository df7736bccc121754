use super::*;

fn now() -> Timestamp {
    "2027-01-01T00:00:00Z".parse().unwrap()
}

fn workspace_req(role: &str) -> CreateToken {
    CreateToken {
        name: Some("CI Runner".into()),
        description: None,
        workspace_id: Some("ws_1".into()),
        scope: Some(Scope::Workspace { role: role.into() }),
        expires: Some("1m".into()),
        created_by: Some("alice".into()),
        allow_from: None,
        not_before: None,
    }
}

fn project_req(grants: &[(&str, &str)]) -> CreateToken {
    CreateToken {
        scope: Some(Scope::Project {
            projects: grants
                .iter()
                .map(|(p, r)| ProjectGrant {
                    project_id: (*p).into(),
                    role: (*r).into(),
                })
                .collect(),
        }),
        ..workspace_req("workspace_viewer")
    }
}

fn errors_of(req: &CreateToken) -> FieldErrors {
    req.validate(&Policy::default(), now()).unwrap_err()
}

#[test]
fn a_valid_workspace_request_passes_with_trimmed_name() {
    let mut req = workspace_req("workspace_member");
    req.name = Some("  Nightly Automation  ".into());
    let ok = req.validate(&Policy::default(), now()).unwrap();
    assert_eq!(ok.name, "Nightly Automation");
    assert_eq!(ok.expires_at, Some("2027-02-01T00:00:00Z".parse().unwrap()));
}

#[test]
fn the_guides_project_example_passes() {
    let req = project_req(&[("proj_a", "project_manager"), ("proj_b", "project_viewer")]);
    let ok = req.validate(&Policy::default(), now()).unwrap();
    assert_eq!(ok.scope.kind(), TokenKind::Project);
}

#[test]
fn names_must_be_1_to_128_characters_after_trimming() {
    for bad in ["", "   ", &"x".repeat(129)] {
        let mut req = workspace_req("workspace_viewer");
        req.name = Some(bad.to_owned());
        assert!(
            errors_of(&req)["name"].contains("1-128 characters"),
            "{bad:?}"
        );
    }
    let mut req = workspace_req("workspace_viewer");
    req.name = Some("é".repeat(128));
    assert!(
        req.validate(&Policy::default(), now()).is_ok(),
        "128 characters, 256 bytes"
    );
    req.name = Some("line\nbreak".into());
    assert!(errors_of(&req)["name"].contains("control"));
}

#[test]
fn unknown_and_misplaced_roles_are_refused_with_the_accepted_list() {
    let e = errors_of(&workspace_req("admin"));
    assert!(e["scope.role"].contains("unknown role `admin`"), "{e:?}");
    assert!(e["scope.role"].contains("workspace_viewer"), "{e:?}");
    let e = errors_of(&workspace_req("project_manager"));
    assert!(e["scope.role"].contains("not a workspace role"), "{e:?}");
    let e = errors_of(&project_req(&[("p1", "workspace_manager")]));
    assert!(
        e["scope.projects[0].role"].contains("not a project role"),
        "{e:?}"
    );
}

#[test]
fn project_tokens_need_projects_each_once() {
    let e = errors_of(&project_req(&[]));
    assert!(e["scope.projects"].contains("at least one project"));
    let e = errors_of(&project_req(&[
        ("p1", "project_viewer"),
        ("p1", "project_member"),
    ]));
    assert!(
        e["scope.projects[1].project_id"].contains("listed twice"),
        "{e:?}"
    );
}

#[test]
fn malformed_ids_and_past_expiry_are_refused_together() {
    let mut req = project_req(&[("p 1", "project_viewer")]);
    req.workspace_id = Some("ws/1".into());
    req.expires = Some("2026-06-01".into());
    let e = errors_of(&req);
    assert!(e["workspace_id"].contains("1-64 characters"));
    assert!(e["scope.projects[0].project_id"].contains("1-64 characters"));
    assert!(e["expires"].contains("not in the future"));
    assert_eq!(e.len(), 3);
}

#[test]
fn missing_fields_are_each_named() {
    let e = errors_of(&CreateToken::default());
    for f in ["name", "workspace_id", "scope", "expires"] {
        assert!(e.contains_key(f), "{f}: {e:?}");
    }
}

#[test]
fn state_follows_the_decision_order_and_expires_at_the_instant() {
    let ok = workspace_req("workspace_viewer")
        .validate(&Policy::default(), now())
        .unwrap();
    let mut rec = TokenRecord {
        name: ok.name,
        workspace_id: ok.workspace_id,
        created_by: ok.created_by,
        expires_at: Some("2027-01-02T00:00:00Z".parse().unwrap()),
        ..TokenRecord::sample(ok.scope, now())
    };
    let exp = rec.expires_at.unwrap();
    assert_eq!(
        rec.state(exp - jiff::SignedDuration::from_nanos(1)),
        TokenState::Enabled
    );
    assert_eq!(rec.state(exp), TokenState::Expired);
    rec.disabled_at = Some(now());
    assert_eq!(rec.state(exp), TokenState::Disabled);
    rec.revoked_at = Some(now());
    assert_eq!(rec.state(exp), TokenState::Revoked);
    let back = TokenRecord::from_json(&rec.to_json()).unwrap();
    assert_eq!(back, rec);
    let json: serde_json::Value = serde_json::from_slice(&rec.to_json()).unwrap();
    assert_eq!(json["v"], 1);
    assert_eq!(json["scope"]["type"], "workspace");
}

#[test]
fn context_limits_are_optional_and_written_as_version_2() {
    let mut req = workspace_req("workspace_viewer");
    req.allow_from = Some(vec!["10.0.0.0/8".into(), "::ffff:192.0.2.0/120".into()]);
    req.not_before = Some("2027-01-01T06:00:00Z".into());
    let ok = req.validate(&Policy::default(), now()).unwrap();
    let shown: Vec<String> = ok
        .limits
        .allow_from
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(shown, ["10.0.0.0/8", "192.0.2.0/24"]);

    // A record written before the limits existed still reads.
    let old = r#"{"v":1,"id":"tok_0123456789abcdef","name":"CI","workspace_id":"ws_1",
        "scope":{"type":"workspace","role":"workspace_viewer"},"created_by":"alice",
        "created_at":"2027-01-01T00:00:00Z","expires_at":null,"disabled_at":null,
        "revoked_at":null,"last_used_at":null,"rotated_from":null}"#;
    let mut rec = TokenRecord::from_json(old.as_bytes()).unwrap();
    assert!(rec.allow_from.is_empty() && rec.not_before.is_none());
    let json: serde_json::Value = serde_json::from_slice(&rec.to_json()).unwrap();
    assert_eq!(json["v"], 1);
    assert!(json.get("allow_from").is_none() && json.get("not_before").is_none());

    // With limits: version 2, so a gate that predates them cannot ignore them.
    rec.allow_from = ok.limits.allow_from.clone();
    rec.not_before = ok.limits.not_before;
    let raw = rec.to_json();
    let json: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(json["v"], 2);
    assert_eq!(json["allow_from"][1], "192.0.2.0/24");
    let back = TokenRecord::from_json(&raw).unwrap();
    assert_eq!(back.allow_from, rec.allow_from);
    assert_eq!(back.not_before, rec.not_before);
    // Version 1 never carried limits: such a record is refused, not read
    // without them.
    let forged = String::from_utf8(raw)
        .unwrap()
        .replace(r#""v":2"#, r#""v":1"#);
    assert!(TokenRecord::from_json(forged.as_bytes()).is_err());
}
