// Over 500 lines on purpose: the rule tables and their property tests, beside
// each other.

use super::*;
use proptest::prelude::*;
use unicode_normalization::UnicodeNormalization;

fn segs(raw: &str) -> Vec<String> {
    normalize(raw)
        .unwrap()
        .segments()
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn find(
    rules: &RuleSet,
    method: Method,
    raw: &str,
) -> Option<(String, Option<String>, Option<String>)> {
    let path = normalize(raw).unwrap();
    rules.find(&method, &path).map(|m| {
        (
            m.rule.access.to_string(),
            m.captures.workspace.map(str::to_owned),
            m.captures.project.map(str::to_owned),
        )
    })
}

#[test]
fn plain_and_encoded_paths_decode_once() {
    assert_eq!(segs("/"), Vec::<String>::new());
    assert_eq!(
        segs("/api/v1/workspaces/ws_1"),
        ["api", "v1", "workspaces", "ws_1"]
    );
    assert_eq!(segs("/a/b%20c/%41"), ["a", "b c", "A"]);
    assert_eq!(segs("/a/caf%C3%A9"), ["a", "café"]);
}

/// `segment`'s checks before they were folded into one pass (commit
/// 7c57780), kept as the reference the one pass must agree with.
fn segment_as_before(seg: &str) -> Result<Cow<'_, str>, AmbiguousPath> {
    if seg.is_empty() {
        return Err(AmbiguousPath::EmptySegment);
    }
    if seg == "." || seg == ".." {
        return Err(AmbiguousPath::DotSegment);
    }
    let bytes = seg.as_bytes();
    if bytes
        .iter()
        .any(|&b| matches!(b, b'\\' | b';' | b' ' | b'#') || b < 0x20 || b == 0x7f)
    {
        return Err(AmbiguousPath::ForbiddenCharacter);
    }
    if !bytes.contains(&b'%') {
        folded_reading(seg)?;
        return Ok(Cow::Borrowed(seg));
    }
    segment(seg)
}

#[test]
fn the_one_pass_segment_check_agrees_with_the_checks_it_replaced() {
    // Every string of up to four of these: each class of byte the pass
    // tells apart, and characters NFKC folds to dots.
    let alphabet = [
        "a", ".", "%", "2", "e", " ", ";", "\\", "#", "\u{1}", "\u{7f}", "é", "．", "\u{200b}",
    ];
    let mut strings = vec![String::new()];
    let mut checked = 0;
    for _ in 0..4 {
        let mut longer = Vec::new();
        for s in &strings {
            for a in alphabet {
                let seg = format!("{s}{a}");
                assert_eq!(segment(&seg), segment_as_before(&seg), "{seg:?}");
                checked += 1;
                longer.push(seg);
            }
        }
        strings = longer;
    }
    assert_eq!(checked, 14 + 14 * 14 + 14 * 14 * 14 + 14 * 14 * 14 * 14);
}

#[test]
fn look_alike_separators_are_refused() {
    for raw in [
        "/a/..%EF%BC%8F..%EF%BC%8Fp2",
        "/a/..\u{ff0f}..\u{ff0f}p2",
        "/a/x%EF%BC%BCy",
        "/a/x%EF%B9%A8y",
        "/a/x%EF%BC%85%EF%BC%92%EF%BD%86",
        "/a/x%EF%BC%9Fy",
        "/a/x%EF%BC%83y",
        "/a/x%EF%BC%9By",
        "/a/..%E2%88%95x",
        "/a/..%E2%88%96x",
        "/a/..%E2%81%84x",
        "/a/..%C2%A5x",
        "/a/..%E2%82%A9x",
        "/a/x%E2%A7%B5y",
        // Arabic percent sign: `%` in Windows' best-fit code pages.
        "/a/..%D9%AA2f..%D9%AA2fp2",
        // Full-width won and yen fold (NFKC) to ₩ and ¥.
        "/a/..%EF%BF%A6x",
        "/a/..%EF%BF%A5x",
    ] {
        assert_eq!(
            normalize(raw),
            Err(AmbiguousPath::LookAlikeSeparator),
            "{raw}"
        );
    }
    // A C1 control is a control, NEL (U+0085, White_Space) included.
    for raw in ["/a/x%C2%85y", "/a/x%C2%80y", "/a/x\u{85}y", "/a/x%C2%9Fy"] {
        assert_eq!(
            normalize(raw),
            Err(AmbiguousPath::ForbiddenCharacter),
            "{raw}"
        );
    }
    // Other non-ASCII names stay names.
    for (raw, seg) in [
        ("/a/%EF%BC%A1%EF%BC%8E", "Ａ．"),
        ("/a/caf%C3%A9", "café"),
        ("/a/\u{65e5}\u{672c}", "日本"),
        ("/a/%E2%82%AC5", "€5"),
        // A name's own `?`, `%` and `#`, sent encoded beside non-ASCII.
        ("/a/caf%C3%A9%3F", "café?"),
        ("/a/100%25%20caf%C3%A9", "100% café"),
        ("/a/C%23%20%C3%A9", "C# é"),
    ] {
        assert_eq!(segs(raw)[1], seg, "{raw}");
    }
}

