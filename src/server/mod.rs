//! `hawzu-gate serve`: the order of start-up and of drain. Opens the store,
//! builds the cache and the doors, binds the listeners, and runs them until
//! told to stop.
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
//!
//! This file only sequences; the jobs are beside it: `store.rs` (store,
//! cache, invalidation listener), `listeners.rs` (binding and serving each
//! listener), `reload.rs` (SIGHUP, certificate files), `error.rs`
//! ([`StartError`]). They never import this file, only each other. It may
//! import every part of the gate, and nothing but `cli` (and tests) may
//! import it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, watch};

use crate::admin::{self, KeySource, api::AdminApi};
use crate::clients::{FailedAuth, TrustedProxies};
use crate::config::{Loaded, Settings};
use crate::doors::ext_authz::ExtAuthz;
use crate::doors::forward_auth::ForwardAuth;
use crate::doors::proxy::{Proxy, UpstreamError, UpstreamOptions};
use crate::doors::{PolicyHandle, Shared};
use crate::expiring;
use crate::headers::IdentityHeaders;
use crate::leaks::Leaks;
use crate::metrics::Metrics;
use crate::ops::{Health, Ops};
use crate::traces::{ExportTask, Traces};
use crate::usage;
use crate::webhooks;

mod error;
mod listeners;
mod reload;
mod store;

pub use error::StartError;
pub use listeners::check_tls;
pub use store::open_store;

use listeners::{Handlers, Listener, Which, bind_all, door_threads, raise_open_files_limit};
use reload::{TlsFiles, watch_tls_files};

/// Checks what `serve` would read for `[[webhooks]]` (secret files) without
/// starting anything: for `check-config`.
pub fn check_webhooks(settings: &Settings) -> Result<(), StartError> {
    webhooks::prepare(&settings.webhooks)?;
    Ok(())
}

/// What a running gate can be told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Read the config again (SIGHUP).
    Reload,
    /// Stop gracefully (SIGTERM, SIGINT).
    Shutdown,
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
    /// The leaks listener's handler, when `listen.leaks` is set.
    leaks: Option<Arc<Leaks>>,
    health: Arc<Health>,
    shared: Arc<Shared>,
    policy: PolicyHandle,
    settings: Settings,
    config_file: Option<PathBuf>,
    /// The sections of the config file as last accepted (at start, then by
    /// each reload).
    file_sections: reload::Sections,
    background: Vec<tokio::task::JoinHandle<()>>,
    usage_writer: tokio::task::JoinHandle<()>,
    /// Sends the last spans once the doors are gone (traces on).
    trace_export: Option<ExportTask>,
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
    /// `None` when `listen.leaks` is not set.
    pub leaks: Option<SocketAddr>,
}

