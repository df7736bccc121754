//! Shared HTTP plumbing for the gate's listeners: the accept loop (plain or
//! TLS, HTTP/1.1 and HTTP/2) with its limits and graceful shutdown, and
//! small JSON answers.
//!
//! Holds no policy; it only moves bytes between sockets and services, and
//! keeps each listener serving when clients are too many, too slow or idle:
//!
//! - at most `limits.max_connections` open connections: one more is told
//!   503 with `Retry-After` (plain HTTP) or closed (TLS) at once;
//! - at most `limits.max_requests` requests in progress: one more gets 503
//!   `overloaded` with `Retry-After` at once — no queue grows;
//! - request heads must arrive within `limits.header_read_timeout`
//!   (slowloris), stay under `limits.max_header_bytes` and
//!   `limits.max_headers` (431 beyond);
//! - a connection with no request in progress for `limits.idle_timeout` is
//!   closed gracefully;
//! - a request body a door reads must keep coming: no wait for the client
//!   longer than `limits.body_read_timeout`, and on average at least
//!   `limits.min_body_rate` once `limits.body_rate_grace` of waiting has
//!   passed. A body too slow fails ([`BodyTimeout`]); the request is
//!   answered 408 `body_timeout` (gRPC: `DEADLINE_EXCEEDED`) and its
//!   HTTP/1.1 connection closed, so no slow client holds a request slot.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use arc_swap::ArcSwap;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, Version, header};
use http_body_util::{Either, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulConnection;
use prometheus::{IntCounter, IntGauge};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;

use crate::config::LimitSettings;
use crate::metrics::Metrics;
use crate::refusal::{Refusal, Render};
use crate::web::REQUEST_ID;

/// The connection a request came on.
#[derive(Debug, Clone, Copy)]
pub struct Conn {
    pub peer: SocketAddr,
    /// Whether the connection is TLS (for `X-Forwarded-Proto`).
    pub tls: bool,
}

/// A listener's TLS configuration, swapped whole on reload: each new
/// connection takes the configuration current at its handshake, open ones
/// keep theirs.
pub type TlsHandle = Arc<ArcSwap<rustls::ServerConfig>>;

/// How a listener says it is too busy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// 503 with a JSON body, `Retry-After` and the error-code header.
    Http,
    /// gRPC status UNAVAILABLE (14), trailers only.
    Grpc,
}

/// One listener's limits and live counters, shared by all its sockets (the
/// hot doors have one per core).
#[derive(Debug)]
pub struct ListenerState {
    name: &'static str,
    limits: LimitSettings,
    protocol: Protocol,
    /// How its refusals are rendered.
    render: Render,
    connections: AtomicUsize,
    requests: AtomicUsize,
    /// Connections beyond the limit being told so (each for up to a second).
    refusing: Arc<AtomicUsize>,
    open_gauge: IntGauge,
    refused_connections: IntCounter,
    refused_requests: IntCounter,
    /// Request bodies cut for coming too slowly.
    refused_bodies: IntCounter,
}

impl ListenerState {
    /// `name` is the listener's config key (`listen.proxy`).
    pub fn new(
        name: &'static str,
        limits: &LimitSettings,
        protocol: Protocol,
        render: Render,
        metrics: &Metrics,
    ) -> Arc<Self> {
        let label = name.trim_start_matches("listen.");
        Arc::new(Self {
            name,
            limits: limits.clone(),
            protocol,
            render,
            connections: AtomicUsize::new(0),
            requests: AtomicUsize::new(0),
            refusing: Arc::new(AtomicUsize::new(0)),
            open_gauge: metrics.open_connections(label),
            refused_connections: metrics.overload(label, "connections"),
            refused_requests: metrics.overload(label, "requests"),
            refused_bodies: metrics.overload(label, Refusal::BodyTimeout.code()),
        })
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Takes a connection slot, or `None` at the limit.
    fn open_connection(self: &Arc<Self>) -> Option<ConnectionSlot> {
        if self.connections.fetch_add(1, Ordering::AcqRel) >= self.limits.max_connections {
            self.connections.fetch_sub(1, Ordering::AcqRel);
            self.refused_connections.inc();
            return None;
        }
        self.open_gauge.inc();
        Some(ConnectionSlot(self.clone()))
    }

    /// Takes a request slot, or `None` at the limit.
    fn begin_request(&self) -> Option<RequestSlot<'_>> {
        if self.requests.fetch_add(1, Ordering::AcqRel) >= self.limits.max_requests {
            self.requests.fetch_sub(1, Ordering::AcqRel);
            self.refused_requests.inc();
            return None;
        }
        Some(RequestSlot(self))
    }

