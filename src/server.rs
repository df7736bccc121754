//! `hawzu-gate serve`: opens the store, builds the cache and the doors,
//! binds the listeners, and runs them until told to stop.
//!
//! Binding is separate from running so that tests (and the start-up log)
//! learn the real addresses, port 0 included, before traffic starts.
//!
//! Lifecycle: on `Control::Shutdown` (SIGTERM/SIGINT) readiness turns 503
//! at once, the door and admin listeners stop accepting, in-flight requests
//! get up to `shutdown.grace`, pending `last_used_at` writes are flushed, and
//! the ops listener stops last. On `Control::Reload` (SIGHUP) the config is
//! read again: rules, roles and TLS certificates are swapped whole, or, when
//! the new config is bad, kept as they were with a log line naming the fault.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::admin::{self, KeyError, KeySource, api::AdminApi};
use crate::cache::{CacheOptions, TokenCache, listen_for_invalidations};
use crate::clients::{FailedAuth, TrustedProxies};
use crate::config::{self, Backend, ListenerTls, Loaded, RedisMode, Settings};
use crate::doors::ext_authz::ExtAuthz;
use crate::doors::forward_auth::ForwardAuth;
use crate::doors::listener::{ListenerState, Protocol, TlsHandle, serve};
use crate::doors::proxy::{Proxy, UpstreamError, UpstreamOptions};
use crate::doors::{PolicyHandle, Shared};
use crate::headers::IdentityHeaders;
use crate::metrics::Metrics;
use crate::ops::{Health, Ops};
use crate::store::redis::{RedisOptions, Topology};
use crate::store::{EmbeddedStore, RedisStore, Store, StoreError, TokenStore};
use crate::tls::TlsError;
use crate::usage;

/// Why the gate could not start.
#[derive(Debug, Error)]
pub enum StartError {
    #[error("{key}: cannot listen on {addr}: {source}")]
    Bind {
        key: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("admin key: {0}")]
    AdminKey(#[from] KeyError),
    #[error("{key}: {source}")]
    Tls { key: &'static str, source: TlsError },
    #[error("upstream: {0}")]
    Upstream(#[from] UpstreamError),
    #[error("headers.prefix: {0}")]
    Headers(#[from] crate::headers::BadPrefix),
    #[error("headers.strip: {0}")]
    Strip(#[from] crate::headers::BadHeaderName),
}

/// What a running gate can be told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Read the config again (SIGHUP).
    Reload,
    /// Stop gracefully (SIGTERM, SIGINT).
    Shutdown,
}

/// The store chosen by `store.backend`.
pub async fn open_store(loaded: &Loaded) -> Result<Store, StartError> {
    let s = &loaded.settings;
    Ok(match s.store.backend {
        Backend::Embedded => {
            admin::create_data_dir(&s.data_dir)?;
            Store::Embedded(EmbeddedStore::open(&s.data_dir, s.store.timeout.0).await?)
        }
        Backend::Redis => {
            let r = &s.store.redis;
            let topology = match r.mode {
                RedisMode::Standalone => Topology::Standalone {
                    url: r.url.clone(),
                    ca: r
                        .ca_file
                        .as_ref()
                        .map(|p| {
                            std::fs::read(p).map(Arc::from).map_err(|e| {
                                StoreError::Unavailable(format!(
                                    "store.redis.ca_file {}: {e}",
                                    p.display()
                                ))
                            })
                        })
                        .transpose()?,
                },
                RedisMode::Sentinel => Topology::Sentinel {
                    sentinels: r.nodes.clone(),
                    master_name: r.sentinel.master_name.clone(),
                    username: r.sentinel.username.clone(),
                    password: r.sentinel.password.clone(),
                    replica_acks: r
                        .sentinel
                        .replica_acks
                        .unwrap_or(crate::config::DEFAULT_REPLICA_ACKS),
                },
                RedisMode::Cluster => Topology::Cluster {
                    nodes: r.nodes.clone(),
                },
            };
            Store::Redis(RedisStore::with_topology(
                topology,
                RedisOptions {
                    url: r.url.clone(),
                    key_prefix: r.key_prefix.clone(),
                    timeout: s.store.timeout.0,
                    retention: s.store.retention.0,
                },
            )?)
        }
    })
}

const HTTP_ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];
const GRPC_ALPN: &[&[u8]] = &[b"h2"];

/// The listeners, in the order of `Settings::listen.all()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    Proxy,
    Auth,
    Grpc,
    Admin,
    Ops,
}

impl Which {
    const ALL: [Which; 5] = [
        Which::Proxy,
        Which::Auth,
        Which::Grpc,
        Which::Admin,
        Which::Ops,
    ];

    fn listen_key(self) -> &'static str {
        match self {
            Which::Proxy => "listen.proxy",
            Which::Auth => "listen.auth",
            Which::Grpc => "listen.grpc",
            Which::Admin => "listen.admin",
            Which::Ops => "listen.ops",
        }
    }

    fn tls_key(self) -> &'static str {
        match self {
            Which::Proxy => "tls.proxy",
            Which::Auth => "tls.auth",
            Which::Grpc => "tls.grpc",
            Which::Admin => "tls.admin",
            Which::Ops => "tls.ops",
        }
    }

