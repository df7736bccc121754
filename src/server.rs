//! `hawzu-gate serve`: opens the store, builds the cache and the doors,
//! binds the listeners and runs them until shutdown.
//!
//! Binding is separate from running so that tests (and the start-up log)
//! learn the real addresses, port 0 included, before traffic starts.

use std::net::SocketAddr;
use std::sync::Arc;

use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::admin::{self, KeyError, KeySource, api::AdminApi};
use crate::cache::{CacheOptions, TokenCache, listen_for_invalidations};
use crate::config::{Backend, ListenerTls, Loaded, redact_url};
use crate::doors::Shared;
use crate::doors::ext_authz::ExtAuthz;
use crate::doors::forward_auth::ForwardAuth;
use crate::doors::listener::serve;
use crate::doors::proxy::{Proxy, UpstreamError, UpstreamOptions};
use crate::headers::IdentityHeaders;
use crate::store::{EmbeddedStore, RedisStore, Store, StoreError, TokenStore, redis::RedisOptions};
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
}

/// The store chosen by `store.backend`.
pub async fn open_store(loaded: &Loaded) -> Result<Store, StartError> {
    let s = &loaded.settings;
    Ok(match s.store.backend {
        Backend::Embedded => {
            admin::create_data_dir(&s.data_dir)?;
            Store::Embedded(EmbeddedStore::open(&s.data_dir, s.store.timeout.0).await?)
        }
        Backend::Redis => Store::Redis(RedisStore::new(RedisOptions {
            url: s.store.redis.url.clone(),
            key_prefix: s.store.redis.key_prefix.clone(),
            timeout: s.store.timeout.0,
            retention: s.store.retention.0,
        })?),
    })
}

/// The TLS acceptor of one listener, if it has TLS.
pub fn acceptor(
    key: &'static str,
    tls: Option<&ListenerTls>,
    alpn: &[&[u8]],
) -> Result<Option<TlsAcceptor>, StartError> {
    tls.map(|t| {
        crate::tls::server_config(&t.cert_file, &t.key_file, t.client_ca_file.as_deref(), alpn)
            .map(TlsAcceptor::from)
            .map_err(|source| StartError::Tls { key, source })
    })
    .transpose()
}

const HTTP_ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];
const GRPC_ALPN: &[&[u8]] = &[b"h2"];

struct Listener {
    key: &'static str,
    socket: TcpListener,
    tls: Option<TlsAcceptor>,
}

/// A gate with its listeners bound, ready to run.
pub struct Bound {
    proxy: Listener,
    auth: Listener,
    grpc: Listener,
    admin: Listener,
    proxy_door: Arc<Proxy>,
    forward_auth: Arc<ForwardAuth>,
    ext_authz: ExtAuthz,
    admin_api: Arc<AdminApi>,
    shared: Arc<Shared>,
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
}

