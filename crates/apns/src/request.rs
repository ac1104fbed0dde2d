//! The wire form of a notification: HTTP/2 request head out, response in.
//!
//! Header values that change with every request (`apns-id`, `apns-expiration`,
//! `apns-collapse-id`) are marked sensitive, so h2's HPACK encoder sends them as never-indexed
//! literals and they do not churn APNs' small dynamic table (reference §2, HPACK).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::{Method, Request};

use crate::notification::{ApnsId, Notification};
use crate::outcome::Response;
use crate::reason::Reason;

pub const APNS_ID: HeaderName = HeaderName::from_static("apns-id");
pub const APNS_PUSH_TYPE: HeaderName = HeaderName::from_static("apns-push-type");
pub const APNS_PRIORITY: HeaderName = HeaderName::from_static("apns-priority");
pub const APNS_TOPIC: HeaderName = HeaderName::from_static("apns-topic");
pub const APNS_EXPIRATION: HeaderName = HeaderName::from_static("apns-expiration");
pub const APNS_COLLAPSE_ID: HeaderName = HeaderName::from_static("apns-collapse-id");

/// The path prefix of device pushes.
pub const DEVICE_PATH: &str = "/3/device/";

/// Builds the request head for `n`. `authorization` is the provider token header for token
/// auth, `None` for certificate auth.
pub fn build_request(
    n: &Notification,
    authority: &Authority,
    authorization: Option<&HeaderValue>,
) -> Request<()> {
    let mut path = String::with_capacity(DEVICE_PATH.len() + n.token.as_str().len());
    path.push_str(DEVICE_PATH);
    path.push_str(n.token.as_str());
    let path = PathAndQuery::try_from(path).expect("/3/device/ plus hex is a valid path");
    let uri = Uri::builder()
        .scheme(Scheme::HTTPS)
        .authority(authority.clone())
        .path_and_query(path)
        .build()
        .expect("scheme, authority and path are each valid");
    let mut req = Request::new(());
    *req.method_mut() = Method::POST;
    *req.uri_mut() = uri;
    let h = req.headers_mut();
    // Six headers fit in the smallest table (8 slots, 6 entries, ~600 bytes: one allocation
    // the allocator serves from its per-thread cache); room for seven would double it past
    // that cache. A collapse id, the rare seventh, grows it.
    h.reserve(6);
    if let Some(auth) = authorization {
        h.insert(http::header::AUTHORIZATION, auth.clone());
    }
    let mut buf = [0u8; 36];
    let mut id = HeaderValue::from_str(n.id.encode(&mut buf)).expect("a UUID is ASCII");
    id.set_sensitive(true);
    h.insert(APNS_ID, id);
    h.insert(APNS_PUSH_TYPE, push_type_value(n));
    if let Some(p) = n.priority {
        h.insert(APNS_PRIORITY, HeaderValue::from_static(p.as_str()));
    }
    if let Some(t) = &n.topic {
        h.insert(
            APNS_TOPIC,
            HeaderValue::from_str(t.as_str()).expect("topics are checked to be visible ASCII"),
        );
    }
    if let Some(e) = n.expiration {
        let mut v = HeaderValue::from(e.as_unix());
        v.set_sensitive(true);
        h.insert(APNS_EXPIRATION, v);
    }
    if let Some(c) = &n.collapse_id {
        let mut v = HeaderValue::from_str(c.as_str())
            .expect("collapse ids are checked to be printable ASCII");
        v.set_sensitive(true);
        h.insert(APNS_COLLAPSE_ID, v);
    }
    req
}

fn push_type_value(n: &Notification) -> HeaderValue {
    use crate::notification::PushType::*;
    match &n.push_type {
        Other(s) => HeaderValue::from_str(s).expect("push types are checked to be lowercase words"),
        known => HeaderValue::from_static(match known {
            Alert => "alert",
            Background => "background",
            Voip => "voip",
            Complication => "complication",
            FileProvider => "fileprovider",
            Location => "location",
            Mdm => "mdm",
            LiveActivity => "liveactivity",
            PushToTalk => "pushtotalk",
            Controls => "controls",
            Widgets => "widgets",
            Other(_) => unreachable!("handled above"),
        }),
    }
}

