//! The lookup box's token half: a device token's document (`GET /v1/tokens/{app}/{token}`'s)
//! for the logged-in admin, and clearing its dead registration (CSRF-checked). A notification
//! id is looked up through `/dashboard/notifications/{id}`, which the test send follows too.

use std::sync::Arc;

use apns::DeviceToken;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};

use super::super::ApiState;
use super::super::apps::{check_app, clear_dead};
use super::super::documents::TokenDocument;
use super::super::error::{ApiError, Code};
use super::{session, unauthorized};

/// How many of a token's notifications the box shows.
const SHOWN: usize = 20;

fn parse(token: &str) -> Result<DeviceToken, ApiError> {
    DeviceToken::parse(token.trim()).map_err(|e| ApiError::new(Code::InvalidToken, e.to_string()))
}

pub(super) async fn token(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path((app, token)): Path<(String, String)>,
) -> Result<Json<TokenDocument>, ApiError> {
    let (_, s) = session(&state, &headers).ok_or_else(unauthorized)?;
    check_app(&state, &s.caller, &app)?;
    let token = parse(&token)?;
    Ok(Json(
        super::super::tokens::lookup(&state, &app, &token, SHOWN).await?,
    ))
}

pub(super) async fn clear(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path((app, token)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let (_, s) = session(&state, &headers).ok_or_else(unauthorized)?;
    super::csrf_header(&s, &headers)?;
    check_app(&state, &s.caller, &app)?;
    let token = parse(&token)?;
    if clear_dead(&state, &app, &token).await? {
        tracing::info!(key = %s.caller.name, app, "dashboard cleared a dead token");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::new(
            Code::NotFound,
            "that token is not registered dead for this app",
        ))
    }
}