    fn addr(self, s: &Settings) -> SocketAddr {
        match self {
            Which::Proxy => s.listen.proxy,
            Which::Auth => s.listen.auth,
            Which::Grpc => s.listen.grpc,
            Which::Admin => s.listen.admin,
            Which::Ops => s.listen.ops,
        }
    }

    fn tls(self, s: &Settings) -> Option<&ListenerTls> {
        match self {
            Which::Proxy => s.tls.proxy.as_ref(),
            Which::Auth => s.tls.auth.as_ref(),
            Which::Grpc => s.tls.grpc.as_ref(),
            Which::Admin => s.tls.admin.as_ref(),
            Which::Ops => s.tls.ops.as_ref(),
        }
    }

    fn alpn(self) -> &'static [&'static [u8]] {
        match self {
            Which::Grpc => GRPC_ALPN,
            _ => HTTP_ALPN,
        }
    }
}

/// A server configuration for one listener's TLS settings.
fn tls_config(which: Which, t: &ListenerTls) -> Result<Arc<rustls::ServerConfig>, StartError> {
    crate::tls::server_config(
        &t.cert_file,
        &t.key_file,
        t.client_ca_file.as_deref(),
        which.alpn(),
    )
    .map_err(|source| StartError::Tls {
        key: which.tls_key(),
        source,
    })
}

/// Checks every TLS file of `settings` (for `check-config` and reloads).
pub fn check_tls(settings: &Settings) -> Result<(), StartError> {
    for which in Which::ALL {
        if let Some(t) = which.tls(settings) {
            tls_config(which, t)?;
        }
    }
    Ok(())
}

/// A bound listener: one socket on the shared runtime, or, for the hot
/// doors, one `SO_REUSEPORT` socket per core, each served by its own
/// single-threaded runtime (see `Bound::run`).
struct Listener {
    which: Which,
    sockets: Sockets,
    tls: Option<TlsHandle>,
    state: Arc<ListenerState>,
}

enum Sockets {
    Shared(TcpListener),
    PerCore(Vec<std::net::TcpListener>),
}

impl Sockets {
    fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            Sockets::Shared(l) => l.local_addr().ok(),
            Sockets::PerCore(ls) => ls.first().and_then(|l| l.local_addr().ok()),
        }
    }
}

/// A non-blocking listening socket with `SO_REUSEPORT`, so that several
/// can share one address and the kernel spreads connections over them.
fn bind_reuseport(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

/// `cores` sockets on `addr` (the first one fixes the port when it is 0).
fn bind_per_core(addr: SocketAddr, cores: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    let first = bind_reuseport(addr)?;
    let bound = first.local_addr()?;
    let mut all = vec![first];
    for _ in 1..cores {
        all.push(bind_reuseport(bound)?);
    }
    Ok(all)
}

/// Threads serving the hot doors: `runtime.worker_threads`, else one per CPU.
fn door_threads(s: &Settings) -> usize {
    match s.runtime.worker_threads {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    }
}

/// A gate with its listeners bound, ready to run.
pub struct Bound {
    listeners: Vec<Listener>,
    /// One proxy per door thread: each keeps its own upstream pool, so a
    /// request never hops threads to reach its connection.
    proxy_doors: Vec<Arc<Proxy>>,
    forward_auth: Arc<ForwardAuth>,
    ext_authz: ExtAuthz,
    admin_api: Arc<AdminApi>,
    ops: Arc<Ops>,
    health: Arc<Health>,
    shared: Arc<Shared>,
    policy: PolicyHandle,
    settings: Settings,
    config_file: Option<PathBuf>,
    background: Vec<tokio::task::JoinHandle<()>>,
    usage_writer: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bound")
            .field("addresses", &self.addresses())
            .finish_non_exhaustive()
    }
}

