//! Loading: the three layers (built-in defaults ← TOML file ←
//! `HAWZU_GATE__SECTION__KEY` environment variables), finding the file, and
//! noting which layer set what (`origin.rs` turns that into messages). Owns
//! reading the file and the environment; every check of a value is
//! [`Settings::validate`]'s, never this file's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::policy::Policy;

use super::origin::{ConfigError, ENV_PREFIX, Origin};
use super::settings::Settings;

/// Environment variable naming the config file when `--config` is absent.
pub const CONFIG_ENV: &str = "HAWZU_GATE_CONFIG";
/// File read from the working directory when no file is named.
pub const DEFAULT_CONFIG_FILE: &str = "hawzu-gate.toml";

/// The loaded settings plus the pieces derived from them at load time.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub settings: Settings,
    pub policy: Arc<Policy>,
    pub origin: Origin,
    /// What was read but means nothing (a `HAWZU_GATE_…` variable with one
    /// underscore, which sets no key): shown by `check-config` and logged
    /// by `serve`, never silently ignored.
    pub warnings: Vec<String>,
}

/// The `HAWZU_GATE_…` variables (one underscore) the command line reads.
/// Every other one sets nothing.
pub const COMMAND_LINE_ENV: [&str; 6] = [
    CONFIG_ENV,
    "HAWZU_GATE_ADMIN_URL",
    "HAWZU_GATE_ADMIN_KEY",
    "HAWZU_GATE_ADMIN_CA",
    "HAWZU_GATE_ADMIN_CERT",
    "HAWZU_GATE_ADMIN_CERT_KEY",
];

/// A warning for each `HAWZU_GATE_…` name in `names` that sets nothing: not
/// a command-line variable and not `HAWZU_GATE__SECTION__KEY`.
pub fn unread_env<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let settings_prefix = format!("{ENV_PREFIX}__");
    names
        .into_iter()
        .filter(|n| n.starts_with(&format!("{ENV_PREFIX}_")))
        .filter(|n| !n.starts_with(&settings_prefix) && !COMMAND_LINE_ENV.contains(n))
        .map(|n| {
            let rest = &n[ENV_PREFIX.len() + 1..];
            let meant = if rest.contains("__") {
                format!("{ENV_PREFIX}__{rest}")
            } else {
                env_name_spelled(rest).unwrap_or_else(|| format!("{ENV_PREFIX}__UPSTREAM__URL"))
            };
            format!(
                "{n} sets nothing: settings are {ENV_PREFIX}__SECTION__KEY (two underscores after {ENV_PREFIX} and between the parts of a key, e.g. {meant}); the command line reads {}",
                COMMAND_LINE_ENV.join(", ")
            )
        })
        .collect()
}

/// The variables an environment error is about: those under the key it
/// names (`… for key `store.redis``, and the field of an `unknown field`),
/// else every one set, when the message names none of them.
fn vars_at_fault<'v>(vars: &'v [String], message: &str) -> Vec<&'v str> {
    let quoted = |after: &str| {
        let rest = &message[message.find(after)? + after.len()..];
        rest.split('`').next()
    };
    let mut name = String::from(ENV_PREFIX);
    for part in quoted("for key `").into_iter().flat_map(|k| k.split('.')) {
        name.push_str("__");
        name.push_str(&part.to_ascii_uppercase());
    }
    if let Some(field) = quoted("unknown field `") {
        name.push_str("__");
        name.push_str(&field.to_ascii_uppercase());
    }
    let at_fault: Vec<&str> = vars
        .iter()
        .map(String::as_str)
        .filter(|v| *v == name || v.starts_with(&format!("{name}__")))
        .collect();
    if name == ENV_PREFIX || at_fault.is_empty() {
        vars.iter().map(String::as_str).collect()
    } else {
        at_fault
    }
}

/// The variable of the setting whose dotted key, `.` read as `_`, spells
/// `rest` (`UPSTREAM_URL` → `HAWZU_GATE__UPSTREAM__URL`), if one does.
fn env_name_spelled(rest: &str) -> Option<String> {
    fn paths(v: &serde_json::Value, at: &str, out: &mut Vec<String>) {
        if let serde_json::Value::Object(fields) = v {
            for (k, v) in fields {
                let path = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                paths(v, &path, out);
                out.push(path);
            }
        }
    }
    let defaults = serde_json::to_value(Settings::default()).ok()?;
    let mut all = Vec::new();
    paths(&defaults, "", &mut all);
    all.into_iter()
        .find(|p| p.replace('.', "_").eq_ignore_ascii_case(rest))
        .map(|p| {
            format!(
                "{ENV_PREFIX}__{}",
                p.to_ascii_uppercase().replace('.', "__")
            )
        })
}

