//! Stored columns back into values. A value that does not decode is [`SpoolError::Corrupt`],
//! never a panic: a damaged row is skipped or reported, and the rest of the spool still works.

use apns::{ApnsId, DeviceToken};

use crate::spool::{SpoolError, State, StoredRequest};

pub(super) fn token_from_bytes(b: &[u8]) -> Result<DeviceToken, SpoolError> {
    DeviceToken::from_bytes(b).map_err(|_| SpoolError::Corrupt("stored token"))
}

pub(super) fn decode_id(b: &[u8]) -> Result<ApnsId, SpoolError> {
    id_from_bytes(b).map_err(|_| SpoolError::Corrupt("stored id"))
}

/// An id as SQLite hands it over, for statements that read ids inside the writer.
pub(super) fn id_from_bytes(b: &[u8]) -> Result<ApnsId, rusqlite::Error> {
    uuid::Uuid::from_slice(b)
        .map(ApnsId::from_uuid)
        .map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Blob, Box::new(e))
        })
}

pub(super) fn state(n: i64) -> Result<State, SpoolError> {
    State::from_i64(n).ok_or(SpoolError::Corrupt("unknown state"))
}

/// A request's stored columns back into values (one argument per column group read).
#[allow(clippy::too_many_arguments)]
pub(super) fn decode_request(
    app: String,
    payload: Vec<u8>,
    push_type: &str,
    priority: Option<u8>,
    topic: Option<String>,
    collapse_id: Option<String>,
    apns_expiration: Option<i64>,
    (rid, created_at, skey): (Option<Vec<u8>>, i64, Option<i64>),
) -> Result<StoredRequest, SpoolError> {
    let bad = |_| SpoolError::Corrupt("stored request headers");
    Ok(StoredRequest {
        request_id: rid
            .as_deref()
            .and_then(|b| uuid::Uuid::from_slice(b).ok())
            .map(crate::spool::RequestId::from_uuid),
        created_at: crate::spool::from_ms(created_at),
        app,
        payload: bytes::Bytes::from(payload),
        push_type: apns::PushType::parse(push_type).map_err(bad)?,
        priority: priority
            .map(apns::Priority::from_u8)
            .transpose()
            .map_err(bad)?,
        topic: topic
            .as_deref()
            .map(apns::Topic::parse)
            .transpose()
            .map_err(bad)?,
        collapse_id: crate::spool::stored_collapse_id(collapse_id.as_deref()),
        apns_expiration: apns_expiration.map(|e| apns::Expiration::from_unix(e.max(0) as u64)),
        supersede: skey.map(crate::spool::SupersedeKey::from_i64),
    })
}
