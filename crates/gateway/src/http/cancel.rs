//! Taking work back (docs/cancel.md): `DELETE /v1/notifications/{id}`,
//! `POST /v1/requests/{request_id}/cancel`, `POST /v1/apps/{app}/cancel`, and an app's
//! `pause` and `resume`.

use std::sync::Arc;
use std::time::SystemTime;

use apns::{ApnsId, CollapseId};
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::apps::check_app;
use super::auth::authenticate;
use super::documents::ErrorBody;
use super::error::{ApiError, Code};
use super::{ApiState, spool_error};
use crate::auth::Caller;
use crate::dispatch::{Cancelled, Dispatcher};
use crate::spool::{CancelTarget, RequestId, Spool, State as NState};

/// `POST /v1/requests/{request_id}/cancel`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct RequestCancelled {
    pub request_id: String,
    /// Taken back now: they will never be sent.
    pub cancelled: u64,
    /// The request's other notifications: sent or being sent, finished, or cancelled before.
    pub already_gone: u64,
}

/// `POST /v1/apps/{app}/cancel`'s body (all optional).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppCancelBody {
    /// RFC 3339: only what was accepted at or before this time (default: now, so that what
    /// is sent after the cancel is not taken back with it).
    pub created_before: Option<String>,
    /// Only notifications with this collapse id.
    pub collapse_id: Option<String>,
}

/// `POST /v1/apps/{app}/cancel`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct AppCancelled {
    pub app: String,
    /// Taken back now: they will never be sent.
    pub cancelled: u64,
    /// The time the cancel compared acceptance times with (RFC 3339).
    pub created_before: String,
}

/// An app's pause, as `pause` and `resume` answer it.
#[derive(Debug, Serialize, ToSchema)]
pub struct PauseDocument {
    pub app: String,
    pub paused: bool,
    /// Since when (RFC 3339), while paused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Ingest answers `503 app_paused` meanwhile, while paused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reject: Option<bool>,
}

#[derive(Debug, Deserialize)]
pub struct PauseQuery {
    reject: Option<String>,
}

fn dispatcher(state: &ApiState) -> Result<&Arc<Dispatcher>, ApiError> {
    state
        .dispatch
        .as_ref()
        .ok_or_else(|| ApiError::new(Code::Internal, "nothing dispatches in this process"))
}

fn not_found(what: &str) -> ApiError {
    ApiError::new(Code::NotFound, format!("no such {what}"))
}

#[utoipa::path(delete, path = "/v1/notifications/{id}", tag = "notifications",
    params(("id" = String, Path, description = "The notification's id")),
    security(("api_key" = [])),
    responses(
        (status = 204, description = "Cancelled: it will never be sent, a restart included (state `cancelled`, reason `Cancelled`)"),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 404, description = "not_found: unknown, pruned, or of an app the key may not use", body = ErrorBody),
        (status = 409, description = "not_waiting: it is being sent or was; `state` names its state", body = ErrorBody),
        (status = 500, description = "internal", body = ErrorBody), (status = 503, description = "spool_unavailable; retry after Retry-After seconds", body = ErrorBody, headers(("Retry-After" = u32, description = "seconds to wait"))),
    ))]
