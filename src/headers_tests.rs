use super::*;

fn map(names: &[&str]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for n in names {
        h.append(
            HeaderName::from_bytes(n.as_bytes()).unwrap(),
            HeaderValue::from_static("v"),
        );
    }
    h
}

#[test]
fn identity_names_match_with_underscores_and_any_case() {
    let h = IdentityHeaders::default();
    for name in [
        "x-hawzu-role",
        "X-Hawzu-Role",
        "x_hawzu_role",
        "X_HAWZU_WORKSPACE_ID",
        "x-hawzu_workspace_id",
        "x_hawzu-anything",
        "x-hawzu-",
    ] {
        assert!(h.is_identity(name), "{name}");
        assert!(h.is_protected(name), "{name}");
    }
    for name in [
        "x-hawzu",
        "xhawzu-role",
        "x-hawzurole",
        "x-request-id",
        "x-hawz-role",
    ] {
        assert!(!h.is_identity(name), "{name}");
    }
}

#[test]
fn the_strip_list_matches_whole_names_with_underscores_and_any_case() {
    let h = IdentityHeaders::default();
    for name in [
        "x-http-method-override",
        "X_HTTP_Method_Override",
        "x-http-method",
        "x-method-override",
        "x-original-url",
        "x_original_uri",
        "x-rewrite-url",
        "X-Forwarded_Prefix",
    ] {
        assert!(h.is_protected(name), "{name}");
    }
    for name in [
        "x-http-method-overrides",
        "x-original",
        "x-forwarded-for",
        "host",
    ] {
        assert!(!h.is_protected(name), "{name}");
    }
    let h = h.with_strip(&["X_Legacy"]).unwrap();
    assert!(h.is_protected("x-legacy"));
    assert!(!h.is_protected("x-original-url"));
    assert!(h.is_protected("x_hawzu_role"), "the prefix always holds");
    assert!(IdentityHeaders::default().with_strip(&["a b"]).is_err());
    assert!(IdentityHeaders::default().with_strip(&[""]).is_err());
}

#[test]
fn override_names_say_what_they_override_while_on_the_strip_list() {
    let h = IdentityHeaders::default();
    for name in [
        "X-HTTP-Method-Override",
        "x_http_method",
        "X-Method-Override",
    ] {
        assert_eq!(h.stripped_override(name), Some(Override::Method), "{name}");
    }
    for name in ["X-Original-URL", "x_rewrite_url", "X-ORIGINAL-URI"] {
        assert_eq!(h.stripped_override(name), Some(Override::Path), "{name}");
    }
    // Proxies set X-Forwarded-Prefix themselves; the rest are no overrides.
    for name in [
        "x-forwarded-prefix",
        "x-original-urls",
        "x-hawzu-role",
        "host",
    ] {
        assert_eq!(h.stripped_override(name), None, "{name}");
    }
    // Off the strip list, an override is the API's business.
    let h = h.with_strip(&["X-HTTP-Method"]).unwrap();
    assert_eq!(h.stripped_override("x-http-method"), Some(Override::Method));
    assert_eq!(h.stripped_override("x-http-method-override"), None);
    assert_eq!(h.stripped_override("x-original-url"), None);
}

#[test]
fn strip_removes_every_protected_header_and_keeps_the_rest() {
    let h = IdentityHeaders::default();
    let mut m = map(&[
        "x_hawzu_role",
        "x-hawzu-role",
        "x-http-method-override",
        "x_original_url",
        "content-type",
        "x-request-id",
    ]);
    h.strip(&mut m);
    let mut left: Vec<&str> = m.keys().map(HeaderName::as_str).collect();
    left.sort_unstable();
    assert_eq!(left, ["content-type", "x-request-id"]);
}

#[test]
fn removals_name_protected_client_headers_but_never_one_the_answer_sets() {
    let h = IdentityHeaders::default();
    let role = HeaderName::from_static("x-hawzu-role");
    let set = [&role];
    let got = h.removals(
        [
            "x-hawzu-role",
            "X_Hawzu_Role",
            "x_hawzu_role",
            "x-http-method-override",
            "content-type",
        ],
        &set,
        false,
    );
    assert_eq!(
        got,
        [
            "authorization",
            // Every identity name not set, sent or not (Envoy may not have
            // shown the gate the client's).
            "x-hawzu-token-id",
            "x-hawzu-token-type",
            "x-hawzu-workspace-id",
            "x-hawzu-project-id",
            "x-hawzu-permission",
            "x-hawzu-token-expires",
            "x-hawzu-error",
            "x-hawzu-passed",
            // Every strip name, sent or not.
            "x-http-method-override",
            "x-http-method",
            "x-method-override",
            "x-original-url",
            "x-rewrite-url",
            "x-original-uri",
            "x-forwarded-prefix",
            // Other spellings the client sent.
            "x_hawzu_role",
        ]
    );
}