/// The addresses a bound gate listens on.
#[derive(Debug, Clone, Copy)]
pub struct Addresses {
    pub proxy: SocketAddr,
    pub auth: SocketAddr,
    pub grpc: SocketAddr,
    pub admin: SocketAddr,
    pub ops: SocketAddr,
}

impl Bound {
    /// Opens the store, starts the cache and its listener, loads or
    /// generates the admin key, and binds every listener.
    pub async fn new(loaded: &Loaded) -> Result<Self, StartError> {
        let s = &loaded.settings;
        let metrics = Arc::new(Metrics::new());
        let store = open_store(loaded).await?;
        let cache = Arc::new(TokenCache::with_metrics(
            store.clone(),
            CacheOptions {
                ttl: s.cache.ttl.0,
                negative_ttl: s.cache.negative_ttl.0,
                max_entries: s.cache.max_entries,
                stale_if_error: s.cache.stale_if_error.0,
            },
            metrics.clone(),
        ));
        let mut background = Vec::new();
        match &store {
            Store::Embedded(e) => {
                tracing::info!(backend = "embedded", path = %e.path().display(), "token store open");
            }
            Store::Redis(r) => {
                let topology = format!("{:?}", r.topology());
                match r.ping().await {
                    Ok(()) => {
                        tracing::info!(backend = "redis", %topology, prefix = r.key_prefix(), "token store reachable")
                    }
                    Err(e) => {
                        tracing::warn!(backend = "redis", %topology, error = %e, "token store not reachable yet; uncached tokens get store_unavailable until it is")
                    }
                }
                background.push(tokio::spawn(listen_for_invalidations(
                    cache.clone(),
                    r.clone(),
                    s.store.timeout.0,
                )));
            }
        }
        let (key, source) = admin::load_or_generate(s.admin.key.as_deref(), &s.data_dir)?;
        match source {
            KeySource::Config => tracing::info!("admin key from config (admin.key)"),
            KeySource::File(p) => tracing::info!(path = %p.display(), "admin key read from file"),
            KeySource::Generated(p) => {
                tracing::info!(path = %p.display(), "admin key generated (mode 0600); the CLI reads it from there");
            }
        }
        let policy: PolicyHandle = Arc::new(ArcSwap::new(loaded.policy.clone()));
        let (recorder, usage_writer) = usage::start(cache.clone());
        let shared = Arc::new(Shared::new(
            cache.clone(),
            policy.clone(),
            IdentityHeaders::new(&s.headers.prefix)?.with_strip(&s.headers.strip)?,
            recorder,
            TrustedProxies::new(&s.trusted_proxies),
            FailedAuth::new(&s.failed_auth),
        ));
        let upstream = UpstreamOptions {
            url: s
                .upstream
                .url
                .parse()
                .map_err(|_| UpstreamError::Url(s.upstream.url.clone()))?,
            ca_file: s.upstream.ca_file.clone(),
            connect_timeout: s.upstream.connect_timeout.0,
            response_timeout: s.upstream.timeout.0,
            pool_idle_timeout: s.upstream.pool_idle_timeout.0,
            pool_max_idle_per_host: s.upstream.pool_max_idle,
            http2: s.upstream.http2,
            forward_authorization: s.proxy.forward_authorization,
        };
        let threads = door_threads(s);
        let proxy_doors = (0..threads)
            .map(|_| Proxy::new(shared.clone(), &upstream))
            .collect::<Result<Vec<_>, _>>()?;

        let mut listeners = Vec::new();
        for which in Which::ALL {
            let tls = which
                .tls(s)
                .map(|t| tls_config(which, t).map(|c| Arc::new(ArcSwap::new(c))))
                .transpose()?;
            let addr = which.addr(s);
            let bind_error = |source| StartError::Bind {
                key: which.listen_key(),
                addr,
                source,
            };
            let sockets = match which {
                // The hot doors: a socket and a single-threaded runtime per core.
                Which::Proxy | Which::Auth => {
                    Sockets::PerCore(bind_per_core(addr, threads).map_err(bind_error)?)
                }
                _ => Sockets::Shared(TcpListener::bind(addr).await.map_err(bind_error)?),
            };
            let protocol = match which {
                Which::Grpc => Protocol::Grpc,
                _ => Protocol::Http,
            };
            listeners.push(Listener {
                which,
                sockets,
                tls,
                state: ListenerState::new(
                    which.listen_key(),
                    &s.limits,
                    protocol,
                    shared.render.clone(),
                    &metrics,
                ),
            });
        }
        let health = Arc::new(Health::default());
        raise_open_files_limit();
        Ok(Self {
            listeners,
            proxy_doors,
            forward_auth: ForwardAuth::new(shared.clone()),
            ext_authz: ExtAuthz::new(shared.clone()),
            admin_api: AdminApi::new(
                cache.clone(),
                policy.clone(),
                key,
                FailedAuth::new(&s.failed_auth),
                // Validated below max_requests: token callers get at least one.
                s.limits
                    .max_requests
                    .saturating_sub(s.admin.reserved_requests(&s.limits)),
            ),
            ops: Ops::new(cache, metrics, health.clone()),
            health,
            shared,
            policy,
            settings: s.clone(),
            config_file: loaded.origin.file.clone(),
            background,
            usage_writer,
        })
    }

