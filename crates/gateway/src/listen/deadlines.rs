//! Deadlines on an HTTP/1 connection, kept by its I/O.
//!
//! hyper's own `header_read_timeout` starts when hyper begins waiting for a request head, so
//! it cannot tell a keep-alive connection that is idle from a client that trickles its
//! headers. This wrapper can: a connection has `header_read` from its accept to send its first
//! head (a TLS handshake included); after an answer's last byte is written it may stay silent
//! for `keepalive_idle`, and once the next request's first byte arrives its head must be
//! complete within `header_read`. While a request is handled there is no read deadline (its
//! body has its own, `super::body`), and a write that makes no progress for `keepalive_idle`
//! fails: a client that stops reading its answer does not keep the connection. A missed
//! deadline fails the read or write, and hyper closes the connection.

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
#[derive(Debug)]
pub struct Activity {
    /// The listener's name in metrics (`http`, `metrics`).
    listener: &'static str,
    begun: AtomicU64,
    answered: AtomicU64,
    /// The connection's task, woken when an answer is done: hyper reads again only when the
    /// socket has something, so without this the idle deadline would start at the next byte.
    reader: AtomicWaker,
}

/// A request being handled; dropping it (the answer is ready) starts the idle deadline.
pub struct Handling(Arc<Activity>);

impl Activity {
    /// For a connection of `listener`.
    pub fn new(listener: &'static str) -> Activity {
        Activity {
            listener,
            begun: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            reader: AtomicWaker::new(),
        }
    }

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

/// Which read deadline applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The request head must be complete by the deadline.
    Head,
    /// Between requests: the next one must start by the deadline.
    Idle,
    /// A handler runs: no read deadline.
    Handling,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Head => "header",
            Phase::Idle => "idle",
            Phase::Handling => "handling",
        }
    }
}

/// Why a read or write failed: the deadline that passed.
#[derive(Debug, thiserror::Error)]
pub enum Missed {
    #[error("no complete request head in time ({0:?})")]
    Read(Phase),
    #[error("the client read nothing of its answer for {0:?}")]
    Write(Duration),
}

pub struct Deadlines<I> {
    inner: I,
    activity: Arc<Activity>,
    /// `answered` when the phase was last set.
    answered: u64,
    phase: Phase,
    sleep: Pin<Box<Sleep>>,
    /// Armed while a write waits for the client to read.
    write_stall: Option<Pin<Box<Sleep>>>,
    header_read: Duration,
    keepalive_idle: Duration,
}

impl<I> Deadlines<I> {
    /// For a connection accepted at `accepted`.
    pub fn new(
        inner: I,
        activity: Arc<Activity>,
        accepted: Instant,
        header_read: Duration,
        keepalive_idle: Duration,
    ) -> Deadlines<I> {
        Deadlines {
            inner,
            activity,
            answered: 0,
            phase: Phase::Head,
            sleep: Box::pin(tokio::time::sleep_until(accepted + header_read)),
            write_stall: None,
            header_read,
            keepalive_idle,
        }
    }

    /// Moves to the phase the requests' reports imply.
    fn follow(&mut self, cx: &mut Context<'_>) {
        let answered = self.activity.answered.load(Ordering::Acquire);
        let begun = self.activity.begun.load(Ordering::Acquire);
        if begun > answered {
            self.phase = Phase::Handling;
        } else if answered != self.answered || self.phase == Phase::Handling {
            self.answered = answered;
            self.phase = Phase::Idle;
            self.arm(cx, self.keepalive_idle);
        }
    }

    /// Sets the read deadline `after` from now and registers the task with it at once: hyper
    /// may not read again (it has nothing to read, and its last read was pending), so the
    /// timer must be able to wake it by itself.
    fn arm(&mut self, cx: &mut Context<'_>, after: Duration) {
        self.sleep.as_mut().reset(Instant::now() + after);
        let _ = self.sleep.as_mut().poll(cx);
    }

    /// After a write or flush: progress disarms the stall deadline (and, between requests,
    /// moves the idle deadline: it counts from the answer's last byte written); waiting arms
    /// it once. `wrote` is whether bytes went out (a flush with nothing to flush is not
    /// progress, and must not move the idle deadline).
    fn stalled<T>(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<io::Result<T>>,
        wrote: bool,
    ) -> Poll<io::Result<T>> {
        if r.is_ready() {
            let was_stalled = self.write_stall.take().is_some();
            if was_stalled || wrote {
                self.follow(cx);
                if self.phase == Phase::Idle {
                    self.arm(cx, self.keepalive_idle);
                }
            }
            return r;
        }
        let limit = self.keepalive_idle;
        let stall = self
            .write_stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match stall.as_mut().poll(cx) {
            Poll::Ready(()) => {
                crate::metrics::connection_timed_out(self.activity.listener, "write");
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    Missed::Write(limit),
                )))
            }
            Poll::Pending => Poll::Pending,
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
        this.follow(cx);
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if this.phase == Phase::Idle && buf.filled().len() > before {
                    this.phase = Phase::Head;
                    let header_read = this.header_read;
                    this.arm(cx, header_read);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if this.phase == Phase::Handling => {
                this.activity.reader.register(cx.waker());
                Poll::Pending
            }
            // An answer is still being written: its own deadline applies, but the read
            // deadline stays registered for when the write is done.
            Poll::Pending if this.write_stall.is_some() => {
                let _ = this.sleep.as_mut().poll(cx);
                Poll::Pending
            }
            Poll::Pending => match this.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    crate::metrics::connection_timed_out(this.activity.listener, this.phase.name());
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        Missed::Read(this.phase),
                    )))
                }
                Poll::Pending => Poll::Pending,
            },
            other => other,
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Deadlines<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        let wrote = matches!(r, Poll::Ready(Ok(n)) if n > 0);
        self.stalled(cx, r, wrote)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.stalled(cx, r, false)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.stalled(cx, r, false)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        let wrote = matches!(r, Poll::Ready(Ok(n)) if n > 0);
        self.stalled(cx, r, wrote)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
