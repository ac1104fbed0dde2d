//! Apple's request checks, in the order of the reference's simulator checklist (§9), each
//! answering with Apple's status and reason.
//!
//! 1. duplicate headers, then `apns-id` is a UUID (BadMessageId)
//! 2. method is POST (405 MethodNotAllowed)
//! 3. `apns-topic` present (MissingTopic), unless the connection has a client certificate
//! 4. collapse id at most 64 bytes (BadCollapseId)
//! 5. priority 10, 5 or 1 (BadPriority); expiration a number (BadExpirationDate)
//! 6. push type known (InvalidPushType); background not at priority 10 (BadPriority); topic
//!    carries the push type's suffix (BadTopic)
//! 7. path `/3/device/<hex>` (BadPath / MissingDeviceToken / BadDeviceToken, also for a token
//!    of a size no device issues), then the token lists: forced answers, unregistered (410 +
//!    timestamp), bad tokens
//! 8. credentials: client certificate or provider token
//! 9. body present (PayloadEmpty) and within 4096 bytes, 5120 for VoIP (PayloadTooLarge)

use apns::notification::{MAX_COLLAPSE_ID, PushType};
use apns::request::{
    APNS_COLLAPSE_ID, APNS_EXPIRATION, APNS_ID, APNS_PRIORITY, APNS_PUSH_TYPE, APNS_TOPIC,
    DEVICE_PATH,
};
use apns::{ApnsId, DeviceToken, Reason};
use http::request::Parts;

use crate::Behaviour;
use crate::auth::ConnTokens;

/// A refusal: status, reason, and for 410 the timestamp in ms.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub status: u16,
    pub reason: Reason,
    pub timestamp: Option<u64>,
}

impl From<Reason> for Rejection {
    fn from(reason: Reason) -> Rejection {
        Rejection {
            status: reason.status(),
            reason,
            timestamp: None,
        }
    }
}

/// What the connection proved about itself.
#[derive(Debug)]
pub struct ConnAuth {
    /// `Some(true)`: a client certificate from the trusted CA; `Some(false)`: none, or an
    /// untrusted one, while a client CA is configured; `None`: no client CA configured.
    pub certificate: Option<bool>,
    pub tokens: ConnTokens,
    /// Where provider tokens taken into use are counted.
    pub stats: Option<std::sync::Arc<crate::stats::Stats>>,
}

/// Runs every check; `Ok` carries the device token.
pub fn check(
    b: &Behaviour,
    conn: &ConnAuth,
    head: &Parts,
    body: &[u8],
    now_s: u64,
) -> Result<String, Rejection> {
    let h = &head.headers;
    for name in [
        &APNS_ID,
        &APNS_TOPIC,
        &APNS_PUSH_TYPE,
        &APNS_PRIORITY,
        &APNS_EXPIRATION,
        &APNS_COLLAPSE_ID,
        &http::header::AUTHORIZATION,
    ] {
        if h.get_all(name).iter().nth(1).is_some() {
            return Err(Reason::DuplicateHeaders.into());
        }
    }
    // A value that is not visible ASCII reads as a NUL, which fails every check below.
    let text = |name: &str| h.get(name).map(|v| v.to_str().unwrap_or("\u{0}"));

    // 1. apns-id
    if let Some(id) = text("apns-id")
        && ApnsId::parse(id).is_err()
    {
        return Err(Reason::BadMessageId.into());
    }
    // 2. method
    if head.method != http::Method::POST {
        return Err(Reason::MethodNotAllowed.into());
    }
    // 3. topic
    let cert_conn = conn.certificate == Some(true);
    let topic = text("apns-topic");
    if topic.is_none() && !cert_conn {
        return Err(Reason::MissingTopic.into());
    }
    // 4. collapse id
    if text("apns-collapse-id").is_some_and(|c| c.len() > MAX_COLLAPSE_ID) {
        return Err(Reason::BadCollapseId.into());
    }
    // 5. priority and expiration
    let priority = match text("apns-priority") {
        None => None,
        Some(p @ ("10" | "5" | "1")) => Some(p),
        Some(_) => return Err(Reason::BadPriority.into()),
    };
    if text("apns-expiration").is_some_and(|e| e.parse::<u64>().is_err()) {
        return Err(Reason::BadExpirationDate.into());
    }
    // 6. push type, with its priority and topic rules
    let push_type = match text("apns-push-type") {
        None => None,
        Some(t) => match PushType::parse(t) {
            Ok(PushType::Other(_)) | Err(_) => return Err(Reason::InvalidPushType.into()),
            Ok(t) => Some(t),
        },
    };
    if push_type == Some(PushType::Background) && priority == Some("10") {
        return Err(Reason::BadPriority.into());
    }
    if let (Some(t), Some(topic)) = (&push_type, topic)
        && let Some(suffix) = t.topic_suffix()
        && !topic.ends_with(suffix)
    {
        return Err(Reason::BadTopic.into());
    }
    // 7. path and token lists
    let path = head.uri.path();
    let Some(token) = path.strip_prefix(DEVICE_PATH) else {
        return Err(Reason::BadPath.into());
    };
    if token.is_empty() {
        return Err(Reason::MissingDeviceToken.into());
    }
    if token.contains('/') {
        return Err(Reason::BadPath.into());
    }
    let token = DeviceToken::parse(token).map_err(|_| Rejection::from(Reason::BadDeviceToken))?;
    if !b.token_bytes.contains(&(token.as_str().len() / 2)) {
        return Err(Reason::BadDeviceToken.into());
    }
    let token = token.as_str();
    if let Some((status, reason)) = b.reasons.get(token) {
        return Err(Rejection {
            status: *status,
            timestamp: (*status == 410).then_some(now_s * 1000),
            reason: reason.clone(),
        });
    }
    if let Some(ts) = b.unregistered.get(token) {
        return Err(Rejection {
            status: 410,
            reason: Reason::Unregistered,
            timestamp: Some(*ts),
        });
    }
    if b.bad_tokens.contains(token) {
        return Err(Reason::BadDeviceToken.into());
    }
    // 8. credentials
    match (conn.certificate, &b.jwt) {
        (Some(true), _) => {}
        (_, Some(verifier)) => {
            let header = text("authorization");
            if conn.tokens.check(verifier, header, now_s)?
                && let (Some(stats), Some(h)) = (&conn.stats, header)
            {
                stats.provider_token(h);
            }
        }
        (Some(false), None) => return Err(Reason::BadCertificate.into()),
        (None, None) => {}
    }
    // 9. payload
    if body.is_empty() {
        return Err(Reason::PayloadEmpty.into());
    }
    let limit = push_type.as_ref().map_or(4096, PushType::payload_limit);
    if body.len() > limit {
        return Err(Reason::PayloadTooLarge.into());
    }
    Ok(token.to_owned())
}
