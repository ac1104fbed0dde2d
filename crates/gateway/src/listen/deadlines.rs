//! Deadlines on an HTTP/1 connection's reads while no request is being handled.
//!
//! hyper's own `header_read_timeout` starts when hyper begins waiting for a request head, so
//! it cannot tell a keep-alive connection that is idle from a client that trickles its
//! headers. This wrapper can: a connection starts with `header_read` to send its first head;
//! after each answer it may stay silent for `keepalive_idle`, and once the next request's first
//! byte arrives its head must be complete within `header_read`. While a handler runs there is
//! no deadline here (the body has its own, `super::body`). A missed deadline fails the read,
//! and hyper closes the connection.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// What the connection's handlers report: requests begun and answered.
#[derive(Debug, Default)]
pub struct Activity {
    begun: AtomicU64,
    answered: AtomicU64,
    /// The connection's task, woken when an answer is ready: hyper reads again only when the
    /// socket has something, so without this the idle deadline would start at the next byte.
    reader: AtomicWaker,
}

/// A request being handled; dropping it (the answer is ready) starts the idle deadline.
pub struct Handling(Arc<Activity>);

impl Activity {
    pub fn begin(self: &Arc<Self>) -> Handling {
        self.begun.fetch_add(1, Ordering::AcqRel);
        Handling(Arc::clone(self))
    }
}

impl Drop for Handling {
    fn drop(&mut self) {
        self.0.answered.fetch_add(1, Ordering::AcqRel);
        self.0.reader.wake();
    }
}

/// Which deadline applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The request head must be complete by the deadline.
    Head,
    /// Between requests: the next one must start by the deadline.
    Idle,
    /// A handler runs: no deadline.
    Handling,
}

/// Why a read failed: the phase whose deadline passed.
#[derive(Debug, thiserror::Error)]
#[error("no complete request head in time ({0:?})")]
pub struct Missed(pub Phase);

pub struct Deadlines<I> {
    inner: I,
    activity: Arc<Activity>,
    /// `answered` when the phase was last set.
    answered: u64,
    phase: Phase,
    sleep: Pin<Box<Sleep>>,
    header_read: Duration,
    keepalive_idle: Duration,
}

impl<I> Deadlines<I> {
    pub fn new(
        inner: I,
        activity: Arc<Activity>,
        header_read: Duration,
        keepalive_idle: Duration,
    ) -> Deadlines<I> {
        Deadlines {
            inner,
            activity,
            answered: 0,
            phase: Phase::Head,
            sleep: Box::pin(tokio::time::sleep(header_read)),
            header_read,
            keepalive_idle,
        }
    }

    /// Moves to the phase the handlers' reports imply.
    fn follow(&mut self) {
        let answered = self.activity.answered.load(Ordering::Acquire);
        let begun = self.activity.begun.load(Ordering::Acquire);
        if begun > answered {
            self.phase = Phase::Handling;
        } else if answered != self.answered || self.phase == Phase::Handling {
            self.answered = answered;
            self.phase = Phase::Idle;
            self.sleep
                .as_mut()
                .reset(Instant::now() + self.keepalive_idle);
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Deadlines<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        this.follow();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if this.phase == Phase::Idle && buf.filled().len() > before {
                    this.phase = Phase::Head;
                    let deadline = Instant::now() + this.header_read;
                    this.sleep.as_mut().reset(deadline);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if this.phase == Phase::Handling => {
                this.activity.reader.register(cx.waker());
                Poll::Pending
            }
            Poll::Pending => match this.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    crate::metrics::connection_timed_out("http", phase_name(this.phase));
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        Missed(this.phase),
                    )))
                }
                Poll::Pending => Poll::Pending,
            },
            other => other,
        }
    }
}

fn phase_name(p: Phase) -> &'static str {
    match p {
        Phase::Head => "header",
        Phase::Idle => "idle",
        Phase::Handling => "handling",
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Deadlines<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
