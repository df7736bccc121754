//! Binding and running each listener: the catalogue of listeners (`Which`),
//! their sockets (one shared, or one `SO_REUSEPORT` socket per core for the
//! hot doors), their TLS set-up, and which handler serves each. Owns sockets
//! and threads; it must never decide a request (the doors do) nor read the
//! config file (reload does).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::admin::api::AdminApi;
use crate::config::{ListenerTls, Settings, TlsSettings};
use crate::doors::ext_authz::ExtAuthz;
use crate::doors::forward_auth::ForwardAuth;
use crate::doors::listener::{Conn, ListenerState, Protocol, TlsHandle, serve};
use crate::doors::proxy::Proxy;
use crate::leaks::Leaks;
use crate::metrics::Metrics;
use crate::ops::Ops;
use crate::refusal::Render;

use super::error::StartError;

const HTTP_ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];
const GRPC_ALPN: &[&[u8]] = &[b"h2"];

/// The listeners, in the order of `Settings::listen.all()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Which {
    Proxy,
    Auth,
    Grpc,
    Admin,
    Ops,
    /// Leaked-token reports; bound only when `listen.leaks` is set.
    Leaks,
}

impl Which {
    pub(super) const ALL: [Which; 6] = [
        Which::Proxy,
        Which::Auth,
        Which::Grpc,
        Which::Admin,
        Which::Ops,
        Which::Leaks,
    ];

