//! A per-app pool of long-lived HTTP/2 connections to APNs (docs/client.md; "connections are
//! precious" in docs/architecture.md).
//!
//! - At most `max_connections`, opened on demand one at a time: a new one only when every open
//!   one is at its stream limit. A failed or refused connect backs off (1 s doubling to 60 s).
//! - Each connection carries at most the server's current `MAX_CONCURRENT_STREAMS`; with token
//!   auth, one stream until its first 200 (Apple's rule).
//! - [`Pool::send`] waits for a stream slot: that wait is the back-pressure. There is no queue
//!   of our own and no task per notification; the caller's task drives its own request.
//! - Streams APNs never processed (REFUSED_STREAM, above a GOAWAY's last-stream-id whatever
//!   its error code, or closed before their body was sent) are re-sent on another connection
//!   without using an attempt, and never reported lost. A GOAWAY stops new streams on that
//!   connection; those in flight finish there.
//! - Idle connections are PING'd and closed after `idle_timeout`.
//! - A stream without an answer in `response_timeout` has its connection PING'd. A connection
//!   that does not answer the PING within `ping_timeout` is silent — black-holed by a network
//!   that still acknowledges its packets, so TCP never notices — and is closed; its streams are
//!   re-sent on another connection without using an attempt (a notification whose streams die
//!   this way three times gets [`Outcome::ConnectionLost`], so one that kills every connection
//!   still ends). A PONG means APNs is merely slow: the stream ends as [`Outcome::Timeout`].
//!
//! Per connection there is one task that drives the h2 connection and does the housekeeping.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use rustls_pki_types::CertificateDer;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tracing::{debug, info, warn};

use crate::ErrorChain;
use crate::auth::{Auth, ProviderToken};
use crate::connection::{H2Connection, connect, tls_config};
use crate::endpoint::Endpoint;
use crate::notification::Notification;
use crate::outcome::Outcome;
use crate::reason::Reason;
use crate::request::{build_request, parse_response};

/// Connections closed before answering anything, in a row, before the pool reports
/// [`Outcome::ConnectionRejected`] (docs/client.md).
pub const REJECTED_LIMIT: u32 = 3;
/// How often one notification is re-sent after streams APNs never processed, before giving up
/// with [`Outcome::ConnectionLost`].
const MAX_RESENDS: u32 = 16;
/// The longest error body we keep (Apple's are tens of bytes).
const MAX_ERROR_BODY: usize = 4096;
/// How many silent connections one notification's streams are re-sent after, before the pool
/// reports [`Outcome::ConnectionLost`] (which uses an attempt).
const MAX_SILENT: u32 = 3;

/// How a pool behaves. [`PoolConfig::new`] gives the defaults of docs/client.md.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub endpoint: Endpoint,
    pub auth: Auth,
    /// Trusted in addition to Mozilla's roots (a simulator's CA).
    pub extra_roots: Vec<CertificateDer<'static>>,
    pub max_connections: usize,
    /// How long to wait for an answer before cancelling the stream.
    pub response_timeout: Duration,
    /// Close a connection that carried nothing for this long.
    pub idle_timeout: Duration,
    /// PING a connection that carried nothing for this long.
    pub ping_interval: Duration,
    /// A PING unanswered for this long means the connection is dead (silent): after an idle
    /// PING, or after a stream waited `response_timeout` for its answer.
    pub ping_timeout: Duration,
    pub connect_timeout: Duration,
    /// First reconnect delay; doubles up to `max_backoff`.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

impl PoolConfig {
    pub fn new(endpoint: Endpoint, auth: Auth) -> PoolConfig {
        PoolConfig {
            endpoint,
            auth,
            extra_roots: Vec::new(),
            max_connections: 4,
            response_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            ping_interval: Duration::from_secs(60),
            ping_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
        }
    }
}

/// A snapshot of a pool's connections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Open connections, including those draining after a GOAWAY.
    pub connections: usize,
    pub streams_in_flight: usize,
    /// The most streams ever in flight on one connection.
    pub peak_streams_per_connection: usize,
    /// Connections opened since the pool was made.
    pub connections_opened: u64,
    /// Connections closed before any answer, in a row.
    pub rejected_in_a_row: u32,
}

