//! A client that stops reading ends its connection: a write to it that
//! waits longer than `limits.send_timeout` (nginx's `send_timeout`: the
//! time between two writes that move, not for the whole answer) fails the
//! connection, so a client that asks for a large answer and never reads it
//! holds neither its connection nor the upstream's past that.
//!
//! Must never time the upstream: only waits for the client count.
//!
//! The clock runs only while a write waits; a write that goes through
//! clears it. On a door thread the wait is an entry in the thread's
//! deadline list (`doors::deadline`), not a timer per write.
//!
//! HTTP/2 has a second way to stop reading: grant a stream no window. The
//! gate then writes nothing for it — no write waits, the socket's clock
//! never starts — while the stream holds its answer, and a proxied
//! answer its upstream connection. So each HTTP/2 stream's task runs
//! under [`StreamExecutor`]: once its answer's next frame has waited
//! `limits.send_timeout` to be taken, the task is dropped, which resets
//! the stream (RST_STREAM) and drops the answer (an upstream connection
//! mid-answer is closed). HTTP/1.1 requests never meet it.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::doors::deadline::Sleep;

pin_project_lite::pin_project! {
    /// `io` with a bound on how long one write may wait.
    #[derive(Debug)]
    pub struct SendTimed<IO> {
        #[pin]
        io: IO,
        limit: Duration,
        // Set while a write waits: when it gives up.
        waiting: Option<Sleep>,
    }
}

impl<IO> SendTimed<IO> {
    pub fn new(io: IO, limit: Duration) -> Self {
        Self {
            io,
            limit,
            waiting: None,
        }
    }
}

impl<IO: AsyncWrite> SendTimed<IO> {
    /// One write (`op`): through, it clears the clock; waiting, it starts
    /// or reads the clock, and fails once `limit` has passed since the
    /// wait began.
    fn timed<T>(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        op: impl FnOnce(Pin<&mut IO>, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        let this = self.project();
        if let done @ Poll::Ready(_) = op(this.io, cx) {
            *this.waiting = None;
            return done;
        }
        let limit = *this.limit;
        let sleep = this.waiting.get_or_insert_with(|| {
            let now = Instant::now();
            Sleep::until(now.checked_add(limit).unwrap_or(now))
        });
        match Pin::new(sleep).poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client read nothing for limits.send_timeout",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<IO: AsyncWrite> AsyncWrite for SendTimed<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.timed(cx, |io, cx| io.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.timed(cx, |io, cx| io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.timed(cx, |io, cx| io.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}

impl<IO: AsyncRead> AsyncRead for SendTimed<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.project().io.poll_read(cx, buf)
    }
}

// === HTTP/2: a stream's window ===

/// When an HTTP/2 stream's answer began to wait for the client to take
/// its next frame: shared by the stream's task ([`Watched`]) and its
/// answer's body, which marks the waits.
#[derive(Debug)]
pub struct StreamWatch {
    origin: Instant,
    /// Nanoseconds from `origin` to the wait's start, plus one; 0: no
    /// frame waits (the body is being asked for its next, or is done).
    since: AtomicU64,
}

impl StreamWatch {
    fn new() -> Self {
        Self {
            origin: Instant::now(),
            since: AtomicU64::new(0),
        }
    }

    /// A frame (or the answer's head) is out, and the body waits to be
    /// asked for the next.
    pub fn waiting(&self) {
        let at = u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX - 1);
        self.since.store(at + 1, Ordering::Relaxed);
    }

    /// The body is asked for its next frame: the last one was taken.
    pub fn taken(&self) {
        self.since.store(0, Ordering::Relaxed);
    }

    fn waiting_since(&self) -> Option<Instant> {
        match self.since.load(Ordering::Relaxed) {
            0 => None,
            n => Some(self.origin + Duration::from_nanos(n - 1)),
        }
    }
}

thread_local! {
    /// The watch of the HTTP/2 stream whose task is polled for the first
    /// time, for its service to take (`stream_watch`).
    static OFFERED: RefCell<Option<Arc<StreamWatch>>> = const { RefCell::new(None) };
}

/// The watch of the HTTP/2 stream a request came on: for the service to
/// call before its first `.await` (hyper polls the service first, in the
/// stream task's first poll). `None` outside an HTTP/2 stream's task.
pub fn stream_watch() -> Option<Arc<StreamWatch>> {
    OFFERED.with(|o| o.borrow_mut().take())
}

/// Runs a listener's HTTP/2 streams (hyper spawns one task per stream,
/// through its executor; HTTP/1.1 connections use none), each under
/// `limit` ([`Watched`]).
#[derive(Debug, Clone, Copy)]
pub struct StreamExecutor {
    limit: Duration,
}

impl StreamExecutor {
    pub fn new(limit: Duration) -> Self {
        Self { limit }
    }
}

impl<F> hyper::rt::Executor<F> for StreamExecutor
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, fut: F) {
        tokio::spawn(Watched {
            fut,
            watch: Arc::new(StreamWatch::new()),
            limit: self.limit,
            offered: false,
            sleep: None,
        });
    }
}

pin_project_lite::pin_project! {
    /// An HTTP/2 stream's task, ended once its answer's next frame has
    /// waited `limit` to be taken. The clock runs only while a frame waits:
    /// an upstream slow to send the next costs nothing. One deadline per
    /// wait at most, made when the wait is first seen (not per frame): a
    /// deadline that comes for an older wait is set again for the current.
    struct Watched<F> {
        #[pin]
        fut: F,
        watch: Arc<StreamWatch>,
        limit: Duration,
        // Whether the watch has been offered to the stream's service.
        offered: bool,
        sleep: Option<Sleep>,
    }
}

impl<F: Future<Output = ()>> Future for Watched<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        let polled = if *this.offered {
            this.fut.poll(cx)
        } else {
            *this.offered = true;
            let before = OFFERED.with(|o| o.replace(Some(this.watch.clone())));
            let polled = this.fut.poll(cx);
            // Taken or not, it is offered only once.
            OFFERED.with(|o| *o.borrow_mut() = before);
            polled
        };
        if polled.is_ready() {
            return Poll::Ready(());
        }
        loop {
            // Not waiting: a deadline already made fires early and goes.
            let Some(since) = this.watch.waiting_since() else {
                return Poll::Pending;
            };
            let due = since.checked_add(*this.limit).unwrap_or(since);
            let sleep = this.sleep.get_or_insert_with(|| Sleep::until(due));
            if Pin::new(sleep).poll(cx).is_pending() {
                return Poll::Pending;
            }
            *this.sleep = None;
            if Instant::now() >= due {
                // Dropping the task resets the stream and drops its answer.
                tracing::debug!(
                    "an HTTP/2 answer's next frame not taken for limits.send_timeout: stream reset"
                );
                return Poll::Ready(());
            }
        }
    }
}
