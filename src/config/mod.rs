//! Settings: one documented tree, loaded in three layers and checked once.
//!
//! One typed tree, loaded with the `config` crate in three layers: built-in
//! defaults (the `Default` impls, one per section file, the only place
//! defaults live) ← a TOML file ← `HAWZU_GATE__SECTION__KEY` environment
//! variables. An unknown key or a malformed value is an error that names the
//! key and the layer it came from; nothing falls back silently.
//!
//! This file owns the root ([`Settings`]) and the one check entry point
//! ([`Settings::validate`]); each TOML section has its file beside it with
//! its types, defaults and checks (`listen.rs`, `store.rs`, `limits.rs`, …),
//! and `load.rs` reads the layers. Nothing here may open a socket, a store
//! or a file other than the config file and the CA files it checks. It
//! imports only `policy` (to build the `Policy`), `headers` (defaults and
//! the strip check) and `tls` (the CA check) — never the server, the doors,
//! the store or the admin plane.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::policy::Policy;

mod admin;
mod cache;
mod clients;
mod duration;
mod headers;
mod limits;
mod listen;
mod load;
mod log;
mod policy;
mod runtime;
mod store;
mod upstream;

pub use admin::{AdminSettings, MIN_ADMIN_KEY_LEN};
pub use cache::CacheSettings;
pub use clients::{FailedAuthSettings, IpNet};
pub use duration::HumanDuration;
pub use headers::HeaderSettings;
pub use limits::LimitSettings;
pub use listen::{Listen, ListenerTls, TlsSettings};
pub use load::{ConfigError, Loaded, Origin, config_path, env_name, load, load_from};
pub use log::{LogFormat, LogSettings};
pub use policy::{PolicySettings, RuleSettings};
pub use runtime::{RuntimeSettings, ShutdownSettings};
pub use store::{
    Backend, DEFAULT_REPLICA_ACKS, RedisMode, RedisSettings, SentinelSettings, StoreSettings,
    redact_url,
};
pub use upstream::{ProxySettings, UpstreamSettings};

/// Environment variable naming the config file when `--config` is absent.
pub const CONFIG_ENV: &str = "HAWZU_GATE_CONFIG";
/// Prefix of per-key environment overrides: `HAWZU_GATE__STORE__BACKEND`.
pub const ENV_PREFIX: &str = "HAWZU_GATE";
/// File read from the working directory when no file is named.
pub const DEFAULT_CONFIG_FILE: &str = "hawzu-gate.toml";

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Directory for the embedded store and the generated admin key.
    pub data_dir: PathBuf,
    /// Listener addresses.
    pub listen: Listen,
    /// TLS per listener (plain TCP where absent).
    pub tls: TlsSettings,
    /// The API the reverse proxy forwards to.
    pub upstream: UpstreamSettings,
    /// Reverse-proxy behaviour.
    pub proxy: ProxySettings,
    /// The token cache.
    pub cache: CacheSettings,
    /// Identity headers.
    pub headers: HeaderSettings,
    /// Token storage.
    pub store: StoreSettings,
    /// The admin API.
    pub admin: AdminSettings,
    /// Logging.
    pub log: LogSettings,
    /// Custom roles: name → permission patterns (`executions:write`, `*:read`).
    /// Built-in roles cannot be redefined.
    pub roles: BTreeMap<String, Vec<String>>,
    /// Route rules.
    pub policy: PolicySettings,
    /// Stopping.
    pub shutdown: ShutdownSettings,
    /// The async runtime.
    pub runtime: RuntimeSettings,
    /// Connection, request and header limits of every listener.
    pub limits: LimitSettings,
    /// Refusing clients that keep sending invalid tokens.
    pub failed_auth: FailedAuthSettings,
    /// Peers whose `X-Forwarded-For` is believed (CIDRs or addresses): the
    /// client is then the address they forwarded for. Everyone else's
    /// `X-Forwarded-*` headers are replaced, never trusted.
    #[serde(deserialize_with = "clients::ip_nets")]
    pub trusted_proxies: Vec<IpNet>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./hawzu-gate-data"),
            listen: Listen::default(),
            tls: TlsSettings::default(),
            upstream: UpstreamSettings::default(),
            proxy: ProxySettings::default(),
            cache: CacheSettings::default(),
            headers: HeaderSettings::default(),
            store: StoreSettings::default(),
            admin: AdminSettings::default(),
            log: LogSettings::default(),
            roles: BTreeMap::new(),
            policy: PolicySettings::default(),
            shutdown: ShutdownSettings::default(),
            runtime: RuntimeSettings::default(),
            limits: LimitSettings::default(),
            failed_auth: FailedAuthSettings::default(),
            trusted_proxies: ["127.0.0.1", "::1"]
                .iter()
                .filter_map(|s| s.parse().ok())
                .collect(),
        }
    }
}

impl Settings {
    /// Checks what types alone cannot, and builds the policy: the one entry
    /// point, section by section (the order fixes which fault is reported
    /// when there are several). Each section's check is its own function.
    pub fn validate(&self, origin: &Origin) -> Result<Policy, ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            key: key.to_owned(),
            message,
            origin: origin.of(key),
        };
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "must not be empty".into()));
        }
        self.store.validate(invalid)?;
        self.admin.validate_key(invalid)?;
        self.headers.validate(invalid)?;
        self.limits.validate(invalid)?;
        self.admin.validate_reserve(&self.limits, invalid)?;
        self.failed_auth.validate(invalid)?;
        self.listen.validate(invalid)?;
        self.policy.build(&self.roles, invalid)
    }
}

#[cfg(test)]
mod tests;
