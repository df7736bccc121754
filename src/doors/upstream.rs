//! The proxy door's way to `upstream.url`, one per door thread.
//!
//! HTTP/1.1 (the default): a pool of this thread's connections, each driven
//! by hyper's own `client::conn::http1` — no pool shared between threads,
//! no key hashing, no waiting list: a request takes the connection used
//! last, or opens one. A connection goes back when its response body has
//! ended (or, if hyper has not finished with it yet, once it has); one
//! whose response was not read to the end is closed. A request that a
//! reused connection did not take (hyper saw it closed before writing) is
//! sent on a new one. So is one the upstream closed a reused connection on
//! without answering (its keep-alive timeout firing as the request came,
//! or a restart closing idle connections) if it can safely be sent twice —
//! an idempotent method and no body — and the connection had been idle for
//! [`SENT_AGAIN_AFTER`]; once, on a new connection. Anything else failing
//! on a connection is the proxy's 502 `upstream_error`.
//! Measured against hyper-util's pooled client
//! on the bare stack: 1.09× the requests per second in one interleaved run
//! (docs/performance.md § "A per-thread upstream pool, measured").
//!
//! HTTP/2 (`upstream.http2`): hyper-util's client, whose one multiplexed
//! connection per host needs no pool of this kind.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, Uri, Version, header};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use prometheus::IntCounter;
use tower::ServiceExt;

use super::listener::TimedBody;

/// An error some layer below gave.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a request got no answer from the upstream.
#[derive(Debug)]
pub enum Failed {
    /// No connection could be made (refused, unreachable, timed out, TLS).
    Connect(BoxError),
    /// The exchange failed on a connection (the upstream's side or the
    /// client's body: see the proxy door).
    Exchange(BoxError),
}

/// How the proxy reaches its upstream, sending request bodies of type `B`.
#[derive(Debug)]
pub struct Upstream<B = TimedBody> {
    scheme: Scheme,
    authority: Authority,
    kind: Kind<B>,
}

#[derive(Debug)]
enum Kind<B> {
    Http1(Arc<Pool<B>>),
    /// Boxed: the client is large, the pool a pointer.
    Http2(Box<Client<HttpsConnector<HttpConnector>, B>>),
}

/// What a request body must be to go upstream.
pub trait SendBody:
    Body<Data = Bytes, Error: Into<BoxError>> + Send + Unpin + Sized + 'static
{
    /// An empty body of this type, to send a request that had none again;
    /// `None`: requests with bodies of this type are never sent again.
    fn empty() -> Option<Self>;
}

impl SendBody for TimedBody {
    fn empty() -> Option<Self> {
        Some(TimedBody::empty())
    }
}

impl SendBody for Incoming {
    fn empty() -> Option<Self> {
        None
    }
}

/// What [`Upstream::new`] needs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub scheme: Scheme,
    pub authority: Authority,
    /// Makes the connections (TCP with its connect timeout, then TLS for
    /// `https`).
    pub connector: HttpsConnector<HttpConnector>,
    pub idle_timeout: Duration,
    pub max_idle: usize,
    pub http2: bool,
    /// Counts the requests sent again (`hawzu_gate_upstream_resent_total`).
    pub resent: Option<IntCounter>,
}

