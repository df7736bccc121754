//! Settings and loading.
//!
//! One typed tree, loaded with the `config` crate in three layers: built-in
//! defaults (the `Default` impls below, the only place defaults live) ← a
//! TOML file ← `HAWZU_GATE__SECTION__KEY` environment variables. An unknown
//! key or a malformed value is an error that names the key and the layer it
//! came from; nothing falls back silently.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

use std::sync::Arc;

use crate::policy::Policy;
use crate::policy::roles::{Permission, RoleScope, Roles};
use crate::policy::rules::{MethodSet, Rule, RuleError, RuleSet, Template};

/// Environment variable naming the config file when `--config` is absent.
pub const CONFIG_ENV: &str = "HAWZU_GATE_CONFIG";
/// Prefix of per-key environment overrides: `HAWZU_GATE__STORE__BACKEND`.
pub const ENV_PREFIX: &str = "HAWZU_GATE";
/// File read from the working directory when no file is named.
pub const DEFAULT_CONFIG_FILE: &str = "hawzu-gate.toml";
/// Shortest admin key accepted from config.
pub const MIN_ADMIN_KEY_LEN: usize = 32;

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
    #[serde(deserialize_with = "ip_nets")]
    pub trusted_proxies: Vec<IpNet>,
}

/// Limits that keep a listener serving under overload and slow clients.
/// Each listener (proxy, auth, grpc, admin, ops) has its own counters.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitSettings {
    /// Most open connections per listener; a connection beyond it gets a
    /// 503 with `Retry-After` (plain HTTP) or is closed (TLS) at once.
    pub max_connections: usize,
    /// Most requests in progress per listener; a request beyond it gets
    /// 503 `overloaded` with `Retry-After` at once, never a queue.
    pub max_requests: usize,
    /// Longest a client may take to send a request's headers, and to finish
    /// the TLS handshake. On HTTP/1.1 the clock also runs while a keep-alive
    /// connection waits for its next request.
    pub header_read_timeout: HumanDuration,
    /// A connection with no request in progress for this long is closed
    /// (HTTP/2: GOAWAY; checked at this interval, so it may live up to twice it).
    pub idle_timeout: HumanDuration,
    /// Largest request head (request line and headers), bytes: 431 beyond.
    pub max_header_bytes: usize,
    /// Most header fields in a request: 431 beyond.
    pub max_headers: usize,
    /// Longest wait for the next piece of a request body once a door reads
    /// it (nginx's `client_body_timeout`): beyond it the request is refused
    /// with 408 `body_timeout` and its connection closed; a proxied upload
    /// is aborted upstream. Only time spent waiting for the client counts.
    pub body_read_timeout: HumanDuration,
    /// Least average rate of a request body, bytes per second of waiting
    /// for the client, once `body_rate_grace` of waiting has passed
    /// (Kestrel's `MinRequestBodyDataRate`); slower is 408 `body_timeout`.
    /// 0 turns the rate check off (`body_read_timeout` still holds).
    pub min_body_rate: u64,
    /// Waiting for the client's body that `min_body_rate` forgives first.
    pub body_rate_grace: HumanDuration,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            max_connections: 50_000,
            max_requests: 10_000,
            header_read_timeout: HumanDuration(Duration::from_secs(10)),
            idle_timeout: HumanDuration(Duration::from_secs(120)),
            max_header_bytes: 32 * 1024,
            max_headers: 100,
            body_read_timeout: HumanDuration(Duration::from_secs(10)),
            min_body_rate: 1024,
            body_rate_grace: HumanDuration(Duration::from_secs(5)),
        }
    }
}

/// Per-client limit on failed authentication: every client address has a
/// bucket of `limit` failures refilled over `window`; once it is empty the
/// client gets 429 `rate_limited` (401 on `/auth/nginx`, which cannot pass a
/// 429) with `Retry-After`, except for tokens the gate holds as valid.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FailedAuthSettings {
    /// Failures a client may make in a burst, and per `window`; 0 turns the
    /// limit off.
    pub limit: u32,
    /// The time over which `limit` failures are forgiven.
    pub window: HumanDuration,
    /// Most client addresses tracked (least recently seen are dropped first);
    /// bounds the memory to about 400 bytes each (`cargo bench --bench
    /// cache_memory -- clients`).
    pub max_clients: u64,
}

