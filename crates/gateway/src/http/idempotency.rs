//! The `Idempotency-Key` request header (IETF httpapi draft "The Idempotency-Key HTTP Header
//! Field"): a client that retries a `POST` after a lost answer sends the same key, and the
//! submission is stored once. Keys are scoped per API key and compared with the SHA-256 of
//! the raw body (`spool::idempotency`).

use axum::http::{HeaderMap, HeaderName, HeaderValue};

use super::error::{ApiError, Code};
use crate::auth::Caller;
use crate::spool::IdempotencyKey;

/// The request header.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// On an answer replayed from an earlier request with the same key.
pub const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
/// Its value.
pub const TRUE: HeaderValue = HeaderValue::from_static("true");

/// The longest key taken.
const MAX_KEY: usize = 255;

/// The request's key, if it sent one, for `caller` on `route` and the raw `body`. The draft
/// spells the value as a structured-field string (`"…"`); the bare token most clients send is
/// taken too. Keys are per API key and per route: the same key on two routes is two keys.
pub fn key(
    headers: &HeaderMap,
    caller: &Caller,
    route: &str,
    body: &[u8],
) -> Result<Option<IdempotencyKey>, ApiError> {
    let mut values = headers.get_all(&IDEMPOTENCY_KEY).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let bad = |why: &str| {
        ApiError::new(
            Code::InvalidField,
            format!("the Idempotency-Key header {why}"),
        )
    };
    if values.next().is_some() {
        return Err(bad("is given more than once"));
    }
    let text = value
        .to_str()
        .map_err(|_| bad("is not visible ASCII"))?
        .trim();
    let text = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text);
    if text.is_empty() || text.len() > MAX_KEY {
        return Err(bad(&format!("must be 1 to {MAX_KEY} characters")));
    }
    if !text
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
    {
        return Err(bad(
            "may hold visible ASCII only, without quotes or backslashes",
        ));
    }
    Ok(Some(IdempotencyKey::new(
        format!("key:{}:{route}", caller.name),
        text,
        body,
    )))
}