    pub(super) fn listen_key(self) -> &'static str {
        match self {
            Which::Proxy => "listen.proxy",
            Which::Auth => "listen.auth",
            Which::Grpc => "listen.grpc",
            Which::Admin => "listen.admin",
            Which::Ops => "listen.ops",
            Which::Leaks => "listen.leaks",
        }
    }

    pub(super) fn tls_key(self) -> &'static str {
        match self {
            Which::Proxy => "tls.proxy",
            Which::Auth => "tls.auth",
            Which::Grpc => "tls.grpc",
            Which::Admin => "tls.admin",
            Which::Ops => "tls.ops",
            Which::Leaks => "tls.leaks",
        }
    }

    /// The address to bind; `None` for a listener that is off.
    pub(super) fn addr(self, s: &Settings) -> Option<SocketAddr> {
        match self {
            Which::Proxy => Some(s.listen.proxy),
            Which::Auth => Some(s.listen.auth),
            Which::Grpc => Some(s.listen.grpc),
            Which::Admin => Some(s.listen.admin),
            Which::Ops => Some(s.listen.ops),
            Which::Leaks => s.listen.leaks,
        }
    }

    pub(super) fn tls(self, s: &Settings) -> Option<&ListenerTls> {
        self.tls_in(&s.tls)
    }

    /// This listener's entry of `tls`.
    pub(super) fn tls_in(self, t: &TlsSettings) -> Option<&ListenerTls> {
        match self {
            Which::Proxy => t.proxy.as_ref(),
            Which::Auth => t.auth.as_ref(),
            Which::Grpc => t.grpc.as_ref(),
            Which::Admin => t.admin.as_ref(),
            Which::Ops => t.ops.as_ref(),
            Which::Leaks => t.leaks.as_ref(),
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
pub(super) fn tls_config(
    which: Which,
    t: &ListenerTls,
) -> Result<Arc<rustls::ServerConfig>, StartError> {
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
pub(super) struct Listener {
    pub(super) which: Which,
    pub(super) sockets: Sockets,
    tls: Option<TlsHandle>,
    state: Arc<ListenerState>,
}

pub(super) enum Sockets {
    Shared(TcpListener),
    PerCore(Vec<std::net::TcpListener>),
}

impl Sockets {
    pub(super) fn local_addr(&self) -> Option<SocketAddr> {
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
///
/// `SO_REUSEPORT` would also let *another process* of the same user join the
/// group and take part of the traffic (a second gate started by mistake on
/// the same port: every other request answered by a gate with other
/// settings). So the address is first claimed without `SO_REUSEPORT`: if
/// anything listens there, that bind fails with "address in use" and the
/// gate does not start. (The claim is released just before the group binds;
/// a second gate would have to start in that instant.)
fn bind_per_core(addr: SocketAddr, cores: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    if addr.port() != 0 {
        drop(std::net::TcpListener::bind(addr)?);
    }
    let first = bind_reuseport(addr)?;
    let bound = first.local_addr()?;
    let mut all = vec![first];
    for _ in 1..cores {
        all.push(bind_reuseport(bound)?);
    }
    Ok(all)
}

/// Threads serving the hot doors: `runtime.worker_threads`, else one per CPU.
pub(super) fn door_threads(s: &Settings) -> usize {
    match s.runtime.worker_threads {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    }
}

/// Binds every listener of `s` (`threads` sockets for each hot door), with
/// its TLS configuration and its own limits and counters.
pub(super) async fn bind_all(
    s: &Settings,
    threads: usize,
    render: &Render,
    metrics: &Metrics,
) -> Result<Vec<Listener>, StartError> {
    let mut listeners = Vec::new();
    for which in Which::ALL {
        let Some(addr) = which.addr(s) else {
            continue;
        };
        let tls = which
            .tls(s)
            .map(|t| tls_config(which, t).map(|c| Arc::new(ArcSwap::new(c))))
            .transpose()?;
        let bind_error = |source| StartError::Bind {
            key: which.listen_key(),
            addr,
            source,
        };
        let sockets = match which {
            // The hot doors: a socket and a single-threaded runtime per core.
            Which::Proxy | Which::Auth | Which::Grpc => {
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
                render.clone(),
                metrics,
            ),
        });
    }
    Ok(listeners)
}

/// The tasks serving the started listeners.
pub(super) struct Running {
    /// The door and admin listeners: they stop when told on `doors_rx`.
    pub(super) doors: Vec<tokio::task::JoinHandle<()>>,
    /// The ops listener: it stops last, when told on `ops_rx`.
    pub(super) ops: Option<tokio::task::JoinHandle<()>>,
    /// The TLS configurations that reloads may swap.
    pub(super) tls_handles: Vec<(Which, TlsHandle)>,
}

/// What each listener serves: the doors, the admin API and the ops
/// endpoints, borrowed from the bound gate.
pub(super) struct Handlers<'a> {
    /// One proxy per door thread (see `Bound`).
    pub(super) proxy_doors: &'a [Arc<Proxy>],
    pub(super) forward_auth: &'a Arc<ForwardAuth>,
    pub(super) ext_authz: &'a ExtAuthz,
    pub(super) admin_api: &'a Arc<AdminApi>,
    pub(super) ops: &'a Arc<Ops>,
    /// Present when `listen.leaks` is set.
    pub(super) leaks: Option<&'a Arc<Leaks>>,
}

/// Starts serving every bound listener with its handler: the door and
/// admin listeners until `doors_rx` turns true (open requests get up to
/// `grace`), the ops listener until `ops_rx` does (one second).
pub(super) fn start(
    listeners: Vec<Listener>,
    handlers: Handlers<'_>,
    doors_rx: watch::Receiver<bool>,
    ops_rx: watch::Receiver<bool>,
    grace: Duration,
) -> Running {
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    let mut doors = Vec::new();
    let mut ops_task = None;
    let mut tls_handles = Vec::new();
    for l in listeners {
        if let Some(t) = &l.tls {
            tls_handles.push((l.which, t.clone()));
        }
        let name = l.which.listen_key();
        let state = l.state;
        match (l.which, l.sockets) {
            (Which::Proxy, Sockets::PerCore(sockets)) => {
                for (i, socket) in sockets.into_iter().enumerate() {
                    let door = handlers.proxy_doors[i % handlers.proxy_doors.len()].clone();
                    doors.push(serve_on_own_thread(
                        state.clone(),
                        i,
                        socket,
                        l.tls.clone(),
                        // The door's own future, not one wrapping it: each
                        // layer moves the request (and its child) once more.
                        move |req, conn| door.clone().handle(req, conn),
                        doors_rx.clone(),
                        grace,
                    ));
                }
            }
            (Which::Auth, Sockets::PerCore(sockets)) => {
                for (i, socket) in sockets.into_iter().enumerate() {
                    // A door of its own per thread: each request takes a
                    // reference to its door, and a count written by two
                    // threads is a cache line both wait for.
                    let door = Arc::new(ForwardAuth::clone(handlers.forward_auth));
                    doors.push(serve_on_own_thread(
                        state.clone(),
                        i,
                        socket,
                        l.tls.clone(),
                        move |req, conn: Conn| door.clone().handle(req, conn.peer),
                        doors_rx.clone(),
                        grace,
                    ));
                }
            }
            (Which::Grpc, Sockets::PerCore(sockets)) => {
                for (i, socket) in sockets.into_iter().enumerate() {
                    let door = handlers.ext_authz.clone();
                    let grpc = door.clone().service();
                    doors.push(serve_on_own_thread(
                        state.clone(),
                        i,
                        socket,
                        l.tls.clone(),
                        move |mut req, conn| {
                            let (door, grpc) = (door.clone(), grpc.clone());
                            // The caller's address, for the door's client.
                            req.extensions_mut().insert(conn);
                            async move {
                                use tower::ServiceExt;
                                let mut res = match grpc.oneshot(req).await {
                                    Ok(res) => res,
                                    Err(never) => match never {},
                                };
                                door.name_too_large(&mut res);
                                res
                            }
                        },
                        doors_rx.clone(),
                        grace,
                    ));
                }
            }
            (_, Sockets::PerCore(_)) => {
                tracing::error!(listener = name, "no per-core server for this listener");
            }
            (Which::Admin, Sockets::Shared(socket)) => {
                let api = handlers.admin_api.clone();
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
            (Which::Leaks, Sockets::Shared(socket)) => {
                let Some(leaks) = handlers.leaks.cloned() else {
                    tracing::error!(listener = name, "no handler for the leaks listener");
                    continue;
                };
                doors.push(tokio::spawn(serve(
                    state,
                    socket,
                    l.tls,
                    move |req, conn| {
                        let leaks = leaks.clone();
                        async move { leaks.handle(req, conn).await }
                    },
                    stopped(doors_rx.clone()),
                    grace,
                )));
            }
            (Which::Ops, Sockets::Shared(socket)) => {
                let ops = handlers.ops.clone();
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
    Running {
        doors,
        ops: ops_task,
        tls_handles,
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
            // The thread's deadlines (header reads, upstream answers).
            crate::doors::deadline::install();
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
pub(super) fn raise_open_files_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!(open_files = n, "open files limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open files limit"),
    }
}
