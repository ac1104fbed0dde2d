//! Bounces: Momentum reported a push that failed for good as it reported mail that bounced,
//! and teams that inject pushes often process bounces already. For a notification that came
//! in over SMTP or `/v1.0/inject` and ends failed or expired, pushgate sends a delivery status
//! notification (RFC 3464) to the message's return path, through a relay (`[bounces]`).
//!
//! - `origin`: at ingest, which requests get an origin (the return path, the headers).
//! - The spool queues each failure in its outbox in the transaction that records it
//!   (`spool::bounces`): a crash never loses one.
//! - The sender (here) sends what waited out the batching window, one DSN per origin (`dsn`,
//!   with `status`'s codes), and settles it: sent, refused for good, or tried again later.
//!   A crash between the relay's answer and the settle sends that DSN again, with the same
//!   `Message-ID`.

mod dsn;
pub mod origin;
mod status;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use origin::{Arrival, attach};

use crate::config::{Bounces, Current};
use crate::spool::{BounceSettle, DueBounce, Spool, State, Store};

/// How often the sender looks for DSNs that are due.
const TICK: Duration = Duration::from_secs(1);
/// DSNs sent per look, at most.
const PER_LOOK: usize = 16;
/// The relay has this long for a connection and for each command...
const RELAY_TIMEOUT: Duration = Duration::from_secs(20);
/// ...and this long for a whole DSN: well within the lease a PostgreSQL spool gives it.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(25);
/// How often the outbox is counted for `pushgate_bounces_waiting`.
const GAUGE_EVERY: Duration = Duration::from_secs(5);

/// A DSN decided on (sent, refused, deferred) whose settle the spool refused: it is recorded
/// before anything else goes out, and never sent again meanwhile.
struct Unsettled {
    origin: i64,
    lease: i64,
    ids: Vec<apns::ApnsId>,
    how: BounceSettle,
}

/// Starts the sender; it stops between two DSNs once `stop` is cancelled.
pub fn spawn(config: Arc<Current>, spool: Store, stop: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut unsettled: Vec<Unsettled> = Vec::new();
        // While the relay cannot be reached (or will not talk), the whole sender waits, with
        // the same backoff as each DSN: a backlog costs one try per wait, not one per DSN. A
        // DSN the relay refuses for itself waits alone.
        let mut quiet_until = None::<Instant>;
        let mut unreachable_in_row = 0u32;
        let mut counted_at = None::<Instant>;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = stop.cancelled() => return,
            }
            // Read each time: a reload that adds, changes or removes `[bounces]` applies at
            // the next look.
            let Some(b) = config.get().bounces.clone() else {
                continue;
            };
            if !record_unsettled(&spool, &mut unsettled).await {
                continue;
            }
            if counted_at.is_none_or(|t| t.elapsed() >= GAUGE_EVERY) {
                counted_at = Some(Instant::now());
                match spool.bounces_waiting().await {
                    Ok(n) => crate::metrics::bounces_waiting(n),
                    Err(e) => warn!(error = %e, "counting the bounce outbox failed"),
                }
            }
            if quiet_until.is_some_and(|t| Instant::now() < t) {
                continue;
            }
            quiet_until = None;
            for _ in 0..PER_LOOK {
                if stop.is_cancelled() {
                    return;
                }
                let now = SystemTime::now();
                let mut due = match spool.bounces_due(now, now - b.window, 1).await {
                    Ok(d) => d,
                    Err(e) => {
                        warn!(error = %e, "reading the bounces due failed");
                        break;
                    }
                };
                let Some(d) = due.pop() else { break };
                let (origin, lease) = (d.origin, d.lease);
                let ids: Vec<_> = d.entries.iter().map(|e| e.id).collect();
                let (how, unreachable) = decide(&b, d).await;
                match spool.settle_bounce(origin, lease, ids.clone(), how).await {
                    Ok(true) => {}
                    Ok(false) => warn!(
                        origin,
                        "another gateway took this bounce over before its outcome was recorded"
                    ),
                    Err(e) => {
                        warn!(origin, error = %e, "recording a bounce failed; nothing more is sent until it is");
                        unsettled.push(Unsettled {
                            origin,
                            lease,
                            ids,
                            how,
                        });
                        break;
                    }
                }
                if unreachable {
                    quiet_until = Some(Instant::now() + backoff(&b, unreachable_in_row));
                    unreachable_in_row = unreachable_in_row.saturating_add(1);
                    break;
                }
                unreachable_in_row = 0;
            }
        }
    })
}

