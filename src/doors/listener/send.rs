//! A client that stops reading ends its connection: a write to it that
//! waits longer than `limits.send_timeout` (nginx's `send_timeout`: the
//! time between two writes that move, not for the whole answer) fails the
//! connection, so a client that asks for a large answer and never reads it
//! holds neither its connection nor the upstream's past that.
//!
//! The clock runs only while a write waits; a write that goes through
//! clears it. On a door thread the wait is an entry in the thread's
//! deadline list (`doors::deadline`), not a timer per write.

use std::future::Future;
use std::io;
use std::pin::Pin;
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
