//! `POST /v1/notifications`, `GET /v1/notifications/{id}`, `POST /v1/notifications/lookup`.

use std::sync::Arc;
use std::time::SystemTime;

use apns::ApnsId;
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};

use super::auth::authenticate;
use super::documents::{ErrorBody, Ids, LookupAnswer, LookupBody, NotificationDocument};
use super::error::{ApiError, Code};
use super::openapi::SubmitBody;
use super::{ApiState, spool_error};
use crate::ingest::{Accepted, Submission};
use crate::spool::{RequestId, Spool, SubmitError};

/// Most ids in one lookup.
const MAX_LOOKUP: usize = 10_000;

pub(super) async fn json_body(
    state: &ApiState,
    headers: &HeaderMap,
    body: Body,
) -> Result<bytes::Bytes, ApiError> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        });
    if !json {
        return Err(ApiError::new(
            Code::UnsupportedMediaType,
            "send Content-Type: application/json",
        ));
    }
    let limit = state.config().server.max_body_bytes;
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        body_error(&e, limit)
            .unwrap_or_else(|| ApiError::new(Code::InvalidJson, "the body could not be read"))
    })
}

/// A body over `limit` bytes, or one that arrived too slowly, as the API answers it; `None`
/// for other read errors (the caller says what it was reading).
pub(super) fn body_error(e: &(dyn std::error::Error + 'static), limit: usize) -> Option<ApiError> {
    let mut source = Some(e);
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return Some(ApiError::new(
                Code::BodyTooLarge,
                format!("the body is over {limit} bytes"),
            ));
        }
        if let Some(slow @ crate::listen::BodyError::TooSlow(_)) = s.downcast_ref() {
            return Some(ApiError::new(Code::RequestTimeout, slow.to_string()));
        }
        source = s.source();
    }
    None
}

/// A failed commit as the API answers it.
pub(crate) fn submit_error(e: SubmitError) -> ApiError {
    match e {
        SubmitError::Full { .. } => ApiError::new(Code::SpoolFull, e.to_string()),
        SubmitError::AppPaused { .. } => ApiError::new(Code::AppPaused, e.to_string()),
        SubmitError::Unavailable(inner) => spool_error(&inner),
        SubmitError::KeyReused => ApiError::new(
            Code::IdempotencyKeyReused,
            "this Idempotency-Key was used for a request with another body",
        ),
        SubmitError::KeyInProgress => ApiError::new(
            Code::IdempotencyInProgress,
            "a request with this Idempotency-Key is still being committed; try again",
        ),
        SubmitError::RateLimited { .. } => {
            let secs = e.retry_after_s().unwrap_or(1);
            ApiError::new(Code::RateLimited, e.to_string()).retry_after(secs)
        }
    }
}

#[utoipa::path(post, path = "/v1/notifications", tag = "notifications",
    request_body = SubmitBody, security(("api_key" = [])),
    responses(
        (status = 202, description = "Committed: one id per token, notifications in order, and the submission's request_id. With an Idempotency-Key seen before for the same body: the first answer's ids, nothing stored again, and `Idempotent-Replayed: true`", body = Ids, headers(("Idempotent-Replayed" = String, description = "`true` on an answer replayed from an earlier request with the same Idempotency-Key"))),
        (status = 400, description = "invalid_json, invalid_field, unknown_app, invalid_token, invalid_push_type, invalid_priority, invalid_topic, collapse_id_too_long, conflicting_fields, already_expired or payload_too_large; `index` names the first bad notification; nothing was stored", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 403, description = "forbidden_app", body = ErrorBody),
        (status = 413, description = "body_too_large or too_many_tokens", body = ErrorBody),
        (status = 409, description = "idempotency_in_progress: a request with the same Idempotency-Key is still being committed; retry after Retry-After seconds", body = ErrorBody, headers(("Retry-After" = u32, description = "seconds to wait"))),
        (status = 415, description = "unsupported_media_type", body = ErrorBody),
        (status = 422, description = "idempotency_key_reused: the Idempotency-Key was used for a request with another body", body = ErrorBody),
        (status = 429, description = "rate_limited: the key's rate limit (`rate_per_s`); nothing was stored; retry after Retry-After seconds", body = ErrorBody, headers(("Retry-After" = u32, description = "seconds until the key's bucket lets this request through"))),
        (status = 500, description = "internal", body = ErrorBody), (status = 503, description = "spool_full, spool_unavailable, or app_paused (an operator paused the app with reject); nothing was stored; retry after Retry-After seconds", body = ErrorBody, headers(("Retry-After" = u32, description = "seconds to wait"))),
    ),
    params(("Idempotency-Key" = Option<String>, Header, description = "Stores the request once: a retry with the same key and body (per API key, for 24 hours by default) is answered with the first answer's ids")))]
