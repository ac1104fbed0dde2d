//! Accepting connections and answering streams.
//!
//! One task per connection drives the h2 server and applies the connection-level faults
//! (GOAWAY every N streams, the one-stream rule before a token is proven); one task per stream
//! reads the body, runs the checks, waits the configured latency and answers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use apns::Reason;
use apns::request::{APNS_ID, ErrorBody};
use bytes::{Bytes, BytesMut};
use h2::server::SendResponse;
use http::{HeaderValue, Request, Response};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::Behaviour;
use crate::auth::ConnTokens;
use crate::checks::{ConnAuth, Rejection, check};
use crate::stats::{Accepted, Stats};

/// The longest body we read; anything longer is over every limit anyway.
const MAX_BODY: usize = 64 * 1024;

pub(crate) struct Shared {
    pub behaviour: Behaviour,
    pub acceptor: TlsAcceptor,
    pub stats: Arc<Stats>,
}

pub(crate) async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => {
                    tokio::spawn(connection(Arc::clone(&shared), tcp, shutdown.clone()));
                }
                Err(e) => debug!(error = %e, "accept failed"),
            },
        }
    }
}

/// Counts a connection as open for as long as it lives.
struct OpenGuard<'a>(&'a Stats);

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0.connections_open.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn connection(shared: Arc<Shared>, tcp: TcpStream, shutdown: CancellationToken) {
    let _ = tcp.set_nodelay(true);
    // A second handle on the socket, so that after h2 has finished (and sent its FIN) we can
    // read what the client still sends until it closes. Closing a socket with unread data makes
    // the kernel send RST, which can destroy answers the client has not read yet — APNs closes
    // gracefully, and so must its simulator.
    let (tcp, linger) = match tcp.into_std().and_then(|s| Ok((s.try_clone()?, s))) {
        Ok((keep, s)) => match TcpStream::from_std(s) {
            Ok(tcp) => (tcp, Some(keep)),
            Err(e) => {
                debug!(error = %e, "cannot register the connection");
                return;
            }
        },
        Err(e) => {
            debug!(error = %e, "cannot duplicate the socket");
            return;
        }
    };
    serve_connection(&shared, tcp, shutdown).await;
    if let Some(keep) = linger.and_then(|k| TcpStream::from_std(k).ok()) {
        drain_until_closed(keep).await;
    }
}

/// Reads and discards until the peer closes, for at most two seconds.
async fn drain_until_closed(mut tcp: TcpStream) {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        while matches!(tcp.read(&mut buf).await, Ok(n) if n > 0) {}
    })
    .await;
}

async fn serve_connection(shared: &Arc<Shared>, tcp: TcpStream, shutdown: CancellationToken) {
    let tls = match shared.acceptor.accept(tcp).await {
        Ok(tls) => tls,
        Err(e) => {
            debug!(error = %e, "TLS handshake failed");
            return;
        }
    };
    let b = &shared.behaviour;
    let certificate = b
        .client_ca
        .as_ref()
        .map(|ca| ca.accepts(tls.get_ref().1.peer_certificates()));
    let token_conn = b.jwt.is_some() && certificate != Some(true);
    let auth = Arc::new(ConnAuth {
        certificate,
        tokens: ConnTokens::default(),
        stats: Some(Arc::clone(&shared.stats)),
    });
    let handshake = h2::server::Builder::new()
        .max_concurrent_streams(b.max_streams)
        .initial_window_size(1 << 20)
        .initial_connection_window_size(1 << 22)
        .handshake::<_, Bytes>(tls)
        .await;
    let mut h2 = match handshake {
        Ok(h2) => h2,
        Err(e) => {
            debug!(error = %e, "h2 handshake failed");
            return;
        }
    };
    let stats = &shared.stats;
    stats.connections_total.fetch_add(1, Ordering::Relaxed);
    stats.connections_open.fetch_add(1, Ordering::Relaxed);
    let _open = OpenGuard(stats);
    if b.reject_connections {
        stats.goaways.fetch_add(1, Ordering::Relaxed);
        h2.abrupt_shutdown(h2::Reason::PROTOCOL_ERROR);
        while let Some(Ok((_, mut respond))) = h2.accept().await {
            respond.send_reset(h2::Reason::REFUSED_STREAM);
        }
        return;
    }
    let in_flight = Arc::new(AtomicUsize::new(0));
    // With a latency, answers wait in this connection's queue instead of each in its own timer.
    let later = (!b.latency.is_zero()).then(|| {
        let (tx, rx) = mpsc::channel(b.max_streams.max(1) as usize);
        tokio::spawn(answer_later(rx));
        tx
    });
    // Token connections carry one stream until a push succeeds (Apple's rule).
    let proven = Arc::new(AtomicBool::new(!token_conn));
    let mut streams = 0u64;
    let mut closing = false;
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled(), if !closing => {
                closing = true;
                h2.graceful_shutdown();
                continue;
            }
            next = h2.accept() => next,
        };
        let (req, mut respond) = match next {
            Some(Ok(pair)) => pair,
            Some(Err(e)) => {
                debug!(error = %e, "connection error");
                break;
            }
            None => break,
        };
        streams += 1;
        let now = in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        if now > 1 && !proven.load(Ordering::Acquire) {
            in_flight.fetch_sub(1, Ordering::AcqRel);
            stats.refused.fetch_add(1, Ordering::Relaxed);
            respond.send_reset(h2::Reason::REFUSED_STREAM);
            continue;
        }
        stats.max_in_flight.fetch_max(now, Ordering::Relaxed);
        tokio::spawn(stream(
            Arc::clone(shared),
            Arc::clone(&auth),
            Arc::clone(&in_flight),
            Arc::clone(&proven),
            later.clone(),
            req,
            respond,
        ));
        if !closing && b.goaway_every.is_some_and(|n| streams >= n) {
            closing = true;
            stats.goaways.fetch_add(1, Ordering::Relaxed);
            match b.goaway_code {
                None => h2.graceful_shutdown(),
                Some(code) => h2.abrupt_shutdown(code),
            }
        }
    }
}