impl Default for FailedAuthSettings {
    fn default() -> Self {
        Self {
            limit: 30,
            window: HumanDuration(Duration::from_secs(60)),
            max_clients: 100_000,
        }
    }
}

/// A list of networks; empty entries (an empty environment variable) are
/// skipped.
fn ip_nets<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(serde::de::Error::custom))
        .collect()
}

/// An IP network (`10.0.0.0/8`, `fd00::/8`) or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for IpNet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "`{s}` is not an IP address or network; write it like 10.0.0.0/8, 127.0.0.1 or fd00::/8"
            )
        };
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
        };
        // An IPv4-mapped IPv6 network is the IPv4 network it maps.
        Ok(match addr {
            IpAddr::V6(v6) if prefix >= 96 && v6.to_ipv4_mapped().is_some() => Self {
                addr: addr.to_canonical(),
                prefix: prefix - 96,
            },
            _ => Self { addr, prefix },
        })
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Serialize for IpNet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IpNet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// The Tokio runtime that serves every listener.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeSettings {
    /// Worker threads; unset (0) means one per CPU.
    pub worker_threads: usize,
}

/// How the gate stops on SIGTERM/SIGINT.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownSettings {
    /// Longest wait for in-flight requests once listeners stop accepting.
    pub grace: HumanDuration,
}

impl Default for ShutdownSettings {
    fn default() -> Self {
        Self {
            grace: HumanDuration(Duration::from_secs(25)),
        }
    }
}

/// Route rules: yours first, then (unless turned off) the built-in set.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicySettings {
    /// Append the built-in rules for the Hawzu REST API after `rules`.
    pub default_rules: bool,
    /// Rules checked in order before the built-in ones; the first match wins.
    pub rules: Vec<RuleSettings>,
}

impl Default for PolicySettings {
    fn default() -> Self {
        Self {
            default_rules: true,
            rules: Vec::new(),
        }
    }
}

/// One route rule.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSettings {
    /// Template: literals, `{workspace}`, `{project}`, `*`, `**` (last).
    pub path: String,
    /// Methods it applies to: GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS.
    pub methods: Vec<String>,
    /// The permission a token's role must have: `resource:action`.
    pub permission: String,
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

/// Where each listener binds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Listen {
    /// Reverse proxy in front of `upstream.url`.
    #[serde(deserialize_with = "socket_addr")]
    pub proxy: SocketAddr,
    /// Forward-auth endpoints (`/auth/nginx`, `/auth/traefik`, `/envoy/…`).
    #[serde(deserialize_with = "socket_addr")]
    pub auth: SocketAddr,
    /// Envoy ext_authz gRPC.
    #[serde(deserialize_with = "socket_addr")]
    pub grpc: SocketAddr,
    /// Token management API.
    #[serde(deserialize_with = "socket_addr")]
    pub admin: SocketAddr,
    /// Metrics, liveness and readiness.
    #[serde(deserialize_with = "socket_addr")]
    pub ops: SocketAddr,
}

impl Listen {
    /// Every listener with its key, for messages and checks.
    pub fn all(&self) -> [(&'static str, SocketAddr); 5] {
        [
            ("listen.proxy", self.proxy),
            ("listen.auth", self.auth),
            ("listen.grpc", self.grpc),
            ("listen.admin", self.admin),
            ("listen.ops", self.ops),
        ]
    }
}

/// TLS per listener; a listener without an entry is plain TCP. Certificates
/// are read again on SIGHUP and when their files change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSettings {
    pub proxy: Option<ListenerTls>,
    pub auth: Option<ListenerTls>,
    pub grpc: Option<ListenerTls>,
    pub admin: Option<ListenerTls>,
    pub ops: Option<ListenerTls>,
}

/// Certificate and key of one listener (PEM files).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// When set, clients must present a certificate signed by this CA (mTLS).
    pub client_ca_file: Option<PathBuf>,
}

