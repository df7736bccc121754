//! The rule matcher, over the built-in rules and a custom set built from the
//! input: never a panic, and the same answer as a plain reference matcher
//! (first rule whose methods and template match; a `{workspace}` or
//! `{project}` capture must be an id as sent, never a decoded one).
#![no_main]

use arbitrary::Arbitrary;
use hawzu_gate::policy::roles::Permission;
use hawzu_gate::policy::rules::{MethodSet, Rule, RuleSet, Template, normalize};
use hawzu_gate::token::record::valid_id;
use http::Method;
use libfuzzer_sys::fuzz_target;

const LITERALS: [&str; 12] = [
    "api",
    "v1",
    "workspaces",
    "projects",
    "testcases",
    "members",
    "A",
    "a",
    "ws_1",
    "p1",
    "caf\u{e9}",
    "x y",
];
/// Path segments: the literals, their encodings, ids and hostile shapes.
const ATOMS: [&str; 22] = [
    "api",
    "v1",
    "workspaces",
    "projects",
    "testcases",
    "members",
    "A",
    "%41",
    "a",
    "ws_1",
    "ws-2",
    "p1",
    "P_9",
    "caf%C3%A9",
    "caf\u{e9}",
    "x%20y",
    "x y",
    "%2e",
    "..",
    "",
    "w%5fs",
    "a;b",
];
const METHOD_NAMES: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
const PERMISSIONS: [&str; 4] = [
    "testcases:read",
    "projects:write",
    "members:manage",
    "workspace:read",
];

#[derive(Arbitrary, Debug)]
enum TSeg {
    Lit(u8),
    Workspace,
    Project,
    One,
    Rest,
}

#[derive(Arbitrary, Debug)]
struct CustomRule {
    methods: u8,
    segs: Vec<TSeg>,
}

#[derive(Arbitrary, Debug)]
enum PathInput {
    Atoms(Vec<u8>),
    Raw(String),
}

#[derive(Arbitrary, Debug)]
struct Input {
    method: u8,
    rules: Vec<CustomRule>,
    path: PathInput,
}

fn method(i: u8) -> Method {
    match i % 10 {
        7 => Method::TRACE,
        8 => Method::from_bytes(b"get").expect("a token"),
        9 => Method::from_bytes(b"PROPFIND").expect("a token"),
        i => Method::from_bytes(METHOD_NAMES[i as usize].as_bytes()).expect("a method"),
    }
}

/// Template text from the input; `Template::parse` decides if it is valid.
fn template(segs: &[TSeg]) -> String {
    let mut t = String::new();
    for s in segs {
        t.push('/');
        t.push_str(match s {
            TSeg::Lit(i) => LITERALS[*i as usize % LITERALS.len()],
            TSeg::Workspace => "{workspace}",
            TSeg::Project => "{project}",
            TSeg::One => "*",
            TSeg::Rest => "**",
        });
    }
    if t.is_empty() { "/".into() } else { t }
}

fn custom(rules: &[CustomRule]) -> RuleSet {
    let mut out = Vec::new();
    for (i, r) in rules.iter().take(16).enumerate() {
        let names = METHOD_NAMES
            .iter()
            .enumerate()
            .filter(|(b, _)| r.methods & (1 << b) != 0)
            .map(|(_, m)| *m);
        let (Ok(methods), Ok(template)) =
            (MethodSet::parse(names), Template::parse(&template(&r.segs)))
        else {
            continue;
        };
        out.push(Rule {
            methods,
            template,
            access: Permission::parse(PERMISSIONS[i % PERMISSIONS.len()])
                .expect("valid")
                .into(),
            origin: format!("custom[{i}]"),
        });
    }
    RuleSet::new(out)
}

fn percent_decode(raw: &str) -> Vec<u8> {
    let b = raw.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let hex = |j: usize| b.get(j).and_then(|c| (*c as char).to_digit(16));
        if b[i] == b'%'
            && let (Some(h), Some(l)) = (hex(i + 1), hex(i + 2))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// Which rule: origin, template and permission (the built-in rules share an origin).
fn name(rule: &Rule) -> String {
    format!("{} {} {}", rule.origin, rule.template.as_str(), rule.access)
}

type Found<'p> = Option<(String, Option<&'p str>, Option<&'p str>)>;

/// The reference: first rule whose method list names the method and whose
/// template, read from its text, matches the raw segments.
fn reference<'p>(rules: &RuleSet, m: &Method, raw: &'p str) -> Found<'p> {
    let path: Vec<&str> = if raw == "/" {
        Vec::new()
    } else {
        raw[1..].split('/').collect()
    };
    for rule in rules.rules() {
        let names = format!("{:?}", rule.methods);
        if !names.split(',').any(|n| n == m.as_str()) {
            continue;
        }
        let text = rule.template.as_str();
        let tpl: Vec<&str> = if text == "/" {
            Vec::new()
        } else {
            text[1..].split('/').collect()
        };
        let (mut ws, mut pr) = (None, None);
        let mut ok = true;
        let mut i = 0;
        for t in &tpl {
            if *t == "**" {
                i = path.len();
                break;
            }
            let Some(seg) = path.get(i) else {
                ok = false;
                break;
            };
            ok = match *t {
                "*" => true,
                "{workspace}" => {
                    ws = Some(*seg);
                    valid_id(seg)
                }
                "{project}" => {
                    pr = Some(*seg);
                    valid_id(seg)
                }
                lit => percent_decode(seg) == lit.as_bytes(),
            };
            if !ok {
                break;
            }
            i += 1;
        }
        if ok && i == path.len() {
            return Some((name(rule), ws, pr));
        }
    }
    None
}

fuzz_target!(|input: Input| {
    let raw = match &input.path {
        PathInput::Raw(s) => s.clone(),
        PathInput::Atoms(a) => {
            let mut s = String::new();
            for i in a.iter().take(24) {
                s.push('/');
                s.push_str(ATOMS[*i as usize % ATOMS.len()]);
            }
            if s.is_empty() { "/".into() } else { s }
        }
    };
    let Ok(path) = normalize(&raw) else {
        return;
    };
    let m = method(input.method);
    for rules in [RuleSet::defaults(), custom(&input.rules)] {
        let got = rules.find(&m, &path).map(|f| {
            for c in [f.captures.workspace, f.captures.project]
                .into_iter()
                .flatten()
            {
                assert!(valid_id(c), "{c:?}");
            }
            (name(f.rule), f.captures.workspace, f.captures.project)
        });
        assert_eq!(got, reference(&rules, &m, &raw), "{m} {raw:?} {rules:?}");
    }
});