impl<B: SendBody> Upstream<B> {
    pub fn new(s: Settings) -> Self {
        let kind = if s.http2 {
            Kind::Http2(Box::new(
                Client::builder(TokioExecutor::new())
                    .pool_timer(TokioTimer::new())
                    .timer(TokioTimer::new())
                    .pool_idle_timeout(s.idle_timeout)
                    .pool_max_idle_per_host(s.max_idle)
                    .http2_only(true)
                    .build(s.connector),
            ))
        } else {
            Kind::Http1(Arc::new(Pool {
                connector: s.connector,
                target: Uri::builder()
                    .scheme(s.scheme.clone())
                    .authority(s.authority.clone())
                    .path_and_query("/")
                    .build()
                    .unwrap_or_default(),
                idle: Mutex::new(VecDeque::new()),
                // No idle time allowed: none is kept.
                max_idle: if s.idle_timeout.is_zero() {
                    0
                } else {
                    s.max_idle
                },
                idle_timeout: s.idle_timeout,
                epoch: AtomicU64::new(0),
                sweeper: OnceLock::new(),
                origin: Instant::now(),
                last_sent: AtomicU64::new(0),
                resent: s.resent,
            }))
        };
        Self {
            scheme: s.scheme,
            authority: s.authority,
            kind,
        }
    }

    /// Sends `req` to `target` (over HTTP/1.1, `Host` set to the upstream's
    /// if the client sent none) and waits for the response head. `now`:
    /// the time it is sent (the caller's clock read; the pool reads none),
    /// for how long a kept connection has been idle.
    pub async fn send(
        &self,
        mut req: Request<B>,
        target: PathAndQuery,
        now: Instant,
    ) -> Result<Response<UpstreamBody<B>>, Failed> {
        match &self.kind {
            Kind::Http1(pool) => {
                if req.version() == Version::HTTP_2 {
                    // HTTP/2's cookie fields are one line in HTTP/1.1.
                    crate::headers::join_cookies(req.headers_mut());
                }
                if !req.headers().contains_key(header::HOST)
                    && let Ok(v) = HeaderValue::from_str(&self.host())
                {
                    req.headers_mut().insert(header::HOST, v);
                }
                // Origin form on the request line.
                *req.uri_mut() = Uri::from(target);
                *req.version_mut() = Version::HTTP_11;
                pool.send(req, now).await
            }
            Kind::Http2(client) => {
                let uri = Uri::builder()
                    .scheme(self.scheme.clone())
                    .authority(self.authority.clone())
                    .path_and_query(target)
                    .build()
                    .map_err(|e| Failed::Exchange(e.into()))?;
                *req.uri_mut() = uri;
                *req.version_mut() = Version::HTTP_2;
                match client.request(req).await {
                    Ok(res) => Ok(res.map(UpstreamBody::unpooled)),
                    Err(e) if e.is_connect() => Err(Failed::Connect(e.into())),
                    Err(e) => Err(Failed::Exchange(e.into())),
                }
            }
        }
    }
}

impl<B> Upstream<B> {
    /// The upstream's `Host`: its authority without a default port.
    fn host(&self) -> String {
        let default = if self.scheme == Scheme::HTTPS {
            443
        } else {
            80
        };
        match self.authority.port_u16() {
            Some(p) if p != default => self.authority.as_str().to_owned(),
            _ => self.authority.host().to_owned(),
        }
    }
}

/// This thread's idle HTTP/1.1 connections to the upstream.
#[derive(Debug)]
struct Pool<B> {
    connector: HttpsConnector<HttpConnector>,
    /// `scheme://authority/`: what the connector connects to.
    target: Uri,
    /// Most recently used last: taken from the back, aged out from the
    /// front.
    idle: Mutex<VecDeque<Idle<B>>>,
    max_idle: usize,
    idle_timeout: Duration,
    /// Advanced by the sweeper every `idle_timeout / SWEEPS`; an idle
    /// connection is stamped with it when it comes back, so the pool reads
    /// no clock per request.
    epoch: AtomicU64,
    /// Started with the first connection, on its thread's runtime.
    sweeper: OnceLock<()>,
    /// What [`Pool::last_sent`] counts from.
    origin: Instant,
    /// When the latest request was sent, in nanoseconds since `origin`
    /// (its sender's clock read: the pool reads none).
    last_sent: AtomicU64,
    resent: Option<IntCounter>,
}

#[derive(Debug)]
struct Idle<B> {
    sender: SendRequest<B>,
    epoch: u64,
    /// [`Pool::last_sent`] when it came back: its last request was sent no
    /// later (so its idle time is never underestimated).
    used: u64,
}

