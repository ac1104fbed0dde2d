//! `POST /v1.0/inject`: Momentum's REST injector (docs/momentum.md).
//!
//! The body carries an MCMT MIME message as `template` and the recipients, which resolve as
//! over SMTP (the domain names the app; `vctx.DLV_Dest_ID` may carry the token). Like
//! Momentum, the injection is all-or-nothing: one refused recipient or part refuses it whole,
//! with each recipient's SMTP-style reason.

use std::sync::Arc;
use std::time::SystemTime;

use apns::ApnsId;
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;

use super::ApiState;
use super::auth::authenticate;
use super::documents::{
    ErrorBody, InjectAnswer, InjectRecipient, InjectRefusal, InjectResult, Injection,
};
use super::error::{ApiError, Code};
use crate::auth::{Caller, check_key};
use crate::ingest::Accepted;
use crate::ingest::mcmt::{self, Recipient};
use crate::spool::SubmitError;

/// Most recipients in one injection (the API's token limit).
const MAX_RECIPIENTS: usize = crate::ingest::json::MAX_TOKENS;

#[utoipa::path(post, path = "/v1.0/inject", tag = "momentum",
    request_body = Injection,
    security(("api_key" = []), ("api_key_basic" = [])),
    responses(
        (status = 200, description = "Committed: one result per recipient. With an Idempotency-Key seen before for the same body: the first answer's ids, nothing stored again, and `Idempotent-Replayed: true`", body = InjectAnswer, headers(("Idempotent-Replayed" = String, description = "`true` on an answer replayed from an earlier injection with the same Idempotency-Key"))),
        (status = 400, description = "A refused recipient or part (Momentum's failure document, every recipient with its SMTP-style reason), or a request that is not an injection (invalid_json, invalid_field)", body = InjectRefusal),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 413, description = "body_too_large or too_many_tokens (over 10,000 recipients)", body = ErrorBody),
        (status = 409, description = "An injection with the same Idempotency-Key is still being committed: `451 4.3.0` reasons; retry after Retry-After seconds", body = InjectRefusal, headers(("Retry-After" = u32, description = "seconds to wait"))),
        (status = 415, description = "unsupported_media_type", body = ErrorBody),
        (status = 422, description = "The Idempotency-Key was used for an injection with another body: `554 5.6.0` reasons", body = InjectRefusal),
        (status = 429, description = "The key's rate limit (`rate_per_s`): `451 4.7.1` reasons; nothing was stored; retry after Retry-After seconds", body = InjectRefusal, headers(("Retry-After" = u32, description = "seconds until the key's bucket lets this injection through"))),
        (status = 503, description = "The spool is full or unavailable (`451 4.3.0` reasons), or the app is paused with reject (`451 4.3.2`); retry after Retry-After seconds", body = InjectAnswer, headers(("Retry-After" = u32, description = "seconds to wait"))),
    ),
    params(("Idempotency-Key" = Option<String>, Header, description = "Stores the injection once: a retry with the same key and body (per API key) is answered with the first answer's ids")))]
pub async fn inject(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match run(&state, &headers, body).await {
        Ok(r) | Err(Failure::Momentum(r)) => r,
        Err(Failure::Api(e)) => e.into_response(),
    }
}

enum Failure {
    /// Before any recipient was looked at: the API's own error document.
    Api(ApiError),
    /// Momentum's failure document.
    Momentum(Response),
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        Failure::Api(e)
    }
}

/// Momentum's failure document: every recipient with its reason.
fn failure(status: StatusCode, reasons: Vec<String>) -> Failure {
    let results = reasons
        .into_iter()
        .map(|reason| InjectResult {
            status: "failure",
            mid: None,
            reason,
            ids: None,
        })
        .collect();
    let answer = InjectAnswer {
        results,
        status: "failure",
    };
    let mut response = (status, Json(answer)).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::CONFLICT {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
    }
    Failure::Momentum(response)
}

