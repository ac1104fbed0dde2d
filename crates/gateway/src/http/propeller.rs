//! `POST /post`: propeller-apns' form (`server.py`), as its callers post it —
//! `application/x-www-form-urlencoded` or `multipart/form-data` with `auth_token`, `title`,
//! `body`, `badge`, `token`, `topic`, `delay` and `expiration` (propeller's own TODO) — answered
//! as propeller answered it: the job's JSON, plus the notification's `"id"`. The job becomes a
//! notification as a beanstalkd job does (`beanstalk::document`), for the app whose topic it
//! names; `auth_token` is an API key, with its apps.

use std::sync::Arc;
use std::time::SystemTime;

use axum::Json;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use serde_json::{Map, Value, json};

use super::ApiState;
use super::error::{ApiError, Code};
use super::notifications::submit_error;
use crate::auth::check_key;
use crate::config::Config;
use crate::ingest::{Accepted, Submission};

/// The fields taken; anything else is refused (a typo would be dropped silently otherwise).
const FIELDS: [&str; 9] = [
    "auth_token",
    "title",
    "body",
    "badge",
    "token",
    "topic",
    "delay",
    "expiration",
    "environment",
];

#[utoipa::path(post, path = "/post", tag = "propeller",
    request_body(content = PostForm, description = "propeller-apns' form (also as multipart/form-data)", content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Committed: the job's JSON (title, body, badge, token) and the notification's id", body = Object),
        (status = 400, description = "invalid_field, unknown_app (no app has the topic), invalid_token, already_expired...; nothing was stored", body = super::documents::ErrorBody),
        (status = 401, description = "unauthorized: auth_token is not an API key", body = super::documents::ErrorBody),
        (status = 403, description = "forbidden_app: the key may not use the topic's app", body = super::documents::ErrorBody),
        (status = 413, description = "body_too_large", body = super::documents::ErrorBody),
        (status = 409, description = "idempotency_in_progress (with an Idempotency-Key)", body = super::documents::ErrorBody),
        (status = 415, description = "unsupported_media_type", body = super::documents::ErrorBody),
        (status = 422, description = "idempotency_key_reused (with an Idempotency-Key)", body = super::documents::ErrorBody),
        (status = 429, description = "rate_limited: the key's rate limit; retry after Retry-After seconds", body = super::documents::ErrorBody, headers(("Retry-After" = u32, description = "seconds until the key's bucket lets this job through"))),
        (status = 503, description = "spool_full, spool_unavailable, or app_paused (the app paused with reject); retry after Retry-After seconds", body = super::documents::ErrorBody),
    ))]
pub async fn post(
    State(state): State<Arc<ApiState>>,
    request: Request,
) -> Result<(StatusCode, HeaderMap, Json<Value>), ApiError> {
    let headers = request.headers().clone();
    let fields = read_form(&state, request).await?;
    let config = state.config();
    let field = |k: &str| {
        fields
            .iter()
            .find(|(name, _)| name == k)
            .map(|(_, v)| v.as_str())
    };
    // The key first: a caller without one learns nothing of the form's rules.
    let token = field("auth_token");
    let caller = token
        .and_then(|t| check_key(&config.api_keys, t.trim()))
        .ok_or_else(|| {
            let e = ApiError::new(Code::Unauthorized, "auth_token is not an API key");
            // Only a token given and refused counts against the peer.
            if token.is_some() {
                e.refused_credential()
            } else {
                e
            }
        })?;
    for (i, (name, _)) in fields.iter().enumerate() {
        if !FIELDS.contains(&name.as_str()) {
            return Err(ApiError::new(
                Code::InvalidField,
                format!(
                    "unknown field {name:?} (the form has {})",
                    FIELDS.join(", ")
                ),
            ));
        }
        if fields[..i].iter().any(|(n, _)| n == name) {
            return Err(ApiError::new(
                Code::InvalidField,
                format!("the field {name:?} is given twice"),
            ));
        }
    }
    let app = app_of(
        &config,
        field("topic"),
        field("environment").filter(|e| !e.is_empty()),
    )?;
    // The job as propeller's server.py would have put it, then as a beanstalkd job becomes one.
    let mut job = Map::new();
    for k in ["title", "body"] {
        job.insert(k.into(), field(k).map_or(Value::Null, |v| json!(v)));
    }
    let badge = match field("badge").filter(|b| !b.is_empty()) {
        None => Value::Null,
        Some(b) => json!(
            b.parse::<u64>()
                .map_err(|_| invalid("badge", "a whole number"))?
        ),
    };
    job.insert("badge".into(), badge);
    job.insert(
        "token".into(),
        json!(field("token").ok_or_else(|| invalid("token", "required"))?),
    );
    let echo = Value::Object(job.clone());
    for (k, what) in [("delay", "seconds"), ("expiration", "UNIX seconds")] {
        if let Some(v) = field(k).filter(|v| !v.is_empty()) {
            let n: u64 = v.parse().map_err(|_| invalid(k, what))?;
            job.insert(k.into(), json!(n));
        }
    }
    let doc = crate::beanstalk::from_job(job, &app)
        .map_err(|why| ApiError::new(Code::InvalidField, why))?;
    let (requests, ids) =
        crate::ingest::json::parse_value(&doc, &caller, &config, SystemTime::now())?;
    // Keyed by the document, which names the app: the same job for another topic is another
    // request.
    let key = super::idempotency::key(&headers, &caller, "post", doc.to_string().as_bytes())?;
    let accepted = state
        .intake
        .submit(Submission::new(Some(caller), requests).once(key))
        .await
        .map_err(submit_error)?;
    let mut answer_headers = HeaderMap::new();
    let id = match accepted {
        Accepted::Committed(_) => ids[0],
        Accepted::Replayed(replay) => {
            answer_headers.insert(super::idempotency::REPLAYED, super::idempotency::TRUE);
            replay.translate(&ids).map(|v| v[0]).ok_or_else(|| {
                ApiError::new(
                    Code::IdempotencyKeyReused,
                    "this Idempotency-Key's first request made other notifications",
                )
            })?
        }
    };
    let mut answer = echo;
    answer["id"] = json!(id.to_string());
    Ok((StatusCode::OK, answer_headers, Json(answer)))
}

