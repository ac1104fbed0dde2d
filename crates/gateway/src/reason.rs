//! Why a notification failed, expired or went back to the queue, and why an app halted: Apple's
//! reason, or one of the gateway's own.
//!
//! Both are stored and shown as one text, spelled as Apple spells its reasons (`Unregistered`,
//! `MaxAttempts`), so the API, the events and the spool's rows keep one vocabulary. The
//! gateway's names are none of Apple's (a test checks it); a reason Apple adds later parses as
//! [`apns::Reason::Unknown`] unless Apple were to reuse one of these names, and even then
//! it would read back as the same text.

use std::fmt;

use apns::Reason;

/// Apple's reason, or the gateway's own.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Cause {
    Apple(Reason),
    Gateway(GatewayReason),
}

/// The reasons the gateway gives itself, where Apple said nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GatewayReason {
    /// Its `expires_at` passed before it could be delivered.
    Expired,
    /// Every attempt the app allows was used on retryable answers.
    MaxAttempts,
    /// The app has no credential that can sign or connect (expired, unreadable, removed).
    NoUsableCredential,
    /// Answers look like tokens of the other APNs environment (`BadDeviceToken` in a row).
    LikelyWrongEnvironment,
    /// APNs closed the connection without a reason the gateway could read.
    ConnectionRejected,
    /// An attempt got no answer within the response timeout (it is retried).
    Timeout,
    /// The connection broke under an attempt before its answer (it is retried).
    ConnectionLost,
    /// Withdrawn by a cancel before it was sent.
    Cancelled,
    /// Replaced before it was sent by a newer notification (`[[apps]] supersede`).
    Superseded,
}

impl GatewayReason {
    pub const ALL: [GatewayReason; 9] = [
        GatewayReason::Expired,
        GatewayReason::MaxAttempts,
        GatewayReason::NoUsableCredential,
        GatewayReason::LikelyWrongEnvironment,
        GatewayReason::ConnectionRejected,
        GatewayReason::Timeout,
        GatewayReason::ConnectionLost,
        GatewayReason::Cancelled,
        GatewayReason::Superseded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            GatewayReason::Expired => "Expired",
            GatewayReason::MaxAttempts => "MaxAttempts",
            GatewayReason::NoUsableCredential => "NoUsableCredential",
            GatewayReason::LikelyWrongEnvironment => "LikelyWrongEnvironment",
            GatewayReason::ConnectionRejected => "ConnectionRejected",
            GatewayReason::Timeout => "Timeout",
            GatewayReason::ConnectionLost => "ConnectionLost",
            GatewayReason::Cancelled => "Cancelled",
            GatewayReason::Superseded => "Superseded",
        }
    }
}

impl Cause {
    /// A stored or reported reason back into its kind.
    pub fn parse(s: &str) -> Cause {
        match GatewayReason::ALL.into_iter().find(|g| g.as_str() == s) {
            Some(g) => Cause::Gateway(g),
            None => Cause::Apple(Reason::parse(s)),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Cause::Apple(r) => r.as_str(),
            Cause::Gateway(g) => g.as_str(),
        }
    }

    /// Apple's reason, if it is one.
    pub fn apple(&self) -> Option<&Reason> {
        match self {
            Cause::Apple(r) => Some(r),
            Cause::Gateway(_) => None,
        }
    }
}

impl From<Reason> for Cause {
    fn from(r: Reason) -> Cause {
        Cause::Apple(r)
    }
}

impl From<GatewayReason> for Cause {
    fn from(g: GatewayReason) -> Cause {
        Cause::Gateway(g)
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_reads_back_as_itself() {
        for g in GatewayReason::ALL {
            assert_eq!(Cause::parse(g.as_str()), Cause::Gateway(g));
        }
        for r in [
            Reason::Unregistered,
            Reason::BadDeviceToken,
            Reason::TooManyRequests,
        ] {
            assert_eq!(Cause::parse(r.as_str()), Cause::Apple(r));
        }
        assert_eq!(
            Cause::parse("SomethingNew"),
            Cause::Apple(Reason::Unknown("SomethingNew".into()))
        );
    }

    /// None of the gateway's names is one Apple uses: a stored Apple reason never reads back
    /// as the gateway's.
    #[test]
    fn the_gateways_names_are_not_apples() {
        for g in GatewayReason::ALL {
            assert!(
                matches!(Reason::parse(g.as_str()), Reason::Unknown(_)),
                "{} is one of Apple's reasons",
                g.as_str()
            );
        }
    }
}
