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
    let presented = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .ok_or_else(unauthorized)?;
    check_key(keys, presented.trim()).ok_or_else(unauthorized)
}
