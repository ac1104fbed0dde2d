//! From an attempt's outcome to what is recorded (docs/dispatch.md, the five consequences).

use std::time::{Duration, SystemTime};

use apns::{Consequence, Expiration, Outcome, Reason};

use super::backoff::retry_delay;
use crate::reason::{Cause, GatewayReason};
use crate::spool::Sendable as Ready;
use crate::spool::{Completion, DeadToken, State};

/// The app settings that shape decisions.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_attempts: u32,
    /// The first retry's backoff ceiling ([`super::backoff::BASE`] in production).
    pub retry_base: Duration,
}

/// What to record for one attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub completion: Completion,
    /// Register this token as dead.
    pub dead: Option<DeadToken>,
    /// Halt the app with this reason.
    pub halt: Option<Cause>,
}

fn done(
    r: &Ready,
    state: State,
    attempts: u32,
    status: Option<u16>,
    reason: Option<Cause>,
) -> Completion {
    Completion {
        id: r.id,
        state,
        attempts,
        status,
        reason,
        due_at: None,
        conn: None,
    }
}

/// A notification past its expiry is never sent: it becomes `expired`.
pub fn expired(r: &Ready) -> Completion {
    done(
        r,
        State::Expired,
        r.attempts,
        None,
        Some(GatewayReason::Expired.into()),
    )
}

/// A send to a registered dead token is suppressed: it fails as `Unregistered`.
pub fn suppressed(r: &Ready) -> Completion {
    done(
        r,
        State::Failed,
        r.attempts,
        None,
        Some(Reason::Unregistered.into()),
    )
}