/// A kept connection idle at least this long (since its last request was
/// sent) may have been closed by the upstream before the gate saw it: a
/// request that may be sent twice keeps a copy to send again on a new
/// connection. Connections in constant use, as under load, are idle far
/// less; that the upstream closes one in that moment is a restart's rare
/// race, and the copy (~2k instructions, 5 % of a proxied request) is not
/// made.
pub const SENT_AGAIN_AFTER: Duration = Duration::from_millis(10);
#[allow(clippy::cast_possible_truncation)] // 10 ms in nanoseconds
const AGAIN_AFTER_NANOS: u64 = SENT_AGAIN_AFTER.as_nanos() as u64;

/// Sweeps per idle timeout: a connection is closed after between ⅞ of it
/// and all of it idle (later only if its thread is too busy to sweep; it
/// is then not reused either: `take` checks the age too).
const SWEEPS: u32 = 8;

impl<B: SendBody> Pool<B> {
    fn idle(&self) -> MutexGuard<'_, VecDeque<Idle<B>>> {
        // One thread's pool, never held across a panic point.
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn send(
        self: &Arc<Self>,
        mut req: Request<B>,
        now: Instant,
    ) -> Result<Response<UpstreamBody<B>>, Failed> {
        let sent = self.nanos(now);
        self.last_sent.store(sent, Ordering::Relaxed);
        // Set once the request has been sent again: then only on a new
        // connection, and never a third time.
        let mut again_sent = false;
        loop {
            let kept = if again_sent { None } else { self.take() };
            let (mut sender, reused) = match kept {
                Some((s, used)) => (s, Some(used)),
                // Boxed: rare, and inline it would be most of every
                // request's future (moved whole when the proxy starts it).
                None => (Box::pin(self.connect()).await?, None),
            };
            // A kept connection idle a while may have been closed by the
            // upstream as the request arrives: a copy to send again, if it
            // may be.
            let again = match reused {
                Some(used) if sent.saturating_sub(used) >= AGAIN_AFTER_NANOS => again(&req),
                _ => None,
            };
            let reused = reused.is_some();
            match sender.try_send_request(req).await {
                Ok(res) => {
                    let pool = Arc::clone(self);
                    return Ok(res.map(|body| UpstreamBody {
                        body,
                        back: Some((pool, sender)),
                    }));
                }
                Err(mut e) => match (e.take_message(), again) {
                    // Not sent: the connection was closed while idle. A
                    // fresh one gets it (each reused one is tried once).
                    (Some(r), _) if reused => req = r,
                    // Sent, and the connection closed unanswered.
                    (None, Some(copy)) if closed_unanswered(e.error()) => {
                        tracing::debug!(
                            error = %e.error(),
                            "upstream closed a kept connection without answering: \
                             the request goes again on a new one"
                        );
                        if let Some(c) = &self.resent {
                            c.inc();
                        }
                        req = *copy;
                        again_sent = true;
                    }
                    _ => return Err(Failed::Exchange(e.into_error().into())),
                },
            }
        }
    }