/// The API behind the reverse proxy.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamSettings {
    /// `http://host:port` or `https://host:port` (no path).
    pub url: String,
    /// Extra CA (PEM) trusted for an https upstream, beside the public roots.
    pub ca_file: Option<PathBuf>,
    /// Longest wait for a TCP connection.
    pub connect_timeout: HumanDuration,
    /// Longest wait for the upstream's response headers (then 504).
    pub timeout: HumanDuration,
    /// Idle pooled connections are closed after this.
    pub pool_idle_timeout: HumanDuration,
    /// Most idle pooled connections kept.
    pub pool_max_idle: usize,
    /// Speak HTTP/2 to the upstream.
    pub http2: bool,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:3000".into(),
            ca_file: None,
            connect_timeout: HumanDuration(Duration::from_secs(2)),
            timeout: HumanDuration(Duration::from_secs(30)),
            pool_idle_timeout: HumanDuration(Duration::from_secs(90)),
            pool_max_idle: 256,
            http2: false,
        }
    }
}

/// Reverse-proxy behaviour.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxySettings {
    /// Forward the client's `Authorization` header to the upstream.
    pub forward_authorization: bool,
}

/// The token cache.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheSettings {
    /// Longest a found record is served from memory (the bound on a missed
    /// invalidation).
    pub ttl: HumanDuration,
    /// Longest a "no such token" answer is served from memory.
    pub negative_ttl: HumanDuration,
    /// Most tokens held.
    pub max_entries: u64,
    /// How long past `ttl` a cached token may still be served while the
    /// store fails (errors or timeouts); `0s` (the default): never. Never
    /// past the token's own expiry, never for a token seen disabled or
    /// revoked, and only while the store is failing.
    pub stale_if_error: HumanDuration,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            ttl: HumanDuration(Duration::from_secs(60)),
            negative_ttl: HumanDuration(Duration::from_secs(5)),
            max_entries: 1_000_000,
            stale_if_error: HumanDuration(Duration::ZERO),
        }
    }
}

/// Identity headers, and the client headers the API must never get.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeaderSettings {
    /// Prefix of every identity header; incoming headers with it are removed
    /// (`_` read as `-`, case ignored).
    pub prefix: String,
    /// Client headers removed by the proxy before forwarding, and named for
    /// removal in Envoy allow answers (`_` read as `-`, case ignored): method
    /// and path overrides by default, which would make the API act on a
    /// request the gate never judged. Environment: comma-separated.
    #[serde(deserialize_with = "header_names")]
    pub strip: Vec<String>,
}

impl Default for HeaderSettings {
    fn default() -> Self {
        Self {
            prefix: crate::headers::DEFAULT_PREFIX.into(),
            strip: crate::headers::DEFAULT_STRIP.map(str::to_owned).to_vec(),
        }
    }
}

/// A list of header names, trimmed; empty entries (an empty environment
/// variable) are skipped. Checked in [`Settings::validate`].
fn header_names<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Vec::<String>::deserialize(d)?
        .into_iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect())
}

/// An `IP:port` address, with a message that shows the accepted form.
fn socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "`{s}` is not an IP:port address; write it like 127.0.0.1:8081 or [::]:8081"
        ))
    })
}

impl Default for Listen {
    fn default() -> Self {
        Self {
            proxy: SocketAddr::from(([127, 0, 0, 1], 8080)),
            auth: SocketAddr::from(([127, 0, 0, 1], 8081)),
            grpc: SocketAddr::from(([127, 0, 0, 1], 9001)),
            admin: SocketAddr::from(([127, 0, 0, 1], 9091)),
            ops: SocketAddr::from(([127, 0, 0, 1], 9090)),
        }
    }
}

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
    /// How many replicas must hold each admin change (create, disable,
    /// enable, revoke, rotate) before it is answered (Redis `WAIT`, within
    /// `store.timeout`); fewer → 503 `store_unavailable`, and the caller
    /// tries again. Default 1: a change answered 200 survives a fail-over.
    /// 0 answers once the master has it (a fail-over may lose it).
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
        Ok(())
    }
}