/// The top-level keys and sections written in the config file at `path`,
/// as written (not merged with defaults or the environment); none when it
/// cannot be read as TOML.
pub fn file_sections(path: &Path) -> std::collections::BTreeSet<String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Default::default();
    };
    config::Config::builder()
        .add_source(config::File::from_str(&text, config::FileFormat::Toml))
        .build()
        .and_then(|c| c.try_deserialize::<BTreeMap<String, config::Value>>())
        .map(|m| m.into_keys().collect())
        .unwrap_or_default()
}

/// Whether [`config_path`] finds `./hawzu-gate.toml` by looking in the
/// working directory (nothing named a file).
pub fn config_found_in_cwd(explicit: Option<&Path>) -> bool {
    explicit.is_none()
        && std::env::var_os(CONFIG_ENV).is_none_or(|v| v.is_empty())
        && Path::new(DEFAULT_CONFIG_FILE).is_file()
}

/// Finds the config file: `explicit`, else `$HAWZU_GATE_CONFIG`, else
/// `./hawzu-gate.toml` if it exists, else none.
pub fn config_path(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_owned());
    }
    if let Some(p) = std::env::var_os(CONFIG_ENV).filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let default = PathBuf::from(DEFAULT_CONFIG_FILE);
    default.is_file().then_some(default)
}

/// Loads settings from defaults, `file` and the process environment.
pub fn load(file: Option<&Path>) -> Result<Loaded, ConfigError> {
    let names: Vec<String> = std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .collect();
    let env: BTreeMap<String, String> = std::env::vars()
        .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}__")))
        .collect();
    let mut loaded = load_from(file, env)?;
    loaded
        .warnings
        .extend(unread_env(names.iter().map(String::as_str)));
    Ok(loaded)
}

/// Loads settings from defaults, `file` and the given environment variables
/// (only `HAWZU_GATE__…` ones are read).
pub fn load_from(
    file: Option<&Path>,
    env: BTreeMap<String, String>,
) -> Result<Loaded, ConfigError> {
    let defaults =
        config::Config::try_from(&Settings::default()).map_err(|e| ConfigError::Invalid {
            key: "defaults".into(),
            message: e.to_string(),
            origin: None,
        })?;
    let mut origin = Origin::default();
    let mut builder = config::Config::builder().add_source(defaults);

    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: path.to_owned(),
            message: format!("cannot read it: {e}"),
        })?;
        builder = builder.add_source(config::File::from_str(&text, config::FileFormat::Toml));
        // Deserialize once without the environment, so that a fault in the
        // file is reported against the file.
        builder
            .build_cloned()
            .and_then(|c| c.try_deserialize::<Settings>())
            .map_err(|e| ConfigError::File {
                path: path.to_owned(),
                message: without_values(&e.to_string()),
            })?;
        origin.file = Some(path.to_owned());
    }

    let env: BTreeMap<String, String> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}__")))
        .collect();
    if !env.is_empty() {
        origin.env_vars = env.keys().cloned().collect();
        // The parser lower-cases names: a workspace id is a map key there,
        // and `Acme` would silently become `acme`.
        if let Some(var) = env.keys().find(|var| {
            let path: Vec<&str> = var.split("__").collect();
            matches!(path.as_slice(), [_, t, w, id, ..]
                if t.eq_ignore_ascii_case("tokens")
                    && w.eq_ignore_ascii_case("workspaces")
                    && id.bytes().any(|b| b.is_ascii_uppercase()))
        }) {
            return Err(ConfigError::Env {
                vars: var.clone(),
                message: "environment names are read in lower case, so a workspace id with capitals is another workspace's: write the id in lower case if it is lower case (HAWZU_GATE__TOKENS__WORKSPACES__acme__MAX_ROLE), or set a workspace whose id has capitals in the config file ([tokens.workspaces.\"Acme\"])".into(),
            });
        }
        // Lists are comma-separated; everything else is the text given, as
        // text (the parser's own `try_parsing` read `007` as the number 7
        // and a password of digits as a number): the settings' types parse
        // numbers and bools from it.
        let (lists, scalars): (BTreeMap<String, String>, BTreeMap<String, String>) = env
            .into_iter()
            .partition(|(var, _)| is_list_key(&key_of(var)));
        for (var, value) in lists {
            let items = if key_of(&var) == "store.redis.nodes" {
                split_urls(&value)
            } else {
                value.split(',').map(str::to_owned).collect()
            };
            builder = builder
                .set_override(key_of(&var), items)
                .map_err(|e| ConfigError::Env {
                    vars: var.clone(),
                    message: without_values(&e.to_string()),
                })?;
        }
        let env_source = config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("__")
            .separator("__")
            .try_parsing(false)
            .source(Some(scalars.into_iter().collect()));
        builder = builder.add_source(env_source);
    }
    let settings: Settings = builder
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|e| {
            let message = e.to_string();
            ConfigError::Env {
                vars: vars_at_fault(&origin.env_vars, &message).join(", "),
                message: without_values(&message),
            }
        })?;

    let policy = Arc::new(settings.validate(&origin)?);
    let mut warnings = policy.rules.warnings();
    warnings.extend(super::exposed::exposed_secrets(&settings, &origin));
    warnings.extend(super::webhooks::in_the_clear(&settings.webhooks));
    warnings.extend(super::clients::trusting_everyone(&settings.trusted_proxies));
    warnings.extend(
        settings
            .listen
            .admin_in_the_clear(settings.tls.admin.is_some()),
    );
    warnings.extend(settings.headers.dropped_defaults());
    Ok(Loaded {
        settings,
        policy,
        origin,
        warnings,
    })
}

