//! The HTTP API's accept loop, owned here rather than by `axum::serve`, so that every
//! connection is bounded (`[server]` in docs/configuration.md):
//!
//! - the TLS handshake runs in the connection's own task, within `header_read_timeout_s`, so
//!   a silent client holds nothing but its own socket;
//! - a new connection has `header_read_timeout_s` to send its request head, a keep-alive
//!   connection may stay silent `keepalive_idle_s` between requests (`deadlines`), and a body
//!   must arrive within `body_read_timeout_s` of its head (`body`);
//! - at most `max_open_connections` are served; past it a few more are answered `503
//!   too_many_connections` and closed, and the rest are closed at once.
//!
//! The limits are read from the configuration in force at each accept, so a reload applies to
//! new connections. At shutdown the listener closes, idle connections close, and requests in
//! progress get [`DRAIN`] to finish (their submits commit before they answer); connections
//! still open then are dropped.

mod body;
mod deadlines;
mod slots;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::response::IntoResponse;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_service::Service;
use tracing::{debug, warn};

pub use body::BodyError;
pub use slots::{Slot, Slots};

use crate::config::Server;
use crate::http::error::{ApiError, Code};
use deadlines::{Activity, Deadlines};

/// Connections past the cap that are still answered `503` (the rest are closed unanswered):
/// enough for a client to learn why, too few to cost anything.
const OVERFLOW_ANSWERS: usize = 32;

/// How long requests in progress at shutdown get to finish and be answered.
pub const DRAIN: Duration = Duration::from_secs(10);

/// What bounds a connection, from `[server]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub header_read: Duration,
    pub keepalive_idle: Duration,
    pub body_read: Duration,
    pub max_open: usize,
}

impl Limits {
    pub fn of(server: &Server) -> Limits {
        Limits {
            header_read: server.header_read_timeout,
            keepalive_idle: server.keepalive_idle,
            body_read: server.body_read_timeout,
            max_open: server.max_open_connections,
        }
    }
}

/// Serves `router` on `listener` (TLS when `tls` is given) until `shutdown`, with the limits
/// `limits` gives at each accept.
pub async fn serve(
    name: &'static str,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: Router,
    limits: impl Fn() -> Limits,
    shutdown: impl Future<Output = ()>,
) {
    let open = Slots::new(name);
    let overflow = Arc::new(Semaphore::new(OVERFLOW_ANSWERS));
    let connections = TaskTracker::new();
    let stop = CancellationToken::new();
    let abort = CancellationToken::new();
    tokio::pin!(shutdown);
    loop {
        let ((tcp, peer), accepted) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => (a, Instant::now()),
                Err(e) => {
                    debug!(error = %e, "accepting an HTTP connection failed");
                    // Out of descriptors, most likely: give connections a moment to end.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        let limits = limits();
        let admitted = match open.take(limits.max_open) {
            Some(slot) => Admitted::Served(slot),
            None => {
                crate::metrics::connection_refused(name);
                match Arc::clone(&overflow).try_acquire_owned() {
                    Ok(permit) => Admitted::Refused(permit),
                    // Closed unanswered: answering costs a task and a handshake each.
                    Err(_) => continue,
                }
            }
        };
        let conn = Connection {
            name,
            router: router.clone(),
            limits,
            admitted,
            stop: stop.clone(),
            abort: abort.clone(),
            peer,
            accepted,
        };
        let tls = tls.clone();
        connections.spawn(conn.run(tcp, tls));
    }
    // No more connections queue up in the kernel for a loop that no longer accepts.
    drop(listener);
    stop.cancel();
    connections.close();
    if tokio::time::timeout(DRAIN, connections.wait())
        .await
        .is_err()
    {
        warn!("HTTP connections still busy at shutdown were closed");
        abort.cancel();
        connections.wait().await;
    }
}

/// Whether a connection is served or only told that the gateway is full.
enum Admitted {
    Served(#[allow(dead_code, reason = "held: frees the slot when dropped")] Slot),
    Refused(#[allow(dead_code, reason = "held")] tokio::sync::OwnedSemaphorePermit),
}

struct Connection {
    /// The listener's name in metrics.
    name: &'static str,
    router: Router,
    limits: Limits,
    admitted: Admitted,
    stop: CancellationToken,
    /// Past the drain: drop the connection whatever it is doing.
    abort: CancellationToken,
    peer: SocketAddr,
    accepted: Instant,
}

impl Connection {
    async fn run(self, tcp: TcpStream, tls: Option<TlsAcceptor>) {
        let Some(acceptor) = tls else {
            return self.http(tcp).await;
        };
        let handshake = tokio::time::timeout_at(
            self.accepted + self.limits.header_read,
            acceptor.accept(tcp),
        );
        let peer = self.peer;
        tokio::select! {
            r = handshake => match r {
                Ok(Ok(stream)) => self.http(stream).await,
                Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => {
                    crate::metrics::connection_timed_out(self.name, "handshake");
                    debug!(%peer, "TLS handshake timed out");
                }
            },
            () = self.stop.cancelled() => {}
        }
    }

    async fn http<I>(self, io: I)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let activity = Arc::new(Activity::new(self.name));
        let io = Deadlines::new(
            io,
            Arc::clone(&activity),
            self.accepted,
            self.limits.header_read,
            self.limits.keepalive_idle,
        );
        let served = matches!(self.admitted, Admitted::Served(_));
        let (router, body_read, name) = (self.router, self.limits.body_read, self.name);
        let peer = self.peer;
        let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let handling = activity.begin();
            let mut router = router.clone();
            async move {
                let response = if served {
                    let mut req = req.map(|b| Body::new(body::TimedBody::new(b, body_read, name)));
                    // Who is asking, for the handlers that log or slow down a peer.
                    req.extensions_mut()
                        .insert(axum::extract::ConnectInfo(peer));
                    match router.call(req).await {
                        Ok(r) => r,
                        Err(never) => match never {},
                    }
                } else {
                    ApiError::new(
                        Code::TooManyConnections,
                        "the gateway has as many connections open as it serves; try again shortly",
                    )
                    .into_response()
                };
                drop(handling);
                Ok::<_, Infallible>(response)
            }
        });
        let mut builder = http1::Builder::new();
        // The deadlines are ours (see `deadlines`): hyper's would also end idle keep-alives.
        builder.header_read_timeout(None).keep_alive(served);
        let conn = builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(conn);
        let peer = self.peer;
        let result = tokio::select! {
            r = conn.as_mut() => r,
            () = self.stop.cancelled() => {
                // Idle: closed now. A request in progress finishes and is answered first.
                conn.as_mut().graceful_shutdown();
                tokio::select! {
                    r = conn => r,
                    () = self.abort.cancelled() => return,
                }
            }
        };
        if let Err(e) = result {
            debug!(%peer, error = %e, "HTTP connection ended with an error");
        }
    }
}