#[test]
fn upgrades_are_asked_by_upgrade_or_http2_settings() {
    assert!(asks_upgrade(&map(&["upgrade"])));
    assert!(asks_upgrade(&map(&["http2-settings"])));
    assert!(!asks_upgrade(&map(&["connection", "content-type"])));
}

#[test]
fn identity_names_are_made_once_per_name_and_shared() {
    let a = IdentityHeaders::new("X-Acme-").unwrap();
    let b = IdentityHeaders::new("x-acme-").unwrap();
    assert_eq!(a.token_id, "x-acme-token-id");
    assert_eq!(a.passed, "x-acme-passed");
    // The same kept bytes for both sets (built from a `String` each, they
    // were two reference-counted copies).
    assert_eq!(a.token_id.as_str().as_ptr(), b.token_id.as_str().as_ptr());
}

#[test]
fn one_scan_finds_each_kind_of_name_a_forward_rewrites() {
    let h = IdentityHeaders::default();
    let none = map(&[
        "host",
        "authorization",
        "user-agent",
        "accept",
        "x-request-id",
    ]);
    assert_eq!(h.scan(&none), Found::default(), "nothing to rewrite");
    let cases: [(&str, Found); 10] = [
        (
            "connection",
            Found {
                hop_by_hop: true,
                ..Found::default()
            },
        ),
        (
            "proxy-connection",
            Found {
                hop_by_hop: true,
                ..Found::default()
            },
        ),
        (
            "x-hawzu-role",
            Found {
                protected: true,
                ..Found::default()
            },
        ),
        (
            "x-http-method-override",
            Found {
                protected: true,
                ..Found::default()
            },
        ),
        (
            "x_hawzu_role",
            Found {
                protected: true,
                ..Found::default()
            },
        ),
        (
            "x_forwarded_for",
            Found {
                forwarded_misspelled: true,
                ..Found::default()
            },
        ),
        (
            "upgrade",
            Found {
                hop_by_hop: true,
                upgrade: true,
                ..Found::default()
            },
        ),
        (
            "http2-settings",
            Found {
                upgrade: true,
                ..Found::default()
            },
        ),
        (
            "x-real-ip",
            Found {
                forwarded: true,
                ..Found::default()
            },
        ),
        (
            "forwarded",
            Found {
                forwarded: true,
                ..Found::default()
            },
        ),
    ];
    for (name, want) in cases {
        let mut names = vec!["host", "authorization"];
        names.push(name);
        assert_eq!(h.scan(&map(&names)), want, "{name}");
    }
    for name in FORWARDED {
        assert!(h.scan(&map(&[name])).forwarded, "{name}");
        let spelled = name.replace('-', "_");
        if spelled != name {
            assert!(h.scan(&map(&[&spelled])).forwarded_misspelled, "{spelled}");
        }
    }
    for name in HOP_BY_HOP {
        assert!(h.scan(&map(&[name])).hop_by_hop, "{name}");
    }
    for name in ["upgrade", "http2-settings", "x-forwarded-for", "host"] {
        assert_eq!(
            h.scan(&map(&[name])).upgrade,
            asks_upgrade(&map(&[name])),
            "{name}"
        );
    }
}

#[test]
fn a_scan_finds_names_under_another_prefix_and_strip_list() {
    // The first-letter filter follows the configuration: names starting
    // with letters the defaults never start with are still found.
    let h = IdentityHeaders::new("Acme-")
        .unwrap()
        .with_strip(&["Q-Override", "_Rewrite"])
        .unwrap();
    for name in [
        "acme-role",
        "acme_role",
        "q-override",
        "q_override",
        "-rewrite",
        "_rewrite",
    ] {
        assert!(h.scan(&map(&[name])).protected, "{name}");
    }
    for name in ["x-hawzu-role", "accept", "q-overrides"] {
        assert!(!h.scan(&map(&[name])).protected, "{name}");
    }
}