/// The parser's message without the values it quotes: a TOML syntax error
/// shows the offending line (a password with a stray `\`), a type error
/// the string it could not take (`invalid type: string "redis://:pw@…"`).
/// Where (line and column, the key) and why stay; a quoted string becomes
/// its length.
fn without_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for line in message.lines() {
        // The excerpt under a TOML error: `  |`, `2 | password = "…"`.
        let t = line.trim_start();
        let excerpt = t.starts_with('|')
            || t.split_once('|').is_some_and(|(n, _)| {
                !n.trim().is_empty() && n.trim().bytes().all(|b| b.is_ascii_digit())
            });
        if excerpt {
            continue;
        }
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&dotted_key(&strings_as_lengths(line)));
    }
    out
}

/// The parser's key path as the docs write it: `webhooks[0]timeout` (its
/// spelling) → `webhooks[0].timeout`.
fn dotted_key(line: &str) -> String {
    const KEY: &str = "for key `";
    let Some(at) = line.find(KEY) else {
        return line.to_owned();
    };
    let start = at + KEY.len();
    let end = line[start..].find('`').map_or(line.len(), |n| start + n);
    let mut key = String::with_capacity(end - start + 4);
    let mut after_index = false;
    for c in line[start..end].chars() {
        if after_index && c != '.' && c != '[' {
            key.push('.');
        }
        after_index = c == ']';
        key.push(c);
    }
    format!("{}{key}{}", &line[..start], &line[end..])
}

/// `string "…"` (serde's quoting, `\"` inside escaped) as `a string of N
/// characters`.
fn strings_as_lengths(line: &str) -> String {
    const QUOTED: &str = "string \"";
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(at) = rest.find(QUOTED) {
        out.push_str(&rest[..at]);
        let body = &rest[at + QUOTED.len()..];
        let mut chars = 0usize;
        let mut escaped = false;
        let mut end = None;
        for (i, c) in body.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => {
                    end = Some(i);
                    break;
                }
                _ => {}
            }
            if !escaped {
                chars += 1;
            }
        }
        let Some(end) = end else {
            // No closing quote: hide the rest.
            out.push_str("a string (value hidden)");
            return out;
        };
        out.push_str(&format!("a string of {chars} characters"));
        rest = &body[end + 1..];
    }
    out.push_str(rest);
    out
}

/// The key a `HAWZU_GATE__…` variable sets: `HAWZU_GATE__STORE__REDIS__NODES`
/// is `store.redis.nodes` (lower case, as the parser reads it).
fn key_of(var: &str) -> String {
    var.strip_prefix(&format!("{ENV_PREFIX}__"))
        .unwrap_or(var)
        .split("__")
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join(".")
}

/// The keys whose variables are comma-separated lists:
/// `HAWZU_GATE__TRUSTED_PROXIES=10.0.0.0/8,127.0.0.1` (empty: none),
/// `HAWZU_GATE__HEADERS__STRIP=X-HTTP-Method-Override,X-Original-URL`,
/// `HAWZU_GATE__STORE__REDIS__NODES=redis://a:7000,redis://b:7000`,
/// `HAWZU_GATE__TOKENS__ACCEPTED_PREFIXES=hwz_,old_`, and custom roles
/// (`HAWZU_GATE__ROLES__RUNNER=executions:read,executions:write`).
/// A comma-separated list of URLs, split only where a URL starts (a
/// `redis://` or `rediss://` after the comma and any spaces), each item
/// trimmed: a password may hold a comma.
fn split_urls(value: &str) -> Vec<String> {
    let mut items: Vec<String> = Vec::new();
    for piece in value.split(',') {
        let starts = piece.trim_start();
        match items.last_mut() {
            Some(last) if !(starts.starts_with("redis://") || starts.starts_with("rediss://")) => {
                last.push(',');
                last.push_str(piece);
            }
            _ => items.push(starts.to_owned()),
        }
    }
    items.iter().map(|i| i.trim_end().to_owned()).collect()
}

fn is_list_key(key: &str) -> bool {
    matches!(
        key,
        "trusted_proxies" | "headers.strip" | "store.redis.nodes" | "tokens.accepted_prefixes"
    ) || key
        .strip_prefix("roles.")
        .is_some_and(|role| !role.is_empty() && !role.contains('.'))
}
