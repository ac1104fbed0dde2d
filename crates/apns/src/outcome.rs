//! What became of one attempt, and what the gateway does about it.
//!
//! Apple's answers are values, not errors: a 410 is information. [`Outcome`] records what
//! happened on the wire; [`Outcome::consequence`] turns it into one of the five decisions of
//! docs/dispatch.md, from Apple's reason rather than the status alone.

use std::time::{Duration, SystemTime};

use crate::notification::ApnsId;
use crate::reason::Reason;

/// An HTTP answer from APNs.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub status: u16,
    /// The `apns-id` APNs echoed (or made).
    pub apns_id: Option<ApnsId>,
    /// `reason` from the error body; `None` for 200.
    pub reason: Option<Reason>,
    /// For 410: when APNs decided the token was no longer valid.
    pub timestamp: Option<SystemTime>,
    /// A `Retry-After` header, if the server sent one.
    pub retry_after: Option<Duration>,
}

/// What happened to one attempt at sending a notification.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// APNs answered.
    Response(Response),
    /// No answer within the response timeout; the stream was cancelled. APNs may or may not
    /// have taken it, so a retry may duplicate it.
    Timeout,
    /// The connection failed while the request was in flight; it may have been processed.
    ConnectionLost {
        /// The GOAWAY reason, when APNs gave one we could read.
        reason: Option<Reason>,
    },
    /// No connection to APNs could be made (DNS, TCP, TLS). The request never left.
    Unreachable,
    /// The caller's deadline ([`crate::Pool::send_by`]) passed before a stream could be
    /// opened (waiting for a slot, or before a re-send). The request never left.
    NotSentInTime,
    /// The caller withdrew it ([`crate::Pool::send_until`]) before a stream was opened — an
    /// app halted by another notification's answer, say. The request never left.
    Withdrawn,
    /// The last connections were each closed before answering anything: APNs is refusing this
    /// app's credentials (a bad or wrong-environment certificate looks like that).
    ConnectionRejected,
}

/// What the gateway does with an attempt's outcome (docs/dispatch.md).
#[derive(Debug, Clone, PartialEq)]
pub enum Consequence {
    /// 200: done.
    Delivered,
    /// Try again later. `after` is the server's `Retry-After`, if any.
    Retry {
        after: Option<Duration>,
        /// False when the request never reached APNs; it does not use up an attempt.
        counts_as_attempt: bool,
    },
    /// The token is dead: fail the notification and register the token.
    DeadToken {
        /// Apple's timestamp for Unregistered.
        since: Option<SystemTime>,
    },
    /// Something about this notification only; fail it with Apple's reason.
    Rejected,
    /// Credentials or configuration: pause the app, keep its queue.
    AppHalted,
}

impl Outcome {
    /// A 200 response.
    pub fn is_delivered(&self) -> bool {
        matches!(self, Outcome::Response(r) if r.status == 200)
    }

    /// Apple's reason, if this outcome carries one.
    pub fn reason(&self) -> Option<&Reason> {
        match self {
            Outcome::Response(r) => r.reason.as_ref(),
            Outcome::ConnectionLost { reason } => reason.as_ref(),
            _ => None,
        }
    }

    /// The decision for this outcome.
    pub fn consequence(&self) -> Consequence {
        let retry = Consequence::Retry {
            after: None,
            counts_as_attempt: true,
        };
        match self {
            Outcome::Response(r) if r.status == 200 => Consequence::Delivered,
            Outcome::Response(r) => match &r.reason {
                Some(reason) => match consequence_of(reason, r.status) {
                    Consequence::Retry {
                        counts_as_attempt, ..
                    } => Consequence::Retry {
                        after: r.retry_after,
                        counts_as_attempt,
                    },
                    Consequence::DeadToken { .. } => Consequence::DeadToken { since: r.timestamp },
                    other => other,
                },
                None => by_status(r.status, r.retry_after),
            },
            Outcome::Timeout | Outcome::ConnectionLost { reason: None } => retry,
            Outcome::ConnectionLost {
                reason: Some(reason),
            } => match consequence_of(reason, reason.status()) {
                Consequence::AppHalted => Consequence::AppHalted,
                _ => retry,
            },
            Outcome::Unreachable | Outcome::NotSentInTime | Outcome::Withdrawn => {
                Consequence::Retry {
                    after: None,
                    counts_as_attempt: false,
                }
            }
            Outcome::ConnectionRejected => Consequence::AppHalted,
        }
    }
}

/// The reference's action column (§4), as data.
fn consequence_of(reason: &Reason, status: u16) -> Consequence {
    use Reason::*;
    let retry = Consequence::Retry {
        after: None,
        counts_as_attempt: true,
    };
    match reason {
        // The device or token is gone for this topic.
        Unregistered | ExpiredToken | BadDeviceToken | DeviceTokenNotForTopic => {
            Consequence::DeadToken { since: None }
        }
        // APNs asks us to come back later; the pool already re-signed the JWT or reconnected
        // once before an ExpiredProviderToken or IdleTimeout reaches here.
        TooManyRequests | InternalServerError | ServiceUnavailable | Shutdown | IdleTimeout
        | ExpiredProviderToken => retry,
        // Credentials and configuration: nothing for this app will succeed until fixed.
        BadCertificate
        | BadCertificateEnvironment
        | InvalidProviderToken
        | MissingProviderToken
        | BadEnvironmentKeyIdInToken
        | TopicDisallowed
        | TooManyProviderTokenUpdates
        | UnrelatedKeyIdInToken => Consequence::AppHalted,
        // This notification's own shape.
        BadCollapseId | BadExpirationDate | BadMessageId | BadPriority | BadTopic
        | DuplicateHeaders | InvalidPushType | MissingDeviceToken | MissingTopic | PayloadEmpty
        | Forbidden | BadPath | MethodNotAllowed | PayloadTooLarge => Consequence::Rejected,
        Unknown(_) => by_status(status, None),
    }
}