#[test]
fn ip_values_read_as_display_writes_them() {
    use std::net::{IpAddr, Ipv4Addr};
    let mut seen = 0;
    // Every octet value in every position, and the shapes around them.
    for o in 0..=255u8 {
        for ip in [
            Ipv4Addr::new(o, 0, 0, 0),
            Ipv4Addr::new(10, o, 9, 99),
            Ipv4Addr::new(100, 1, o, 255),
            Ipv4Addr::new(255, 255, 255, o),
        ] {
            let ip = IpAddr::V4(ip);
            assert_eq!(ip_value(ip).to_str().unwrap(), ip.to_string());
            seen += 1;
        }
    }
    for ip in ["::1", "2001:db8::7", "::ffff:10.0.0.7", "fe80::1:2:3:4"] {
        let ip: IpAddr = ip.parse().unwrap();
        assert_eq!(ip_value(ip).to_str().unwrap(), ip.to_string());
    }
    assert_eq!(seen, 1024);
}

/// The removal value made once for the common answers is the one
/// `removals` builds, for every such answer, any prefix and strip list;
/// a client's own protected spelling still gets it built.
#[test]
fn the_common_removal_values_are_what_removals_builds() {
    let custom = IdentityHeaders::new("X-Acme-")
        .unwrap()
        .with_strip(&["X-Legacy-Override"])
        .unwrap();
    for h in [IdentityHeaders::default(), custom] {
        let base = vec![
            &h.token_id,
            &h.token_type,
            &h.workspace_id,
            &h.role,
            &h.permission,
        ];
        let mut sets: Vec<(Vec<&HeaderName>, bool)> = vec![(vec![], true), (vec![], false)];
        for extra in [
            vec![],
            vec![&h.token_expires],
            vec![&h.project_id],
            vec![&h.project_id, &h.token_expires],
        ] {
            let mut set = base.clone();
            set.extend(extra);
            sets.push((set, false));
        }
        // Not common: built, and still right.
        sets.push((base.clone(), true));
        sets.push((vec![&h.token_id], false));
        let role = h.role.as_str().to_owned();
        let spelled = role.replace('-', "_");
        for (set, keep) in &sets {
            for client in [
                vec!["content-type"],
                vec![role.as_str(), "x-http-method-override"],
                vec![spelled.as_str()],
            ] {
                let want = h.removals(client.clone(), set, *keep).join(",");
                let got = h.removal_value(|| client.clone(), set, *keep).unwrap();
                assert_eq!(got.to_str().unwrap(), want, "{set:?} {keep} {client:?}");
            }
        }
    }
}

/// A CGI-style upstream folds more than `_`: lighttpd maps every byte
/// that is not a letter or digit to `_`, PHP maps `.` and space; so
/// `X-Hawzu.Role`, `X+Hawzu+Role` and `X-HTTP-Method.Override` reach the API
/// as the gate's own names. Every separator a header name may hold reads
/// as `-`.
#[test]
fn names_match_with_any_separator() {
    let h = IdentityHeaders::default();
    // Every byte RFC 9110 allows in a name besides letters, digits and `-`.
    for sep in "!#$%&'*+.^_`|~".chars() {
        let role = format!("x{sep}hawzu{sep}role");
        assert!(h.is_identity(&role), "{role}");
        assert!(h.is_protected(&role), "{role}");
        assert!(h.misspells_protected(&role), "{role}");
        let method = format!("x-http-method{sep}override");
        assert_eq!(
            h.stripped_override(&method),
            Some(Override::Method),
            "{method}"
        );
        let prefix = format!("x-forwarded{sep}prefix");
        assert!(h.is_protected(&prefix), "{prefix}");
        let xff = format!("x{sep}forwarded{sep}for");
        assert!(h.scan(&map(&[&xff])).forwarded_misspelled, "{xff}");
        assert!(h.misspells_protected(&xff), "{xff}");
    }
    // Spelled as the gate spells them, or not folding into one: no.
    for name in ["x-hawzu-role", "x-forwarded-for", "x-hawzu", "x.hawzurole"] {
        assert!(!h.misspells_protected(name), "{name}");
    }
    assert!(!h.scan(&map(&["x-forwarded-for"])).forwarded_misspelled);
}
