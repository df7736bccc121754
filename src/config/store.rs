//! The `[store]` section: which backend holds the tokens, and how the gate
//! reaches Redis (standalone, Sentinel, cluster). Owns their defaults, the
//! checks of modes and URLs, and the redaction of passwords in URLs; it must
//! never connect (the server opens the store).

use crate::redact::redact_url;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration::HumanDuration;

/// Which store backs the tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum Backend {
    /// A file under `data_dir`; one gate.
    Embedded,
    /// Redis; a fleet of gates.
    Redis,
}

/// Token storage settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSettings {
    /// `embedded` or `redis`.
    pub backend: Backend,
    /// Bound on every store call (embedded writes get ten times this).
    pub timeout: HumanDuration,
    /// How long Redis keeps revoked and expired records (tombstones).
    pub retention: HumanDuration,
    /// Redis connection.
    pub redis: RedisSettings,
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            backend: Backend::Embedded,
            timeout: HumanDuration(Duration::from_millis(250)),
            retention: HumanDuration(Duration::from_secs(30 * 24 * 3600)),
            redis: RedisSettings::default(),
        }
    }
}

impl StoreSettings {
    /// Checks `store.*` (and `store.redis.*` when the backend is Redis);
    /// `invalid(key, message)` builds the error naming the key at fault.
    pub(crate) fn validate<E>(&self, invalid: impl Fn(&str, String) -> E) -> Result<(), E> {
        // Every request that misses the cache may wait this long.
        self.timeout
            .within(Duration::from_millis(1), Duration::from_secs(60))
            .map_err(|why| invalid("store.timeout", why))?;
        if self.retention.0 < Duration::from_secs(60) {
            return Err(invalid("store.retention", "must be at least 1m".into()));
        }
        if self.backend == Backend::Redis {
            self.redis.validate(&invalid)?;
        } else if let Some(key) = self.redis.first_set() {
            // A fleet whose backend was forgotten: each gate would keep its
            // own tokens, and a revocation would reach one gate only.
            return Err(invalid(
                &format!("store.redis.{key}"),
                "is set, but store.backend is `embedded` (the default): this gate would keep its own tokens, and no other gate would see its changes; set store.backend = \"redis\" (HAWZU_GATE__STORE__BACKEND=redis), or remove it".into(),
            ));
        }
        let prefix = &self.redis.key_prefix;
        if prefix.is_empty() || prefix.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid(
                "store.redis.key_prefix",
                "must be non-empty, with no spaces or control characters".into(),
            ));
        }
        // The audit log's keys must share the stream's cluster slot: a
        // prefix with braces must begin with a whole hash tag's worth.
        let tagged = prefix
            .find('{')
            .and_then(|i| prefix[i + 1..].find('}'))
            .is_some_and(|j| j > 0);
        if !tagged && prefix.contains(['{', '}']) {
            return Err(invalid(
                "store.redis.key_prefix",
                "has a brace outside a hash tag; use no braces, or one hash tag such as `{hawzu}:`"
                    .into(),
            ));
        }
        Ok(())
    }
}

impl TryFrom<String> for Backend {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "embedded" => Ok(Self::Embedded),
            "redis" => Ok(Self::Redis),
            _ => Err(format!(
                "`{s}` is not a store backend; use embedded or redis"
            )),
        }
    }
}

/// Redis connection settings.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisSettings {
    /// `standalone` (one server at `url`), `sentinel` (the master that the
    /// sentinels in `nodes` name `sentinel.master_name`) or `cluster` (a
    /// Redis Cluster reached through `nodes`).
    pub mode: RedisMode,
    /// Standalone: `redis://[user:password@]host:port[/db]`, or `rediss://…`
    /// for TLS (the server's certificate checked against the system's CAs,
    /// or `ca_file`).
    pub url: String,
    /// Standalone over TLS: the CA (PEM) that signed the server's
    /// certificate, instead of the system's CAs.
    pub ca_file: Option<PathBuf>,
    /// Sentinel: the sentinels' addresses; cluster: some of its nodes.
    /// `redis://[user:password@]host:port` each (a cluster takes the
    /// credentials of the first).
    pub nodes: Vec<String>,
    /// Prefix of every key and channel.
    pub key_prefix: String,
    /// Sentinel mode only.
    pub sentinel: SentinelSettings,
    /// Cluster mode only.
    pub cluster: ClusterSettings,
}

/// How the gate finds Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum RedisMode {
    Standalone,
    Sentinel,
    Cluster,
}

impl TryFrom<String> for RedisMode {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "standalone" => Ok(Self::Standalone),
            "sentinel" => Ok(Self::Sentinel),
            "cluster" => Ok(Self::Cluster),
            _ => Err(format!(
                "`{s}` is not a Redis mode; use standalone, sentinel or cluster"
            )),
        }
    }
}

impl RedisMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Standalone => "standalone",
            Self::Sentinel => "sentinel",
            Self::Cluster => "cluster",
        }
    }
}

/// The Sentinel set-up (`store.redis.mode = "sentinel"`).
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SentinelSettings {
    /// The master's name in the sentinels' configuration (required).
    pub master_name: String,
    /// The master's user (ACL), if any; the sentinels' own credentials go
    /// in their URLs in `store.redis.nodes`.
    pub username: Option<String>,
    /// The master's password, if any.
    pub password: Option<String>,
    /// The fewest replicas that must hold each admin change (create,
    /// disable, enable, revoke, rotate) before it is answered; the gate
    /// also waits for every replica the sentinels hold up (Redis `WAIT`,
    /// within `store.timeout`); fewer → 503 `store_unavailable`, and the
    /// caller tries again. Default 1: a change answered 200 survives a
    /// fail-over. 0 answers once the master has it (a fail-over may lose
    /// it).
    pub replica_acks: Option<u32>,
}