impl Bound {
    /// Opens the store, starts the cache and its listener, loads or
    /// generates the admin key, and binds every listener.
    pub async fn new(loaded: &Loaded) -> Result<Self, StartError> {
        let s = &loaded.settings;
        // Values under any configured prefix stay out of logs and errors.
        for prefix in loaded.policy.prefixes.accepted() {
            crate::redact::also_redact(prefix.as_str());
        }
        let metrics = Arc::new(Metrics::new());
        let (cache, mut background) = store::start_store(loaded, &metrics).await?;
        // Expiry signals: a background scan, never on the request path.
        background.extend(expiring::start(
            cache.clone(),
            metrics.clone(),
            s.tokens.expiry_scan_interval.0,
            s.tokens.expiring_workspaces,
        ));
        let (key, source) = admin::load_or_generate(s.admin.key.as_deref(), &s.data_dir)?;
        match source {
            KeySource::Config => tracing::info!("admin key from config (admin.key)"),
            KeySource::File(p) => {
                tracing::info!(path = %p.display(), "admin key read from file");
            }
            KeySource::Generated(p) => {
                tracing::info!(path = %p.display(), "admin key generated (mode 0600); the CLI reads it from there");
            }
        }
        if !key.unguessable() {
            tracing::info!(
                "the admin key is one chosen by hand: like any credential it is refused from an address that sent too many wrong keys (failed_auth); a key of the generated form (hwzadm_ and 43 letters and digits) is let through"
            );
        }
        let policy: PolicyHandle = Arc::new(ArcSwap::new(loaded.policy.clone()));
        let (recorder, usage_writer) = usage::start_with(
            cache.clone(),
            usage::UsageOptions {
                retention: s.usage.retention.0,
            },
        );
        if let Some(after) = s.usage.disable_unused() {
            background.push(usage::unused::start(cache.clone(), metrics.clone(), after));
        }
        // Lifecycle events out, signed: one loop per `[[webhooks]]` entry
        // (none, and nothing in the store, without one).
        background.extend(
            webhooks::start(
                webhooks::prepare(&s.webhooks)?,
                &cache,
                &metrics,
                s.tokens.expiry_scan_interval.0,
            )
            .await,
        );
        // Traces: nothing is started unless telemetry.otlp_endpoint is set.
        let (traces, trace_export) = Traces::start(&s.telemetry, &metrics)?.unzip();
        if traces.is_some() {
            tracing::info!(endpoint = ?s.telemetry.traces_url(), "exporting spans over OTLP/HTTP");
        }
        let shared = Arc::new(
            Shared::new(
                cache.clone(),
                policy.clone(),
                IdentityHeaders::new(&s.headers.prefix)?.with_strip(&s.headers.strip)?,
                recorder,
                TrustedProxies::new(&s.trusted_proxies),
                FailedAuth::new(&s.failed_auth),
            )
            .with_traces(traces),
        );
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

        let leaks = match s.listen.leaks {
            None => None,
            Some(_) => {
                Some(Leaks::new(cache.clone(), policy.clone(), s).map_err(StartError::Leaks)?)
            }
        };
        if let Some(l) = &leaks {
            l.keys().preload().await.map_err(StartError::Leaks)?;
        }
        let listeners = bind_all(s, threads, &shared.render, &metrics).await?;
        let health = Arc::new(Health::default());
        raise_open_files_limit();
        Ok(Self {
            listeners,
            proxy_doors,
            forward_auth: ForwardAuth::new(shared.clone()),
            ext_authz: ExtAuthz::new(shared.clone(), s.limits.max_grpc_message_bytes),
            admin_api: AdminApi::new(
                cache.clone(),
                policy.clone(),
                key,
                admin::api::CallerLimits::new(&s.failed_auth, &s.admin),
                // Validated below max_requests: token callers get at least one.
                s.limits
                    .max_requests
                    .saturating_sub(s.admin.reserved_requests(&s.limits)),
                s.admin.rotation(),
                s.usage.retention.0,
                shared.usage.clone(),
                if s.admin.console {
                    admin::api::ConsoleMode::On {
                        tls: s.tls.admin.is_some(),
                    }
                } else {
                    admin::api::ConsoleMode::Off {
                        tls: s.tls.admin.is_some(),
                    }
                },
            ),
            ops: Ops::new(cache, metrics, health.clone()),
            leaks,
            health,
            shared,
            policy,
            settings: s.clone(),
            config_file: loaded.origin.file.clone(),
            file_sections: reload::Sections::of(loaded.origin.file.as_deref()),
            background,
            usage_writer,
            trace_export,
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
            leaks: self
                .listeners
                .iter()
                .find(|l| l.which == Which::Leaks)
                .and_then(|l| l.sockets.local_addr()),
        }
    }

    /// The leaks listener's handler, when `listen.leaks` is set.
    pub fn leaks(&self) -> Option<&Arc<Leaks>> {
        self.leaks.as_ref()
    }

    /// Serves until told to shut down; reloads when told to.
    /// Serves until told to shut down; reloads when told to.
    pub async fn run(mut self, mut control: mpsc::Receiver<Control>) {
        let a = self.addresses();
        let leaks = a
            .leaks
            .map(|l| l.to_string())
            .unwrap_or_else(|| "off".into());
        tracing::info!(proxy = %a.proxy, auth = %a.auth, grpc = %a.grpc, admin = %a.admin, ops = %a.ops, leaks = %leaks, "hawzu-gate listening");
        if self.settings.admin.console {
            let scheme = if self.settings.tls.admin.is_some() {
                "https"
            } else {
                "http"
            };
            tracing::info!(url = %format!("{scheme}://{}/console/", a.admin), "token console on the admin listener (admin.console)");
        }
        let grace = self.settings.shutdown.grace.0;
        let (doors_tx, doors_rx) = watch::channel(false);
        let (ops_tx, ops_rx) = watch::channel(false);
        let listeners::Running {
            doors,
            ops: ops_task,
            tls_handles,
        } = listeners::start(
            std::mem::take(&mut self.listeners),
            Handlers {
                proxy_doors: &self.proxy_doors,
                forward_auth: &self.forward_auth,
                ext_authz: &self.ext_authz,
                admin_api: &self.admin_api,
                ops: &self.ops,
                leaks: self.leaks.as_ref(),
            },
            doors_rx,
            ops_rx,
            grace,
        );
        // Certificates are also re-read when their files change, with the
        // TLS settings as last loaded (a reload swaps both under its lock).
        let tls_files = Arc::new(std::sync::Mutex::new(TlsFiles::new(
            self.settings.tls.clone(),
            &tls_handles,
        )));
        let watcher = tokio::spawn(watch_tls_files(tls_files.clone(), tls_handles.clone()));

        // Until a shutdown (or every sender is gone), reload when asked.
        while let Some(Control::Reload) = control.recv().await {
            reload::settled(self.config_file.as_deref()).await;
            reload::reload(
                (self.config_file.as_deref(), &mut self.file_sections),
                &mut self.settings,
                &self.policy,
                (&tls_handles, &tls_files),
            );
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
        // Stopped for sure (a task on another thread could still be taking
        // a hold), then its chores given up.
        for t in std::mem::take(&mut self.background) {
            let _ = t.await;
        }
        // Another gate takes this one's fleet chores over at its next
        // round, not once the holds lapse (the unused sweep's: two hours).
        crate::store::leave_chores(
            self.shared.cache.store(),
            &[
                crate::expiring::CHORE,
                crate::webhooks::NOTICES_CHORE,
                crate::usage::unused::CHORE,
            ],
        )
        .await;
        // The doors are gone; dropping the last recorder lets the writer
        // flush pending last-used times and usage counts, and end.
        let Self {
            shared,
            proxy_doors,
            forward_auth,
            ext_authz,
            usage_writer,
            trace_export,
            ..
        } = self;
        drop((shared, proxy_doors, forward_auth, ext_authz));
        let _ = tokio::time::timeout(Duration::from_secs(5), usage_writer).await;
        // The tracer went with the doors: the exporter sends what is queued.
        if let Some(t) = trace_export {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        let _ = ops_tx.send(true);
        if let Some(t) = ops_task {
            let _ = t.await;
        }
        tracing::info!("stopped");
    }
}

/// Turns SIGTERM/SIGINT into `Shutdown` and SIGHUP into `Reload`; takes
/// SIGXFSZ, so that a write past a file-size limit (`ulimit -f`) fails as
/// any write to a full disk does (the store answers 503 and recovers once
/// the limit is lifted) instead of killing the gate.
pub fn signals() -> mpsc::Receiver<Control> {
    use tokio::signal::unix::{SignalKind, signal};
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        let too_large = SignalKind::from_raw(rustix::process::Signal::XFSZ.as_raw());
        let (Ok(mut term), Ok(mut int), Ok(mut hup), Ok(mut xfsz)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
            signal(too_large),
        ) else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        let mut told = None;
        loop {
            let control = tokio::select! {
                _ = term.recv() => Control::Shutdown,
                _ = int.recv() => Control::Shutdown,
                _ = hup.recv() => Control::Reload,
                _ = xfsz.recv() => {
                    // Once a minute at most: the log itself may be the file
                    // past the limit, each of its writes one more signal.
                    if told.is_none_or(|at: std::time::Instant| at.elapsed() >= Duration::from_secs(60)) {
                        told = Some(std::time::Instant::now());
                        tracing::warn!("a write went past the file-size limit (ulimit -f) and failed");
                    }
                    continue;
                }
            };
            if tx.send(control).await.is_err() || control == Control::Shutdown {
                return;
            }
        }
    });
    rx
}