    pub fn addresses(&self) -> Addresses {
        let addr = |w: Which| {
            self.listeners
                .iter()
                .find(|l| l.which == w)
                .and_then(|l| l.sockets.local_addr())
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)))
        };
        Addresses {
            proxy: addr(Which::Proxy),
            auth: addr(Which::Auth),
            grpc: addr(Which::Grpc),
            admin: addr(Which::Admin),
            ops: addr(Which::Ops),
        }
    }

    /// Serves until told to shut down; reloads when told to.
    pub async fn run(mut self, mut control: mpsc::Receiver<Control>) {
        let a = self.addresses();
        tracing::info!(proxy = %a.proxy, auth = %a.auth, grpc = %a.grpc, admin = %a.admin, ops = %a.ops, "hawzu-gate listening");
        let grace = self.settings.shutdown.grace.0;
        let (doors_tx, doors_rx) = watch::channel(false);
        let (ops_tx, ops_rx) = watch::channel(false);
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|v| *v).await;
        };
        let mut doors = Vec::new();
        let mut ops_task = None;
        let mut tls_handles = Vec::new();
        for l in std::mem::take(&mut self.listeners) {
            if let Some(t) = &l.tls {
                tls_handles.push((l.which, t.clone()));
            }
            let name = l.which.listen_key();
            let state = l.state;
            match (l.which, l.sockets) {
                (Which::Proxy, Sockets::PerCore(sockets)) => {
                    for (i, socket) in sockets.into_iter().enumerate() {
                        let door = self.proxy_doors[i % self.proxy_doors.len()].clone();
                        doors.push(serve_on_own_thread(
                            state.clone(),
                            i,
                            socket,
                            l.tls.clone(),
                            move |req, conn| {
                                let door = door.clone();
                                async move { door.handle(req, conn).await }
                            },
                            doors_rx.clone(),
                            grace,
                        ));
                    }
                }
                (Which::Auth, Sockets::PerCore(sockets)) => {
                    for (i, socket) in sockets.into_iter().enumerate() {
                        let door = self.forward_auth.clone();
                        doors.push(serve_on_own_thread(
                            state.clone(),
                            i,
                            socket,
                            l.tls.clone(),
                            move |req, conn| {
                                let door = door.clone();
                                async move { door.handle(req, conn.peer).await }
                            },
                            doors_rx.clone(),
                            grace,
                        ));
                    }
                }
                (_, Sockets::PerCore(_)) => {
                    tracing::error!(listener = name, "no per-core server for this listener");
                }
                (Which::Grpc, Sockets::Shared(socket)) => {
                    let grpc = self.ext_authz.clone().service();
                    doors.push(tokio::spawn(serve(
                        state,
                        socket,
                        l.tls,
                        move |mut req, conn| {
                            let grpc = grpc.clone();
                            // The caller's address, for the door's client.
                            req.extensions_mut().insert(conn);
                            async move {
                                use tower::ServiceExt;
                                match grpc.oneshot(req).await {
                                    Ok(res) => res,
                                    Err(never) => match never {},
                                }
                            }
                        },
                        stopped(doors_rx.clone()),
                        grace,
                    )));
                }
                (Which::Admin, Sockets::Shared(socket)) => {
                    let api = self.admin_api.clone();
                    doors.push(tokio::spawn(serve(
                        state,
                        socket,
                        l.tls,
                        move |req, conn| {
                            let api = api.clone();
                            async move { api.handle(req, conn.peer).await }
                        },
                        stopped(doors_rx.clone()),
                        grace,
                    )));
                }
                (Which::Ops, Sockets::Shared(socket)) => {
                    let ops = self.ops.clone();
                    ops_task = Some(tokio::spawn(serve(
                        state,
                        socket,
                        l.tls,
                        move |req, _conn| {
                            let ops = ops.clone();
                            async move { ops.handle(req).await }
                        },
                        stopped(ops_rx.clone()),
                        Duration::from_secs(1),
                    )));
                }
                (_, Sockets::Shared(_)) => {
                    tracing::error!(listener = name, "no shared server for this listener");
                }
            }
        }
        // Certificates are also re-read when their files change.
        let watcher = tokio::spawn(watch_tls_files(self.settings.clone(), tls_handles.clone()));

        // Until a shutdown (or every sender is gone), reload when asked.
        while let Some(Control::Reload) = control.recv().await {
            self.reload(&tls_handles);
        }

        self.health.begin_shutdown();
        tracing::info!(
            ?grace,
            "shutting down: readiness is 503, listeners stop accepting, open requests may finish"
        );
        let _ = doors_tx.send(true);
        for t in doors {
            let _ = t.await;
        }
        watcher.abort();
        for t in &self.background {
            t.abort();
        }
        // The doors are gone; dropping the last recorder lets the writer
        // flush pending last-used times and end.
        let Self {
            shared,
            proxy_doors,
            forward_auth,
            ext_authz,
            usage_writer,
            ..
        } = self;
        drop((shared, proxy_doors, forward_auth, ext_authz));
        let _ = tokio::time::timeout(Duration::from_secs(5), usage_writer).await;
        let _ = ops_tx.send(true);
        if let Some(t) = ops_task {
            let _ = t.await;
        }
        tracing::info!("stopped");
    }

    /// Reads the config again and swaps what can change while running:
    /// rules and roles, and TLS certificates. A bad config changes nothing.
    fn reload(&mut self, tls_handles: &[(Which, TlsHandle)]) {
        let loaded = match config::load(self.config_file.as_deref()) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "reload refused: the new config is invalid; the current one keeps serving");
                return;
            }
        };
        // Build every TLS config before swapping anything: all or nothing.
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
        }
        let restart_needed = restart_only_changes(&self.settings, &loaded.settings);
        if !restart_needed.is_empty() {
            tracing::warn!(keys = %restart_needed.join(", "), "these changes take effect only after a restart");
        }
        self.policy.store(loaded.policy.clone());
        for ((_, handle), config) in tls_handles.iter().zip(fresh) {
            handle.store(config);
        }
        let rules = loaded.policy.rules.rules().len();
        tracing::info!(
            rules,
            "config reloaded: rules, roles and TLS certificates swapped"
        );
        self.settings.roles = loaded.settings.roles;
        self.settings.policy = loaded.settings.policy;
        self.settings.tls = loaded.settings.tls;
    }
}

