//! The console's files, embedded in the binary at compile time from
//! `src/console/assets/`: plain HTML, CSS and JavaScript modules, no
//! bundler, so `cargo build` alone makes a gate with its console.
//!
//! Only the files of [`ASSETS`] are served, each with its own content
//! type; never anything read from disk at run time, never a third-party
//! file.

/// One file of the console.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    /// Its name under `/console/` (`""` is the page itself).
    pub name: &'static str,
    pub content_type: &'static str,
    pub body: &'static str,
}

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const SVG: &str = "image/svg+xml";

/// Every file of the console.
pub const ASSETS: &[Asset] = &[
    Asset {
        name: "",
        content_type: HTML,
        body: include_str!("assets/index.html"),
    },
    Asset {
        name: "console.css",
        content_type: CSS,
        body: include_str!("assets/console.css"),
    },
    Asset {
        name: "app.js",
        content_type: JS,
        body: include_str!("assets/app.js"),
    },
    Asset {
        name: "api.js",
        content_type: JS,
        body: include_str!("assets/api.js"),
    },
    Asset {
        name: "dom.js",
        content_type: JS,
        body: include_str!("assets/dom.js"),
    },
    Asset {
        name: "create.js",
        content_type: JS,
        body: include_str!("assets/create.js"),
    },
    Asset {
        name: "detail.js",
        content_type: JS,
        body: include_str!("assets/detail.js"),
    },
    Asset {
        name: "favicon.svg",
        content_type: SVG,
        body: include_str!("assets/favicon.svg"),
    },
];

/// The file named `name` under `/console/`.
pub fn find(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_is_served_and_nothing_inline_or_third_party() {
        assert!(find("").is_some());
        assert!(find("../Cargo.toml").is_none());
        for a in ASSETS {
            assert!(!a.body.is_empty(), "{}", a.name);
            // No inline script or style: the CSP would refuse them.
            assert!(
                !a.body.contains("style=\""),
                "{} has a style attribute",
                a.name
            );
            assert!(!a.body.contains("setAttribute('style'"), "{}", a.name);
            assert!(!a.body.contains("innerHTML"), "{} uses innerHTML", a.name);
            // Everything from the binary, nothing from elsewhere.
            // (The SVG namespace is a name, not a fetch.)
            let body = a.body.replace("http://www.w3.org/2000/svg", "");
            for bad in [
                "http://",
                "https://",
                "//cdn",
                "localStorage",
                "sessionStorage",
            ] {
                assert!(!body.contains(bad), "{} contains {bad}", a.name);
            }
        }
        let html = find("").unwrap().body;
        assert!(!html.contains("<script>"), "inline script");
        assert!(!html.contains("<style"), "inline style");
    }
}
