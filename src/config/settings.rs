//! The root of the tree: [`Settings`] with its top-level keys and their
//! defaults, and [`Settings::validate`], the one entry point that checks
//! what types alone cannot (each section's check is its own function, in
//! the section's file) and builds the policy. It must never read a file or
//! the environment (`load.rs` does).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::policy::Policy;

use super::admin::AdminSettings;
use super::audit::AuditSettings;
use super::cache::CacheSettings;
use super::clients::{self, FailedAuthSettings, IpNet};
use super::headers::HeaderSettings;
use super::leaks::LeakSettings;
use super::limits::LimitSettings;
use super::listen::{Listen, TlsSettings};
use super::log::LogSettings;
use super::origin::{ConfigError, Origin};
use super::policy::PolicySettings;
use super::runtime::{RuntimeSettings, ShutdownSettings};
use super::store::StoreSettings;
use super::telemetry::TelemetrySettings;
use super::tokens::TokenSettings;
use super::upstream::{ProxySettings, UpstreamSettings};
use super::usage::UsageSettings;
use super::webhooks::{self, WebhookSettings};

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
    /// The audit log of admin actions.
    pub audit: AuditSettings,
    /// Logging.
    pub log: LogSettings,
    /// Traces: the gate's own span per request, over OTLP (off when unset).
    pub telemetry: TelemetrySettings,
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
    /// Governance of tokens (longest lifetime, highest role) and expiry
    /// signals.
    pub tokens: TokenSettings,
    /// Usage per token: retention, and disabling unused tokens.
    pub usage: UsageSettings,
    /// Where lifecycle events are sent, signed (`[[webhooks]]`); none by
    /// default.
    pub webhooks: Vec<WebhookSettings>,
    /// Leaked-token reports (`listen.leaks`): GitHub's keys, body limits.
    pub leaks: LeakSettings,
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
            audit: AuditSettings::default(),
            log: LogSettings::default(),
            telemetry: TelemetrySettings::default(),
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
            tokens: TokenSettings::default(),
            usage: UsageSettings::default(),
            webhooks: Vec::new(),
            leaks: LeakSettings::default(),
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
        self.cache.validate(invalid)?;
        self.upstream.validate(invalid)?;
        self.log.validate(invalid)?;
        self.telemetry.validate(invalid)?;
        self.admin.validate_key(invalid)?;
        self.admin
            .validate_rotation(self.store.retention.0, invalid)?;
        self.headers.validate(invalid)?;
        self.limits.validate(invalid)?;
        self.admin.validate_reserve(&self.limits, invalid)?;
        self.failed_auth.validate(invalid)?;
        self.shutdown.validate(invalid)?;
        self.listen.validate(invalid)?;
        self.usage.validate(invalid)?;
        self.audit.validate(invalid)?;
        webhooks::validate(&self.webhooks, invalid)?;
        self.leaks.validate(invalid)?;
        let mut policy = self.policy.build(&self.roles, invalid)?;
        policy.governance = self.tokens.build(&policy.roles, invalid)?;
        policy.prefixes = self.tokens.prefixes(invalid)?;
        if let Some(key) = &self.admin.key
            && policy.prefixes.starts_any_case(key.as_bytes())
        {
            // The admin API tells a key from a token by its prefix.
            return Err(invalid(
                "admin.key",
                "starts with a token prefix (tokens.prefix or tokens.accepted_prefixes); the admin API would read it as a token".into(),
            ));
        }
        Ok(policy)
    }
}
