//! Request bodies under the listener's body limits: a body a door reads
//! must keep coming — no wait for the client longer than
//! `limits.body_read_timeout`, and on average at least
//! `limits.min_body_rate` once `limits.body_rate_grace` of waiting has
//! passed — or it fails with [`BodyTimeout`]. Only the time spent waiting on
//! the client counts; time the reader spends elsewhere does not.
//!
//! The rate cannot be paid for in advance: what a body's bytes earn runs
//! at most `body_read_timeout` of waiting ahead of the waiting already
//! done, so a fast start followed by a trickle is cut about a read timeout
//! into the trickle. A gRPC message must also arrive whole within
//! `body_read_timeout` of waiting (`BodyLimits::whole`): Envoy sends a
//! `Check` at once, and tonic buffers it whole.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use prometheus::IntCounter;
use tokio::time::{Instant, Sleep};

use crate::config::LimitSettings;

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
    /// Most waiting for the whole body; `None`: only the rules above.
    pub whole: Option<Duration>,
}

impl BodyLimits {
    /// The limits of a listener's bodies; `whole_message` for a listener
    /// whose bodies are one message read whole (gRPC): then the whole body
    /// must come within `body_read_timeout` of waiting.
    pub fn of(limits: &LimitSettings, whole_message: bool) -> Self {
        Self {
            read_timeout: limits.body_read_timeout.0,
            min_rate: limits.min_body_rate,
            grace: limits.body_rate_grace.0,
            whole: whole_message.then_some(limits.body_read_timeout.0),
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
    /// `None`: an empty body made by the gate (a request sent again).
    inner: Option<B>,
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
    /// Of them, those already counted into `earned`.
    counted: u64,
    /// The waiting the rate rule allows for the bytes counted, at most
    /// `read_timeout` ahead of `waited` when it was counted.
    earned: Duration,
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
            let inner = Some(inner);
            return (Self { inner, watch: None }, None);
        }
        let cut = Arc::new(AtomicBool::new(false));
        let watch = BodyWatch {
            limits,
            cut: cut.clone(),
            refused: refused.clone(),
            listener,
            received: 0,
            counted: 0,
            earned: Duration::ZERO,
            waited: Duration::ZERO,
            waiting_since: None,
            wait_limit: Duration::ZERO,
            timer: None,
        };
        (
            Self {
                inner: Some(inner),
                watch: Some(watch),
            },
            Some(cut),
        )
    }
}

impl TimedBody {
    /// An empty body, already ended.
    pub fn empty() -> Self {
        Self {
            inner: None,
            watch: None,
        }
    }
}

impl BodyWatch {
    /// How long the next wait may last: the read timeout, or until the
    /// average rate would fall below the least, or the whole body's
    /// waiting run out. Called once per wait, at its start.
    fn wait_limit(&mut self) -> Duration {
        let mut wait = self.limits.read_timeout;
        if self.limits.min_rate > 0 {
            let fresh = self.received - self.counted;
            self.counted = self.received;
            #[allow(clippy::cast_precision_loss)] // a deadline, not a count
            let earned = Duration::try_from_secs_f64(fresh as f64 / self.limits.min_rate as f64)
                .unwrap_or(Duration::MAX);
            // Capped: a burst cannot pay for a trickle after it (without
            // the cap, 4 MB at once earned an hour of 1 byte every 5 s).
            let ahead = self.waited.saturating_add(self.limits.read_timeout);
            self.earned = self.earned.saturating_add(earned).min(ahead);
            let allowed = self.limits.grace.max(self.earned);
            wait = wait.min(allowed.saturating_sub(self.waited));
        }
        if let Some(whole) = self.limits.whole {
            wait = wait.min(whole.saturating_sub(self.waited));
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
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let Some(w) = this.watch.as_mut() else {
            return Pin::new(inner)
                .poll_frame(cx)
                .map(without_trailers)
                .map_err(Into::into);
        };
        if w.cut.load(Ordering::Relaxed) {
            return Poll::Ready(Some(Err(BodyTimeout.into())));
        }
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                if let Some(since) = w.waiting_since.take() {
                    w.waited += since.elapsed();
                }
                if let Some(Ok(data)) = frame.as_ref().map(|f| f.as_ref().map(Frame::data_ref)) {
                    w.received += data.map_or(0, |d| d.len() as u64);
                }
                Poll::Ready(without_trailers(frame).map(|f| f.map_err(Into::into)))
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
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

/// The client's trailers end the body instead of being passed on: they
/// are headers no door judged (an `X-Hawzu-*` among them would reach the
/// API past the identity headers' stripping), and no door reads them. An
/// HTTP/1.1 upstream never got them anyway (`Trailer` is stripped, and
/// hyper sends only declared ones); an HTTP/2 one would have.
fn without_trailers<E>(frame: Option<Result<Frame<Bytes>, E>>) -> Option<Result<Frame<Bytes>, E>> {
    match frame {
        Some(Ok(f)) if f.is_trailers() => None,
        other => other,
    }
}

#[cfg(test)]
#[path = "body_tests.rs"]
mod tests;