/// A segment that is blank once a server trims spaces (`+` too) and drops
/// invisible characters reads as an empty one there (`/a//b`), which is
/// refused as written.
#[test]
fn look_alike_empty_segments_are_refused() {
    for raw in [
        "/a/+/b",
        "/a/++",
        "/a/%20/b",
        "/a/+%20/b",
        "/a/%2B/b",
        "/a/%C2%A0/b",
        "/a/%E2%80%8B/b",
        "/a/%E3%80%80/b",
        "/a/\u{a0}/b",
        "/a/\u{200b}",
    ] {
        assert_eq!(
            normalize(raw),
            Err(AmbiguousPath::LookAlikeEmptySegment),
            "{raw}"
        );
    }
    for (raw, seg) in [
        ("/a/c++", "c++"),
        ("/a/+1", "+1"),
        ("/a/a%20b", "a b"),
        ("/a/%E2%80%8Bx", "\u{200b}x"),
    ] {
        assert_eq!(segs(raw)[1], seg, "{raw}");
    }
}

#[test]
fn look_alike_dot_segments_are_refused() {
    for raw in [
        "/a/..%20/b",
        "/a/%20../b",
        "/a/.%20/b",
        "/a/%20.%20/b",
        "/a/..%C2%A0/b",
        "/a/..%E3%80%80/b",
        "/a/..%E2%80%8B/b",
        "/a/..%EF%BB%BF/b",
        "/a/.%C2%AD./b",
        "/a/.%CC%81./b",
        "/a/%EF%BC%8E%EF%BC%8E/b",
        "/a/.%EF%BC%8E/b",
        "/a/%E2%80%A4/b",
        "/a/%E2%80%A5/b",
        "/a/%EF%B9%92%EF%B9%92/b",
        "/a/.../b",
        "/a/..%20./b",
        // `+` read as a space (a path decoded as a form: PHP's
        // `urldecode`, Python's `unquote_plus`, Java's `URLDecoder`).
        "/a/..+/b",
        "/a/+../b",
        "/a/.+./b",
        "/a/..%2B/b",
        "/a/..%2b/b",
        "/a/..+%20/b",
        "/a/..\u{a0}+/b",
        "/a/\u{ff0e}\u{ff0e}/b",
        "/a/..\u{a0}/b",
        "/a/\u{2025}",
    ] {
        assert_eq!(
            normalize(raw),
            Err(AmbiguousPath::LookAlikeDotSegment),
            "{raw}"
        );
    }
    for (raw, seg) in [
        ("/a/a..b", "a..b"),
        ("/a/.hidden", ".hidden"),
        ("/a/x.json", "x.json"),
        ("/a/a%20b", "a b"),
        ("/a/a+b", "a+b"),
        ("/a/c++", "c++"),
        ("/a/%2B1", "+1"),
        ("/a/%EF%BC%A1%EF%BC%8E", "Ａ．"),
        ("/a/caf%C3%A9", "café"),
        ("/a/\u{65e5}\u{672c}", "日本"),
    ] {
        assert_eq!(segs(raw)[1], seg, "{raw}");
    }
}

