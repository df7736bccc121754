//! A small WebDriver client for `tests/console.rs`: starts Debian's
//! `chromedriver` on a free port with headless Chromium, and speaks the
//! W3C WebDriver JSON protocol to it with the harness's own HTTP client
//! (no WebDriver crate: a dozen commands are all the test needs).
//! Stops chromedriver and every Chromium process on drop.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{Http, eventually, free_port, stop_child, tool};

/// WebDriver's code points for keys that are not characters.
pub mod key {
    pub const TAB: &str = "\u{E004}";
    pub const ENTER: &str = "\u{E007}";
    pub const ESCAPE: &str = "\u{E00C}";
    pub const HOME: &str = "\u{E011}";
    pub const END: &str = "\u{E010}";
    pub const ARROW_DOWN: &str = "\u{E015}";
}

/// One browser session.
pub struct Browser {
    driver: Option<Child>,
    http: Http,
    session: String,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Chromium and its helpers are chromedriver's descendants: all of
        // them are killed together.
        if let Some(child) = self.driver.take() {
            stop_child(child, None, Duration::ZERO);
        }
    }
}

/// The element reference key of the W3C protocol.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    /// Starts chromedriver and a headless Chromium `width`×`height`.
    pub async fn start(width: u32, height: u32) -> Self {
        // Both come from Debian's packages (.ci/run installs them).
        let _ = tool("chromium");
        let port = free_port();
        let driver = tool("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let http = Http::new(format!("http://127.0.0.1:{port}"));
        // Owned by the browser from here: a panic below still stops it.
        let mut browser = Self {
            driver: Some(driver),
            http: http.clone(),
            session: String::new(),
        };
        eventually("chromedriver to answer", Duration::from_secs(20), || {
            let http = http.clone();
            async move {
                // The client panics on a refused connection: ask only once
                // the port answers.
                std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
                let a = tokio::time::timeout(Duration::from_secs(1), http.get("/status"))
                    .await
                    .ok()?;
                (a.status == StatusCode::OK && a.json()["value"]["ready"] == true).then_some(())
            }
        })
        .await;
        let caps = json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": chromium_path(),
                    "args": [
                        "--headless=new", "--no-sandbox", "--disable-gpu",
                        "--disable-dev-shm-usage", "--no-first-run",
                        "--disable-extensions", "--hide-scrollbars",
                        format!("--window-size={width},{height}"),
                    ],
                },
                "goog:loggingPrefs": { "browser": "ALL" },
            }}
        });
        let a = http.post("/session", caps).await;
        assert_eq!(
            a.status,
            StatusCode::OK,
            "chromedriver starts a session: {}",
            String::from_utf8_lossy(&a.body)
        );
        browser.session = a.json()["value"]["sessionId"].as_str().unwrap().to_owned();
        browser
    }

    /// One command; its `value`, or a panic naming the command and error.
    pub async fn cmd(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        match self.try_cmd(method.clone(), path, body).await {
            Ok(v) => v,
            Err(e) => panic!("WebDriver {method} {path}: {e}"),
        }
    }

    /// One command: its `value`, or the error's.
    async fn try_cmd(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, Value> {
        let full = format!("/session/{}{path}", self.session);
        let a = self.http.send(method, &full, &[], body).await;
        let v = a.json()["value"].clone();
        if a.status.is_success() { Ok(v) } else { Err(v) }
    }

    pub async fn goto(&self, url: &str) {
        self.cmd(Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    pub async fn url(&self) -> String {
        self.cmd(Method::GET, "/url", None)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// The element `css` matches (first), or a panic.
    pub async fn find(&self, css: &str) -> String {
        let v = self
            .cmd(
                Method::POST,
                "/element",
                Some(json!({ "using": "css selector", "value": css })),
            )
            .await;
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element for `{css}`: {v}"))
            .to_owned()
    }

    /// Clicks the element `css` matches; found again if the page
    /// re-rendered it between finding and clicking.
    pub async fn click(&self, css: &str) {
        for _ in 0..20 {
            let id = self.find(css).await;
            match self
                .try_cmd(
                    Method::POST,
                    &format!("/element/{id}/click"),
                    Some(json!({})),
                )
                .await
            {
                Ok(_) => return,
                Err(e) if e["error"] == "stale element reference" => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("WebDriver click on `{css}`: {e}"),
            }
        }
        panic!("`{css}` kept being re-rendered");
    }

    /// Types `text` into the element `css` (after clearing it).
    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.cmd(
            Method::POST,
            &format!("/element/{id}/clear"),
            Some(json!({})),
        )
        .await;
        if text.is_empty() {
            return;
        }
        self.cmd(
            Method::POST,
            &format!("/element/{id}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// Runs `script` (a function body; `arguments` as usual) in the page.
    pub async fn js(&self, script: &str, args: Value) -> Value {
        self.cmd(
            Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
        .await
    }

    /// The text content of `css`'s first match ("" when none).
    pub async fn text(&self, css: &str) -> String {
        self.js(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : '';",
            json!([css]),
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    /// Polls `condition` (a JS expression) until true, or panics naming
    /// `what` after 15 s.
    pub async fn wait(&self, what: &str, condition: &str) {
        let script = format!("return Boolean({condition});");
        eventually(what, Duration::from_secs(15), || {
            let script = script.clone();
            async move { (self.js(&script, json!([])).await == true).then_some(()) }
        })
        .await;
    }

    /// Presses keys on whatever has the focus, as a user would: each of
    /// `keys` is a character or a [`key`] code point.
    pub async fn keys(&self, keys: &[&str]) {
        let mut actions = Vec::new();
        for k in keys {
            for c in k.chars() {
                actions.push(json!({ "type": "keyDown", "value": c.to_string() }));
                actions.push(json!({ "type": "keyUp", "value": c.to_string() }));
            }
        }
        self.cmd(
            Method::POST,
            "/actions",
            Some(json!({ "actions": [{ "type": "key", "id": "keyboard", "actions": actions }] })),
        )
        .await;
    }

    /// The id of the element that has the focus.
    pub async fn focused(&self) -> String {
        self.js(
            "return document.activeElement ? document.activeElement.id : '';",
            json!([]),
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    /// Presses Tab until element `id` has the focus (at most 20 times).
    pub async fn tab_to(&self, id: &str) {
        for _ in 0..20 {
            if self.focused().await == id {
                return;
            }
            self.keys(&[key::TAB]).await;
        }
        panic!(
            "Tab never reached #{id}; the focus is on #{}",
            self.focused().await
        );
    }

    /// Every cookie of the page, `httpOnly` ones included.
    pub async fn cookies(&self) -> Vec<Value> {
        self.cmd(Method::GET, "/cookie", None)
            .await
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub async fn set_size(&self, width: u32, height: u32) {
        self.cmd(
            Method::POST,
            "/window/rect",
            Some(json!({ "width": width, "height": height })),
        )
        .await;
    }

    /// The browser console's messages since the last call.
    pub async fn console_log(&self) -> Vec<String> {
        self.cmd(Method::POST, "/se/log", Some(json!({ "type": "browser" })))
            .await
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| m["message"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// A screenshot as PNG bytes.
    pub async fn screenshot(&self) -> Vec<u8> {
        let b64 = self.cmd(Method::GET, "/screenshot", None).await;
        base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap())
            .unwrap()
    }
}

/// Debian's Chromium: the binary itself when it is where the package puts
/// it, else the `chromium` wrapper on PATH.
fn chromium_path() -> String {
    const DEBIAN: &str = "/usr/lib/chromium/chromium";
    if std::path::Path::new(DEBIAN).exists() {
        return DEBIAN.into();
    }
    let out = Command::new("sh")
        .args(["-c", "command -v chromium"])
        .output()
        .expect("sh runs");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
