//! Unit tests of the remembered walk beyond the property test in
//! rules_tests.rs: a reloaded rule set is never answered from the old one,
//! the method's bit is part of the key, refused and long paths are not
//! kept.

use super::*;
use crate::policy::Access;
use crate::policy::roles::Permission;
use crate::policy::rules::Rule;

const PROJECTS: &str = "/api/v1/workspaces/ws_1/projects";

fn permission(m: Option<Matched<'_, '_>>) -> Option<Access> {
    m.map(|m| m.rule.access)
}

/// The default rules with the one at `at` replaced: the same indices, so
/// an answer remembered from the defaults would name a rule here.
fn defaults_with(at: usize, rule: impl FnOnce(&Rule) -> Rule) -> RuleSet {
    let mut rules = RuleSet::defaults().rules().to_vec();
    rules[at] = rule(&rules[at]);
    RuleSet::new(rules)
}

fn index(rules: &RuleSet, m: &Matched<'_, '_>) -> usize {
    rules
        .rules()
        .iter()
        .position(|r| std::ptr::eq(r, m.rule))
        .unwrap()
}

#[test]
fn a_reloaded_rule_set_is_never_answered_from_the_old_one() {
    let before = RuleSet::defaults();
    let read = Access::Permission(Permission::parse("projects:read").unwrap());
    let found = before.find_raw(&Method::GET, PROJECTS).unwrap().unwrap();
    assert_eq!(found.rule.access, read);
    let at = index(&before, &found);
    // Remembered now (the second answer is the kept one).
    assert_eq!(
        permission(before.find_raw(&Method::GET, PROJECTS).unwrap()),
        Some(read)
    );

    // A reload that made the rule at that index public: the new set's own
    // rule, not the old set's remembered answer.
    let after = defaults_with(at, |r| Rule {
        access: Access::Public,
        origin: "reloaded".into(),
        ..r.clone()
    });
    assert_ne!(before.generation(), after.generation());
    let found = after.find_raw(&Method::GET, PROJECTS).unwrap().unwrap();
    assert_eq!(found.rule.access, Access::Public);
    assert_eq!(&*found.rule.origin, "reloaded");
    assert_eq!(found.captures.workspace, Some("ws_1"));

    // A reload that took DELETE off the rule a path matched: no rule now.
    let project = format!("{PROJECTS}/pr_1");
    let found = before.find_raw(&Method::DELETE, &project).unwrap().unwrap();
    let at = index(&before, &found);
    assert!(
        before
            .find_raw(&Method::DELETE, &project)
            .unwrap()
            .is_some()
    );
    let after = defaults_with(at, |r| Rule {
        methods: MethodSet::parse(["GET"]).unwrap(),
        ..r.clone()
    });
    assert!(after.find_raw(&Method::DELETE, &project).unwrap().is_none());
    assert!(after.find_raw(&Method::DELETE, &project).unwrap().is_none());

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
fn refused_and_long_paths_are_read_every_time_and_never_kept() {
    let rules = RuleSet::defaults();
    let refused = "/api/v1/workspaces/ws_1/../x";
    for _ in 0..2 {
        assert_eq!(
            rules.find_raw(&Method::GET, refused).err(),
            Some(AmbiguousPath::DotSegment)
        );
    }
    assert!(!holds(refused));
    let long = format!("{PROJECTS}/pr_1/testcases/{}", "a".repeat(LONGEST));
    for _ in 0..2 {
        let found = rules.find_raw(&Method::GET, &long).unwrap().unwrap();
        assert_eq!(found.captures.project, Some("pr_1"));
    }
    assert!(!holds(&long));
    // A path that reads cleanly is kept, with its captures.
    let path = format!("{PROJECTS}/pr_7");
    let found = rules.find_raw(&Method::GET, &path).unwrap().unwrap();
    assert_eq!(found.captures.project, Some("pr_7"));
    assert!(holds(&path));
    let found = rules.find_raw(&Method::GET, &path).unwrap().unwrap();
    assert_eq!(found.captures.project, Some("pr_7"));
    assert_eq!(found.captures.workspace, Some("ws_1"));
}