#[test]
fn method_overrides_in_a_query_are_found_in_any_spelling() {
    for q in [
        "_method=DELETE",
        "_METHOD=delete",
        "_Method",
        "a=1&_method=DELETE",
        "a=1;_method=DELETE",
        "%5Fmethod=DELETE",
        "%5f%6d%65%74%68%6f%64=DELETE",
        "%255fmethod=DELETE",
        ".method=x",
        "%2Emethod=x",
        "+_method=x",
        "%20_method=x",
        "__method=x",
        "-method=x",
        "_method[]=x",
        "_method%5B%5D=x",
        "_method%20=x",
        // PHP measures a name with strlen(): it ends at a NUL.
        "_method%00=x",
        "_method%00x=x",
        "%5Fmethod%00=x",
        "_method%2500=x",
        "_method%00%5B%5D=x",
        "_method%01=x",
    ] {
        assert!(names_method_override(q), "{q}");
    }
    for q in [
        "",
        "method=DELETE",
        "q=_method",
        "sort=_method_name",
        "_methods=x",
        "x_method=x",
        "_meth=x",
        "%zz_method",
    ] {
        assert!(!names_method_override(q), "{q}");
    }
}

#[test]
fn ambiguous_paths_are_refused() {
    use AmbiguousPath::*;
    let cases = [
        ("api", NotAbsolute),
        ("", NotAbsolute),
        ("/a//b", EmptySegment),
        ("//a", EmptySegment),
        ("/a/", EmptySegment),
        ("/a/./b", DotSegment),
        ("/a/../b", DotSegment),
        ("/a/..", DotSegment),
        ("/a/%2e%2e/b", EncodedSeparator),
        ("/a/%2E/b", EncodedSeparator),
        ("/a/.%2e/b", EncodedSeparator),
        ("/a%2fb", EncodedSeparator),
        ("/a%2Fb", EncodedSeparator),
        ("/a%5cb", EncodedSeparator),
        ("/a%00b", EncodedSeparator),
        ("/a\\b", ForbiddenCharacter),
        ("/a\0b", ForbiddenCharacter),
        ("/a;x=1/b", ForbiddenCharacter),
        ("/a%3bx", ForbiddenCharacter),
        ("/a%0d%0ab", ForbiddenCharacter),
        // A server may end the path at a raw space or `#`.
        ("/a /b", ForbiddenCharacter),
        ("/a/b c", ForbiddenCharacter),
        ("/a/b#/c", ForbiddenCharacter),
        ("/a/b\tc", ForbiddenCharacter),
        ("/a%", BadPercentEncoding),
        ("/a%2", BadPercentEncoding),
        ("/a%zz", BadPercentEncoding),
        ("/a%252e", DoubleEncoding),
        ("/a%252f", DoubleEncoding),
        ("/a%c0%ae", NotUtf8),
        ("/a%ff", NotUtf8),
    ];
    for (raw, want) in cases {
        assert_eq!(normalize(raw), Err(want), "{raw:?}");
    }
    assert_eq!(normalize(&"/a".repeat(MAX_SEGMENTS + 1)), Err(TooLong));
}

