//! Stream slots: a sender leases one on a connection with room (opening a connection when
//! every open one is full, one connect at a time, backing off after failures), gives it back
//! when its stream ends, and the pool judges each connection by whether it was answered.

use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};

use bytes::Bytes;
use h2::client::SendRequest;
use tokio::time::Instant;
use tracing::{info, warn};

use super::*;

/// A stream slot on one connection; giving it back wakes one waiter.
pub(super) struct Lease<'a> {
    pub(super) shared: &'a Shared,
    pub(super) conn: u64,
    pub(super) send: SendRequest<Bytes>,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        self.shared.release(self.conn);
    }
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("pool lock is never poisoned")
    }

    pub(super) fn token_auth(&self) -> bool {
        matches!(self.config.auth, Auth::Token(_))
    }

    /// Waits for a stream slot, opening a connection when every open one is full.
    pub(super) async fn acquire(self: &Arc<Shared>) -> Result<Lease<'_>, Outcome> {
        let token_auth = self.token_auth();
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let connect = {
                let mut st = self.lock();
                if st.closed {
                    return Err(Outcome::Unreachable);
                }
                if let Some(lease) = self.take_slot(&mut st, token_auth) {
                    return Ok(lease);
                }
                let may_connect = st.retry_connect_at.is_none_or(|t| Instant::now() >= t);
                if !st.connecting && st.conns.len() < self.config.max_connections && may_connect {
                    st.connecting = true;
                    true
                } else if st.conns.is_empty() && !st.connecting && !may_connect {
                    return Err(if st.rejected_in_a_row >= REJECTED_LIMIT {
                        Outcome::ConnectionRejected
                    } else {
                        Outcome::Unreachable
                    });
                } else {
                    false
                }
            };
            if connect {
                self.spawn_connect();
            }
            notified.await;
        }
    }

    /// The open connection with the fewest streams in flight, if one is below its limit.
    pub(super) fn take_slot(&self, st: &mut State, token_auth: bool) -> Option<Lease<'_>> {
        let mut best: Option<usize> = None;
        for (i, c) in st.conns.iter().enumerate() {
            if c.send.is_some()
                && c.in_flight < c.limit(token_auth)
                && best.is_none_or(|b| c.in_flight < st.conns[b].in_flight)
            {
                best = Some(i);
            }
        }
        let c = &mut st.conns[best?];
        c.in_flight += 1;
        c.last_used = Instant::now();
        let (conn, in_flight) = (c.id, c.in_flight);
        let send = c.send.clone().expect("chosen slots are open");
        st.peak_streams = st.peak_streams.max(in_flight);
        Some(Lease {
            shared: self,
            conn,
            send,
        })
    }

    pub(super) fn release(&self, conn: u64) {
        let mut st = self.lock();
        let mut gone = false;
        if let Some(i) = st.conns.iter().position(|c| c.id == conn) {
            let c = &mut st.conns[i];
            c.in_flight -= 1;
            c.last_used = Instant::now();
            if c.ended && c.in_flight == 0 {
                self.remove(&mut st, i);
                gone = true;
            }
        }
        drop(st);
        if gone {
            self.changed.notify_waiters();
        } else {
            self.changed.notify_one();
        }
    }

    /// No new streams on `conn`.
    pub(super) fn drain(&self, conn: u64, why: &str) {
        let mut st = self.lock();
        if let Some(c) = st.conns.iter_mut().find(|c| c.id == conn)
            && c.send.take().is_some()
        {
            info!(conn, endpoint = %self.config.endpoint, why, "connection draining");
        }
    }

    /// Records an answer on `conn`; the first one proves the server takes our credentials.
    pub(super) fn answered(&self, conn: u64, ok: bool) {
        let mut st = self.lock();
        let mut raised = false;
        if let Some(c) = st.conns.iter_mut().find(|c| c.id == conn) {
            c.answered = true;
            if ok && !c.authorized {
                c.authorized = true;
                raised = true;
            }
        }
        if st.rejected_in_a_row > 0 || st.retry_connect_at.is_some() {
            st.rejected_in_a_row = 0;
            st.retry_connect_at = None;
            st.backoff = self.config.min_backoff;
        }
        drop(st);
        if raised {
            self.changed.notify_waiters();
        }
    }

    pub(super) fn back_off(&self, st: &mut State) {
        st.retry_connect_at = Some(Instant::now() + st.backoff);
        st.backoff = (st.backoff * 2).min(self.config.max_backoff);
    }

    pub(super) fn spawn_connect(self: &Arc<Shared>) {
        let shared = Arc::clone(self);
        tokio::spawn(async move {
            let initial = if shared.token_auth() { 1 } else { 100 };
            let result = connect(
                &shared.config.endpoint,
                &shared.tls,
                shared.config.connect_timeout,
                initial,
            )
            .await;
            match result {
                Ok((send, conn)) => {
                    let id = super::NEXT_CONN.fetch_add(1, Ordering::Relaxed);
                    let health = Arc::new(Health::default());
                    let now = Instant::now();
                    let closed = {
                        let mut st = shared.lock();
                        st.connecting = false;
                        st.opened += 1;
                        if !st.closed {
                            st.conns.push(Slot {
                                id,
                                send: Some(send),
                                in_flight: 0,
                                authorized: false,
                                answered: false,
                                last_used: now,
                                last_ping: now,
                                closed_by_us: false,
                                ended: false,
                                health: Arc::clone(&health),
                            });
                        }
                        st.closed
                    };
                    // Info: connections are few and long-lived, and attempts name them by this number.
                    info!(conn = id, endpoint = %shared.config.endpoint, "connection open");
                    shared.changed.notify_waiters();
                    if !closed {
                        drive(shared, id, conn, health).await;
                    }
                }
                Err(e) => {
                    let retry_in = {
                        let mut st = shared.lock();
                        st.connecting = false;
                        shared.back_off(&mut st);
                        st.backoff / 2
                    };
                    warn!(error = %ErrorChain(&e), ?retry_in, "cannot connect to APNs");
                    shared.changed.notify_waiters();
                }
            }
        });
    }

    /// Removes slot `i`. A connection the server closed before answering anything counts
    /// towards [`REJECTED_LIMIT`] and backs off the next connect; one we closed does not.
    pub(super) fn remove(&self, st: &mut State, i: usize) {
        let c = st.conns.swap_remove(i);
        if !c.answered && !c.closed_by_us {
            st.rejected_in_a_row += 1;
            self.back_off(st);
            warn!(
                conn = c.id,
                in_a_row = st.rejected_in_a_row,
                "connection closed before any answer"
            );
        }
    }
}
