//! `Authorization: Bearer <key>` for the HTTP API, on top of [`crate::auth`].

use axum::http::HeaderMap;

use super::error::{ApiError, Code};
use crate::auth::{Caller, check_key};
use crate::config::ApiKey;

/// Finds the key presented in `headers`, or answers 401.
pub fn authenticate(keys: &[ApiKey], headers: &HeaderMap) -> Result<Caller, ApiError> {
    let unauthorized = || {
        ApiError::new(
            Code::Unauthorized,
            "a valid API key is required (Authorization: Bearer <key>)",
        )
    };
    let presented = credentials(headers, "Bearer").ok_or_else(unauthorized)?;
    check_key(keys, presented).ok_or_else(|| unauthorized().refused_credential())
}

/// The credentials of an `Authorization` header in `scheme`, which is matched in any case
/// (RFC 9110 §11.1).
pub fn credentials<'h>(headers: &'h HeaderMap, scheme: &str) -> Option<&'h str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .trim();
    let (given, rest) = value.split_once(' ')?;
    given.eq_ignore_ascii_case(scheme).then(|| rest.trim())
}
