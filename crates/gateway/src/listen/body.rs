//! A request body that must arrive whole within a deadline from its head.
//!
//! Without it a client could send a large `Content-Length` and then a byte now and then,
//! holding a handler (and its connection slot) for as long as it likes. The timer is made
//! only when the body is not all there at the first read, so most requests never start one.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::{Instant, Sleep};

/// Why the body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error(transparent)]
    Read(hyper::Error),
    #[error("the request body did not arrive within {0:?}")]
    TooSlow(Duration),
}

pub struct TimedBody {
    inner: Incoming,
    /// The listener's name in metrics.
    listener: &'static str,
    limit: Duration,
    deadline: Instant,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl TimedBody {
    pub fn new(inner: Incoming, limit: Duration, listener: &'static str) -> TimedBody {
        TimedBody {
            inner,
            listener,
            limit,
            deadline: Instant::now() + limit,
            sleep: None,
        }
    }
}

impl Body for TimedBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(r) => Poll::Ready(r.map(|f| f.map_err(BodyError::Read))),
            Poll::Pending => {
                let deadline = this.deadline;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        crate::metrics::connection_timed_out(this.listener, "body");
                        Poll::Ready(Some(Err(BodyError::TooSlow(this.limit))))
                    }
                    Poll::Pending => Poll::Pending,
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
