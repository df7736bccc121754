//! Settings: one documented tree, loaded in three layers and checked once.
//!
//! One typed tree, loaded with the `config` crate in three layers: built-in
//! defaults (the `Default` impls, one per section file, the only place
//! defaults live) ← a TOML file ← `HAWZU_GATE__SECTION__KEY` environment
//! variables. An unknown key or a malformed value is an error that names the
//! key and the layer it came from; nothing falls back silently.
//!
//! This file is the index: it declares the parts and re-exports their types,
//! so `crate::config::X` is the one path users write and no part imports
//! this file (a part imports only its siblings, by their own paths, so the
//! parts form no circle). `settings.rs` holds the root ([`Settings`]) and
//! the one check entry point ([`Settings::validate`]); each TOML section has
//! its file with its types, defaults and checks (`listen.rs`, `store.rs`,
//! `limits.rs`, …); `load.rs` reads the layers and `origin.rs` names where a
//! value came from. Nothing here may open a socket, a store
//! or a file other than the config file and the CA files it checks. It
//! imports only `policy` (to build the `Policy`), `headers` (defaults and
//! the strip check), `tls` (the CA check), `token::expiry` (lifetimes) and
//! `audit` (the webhook event types) — never the server, the doors,
//! the store or the admin plane.

mod admin;
mod audit;
mod cache;
mod clients;
mod duration;
mod exposed;
mod headers;
mod leaks;
mod limits;
mod listen;
mod load;
mod log;
mod origin;
mod policy;
mod runtime;
mod settings;
mod store;
mod telemetry;
mod tokens;
mod upstream;
mod usage;
mod webhooks;

pub use crate::redact::redact_url;
pub use admin::{AdminSettings, MIN_ADMIN_KEY_LEN};
pub use audit::AuditSettings;
pub use cache::CacheSettings;
pub use clients::{FailedAuthSettings, IpNet};
pub use duration::{HumanDuration, short as short_duration};
pub use exposed::exposed_file;
pub use headers::HeaderSettings;
pub use leaks::{GITHUB_KEYS_URL, LeakSettings};
pub use limits::LimitSettings;
pub use listen::{Listen, ListenerTls, TlsSettings};
pub use load::{
    COMMAND_LINE_ENV, CONFIG_ENV, DEFAULT_CONFIG_FILE, Loaded, config_found_in_cwd, config_path,
    file_sections, load, load_from, unread_env,
};
pub use log::{LogFormat, LogSettings};
pub use origin::{ConfigError, ENV_PREFIX, Origin, env_name};
pub use policy::{PolicySettings, RuleSettings};
pub use runtime::{RuntimeSettings, ShutdownSettings};
pub use settings::Settings;
pub use store::{
    Backend, ClusterSettings, DEFAULT_REPLICA_ACKS, RedisMode, RedisSettings, SentinelSettings,
    StoreSettings,
};
pub use telemetry::{TRACES_PATH, TelemetrySettings};
pub use tokens::{TokenSettings, WorkspaceTokenSettings};
pub use upstream::{ProxySettings, UpstreamSettings};
pub use usage::UsageSettings;
pub use webhooks::{ALL_EVENTS, MIN_WEBHOOK_SECRET_LEN, WebhookSettings, check_secret};

#[cfg(test)]
mod tests;