/// Records the settles the spool refused before; true once none is left.
async fn record_unsettled(spool: &Store, unsettled: &mut Vec<Unsettled>) -> bool {
    while let Some(u) = unsettled.last() {
        let settled = spool
            .settle_bounce(u.origin, u.lease, u.ids.clone(), u.how)
            .await;
        if settled.is_err() {
            return false;
        }
        unsettled.pop();
    }
    true
}

/// Sends the DSN of `d` (if something is left to report) and says what became of it, and
/// whether the relay itself is out of reach (the whole sender then waits).
async fn decide(b: &Bounces, mut d: DueBounce) -> (BounceSettle, bool) {
    let now = SystemTime::now();
    // A failure older than give_up_s is not reported any more (the relay was down that long,
    // or `[bounces]` was off meanwhile); it leaves the outbox with this DSN's settle.
    let before = d.entries.len();
    d.entries
        .retain(|e| now.duration_since(e.at).unwrap_or_default() < b.give_up);
    let aged = before - d.entries.len();
    // A notification the gateway did not send because its token was known dead: reported
    // only with `suppressed = true` (the sender heard of that token's death before).
    if !b.suppressed {
        d.entries.retain(|e| {
            !(e.state == State::Failed
                && e.status.is_none()
                && e.reason.as_deref() == Some("Unregistered"))
        });
    }
    let gone = |how| {
        if aged > 0 && how == BounceSettle::Done {
            crate::metrics::bounce("failed");
            warn!(
                origin = d.origin,
                dropped = aged,
                "failures older than give_up_s are not bounced"
            );
        }
        how
    };
    if d.entries.is_empty() {
        return (gone(BounceSettle::Done), false);
    }
    let message = dsn::build(&d, &b.from, &b.reporting_mta);
    let sent = tokio::time::timeout(SEND_TIMEOUT, send(b, &d.from.return_path, &message))
        .await
        .unwrap_or_else(|_| {
            Err(Failure::Unreachable(format!(
                "the relay did not take it within {SEND_TIMEOUT:?}"
            )))
        });
    let to = &d.from.return_path;
    match sent {
        Ok(()) => {
            crate::metrics::bounce("sent");
            info!(origin = d.origin, failures = d.entries.len(), to = %to, "bounce sent");
            (gone(BounceSettle::Done), false)
        }
        Err(Failure::Recipient(why)) => {
            crate::metrics::bounce("failed");
            warn!(origin = d.origin, to = %to, error = %why, "the relay refused a bounce's recipient; it is dropped");
            (gone(BounceSettle::Done), false)
        }
        Err(failure @ (Failure::Refused(_) | Failure::Unreachable(_))) => {
            let unreachable = matches!(failure, Failure::Unreachable(_));
            let (Failure::Refused(why) | Failure::Unreachable(why) | Failure::Recipient(why)) =
                failure;
            crate::metrics::bounce("deferred");
            let wait = backoff(b, d.attempts);
            warn!(origin = d.origin, to = %to, error = %why, retry_in = ?wait, "sending a bounce failed; it is tried again");
            (BounceSettle::RetryAt(SystemTime::now() + wait), unreachable)
        }
    }
}

/// The wait before try `attempts + 2`: `retry_s` doubling up to `retry_max_s`.
fn backoff(b: &Bounces, attempts: u32) -> Duration {
    let factor = 1u32.checked_shl(attempts.min(20)).unwrap_or(u32::MAX);
    b.retry.saturating_mul(factor).min(b.retry_max)
}

enum Failure {
    /// The relay refused the recipient for good (an enhanced status `5.1.x` about the
    /// destination), or the DSN cannot be addressed: dropped.
    Recipient(String),
    /// The relay refused this DSN for now, or for a reason that is this gateway's to fix (the
    /// null sender, relaying, its content): tried again later.
    Refused(String),
    /// The relay cannot be reached or will not talk (connection, TLS, login, `421`, no
    /// answer): this DSN and every other wait.
    Unreachable(String),
}

/// Replies about the session rather than one DSN: closing, TLS unavailable, login needed or
/// refused (RFC 5321, 3207, 4954).
const SESSION_CODES: [&str; 6] = ["421", "454", "530", "534", "535", "538"];

