//! Apple's reasons as RFC 3463 enhanced status codes, for a DSN's `Status:` field: a bounce
//! processor that already reads mail bounces files a dead token where it files a dead
//! mailbox.

use crate::spool::State;

/// The status code of a failure (`failed` with Apple's or the gateway's reason, or
/// `expired`).
pub fn code(state: State, reason: &str) -> &'static str {
    if state == State::Expired {
        return "5.4.7"; // delivery time expired
    }
    match reason {
        // The "mailbox" is gone: the app was removed, or the token is no longer the app's.
        "Unregistered" | "DeviceTokenNotForTopic" | "ExpiredToken" => "5.1.1",
        // Not a valid "address" at all.
        "BadDeviceToken" | "MissingDeviceToken" => "5.1.3",
        "PayloadTooLarge" => "5.3.4", // message too big for the system
        // The notification itself is malformed.
        "PayloadEmpty" | "BadCollapseId" | "BadExpirationDate" | "BadMessageId" | "BadPriority"
        | "BadTopic" | "DuplicateHeaders" | "InvalidPushType" | "MissingTopic" | "BadPath"
        | "MethodNotAllowed" => "5.6.0",
        // The sender may not deliver this (credentials, topic).
        "TopicDisallowed"
        | "Forbidden"
        | "BadCertificate"
        | "BadCertificateEnvironment"
        | "InvalidProviderToken"
        | "MissingProviderToken"
        | "ExpiredProviderToken"
        | "TooManyProviderTokenUpdates"
        | "UnrelatedKeyIdInToken"
        | "NoUsableCredential" => "5.7.1",
        // Tokens of the other APNs environment: not addresses this app can reach.
        "LikelyWrongEnvironment" => "5.1.3",
        // Tried as often as the app allows on answers that asked for a retry.
        "MaxAttempts"
        | "TooManyRequests"
        | "InternalServerError"
        | "ServiceUnavailable"
        | "Shutdown"
        | "Timeout"
        | "ConnectionLost"
        | "ConnectionRejected" => "5.4.0",
        "Expired" => "5.4.7",
        _ => "5.0.0",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_issue_s_mapping() {
        assert_eq!(code(State::Failed, "Unregistered"), "5.1.1");
        assert_eq!(code(State::Failed, "BadDeviceToken"), "5.1.3");
        assert_eq!(code(State::Failed, "PayloadTooLarge"), "5.3.4");
        assert_eq!(code(State::Expired, "Expired"), "5.4.7");
        assert_eq!(code(State::Failed, "SomethingNew"), "5.0.0");
    }
}