/// A pool of connections to one endpoint with one credential. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Pool {
    shared: Arc<Shared>,
}

struct Shared {
    config: PoolConfig,
    tls: TlsConnector,
    /// Connection slots and connect state. A std mutex: held for a scan of at most
    /// `max_connections` entries, never across an await.
    state: Mutex<State>,
    /// Wakes `acquire` waiters: one when a stream slot frees, all when a connection opens,
    /// closes, fails to open or raises its limit.
    changed: Notify,
    next_id: AtomicU64,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("endpoint", &self.config.endpoint)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct State {
    conns: Vec<Slot>,
    /// A connect is under way (one at a time: no connect storms).
    connecting: bool,
    /// No new connect before this (backoff after a failure or a refused connection).
    retry_connect_at: Option<Instant>,
    backoff: Duration,
    rejected_in_a_row: u32,
    closed: bool,
    peak_streams: usize,
    opened: u64,
}

#[derive(Debug)]
struct Slot {
    id: u64,
    /// `None` once draining (GOAWAY, idle close, pool closed): no new streams here. Dropping
    /// the pool's handle lets h2 close the connection when its last stream ends.
    send: Option<SendRequest<Bytes>>,
    in_flight: usize,
    /// A 200 arrived: with token auth, the connection may use more than one stream.
    authorized: bool,
    /// Any answer arrived: the server accepted our credentials at the TLS level.
    answered: bool,
    last_used: Instant,
    last_ping: Instant,
    /// We closed it (idle, or the pool closed): its end is no verdict on our credentials.
    closed_by_us: bool,
    /// Its driver has ended, but senders still hold streams of it: it is judged and removed
    /// when the last one is released, once each has recorded whether it was answered (the
    /// answers of a connection that closes right after them are read by the senders'
    /// tasks, which may run after the driver's).
    ended: bool,
    /// Between its driver and the senders whose streams wait on it.
    health: Arc<Health>,
}

/// What a connection's driver and the senders on it tell each other: a sender whose stream
/// timed out asks for a PING (h2 has one `PingPong` per connection, held by the driver), and
/// the driver says what came of it.
#[derive(Debug, Default)]
struct Health {
    check: Notify,
    state: tokio::sync::watch::Sender<Liveness>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Liveness {
    /// PONGs received.
    pongs: u64,
    /// A PING went unanswered: the connection was closed as silent.
    silent: bool,
    /// The driver has ended.
    ended: bool,
}

/// What a sender learns from the driver after its stream timed out.
enum Verdict {
    Alive,
    Silent,
    Ended,
}

impl Health {
    /// Asks the driver to PING, and waits for the outcome: a PONG after the ask, a PING that
    /// went unanswered, or the end of the connection.
    async fn verdict(&self) -> Verdict {
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

    fn is_silent(&self) -> bool {
        self.state.borrow().silent
    }
}

impl Slot {
    fn limit(&self, token_auth: bool) -> usize {
        let peer = self
            .send
            .as_ref()
            .map_or(0, SendRequest::current_max_send_streams);
        if token_auth && !self.authorized {
            peer.min(1)
        } else {
            peer
        }
    }
}

/// A stream slot on one connection; giving it back wakes one waiter.
struct Lease<'a> {
    shared: &'a Shared,
    conn: u64,
    send: SendRequest<Bytes>,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        self.shared.release(self.conn);
    }
}

/// The result of one exchange on one stream.
enum Step {
    Answer(Outcome),
    /// APNs never processed the stream; send it again.
    Refused,
    /// Its connection went silent and was closed: send it again elsewhere.
    Silent,
}

enum Housekeeping {
    Nothing,
    Ping,
    Close,
    Gone,
}

impl Pool {
    /// Makes a pool; no connection is opened until the first send.
    pub fn new(config: PoolConfig) -> Pool {
        let tls = TlsConnector::from(Arc::new(tls_config(&config.auth, &config.extra_roots)));
        let backoff = config.min_backoff;
        Pool {
            shared: Arc::new(Shared {
                config,
                tls,
                state: Mutex::new(State {
                    conns: Vec::new(),
                    connecting: false,
                    retry_connect_at: None,
                    backoff,
                    rejected_in_a_row: 0,
                    closed: false,
                    peak_streams: 0,
                    opened: 0,
                }),
                changed: Notify::new(),
                next_id: AtomicU64::new(1),
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &PoolConfig {
        &self.shared.config
    }

    /// Sends one notification and reports what became of it. Waits for a stream slot first.
    /// Streams APNs did not process are re-sent here; an `ExpiredProviderToken` answer renews
    /// the token (when allowed) and re-sends once; `UnrelatedKeyIdInToken` re-sends once on a
    /// new connection.
    pub async fn send(&self, n: &Notification) -> Outcome {
        self.send_by(n, None).await
    }

    /// As [`Pool::send`], but no stream is opened for `n` after `deadline` — neither the first
    /// nor a re-send — so a notification that waited for a slot past its expiry is never sent
    /// late: [`Outcome::NotSentInTime`]. A request already sent is always waited for.
    pub async fn send_by(&self, n: &Notification, deadline: Option<Instant>) -> Outcome {
        self.send_until(n, deadline, std::future::pending()).await
    }

    /// As [`Pool::send_by`], and withdrawn once `withdraw` completes: no stream is opened for
    /// `n` after that — [`Outcome::Withdrawn`]. A caller whose notifications became pointless
    /// to send (its credential was just refused) gets back those still waiting for a slot
    /// instead of having each of them refused by APNs in turn.
    pub async fn send_until(
        &self,
        n: &Notification,
        deadline: Option<Instant>,
        withdraw: impl Future<Output = ()>,
    ) -> Outcome {
        let shared = &self.shared;
        let mut withdraw = std::pin::pin!(withdraw);
        let (mut resends, mut renewed, mut reconnected) = (0, false, false);
        let mut silent = 0;
        loop {
            let expiry = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            // The future ends the send as soon as it completes, so it is never polled again.
            let acquired = tokio::select! {
                biased;
                () = &mut withdraw => return Outcome::Withdrawn,
                lease = shared.acquire() => lease,
                () = expiry => return Outcome::NotSentInTime,
            };
            let mut lease = match acquired {
                Ok(lease) => lease,
                Err(outcome) => return outcome,
            };
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Outcome::NotSentInTime;
            }
            let token = match &shared.config.auth {
                Auth::Token(signer) => match signer.token() {
                    Ok(t) => Some(t),
                    Err(e) => {
                        warn!(error = %e, "cannot sign a provider token");
                        return Outcome::ConnectionRejected;
                    }
                },
                Auth::Certificate(_) => None,
            };
            let step = shared
                .exchange(&mut lease, n, token.as_deref(), deadline, withdraw.as_mut())
                .await;
            let conn = lease.conn;
            drop(lease);
            let outcome = match step {
                Step::Refused if resends < MAX_RESENDS => {
                    resends += 1;
                    continue;
                }
                Step::Refused => return Outcome::ConnectionLost { reason: None },
                Step::Silent if silent + 1 < MAX_SILENT => {
                    silent += 1;
                    continue;
                }
                Step::Silent => return Outcome::ConnectionLost { reason: None },
                Step::Answer(o) => o,
            };
            match outcome.reason() {
                Some(Reason::ExpiredProviderToken) if !renewed => {
                    renewed = true;
                    if let (Auth::Token(signer), Some(t)) = (&shared.config.auth, &token)
                        && let Err(e) = signer.renew_rejected(t)
                    {
                        warn!(error = %e, "cannot renew the provider token");
                    }
                    continue;
                }
                Some(Reason::UnrelatedKeyIdInToken) if !reconnected => {
                    reconnected = true;
                    shared.drain(conn, "UnrelatedKeyIdInToken");
                    continue;
                }
                Some(
                    r @ (Reason::Shutdown
                    | Reason::IdleTimeout
                    | Reason::TooManyProviderTokenUpdates
                    | Reason::UnrelatedKeyIdInToken),
                ) => shared.drain(conn, r.as_str()),
                _ => {}
            }
            return outcome;
        }
    }

    /// Counters for metrics, tests and the dashboard.
    pub fn stats(&self) -> PoolStats {
        let st = self.shared.lock();
        PoolStats {
            connections: st.conns.iter().filter(|c| !c.ended).count(),
            streams_in_flight: st.conns.iter().map(|c| c.in_flight).sum(),
            peak_streams_per_connection: st.peak_streams,
            connections_opened: st.opened,
            rejected_in_a_row: st.rejected_in_a_row,
        }
    }

    /// How long until the pool tries to connect again after connects that failed or were
    /// refused (1 s doubling to `max_backoff`); `None` when it may connect now. A caller
    /// retrying [`Outcome::Unreachable`] sends waits at least this long.
    pub fn reconnect_in(&self) -> Option<Duration> {
        let st = self.shared.lock();
        st.retry_connect_at
            .and_then(|t| t.checked_duration_since(Instant::now()))
    }

    /// Whether [`Pool::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.shared.lock().closed
    }

    /// Stops opening streams; connections close once their streams finish. Sends waiting for
    /// a slot, and later ones, get [`Outcome::Unreachable`].
    pub fn close(&self) {
        let mut st = self.shared.lock();
        st.closed = true;
        for c in &mut st.conns {
            c.send = None;
            c.closed_by_us = true;
        }
        drop(st);
        self.shared.changed.notify_waiters();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("pool lock is never poisoned")
    }

    fn token_auth(&self) -> bool {
        matches!(self.config.auth, Auth::Token(_))
    }

    /// Waits for a stream slot, opening a connection when every open one is full.
    async fn acquire(self: &Arc<Shared>) -> Result<Lease<'_>, Outcome> {
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
    fn take_slot(&self, st: &mut State, token_auth: bool) -> Option<Lease<'_>> {
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

    fn release(&self, conn: u64) {
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
    fn drain(&self, conn: u64, why: &str) {
        let mut st = self.lock();
        if let Some(c) = st.conns.iter_mut().find(|c| c.id == conn)
            && c.send.take().is_some()
        {
            info!(conn, endpoint = %self.config.endpoint, why, "connection draining");
        }
    }

    /// Records an answer on `conn`; the first one proves the server takes our credentials.
    fn answered(&self, conn: u64, ok: bool) {
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

    fn back_off(&self, st: &mut State) {
        st.retry_connect_at = Some(Instant::now() + st.backoff);
        st.backoff = (st.backoff * 2).min(self.config.max_backoff);
    }

    fn spawn_connect(self: &Arc<Shared>) {
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
                    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
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
                    debug!(conn = id, endpoint = %shared.config.endpoint, "connection open");
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

    async fn exchange(
        &self,
        lease: &mut Lease<'_>,
        n: &Notification,
        token: Option<&ProviderToken>,
        deadline: Option<Instant>,
        withdraw: std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> Step {
        let conn = lease.conn;
        let req = build_request(
            n,
            self.config.endpoint.authority(),
            token.map(ProviderToken::header),
        );
        let ready = tokio::select! {
            biased;
            () = withdraw => return Step::Answer(Outcome::Withdrawn),
            ready = std::future::poll_fn(|cx| lease.send.poll_ready(cx)) => ready,
        };
        if let Err(e) = ready {
            debug!(conn, error = %e, "connection no longer takes streams");
            self.drain(conn, "not ready");
            return Step::Refused;
        }
        // h2 may have waited for the server's stream limit to allow one more.
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Step::Answer(Outcome::NotSentInTime);
        }
        let (response, mut body) = match lease.send.send_request(req, false) {
            Ok(pair) => pair,
            Err(e) => {
                debug!(conn, error = %e, "stream not opened");
                self.drain(conn, "send_request failed");
                return Step::Refused;
            }
        };
        if let Err(e) = body.send_data(n.payload.clone(), true) {
            // The stream closed before its body could be queued: a GOAWAY that arrived
            // between the HEADERS and this call (h2 closes streams above its last-stream-id
            // and answers `InactiveStreamId` here), or a reset. Either way APNs never had the
            // whole request, so it cannot have delivered it: send it again.
            debug!(conn, error = %e, "stream closed before its body was sent");
            return Step::Refused;
        }
        let answer = async {
            let response = response.await?;
            let (head, mut recv) = response.into_parts();
            let mut buf = Vec::new();
            if !recv.is_end_stream() {
                while let Some(chunk) = recv.data().await {
                    let chunk = chunk?;
                    let _ = recv.flow_control().release_capacity(chunk.len());
                    if buf.len() + chunk.len() <= MAX_ERROR_BODY {
                        buf.extend_from_slice(&chunk);
                    }
                }
            }
            Ok::<_, h2::Error>((head, buf))
        };
        let mut answer = std::pin::pin!(answer);
        let answered = match tokio::time::timeout(self.config.response_timeout, &mut answer).await {
            Ok(answered) => answered,
            Err(_) => {
                // No answer in time: slow, or a connection gone silent? Its driver PINGs it;
                // the answer may still come meanwhile.
                let Some(health) = self.health_of(conn) else {
                    body.send_reset(h2::Reason::CANCEL);
                    return Step::Answer(Outcome::Timeout);
                };
                tokio::select! {
                    biased;
                    answered = &mut answer => answered,
                    verdict = health.verdict() => {
                        body.send_reset(h2::Reason::CANCEL);
                        return match verdict {
                            Verdict::Alive => Step::Answer(Outcome::Timeout),
                            Verdict::Silent => Step::Silent,
                            Verdict::Ended => Step::Answer(Outcome::ConnectionLost { reason: None }),
                        };
                    }
                }
            }
        };
        match answered {
            // The connection was closed as silent under this stream.
            Err(_) if self.health_of(conn).is_some_and(|h| h.is_silent()) => Step::Silent,
            Err(e) => self.classify(conn, &e),
            Ok((head, buf)) => {
                let r = parse_response(&head, &buf);
                self.answered(conn, r.status == 200);
                Step::Answer(Outcome::Response(r))
            }
        }
    }

    /// The health of `conn`, while it has a slot (always, for the holder of a lease on it).
    fn health_of(&self, conn: u64) -> Option<Arc<Health>> {
        let st = self.lock();
        st.conns
            .iter()
            .find(|c| c.id == conn)
            .map(|c| Arc::clone(&c.health))
    }

    /// `conn` did not answer a PING: no new streams, and its end is our doing.
    fn silenced(&self, conn: u64) {
        let mut st = self.lock();
        if let Some(c) = st.conns.iter_mut().find(|c| c.id == conn) {
            c.send = None;
            c.closed_by_us = true;
        }
    }

    /// Maps a stream error: refused, or above a GOAWAY's last-stream-id → re-send; anything
    /// else may have been processed → connection lost.
    ///
    /// h2 gives a stream the peer's GOAWAY error only when the stream is above the frame's
    /// last-stream-id, which by RFC 9113 §6.8 the server did not and will not process —
    /// whatever the error code (`NO_ERROR` for a graceful close, `ENHANCE_YOUR_CALM`,
    /// `INTERNAL_ERROR`...). Streams at or below it that end without an answer when the
    /// connection closes get an I/O error (broken pipe) instead: those may have been
    /// delivered, and are reported lost.
    fn classify(&self, conn: u64, e: &h2::Error) -> Step {
        if e.reason() == Some(h2::Reason::REFUSED_STREAM) {
            return Step::Refused;
        }
        if e.is_go_away() {
            self.drain(conn, "GOAWAY");
            if e.is_remote() {
                return Step::Refused;
            }
            warn!(conn, error = %e, "connection closed with streams in flight");
            return Step::Answer(Outcome::ConnectionLost { reason: None });
        }
        if e.is_io() {
            self.drain(conn, "I/O error");
        }
        debug!(conn, error = %e, "stream failed");
        Step::Answer(Outcome::ConnectionLost { reason: None })
    }

    fn housekeeping(&self, conn: u64) -> Housekeeping {
        let mut st = self.lock();
        let Some(c) = st.conns.iter_mut().find(|c| c.id == conn) else {
            return Housekeeping::Gone;
        };
        if c.in_flight > 0 || c.send.is_none() {
            return Housekeeping::Nothing;
        }
        let idle = c.last_used.elapsed();
        if idle >= self.config.idle_timeout {
            c.send = None;
            c.closed_by_us = true;
            return Housekeeping::Close;
        }
        if idle >= self.config.ping_interval && c.last_ping.elapsed() >= self.config.ping_interval {
            c.last_ping = Instant::now();
            return Housekeeping::Ping;
        }
        Housekeeping::Nothing
    }

    /// The driver of `conn` has ended: the slot goes now, or when its last stream is released.
    fn ended(&self, conn: u64) {
        let mut st = self.lock();
        if let Some(i) = st.conns.iter().position(|c| c.id == conn) {
            let c = &mut st.conns[i];
            c.send = None;
            if c.in_flight > 0 {
                c.ended = true;
            } else {
                self.remove(&mut st, i);
            }
        }
        drop(st);
        self.changed.notify_waiters();
    }

    /// Removes slot `i`. A connection the server closed before answering anything counts
    /// towards [`REJECTED_LIMIT`] and backs off the next connect; one we closed does not.
    fn remove(&self, st: &mut State, i: usize) {
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

/// Drives one connection until it ends: PINGs it when idle or when a sender's stream timed out
/// on it, closes it after `idle_timeout` or when a PING goes unanswered for `ping_timeout`;
/// then removes it from the pool.
async fn drive(shared: Arc<Shared>, id: u64, mut conn: H2Connection, health: Arc<Health>) {
    let mut ping = conn.ping_pong();
    let period = (shared.config.ping_interval.min(shared.config.idle_timeout) / 4)
        .max(Duration::from_millis(100));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // When the PING in flight counts as unanswered.
    let mut ping_due: Option<Instant> = None;
    loop {
        let mut start_ping = false;
        tokio::select! {
            result = &mut conn => {
                if let Err(e) = result {
                    info!(conn = id, error = %e, "connection ended");
                } else {
                    debug!(conn = id, "connection closed");
                }
                break;
            }
            pong = std::future::poll_fn(|cx| match ping.as_mut() {
                Some(p) => p.poll_pong(cx),
                None => std::task::Poll::Pending,
            }), if ping_due.is_some() => {
                ping_due = None;
                if let Err(e) = pong {
                    info!(conn = id, error = %e, "PING failed; dropping the connection");
                    break;
                }
                health.state.send_modify(|l| l.pongs += 1);
            }
            () = sleep_until_some(ping_due) => {
                warn!(conn = id, endpoint = %shared.config.endpoint, "PING unanswered: the connection is silent; closing it, its streams go elsewhere");
                shared.silenced(id);
                health.state.send_modify(|l| l.silent = true);
                break;
            }
            () = health.check.notified(), if ping_due.is_none() => start_ping = true,
            _ = tick.tick() => match shared.housekeeping(id) {
                Housekeeping::Nothing | Housekeeping::Gone => {}
                Housekeeping::Close => debug!(conn = id, "closing idle connection"),
                Housekeeping::Ping => start_ping = ping_due.is_none(),
            },
        }
        if start_ping {
            match ping.as_mut() {
                Some(p) => match p.send_ping(h2::Ping::opaque()) {
                    Ok(()) => ping_due = Some(Instant::now() + shared.config.ping_timeout),
                    Err(e) => {
                        info!(conn = id, error = %e, "cannot PING; dropping the connection");
                        break;
                    }
                },
                // No PING to be had: the connection cannot be checked, so it is taken as alive.
                None => health.state.send_modify(|l| l.pongs += 1),
            }
        }
    }
    health.state.send_modify(|l| l.ended = true);
    shared.ended(id);
}

/// Sleeps until `at`, or forever when there is none.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