pub async fn cancel_one(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<StatusCode, ApiError> {
    let caller = authenticate(&state.config().api_keys, &headers)?;
    let Path(id) = path?;
    cancel_notification(&state, &caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Cancels notification `id` (text) for `caller`: `Ok` once cancelled, else why not (`404`
/// for one the caller may not read, `409 not_waiting` with its state).
pub(super) async fn cancel_notification(
    state: &ApiState,
    caller: &Caller,
    id: &str,
) -> Result<(), ApiError> {
    let id = ApnsId::parse(id).map_err(|_| not_found("notification"))?;
    let record = match state.spool.get(id).await.map_err(|e| spool_error(&e))? {
        Some(r) if caller.may_use(&r.app) => r,
        _ => return Err(not_found("notification")),
    };
    if record.state.is_waiting() {
        let d = dispatcher(state)?;
        let done = d
            .cancel(CancelTarget::Ids(vec![id]), vec![record.app.clone()])
            .await
            .map_err(|e| spool_error(&e))?;
        if done.ids.contains(&id) {
            tracing::info!(key = %caller.name, %id, "notification cancelled");
            return Ok(());
        }
    }
    // Not cancelled: say what it is now.
    let now = state
        .spool
        .get(id)
        .await
        .map_err(|e| spool_error(&e))?
        .map(|r| state.with_live_state(r))
        .unwrap_or(record);
    Err(not_waiting(now.state))
}

fn not_waiting(s: NState) -> ApiError {
    let message = match s {
        // Sent when the cancel came, and waiting again for a retry since; or, on PostgreSQL,
        // another gateway has it in memory.
        NState::Queued | NState::Scheduled => {
            "it was being sent when the cancel came, or another gateway sharing the spool \
             holds it; try again"
                .to_owned()
        }
        NState::InFlight => "it is being sent".to_owned(),
        other => format!("it is {} already", other.as_str()),
    };
    ApiError::new(Code::NotWaiting, message).with_state(s)
}

#[utoipa::path(post, path = "/v1/requests/{request_id}/cancel", tag = "notifications",
    params(("request_id" = String, Path, description = "The `request_id` of a `202` answer")),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "What was cancelled, and how many had already gone", body = RequestCancelled),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 404, description = "not_found: unknown, pruned, or of an app the key may not use", body = ErrorBody),
        (status = 500, description = "internal", body = ErrorBody), (status = 503, description = "spool_unavailable; retry after Retry-After seconds", body = ErrorBody, headers(("Retry-After" = u32, description = "seconds to wait"))),
    ))]
pub async fn cancel_request(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Json<RequestCancelled>, ApiError> {
    let caller = authenticate(&state.config().api_keys, &headers)?;
    let Path(rid) = path?;
    cancel_submission(&state, &caller, &rid).await.map(Json)
}

/// Cancels what of submission `rid` (text) still waits, for `caller` (who may use each of
/// its apps, else `404`).
pub(super) async fn cancel_submission(
    state: &ApiState,
    caller: &Caller,
    rid: &str,
) -> Result<RequestCancelled, ApiError> {
    let rid = RequestId::parse(rid).ok_or_else(|| not_found("request"))?;
    let summary = match state
        .spool
        .request_summary(rid)
        .await
        .map_err(|e| spool_error(&e))?
    {
        Some(s) if s.apps.iter().all(|a| caller.may_use(a)) => s,
        _ => return Err(not_found("request")),
    };
    let d = dispatcher(state)?;
    let done = d
        .cancel(CancelTarget::Request(rid), summary.apps)
        .await
        .map_err(|e| spool_error(&e))?;
    let cancelled = done.count();
    tracing::info!(key = %caller.name, request = %rid, cancelled, "request cancelled");
    Ok(RequestCancelled {
        request_id: rid.to_string(),
        cancelled,
        already_gone: summary.notifications.saturating_sub(cancelled),
    })
}

#[utoipa::path(post, path = "/v1/apps/{app}/cancel", tag = "apps",
    params(("app" = String, Path, description = "The app's name")),
    request_body(content = Option<AppCancelBody>, description = "Optional: which of the app's waiting notifications"),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "How many were cancelled", body = AppCancelled),
        (status = 400, description = "invalid_json or invalid_field", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 403, description = "forbidden_app", body = ErrorBody),
        (status = 404, description = "unknown_app", body = ErrorBody),
        (status = 413, description = "body_too_large", body = ErrorBody),
        (status = 500, description = "internal", body = ErrorBody), (status = 503, description = "spool_unavailable; retry after Retry-After seconds", body = ErrorBody, headers(("Retry-After" = u32, description = "seconds to wait"))),
    ))]