/// The JSON body of an error response.
#[derive(Debug, serde::Deserialize, serde::Serialize)]
pub struct ErrorBody {
    pub reason: Reason,
    /// Milliseconds since the epoch (410 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<u64>,
}

/// Turns a response head and its body into a [`Response`]. A body that is not the documented
/// JSON leaves `reason` empty; the status still decides.
pub fn parse_response(head: &http::response::Parts, body: &[u8]) -> Response {
    let status = head.status.as_u16();
    let apns_id = head
        .headers
        .get(APNS_ID)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| ApnsId::parse(s).ok());
    let retry_after = head
        .headers
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let (reason, timestamp) = if status == 200 || body.is_empty() {
        (None, None)
    } else {
        match serde_json::from_slice::<ErrorBody>(body) {
            Ok(b) => (
                Some(b.reason),
                b.timestamp.map(|ms| UNIX_EPOCH + Duration::from_millis(ms)),
            ),
            Err(_) => (None, None),
        }
    };
    Response {
        status,
        apns_id,
        reason,
        timestamp,
        retry_after,
    }
}

/// Milliseconds since the epoch, as APNs writes 410 timestamps.
pub fn unix_millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notification::*;
    use bytes::Bytes;

    #[test]
    fn request_head_carries_every_header() {
        let mut n = Notification::new(
            DeviceToken::parse("AABBCC").unwrap(),
            PushType::Alert,
            Bytes::from_static(b"{}"),
        );
        n.topic = Some(Topic::parse("com.example.demo").unwrap());
        n.priority = Some(Priority::Conserve);
        n.expiration = Some(Expiration::At(1_800_000_000));
        n.collapse_id = Some(CollapseId::parse("score").unwrap());
        let auth = HeaderValue::from_static("bearer x.y.z");
        let req = build_request(
            &n,
            &Authority::from_static("api.push.apple.com"),
            Some(&auth),
        );
        assert_eq!(req.method(), Method::POST);
        assert_eq!(
            req.uri().to_string(),
            "https://api.push.apple.com/3/device/aabbcc"
        );
        let h = req.headers();
        assert_eq!(h["apns-id"], n.id.to_string().as_str());
        assert!(h["apns-id"].is_sensitive());
        assert_eq!(h["apns-push-type"], "alert");
        assert_eq!(h["apns-priority"], "5");
        assert_eq!(h["apns-topic"], "com.example.demo");
        assert_eq!(h["apns-expiration"], "1800000000");
        assert!(h["apns-expiration"].is_sensitive());
        assert_eq!(h["apns-collapse-id"], "score");
        assert_eq!(h["authorization"], "bearer x.y.z");
        assert_eq!(h.len(), 7);
    }

    #[test]
    fn optional_headers_are_left_out() {
        let n = Notification::new(
            DeviceToken::parse("aa").unwrap(),
            PushType::Background,
            Bytes::from_static(b"{}"),
        );
        let req = build_request(&n, &Authority::from_static("h:1"), None);
        let names: Vec<_> = req.headers().keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["apns-id", "apns-push-type"]);
    }

    #[test]
    fn error_responses_parse_reason_timestamp_and_retry_after() {
        let (mut head, ()) = http::Response::new(()).into_parts();
        head.status = http::StatusCode::GONE;
        let id = ApnsId::new();
        head.headers
            .insert(APNS_ID, HeaderValue::from_str(&id.to_string()).unwrap());
        head.headers
            .insert(http::header::RETRY_AFTER, HeaderValue::from_static("7"));
        let r = parse_response(
            &head,
            br#"{"reason":"Unregistered","timestamp":1700000000123}"#,
        );
        assert_eq!(r.status, 410);
        assert_eq!(r.apns_id, Some(id));
        assert_eq!(r.reason, Some(Reason::Unregistered));
        assert_eq!(unix_millis(r.timestamp.unwrap()), 1_700_000_000_123);
        assert_eq!(r.retry_after, Some(Duration::from_secs(7)));
        let r = parse_response(&head, b"not json");
        assert_eq!((r.status, r.reason), (410, None));
    }
}