#[test]
fn default_rules_follow_the_design_table() {
    let r = RuleSet::defaults();
    let ws = "/api/v1/workspaces/ws_1";
    let cases = [
        (Method::GET, ws.to_owned(), Some("workspace:read")),
        (Method::HEAD, ws.to_owned(), Some("workspace:read")),
        (Method::PATCH, ws.to_owned(), Some("workspace:write")),
        (Method::DELETE, ws.to_owned(), None),
        (Method::GET, format!("{ws}/projects"), Some("projects:read")),
        (
            Method::POST,
            format!("{ws}/projects"),
            Some("projects:write"),
        ),
        (
            Method::DELETE,
            format!("{ws}/projects/p1"),
            Some("projects:delete"),
        ),
        (
            Method::GET,
            format!("{ws}/projects/p1/testcases"),
            Some("testcases:read"),
        ),
        (
            Method::GET,
            format!("{ws}/projects/p1/testcases/tc_9/steps"),
            Some("testcases:read"),
        ),
        (
            Method::POST,
            format!("{ws}/projects/p1/executions/run"),
            Some("executions:write"),
        ),
        (
            Method::PUT,
            format!("{ws}/projects/p1/defects/d1"),
            Some("defects:write"),
        ),
        (
            Method::DELETE,
            format!("{ws}/projects/p1/requirements/r1"),
            Some("requirements:delete"),
        ),
        (
            Method::GET,
            format!("{ws}/projects/p1/reports"),
            Some("reports:read"),
        ),
        (Method::GET, format!("{ws}/members"), Some("members:read")),
        (
            Method::POST,
            format!("{ws}/members/u1"),
            Some("members:manage"),
        ),
        (
            Method::DELETE,
            format!("{ws}/settings/sso"),
            Some("settings:manage"),
        ),
        (Method::GET, format!("{ws}/projects/p1/unknown"), None),
        (Method::OPTIONS, format!("{ws}/projects"), None),
        (Method::GET, "/".into(), None),
        (Method::GET, "/login".into(), None),
        (Method::GET, "/settings/access-tokens".into(), None),
        (Method::GET, "/API/v1/workspaces/ws_1".into(), None),
    ];
    for (m, path, want) in cases {
        let got = find(&r, m.clone(), &path).map(|(p, _, _)| p);
        assert_eq!(got.as_deref(), want, "{m} {path}");
    }
    let (_, ws_cap, p_cap) =
        find(&r, Method::GET, &format!("{ws}/projects/p1/testcases/x")).unwrap();
    assert_eq!(ws_cap.as_deref(), Some("ws_1"));
    assert_eq!(p_cap.as_deref(), Some("p1"));
    // 3 + 6 resources × 3 + members and settings × 3 + 2 for the first two rows
    assert_eq!(r.rules().len(), 2 + 2 + 3 + 6 * 3 + 2 * 3);
}

#[test]
fn first_match_wins() {
    let rule = |t: &str, p: &str, origin: &str| Rule {
        methods: MethodSet::parse(["GET"]).unwrap(),
        template: Template::parse(t).unwrap(),
        access: Permission::parse(p).unwrap().into(),
        origin: origin.into(),
    };
    let rules = RuleSet::new(vec![
        rule(
            "/api/v1/workspaces/{workspace}/projects/{project}/executions/**",
            "executions:read",
            "custom",
        ),
        rule(
            "/api/v1/workspaces/{workspace}/projects/{project}/*/**",
            "reports:read",
            "catch-all",
        ),
    ]);
    let path = normalize("/api/v1/workspaces/w/projects/p/executions/1").unwrap();
    assert_eq!(
        rules.find(&Method::GET, &path).unwrap().rule.origin,
        "custom"
    );
    let path = normalize("/api/v1/workspaces/w/projects/p/defects").unwrap();
    assert_eq!(
        rules.find(&Method::GET, &path).unwrap().rule.origin,
        "catch-all"
    );
    // `**` matches zero segments; `*` exactly one.
    let path = normalize("/api/v1/workspaces/w/projects/p/executions").unwrap();
    assert_eq!(
        rules.find(&Method::GET, &path).unwrap().rule.origin,
        "custom"
    );
    let path = normalize("/api/v1/workspaces/w/projects/p").unwrap();
    assert!(rules.find(&Method::GET, &path).is_none());
}

/// A segment where a rule captures `{workspace}` or `{project}` that is
/// no id (percent-encoded, or with a `.`) ends the walk: no rule, so the
/// request is refused — never judged by a later, looser rule, when the API
/// may read it as the id (`p%31` decoded is `p1`; `p1.json` is `p1` to a
/// framework that strips the format). Before, the walk went on to the
/// catch-all here and allowed `projects:read`.
#[test]
fn a_capture_that_is_no_id_ends_the_walk_rather_than_reach_a_looser_rule() {
    let rule = |t: &str, p: &str, origin: &str| Rule {
        methods: MethodSet::parse(["GET"]).unwrap(),
        template: Template::parse(t).unwrap(),
        access: Permission::parse(p).unwrap().into(),
        origin: origin.into(),
    };
    let rules = RuleSet::new(vec![
        rule(
            "/api/v1/workspaces/{workspace}/projects/{project}/settings/**",
            "settings:read",
            "strict",
        ),
        rule(
            "/api/v1/workspaces/{workspace}/projects/*/**",
            "projects:read",
            "loose",
        ),
    ]);
    let origin = |raw: &str| {
        let path = normalize(raw).unwrap();
        rules
            .find(&Method::GET, &path)
            .map(|m| m.rule.origin.clone())
    };
    assert_eq!(
        origin("/api/v1/workspaces/w/projects/p1/settings/k").as_deref(),
        Some("strict")
    );
    for raw in [
        "/api/v1/workspaces/w/projects/p%31/settings/k",
        "/api/v1/workspaces/w/projects/p1.json/settings/k",
        "/api/v1/workspaces/w/projects/caf%C3%A9/settings/k",
        "/api/v1/workspaces/w%5F1/projects/p1/settings/k",
    ] {
        assert_eq!(origin(raw), None, "{raw}");
    }
    // A segment the strict rule does not capture is the loose rule's.
    assert_eq!(
        origin("/api/v1/workspaces/w/projects/p%31/runs").as_deref(),
        Some("loose")
    );
}