impl Bound {
    /// Opens the store, starts the cache and its listener, loads or
    /// generates the admin key, and binds every listener.
    pub async fn new(loaded: &Loaded) -> Result<Self, StartError> {
        let s = &loaded.settings;
        let store = open_store(loaded).await?;
        let cache = Arc::new(TokenCache::new(
            store.clone(),
            CacheOptions {
                ttl: s.cache.ttl.0,
                negative_ttl: s.cache.negative_ttl.0,
                max_entries: s.cache.max_entries,
            },
        ));
        let mut background = Vec::new();
        match &store {
            Store::Embedded(e) => {
                tracing::info!(backend = "embedded", path = %e.path().display(), "token store open");
            }
            Store::Redis(r) => {
                let url = redact_url(&s.store.redis.url);
                match r.ping().await {
                    Ok(()) => {
                        tracing::info!(backend = "redis", %url, prefix = r.key_prefix(), "token store reachable")
                    }
                    Err(e) => {
                        tracing::warn!(backend = "redis", %url, error = %e, "token store not reachable yet; uncached tokens get store_unavailable until it is")
                    }
                }
                background.push(tokio::spawn(listen_for_invalidations(
                    cache.clone(),
                    s.store.redis.url.clone(),
                    r.events_channel(),
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
        let (recorder, usage_writer) = usage::start(cache.clone());
        let shared = Arc::new(Shared::new(
            cache.clone(),
            loaded.policy.clone(),
            IdentityHeaders::new(&s.headers.prefix)?,
            recorder,
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
        let proxy_door = Proxy::new(shared.clone(), &upstream)?;

        let bind = |key: &'static str, addr: SocketAddr, tls: Option<TlsAcceptor>| async move {
            let socket = TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind { key, addr, source })?;
            Ok::<_, StartError>(Listener { key, socket, tls })
        };
        let proxy = bind(
            "listen.proxy",
            s.listen.proxy,
            acceptor("tls.proxy", s.tls.proxy.as_ref(), HTTP_ALPN)?,
        )
        .await?;
        let auth = bind(
            "listen.auth",
            s.listen.auth,
            acceptor("tls.auth", s.tls.auth.as_ref(), HTTP_ALPN)?,
        )
        .await?;
        let grpc = bind(
            "listen.grpc",
            s.listen.grpc,
            acceptor("tls.grpc", s.tls.grpc.as_ref(), GRPC_ALPN)?,
        )
        .await?;
        let admin = bind("listen.admin", s.listen.admin, None).await?;
        Ok(Self {
            proxy,
            auth,
            grpc,
            admin,
            proxy_door,
            forward_auth: ForwardAuth::new(shared.clone()),
            ext_authz: ExtAuthz::new(shared.clone()),
            admin_api: AdminApi::new(cache, loaded.policy.clone(), key),
            shared,
            background,
            usage_writer,
        })
    }

    pub fn addresses(&self) -> Addresses {
        let addr = |l: &Listener| {
            l.socket
                .local_addr()
                .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
        };
        Addresses {
            proxy: addr(&self.proxy),
            auth: addr(&self.auth),
            grpc: addr(&self.grpc),
            admin: addr(&self.admin),
        }
    }

    /// The cache (for tests and the ops endpoints).
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Serves until `shutdown` resolves, then drains open requests and
    /// writes pending `last_used_at` updates.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) {
        let a = self.addresses();
        tracing::info!(proxy = %a.proxy, auth = %a.auth, grpc = %a.grpc, admin = %a.admin, "hawzu-gate listening");
        let (stop_tx, stop_rx) = watch::channel(false);
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|v| *v).await;
        };
        let mut tasks = Vec::new();

        let door = self.proxy_door;
        tasks.push(tokio::spawn(serve(
            self.proxy.key,
            self.proxy.socket,
            self.proxy.tls,
            move |req, conn| {
                let door = door.clone();
                async move { door.handle(req, conn).await }
            },
            stopped(stop_rx.clone()),
        )));
        let door = self.forward_auth;
        tasks.push(tokio::spawn(serve(
            self.auth.key,
            self.auth.socket,
            self.auth.tls,
            move |req, conn| {
                let door = door.clone();
                async move { door.handle(req, conn.peer).await }
            },
            stopped(stop_rx.clone()),
        )));
        let grpc = self.ext_authz.service();
        tasks.push(tokio::spawn(serve(
            self.grpc.key,
            self.grpc.socket,
            self.grpc.tls,
            move |req, _conn| {
                let grpc = grpc.clone();
                async move {
                    use tower::ServiceExt;
                    match grpc.oneshot(req).await {
                        Ok(res) => res,
                        Err(never) => match never {},
                    }
                }
            },
            stopped(stop_rx.clone()),
        )));
        let api = self.admin_api;
        tasks.push(tokio::spawn(serve(
            self.admin.key,
            self.admin.socket,
            self.admin.tls,
            move |req, conn| {
                let api = api.clone();
                async move { api.handle(req, conn.peer).await }
            },
            stopped(stop_rx),
        )));

        shutdown.await;
        tracing::info!("shutting down: no new connections; finishing open requests");
        let _ = stop_tx.send(true);
        for t in tasks {
            let _ = t.await;
        }
        for t in &self.background {
            t.abort();
        }
        // The doors are gone; dropping the last recorder lets the writer
        // flush and end.
        drop(self.shared);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), self.usage_writer).await;
        tracing::info!("stopped");
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}