/// Hands `message` to the relay with a null envelope sender, as RFC 3464 asks (a DSN is
/// never bounced in turn).
async fn send(b: &Bounces, to: &str, message: &[u8]) -> Result<(), Failure> {
    // (Checked here: an address of other characters needs the relay's SMTPUTF8, and lettre
    // refuses it client-side, which would read as a relay out of reach.)
    if !to.is_ascii() {
        return Err(Failure::Recipient(format!(
            "{to:?} is not an ASCII address (SMTPUTF8 is not used for bounces)"
        )));
    }
    let to: Address = to
        .parse()
        .map_err(|e| Failure::Recipient(format!("{to:?} is not an address: {e}")))?;
    let envelope = lettre::address::Envelope::new(None, vec![to])
        .map_err(|e| Failure::Recipient(e.to_string()))?;
    let transport = transport(b).map_err(Failure::Unreachable)?;
    let e = match transport.send_raw(&envelope, message).await {
        Ok(_) => return Ok(()),
        Err(e) => e,
    };
    let text = e.to_string();
    Err(match e.status().map(|c| c.to_string()) {
        // No reply to judge: the connection, TLS, a timeout.
        None => Failure::Unreachable(text),
        Some(code) if SESSION_CODES.contains(&code.as_str()) => Failure::Unreachable(text),
        // Only a refusal of the recipient drops the DSN. Anything else the relay refuses —
        // the null sender, relaying (a 550 5.7.1 too), a reply without an enhanced status that
        // says which — waits, until give_up_s.
        Some(_) if e.is_permanent() && recipient_refused(&text) => Failure::Recipient(text),
        Some(_) => Failure::Refused(text),
    })
}

/// Whether a permanent reply (its text, as lettre shows it) refuses the recipient: its enhanced
/// status (RFC 3463) is `5.1.x`, an address problem, but not `5.1.7` or `5.1.8`, which are
/// about the sender's. Without an enhanced status a reply does not say which address it means.
fn recipient_refused(text: &str) -> bool {
    let enhanced = text
        .split(|c: char| c.is_whitespace() || "():#".contains(c))
        .find(|w| {
            let parts: Vec<&str> = w.split('.').collect();
            parts.len() == 3
                && parts[0] == "5"
                && parts[1..]
                    .iter()
                    .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        });
    enhanced.is_some_and(|s| s.starts_with("5.1.") && s != "5.1.7" && s != "5.1.8")
}

/// A connection to the relay, as `[bounces]` describes it: one per DSN (bounces are rare).
fn transport(b: &Bounces) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
    let (host, port) = b
        .smarthost
        .rsplit_once(':')
        .and_then(|(h, p)| {
            Some((
                h.trim_start_matches('[').trim_end_matches(']'),
                p.parse().ok()?,
            ))
        })
        .ok_or_else(|| format!("{:?} is not host:port", b.smarthost))?;
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
        .port(port)
        .timeout(Some(RELAY_TIMEOUT))
        .hello_name(ClientId::Domain(b.reporting_mta.clone()));
    if b.starttls {
        let mut params = TlsParameters::builder(host.to_owned());
        for root in &b.extra_roots {
            let cert = Certificate::from_der(root.to_vec()).map_err(|e| e.to_string())?;
            params = params.add_root_certificate(cert);
        }
        let params = params.build_rustls().map_err(|e| e.to_string())?;
        builder = builder.tls(Tls::Required(params));
    }
    if let Some((user, password)) = &b.auth {
        builder = builder
            .credentials(Credentials::new(user.clone(), password.expose().to_owned()))
            .authentication(vec![Mechanism::Plain, Mechanism::Login]);
    }
    Ok(builder.build())
}

#[cfg(test)]
mod tests {
    use super::recipient_refused;

    #[test]
    fn only_an_address_refusal_drops_a_dsn() {
        for (text, drop) in [
            (
                "permanent error (550): 5.1.1 <a@b>: Recipient address rejected",
                true,
            ),
            ("permanent error (553): 5.1.3 bad address syntax", true),
            ("permanent error (550): 5.7.1 Relaying denied", false),
            (
                "permanent error (550): 5.1.8 Access denied, bad outbound sender",
                false,
            ),
            ("permanent error (550): relay not permitted", false),
            (
                "permanent error (553): sorry, not in my list of allowed rcpthosts (#5.7.1)",
                false,
            ),
            ("permanent error (554): 5.6.0 content rejected", false),
        ] {
            assert_eq!(recipient_refused(text), drop, "{text}");
        }
    }
}