    /// Puts the request's body under the body limits. The flag turns true
    /// if the body is cut; `None` when there is no body to wait for.
    fn time_body(&self, req: Request<Incoming>) -> (Request<TimedBody>, Option<Arc<AtomicBool>>) {
        let (parts, body) = req.into_parts();
        let (body, cut) = TimedBody::new(
            body,
            BodyLimits::of(&self.limits),
            &self.refused_bodies,
            self.name,
        );
        (Request::from_parts(parts, body), cut)
    }

    /// The answer to a request whose body was cut for coming too slowly.
    /// `request_id` is carried over from the door's answer, when it had one.
    fn body_timeout(
        &self,
        version: Version,
        request_id: Option<HeaderValue>,
    ) -> Response<Full<Bytes>> {
        let mut res = self.refusal(Refusal::BodyTimeout, request_id.as_ref());
        self.body_timeout_headers(&mut res, version);
        res
    }

    /// The code header (HTTP) and, on HTTP/1.x, `Connection: close` of a
    /// request whose body was cut: set on the door's own answer when the
    /// body was cut after it answered.
    fn body_timeout_headers<B>(&self, res: &mut Response<B>, version: Version) {
        let h = res.headers_mut();
        if self.protocol == Protocol::Http {
            h.insert(
                self.render.error_header().clone(),
                HeaderValue::from_static(Refusal::BodyTimeout.code()),
            );
        }
        if version < Version::HTTP_2 {
            // The rest of the body is never read: the connection cannot
            // carry another request. (HTTP/2 ends only the stream.)
            h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
    }

    /// The answer to a request beyond `max_requests`.
    fn overloaded(&self) -> Response<Full<Bytes>> {
        self.refusal(Refusal::Overloaded, None)
    }

    /// A refusal in this listener's protocol.
    fn refusal(&self, r: Refusal, request_id: Option<&HeaderValue>) -> Response<Full<Bytes>> {
        match self.protocol {
            Protocol::Http => self.render.json(r, request_id),
            Protocol::Grpc => {
                let mut res = self.render.grpc_trailers(r);
                if let Some(id) = request_id {
                    res.headers_mut().insert(REQUEST_ID, id.clone());
                }
                res
            }
        }
    }
}

/// An open connection's place under `max_connections`.
struct ConnectionSlot(Arc<ListenerState>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
        self.0.open_gauge.dec();
    }
}

/// A request's place under `max_requests`.
struct RequestSlot<'a>(&'a ListenerState);

impl Drop for RequestSlot<'_> {
    fn drop(&mut self) {
        self.0.requests.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What every request of one connection shares.
struct PerConnection<H> {
    handle: H,
    state: Arc<ListenerState>,
    activity: Activity,
    conn: Conn,
}

/// What one connection is doing, for the idle timeout: requests in
/// progress, and a count of request starts and ends.
#[derive(Debug, Default)]
struct Activity {
    open: AtomicUsize,
    events: AtomicU64,
}

/// Marks a request in progress on its connection until dropped.
struct Busy<'a>(&'a Activity);

impl<'a> Busy<'a> {
    fn new(a: &'a Activity) -> Self {
        a.open.fetch_add(1, Ordering::Relaxed);
        a.events.fetch_add(1, Ordering::Relaxed);
        Self(a)
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
        self.0.events.fetch_add(1, Ordering::Relaxed);
    }
}

/// Most connections beyond `max_connections` told so at once, per listener.
const MAX_REFUSING: usize = 256;