async fn run(state: &ApiState, headers: &HeaderMap, body: Body) -> Result<Response, Failure> {
    let config = state.config();
    let caller = caller(&config.api_keys, headers)?;
    let bytes = super::notifications::json_body(state, headers, body).await?;
    let injection: Injection = serde_json::from_slice(&bytes).map_err(|e| {
        let code = if e.is_syntax() || e.is_eof() {
            Code::InvalidJson
        } else {
            Code::InvalidField
        };
        ApiError::new(code, format!("not an injection: {e}"))
    })?;
    if injection.recipients.is_empty() {
        return Err(ApiError::new(Code::InvalidField, "\"recipients\" is empty").into());
    }
    if injection.recipients.len() > MAX_RECIPIENTS {
        return Err(ApiError::new(
            Code::TooManyTokens,
            format!("at most {MAX_RECIPIENTS} recipients in one injection"),
        )
        .into());
    }
    // Every recipient is resolved before anything else, as RCPT would.
    let mut recipients = Vec::with_capacity(injection.recipients.len());
    let mut reasons = Vec::new();
    for r in &injection.recipients {
        match resolve(r, &caller, &config) {
            Ok(x) => {
                recipients.push(x);
                reasons.push("250 2.1.5 recipient OK; not injected: another was refused".into());
            }
            Err(reason) => reasons.push(reason),
        }
    }
    if recipients.len() < injection.recipients.len() {
        return Err(failure(StatusCode::BAD_REQUEST, reasons));
    }
    let n = recipients.len();
    let mut parsed = mcmt::parse(
        injection.template.as_bytes(),
        &recipients,
        &config,
        SystemTime::now(),
    )
    .map_err(|e| failure(StatusCode::BAD_REQUEST, vec![format!("554 5.6.0 {e}"); n]))?;
    // Each recipient's `from` is its envelope sender: where a failure is reported when the
    // template names no Return-Path.
    let senders: Vec<mcmt::ReturnPath> = injection
        .recipients
        .iter()
        .map(|r| match r.from.as_deref().map(str::trim) {
            Some(f) if !f.is_empty() => mcmt::ReturnPath::parse(f),
            _ => mcmt::ReturnPath::Absent,
        })
        .collect();
    crate::bounces::attach(
        &config,
        &mut parsed,
        &crate::bounces::Arrival {
            way: "inject",
            received_from: caller.name.clone(),
            message: injection.template.as_bytes(),
            envelope: &|i| senders.get(i).cloned().unwrap_or_default(),
        },
    );
    let mcmt::Parsed { requests, ids, .. } = parsed;
    let key = super::idempotency::key(headers, &caller, "inject", &bytes)?;
    let submission = crate::ingest::Submission::new(Some(caller), requests).once(key);
    let accepted = state.intake.submit(submission).await.map_err(|e| match e {
        SubmitError::RateLimited { .. } => {
            let secs = e.retry_after_s().unwrap_or(1);
            let mut failed = failure(
                StatusCode::TOO_MANY_REQUESTS,
                vec![format!("451 4.7.1 {e}"); n],
            );
            if let Failure::Momentum(r) = &mut failed {
                r.headers_mut().insert(header::RETRY_AFTER, secs.into());
            }
            failed
        }
        SubmitError::Full { .. } => failure(
            StatusCode::SERVICE_UNAVAILABLE,
            vec!["451 4.3.0 the spool is full; try again later".into(); n],
        ),
        SubmitError::AppPaused { .. } => failure(
            StatusCode::SERVICE_UNAVAILABLE,
            vec![format!("451 4.3.2 {e}"); n],
        ),
        SubmitError::Unavailable(inner) => {
            tracing::warn!(error = %inner, "spool failure on an injection");
            failure(
                StatusCode::SERVICE_UNAVAILABLE,
                vec!["451 4.3.0 the spool is unavailable; try again later".into(); n],
            )
        }
        SubmitError::KeyReused => failure(
            StatusCode::UNPROCESSABLE_ENTITY,
            vec!["554 5.6.0 the Idempotency-Key was used for another injection".into(); n],
        ),
        SubmitError::KeyInProgress => failure(
            StatusCode::CONFLICT,
            vec![
                "451 4.3.0 an injection with this Idempotency-Key is still being committed".into();
                n
            ],
        ),
    })?;
    let (ids, replayed) = match accepted {
        Accepted::Committed(_) => (ids, false),
        // The same body parses into the same notifications: each recipient's, as first answered.
        Accepted::Replayed(replay) => {
            let first: Option<Vec<Vec<ApnsId>>> = ids.iter().map(|g| replay.translate(g)).collect();
            let Some(first) = first else {
                return Err(failure(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    vec![
                        "554 5.6.0 this Idempotency-Key's first injection made other notifications (the configuration changed since)"
                            .into();
                        n
                    ],
                ));
            };
            (first, true)
        }
    };
    let results = ids
        .iter()
        .map(|ids| {
            let first = ids.first().map(ToString::to_string).unwrap_or_default();
            InjectResult {
                status: "success",
                reason: format!("250 {first}"),
                mid: Some(first),
                ids: Some(ids.iter().map(ToString::to_string).collect()),
            }
        })
        .collect();
    let answer = InjectAnswer {
        results,
        status: "success",
    };
    let mut response = (StatusCode::OK, Json(answer)).into_response();
    if replayed {
        response
            .headers_mut()
            .insert(super::idempotency::REPLAYED, super::idempotency::TRUE);
    }
    Ok(response)
}

/// Bearer, or Basic with the key as the password (Momentum's clients send either).
fn caller(keys: &[crate::config::ApiKey], headers: &HeaderMap) -> Result<Caller, ApiError> {
    let basic = super::auth::credentials(headers, "Basic");
    let Some(encoded) = basic else {
        return authenticate(keys, headers);
    };
    base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|pair| {
            let (_, password) = pair.split_once(':')?;
            check_key(keys, password)
        })
        .ok_or_else(|| {
            ApiError::new(
                Code::Unauthorized,
                "a valid API key is required (Bearer, or Basic with the key as the password)",
            )
            .refused_credential()
        })
}

/// A recipient routed to its app, or its SMTP-style refusal.
fn resolve(
    r: &InjectRecipient,
    caller: &Caller,
    config: &crate::config::Config,
) -> Result<Recipient, String> {
    let address = r.to.trim();
    let address = match (address.find('<'), address.rfind('>')) {
        (Some(a), Some(b)) if a < b => &address[a + 1..b],
        _ => address,
    };
    let mut recipient = mcmt::route(address, Some(caller), config).map_err(|e| e.to_string())?;
    recipient.dest_id = r.vctx.as_ref().and_then(|v| v.dest_id.clone());
    Ok(recipient)
}
