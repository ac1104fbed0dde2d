//! The dashboard's controls (CSRF-checked, for the logged-in admin): an app's pause and
//! resume, and the cancel of a waiting notification or of what of its request still waits,
//! offered by the lookup box. They do what the API's routes do (`http::cancel`).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;

use super::super::ApiState;
use super::super::cancel::{
    PauseDocument, RequestCancelled, cancel_notification, cancel_submission, set_pause,
};
use super::super::error::ApiError;
use super::{csrf_header, session, unauthorized};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PauseForm {
    #[serde(default)]
    reject: bool,
}

pub(super) async fn pause(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(app): Path<String>,
    form: Option<Json<PauseForm>>,
) -> Result<Json<PauseDocument>, ApiError> {
    let (_, s) = session(&state, &headers).ok_or_else(unauthorized)?;
    csrf_header(&s, &headers)?;
    let reject = form.is_some_and(|Json(f)| f.reject);
    set_pause(&state, &s.caller, &app, Some(reject))
        .await
        .map(Json)
}

pub(super) async fn resume(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(app): Path<String>,
) -> Result<Json<PauseDocument>, ApiError> {
    let (_, s) = session(&state, &headers).ok_or_else(unauthorized)?;
    csrf_header(&s, &headers)?;
    set_pause(&state, &s.caller, &app, None).await.map(Json)
}

pub(super) async fn cancel(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let (_, s) = session(&state, &headers).ok_or_else(unauthorized)?;
    csrf_header(&s, &headers)?;
    cancel_notification(&state, &s.caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn cancel_request(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(rid): Path<String>,
) -> Result<Json<RequestCancelled>, ApiError> {
    let (_, s) = session(&state, &headers).ok_or_else(unauthorized)?;
    csrf_header(&s, &headers)?;
    cancel_submission(&state, &s.caller, &rid).await.map(Json)
}