/// Top-level sections that differ and cannot change without a restart.
fn restart_only_changes(old: &Settings, new: &Settings) -> Vec<&'static str> {
    let json = |s: &Settings| serde_json::to_value(s).unwrap_or_default();
    let (a, b) = (json(old), json(new));
    let reloadable = ["roles", "policy", "tls"];
    let mut changed = Vec::new();
    if let (Some(a), Some(b)) = (a.as_object(), b.as_object()) {
        for (k, v) in a {
            if !reloadable.contains(&k.as_str()) && b.get(k) != Some(v) {
                changed.push(match k.as_str() {
                    "data_dir" => "data_dir",
                    "listen" => "listen",
                    "upstream" => "upstream",
                    "proxy" => "proxy",
                    "cache" => "cache",
                    "headers" => "headers",
                    "store" => "store",
                    "admin" => "admin",
                    "log" => "log",
                    "shutdown" => "shutdown",
                    "runtime" => "runtime",
                    "limits" => "limits",
                    "failed_auth" => "failed_auth",
                    "trusted_proxies" => "trusted_proxies",
                    _ => "other",
                });
            }
        }
    }
    changed
}

/// Re-reads a listener's certificate when its files change (polled every
/// two seconds; a bad new file is logged and the old certificate kept).
async fn watch_tls_files(settings: Settings, handles: Vec<(Which, TlsHandle)>) {
    if handles.is_empty() {
        return;
    }
    let stamp = |t: &ListenerTls| -> Vec<Option<SystemTime>> {
        [
            Some(&t.cert_file),
            Some(&t.key_file),
            t.client_ca_file.as_ref(),
        ]
        .into_iter()
        .flatten()
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
    };
    let mut seen: Vec<Vec<Option<SystemTime>>> = handles
        .iter()
        .map(|(w, _)| w.tls(&settings).map(stamp).unwrap_or_default())
        .collect();
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tick.tick().await;
        for (i, (which, handle)) in handles.iter().enumerate() {
            let Some(t) = which.tls(&settings) else {
                continue;
            };
            let now = stamp(t);
            if now == seen[i] {
                continue;
            }
            seen[i] = now;
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

/// Serves `socket` on a thread of its own with a single-threaded runtime:
/// a connection, its requests and (for the proxy) its upstream connections
/// stay on one thread, with no cross-thread wake-ups. The returned handle
/// ends when the thread does.
#[allow(clippy::too_many_arguments)]
fn serve_on_own_thread<H, Fut, B>(
    state: Arc<ListenerState>,
    index: usize,
    socket: std::net::TcpListener,
    tls: Option<TlsHandle>,
    handle: H,
    stop: watch::Receiver<bool>,
    grace: Duration,
) -> tokio::task::JoinHandle<()>
where
    H: Fn(http::Request<crate::doors::listener::TimedBody>, crate::doors::listener::Conn) -> Fut
        + Clone
        + Send
        + Sync
        + 'static,
    Fut: Future<Output = http::Response<B>> + Send + 'static,
    B: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let name = state.name();
    let thread_name = format!("{}-{index}", name.trim_start_matches("listen."));
    let thread = std::thread::Builder::new().name(thread_name).spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(listener = name, error = %e, "cannot start a door thread's runtime");
                return;
            }
        };
        runtime.block_on(async move {
            match TcpListener::from_std(socket) {
                Ok(listener) => {
                    let mut stop = stop;
                    let stopped = async move {
                        let _ = stop.wait_for(|v| *v).await;
                    };
                    serve(state, listener, tls, handle, stopped, grace).await;
                }
                Err(e) => tracing::error!(listener = name, error = %e, "cannot serve a door socket"),
            }
        });
    });
    tokio::task::spawn_blocking(move || match thread {
        Ok(t) => {
            let _ = t.join();
        }
        Err(e) => tracing::error!(listener = name, error = %e, "cannot start a door thread"),
    })
}

/// Raises the soft limit on open files to the hard one: every connection
/// is a file, and `limits.max_connections` should be what bounds them.
fn raise_open_files_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!(open_files = n, "open files limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open files limit"),
    }
}

/// Turns SIGTERM/SIGINT into `Shutdown` and SIGHUP into `Reload`.
pub fn signals() -> mpsc::Receiver<Control> {
    use tokio::signal::unix::{SignalKind, signal};
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        loop {
            let control = tokio::select! {
                _ = term.recv() => Control::Shutdown,
                _ = int.recv() => Control::Shutdown,
                _ = hup.recv() => Control::Reload,
            };
            if tx.send(control).await.is_err() || control == Control::Shutdown {
                return;
            }
        }
    });
    rx
}
