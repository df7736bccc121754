//! Where a value came from, and the error that says so: [`ConfigError`]
//! names the key at fault and the layer (file or environment variable) that
//! set it; [`env_name`] maps a key to its variable. It must never read the
//! file or the environment itself.

use std::path::PathBuf;

use thiserror::Error;

/// Prefix of per-key environment overrides: `HAWZU_GATE__STORE__BACKEND`.
pub const ENV_PREFIX: &str = "HAWZU_GATE";

/// A configuration that cannot be used. The message names the key and where
/// it came from.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("config file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("environment ({vars}): {message}")]
    Env { vars: String, message: String },
    #[error("{key}: {message}{}", origin_hint(.origin))]
    Invalid {
        key: String,
        message: String,
        origin: Option<String>,
    },
}

fn origin_hint(origin: &Option<String>) -> String {
    origin
        .as_ref()
        .map(|s| format!(" (set in {s})"))
        .unwrap_or_default()
}

/// Where the settings came from, for messages.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    pub file: Option<PathBuf>,
    pub env_vars: Vec<String>,
    /// `file` is `./hawzu-gate.toml`, found in the working directory, not
    /// named (`--config`, `$HAWZU_GATE_CONFIG`): whoever wrote the
    /// directory wrote it.
    pub found_in_cwd: bool,
}

impl Origin {
    /// The layer that set `key` last, for error messages.
    pub(super) fn of(&self, key: &str) -> Option<String> {
        let env = env_name(key);
        if self.env_vars.contains(&env) {
            return Some(env);
        }
        self.file.as_ref().map(|f| f.display().to_string())
    }
}

/// `store.redis.url` → `HAWZU_GATE__STORE__REDIS__URL`.
pub fn env_name(key: &str) -> String {
    format!("{ENV_PREFIX}__{}", key.replace('.', "__").to_uppercase())
}
