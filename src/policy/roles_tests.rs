use super::*;

fn p(s: &str) -> Permission {
    Permission::parse(s).unwrap()
}

fn role(name: &str) -> Role {
    Roles::default().get(name).cloned().unwrap()
}

#[test]
fn viewer_reads_everything_but_settings_and_tokens() {
    let v = role("project_viewer").permissions;
    assert!(v.contains(p("testcases:read")));
    assert!(v.contains(p("workspace:read")));
    assert!(!v.contains(p("settings:read")));
    assert!(!v.contains(p("tokens:read")));
    assert!(!v.contains(p("testcases:write")));
}

#[test]
fn member_writes_work_resources_but_does_not_delete() {
    let m = role("workspace_member").permissions;
    for r in [
        "testcases",
        "testplans",
        "executions",
        "defects",
        "requirements",
    ] {
        assert!(m.contains(p(&format!("{r}:write"))), "{r}");
        assert!(!m.contains(p(&format!("{r}:delete"))), "{r}");
    }
    assert!(!m.contains(p("reports:write")));
    assert!(!m.contains(p("projects:write")));
}

#[test]
fn coordinator_deletes_and_writes_reports() {
    let c = role("project_coordinator").permissions;
    assert!(c.contains(p("defects:delete")));
    assert!(c.contains(p("reports:write")));
    assert!(!c.contains(p("reports:delete")));
    assert!(!c.contains(p("members:manage")));
}

#[test]
fn project_manager_has_everything_but_workspace_and_tokens() {
    let m = role("project_manager").permissions;
    assert!(m.contains(p("members:manage")));
    assert!(m.contains(p("projects:delete")));
    assert!(!m.contains(p("workspace:read")));
    assert!(!m.contains(p("tokens:manage")));
    assert!(
        role("workspace_manager")
            .permissions
            .contains(p("tokens:manage"))
    );
}

#[test]
fn roles_nest_viewer_member_coordinator_manager() {
    let order = [
        "workspace_viewer",
        "workspace_member",
        "workspace_coordinator",
        "workspace_manager",
    ];
    for pair in order.windows(2) {
        assert!(
            role(pair[0])
                .permissions
                .is_subset_of(role(pair[1]).permissions),
            "{pair:?}"
        );
        assert!(
            !role(pair[1])
                .permissions
                .is_subset_of(role(pair[0]).permissions),
            "{pair:?}"
        );
    }
}

#[test]
fn custom_roles_are_added_and_checked() {
    let perms = vec!["executions:read".to_owned(), "executions:write".to_owned()];
    let roles =
        Roles::with_custom([("execution_runner", RoleScope::Any, perms.as_slice())]).unwrap();
    let r = roles.get("execution_runner").unwrap();
    assert!(r.permissions.contains(p("executions:write")));
    assert!(!r.permissions.contains(p("testcases:read")));
    assert!(
        roles
            .names_for(RoleScope::Project)
            .contains(&"execution_runner")
    );
    assert!(
        roles
            .names_for(RoleScope::Workspace)
            .contains(&"execution_runner")
    );

    let bad = vec!["executions:run".to_owned()];
    let err = Roles::with_custom([("runner", RoleScope::Any, bad.as_slice())]).unwrap_err();
    assert!(err.to_string().contains("unknown action `run`"), "{err}");
    let err =
        Roles::with_custom([("project_viewer", RoleScope::Any, perms.as_slice())]).unwrap_err();
    assert_eq!(err, RoleError::Builtin("project_viewer".into()));
    let err = Roles::with_custom([("Bad Name", RoleScope::Any, perms.as_slice())]).unwrap_err();
    assert_eq!(err, RoleError::Name("Bad Name".into()));
}

#[test]
fn patterns_expand_wildcards() {
    let all = PermissionSet::parse_pattern("*:*").unwrap();
    assert_eq!(all.iter().count(), RESOURCES.len() * ACTIONS.len());
    assert_eq!(
        PermissionSet::parse_pattern("*:read")
            .unwrap()
            .iter()
            .count(),
        RESOURCES.len()
    );
    assert_eq!(
        PermissionSet::parse_pattern("tokens:*")
            .unwrap()
            .iter()
            .count(),
        ACTIONS.len()
    );
    assert!(PermissionSet::parse_pattern("tokens").is_err());
    assert!(PermissionSet::parse_pattern("bogus:read").is_err());
}

#[test]
fn tokens_manage_constant_is_the_parsed_permission() {
    assert_eq!(TOKENS_MANAGE, p("tokens:manage"));
}

#[test]
fn listed_gives_builtin_roles_in_rank_order_then_custom_ones_by_name() {
    let zeta = vec!["executions:read".to_owned()];
    let alpha = vec!["reports:*".to_owned()];
    let roles = Roles::with_custom([
        ("zeta_runner", RoleScope::Any, zeta.as_slice()),
        ("alpha_reporter", RoleScope::Any, alpha.as_slice()),
    ])
    .unwrap();
    let listed = roles.listed();
    let names: Vec<&str> = listed.iter().map(|l| l.name).collect();
    assert_eq!(
        names,
        [
            "workspace_viewer",
            "workspace_member",
            "workspace_coordinator",
            "workspace_manager",
            "project_viewer",
            "project_member",
            "project_coordinator",
            "project_manager",
            "alpha_reporter",
            "zeta_runner",
        ]
    );
    assert!(listed[..8].iter().all(|l| l.builtin));
    assert!(!listed[8].builtin && listed[8].role.scope == RoleScope::Any);
    assert_eq!(
        listed[9].role.permissions.iter().collect::<Vec<_>>(),
        [p("executions:read")]
    );
}