pub async fn submit(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, HeaderMap, Json<Ids>), ApiError> {
    let config = state.config();
    let caller = authenticate(&config.api_keys, &headers)?;
    let bytes = json_body(&state, &headers, body).await?;
    let key = super::idempotency::key(&headers, &caller, "notifications", &bytes)?;
    let mut replayed = HeaderMap::new();
    replayed.insert(super::idempotency::REPLAYED, super::idempotency::TRUE);
    let answer = |ids: &[ApnsId], request: Option<RequestId>| {
        Json(Ids {
            ids: ids.iter().map(ApnsId::to_string).collect(),
            request_id: request.map(|r| r.to_string()),
        })
    };
    let (requests, ids) =
        match crate::ingest::json::parse(&bytes, &caller, &config, SystemTime::now()) {
            Ok(parsed) => parsed,
            // A retry that no longer parses as the first one did (its absolute expiration has
            // passed since) was stored all the same: answer it as the first one was answered.
            Err(refused) => match &key {
                Some(k) => match state.spool.replay_of(k).await {
                    Ok(Some(first)) => {
                        let request = first_request(&state, &first).await;
                        return Ok((StatusCode::ACCEPTED, replayed, answer(&first, request)));
                    }
                    _ => return Err(refused.into()),
                },
                None => return Err(refused.into()),
            },
        };
    let accepted = state
        .intake
        .submit(Submission::new(Some(caller), requests).once(key))
        .await
        .map_err(submit_error)?;
    match accepted {
        Accepted::Committed(request) => Ok((
            StatusCode::ACCEPTED,
            HeaderMap::new(),
            answer(&ids, Some(request)),
        )),
        Accepted::Replayed(replay) => match replay.translate(&ids) {
            Some(first) => {
                let request = first_request(&state, &first).await;
                Ok((StatusCode::ACCEPTED, replayed, answer(&first, request)))
            }
            None => Err(ApiError::new(
                Code::IdempotencyKeyReused,
                "this Idempotency-Key's first request made other notifications (the configuration changed since)",
            )),
        },
    }
}

/// The submission a replayed answer's first notification came in, when it is still stored.
async fn first_request(state: &ApiState, first: &[ApnsId]) -> Option<RequestId> {
    let id = *first.first()?;
    state.spool.get(id).await.ok().flatten()?.request_id
}

fn not_found() -> ApiError {
    ApiError::new(Code::NotFound, "no such notification")
}

#[utoipa::path(get, path = "/v1/notifications/{id}", tag = "notifications",
    params(("id" = String, Path, description = "The notification's id (its apns-id)")),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "What happened to it", body = NotificationDocument),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 404, description = "not_found: unknown, pruned, or of an app the key may not use", body = ErrorBody),
        (status = 500, description = "internal", body = ErrorBody), (status = 503, description = "spool_full or spool_unavailable; retry after Retry-After seconds", body = ErrorBody, headers(("Retry-After" = u32, description = "seconds to wait"))),
    ))]
pub async fn status(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Json<NotificationDocument>, ApiError> {
    let caller = authenticate(&state.config().api_keys, &headers)?;
    let Path(id) = path?;
    let id = ApnsId::parse(&id).map_err(|_| not_found())?;
    let found = state.spool.history(id).await.map_err(|e| spool_error(&e))?;
    match found {
        Some((r, earlier)) if caller.may_use(&r.app) => {
            let r = state.with_live_state(r);
            Ok(Json(NotificationDocument::with_history(&r, &earlier)))
        }
        _ => Err(not_found()),
    }
}

#[utoipa::path(post, path = "/v1/notifications/lookup", tag = "notifications",
    request_body = LookupBody, security(("api_key" = [])),
    responses(
        (status = 200, description = "The documents of the known ids", body = LookupAnswer),
        (status = 400, description = "invalid_json or invalid_field (not ids, or over 10,000)", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 413, description = "body_too_large", body = ErrorBody),
        (status = 415, description = "unsupported_media_type", body = ErrorBody), (status = 500, description = "internal", body = ErrorBody), (status = 503, description = "spool_full or spool_unavailable; retry after Retry-After seconds", body = ErrorBody, headers(("Retry-After" = u32, description = "seconds to wait"))),
    ))]
pub async fn lookup(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<LookupAnswer>, ApiError> {
    let caller = authenticate(&state.config().api_keys, &headers)?;
    let bytes = json_body(&state, &headers, body).await?;
    let req: LookupBody = serde_json::from_slice(&bytes).map_err(|e| {
        if e.is_syntax() || e.is_eof() {
            ApiError::new(Code::InvalidJson, format!("the body is not JSON: {e}"))
        } else {
            ApiError::new(
                Code::InvalidField,
                format!("expected {{\"ids\": [...]}}: {e}"),
            )
        }
    })?;
    if req.ids.len() > MAX_LOOKUP {
        return Err(ApiError::new(
            Code::InvalidField,
            format!("at most {MAX_LOOKUP} ids per lookup"),
        ));
    }
    let ids = req
        .ids
        .iter()
        .map(|s| {
            ApnsId::parse(s).map_err(|_| {
                ApiError::new(
                    Code::InvalidField,
                    format!("{s:?} is not a notification id"),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let records = state
        .spool
        .get_many(ids)
        .await
        .map_err(|e| spool_error(&e))?;
    let notifications = records
        .into_iter()
        .filter(|r| caller.may_use(&r.app))
        .map(|r| NotificationDocument::from(&state.with_live_state(r)))
        .collect();
    Ok(Json(LookupAnswer { notifications }))
}