/// A later rule that can only be reached through a segment an earlier
/// rule captures as an id, where the later one has a literal that is no
/// id, never matches (the walk ends there): warned of at load, naming both
/// and saying to put the later one first.
#[test]
fn a_rule_an_earlier_capture_shadows_is_warned_of() {
    let rule = |t: &str, methods: &[&str], access: Access, origin: &str| Rule {
        methods: MethodSet::parse(methods.iter().copied()).unwrap(),
        template: Template::parse(t).unwrap(),
        access,
        origin: origin.into(),
    };
    let read = || Access::from(Permission::parse("projects:read").unwrap());
    let shadowed = RuleSet::new(vec![
        rule("/{workspace}/**", &["GET"], read(), "policy.rules[0]"),
        rule("/favicon.ico", &["GET"], Access::Public, "policy.rules[1]"),
        rule(
            "/api/v1/workspaces/{workspace}",
            &["GET"],
            read(),
            "policy.rules[2]",
        ),
        rule(
            "/api/v1/workspaces/export.csv",
            &["GET", "HEAD"],
            read(),
            "policy.rules[3]",
        ),
    ]);
    let said = shadowed.warnings().join("\n");
    for what in [
        "policy.rules[1] (`/favicon.ico`)",
        "policy.rules[0]",
        "policy.rules[3] (`/api/v1/workspaces/export.csv`)",
        "policy.rules[2]",
        "first",
    ] {
        assert!(said.contains(what), "{what}: {said}");
    }
    // In the other order, with methods that do not meet, or with a literal
    // that is an id (the earlier rule takes it, as it always did), nothing.
    let fine = RuleSet::new(vec![
        rule("/favicon.ico", &["GET"], Access::Public, "policy.rules[0]"),
        rule("/{workspace}/x/**", &["GET"], read(), "policy.rules[1]"),
        rule(
            "/api/v1/workspaces/{workspace}",
            &["POST"],
            read(),
            "policy.rules[2]",
        ),
        rule(
            "/api/v1/workspaces/export.csv",
            &["GET"],
            read(),
            "policy.rules[3]",
        ),
        rule(
            "/api/v1/workspaces/{workspace}/x",
            &["GET"],
            read(),
            "policy.rules[4]",
        ),
        rule(
            "/api/v1/workspaces/ws_1/x",
            &["GET"],
            read(),
            "policy.rules[5]",
        ),
    ]);
    assert!(fine.warnings().is_empty(), "{:?}", fine.warnings());
    // No path reaches both: the later capture takes ids only.
    let apart = RuleSet::new(vec![
        rule("/{workspace}/foo.json", &["GET"], read(), "policy.rules[0]"),
        rule("/x.y/{workspace}", &["GET"], read(), "policy.rules[1]"),
    ]);
    assert!(apart.warnings().is_empty(), "{:?}", apart.warnings());
    assert!(RuleSet::defaults().warnings().is_empty());
}

#[test]
fn bad_templates_and_methods_are_refused() {
    for t in [
        "api",
        "/a//b",
        "/a/**/b",
        "/{workspace}/{workspace}",
        "/{team}",
        "/a*",
        "/a%2f",
        "/./a",
        "/a;b",
    ] {
        assert!(Template::parse(t).is_err(), "{t}");
    }
    assert!(Template::parse("/").is_ok());
    assert!(matches!(
        MethodSet::parse(["get"]),
        Err(RuleError::Method(_))
    ));
    assert!(matches!(MethodSet::parse([]), Err(RuleError::NoMethod)));
}