    /// `t` in nanoseconds since the pool began.
    fn nanos(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX)
    }

    /// The most recently used connection that can take a request, and
    /// [`Idle::used`].
    fn take(&self) -> Option<(SendRequest<B>, u64)> {
        let now = self.epoch.load(Ordering::Relaxed);
        let mut idle = self.idle();
        while let Some(i) = idle.pop_back() {
            if i.sender.is_ready() && now.saturating_sub(i.epoch) < u64::from(SWEEPS) {
                return Some((i.sender, i.used));
            }
        }
        None
    }

    /// Puts a connection back once hyper is ready to send on it again.
    fn give(self: &Arc<Self>, mut sender: SendRequest<B>) {
        if sender.is_ready() {
            self.keep(sender);
        } else if !sender.is_closed()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let pool = Arc::downgrade(self);
            rt.spawn(async move {
                if sender.ready().await.is_ok()
                    && let Some(pool) = pool.upgrade()
                {
                    pool.keep(sender);
                }
            });
        }
    }

    fn keep(&self, sender: SendRequest<B>) {
        let epoch = self.epoch.load(Ordering::Relaxed);
        let used = self.last_sent.load(Ordering::Relaxed);
        let mut idle = self.idle();
        if idle.len() < self.max_idle {
            idle.push_back(Idle {
                sender,
                epoch,
                used,
            });
        }
    }

    async fn connect(self: &Arc<Self>) -> Result<SendRequest<B>, Failed> {
        if self.max_idle > 0 {
            self.sweeper.get_or_init(|| {
                tokio::spawn(sweep(Arc::downgrade(self), self.idle_timeout / SWEEPS));
            });
        }
        let io = self
            .connector
            .clone()
            .oneshot(self.target.clone())
            .await
            .map_err(Failed::Connect)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| Failed::Connect(e.into()))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream connection ended");
            }
        });
        Ok(sender)
    }
}

/// A copy of `req` to send again if the connection it goes on is closed
/// without an answer: only of a request that may be sent twice — an
/// idempotent method (RFC 9110 § 9.2.2) and no body — and whose body type
/// has an empty value. (Once the request is written, hyper gives it back
/// no more. Boxed: the sending future holds it across its wait, and every
/// request's future would otherwise be larger by a request.)
fn again<B: SendBody>(req: &Request<B>) -> Option<Box<Request<B>>> {
    if !req.method().is_idempotent() || !req.body().is_end_stream() {
        return None;
    }
    let mut copy = Request::new(B::empty()?);
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    Some(Box::new(copy))
}

/// Whether an exchange failed because the connection closed before the
/// response came: an end of the stream, or a reset (the upstream closed a
/// socket the request was still arriving on).
fn closed_unanswered(e: &hyper::Error) -> bool {
    if e.is_incomplete_message() {
        return true;
    }
    let mut source = std::error::Error::source(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
            );
        }
        source = err.source();
    }
    false
}

/// Closes the connections of `pool` idle for its `idle_timeout`, until the
/// pool is gone.
async fn sweep<B: SendBody>(pool: Weak<Pool<B>>, every: Duration) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(pool) = pool.upgrade() else { return };
        let now = pool.epoch.fetch_add(1, Ordering::Relaxed) + 1;
        pool.idle()
            .retain(|i| now.saturating_sub(i.epoch) < u64::from(SWEEPS) && !i.sender.is_closed());
    }
}

/// An upstream response body; when it has been read to the end its
/// connection goes back to the pool.
#[derive(Debug)]
pub struct UpstreamBody<B: SendBody = TimedBody> {
    body: Incoming,
    /// Where the connection goes back.
    back: Option<(Arc<Pool<B>>, SendRequest<B>)>,
}

impl<B: SendBody> UpstreamBody<B> {
    fn unpooled(body: Incoming) -> Self {
        Self { body, back: None }
    }

    fn release(&mut self) {
        if let Some((pool, sender)) = self.back.take() {
            pool.give(sender);
        }
    }
}

impl<B: SendBody> Body for UpstreamBody<B> {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            // The end; trailers are the last frame (hyper's servers stop
            // there, without polling for the end).
            Poll::Ready(None) => self.release(),
            Poll::Ready(Some(Ok(frame))) if frame.is_trailers() => self.release(),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl<B: SendBody> Drop for UpstreamBody<B> {
    fn drop(&mut self) {
        // A body dropped before its end leaves the connection mid-response:
        // it is closed with its sender, never reused.
        if self.body.is_end_stream() {
            self.release();
        }
    }
}

#[cfg(test)]
#[path = "upstream_tests.rs"]
mod tests;
