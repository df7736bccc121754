//! Reloading while running: on SIGHUP the config is read again and rules,
//! roles and TLS certificates are swapped whole (or nothing is, when the new
//! config is bad); certificates are also re-read when their files change.
//! Owns what may change without a restart; it must never rebind a listener
//! or reopen the store (those changes wait for a restart, and say so).

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use crate::config::{self, ListenerTls, Settings, TlsSettings};
use crate::doors::PolicyHandle;
use crate::doors::listener::TlsHandle;

use super::listeners::{Which, tls_config};

/// Reads the config again and swaps what can change while running:
/// rules and roles, and TLS certificates. A bad config changes nothing.
pub(super) fn reload(
    (config_file, sections): (Option<&Path>, &mut Sections),
    settings: &mut Settings,
    policy: &PolicyHandle,
    (tls_handles, tls_files): (&[(Which, TlsHandle)], &Mutex<TlsFiles>),
) {
    let loaded = match config::load(config_file) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "reload refused: the new config is invalid; the current one keeps serving");
            return;
        }
    };
    // A file that lost sections the running config's file had — most
    // often one read while being rewritten in place (empty, or cut short)
    // — would put their defaults in force: default roles and rules, no
    // `[tokens]` limits. Refused whole.
    let now = Sections::of(config_file);
    let lost = sections.lost_in(&now);
    if !lost.is_empty() {
        tracing::error!(
            sections = %lost.join(", "),
            "reload refused: the config file lacks sections it had (a file read while being rewritten? write a new file and rename it over the old; to drop a section, leave it empty or restart); the current config keeps serving"
        );
        return;
    }
    // Build every TLS config before swapping anything: all or nothing.
    // Stamped first: a file changed while it is read is reread by the
    // watcher.
    let stamps = TlsFiles::new(loaded.settings.tls.clone(), tls_handles);
    let mut fresh = Vec::new();
    for (which, _) in tls_handles {
        match which.tls(&loaded.settings).map(|t| tls_config(*which, t)) {
            Some(Ok(c)) => fresh.push(c),
            Some(Err(e)) => {
                tracing::error!(error = %e, "reload refused: the current config keeps serving");
                return;
            }
            None => {
                tracing::error!(
                    key = which.tls_key(),
                    "reload refused: TLS cannot be turned off while running; restart to change it"
                );
                return;
            }
        }
        // Nor client certificates: a SIGHUP must not quietly open a
        // listener that required them.
        let had_ca = which
            .tls(settings)
            .is_some_and(|t| t.client_ca_file.is_some());
        let has_ca = which
            .tls(&loaded.settings)
            .is_some_and(|t| t.client_ca_file.is_some());
        if had_ca && !has_ca {
            tracing::error!(
                key = which.tls_key(),
                "reload refused: client certificates cannot be turned off while running; restart to change it"
            );
            return;
        }
    }
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    let mut restart_needed = restart_only_changes(settings, &loaded.settings);
    // A listener serving plain TCP stays so until a restart.
    restart_needed.extend(
        Which::ALL
            .into_iter()
            .filter(|w| !tls_handles.iter().any(|(h, _)| h == w))
            .filter(|w| w.addr(&loaded.settings).is_some() && w.tls(&loaded.settings).is_some())
            .map(Which::tls_key),
    );
    if !restart_needed.is_empty() {
        tracing::warn!(keys = %restart_needed.join(", "), "these changes take effect only after a restart");
    }
    // Values under a newly accepted prefix are redacted from now on, before
    // the policy that accepts them is in force.
    for prefix in loaded.policy.prefixes.accepted() {
        crate::redact::also_redact(prefix.as_str());
    }
    policy.store(loaded.policy.clone());
    {
        // The watcher builds and swaps under the same lock: it never swaps
        // in a certificate built from the settings this reload replaces.
        let mut files = tls_files.lock().unwrap_or_else(PoisonError::into_inner);
        for ((_, handle), config) in tls_handles.iter().zip(fresh) {
            handle.store(config);
        }
        *files = stamps;
    }
    for what in loosened(settings, &loaded.settings) {
        tracing::warn!("config reloaded, letting more through: {what}");
    }
    let rules = loaded.policy.rules.rules().len();
    tracing::info!(
        rules,
        "config reloaded: rules, roles and TLS certificates swapped"
    );
    settings.roles = loaded.settings.roles;
    settings.policy = loaded.settings.policy;
    settings.tls = loaded.settings.tls;
    // The token limits and prefixes are in force now too (the next
    // reload's "letting more through" compares with them); the expiry
    // scan's settings wait for a restart, as said above.
    settings.tokens = crate::config::TokenSettings {
        expiry_scan_interval: settings.tokens.expiry_scan_interval,
        expiring_workspaces: settings.tokens.expiring_workspaces,
        ..loaded.settings.tokens
    };
    *sections = now;
}