/// For answers without a reason we know: decide by status class.
fn by_status(status: u16, after: Option<Duration>) -> Consequence {
    match status {
        200 => Consequence::Delivered,
        410 => Consequence::DeadToken { since: None },
        429 | 500..=599 => Consequence::Retry {
            after,
            counts_as_attempt: true,
        },
        _ => Consequence::Rejected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(reason: Reason) -> Outcome {
        Outcome::Response(Response {
            status: reason.status(),
            apns_id: None,
            reason: Some(reason),
            timestamp: None,
            retry_after: None,
        })
    }

    /// The whole table: every known reason with the consequence docs/dispatch.md gives it.
    #[test]
    fn every_reason_has_the_designed_consequence() {
        use Reason::*;
        let retry = Consequence::Retry {
            after: None,
            counts_as_attempt: true,
        };
        let dead = Consequence::DeadToken { since: None };
        let table: Vec<(Reason, Consequence)> = vec![
            (BadCollapseId, Consequence::Rejected),
            (BadDeviceToken, dead.clone()),
            (BadExpirationDate, Consequence::Rejected),
            (BadMessageId, Consequence::Rejected),
            (BadPriority, Consequence::Rejected),
            (BadTopic, Consequence::Rejected),
            (DeviceTokenNotForTopic, dead.clone()),
            (DuplicateHeaders, Consequence::Rejected),
            (IdleTimeout, retry.clone()),
            (InvalidPushType, Consequence::Rejected),
            (MissingDeviceToken, Consequence::Rejected),
            (MissingTopic, Consequence::Rejected),
            (PayloadEmpty, Consequence::Rejected),
            (TopicDisallowed, Consequence::AppHalted),
            (BadCertificate, Consequence::AppHalted),
            (BadCertificateEnvironment, Consequence::AppHalted),
            (ExpiredProviderToken, retry.clone()),
            (Forbidden, Consequence::Rejected),
            (InvalidProviderToken, Consequence::AppHalted),
            (MissingProviderToken, Consequence::AppHalted),
            (UnrelatedKeyIdInToken, Consequence::AppHalted),
            (BadEnvironmentKeyIdInToken, Consequence::AppHalted),
            (BadPath, Consequence::Rejected),
            (MethodNotAllowed, Consequence::Rejected),
            (ExpiredToken, dead.clone()),
            (Unregistered, dead.clone()),
            (PayloadTooLarge, Consequence::Rejected),
            (TooManyProviderTokenUpdates, Consequence::AppHalted),
            (TooManyRequests, retry.clone()),
            (InternalServerError, retry.clone()),
            (ServiceUnavailable, retry.clone()),
            (Shutdown, retry.clone()),
        ];
        assert_eq!(
            table.len(),
            Reason::ALL.len(),
            "the table covers every reason"
        );
        for (reason, want) in table {
            assert_eq!(answer(reason.clone()).consequence(), want, "{reason}");
        }
    }

    #[test]
    fn unregistered_carries_apples_timestamp_and_retry_carries_retry_after() {
        let since = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let o = Outcome::Response(Response {
            status: 410,
            apns_id: None,
            reason: Some(Reason::Unregistered),
            timestamp: Some(since),
            retry_after: None,
        });
        assert_eq!(
            o.consequence(),
            Consequence::DeadToken { since: Some(since) }
        );
        let o = Outcome::Response(Response {
            status: 429,
            apns_id: None,
            reason: Some(Reason::TooManyRequests),
            timestamp: None,
            retry_after: Some(Duration::from_secs(30)),
        });
        assert_eq!(
            o.consequence(),
            Consequence::Retry {
                after: Some(Duration::from_secs(30)),
                counts_as_attempt: true
            }
        );
    }

    #[test]
    fn transport_outcomes() {
        assert!(matches!(
            Outcome::Timeout.consequence(),
            Consequence::Retry {
                counts_as_attempt: true,
                ..
            }
        ));
        assert!(matches!(
            Outcome::ConnectionLost { reason: None }.consequence(),
            Consequence::Retry { .. }
        ));
        assert_eq!(
            Outcome::ConnectionLost {
                reason: Some(Reason::BadCertificate)
            }
            .consequence(),
            Consequence::AppHalted
        );
        assert_eq!(
            Outcome::Unreachable.consequence(),
            Consequence::Retry {
                after: None,
                counts_as_attempt: false
            }
        );
        assert_eq!(
            Outcome::ConnectionRejected.consequence(),
            Consequence::AppHalted
        );
    }

    #[test]
    fn unknown_reasons_fall_back_to_the_status_class() {
        let mk = |status| {
            Outcome::Response(Response {
                status,
                apns_id: None,
                reason: Some(Reason::Unknown("Novel".into())),
                timestamp: None,
                retry_after: None,
            })
        };
        assert_eq!(
            mk(410).consequence(),
            Consequence::DeadToken { since: None }
        );
        assert!(matches!(mk(502).consequence(), Consequence::Retry { .. }));
        assert_eq!(mk(400).consequence(), Consequence::Rejected);
        assert!(
            Outcome::Response(Response {
                status: 200,
                apns_id: None,
                reason: None,
                timestamp: None,
                retry_after: None
            })
            .is_delivered()
        );
    }
}
