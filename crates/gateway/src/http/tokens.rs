//! `GET /v1/tokens/{app}/{token}`: "what happened to this device?" — whether the token is
//! registered dead, and its last notifications. The dashboard's lookup box asks the same.

use std::sync::Arc;

use apns::DeviceToken;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;

use super::apps::check_app;
use super::auth::authenticate;
use super::documents::{DeadTokenState, ErrorBody, NotificationDocument, TokenDocument};
use super::error::{ApiError, Code};
use super::{ApiState, spool_error};
use crate::rfc3339;
use crate::spool::Spool;

const DEFAULT_LIMIT: usize = 20;
const MAX_LIMIT: usize = 100;

#[derive(Debug, serde::Deserialize)]
pub struct TokenQuery {
    limit: Option<String>,
}

#[utoipa::path(get, path = "/v1/tokens/{app}/{token}", tag = "apps",
    params(
        ("app" = String, Path, description = "The app's name"),
        ("token" = String, Path, description = "The device token (hex)"),
        ("limit" = Option<u32>, Query, description = "At most this many notifications (default 20, at most 100)", minimum = 1, maximum = 100),
    ),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Whether the token is registered dead, and its last notifications (newest first)", body = TokenDocument),
        (status = 400, description = "invalid_token, or invalid_field (limit)", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 403, description = "forbidden_app", body = ErrorBody),
        (status = 404, description = "unknown_app", body = ErrorBody),
        (status = 500, description = "internal", body = ErrorBody), (status = 503, description = "spool_full or spool_unavailable; retry after Retry-After seconds", body = ErrorBody, headers(("Retry-After" = u32, description = "seconds to wait"))),
    ))]
pub async fn token(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, axum::extract::rejection::PathRejection>,
    query: Result<Query<TokenQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<TokenDocument>, ApiError> {
    let caller = authenticate(&state.config().api_keys, &headers)?;
    let (Path((app, token)), Query(q)) = (path?, query?);
    check_app(&state, &caller, &app)?;
    let token =
        DeviceToken::parse(&token).map_err(|e| ApiError::new(Code::InvalidToken, e.to_string()))?;
    let limit = super::apps::limit(q.limit.as_deref(), DEFAULT_LIMIT, MAX_LIMIT)?;
    Ok(Json(lookup(&state, &app, &token, limit).await?))
}

/// The token's document; the app is the caller's to read.
pub(super) async fn lookup(
    state: &ApiState,
    app: &str,
    token: &DeviceToken,
    limit: usize,
) -> Result<TokenDocument, ApiError> {
    let dead = state
        .spool
        .dead_token(app, token)
        .await
        .map_err(|e| spool_error(&e))?;
    let found = state
        .spool
        .token_history(app, token, limit)
        .await
        .map_err(|e| spool_error(&e))?;
    Ok(TokenDocument {
        app: app.to_owned(),
        token: token.as_str().to_owned(),
        dead: dead.map(|(reason, since)| DeadTokenState {
            reason: reason.as_str().to_owned(),
            since: rfc3339::format(since),
        }),
        notifications: found
            .notifications
            .into_iter()
            .map(|r| NotificationDocument::from(&state.with_live_state(r)))
            .collect(),
        truncated: found.truncated,
    })
}
