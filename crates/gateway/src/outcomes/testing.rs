//! Ready notifications and APNs answers for the unit tests of decisions and the guard.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use apns::{ApnsId, DeviceToken, Expiration, Outcome, PushType, Reason, Response};

use crate::spool::Sendable as Ready;
use crate::spool::StoredRequest;

pub(crate) fn ready(attempts: u32, expires_in: Duration, exp: Option<Expiration>) -> Ready {
    Ready {
        id: ApnsId::new(),
        token: DeviceToken::parse("aa").unwrap(),
        attempts,
        expires_at: SystemTime::now() + expires_in,
        request: Arc::new(StoredRequest {
            request_id: None,
            created_at: std::time::SystemTime::now(),
            app: "a".into(),
            payload: bytes::Bytes::from_static(b"{}"),
            push_type: PushType::Alert,
            priority: None,
            topic: None,
            collapse_id: None,
            apns_expiration: exp,
            supersede: None,
        }),
    }
}

pub(crate) fn answer(status: u16, reason: Option<Reason>) -> Outcome {
    Outcome::Response(Response {
        status,
        apns_id: None,
        reason,
        timestamp: None,
        retry_after: None,
    })
}