/// The Cluster set-up (`store.redis.mode = "cluster"`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSettings {
    /// Replicas of the shard holding a token's record that must hold each
    /// admin change (create, disable, enable, revoke, rotate) before it is
    /// answered (Redis `WAIT` on that shard's master, within
    /// `store.timeout`); fewer → 503 `store_unavailable`, and the caller
    /// tries again. Not set (the default): every replica the shard's
    /// master has connected when the change is made (`ROLE`), so that a
    /// change answered survives a fail-over, and a shard without a replica
    /// answers at once. `0`: answered once the master has it — a fail-over
    /// right after may lose it (a revoke undone).
    pub replica_acks: Option<u32>,
}

/// [`SentinelSettings::replica_acks`] when not set.
pub const DEFAULT_REPLICA_ACKS: u32 = 1;

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            mode: RedisMode::Standalone,
            url: "redis://127.0.0.1:6379".into(),
            ca_file: None,
            nodes: Vec::new(),
            key_prefix: "hawzu-gate:v1:".into(),
            sentinel: SentinelSettings::default(),
            cluster: ClusterSettings::default(),
        }
    }
}

impl fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSettings")
            .field("mode", &self.mode)
            .field("url", &redact_url(&self.url))
            .field("ca_file", &self.ca_file)
            .field(
                "nodes",
                &self.nodes.iter().map(|n| redact_url(n)).collect::<Vec<_>>(),
            )
            .field("key_prefix", &self.key_prefix)
            .field("sentinel", &self.sentinel)
            .field("cluster", &self.cluster)
            .finish()
    }
}

impl fmt::Debug for SentinelSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SentinelSettings")
            .field("master_name", &self.master_name)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("replica_acks", &self.replica_acks)
            .finish()
    }
}

impl RedisSettings {
    /// The first key set to other than its default, but `key_prefix`
    /// (which names the embedded store's nothing and harms nothing).
    fn first_set(&self) -> Option<&'static str> {
        let mine = serde_json::to_value(self).ok()?;
        let default = serde_json::to_value(Self::default()).ok()?;
        ["mode", "url", "ca_file", "nodes", "sentinel", "cluster"]
            .into_iter()
            .find(|k| mine.get(k) != default.get(k))
    }

    /// Checks the mode and its addresses; `invalid(key, message)` builds
    /// the error naming the key at fault.
    fn validate<E>(&self, invalid: impl Fn(&str, String) -> E) -> Result<(), E> {
        let check_url = |key: &str, url: &str| {
            if url.starts_with("rediss://") && self.mode != RedisMode::Standalone {
                return Err(invalid(
                    key,
                    format!(
                        "`{}`: TLS to Redis (rediss://) is supported for a standalone server only in this version; reach the {} nodes over redis:// on a private network",
                        redact_url(url),
                        self.mode.as_str()
                    ),
                ));
            }
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                return Err(invalid(
                    key,
                    format!("`{}` is not a redis:// or rediss:// URL", redact_url(url)),
                ));
            }
            if redis::Client::open(url).is_err() {
                return Err(invalid(
                    key,
                    format!("`{}` is not a valid Redis URL", redact_url(url)),
                ));
            }
            Ok(())
        };
        let mode = self.mode.as_str();
        match self.mode {
            RedisMode::Standalone => {
                check_url("store.redis.url", &self.url)?;
                if let Some(ca) = &self.ca_file {
                    if !self.url.starts_with("rediss://") {
                        return Err(invalid(
                            "store.redis.ca_file",
                            "is only used with a rediss:// store.redis.url".into(),
                        ));
                    }
                    crate::tls::load_certs(ca)
                        .map_err(|e| invalid("store.redis.ca_file", e.to_string()))?;
                }
                if !self.nodes.is_empty() {
                    return Err(invalid(
                        "store.redis.nodes",
                        "is for sentinel and cluster modes; a standalone server is store.redis.url (or set store.redis.mode)".into(),
                    ));
                }
            }
            RedisMode::Sentinel | RedisMode::Cluster => {
                if self.ca_file.is_some() {
                    return Err(invalid(
                        "store.redis.ca_file",
                        "is only used in standalone mode (with a rediss:// URL)".into(),
                    ));
                }
                if self.nodes.is_empty() {
                    let what = if self.mode == RedisMode::Sentinel {
                        "the sentinels' addresses"
                    } else {
                        "one or more cluster nodes"
                    };
                    return Err(invalid(
                        "store.redis.nodes",
                        format!("must list {what} when store.redis.mode is {mode}"),
                    ));
                }
                for (i, node) in self.nodes.iter().enumerate() {
                    check_url(&format!("store.redis.nodes[{i}]"), node)?;
                }
            }
        }
        let sentinel_set = !self.sentinel.master_name.is_empty()
            || self.sentinel.replica_acks.is_some()
            || self.sentinel.username.is_some()
            || self.sentinel.password.is_some();
        if self.mode == RedisMode::Sentinel {
            let name = &self.sentinel.master_name;
            if name.is_empty() {
                return Err(invalid(
                    "store.redis.sentinel.master_name",
                    "is required when store.redis.mode is sentinel".into(),
                ));
            }
            if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(invalid(
                    "store.redis.sentinel.master_name",
                    "must have no spaces or control characters".into(),
                ));
            }
        } else if sentinel_set {
            return Err(invalid(
                "store.redis.sentinel",
                format!("is only used when store.redis.mode is sentinel (it is {mode})"),
            ));
        }
        if self.mode != RedisMode::Cluster && self.cluster.replica_acks.is_some() {
            return Err(invalid(
                "store.redis.cluster",
                format!("is only used when store.redis.mode is cluster (it is {mode})"),
            ));
        }
        Ok(())
    }
}