/// A URL with its password replaced by `***`, for logs and errors.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split_once(':').map_or("", |(u, _)| u);
            format!("{}://{user}:***{}", &url[..scheme_end], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// Admin API settings.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSettings {
    /// The admin key. When unset, one is generated into `<data_dir>/admin.key`.
    pub key: Option<String>,
    /// Request slots of the admin listener (`limits.max_requests`) that
    /// token callers may never hold: workspace tokens together hold at most
    /// `max_requests - reserved_requests`, so the admin key always finds a
    /// slot. Unset: a tenth of `limits.max_requests`, rounded up, leaving
    /// token callers at least one. 0: no reserve.
    pub reserved_requests: Option<usize>,
}

impl AdminSettings {
    /// The admin key's reserve on the admin listener under `limits`.
    pub fn reserved_requests(&self, limits: &LimitSettings) -> usize {
        self.reserved_requests.unwrap_or_else(|| {
            limits
                .max_requests
                .div_ceil(10)
                .min(limits.max_requests.saturating_sub(1))
        })
    }
}

impl fmt::Debug for AdminSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminSettings")
            .field("key", &self.key.as_ref().map(|_| "***"))
            .field("reserved_requests", &self.reserved_requests)
            .finish()
    }
}

/// Log output.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// `text` for people, `json` for collectors.
    pub format: LogFormat,
    /// A tracing filter (`info`, `hawzu_gate=debug`); `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum LogFormat {
    Text,
    Json,
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

impl TryFrom<String> for LogFormat {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            _ => Err(format!("`{s}` is not a log format; use text or json")),
        }
    }
}

// === impl HumanDuration ===

/// A duration written as `250ms`, `60s`, `5m`, `30d`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl fmt::Debug for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s)
            .map(HumanDuration)
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "`{s}` is not a duration ({e}); write it like 250ms, 60s, 5m, 30d"
                ))
            })
    }
}

// === loading ===

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
}

impl Origin {
    /// The layer that set `key` last, for error messages.
    fn of(&self, key: &str) -> Option<String> {
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

/// The loaded settings plus the pieces derived from them at load time.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub settings: Settings,
    pub policy: Arc<Policy>,
    pub origin: Origin,
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
    let env: BTreeMap<String, String> = std::env::vars()
        .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}__")))
        .collect();
    load_from(file, env)
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
                message: e.to_string(),
            })?;
        origin.file = Some(path.to_owned());
    }

    let env: BTreeMap<String, String> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}__")))
        .collect();
    if !env.is_empty() {
        origin.env_vars = env.keys().cloned().collect();
        let mut env_source = config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true)
            .list_separator(",")
            // `HAWZU_GATE__TRUSTED_PROXIES=10.0.0.0/8,127.0.0.1`; empty: none.
            .with_list_parse_key("trusted_proxies")
            // `HAWZU_GATE__HEADERS__STRIP=X-HTTP-Method-Override,X-Original-URL`.
            .with_list_parse_key("headers.strip")
            // `HAWZU_GATE__STORE__REDIS__NODES=redis://a:7000,redis://b:7000`.
            .with_list_parse_key("store.redis.nodes");
        // Custom roles are lists: `HAWZU_GATE__ROLES__RUNNER=executions:read,executions:write`.
        for var in &origin.env_vars {
            if let Some(role) = var.strip_prefix(&format!("{ENV_PREFIX}__ROLES__")) {
                env_source =
                    env_source.with_list_parse_key(&format!("roles.{}", role.to_lowercase()));
            }
        }
        let env_source = env_source.source(Some(env.into_iter().collect()));
        builder = builder.add_source(env_source);
    }
    let settings: Settings = builder
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|e| ConfigError::Env {
            vars: origin.env_vars.join(", "),
            message: e.to_string(),
        })?;

    let policy = Arc::new(settings.validate(&origin)?);
    Ok(Loaded {
        settings,
        policy,
        origin,
    })
}

