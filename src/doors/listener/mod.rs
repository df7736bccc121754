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
//! - an answer the client does not take: no write may wait longer than
//!   `limits.send_timeout`, nor an HTTP/2 answer's next frame (`send.rs`);
//! - a connection with no request in progress for `limits.idle_timeout` is
//!   closed gracefully, and dropped a bounded time later if the client
//!   ignores that (an HTTP/2 client never answering the GOAWAY's PING);
//! - a request body a door reads must keep coming: no wait for the client
//!   longer than `limits.body_read_timeout`, and on average at least
//!   `limits.min_body_rate` once `limits.body_rate_grace` of waiting has
//!   passed. A body too slow fails ([`BodyTimeout`]); the request is
//!   answered 408 `body_timeout` (gRPC: `DEADLINE_EXCEEDED`) and its
//!   HTTP/1.1 connection closed, so no slow client holds a request slot.

use std::convert::Infallible;
use std::future::Future;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use arc_swap::ArcSwap;

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use http::{HeaderValue, Request, Response, StatusCode, Version, header};
use http_body_util::{Either, Full};
use hyper::body::{Body, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulConnection;
use prometheus::{IntCounter, IntGauge};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;

use self::send::{SendTimed, StreamExecutor, StreamWatch};
use super::deadline::DoorTimer;
use crate::config::LimitSettings;

mod body;
mod send;
use crate::metrics::Metrics;
use crate::refusal::{Refusal, Render};
use crate::web::REQUEST_ID;
pub use body::{BodyLimits, BodyTimeout, TimedBody, is_body_timeout};

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
    /// The whole HTTP/1.1 answer to a connection beyond the limit, made once.
    too_many_connections: Bytes,
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
            too_many_connections: render.http1_close(Refusal::Overloaded),
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
            BodyLimits::of(&self.limits, self.protocol == Protocol::Grpc),
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
/// progress (from the service's call until its answer has been sent
/// whole, or dropped), and a count of request starts and ends.
#[derive(Debug, Default)]
struct Activity {
    open: AtomicUsize,
    events: AtomicU64,
}

/// Marks a request in progress on its connection until dropped: held by
/// the service while it runs, then by its answer's body ([`Answer`]).
struct Busy<H>(Arc<PerConnection<H>>);

impl<H> Busy<H> {
    fn new(ctx: Arc<PerConnection<H>>) -> Self {
        ctx.activity.open.fetch_add(1, Ordering::Relaxed);
        ctx.activity.events.fetch_add(1, Ordering::Relaxed);
        Self(ctx)
    }
}

impl<H> Drop for Busy<H> {
    fn drop(&mut self) {
        let a = &self.0.activity;
        a.open.fetch_sub(1, Ordering::Relaxed);
        a.events.fetch_add(1, Ordering::Relaxed);
    }
}

pin_project_lite::pin_project! {
    /// An answer's body, keeping its request in progress until the body
    /// has ended or is dropped: a connection streaming an answer is not
    /// idle, and the hard close after a graceful one (`drive`) spares it.
    /// No allocation: the connection's `Arc`, taken for the request
    /// anyway, moves here.
    struct Answer<B, H> {
        #[pin]
        body: B,
        busy: Option<Busy<H>>,
        // HTTP/2: marks the waits for the client to take the next frame.
        watch: Option<Arc<StreamWatch>>,
        // HTTP/2: what is left of a data frame handed out a piece at a
        // time ([`H2_PIECE`]).
        rest: Option<Bytes>,
    }
}

/// The most of an HTTP/2 answer handed to hyper at once: the send timeout
/// runs from one piece to the next, so it measures a slow reader's
/// progress, not how long it takes to drain a whole chunk from the
/// upstream (64 KiB or more: at 1 KiB/s a minute's worth).
const H2_PIECE: usize = 16 * 1024;

impl<B, H> Answer<B, H> {
    fn new(body: B, busy: Option<Busy<H>>, watch: Option<Arc<StreamWatch>>) -> Self {
        if let Some(w) = &watch {
            // The head goes out; the body waits to be asked for.
            w.waiting();
        }
        Self {
            body,
            busy,
            watch,
            rest: None,
        }
    }
}

impl<B: Body<Data = Bytes>, H> Body for Answer<B, H> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let Some(w) = this.watch else {
            // HTTP/1.1: the socket's writes are timed (`SendTimed`).
            let frame = this.body.poll_frame(cx);
            if let Poll::Ready(None) = frame {
                *this.busy = None;
            }
            return frame;
        };
        w.taken();
        let frame = match this.rest.take() {
            Some(rest) => Poll::Ready(Some(Ok(hyper::body::Frame::data(rest)))),
            None => this.body.poll_frame(cx),
        };
        match frame {
            Poll::Ready(Some(Ok(f))) => {
                let f = match f.into_data() {
                    Ok(mut data) if data.len() > H2_PIECE => {
                        *this.rest = Some(data.split_off(H2_PIECE));
                        hyper::body::Frame::data(data)
                    }
                    Ok(data) => hyper::body::Frame::data(data),
                    Err(f) => f,
                };
                w.waiting();
                Poll::Ready(Some(Ok(f)))
            }
            Poll::Ready(Some(Err(e))) => {
                w.waiting();
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                *this.busy = None;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_none() && self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        let mut hint = self.body.size_hint();
        if let Some(rest) = &self.rest {
            let more = rest.len() as u64;
            if let Some(upper) = hint.upper() {
                hint.set_upper(upper.saturating_add(more));
            }
            hint.set_lower(hint.lower().saturating_add(more));
        }
        hint
    }
}

/// The header fields of an HTTP/2 request as HTTP/1.1 would count them:
/// HTTP/2 lets a client split `Cookie` into one field per cookie (browsers
/// do), which is one header line.
fn h2_header_count(headers: &http::HeaderMap) -> usize {
    let all = headers.len();
    let cookies = headers.get_all(header::COOKIE).iter().count();
    all - cookies + usize::from(cookies > 0)
}

/// Most connections beyond `max_connections` told so at once, per listener.
const MAX_REFUSING: usize = 256;

/// Tells a connection beyond the limit to come back later, without serving
/// it: the answer is written at once (plain HTTP) and the socket closed.
/// Bounded to one second, so a flood of these cannot pile up.
async fn refuse(mut stream: TcpStream, tls: bool, answer: Bytes) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        if !tls {
            stream.write_all(&answer).await?;
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
    // HTTP/2 streams run under `limits.send_timeout` too (`send.rs`).
    let mut builder = auto::Builder::new(StreamExecutor::new(limits.send_timeout.0));
    builder
        .http1()
        // A door thread's deadlines: no tokio timer entry per request head.
        .timer(DoorTimer::here())
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
                let answer = state.too_many_connections.clone();
                tokio::spawn(async move {
                    refuse(stream, tls, answer).await;
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
            service_fn(move |req: Request<Incoming>| {
                let ctx = ctx.clone();
                // Boxed: hyper keeps a request's future inline in its
                // connection, and its memory stays with the connection
                // while it idles; boxed it is freed with the request
                // (benches/load/connections.py: 32.4 KB per kept-alive
                // connection before, 22.1 KB after; throughput the same).
                Box::pin(async move {
                    // Before any `.await`: the stream task offers it on
                    // its first poll only.
                    let watch = if req.version() == Version::HTTP_2 {
                        send::stream_watch()
                    } else {
                        None
                    };
                    // hyper bounds HTTP/1.1 heads by `max_headers` (431);
                    // HTTP/2 only by the header list's size: the same
                    // count here.
                    let max = ctx.state.limits.max_headers;
                    if req.version() == Version::HTTP_2
                        && req.headers().len() > max
                        && h2_header_count(req.headers()) > max
                    {
                        let mut res = Response::new(Either::Right(Full::new(Bytes::new())));
                        *res.status_mut() = StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
                        return Ok::<_, Infallible>(res.map(|b| Answer::new(b, None, watch)));
                    }
                    let busy = Busy::new(ctx);
                    let res = respond(&busy.0, req).await;
                    Ok(res.map(|b| Answer::new(b, Some(busy), watch)))
                })
            })
        };
        let builder = builder.clone();
        let stop = stop_rx.clone();
        let open = open_tx.clone();
        let idle = state.limits.idle_timeout.0;
        let send_timeout = state.limits.send_timeout.0;
        let acceptor = tls.as_ref().map(|t| TlsAcceptor::from(t.load_full()));
        tokio::spawn(async move {
            let _slot = slot;
            let _open = open;
            let result = match acceptor {
                None => {
                    let stream = SendTimed::new(stream, send_timeout);
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    drive(conn, stop, &ctx.activity, header_read_timeout, idle).await
                }
                Some(acceptor) => {
                    let stream = match tokio::time::timeout(
                        header_read_timeout,
                        acceptor.accept(SendTimed::new(stream, send_timeout)),
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
                    drive(conn, stop, &ctx.activity, header_read_timeout, idle).await
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

/// One request's answer, under the listener's request and body limits.
async fn respond<H, Fut, B>(
    ctx: &PerConnection<H>,
    req: Request<Incoming>,
) -> Response<Either<B, Full<Bytes>>>
where
    H: Fn(Request<TimedBody>, Conn) -> Fut,
    Fut: Future<Output = Response<B>>,
{
    let Some(_slot) = ctx.state.begin_request() else {
        return ctx.state.overloaded().map(Either::Right);
    };
    let version = req.version();
    let (req, cut) = ctx.state.time_body(req);
    let res = (ctx.handle)(req, ctx.conn).await;
    // A body cut while the door read it: whatever the door made of the
    // error, the client is told why, the same way on every listener (a
    // door's own 408 is kept, with the listener's headers).
    match cut {
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
    }
}

/// Runs one connection until it ends; shuts it down gracefully (open
/// requests finish, keep-alive ends, HTTP/2 gets GOAWAY) when the listener
/// stops or the connection has been idle for `idle` — or, when it has not
/// started a request `first` after it opened, then: nothing sent, an
/// HTTP/2 preface alone, half of one (hyper's head timer starts only once
/// the protocol is known, and HTTP/2 has none).
///
/// A graceful close is always followed by a hard one: a connection still
/// open `first.min(idle)` after it was told to close, with no request in
/// progress and no answer streaming, is dropped — an HTTP/2 client that
/// never answers the GOAWAY's PING (h2 waits for it without a bound), an
/// HTTP/1.1 one that never sends its head. One with an answer still
/// streaming is looked at again as long later: that answer is bounded by
/// `limits.send_timeout` on every write (and every HTTP/2 stream's wait
/// for window), not by the close.
///
/// The stop signal and the idle tick are polled only when one of them woke
/// the task, not on every wake-up of the connection (a `select!` polled all
/// three each time: ~450 instructions per request, docs/performance.md).
async fn drive<C>(
    conn: C,
    mut stop: watch::Receiver<bool>,
    activity: &Activity,
    first: Duration,
    idle: Duration,
) -> Result<(), C::Error>
where
    C: GracefulConnection,
{
    let mut conn = pin!(conn);
    let mut stopped = pin!(stop.wait_for(|s| *s));
    // The first look comes at `first`: a connection with no request begun
    // by then is closed by the idle rule below (nothing started since the
    // last look, nothing open).
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + first.min(idle), idle);
    let control = Arc::new(ControlWake {
        // Polled once at the start, which registers them.
        woken: AtomicBool::new(true),
        task: AtomicWaker::new(),
    });
    let control_waker = Waker::from(control.clone());
    let mut closing = false;
    let hard_after = first.min(idle);
    let mut hard_close: Option<Pin<Box<tokio::time::Sleep>>> = None;
    let mut seen = activity.events.load(Ordering::Relaxed);
    poll_fn(|cx| {
        // Before the flag is read: a wake-up after the read reaches this task.
        control.task.register(cx.waker());
        loop {
            if let Poll::Ready(result) = conn.as_mut().poll(cx) {
                return Poll::Ready(result);
            }
            if !control.woken.swap(false, Ordering::AcqRel) {
                return Poll::Pending;
            }
            let mut ccx = Context::from_waker(&control_waker);
            if closing {
                if let Some(sleep) = hard_close.as_mut()
                    && sleep.as_mut().poll(&mut ccx).is_ready()
                {
                    if activity.open.load(Ordering::Relaxed) == 0 {
                        return Poll::Ready(Ok(()));
                    }
                    // An answer still streaming: look again later. (Armed
                    // by the poll of the next turn.)
                    sleep
                        .as_mut()
                        .reset(tokio::time::Instant::now() + hard_after);
                    control.woken.store(true, Ordering::Release);
                    continue;
                }
                return Poll::Pending;
            }
            // Sender gone or `true`: the listener stops.
            let mut close = stopped.as_mut().poll(&mut ccx).is_ready();
            while !close && tick.poll_tick(&mut ccx).is_ready() {
                // Idle: nothing in progress, and nothing started or ended
                // since the last tick, a whole `idle` ago.
                let now = activity.events.load(Ordering::Relaxed);
                close = now == seen && activity.open.load(Ordering::Relaxed) == 0;
                seen = now;
            }
            if !close {
                return Poll::Pending;
            }
            conn.as_mut().graceful_shutdown();
            closing = true;
            hard_close = Some(Box::pin(tokio::time::sleep(hard_after)));
            // Armed by its first poll, next turn: its wake-up comes
            // through `control`.
            control.woken.store(true, Ordering::Release);
            // Polled again at once: the shutdown takes effect there.
        }
    })
    .await
}

/// Wakes a connection's task for its stop signal or idle tick, and says
/// that one of them did.
#[derive(Debug)]
struct ControlWake {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for ControlWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}