pub async fn cancel_app(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
    body: Body,
) -> Result<Json<AppCancelled>, ApiError> {
    let now = SystemTime::now();
    let caller = authenticate(&state.config().api_keys, &headers)?;
    let Path(app) = path?;
    check_app(&state, &caller, &app)?;
    let limit = state.config().server.max_body_bytes;
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
        super::notifications::body_error(&e, limit)
            .unwrap_or_else(|| ApiError::new(Code::InvalidJson, "the body could not be read"))
    })?;
    let body: AppCancelBody = if bytes.iter().all(u8::is_ascii_whitespace) {
        AppCancelBody::default()
    } else {
        serde_json::from_slice(&bytes).map_err(|e| {
            let code = if e.is_syntax() || e.is_eof() {
                Code::InvalidJson
            } else {
                Code::InvalidField
            };
            ApiError::new(code, format!("the body is not a cancel: {e}"))
        })?
    };
    let created_before = match body.created_before.as_deref() {
        None => now,
        Some(s) => crate::rfc3339::parse(s).map_err(|_| {
            ApiError::new(
                Code::InvalidField,
                "\"created_before\" must be an RFC 3339 time",
            )
        })?,
    };
    let collapse_id = body
        .collapse_id
        .as_deref()
        .map(CollapseId::parse)
        .transpose()
        .map_err(|e| ApiError::new(Code::InvalidField, format!("\"collapse_id\": {e}")))?;
    let d = dispatcher(&state)?;
    let target = CancelTarget::App {
        app: app.clone(),
        created_before,
        collapse_id,
    };
    let done: Cancelled = d
        .cancel(target, vec![app.clone()])
        .await
        .map_err(|e| spool_error(&e))?;
    Ok(Json(AppCancelled {
        app,
        cancelled: done.count(),
        created_before: crate::rfc3339::format(created_before),
    }))
}

#[utoipa::path(post, path = "/v1/apps/{app}/pause", tag = "apps",
    params(
        ("app" = String, Path, description = "The app's name"),
        ("reject" = Option<bool>, Query, description = "`true`: ingest answers `503 app_paused` while paused, instead of accepting"),
    ),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Paused: nothing of it is sent until it is resumed (what is in flight finishes); kept across restarts and reloads", body = PauseDocument),
        (status = 400, description = "invalid_field (reject)", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 403, description = "admin_required", body = ErrorBody),
        (status = 404, description = "unknown_app", body = ErrorBody),
        (status = 500, description = "internal", body = ErrorBody), (status = 503, description = "spool_unavailable; retry after Retry-After seconds", body = ErrorBody, headers(("Retry-After" = u32, description = "seconds to wait"))),
    ))]
pub async fn pause(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
    query: Result<Query<PauseQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<PauseDocument>, ApiError> {
    let (Path(app), Query(q)) = (path?, query?);
    let caller = authenticate(&state.config().api_keys, &headers)?;
    let reject = match q.reject.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => {
            return Err(ApiError::new(
                Code::InvalidField,
                "\"reject\" must be true or false",
            ));
        }
    };
    set_pause(&state, &caller, &app, Some(reject))
        .await
        .map(Json)
}

/// Pauses `app` (`Some(reject)`) or resumes it (`None`), for an admin `caller`.
pub(super) async fn set_pause(
    state: &ApiState,
    caller: &Caller,
    app: &str,
    pause: Option<bool>,
) -> Result<PauseDocument, ApiError> {
    if !caller.admin {
        return Err(ApiError::new(
            Code::AdminRequired,
            "only an admin key may pause or resume an app",
        ));
    }
    check_app(state, caller, app)?;
    let d = dispatcher(state)?;
    let doc = match pause {
        Some(reject) => {
            let p = d
                .pause_app(app, reject)
                .await
                .map_err(|e| spool_error(&e))?;
            PauseDocument {
                app: app.to_owned(),
                paused: true,
                since: Some(crate::rfc3339::format(p.since)),
                reject: Some(p.reject),
            }
        }
        None => {
            d.resume_app(app).await.map_err(|e| spool_error(&e))?;
            PauseDocument {
                app: app.to_owned(),
                paused: false,
                since: None,
                reject: None,
            }
        }
    };
    tracing::info!(key = %caller.name, app, paused = doc.paused, "app pause changed");
    Ok(doc)
}

#[utoipa::path(post, path = "/v1/apps/{app}/resume", tag = "apps",
    params(("app" = String, Path, description = "The app's name")),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Resumed (or was not paused)", body = PauseDocument),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 403, description = "admin_required", body = ErrorBody),
        (status = 404, description = "unknown_app", body = ErrorBody),
        (status = 500, description = "internal", body = ErrorBody), (status = 503, description = "spool_unavailable; retry after Retry-After seconds", body = ErrorBody, headers(("Retry-After" = u32, description = "seconds to wait"))),
    ))]
pub async fn resume(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Json<PauseDocument>, ApiError> {
    let Path(app) = path?;
    let caller = authenticate(&state.config().api_keys, &headers)?;
    set_pause(&state, &caller, &app, None).await.map(Json)
}