/// The top-level keys and sections of a config file, as written (not
/// merged with the environment).
#[derive(Debug, Default)]
pub(super) struct Sections(std::collections::BTreeSet<String>);

impl Sections {
    /// Those of `path` (none when there is no file, or it cannot be read
    /// as TOML: the load that follows says why).
    pub(super) fn of(path: Option<&Path>) -> Self {
        Self(path.map(config::file_sections).unwrap_or_default())
    }

    /// The sections of `self` that `now` lacks.
    fn lost_in(&self, now: &Sections) -> Vec<String> {
        self.0.difference(&now.0).cloned().collect()
    }
}

/// How long [`settled`] waits for a config file to stop changing.
const SETTLE_STEP: Duration = Duration::from_millis(200);
const SETTLE_MAX_STEPS: usize = 10;

/// Waits until `path` reads the same twice, [`SETTLE_STEP`] apart (at most
/// about 2 s): a SIGHUP sent while the file is being written reads it
/// whole.
pub(super) async fn settled(path: Option<&Path>) {
    let Some(path) = path else { return };
    let mut last = tokio::fs::read(path).await.ok();
    for _ in 0..SETTLE_MAX_STEPS {
        tokio::time::sleep(SETTLE_STEP).await;
        let now = tokio::fs::read(path).await.ok();
        if now == last {
            return;
        }
        last = now;
    }
    tracing::warn!(
        file = %path.display(),
        "the config file kept changing for 2 s; reading it as it is now"
    );
}

/// Every top-level section a reload may find changed, by name.
const SECTIONS: [&str; 23] = [
    "data_dir",
    "listen",
    "tls",
    "upstream",
    "proxy",
    "cache",
    "headers",
    "store",
    "admin",
    "audit",
    "log",
    "telemetry",
    "roles",
    "policy",
    "shutdown",
    "runtime",
    "limits",
    "failed_auth",
    "trusted_proxies",
    "tokens",
    "usage",
    "webhooks",
    "leaks",
];