/// Counts a stream in flight until dropped: just before its answer is queued, since once the
/// client reads it the stream is closed for h2 and the client may open the next one, which must
/// not find this one still counted.
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A request read and judged, waiting for its answer.
struct Judged {
    shared: Arc<Shared>,
    proven: Arc<AtomicBool>,
    in_flight: InFlight,
    head: http::request::Parts,
    body: BytesMut,
    verdict: Result<String, Rejection>,
    respond: SendResponse<Bytes>,
    /// When the answer is due (`--rtt-ms` after the request was read).
    due: Instant,
}

async fn stream(
    shared: Arc<Shared>,
    auth: Arc<ConnAuth>,
    in_flight: Arc<AtomicUsize>,
    proven: Arc<AtomicBool>,
    later: Option<mpsc::Sender<Judged>>,
    req: Request<h2::RecvStream>,
    respond: SendResponse<Bytes>,
) {
    let in_flight = InFlight(in_flight);
    let (head, mut body) = req.into_parts();
    let mut buf = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let Ok(chunk) = chunk else { return };
        let _ = body.flow_control().release_capacity(chunk.len());
        if buf.len() + chunk.len() <= MAX_BODY {
            buf.extend_from_slice(&chunk);
        }
    }
    let b = &shared.behaviour;
    let verdict = check(b, &auth, &head, &buf, b.now_s()).and_then(|token| match b.fault() {
        Some(reason) => Err(Rejection::from(reason)),
        None => Ok(token),
    });
    let due = Instant::now() + b.latency;
    let judged = Judged {
        shared: Arc::clone(&shared),
        proven,
        in_flight,
        head,
        body: buf,
        verdict,
        respond,
        due,
    };
    match later {
        // The queue holds at most the connection's streams, so this never waits for long.
        Some(later) => {
            let _ = later.send(judged).await;
        }
        None => finish(judged),
    }
}

/// Answers a connection's judged requests as each falls due. The latency is the same for all,
/// so they fall due in the order they arrive: one timer wakes this task for everything due by
/// then, instead of one timer and one task wake-up per request, which cost the simulator more
/// CPU than the gateway it measures.
async fn answer_later(mut rx: mpsc::Receiver<Judged>) {
    while let Some(j) = rx.recv().await {
        if j.due > Instant::now() {
            tokio::time::sleep_until(j.due).await;
        }
        finish(j);
    }
}

/// Records a judged request, then sends its answer. Recording first means that whoever has
/// read an answer also finds it counted: a test may read the counters as soon as its sends
/// return, instead of polling for the simulator to catch up.
fn finish(j: Judged) {
    let Judged {
        shared,
        proven,
        in_flight,
        head,
        body,
        verdict,
        respond,
        ..
    } = j;
    let apns_id = head.headers.get(&APNS_ID).cloned().unwrap_or_else(|| {
        HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()).expect("a UUID is ASCII")
    });
    match verdict {
        Ok(token) => {
            shared.stats.count(200, None);
            let id = apns_id
                .to_str()
                .ok()
                .and_then(|s| uuid::Uuid::try_parse(s).ok())
                .map_or(0, |u| u.as_u128());
            shared.stats.accept(id, || Accepted {
                token,
                apns_id: apns_id.to_str().unwrap_or_default().to_owned(),
                headers: head
                    .headers
                    .iter()
                    .filter(|(k, _)| k.as_str().starts_with("apns-"))
                    .map(|(k, v)| {
                        (
                            k.as_str().to_owned(),
                            v.to_str().unwrap_or_default().to_owned(),
                        )
                    })
                    .collect(),
                payload: body.freeze(),
            });
            proven.store(true, Ordering::Release);
            drop(in_flight);
            answer(respond, 200, apns_id, None);
        }
        Err(r) => {
            shared.stats.count(r.status, Some(r.reason.as_str()));
            let status = r.status;
            drop(in_flight);
            answer(respond, status, apns_id, Some(r));
        }
    }
}

fn answer(
    mut respond: SendResponse<Bytes>,
    status: u16,
    apns_id: HeaderValue,
    rejection: Option<Rejection>,
) {
    let mut resp = Response::new(());
    *resp.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
    resp.headers_mut().insert(APNS_ID, apns_id);
    let Some(r) = rejection else {
        let _ = respond.send_response(resp, true);
        return;
    };
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let body = serde_json::to_vec(&ErrorBody {
        reason: r.reason,
        timestamp: r.timestamp,
    })
    .expect("an error body serialises");
    if let Ok(mut s) = respond.send_response(resp, false) {
        let _ = s.send_data(Bytes::from(body), true);
    }
}

/// Simulator wall-clock time in UNIX seconds, shifted by `--clock-offset-s`.
pub(crate) fn shifted_now(offset_s: i64) -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    (now + offset_s).max(0) as u64
}

impl Behaviour {
    pub(crate) fn now_s(&self) -> u64 {
        shifted_now(self.clock_offset_s)
    }

    /// `--fail-rate`: a transient failure for this valid request, or none.
    pub(crate) fn fault(&self) -> Option<Reason> {
        if self.fail_rate > 0.0 && fastrand::f64() < self.fail_rate {
            Some(match fastrand::u8(0..3) {
                0 => Reason::InternalServerError,
                1 => Reason::ServiceUnavailable,
                _ => Reason::TooManyRequests,
            })
        } else {
            None
        }
    }
}
