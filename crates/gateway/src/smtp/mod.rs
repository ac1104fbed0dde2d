//! The SMTP listener for Momentum's MCMT injection (`[smtp]`, docs/momentum.md).
//!
//! Commands are parsed by `smtp-proto` (Stalwart's RFC 5321 parser and DATA receiver); the
//! session loop, limits, reply codes and pipelining are ours (`session`). A message becomes
//! notifications through `crate::ingest::mcmt` and is answered `250` only after the spool's
//! commit, so a client that saw 250 never loses its message.
//!
//! STARTTLS is offered when `tls_cert`/`tls_key` are set; AUTH (PLAIN, LOGIN) only over TLS,
//! with the API key's name as the user and the key as the password. The key's app scope then
//! limits the recipient domains.

mod session;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::config::TlsFiles;
use crate::ingest::Intake;
use crate::listen::Slots;

/// How long sessions still open at shutdown get to finish their current command.
const DRAIN: Duration = Duration::from_secs(10);

/// Builds the STARTTLS acceptor from `[smtp] tls_cert` / `tls_key`.
pub fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor, crate::tls::TlsError> {
    crate::tls::acceptor(files, &[])
}

/// Accepts SMTP sessions on `listener` until `shutdown`; then sessions are asked to close at
/// their next command and get a short while to do so.
pub async fn serve(
    listener: TcpListener,
    intake: Arc<Intake>,
    tls: Option<TlsAcceptor>,
    shutdown: CancellationToken,
) {
    let sessions = TaskTracker::new();
    let open = Slots::new("smtp");
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = shutdown.cancelled() => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let max = intake
                    .config()
                    .smtp
                    .as_ref()
                    .map_or(100, |s| s.max_sessions);
                let Some(slot) = open.take(max) else {
                    crate::metrics::connection_refused("smtp");
                    // A fresh socket's send buffer is empty: this never blocks the loop.
                    let _ = stream.try_write(b"421 4.3.2 too many sessions; try again later\r\n");
                    continue;
                };
                let (intake, tls, shutdown) = (Arc::clone(&intake), tls.clone(), shutdown.clone());
                sessions.spawn(async move {
                    if let Err(e) = session::run(stream, peer, intake, tls, shutdown).await {
                        debug!(%peer, error = %e, "SMTP session ended with an error");
                    }
                    drop(slot);
                });
            }
            Err(e) => {
                warn!(error = %e, "accepting an SMTP connection failed");
                // Out of descriptors, most likely: give sessions a moment to end.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    sessions.close();
    if tokio::time::timeout(DRAIN, sessions.wait()).await.is_err() {
        warn!("SMTP sessions still open at shutdown were closed");
    }
    info!("SMTP listener stopped");
}