/// The form, for the OpenAPI document (the handler reads the fields itself, from either
/// encoding, and refuses any other).
#[derive(utoipa::ToSchema)]
#[allow(dead_code, reason = "a schema only")]
pub struct PostForm {
    /// An API key; its apps apply.
    auth_token: String,
    title: Option<String>,
    body: Option<String>,
    /// A whole number; 0 leaves the badge out, as propeller did.
    badge: Option<String>,
    /// The device token (hex).
    token: String,
    /// The app's topic (its bundle id): it picks the app.
    topic: String,
    /// Seconds before it is sent.
    delay: Option<String>,
    /// UNIX seconds; Apple drops it after.
    expiration: Option<String>,
    /// `production` or `sandbox`, when two apps share the topic.
    environment: Option<String>,
}

fn invalid(field: &str, what: &str) -> ApiError {
    ApiError::new(Code::InvalidField, format!("\"{field}\" must be {what}"))
}

/// The app whose topic is `topic` (in `environment`, when given).
fn app_of(
    config: &Config,
    topic: Option<&str>,
    environment: Option<&str>,
) -> Result<String, ApiError> {
    let topic = topic.ok_or_else(|| invalid("topic", "the app's bundle id"))?;
    if let Some(e) = environment
        && e != "production"
        && e != "sandbox"
    {
        return Err(invalid("environment", "production or sandbox"));
    }
    let env_name = |a: &crate::config::App| match a.environment {
        crate::config::Environment::Production => "production",
        crate::config::Environment::Sandbox => "sandbox",
    };
    let apps: Vec<&crate::config::App> = config
        .apps
        .iter()
        .filter(|a| a.topic.as_str() == topic)
        .filter(|a| environment.is_none_or(|e| env_name(a) == e))
        .collect();
    match apps.as_slice() {
        [one] => Ok(one.name.clone()),
        [] => Err(ApiError::new(
            Code::UnknownApp,
            format!("no app has the topic {topic:?}"),
        )),
        several => Err(ApiError::new(
            Code::InvalidField,
            format!(
                "the topic {topic:?} is the topic of {}: add environment=production or environment=sandbox",
                several
                    .iter()
                    .map(|a| format!("{} ({})", a.name, env_name(a)))
                    .collect::<Vec<_>>()
                    .join(" and ")
            ),
        )),
    }
}

/// The form's fields, from either encoding, within `[server] max_body_bytes`.
async fn read_form(
    state: &Arc<ApiState>,
    request: Request,
) -> Result<Vec<(String, String)>, ApiError> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let limit = state.config().server.max_body_bytes;
    let too_large = || {
        ApiError::new(
            Code::BodyTooLarge,
            format!("the body is over {limit} bytes"),
        )
    };
    let fields: Vec<(String, String)> = if content_type
        .starts_with("application/x-www-form-urlencoded")
    {
        let bytes = axum::body::to_bytes(request.into_body(), limit)
            .await
            .map_err(|e| super::notifications::body_error(&e, limit).unwrap_or_else(too_large))?;
        form_urlencoded::parse(&bytes).into_owned().collect()
    } else if content_type.starts_with("multipart/form-data") {
        let (parts, body) = request.into_parts();
        let limited = axum::body::Body::new(http_body_util::Limited::new(body, limit));
        let mut form = Multipart::from_request(Request::from_parts(parts, limited), state)
            .await
            .map_err(|e| {
                ApiError::new(
                    Code::InvalidField,
                    format!("the form could not be read: {}", e.body_text()),
                )
            })?;
        let mut out = Vec::new();
        while let Some(f) = form
            .next_field()
            .await
            .map_err(|e| invalid_form(&e, limit))?
        {
            let name = f.name().unwrap_or_default().to_owned();
            let value = f.text().await.map_err(|e| invalid_form(&e, limit))?;
            out.push((name, value));
        }
        out
    } else {
        return Err(ApiError::new(
            Code::UnsupportedMediaType,
            "send the form as application/x-www-form-urlencoded or multipart/form-data",
        ));
    };
    Ok(fields)
}

fn invalid_form(e: &axum::extract::multipart::MultipartError, limit: usize) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(Code::BodyTooLarge, "the body is over the limit");
    }
    if let Some(slow) = super::notifications::body_error(e, limit) {
        return slow;
    }
    ApiError::new(
        Code::InvalidField,
        format!("the form could not be read: {}", e.body_text()),
    )
}
