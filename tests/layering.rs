//! The house has no circles: no module of `src/` imports another that
//! imports it back, directly or around a loop. Read from the source itself
//! (every `crate::…` and `super::…` path outside comments and `#[cfg(test)]`
//! test modules), at two levels: between the crate's top-level modules, and
//! between the files of one folder module. docs/design.md § Source layout
//! gives the floors this keeps true.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir` but unit-test files.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name != "tests.rs" && !name.ends_with("_tests.rs") {
                out.push(path);
            }
        }
    }
}

/// The code of a file without comments and without an inline
/// `#[cfg(test)] mod tests { … }` (its last item by convention here).
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests {") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .map(|l| match l.find("//") {
            // A `//` inside a string (a URL) is rare in paths we read; the
            // worst case is a path missed, not one invented.
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The identifiers that follow `prefix` (`crate::` or `super::`), including
/// each name in a `prefix{a, b::c}` group.
fn names_after(code: &str, prefix: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut rest = code;
    while let Some(i) = rest.find(prefix) {
        let after = &rest[i + prefix.len()..];
        if let Some(group) = after.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for part in group[..end].split(',') {
                let name = ident(part.trim());
                if !name.is_empty() {
                    out.insert(name);
                }
            }
        } else {
            let name = ident(after);
            if !name.is_empty() {
                out.insert(name);
            }
        }
        rest = after;
    }
    out
}

/// A circle in `graph`, if there is one.
fn circle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut c = path[at..].to_vec();
            c.push(node.to_owned());
            return Some(c);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let top_of = |p: &Path| -> String {
        let rel = p.strip_prefix(&src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        first.trim_end_matches(".rs").to_owned()
    };
    let tops: BTreeSet<String> = files
        .iter()
        .map(|p| top_of(p))
        .filter(|t| t != "lib" && t != "main")
        .collect();
    assert!(tops.len() > 10, "found the modules: {tops:?}");

    // Between top-level modules.
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    // Between the files of each folder module: `folder/a.rs` → `folder/b.rs`.
    let mut inner: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for file in &files {
        let top = top_of(file);
        if !tops.contains(&top) {
            continue;
        }
        let code = code(&std::fs::read_to_string(file).unwrap());
        let used = names_after(&code, "crate::");
        let edges = graph.entry(top.clone()).or_default();
        edges.extend(
            used.iter()
                .filter(|u| tops.contains(*u) && **u != top)
                .cloned(),
        );

        // Files directly in a folder module: their siblings through
        // `super::x` and `crate::<folder>::x`.
        let rel = file.strip_prefix(&src).unwrap();
        let parts: Vec<_> = rel.components().collect();
        if parts.len() == 2 {
            let folder = src.join(&top);
            let stem = file.file_stem().unwrap().to_string_lossy().into_owned();
            let mut siblings = names_after(&code, "super::");
            siblings.extend(names_after(&code, &format!("crate::{top}::")));
            let node = |name: &str| -> Option<String> {
                let as_file = folder.join(format!("{name}.rs"));
                let as_dir = folder.join(name).join("mod.rs");
                (as_file.exists() || as_dir.exists()).then(|| name.to_owned())
            };
            let me = if stem == "mod" {
                "mod".to_owned()
            } else {
                stem
            };
            let out = inner
                .entry(top.clone())
                .or_default()
                .entry(me.clone())
                .or_default();
            for s in siblings {
                if let Some(n) = node(&s)
                    && n != me
                {
                    out.insert(n);
                }
            }
        }
    }
    if let Some(c) = circle(&graph) {
        panic!(
            "modules import each other around a circle: {}",
            c.join(" → ")
        );
    }
    for (folder, g) in &inner {
        // mod.rs declares and re-exports its children (ownership, not an
        // import); the files below it must not import each other around.
        let mut g = g.clone();
        g.remove("mod");
        if let Some(c) = circle(&g) {
            panic!(
                "in src/{folder}/: files import each other around a circle: {}",
                c.join(" → ")
            );
        }
    }
}

#[test]
fn the_circle_finder_finds_circles() {
    let g: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec![]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
    .collect();
    assert_eq!(circle(&g).unwrap(), ["a", "b", "c", "a"]);
    let mut acyclic = g.clone();
    acyclic.get_mut("c").unwrap().clear();
    assert_eq!(circle(&acyclic), None);
    assert_eq!(
        names_after("use crate::{a, b::c};\nlet x = crate::d::e;", "crate::"),
        ["a", "b", "d"].into_iter().map(str::to_owned).collect()
    );
}
