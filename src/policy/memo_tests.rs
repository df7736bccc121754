//! Unit tests of the remembered walk beyond the property test in
//! rules_tests.rs: a reloaded rule set is never answered from the old one,
//! the method's bit is part of the key, long paths are not kept, and a
//! thread holds at most SLOTS entries.

use super::*;
use crate::policy::Access;
use crate::policy::roles::Permission;
use crate::policy::rules::{Rule, Template};

const PROJECTS: &str = "/api/v1/workspaces/ws_1/projects";

fn permission(m: Option<Matched<'_, '_>>) -> Option<Access> {
    m.map(|m| m.rule.access)
}

#[test]
fn a_reloaded_rule_set_is_never_answered_from_the_old_one() {
    let before = RuleSet::defaults();
    let read = Access::Permission(Permission::parse("projects:read").unwrap());
    assert_eq!(
        permission(before.find_raw(&Method::GET, PROJECTS).unwrap()),
        Some(read)
    );
    assert_eq!(
        permission(before.find_raw(&Method::GET, PROJECTS).unwrap()),
        Some(read)
    );
    // The same path under a policy that made it public.
    let after = RuleSet::new(vec![Rule {
        methods: MethodSet::parse(["GET"]).unwrap(),
        template: Template::parse("/api/v1/workspaces/{workspace}/projects").unwrap(),
        access: Access::Public,
        origin: "reloaded".into(),
    }]);
    assert_ne!(before.generation(), after.generation());
    let found = after.find_raw(&Method::GET, PROJECTS).unwrap().unwrap();
    assert_eq!(found.rule.access, Access::Public);
    assert_eq!(found.captures.workspace, Some("ws_1"));
    // And no rule for DELETE there, though the old set had one.
    assert!(after.find_raw(&Method::DELETE, PROJECTS).unwrap().is_none());
    // A copy of a set is the same set.
    assert_eq!(before.clone().generation(), before.generation());
}

#[test]
fn the_method_is_part_of_the_key() {
    let rules = RuleSet::defaults();
    let get = rules.find_raw(&Method::GET, PROJECTS).unwrap().unwrap();
    let post = rules.find_raw(&Method::POST, PROJECTS).unwrap().unwrap();
    assert_ne!(get.rule.access, post.rule.access);
    assert_eq!(
        rules
            .find_raw(&Method::GET, PROJECTS)
            .unwrap()
            .unwrap()
            .rule
            .access,
        get.rule.access
    );
    // A method no rule names: no rule, kept or not.
    let purge = Method::from_bytes(b"PURGE").unwrap();
    assert!(rules.find_raw(&purge, PROJECTS).unwrap().is_none());
    assert!(rules.find_raw(&purge, PROJECTS).unwrap().is_none());
}

#[test]
fn refused_and_long_paths_are_read_every_time_and_the_memo_is_bounded() {
    let rules = RuleSet::defaults();
    for _ in 0..2 {
        assert_eq!(
            rules
                .find_raw(&Method::GET, "/api/v1/workspaces/ws_1/../x")
                .err(),
            Some(AmbiguousPath::DotSegment)
        );
    }
    let long = format!("{PROJECTS}/pr_1/testcases/{}", "a".repeat(LONGEST));
    for _ in 0..2 {
        let found = rules.find_raw(&Method::GET, &long).unwrap().unwrap();
        assert_eq!(found.captures.project, Some("pr_1"));
    }
    for i in 0..SLOTS * 3 {
        let path = format!("{PROJECTS}/pr_{i}");
        let found = rules.find_raw(&Method::GET, &path).unwrap().unwrap();
        assert_eq!(found.captures.project, Some(&path[PROJECTS.len() + 1..]));
    }
    assert!(held() <= SLOTS, "{}", held());
}
