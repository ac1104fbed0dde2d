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
//!
//! Here: the configuration, the public [`Pool`] and the state it shares with its tasks.
//! `slots`: stream slots and connects; `stream`: one exchange on one stream; `health`: PING
//! verdicts between a connection's driver and its senders; `driver`: the connection's task.

mod driver;
mod health;
mod slots;
mod stream;

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
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
use driver::drive;
use health::{Health, Verdict};
use slots::Lease;
use stream::Step;

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
}

/// Connection numbers, unique in the process: the `conn` of the pool's logs and of
/// [`Sent::conn`], so an attempt recorded against a connection is found in the logs whichever
/// app's pool opened it.
static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// What [`Pool::send_traced`] reports: the outcome, and the connection the last stream for it
/// was opened on (`None` when the outcome came from no stream: no connection to be had).
#[derive(Debug, Clone, PartialEq)]
pub struct Sent {
    pub outcome: Outcome,
    pub conn: Option<u64>,
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
        self.send_traced(n, deadline, withdraw).await.outcome
    }

    /// As [`Pool::send_until`], with the connection the outcome came from (what the gateway
    /// records for each attempt).
    pub async fn send_traced(
        &self,
        n: &Notification,
        deadline: Option<Instant>,
        withdraw: impl Future<Output = ()>,
    ) -> Sent {
        let mut conn = None;
        let outcome = self.attempt(n, deadline, withdraw, &mut conn).await;
        Sent { outcome, conn }
    }

    /// The send loop behind [`Pool::send_traced`]; `used` is the last connection a stream was
    /// opened on.
    async fn attempt(
        &self,
        n: &Notification,
        deadline: Option<Instant>,
        withdraw: impl Future<Output = ()>,
        used: &mut Option<u64>,
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
                Err(outcome) => {
                    // No stream went out for this outcome (a re-send found no connection).
                    *used = None;
                    return outcome;
                }
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
            *used = Some(conn);
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

impl Shared {}
