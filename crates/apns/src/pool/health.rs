//! What a connection's driver and the senders on it tell each other about its liveness.

use tokio::sync::Notify;

/// What a connection's driver and the senders on it tell each other: a sender whose stream
/// timed out asks for a PING (h2 has one `PingPong` per connection, held by the driver), and
/// the driver says what came of it.
#[derive(Debug, Default)]
pub(super) struct Health {
    pub(super) check: Notify,
    pub(super) state: tokio::sync::watch::Sender<Liveness>,
}

#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Liveness {
    /// PONGs received.
    pub(super) pongs: u64,
    /// A PING went unanswered: the connection was closed as silent.
    pub(super) silent: bool,
    /// The driver has ended.
    pub(super) ended: bool,
}

/// What a sender learns from the driver after its stream timed out.
pub(super) enum Verdict {
    Alive,
    Silent,
    Ended,
}

impl Health {
    /// Asks the driver to PING, and waits for the outcome: a PONG after the ask, a PING that
    /// went unanswered, or the end of the connection.
    pub(super) async fn verdict(&self) -> Verdict {
        let mut rx = self.state.subscribe();
        let seen = rx.borrow_and_update().pongs;
        self.check.notify_one();
        loop {
            let l = *rx.borrow_and_update();
            if l.silent {
                return Verdict::Silent;
            }
            if l.ended {
                return Verdict::Ended;
            }
            if l.pongs > seen {
                return Verdict::Alive;
            }
            // The sender lives in `self`, so this only ever waits for a change.
            let _ = rx.changed().await;
        }
    }

    pub(super) fn is_silent(&self) -> bool {
        self.state.borrow().silent
    }
}
