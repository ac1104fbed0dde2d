//! `GET /v1/apps/{app}/feedback` and `DELETE /v1/apps/{app}/feedback/{token}`: the dead-token
//! list that Apple's retired Feedback Service used to give.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use apns::DeviceToken;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};

use super::auth::authenticate;
use super::documents::{DeadTokenEntry, ErrorBody};
use super::error::{ApiError, Code};
use super::{ApiState, spool_error};
use crate::auth::Caller;
use crate::spool::Spool;

const DEFAULT_LIMIT: usize = 1000;
const MAX_LIMIT: usize = 10_000;

/// A `limit` query parameter: `default` when absent, else 1 to `max`.
pub(super) fn limit(given: Option<&str>, default: usize, max: usize) -> Result<usize, ApiError> {
    match given {
        None => Ok(default),
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=max).contains(l))
            .ok_or_else(|| {
                ApiError::new(Code::InvalidField, format!("\"limit\" must be 1 to {max}"))
            }),
    }
}

/// Scope first (forbidden for an app outside the key's list), then existence.
pub(super) fn check_app(state: &ApiState, caller: &Caller, app: &str) -> Result<(), ApiError> {
    if !caller.may_use(app) {
        return Err(ApiError::new(
            Code::ForbiddenApp,
            format!("this key may not use app {app:?}"),
        ));
    }
    if state.config().app(app).is_none() {
        return Err(ApiError::new(
            Code::UnknownAppInPath,
            format!("no app is named {app:?}"),
        ));
    }
    Ok(())
}

/// Clears a dead token in the spool and in dispatch's suppression set; `false` if it was not
/// registered dead. The app is the caller's to use.
pub(super) async fn clear_dead(
    state: &ApiState,
    app: &str,
    token: &DeviceToken,
) -> Result<bool, ApiError> {
    let cleared = state
        .spool
        .clear_dead_token(app, token)
        .await
        .map_err(|e| spool_error(&e))?;
    if cleared && let Some(d) = &state.dispatch {
        d.dead_tokens().remove(app, token);
    }
    Ok(cleared)
}

#[derive(Debug, serde::Deserialize)]
pub struct FeedbackQuery {
    since: Option<String>,
    limit: Option<String>,
}

#[utoipa::path(get, path = "/v1/apps/{app}/feedback", tag = "apps",
    params(
        ("app" = String, Path, description = "The app's name"),
        ("since" = Option<u64>, Query, description = "UNIX seconds; tokens declared dead at or after this (default 0)"),
        ("limit" = Option<u32>, Query, description = "At most this many (default 1000, at most 10000)", minimum = 1, maximum = 10000),
    ),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Dead tokens, oldest first", body = Vec<DeadTokenEntry>),
        (status = 400, description = "invalid_field (since or limit)", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 403, description = "forbidden_app", body = ErrorBody),
        (status = 404, description = "unknown_app", body = ErrorBody),
        (status = 500, description = "internal", body = ErrorBody), (status = 503, description = "spool_full or spool_unavailable; retry after Retry-After seconds", body = ErrorBody, headers(("Retry-After" = u32, description = "seconds to wait"))),
    ))]
pub async fn feedback(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
    query: Result<Query<FeedbackQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<DeadTokenEntry>>, ApiError> {
    let caller = authenticate(&state.config().api_keys, &headers)?;
    let (Path(app), Query(q)) = (path?, query?);
    check_app(&state, &caller, &app)?;
    let since = match q.since.as_deref() {
        None => UNIX_EPOCH,
        Some(s) => s
            .parse::<u64>()
            .ok()
            .and_then(|s| UNIX_EPOCH.checked_add(Duration::from_secs(s)))
            .ok_or_else(|| ApiError::new(Code::InvalidField, "\"since\" must be UNIX seconds"))?,
    };
    let limit = limit(q.limit.as_deref(), DEFAULT_LIMIT, MAX_LIMIT)?;
    let entries = state
        .spool
        .feedback(&app, since, limit)
        .await
        .map_err(|e| spool_error(&e))?;
    Ok(Json(entries.iter().map(DeadTokenEntry::from).collect()))
}

#[utoipa::path(delete, path = "/v1/apps/{app}/feedback/{token}", tag = "apps",
    params(
        ("app" = String, Path, description = "The app's name"),
        ("token" = String, Path, description = "The device token (hex)"),
    ),
    security(("api_key" = [])),
    responses(
        (status = 204, description = "The device registered again: sends to it resume"),
        (status = 400, description = "invalid_token", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 403, description = "forbidden_app", body = ErrorBody),
        (status = 404, description = "unknown_app, or not_found: the token is not registered dead", body = ErrorBody),
        (status = 500, description = "internal", body = ErrorBody), (status = 503, description = "spool_full or spool_unavailable; retry after Retry-After seconds", body = ErrorBody, headers(("Retry-After" = u32, description = "seconds to wait"))),
    ))]
pub async fn clear(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, axum::extract::rejection::PathRejection>,
) -> Result<StatusCode, ApiError> {
    let caller = authenticate(&state.config().api_keys, &headers)?;
    let Path((app, token)) = path?;
    check_app(&state, &caller, &app)?;
    let token =
        DeviceToken::parse(&token).map_err(|e| ApiError::new(Code::InvalidToken, e.to_string()))?;
    if clear_dead(&state, &app, &token).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::new(
            Code::NotFound,
            "that token is not registered dead for this app",
        ))
    }
}
