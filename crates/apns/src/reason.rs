//! Apple's reason strings (`{"reason": "..."}` in an error response or a GOAWAY's debug data).
//!
//! Every reason in the provider API reference is a variant; anything else Apple may add later
//! lands in [`Reason::Unknown`] with its text, so a new reason is information, never a parse
//! failure.

use std::fmt;
use std::str::FromStr;

macro_rules! reasons {
    ($( $(#[$doc:meta])* $variant:ident = $status:literal ),+ $(,)?) => {
        /// A reason APNs gives for refusing a request (reference §4).
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum Reason {
            $( $(#[$doc])* $variant, )+
            /// A reason string this version does not know; kept verbatim.
            Unknown(Box<str>),
        }

        impl Reason {
            /// Every known reason, in the order of the reference table.
            pub const ALL: &'static [Reason] = &[ $( Reason::$variant, )+ ];

            /// The exact string Apple uses.
            pub fn as_str(&self) -> &str {
                match self {
                    $( Reason::$variant => stringify!($variant), )+
                    Reason::Unknown(s) => s,
                }
            }

            /// The HTTP status Apple sends with this reason (500 for unknown ones).
            pub fn status(&self) -> u16 {
                match self {
                    $( Reason::$variant => $status, )+
                    Reason::Unknown(_) => 500,
                }
            }

            /// Parses a reason string; never fails (unknown strings are kept).
            pub fn parse(s: &str) -> Reason {
                match s {
                    $( stringify!($variant) => Reason::$variant, )+
                    other => Reason::Unknown(other.into()),
                }
            }
        }
    };
}

reasons! {
    /// The collapse identifier exceeds 64 bytes.
    BadCollapseId = 400,
    /// The token is malformed or belongs to the other environment.
    BadDeviceToken = 400,
    /// `apns-expiration` is invalid.
    BadExpirationDate = 400,
    /// `apns-id` is not a canonical UUID.
    BadMessageId = 400,
    /// `apns-priority` is not allowed (for this push type).
    BadPriority = 400,
    /// `apns-topic` is invalid.
    BadTopic = 400,
    /// The token belongs to another topic.
    DeviceTokenNotForTopic = 400,
    /// A header was repeated.
    DuplicateHeaders = 400,
    /// The connection was idle too long.
    IdleTimeout = 400,
    /// Unknown `apns-push-type`.
    InvalidPushType = 400,
    /// No token in the path.
    MissingDeviceToken = 400,
    /// The topic is required but missing.
    MissingTopic = 400,
    /// The body is empty.
    PayloadEmpty = 400,
    /// Pushing to this topic is not allowed.
    TopicDisallowed = 400,
    /// The client certificate is invalid.
    BadCertificate = 403,
    /// The client certificate is for the other environment.
    BadCertificateEnvironment = 403,
    /// The provider token is more than an hour old.
    ExpiredProviderToken = 403,
    /// The action is not allowed.
    Forbidden = 403,
    /// The provider token is invalid (signature, kid, team or topic).
    InvalidProviderToken = 403,
    /// Neither a certificate nor a provider token.
    MissingProviderToken = 403,
    /// The key id is unrelated to the key this connection started with.
    UnrelatedKeyIdInToken = 403,
    /// The key is restricted to the other environment.
    BadEnvironmentKeyIdInToken = 403,
    /// The request path is invalid.
    BadPath = 404,
    /// The method is not POST.
    MethodNotAllowed = 405,
    /// The device token has expired.
    ExpiredToken = 410,
    /// The token is no longer active for the topic (comes with a timestamp).
    Unregistered = 410,
    /// The payload is over the limit.
    PayloadTooLarge = 413,
    /// The provider token was renewed too often on this connection.
    TooManyProviderTokenUpdates = 429,
    /// Too many requests for one device token.
    TooManyRequests = 429,
    /// APNs failed internally.
    InternalServerError = 500,
    /// APNs is unavailable.
    ServiceUnavailable = 503,
    /// This APNs server is shutting down.
    Shutdown = 503,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Reason {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Reason::parse(s))
    }
}

impl serde::Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Reason {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Ok(Reason::parse(&s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_reason_round_trips_through_its_string() {
        assert_eq!(Reason::ALL.len(), 32);
        for r in Reason::ALL {
            assert_eq!(&Reason::parse(r.as_str()), r);
            assert!(!matches!(r, Reason::Unknown(_)));
        }
    }

    #[test]
    fn an_unknown_reason_is_kept_verbatim() {
        let r = Reason::parse("SomethingNew");
        assert_eq!(r, Reason::Unknown("SomethingNew".into()));
        assert_eq!(r.to_string(), "SomethingNew");
    }

    #[test]
    fn reasons_deserialize_from_an_error_body() {
        #[derive(serde::Deserialize)]
        struct Body {
            reason: Reason,
        }
        let b: Body = serde_json::from_str(r#"{"reason":"Unregistered"}"#).unwrap();
        assert_eq!(b.reason, Reason::Unregistered);
        assert_eq!(b.reason.status(), 410);
    }
}