/// What a reload from `old` to `new` lets through that `old` did not, one
/// line each: requests without a Hawzu token passed, routes made public,
/// token limits lifted. Logged as warnings, so that a loosening is never
/// only "config reloaded".
fn loosened(old: &Settings, new: &Settings) -> Vec<String> {
    use crate::policy::OtherCredentials;
    let mut said = Vec::new();
    if old.policy.other_credentials == OtherCredentials::Refuse
        && new.policy.other_credentials == OtherCredentials::Pass
    {
        said.push(
            "policy.other_credentials is now `pass`: requests without a Hawzu token go to the API unjudged"
                .to_owned(),
        );
    }
    if !old.policy.default_rules && new.policy.default_rules {
        said.push("policy.default_rules is now on: the built-in routes are served".to_owned());
    }
    // Each method and path a rule names, with what it asks.
    let asks = |s: &Settings| -> Vec<(String, String)> {
        s.policy
            .rules
            .iter()
            .flat_map(|r| {
                let asks = match (&r.access, &r.permission) {
                    (Some(a), _) => a.clone(),
                    (None, Some(p)) => p.clone(),
                    (None, None) => String::new(),
                };
                r.methods
                    .iter()
                    .map(move |m| (format!("{m} {}", r.path), asks.clone()))
            })
            .collect()
    };
    let before = asks(old);
    for (route, now) in asks(new) {
        let was = before.iter().find(|(r, _)| *r == route).map(|(_, a)| a);
        match was {
            Some(was) if *was == now => {}
            Some(was) => said.push(format!(
                "policy.rules: `{route}` now asks `{now}` (was `{was}`)"
            )),
            None if now == "public" => said.push(format!(
                "policy.rules: `{route}` is now public (passed with no token judged for it)"
            )),
            None => {}
        }
    }
    for (role, perms) in &new.roles {
        let Some(had) = old.roles.get(role) else {
            continue;
        };
        let gained: Vec<&str> = perms
            .iter()
            .filter(|p| !had.contains(p))
            .map(String::as_str)
            .collect();
        if !gained.is_empty() {
            said.push(format!(
                "roles.{role} gains {}: every token with that role has it now",
                gained.join(", ")
            ));
        }
    }
    let lifted = |what: &str, old: &Option<String>, new: &Option<String>| match (old, new) {
        (Some(_), None) => Some(format!(
            "{what} is no longer set: tokens may be made without that limit"
        )),
        (Some(a), Some(b)) if a != b => Some(format!(
            "{what} changed from `{a}` to `{b}` (tokens made from now on are held to it)"
        )),
        _ => None,
    };
    said.extend(lifted(
        "tokens.max_role",
        &old.tokens.max_role,
        &new.tokens.max_role,
    ));
    said.extend(lifted(
        "tokens.max_lifetime",
        &old.tokens.max_lifetime,
        &new.tokens.max_lifetime,
    ));
    for (id, was) in &old.tokens.workspaces {
        let now = new.tokens.workspaces.get(id);
        let none = None;
        said.extend(lifted(
            &format!("tokens.workspaces.\"{id}\".max_role"),
            &was.max_role,
            now.map_or(&none, |w| &w.max_role),
        ));
        said.extend(lifted(
            &format!("tokens.workspaces.\"{id}\".max_lifetime"),
            &was.max_lifetime,
            now.map_or(&none, |w| &w.max_lifetime),
        ));
    }
    said
}

/// Top-level sections that differ and cannot change without a restart.
fn restart_only_changes(old: &Settings, new: &Settings) -> Vec<&'static str> {
    let json = |s: &Settings| serde_json::to_value(s).unwrap_or_default();
    let (a, b) = (json(old), json(new));
    let reloadable = ["roles", "policy", "tls"];
    let mut changed = Vec::new();
    // `tokens` is the policy's (prefixes, lifetimes, roles: live) but for
    // the expiry scan, which is started once.
    for (key, name) in [
        ("expiry_scan_interval", "tokens.expiry_scan_interval"),
        ("expiring_workspaces", "tokens.expiring_workspaces"),
    ] {
        if a["tokens"][key] != b["tokens"][key] {
            changed.push(name);
        }
    }
    if let (Some(a), Some(b)) = (a.as_object(), b.as_object()) {
        for (k, v) in a {
            if k != "tokens" && !reloadable.contains(&k.as_str()) && b.get(k) != Some(v) {
                changed.push(
                    SECTIONS
                        .iter()
                        .find(|s| **s == k.as_str())
                        .copied()
                        .unwrap_or("other"),
                );
            }
        }
    }
    changed
}

/// The TLS settings as last loaded (at start, then by each SIGHUP) and,
/// per TLS listener, when the files they name were last seen changed: what
/// the file watcher and a reload share, under one lock.
#[derive(Debug)]
pub(super) struct TlsFiles {
    tls: TlsSettings,
    stamps: Vec<Stamp>,
}

/// The modification times of a listener's certificate, key and client CA.
type Stamp = Vec<Option<SystemTime>>;