impl Settings {
    /// Checks what types alone cannot, and builds the policy.
    pub fn validate(&self, origin: &Origin) -> Result<Policy, ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            key: key.to_owned(),
            message,
            origin: origin.of(key),
        };
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "must not be empty".into()));
        }
        if self.store.timeout.0.is_zero() {
            return Err(invalid("store.timeout", "must be more than 0".into()));
        }
        if self.store.retention.0 < Duration::from_secs(60) {
            return Err(invalid("store.retention", "must be at least 1m".into()));
        }
        if self.store.backend == Backend::Redis {
            self.store.redis.validate(invalid)?;
        }
        let prefix = &self.store.redis.key_prefix;
        if prefix.is_empty() || prefix.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid(
                "store.redis.key_prefix",
                "must be non-empty, with no spaces or control characters".into(),
            ));
        }
        if let Some(key) = &self.admin.key
            && (key.len() < MIN_ADMIN_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(invalid(
                "admin.key",
                format!(
                    "must be at least {MIN_ADMIN_KEY_LEN} printable ASCII characters, no spaces"
                ),
            ));
        }
        if let Err(e) = crate::headers::IdentityHeaders::default().with_strip(&self.headers.strip) {
            return Err(invalid("headers.strip", e.to_string()));
        }
        let l = &self.limits;
        for (key, value) in [
            ("limits.max_connections", l.max_connections),
            ("limits.max_requests", l.max_requests),
            ("limits.max_headers", l.max_headers),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be more than 0".into()));
            }
        }
        if !(8192..=1 << 20).contains(&l.max_header_bytes) {
            return Err(invalid(
                "limits.max_header_bytes",
                "must be between 8192 and 1048576".into(),
            ));
        }
        for (key, value) in [
            ("limits.header_read_timeout", l.header_read_timeout),
            ("limits.idle_timeout", l.idle_timeout),
        ] {
            if value.0 < Duration::from_millis(100) {
                return Err(invalid(key, "must be at least 100ms".into()));
            }
        }
        for (key, value) in [
            ("limits.body_read_timeout", l.body_read_timeout),
            ("limits.body_rate_grace", l.body_rate_grace),
        ] {
            if !(Duration::from_millis(100)..=Duration::from_secs(3600)).contains(&value.0) {
                return Err(invalid(key, "must be between 100ms and 1h".into()));
            }
        }
        if let Some(reserved) = self.admin.reserved_requests
            && reserved >= l.max_requests
        {
            return Err(invalid(
                "admin.reserved_requests",
                format!(
                    "must be less than limits.max_requests ({}), or token callers could never manage tokens",
                    l.max_requests
                ),
            ));
        }
        if self.failed_auth.limit > 0 {
            if self.failed_auth.window.0 < Duration::from_secs(1) {
                return Err(invalid("failed_auth.window", "must be at least 1s".into()));
            }
            if self.failed_auth.max_clients == 0 {
                return Err(invalid(
                    "failed_auth.max_clients",
                    "must be more than 0 (set failed_auth.limit = 0 to turn the limit off)".into(),
                ));
            }
        }
        if self.listen.auth == self.listen.admin && self.listen.auth.port() != 0 {
            return Err(invalid(
                "listen.admin",
                format!(
                    "{} is also listen.auth; give each listener its own address",
                    self.listen.admin
                ),
            ));
        }
        let roles = Roles::with_custom(
            self.roles
                .iter()
                .map(|(name, perms)| (name.as_str(), RoleScope::Any, perms.as_slice())),
        )
        .map_err(|e| invalid("roles", e.to_string()))?;
        let mut rules = Vec::with_capacity(self.policy.rules.len());
        for (i, r) in self.policy.rules.iter().enumerate() {
            let key = format!("policy.rules[{i}]");
            let rule = (|| {
                Ok::<_, RuleError>(Rule {
                    methods: MethodSet::parse(r.methods.iter().map(String::as_str))?,
                    template: Template::parse(&r.path)?,
                    permission: Permission::parse(&r.permission)?,
                    origin: key.clone(),
                })
            })()
            .map_err(|e| invalid(&key, e.to_string()))?;
            rules.push(rule);
        }
        if self.policy.default_rules {
            rules.extend(RuleSet::defaults().rules().iter().cloned());
        }
        Ok(Policy {
            roles,
            rules: RuleSet::new(rules),
        })
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