/// Decides what an attempt's outcome means for `r`. (Whether a BadDeviceToken answer is a sign
/// of a wrong `environment` is the worker's guard's call, over many answers: `dispatch::guard`.)
pub fn decide(
    r: &Ready,
    app: &str,
    outcome: &Outcome,
    limits: Limits,
    now: SystemTime,
) -> Decision {
    let status = match outcome {
        Outcome::Response(resp) => Some(resp.status),
        _ => None,
    };
    let apple = outcome.reason().cloned();
    // An attempt Apple never answered is named for what happened to it, so that its history
    // entry (and the row while it waits for its retry) says why.
    let reason = apple.clone().map(Cause::Apple).or(match outcome {
        Outcome::Timeout => Some(GatewayReason::Timeout.into()),
        Outcome::ConnectionLost { .. } => Some(GatewayReason::ConnectionLost.into()),
        _ => None,
    });
    let plain = |completion| Decision {
        completion,
        dead: None,
        halt: None,
    };
    // Put back in the queue, due now, without using up an attempt.
    let requeue = |halt: Cause| Decision {
        completion: Completion {
            id: r.id,
            state: State::Queued,
            attempts: r.attempts,
            status,
            reason: reason.clone(),
            due_at: None,
            conn: None,
        },
        dead: None,
        halt: Some(halt),
    };
    match outcome.consequence() {
        Consequence::Delivered => plain(done(r, State::Delivered, r.attempts + 1, status, None)),
        Consequence::Rejected => plain(done(r, State::Failed, r.attempts + 1, status, reason)),
        Consequence::DeadToken { since } => Decision {
            completion: done(r, State::Failed, r.attempts + 1, status, reason.clone()),
            dead: Some(DeadToken {
                app: app.to_owned(),
                token: r.token.clone(),
                reason: apple.unwrap_or(Reason::Unregistered),
                since: since.unwrap_or(now),
            }),
            halt: None,
        },
        Consequence::AppHalted => requeue(
            reason
                .clone()
                .unwrap_or(GatewayReason::ConnectionRejected.into()),
        ),
        Consequence::Retry {
            after,
            counts_as_attempt,
        } => {
            let attempts = r.attempts + u32::from(counts_as_attempt);
            let one_shot = r.request.apns_expiration == Some(Expiration::Immediately);
            if counts_as_attempt && (attempts >= limits.max_attempts || one_shot) {
                let mut c = done(
                    r,
                    State::Failed,
                    attempts,
                    status,
                    Some(GatewayReason::MaxAttempts.into()),
                );
                if let Some(last) = reason.filter(|_| one_shot) {
                    c.reason = Some(last);
                }
                return plain(c);
            }
            let delay = retry_delay(limits.retry_base, attempts.max(1), after, fastrand::f64());
            let due = now + delay.max(Duration::from_millis(10));
            if due >= r.expires_at {
                return plain(done(
                    r,
                    State::Expired,
                    attempts,
                    status,
                    Some(GatewayReason::Expired.into()),
                ));
            }
            plain(Completion {
                id: r.id,
                state: State::Queued,
                attempts,
                status,
                reason,
                due_at: Some(due),
                conn: None,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcomes::testing::{answer, ready};

    const LIMITS: Limits = Limits {
        max_attempts: 3,
        retry_base: crate::outcomes::backoff::BASE,
    };
    const DAY: Duration = Duration::from_secs(86_400);

    /// An attempt Apple never answered is retried under the name of what happened to it.
    #[test]
    fn an_unanswered_attempt_is_named() {
        let now = SystemTime::now();
        let r = ready(0, DAY, None);
        for (outcome, reason) in [
            (Outcome::Timeout, GatewayReason::Timeout),
            (
                Outcome::ConnectionLost { reason: None },
                GatewayReason::ConnectionLost,
            ),
        ] {
            let d = decide(&r, "a", &outcome, LIMITS, now);
            assert_eq!(
                (d.completion.state, d.completion.status, d.completion.reason),
                (State::Queued, None, Some(reason.into()))
            );
        }
    }

    #[test]
    fn each_consequence_becomes_its_record() {
        let now = SystemTime::now();
        let r = ready(0, DAY, None);
        let d = decide(&r, "a", &answer(200, None), LIMITS, now);
        assert_eq!(
            (d.completion.state, d.completion.attempts),
            (State::Delivered, 1)
        );
        let d = decide(
            &r,
            "a",
            &answer(410, Some(Reason::Unregistered)),
            LIMITS,
            now,
        );
        assert_eq!(d.completion.state, State::Failed);
        assert_eq!(d.dead.unwrap().reason, Reason::Unregistered);
        let d = decide(&r, "a", &answer(400, Some(Reason::BadTopic)), LIMITS, now);
        assert_eq!(
            (d.completion.state, d.dead, d.halt),
            (State::Failed, None, None)
        );
        let d = decide(
            &r,
            "a",
            &answer(403, Some(Reason::InvalidProviderToken)),
            LIMITS,
            now,
        );
        assert_eq!(
            (d.completion.state, d.completion.attempts),
            (State::Queued, 0),
            "halted: kept, not failed"
        );
        assert_eq!(d.halt, Some(Cause::Apple(Reason::InvalidProviderToken)));
        let d = decide(
            &r,
            "a",
            &answer(503, Some(Reason::ServiceUnavailable)),
            LIMITS,
            now,
        );
        assert_eq!(
            (d.completion.state, d.completion.attempts),
            (State::Queued, 1)
        );
        assert!(d.completion.due_at.unwrap() > now);
    }

    #[test]
    fn retries_stop_at_max_attempts_expiry_and_one_shot() {
        let now = SystemTime::now();
        let busy = answer(503, Some(Reason::ServiceUnavailable));
        let d = decide(&ready(2, DAY, None), "a", &busy, LIMITS, now);
        assert_eq!(
            (d.completion.state, d.completion.reason),
            (State::Failed, Some(GatewayReason::MaxAttempts.into()))
        );
        let d = decide(
            &ready(0, Duration::from_millis(5), None),
            "a",
            &busy,
            LIMITS,
            now,
        );
        assert_eq!(
            d.completion.state,
            State::Expired,
            "a retry never goes past the expiry"
        );
        let d = decide(
            &ready(0, DAY, Some(Expiration::Immediately)),
            "a",
            &busy,
            LIMITS,
            now,
        );
        assert_eq!(
            (d.completion.state, d.completion.reason),
            (State::Failed, Some(Reason::ServiceUnavailable.into()))
        );
        // Unreachable does not use up attempts.
        let d = decide(
            &ready(2, DAY, None),
            "a",
            &Outcome::Unreachable,
            LIMITS,
            now,
        );
        assert_eq!(
            (d.completion.state, d.completion.attempts),
            (State::Queued, 2)
        );
    }
}