/// The HTTP/1.1 answer to a connection beyond `max_connections`.
const TOO_MANY_CONNECTIONS: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\nretry-after: 1\r\nconnection: close\r\n\
content-length: 101\r\n\r\n\
{\"error\":\"overloaded\",\"message\":\"The gate has as many connections as it may; try again shortly.\"}";

/// Tells a connection beyond the limit to come back later, without serving
/// it: the answer is written at once (plain HTTP) and the socket closed.
/// Bounded to one second, so a flood of these cannot pile up.
async fn refuse(mut stream: TcpStream, tls: bool) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        if !tls {
            stream.write_all(TOO_MANY_CONNECTIONS).await?;
            stream.shutdown().await?;
            // Read what the client sent until it closes, so that closing
            // does not reset the connection before the answer is read.
            let mut sink = [0u8; 1024];
            while stream.read(&mut sink).await? > 0 {}
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
}

/// Accepts connections on `listener` (TLS when `tls` is given) and serves
/// each request with `handle` until `shutdown` resolves; then stops
/// accepting and waits up to `grace` for open connections to finish their
/// requests (idle keep-alive connections are closed at once).
pub async fn serve<H, Fut, B>(
    state: Arc<ListenerState>,
    listener: TcpListener,
    tls: Option<TlsHandle>,
    handle: H,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) where
    H: Fn(Request<TimedBody>, Conn) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let name = state.name;
    let limits = &state.limits;
    let header_read_timeout = limits.header_read_timeout.0;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        // The read buffer bounds the request head: 431 when it fills first.
        .max_buf_size(limits.max_header_bytes.max(8192));
    if limits.max_headers != 100 {
        // hyper's default is 100 on the stack; another value costs a heap
        // allocation per request.
        builder.http1().max_headers(limits.max_headers);
    }
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(256);

    // Each connection task holds a clone of `open_tx`; when the last is
    // dropped, `open_rx` yields `None`: every connection has ended.
    let (open_tx, mut open_rx) = mpsc::channel::<()>(1);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(listener = name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(slot) = state.open_connection() else {
            tracing::debug!(listener = name, %peer, "connection refused: at limits.max_connections");
            // Telling a flood to come back must not itself hold a flood of
            // sockets: beyond MAX_REFUSING at once, close without a word.
            let refusing = state.refusing.clone();
            if refusing.fetch_add(1, Ordering::AcqRel) < MAX_REFUSING {
                let tls = tls.is_some();
                tokio::spawn(async move {
                    refuse(stream, tls).await;
                    refusing.fetch_sub(1, Ordering::AcqRel);
                });
            } else {
                refusing.fetch_sub(1, Ordering::AcqRel);
                drop(stream);
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let conn = Conn {
            peer,
            tls: tls.is_some(),
        };
        // One allocation per connection holds what each request needs.
        let ctx = Arc::new(PerConnection {
            handle: handle.clone(),
            state: state.clone(),
            activity: Activity::default(),
            conn,
        });
        let service = {
            let ctx = ctx.clone();
            service_fn(move |req| {
                let ctx = ctx.clone();
                async move {
                    let _busy = Busy::new(&ctx.activity);
                    let Some(_slot) = ctx.state.begin_request() else {
                        return Ok::<_, Infallible>(ctx.state.overloaded().map(Either::Right));
                    };
                    let version = req.version();
                    let (req, cut) = ctx.state.time_body(req);
                    let res = (ctx.handle)(req, ctx.conn).await;
                    // A body cut while the door read it: whatever the door
                    // made of the error, the client is told why, the same
                    // way on every listener (a door's own 408 is kept, with
                    // the listener's headers).
                    let res = match cut {
                        Some(cut) if cut.load(Ordering::Acquire) => {
                            if res.status() == StatusCode::REQUEST_TIMEOUT {
                                let mut res = res.map(Either::Left);
                                ctx.state.body_timeout_headers(&mut res, version);
                                res
                            } else {
                                let id = res.headers().get(REQUEST_ID).cloned();
                                ctx.state.body_timeout(version, id).map(Either::Right)
                            }
                        }
                        _ => res.map(Either::Left),
                    };
                    Ok(res)
                }
            })
        };
        let builder = builder.clone();
        let stop = stop_rx.clone();
        let open = open_tx.clone();
        let idle = state.limits.idle_timeout.0;
        let acceptor = tls.as_ref().map(|t| TlsAcceptor::from(t.load_full()));
        tokio::spawn(async move {
            let _slot = slot;
            let _open = open;
            let result = match acceptor {
                None => {
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    drive(conn, stop, &ctx.activity, idle).await
                }
                Some(acceptor) => {
                    let stream = match tokio::time::timeout(
                        header_read_timeout,
                        acceptor.accept(stream),
                    )
                    .await
                    {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(listener = name, %peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(listener = name, %peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    drive(conn, stop, &ctx.activity, idle).await
                }
            };
            if let Err(e) = result {
                tracing::debug!(listener = name, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    drop(open_tx);
    let _ = stop_tx.send(true);
    if tokio::time::timeout(grace, open_rx.recv()).await.is_err() {
        tracing::warn!(
            listener = name,
            ?grace,
            "requests still open after the grace period; closing them"
        );
    }
}

/// Runs one connection until it ends; shuts it down gracefully (open
/// requests finish, keep-alive ends, HTTP/2 gets GOAWAY) when the listener
/// stops or the connection has been idle for `idle`.
async fn drive<C>(
    conn: C,
    mut stop: watch::Receiver<bool>,
    activity: &Activity,
    idle: Duration,
) -> Result<(), C::Error>
where
    C: GracefulConnection,
{
    let mut conn = pin!(conn);
    let mut closing = false;
    let mut seen = activity.events.load(Ordering::Relaxed);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + idle, idle);
    loop {
        tokio::select! {
            result = conn.as_mut() => return result,
            _ = stop.wait_for(|s| *s), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = tick.tick(), if !closing => {
                // Idle: nothing in progress, and nothing started or ended
                // since the last tick, a whole `idle` ago.
                let now = activity.events.load(Ordering::Relaxed);
                if now == seen && activity.open.load(Ordering::Relaxed) == 0 {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
                seen = now;
            }
        }
    }
}

// === impl TimedBody ===

/// A request body that fails with [`BodyTimeout`] when the client sends it
/// too slowly.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the request body came too slowly")]
pub struct BodyTimeout;

/// Whether `e` (or what caused it) is a [`BodyTimeout`].
pub fn is_body_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(err) = next {
        if err.is::<BodyTimeout>() {
            return true;
        }
        next = err.source();
    }
    false
}

/// The body limits of a listener (`[limits]`).
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// Longest single wait for the client.
    pub read_timeout: Duration,
    /// Least bytes per second of waiting, after `grace`; 0: no rate check.
    pub min_rate: u64,
    pub grace: Duration,
}

impl BodyLimits {
    pub fn of(limits: &LimitSettings) -> Self {
        Self {
            read_timeout: limits.body_read_timeout.0,
            min_rate: limits.min_body_rate,
            grace: limits.body_rate_grace.0,
        }
    }
}

/// The request body every door gets: the client's body under its
/// listener's [`BodyLimits`].
///
/// Only the time spent waiting for the client counts (from the moment a
/// read finds nothing until data comes): a door that does not read, or an
/// upstream that reads slowly, never makes a client look slow. A body that
/// has already ended, or arrives whole with the head, costs no timer and no
/// clock reads.
#[derive(Debug)]
pub struct TimedBody<B = Incoming> {
    inner: B,
    /// `None` when the body had ended before the door saw it.
    watch: Option<BodyWatch>,
}

#[derive(Debug)]
struct BodyWatch {
    limits: BodyLimits,
    /// Set when the body is cut; read by the listener for its answer.
    cut: Arc<AtomicBool>,
    refused: IntCounter,
    listener: &'static str,
    /// Body bytes received.
    received: u64,
    /// Time spent waiting for the client, before the wait in progress.
    waited: Duration,
    /// When the wait for the client in progress began.
    waiting_since: Option<Instant>,
    /// How long that wait may last. (Not an `Option<Instant>` deadline:
    /// auto-trait checks of the doors' futures are at the compiler's
    /// recursion limit, and that type is one level too deep.)
    wait_limit: Duration,
    /// Fires at or before the wait's deadline; made on the first wait.
    timer: Option<Pin<Box<Sleep>>>,
}

impl<B: Body> TimedBody<B> {
    /// Wraps `inner`; the flag is set if the body is cut.
    pub fn new(
        inner: B,
        limits: BodyLimits,
        refused: &IntCounter,
        listener: &'static str,
    ) -> (Self, Option<Arc<AtomicBool>>) {
        if inner.is_end_stream() {
            return (Self { inner, watch: None }, None);
        }
        let cut = Arc::new(AtomicBool::new(false));
        let watch = BodyWatch {
            limits,
            cut: cut.clone(),
            refused: refused.clone(),
            listener,
            received: 0,
            waited: Duration::ZERO,
            waiting_since: None,
            wait_limit: Duration::ZERO,
            timer: None,
        };
        (
            Self {
                inner,
                watch: Some(watch),
            },
            Some(cut),
        )
    }
}

impl BodyWatch {
    /// How long the next wait may last: the read timeout, or until the
    /// average rate would fall below the least.
    fn wait_limit(&self) -> Duration {
        let mut wait = self.limits.read_timeout;
        if self.limits.min_rate > 0 {
            #[allow(clippy::cast_precision_loss)] // a deadline, not a count
            let earned =
                Duration::try_from_secs_f64(self.received as f64 / self.limits.min_rate as f64)
                    .unwrap_or(Duration::MAX);
            let allowed = self.limits.grace.max(earned);
            wait = wait.min(allowed.saturating_sub(self.waited));
        }
        // At most the read timeout (validated to at most 1h): adding it to
        // an instant cannot overflow.
        wait
    }

    fn trip(&mut self) -> BodyTimeout {
        if !self.cut.swap(true, Ordering::AcqRel) {
            self.refused.inc();
            tracing::debug!(
                listener = self.listener,
                received = self.received,
                waited_ms = u64::try_from(self.waited.as_millis()).unwrap_or(u64::MAX),
                "request body too slow: cut"
            );
        }
        self.timer = None;
        BodyTimeout
    }
}

impl<B> Body for TimedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let Some(w) = this.watch.as_mut() else {
            return Pin::new(&mut this.inner).poll_frame(cx).map_err(Into::into);
        };
        if w.cut.load(Ordering::Relaxed) {
            return Poll::Ready(Some(Err(BodyTimeout.into())));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                if let Some(since) = w.waiting_since.take() {
                    w.waited += since.elapsed();
                }
                if let Some(Ok(data)) = frame.as_ref().map(|f| f.as_ref().map(Frame::data_ref)) {
                    w.received += data.map_or(0, |d| d.len() as u64);
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let deadline = match w.waiting_since {
                    Some(since) => since + w.wait_limit,
                    None => {
                        // A new wait for the client.
                        let now = Instant::now();
                        w.wait_limit = w.wait_limit();
                        w.waiting_since = Some(now);
                        let deadline = now + w.wait_limit;
                        match w.timer.as_mut() {
                            // Only an earlier deadline moves the timer; for
                            // a later one it fires early and is re-armed
                            // below, so a fast body does not reset a timer
                            // per chunk.
                            Some(t) if t.deadline() > deadline => t.as_mut().reset(deadline),
                            Some(_) => {}
                            None => w.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
                        }
                        deadline
                    }
                };
                loop {
                    let Some(timer) = w.timer.as_mut() else {
                        return Poll::Pending;
                    };
                    ready!(timer.as_mut().poll(cx));
                    if Instant::now() >= deadline {
                        return Poll::Ready(Some(Err(w.trip().into())));
                    }
                    timer.as_mut().reset(deadline);
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use http_body_util::StreamBody;

    type Chunks = tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, std::convert::Infallible>>;

    /// A body fed by the test, one chunk at a time.
    fn fed(rx: Chunks) -> impl Body<Data = Bytes, Error = std::convert::Infallible> + Unpin {
        StreamBody::new(Box::pin(futures_util::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|v| (v, rx)) },
        )))
    }

    fn limits(read_ms: u64, min_rate: u64, grace_ms: u64) -> BodyLimits {
        BodyLimits {
            read_timeout: Duration::from_millis(read_ms),
            min_rate,
            grace: Duration::from_millis(grace_ms),
        }
    }

    fn counter() -> IntCounter {
        IntCounter::new("cut", "cut").unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stops_coming_is_cut_after_the_read_timeout() {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let refused = counter();
        let (mut body, cut) = TimedBody::new(fed(rx), limits(300, 0, 100), &refused, "test");
        let cut = cut.unwrap();
        tx.send(Ok(Frame::data(Bytes::from_static(b"{"))))
            .await
            .unwrap();
        assert!(body.frame().await.unwrap().is_ok());
        let start = Instant::now();
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(is_body_timeout(&*err), "{err}");
        assert_eq!(start.elapsed(), Duration::from_millis(300));
        assert!(cut.load(Ordering::Acquire));
        assert_eq!(refused.get(), 1);
        // Polled again, it stays cut, and is counted once.
        assert!(body.frame().await.unwrap().is_err());
        assert_eq!(refused.get(), 1);
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_body_within_the_limits_is_read_whole() {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let refused = counter();
        // 2 KiB every 200 ms: 10 KiB/s, above 1 KiB/s, never a 300 ms gap.
        let (body, cut) = TimedBody::new(fed(rx), limits(300, 1024, 500), &refused, "test");
        tokio::spawn(async move {
            for _ in 0..20 {
                tokio::time::sleep(Duration::from_millis(200)).await;
                tx.send(Ok(Frame::data(Bytes::from(vec![b' '; 2048]))))
                    .await
                    .unwrap();
            }
        });
        let whole = body.collect().await.unwrap().to_bytes();
        assert_eq!(whole.len(), 20 * 2048);
        assert!(!cut.unwrap().load(Ordering::Acquire));
        assert_eq!(refused.get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_under_the_minimum_rate_is_cut_once_the_grace_is_spent() {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let refused = counter();
        // 100 bytes every 200 ms: 500 B/s, under 1 KiB/s; no gap of 300 ms.
        let (body, cut) = TimedBody::new(fed(rx), limits(300, 1024, 1000), &refused, "test");
        tokio::spawn(async move {
            for _ in 0..100 {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if tx
                    .send(Ok(Frame::data(Bytes::from(vec![b' '; 100]))))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        let start = Instant::now();
        let err = body.collect().await.unwrap_err();
        assert!(is_body_timeout(&*err), "{err}");
        // Past the grace; cut as soon as 500 B/s shows (no later than when
        // 1 KiB/s would have sent what came: ~1.2 s).
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(1000), "{took:?}");
        assert!(took <= Duration::from_millis(1400), "{took:?}");
        assert!(cut.unwrap().load(Ordering::Acquire));
    }

    #[tokio::test(start_paused = true)]
    async fn time_the_reader_spends_elsewhere_is_not_the_clients() {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let refused = counter();
        let (mut body, _cut) = TimedBody::new(fed(rx), limits(300, 1024, 500), &refused, "test");
        tx.send(Ok(Frame::data(Bytes::from_static(b"{"))))
            .await
            .unwrap();
        assert!(body.frame().await.unwrap().is_ok());
        // The reader (say, a slow upstream) does not poll for 10 s; the
        // client had sent the rest meanwhile.
        tx.send(Ok(Frame::data(Bytes::from_static(b"}"))))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(body.frame().await.unwrap().is_ok());
        drop(tx);
        assert!(body.frame().await.is_none());
        assert_eq!(refused.get(), 0);
    }

    #[tokio::test]
    async fn an_ended_body_costs_no_watch() {
        let refused = counter();
        let (body, cut) = TimedBody::new(
            http_body_util::Empty::<Bytes>::new(),
            limits(300, 1024, 500),
            &refused,
            "test",
        );
        assert!(cut.is_none());
        assert!(body.watch.is_none());
    }
}