/// Another server's reading of a path, as lenient as the common ones:
/// decode everything (repeatedly), treat `\` as `/`, drop `;params`, skip
/// empty segments and resolve dot segments.
fn lenient_reading(raw: &str) -> Option<Vec<String>> {
    let mut bytes = raw.as_bytes().to_vec();
    for _ in 0..3 {
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%'
                && let (Some(h), Some(l)) = (
                    bytes.get(i + 1).and_then(|&b| hex(b)),
                    bytes.get(i + 2).and_then(|&b| hex(b)),
                )
            {
                out.push(h * 16 + l);
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        bytes = out;
    }
    let text = String::from_utf8(bytes).ok()?.replace('\\', "/");
    let mut segs: Vec<String> = Vec::new();
    for s in text.split('/') {
        let s = s.split(';').next().unwrap_or("");
        match s {
            "" | "." => {}
            ".." => {
                segs.pop();
            }
            s => segs.push(s.to_owned()),
        }
    }
    Some(segs)
}

fn path_strategy() -> impl Strategy<Value = String> {
    let atoms = prop::sample::select(vec![
        "a",
        "b",
        "api",
        ".",
        "..",
        "/",
        "//",
        "%2e",
        "%2E",
        "%2f",
        "%5c",
        "%00",
        "%25",
        "%41",
        "%",
        "%zz",
        "\\",
        ";",
        "x=1",
        "%c0%ae",
        "%C3%A9",
        "é",
        "~",
        "-",
        "_",
        // Look-alikes of `.` and spaces a server may trim or fold.
        "%20",
        "%C2%A0",
        "%E2%80%8B",
        "%EF%BC%8E",
        "\u{ff0e}",
        "\u{2025}",
        "\u{a0}",
        "%E3%80%80",
        // Look-alikes of separators a server may fold.
        "%EF%BC%8F",
        "\u{ff0f}",
        "%EF%BC%BC",
        "%EF%BC%85",
        "%E2%88%95",
        "%C2%A5",
    ]);
    prop::collection::vec(atoms, 0..12).prop_map(|parts| format!("/{}", parts.concat()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn no_accepted_path_is_read_two_ways(raw in path_strategy()) {
        if let Ok(ours) = normalize(&raw) {
            let ours: Vec<String> = ours.segments().iter().map(|s| s.to_string()).collect();
            prop_assert_eq!(Some(ours.clone()), lenient_reading(&raw), "raw {:?}", raw);
            for s in &ours {
                prop_assert!(s != "." && s != ".." && !s.contains(['/', '\\', ';', '\0']));
                // Nor does one that folds NFKC find a separator the name
                // did not hold (`%`, `#`, `?` decoded from `%25`, `%23`,
                // `%3F` are the name's own).
                let folded: String = s.nfkc().collect();
                prop_assert!(!folded.contains(['/', '\\', ';']), "{:?} folds to {:?}", raw, folded);
                for c in ['%', '#', '?'] {
                    prop_assert_eq!(folded.matches(c).count(), s.matches(c).count(), "{:?} folds to {:?}", raw, folded);
                }
                // A server that trims Unicode spaces, or folds NFKC and
                // then trims, reads no dot segment either.
                let folded: String = s.nfkc().collect();
                for read in [s.trim(), folded.trim()] {
                    prop_assert!(read != "." && read != "..", "{:?} reads as {:?}", raw, read);
                }
            }
        }
    }

    #[test]
    fn arbitrary_paths_never_panic(raw in "\\PC{0,80}") {
        let _ = normalize(&raw);
        let _ = Template::parse(&raw);
    }

    #[test]
    fn default_rules_never_capture_an_unnormal_segment(raw in path_strategy()) {
        if let Ok(path) = normalize(&raw) {
            let rules = RuleSet::defaults();
            for m in [Method::GET, Method::POST, Method::DELETE] {
                if let Some(found) = rules.find(&m, &path) {
                    for c in [found.captures.workspace, found.captures.project].into_iter().flatten() {
                        prop_assert!(!c.is_empty() && !c.contains('/'));
                    }
                }
            }
        }
    }
}

// === the matcher against a reference ===

/// The rule a match names: origin, template and permission (the built-in
/// rules share one origin).
fn name(rule: &Rule) -> String {
    format!("{} {:?} {}", rule.origin, rule.template, rule.access)
}

/// A plain reading of "the first rule whose methods and template match":
/// methods from the rule's listed names, the template from its text,
/// literals against the percent-decoded raw segment, a capture only as an
/// id exactly as sent.
fn reference<'p>(rules: &RuleSet, m: &Method, raw: &'p str) -> Option<(String, Captures<'p>)> {
    let split = |s: &'p str| -> Vec<&'p str> {
        if s == "/" {
            Vec::new()
        } else {
            s[1..].split('/').collect()
        }
    };
    let path = split(raw);
    // A rule whose shape fits but whose capture is no id ends the walk.
    let mut not_an_id = false;
    rules.rules().iter().find_map(|rule| {
        let names = format!("{:?}", rule.methods);
        if not_an_id || !names.split(',').any(|n| n == m.as_str()) {
            return None;
        }
        let text = rule.template.as_str().to_owned();
        let template: Vec<&str> = if text == "/" {
            Vec::new()
        } else {
            text[1..].split('/').collect()
        };
        let mut captures = Captures::default();
        let mut ids = true;
        let mut i = 0;
        for t in template {
            if t == "**" {
                i = path.len();
                break;
            }
            let seg = *path.get(i)?;
            match t {
                "*" => {}
                "{workspace}" => {
                    captures.workspace = Some(seg);
                    ids &= crate::policy::ids::valid_id(seg);
                }
                "{project}" => {
                    captures.project = Some(seg);
                    ids &= crate::policy::ids::valid_id(seg);
                }
                lit => {
                    if lenient_reading(&format!("/{seg}")) != Some(vec![lit.to_owned()]) {
                        return None;
                    }
                }
            }
            i += 1;
        }
        if i != path.len() {
            return None;
        }
        not_an_id = !ids;
        ids.then(|| (name(rule), captures))
    })
}

const LITERALS: [&str; 8] = [
    "api",
    "v1",
    "workspaces",
    "projects",
    "testcases",
    "A",
    "ws_1",
    "café",
];

fn custom_rules() -> impl Strategy<Value = RuleSet> {
    let seg = prop_oneof![
        prop::sample::select(LITERALS.to_vec()),
        Just("{workspace}"),
        Just("{project}"),
        Just("*"),
        Just("**"),
    ];
    let rule = (1u8..128, prop::collection::vec(seg, 0..6));
    prop::collection::vec(rule, 0..6).prop_map(|rules| {
        let rules = rules
            .into_iter()
            .enumerate()
            .filter_map(|(i, (bits, segs))| {
                let names = METHODS
                    .iter()
                    .enumerate()
                    .filter(|(b, _)| bits & (1 << b) != 0)
                    .map(|(_, m)| m.as_str());
                Some(Rule {
                    methods: MethodSet::parse(names).ok()?,
                    // Some of these are invalid (`**` not last, a capture twice).
                    template: Template::parse(&format!("/{}", segs.join("/"))).ok()?,
                    access: Permission::parse("testcases:read").ok()?.into(),
                    origin: format!("custom[{i}]"),
                })
            })
            .collect();
        RuleSet::new(rules)
    })
}

fn api_path() -> impl Strategy<Value = String> {
    let atom = prop::sample::select(vec![
        "api",
        "v1",
        "workspaces",
        "projects",
        "testcases",
        "members",
        "A",
        "%41",
        "ws_1",
        "ws-2",
        "p1",
        "caf%C3%A9",
        "café",
        "x%20y",
        "%2e",
        "",
    ]);
    prop::collection::vec(atom, 0..10).prop_map(|a| format!("/{}", a.join("/")))
}

fn method() -> impl Strategy<Value = Method> {
    prop::sample::select(vec![
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::OPTIONS,
        Method::TRACE,
        Method::from_bytes(b"get").unwrap(),
    ])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn rule_matching_agrees_with_a_reference_matcher(
        m in method(),
        raw in api_path(),
        custom in custom_rules(),
    ) {
        let Ok(path) = normalize(&raw) else {
            return Ok(());
        };
        for rules in [RuleSet::defaults(), custom] {
            let got = rules.find(&m, &path).map(|f| (name(f.rule), f.captures));
            prop_assert_eq!(got, reference(&rules, &m, &raw), "{} {:?}", m, raw);
        }
    }
}

/// `_method` spelled as a client may: each byte raw or `%xx` (either hex
/// case), letters in either case.
fn override_name() -> impl Strategy<Value = String> {
    prop::collection::vec((any::<bool>(), any::<bool>(), any::<bool>()), 7).prop_map(|picks| {
        "_method"
            .bytes()
            .zip(picks)
            .map(|(b, (encode, upper, hex_upper))| {
                let b = if upper { b.to_ascii_uppercase() } else { b };
                match (encode, hex_upper) {
                    (true, true) => format!("%{b:02X}"),
                    (true, false) => format!("%{b:02x}"),
                    (false, _) => char::from(b).to_string(),
                }
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn a_method_override_is_found_however_it_is_spelled_and_wherever_it_stands(
        name in override_name(),
        tail in prop::sample::select(vec!["", "%00", "%00junk", "%2500", "%5B%5D", "[x]", "%20"]),
        before in prop::collection::vec("[a-z]{1,5}=[a-z0-9]{0,5}", 0..3),
        after in prop::collection::vec("[a-z]{1,5}=[a-z0-9]{0,5}", 0..3),
        sep in prop::sample::select(vec!["&", ";"]),
        value in "[A-Za-z]{0,8}",
    ) {
        let mut params = before.clone();
        params.push(format!("{name}{tail}={value}"));
        params.extend(after);
        let query = params.join(sep);
        prop_assert!(names_method_override(&query), "{:?}", query);
    }
}

// === the remembered walk (memo.rs) ===

/// What `find_raw` answers, or the walk: the rule's index and the captures.
type Answer<'p> = Result<Option<(usize, Captures<'p>)>, AmbiguousPath>;

fn answer<'p>(
    rules: &RuleSet,
    found: Result<Option<Matched<'_, 'p>>, AmbiguousPath>,
) -> Answer<'p> {
    found.map(|f| {
        f.map(|m| {
            let i = rules
                .rules()
                .iter()
                .position(|r| std::ptr::eq(r, m.rule))
                .unwrap();
            (i, m.captures)
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn the_remembered_walk_answers_as_the_walk(
        m in method(),
        raw in prop_oneof![api_path(), path_strategy()],
        custom in custom_rules(),
    ) {
        for rules in [RuleSet::defaults(), custom] {
            let walked = answer(&rules, normalize(&raw).map(|p| rules.find(&m, &p)));
            // First the walk is taken and kept, then the kept answer is used.
            for _ in 0..2 {
                prop_assert_eq!(answer(&rules, rules.find_raw(&m, &raw)), walked, "{} {:?}", m, raw);
            }
        }
    }
}

#[test]
fn each_ambiguous_reason_has_a_refusal_message_that_says_it() {
    let reasons = [
        AmbiguousPath::NotAbsolute,
        AmbiguousPath::EmptySegment,
        AmbiguousPath::DotSegment,
        AmbiguousPath::LookAlikeDotSegment,
        AmbiguousPath::LookAlikeSeparator,
        AmbiguousPath::EncodedSeparator,
        AmbiguousPath::ForbiddenCharacter,
        AmbiguousPath::BadPercentEncoding,
        AmbiguousPath::DoubleEncoding,
        AmbiguousPath::NotUtf8,
        AmbiguousPath::TooLong,
    ];
    let mut seen = std::collections::HashSet::new();
    for r in reasons {
        let m = r.message();
        assert!(
            m.starts_with("The request path could be read more than one way and is refused: "),
            "{m}"
        );
        assert!(seen.insert(m), "one message per reason: {m}");
    }
    assert!(
        AmbiguousPath::TooLong
            .message()
            .contains(&format!("more than {MAX_SEGMENTS} segments"))
    );
    assert_eq!(
        normalize("/a/..%EF%BC%8Fb").unwrap_err().message(),
        AmbiguousPath::LookAlikeSeparator.message()
    );
}
