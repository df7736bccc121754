//! `hawzu-gate serve`: opens the store, binds the listeners and runs them
//! until shutdown.
//!
//! Binding is separate from running so that tests (and the start-up log)
//! learn the real addresses, port 0 included, before traffic starts.

use std::net::SocketAddr;
use std::sync::Arc;

use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::admin::{self, KeyError, KeySource, api::AdminApi};
use crate::config::{Backend, Loaded, redact_url};
use crate::doors::forward_auth::ForwardAuth;
use crate::doors::http::serve;
use crate::store::{EmbeddedStore, RedisStore, Store, StoreError, TokenStore, redis::RedisOptions};

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

/// A gate with its listeners bound, ready to run.
#[derive(Debug)]
pub struct Bound {
    auth: TcpListener,
    admin: TcpListener,
    forward_auth: Arc<ForwardAuth<Store>>,
    admin_api: Arc<AdminApi<Store>>,
}

/// The addresses a bound gate listens on.
#[derive(Debug, Clone, Copy)]
pub struct Addresses {
    pub auth: SocketAddr,
    pub admin: SocketAddr,
}

impl Bound {
    /// Opens the store, loads or generates the admin key, binds listeners.
    pub async fn new(loaded: &Loaded) -> Result<Self, StartError> {
        let s = &loaded.settings;
        let store = open_store(loaded).await?;
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
                        tracing::warn!(backend = "redis", %url, error = %e, "token store not reachable yet; requests get store_unavailable until it is")
                    }
                }
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
        let bind = |key: &'static str, addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind { key, addr, source })
        };
        let auth = bind("listen.auth", s.listen.auth).await?;
        let admin = bind("listen.admin", s.listen.admin).await?;
        let roles = Arc::new(loaded.roles.clone());
        Ok(Self {
            auth,
            admin,
            forward_auth: ForwardAuth::new(store.clone()),
            admin_api: AdminApi::new(store, roles, key),
        })
    }

    pub fn addresses(&self) -> Addresses {
        let addr = |l: &TcpListener| {
            l.local_addr()
                .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
        };
        Addresses {
            auth: addr(&self.auth),
            admin: addr(&self.admin),
        }
    }

    /// Serves until `shutdown` resolves, then drains open requests.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) {
        let addrs = self.addresses();
        tracing::info!(auth = %addrs.auth, admin = %addrs.admin, "hawzu-gate listening");
        let (stop_tx, stop_rx) = watch::channel(false);
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|v| *v).await;
        };
        let fa = self.forward_auth;
        let auth = tokio::spawn(serve(
            "auth",
            self.auth,
            move |req, peer| {
                let fa = fa.clone();
                async move { fa.handle(req, peer).await }
            },
            stopped(stop_rx.clone()),
        ));
        let api = self.admin_api;
        let admin = tokio::spawn(serve(
            "admin",
            self.admin,
            move |req, peer| {
                let api = api.clone();
                async move { api.handle(req, peer).await }
            },
            stopped(stop_rx),
        ));
        shutdown.await;
        tracing::info!("shutting down: no new connections; finishing open requests");
        let _ = stop_tx.send(true);
        let _ = tokio::join!(auth, admin);
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