fn stamp(t: Option<&ListenerTls>) -> Stamp {
    let Some(t) = t else { return Vec::new() };
    [
        Some(&t.cert_file),
        Some(&t.key_file),
        t.client_ca_file.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
    .collect()
}

impl TlsFiles {
    /// `tls` as loaded for `handles`, its files stamped now.
    pub(super) fn new(tls: TlsSettings, handles: &[(Which, TlsHandle)]) -> Self {
        let stamps = handles.iter().map(|(w, _)| stamp(w.tls_in(&tls))).collect();
        Self { tls, stamps }
    }
}

/// Re-reads a listener's certificate when its files change (polled every
/// two seconds; a bad new file is logged and the old certificate kept).
/// The files watched, and the settings a reread builds from, are those last
/// loaded: a renewal never brings back what a reload replaced (a client CA
/// added, another path). A reload swaps under the same lock, with the
/// stamps it took before reading the files, so a change made while it
/// read them is reread here.
pub(super) async fn watch_tls_files(files: Arc<Mutex<TlsFiles>>, handles: Vec<(Which, TlsHandle)>) {
    if handles.is_empty() {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tick.tick().await;
        let mut files = files.lock().unwrap_or_else(PoisonError::into_inner);
        let TlsFiles { tls, stamps } = &mut *files;
        for ((which, handle), seen) in handles.iter().zip(stamps.iter_mut()) {
            let Some(t) = which.tls_in(tls) else {
                continue;
            };
            let now = stamp(Some(t));
            if now == *seen {
                continue;
            }
            *seen = now;
            match tls_config(*which, t) {
                Ok(c) => {
                    handle.store(c);
                    tracing::info!(key = which.tls_key(), "certificate files changed; reloaded");
                }
                Err(e) => {
                    tracing::error!(error = %e, "certificate files changed but cannot be used; keeping the old ones")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arc_swap::ArcSwap;

    use super::*;

    /// Loads `toml` (written to a file in `dir`) as the gate would.
    fn load(dir: &Path, toml: &str) -> config::Loaded {
        let file = dir.join("gate.toml");
        std::fs::write(&file, toml).unwrap();
        config::load(Some(&file)).unwrap()
    }

    #[test]
    fn a_prefix_accepted_by_a_reload_is_redacted_and_needs_no_restart() {
        let dir = tempfile::tempdir().unwrap();
        let before = load(dir.path(), "");
        let mut settings = before.settings.clone();
        let policy: PolicyHandle = Arc::new(ArcSwap::new(before.policy.clone()));
        // A prefix no other test uses: the redaction list is the process's.
        let after = "[tokens]\naccepted_prefixes = [\"zzrl_\"]\n";
        load(dir.path(), after);
        let files = Mutex::new(TlsFiles::new(settings.tls.clone(), &[]));
        let file = dir.path().join("gate.toml");
        reload(
            (Some(&file), &mut Sections::default()),
            &mut settings,
            &policy,
            (&[], &files),
        );
        assert!(
            policy
                .load()
                .prefixes
                .accepted()
                .iter()
                .any(|p| p.as_str() == "zzrl_")
        );
        let value = format!("zzrl_{}", "a1B2".repeat(9));
        assert_eq!(
            crate::redact::redact_path(&format!("/x/{value}/y")),
            "/x/zzrl_…redacted/y"
        );
        assert!(!crate::redact::redact_secrets(&value).contains("a1B2"));

        // Governance and prefixes are live; only the expiry scan waits.
        let old = load(dir.path(), "").settings;
        let new = load(dir.path(), after).settings;
        assert!(restart_only_changes(&old, &new).is_empty());
        let new = load(
            dir.path(),
            "[tokens]\nmax_lifetime = \"90d\"\nexpiry_scan_interval = \"7m\"\n",
        )
        .settings;
        assert_eq!(
            restart_only_changes(&old, &new),
            ["tokens.expiry_scan_interval"]
        );
    }

    /// A change that waits for a restart is named by its section, every
    /// section (`telemetry` was "other").
    #[test]
    fn every_section_that_waits_for_a_restart_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let old = load(dir.path(), "").settings;
        for (toml, section) in [
            ("[telemetry]\nservice_name = \"gate-b\"\n", "telemetry"),
            ("[audit]\nmax_events = 5000\n", "audit"),
            ("[usage]\nretention = \"30d\"\n", "usage"),
            ("[leaks]\nmax_tokens_per_report = 10\n", "leaks"),
        ] {
            let new = load(dir.path(), toml).settings;
            assert_eq!(restart_only_changes(&old, &new), [section], "{toml}");
        }
        // Every section has its name: one added later is not "other".
        let all = serde_json::to_value(&old).unwrap();
        for key in all.as_object().unwrap().keys() {
            assert!(SECTIONS.contains(&key.as_str()), "{key} has no name");
        }
    }

    /// Each reload is judged against what is in force — the last reload's
    /// token limits, not the start's: a limit set by one reload and lifted
    /// by the next is a loosening.
    #[test]
    fn a_reload_compares_with_the_last_reload() {
        let dir = tempfile::tempdir().unwrap();
        let start = load(dir.path(), "");
        let mut settings = start.settings.clone();
        let policy: PolicyHandle = Arc::new(ArcSwap::new(start.policy.clone()));
        let files = Mutex::new(TlsFiles::new(settings.tls.clone(), &[]));
        let file = dir.path().join("gate.toml");
        load(dir.path(), "[tokens]\nmax_role = \"workspace_viewer\"\n");
        let mut sections = Sections::default();
        reload(
            (Some(&file), &mut sections),
            &mut settings,
            &policy,
            (&[], &files),
        );
        assert_eq!(
            settings.tokens.max_role.as_deref(),
            Some("workspace_viewer")
        );
        let lifted = load(dir.path(), "[tokens]\n").settings;
        let said = loosened(&settings, &lifted).join("\n");
        assert!(said.contains("tokens.max_role is no longer set"), "{said}");
    }

    /// A reload that lets more through says so, naming what: the operator
    /// reading the log sees more than "config reloaded".
    #[test]
    fn a_reload_that_loosens_the_policy_says_what() {
        let dir = tempfile::tempdir().unwrap();
        let old = load(
            dir.path(),
            "[tokens]\nmax_role = \"workspace_member\"\nmax_lifetime = \"90d\"\n",
        )
        .settings;
        let new = load(
            dir.path(),
            "[policy]\nother_credentials = \"pass\"\n[[policy.rules]]\npath = \"/api/v1/status\"\nmethods = [\"GET\"]\naccess = \"public\"\n",
        )
        .settings;
        let said = loosened(&old, &new).join("\n");
        for what in [
            "policy.other_credentials",
            "/api/v1/status",
            "tokens.max_role",
            "tokens.max_lifetime",
        ] {
            assert!(said.contains(what), "{what}: {said}");
        }
        assert!(
            loosened(&new, &old).is_empty(),
            "tightening is not loosening"
        );
        assert!(loosened(&old, &old).is_empty());

        // A role that gains a permission, a rule that asks less or is made
        // public for another method, a limit changed.
        let old = load(
            dir.path(),
            "[roles]\nci = [\"testcases:read\"]\n[[policy.rules]]\npath = \"/api/v1/status\"\nmethods = [\"GET\"]\naccess = \"public\"\n[[policy.rules]]\npath = \"/api/v1/reports/**\"\nmethods = [\"GET\"]\npermission = \"reports:read\"\n[tokens]\nmax_role = \"workspace_viewer\"\n",
        )
        .settings;
        let new = load(
            dir.path(),
            "[roles]\nci = [\"testcases:read\", \"tokens:manage\"]\n[[policy.rules]]\npath = \"/api/v1/status\"\nmethods = [\"GET\", \"POST\"]\naccess = \"public\"\n[[policy.rules]]\npath = \"/api/v1/reports/**\"\nmethods = [\"GET\"]\npermission = \"testcases:read\"\n[tokens]\nmax_role = \"workspace_manager\"\n",
        )
        .settings;
        let said = loosened(&old, &new).join("\n");
        for what in [
            "roles.ci gains tokens:manage",
            "`POST /api/v1/status` is now public",
            "`GET /api/v1/reports/**` now asks `testcases:read` (was `reports:read`)",
            "tokens.max_role changed from `workspace_viewer` to `workspace_manager`",
        ] {
            assert!(said.contains(what), "{what}: {said}");
        }
    }
}
