//! Every API error becomes `{"error": {"code", "message", "index"}}` here, and only here.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::documents::{ErrorBody, ErrorCode, ErrorDetail};

/// The error codes of the API contract (docs/api.md), each with its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Unauthorized,
    ForbiddenApp,
    UnknownApp,
    UnknownAppInPath,
    NotFound,
    UnsupportedMediaType,
    InvalidJson,
    BodyTooLarge,
    TooManyTokens,
    PayloadTooLarge,
    InvalidToken,
    InvalidPushType,
    InvalidPriority,
    InvalidTopic,
    CollapseIdTooLong,
    ConflictingFields,
    AlreadyExpired,
    InvalidField,
    SpoolFull,
    SpoolUnavailable,
    Internal,
    /// The dashboard's test send without its CSRF token.
    CsrfFailed,
    /// An `Idempotency-Key` used before for another body.
    IdempotencyKeyReused,
    /// A request under the same `Idempotency-Key` is still being committed.
    IdempotencyInProgress,
    /// The request body did not arrive within `[server] body_read_timeout_s`.
    RequestTimeout,
    /// Past `[server] max_open_connections`.
    TooManyConnections,
    /// The key's rate limit (`[[api_keys]] rate_per_s`): retry after `Retry-After` seconds.
    RateLimited,
    /// The app is paused with `reject`: ingest refuses it until it is resumed.
    AppPaused,
    /// A cancel of a notification that is being sent or was: the answer names its state.
    NotWaiting,
    /// A route only admin keys may call (pause, resume).
    AdminRequired,
}

impl Code {
    /// Every code, for the OpenAPI document.
    pub const ALL: [Code; 30] = [
        Code::Unauthorized,
        Code::ForbiddenApp,
        Code::UnknownApp,
        Code::UnknownAppInPath,
        Code::NotFound,
        Code::UnsupportedMediaType,
        Code::InvalidJson,
        Code::BodyTooLarge,
        Code::TooManyTokens,
        Code::PayloadTooLarge,
        Code::InvalidToken,
        Code::InvalidPushType,
        Code::InvalidPriority,
        Code::InvalidTopic,
        Code::CollapseIdTooLong,
        Code::ConflictingFields,
        Code::AlreadyExpired,
        Code::InvalidField,
        Code::SpoolFull,
        Code::SpoolUnavailable,
        Code::Internal,
        Code::CsrfFailed,
        Code::IdempotencyKeyReused,
        Code::IdempotencyInProgress,
        Code::RequestTimeout,
        Code::TooManyConnections,
        Code::RateLimited,
        Code::AppPaused,
        Code::NotWaiting,
        Code::AdminRequired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Code::Unauthorized => "unauthorized",
            Code::ForbiddenApp => "forbidden_app",
            Code::UnknownApp | Code::UnknownAppInPath => "unknown_app",
            Code::NotFound => "not_found",
            Code::UnsupportedMediaType => "unsupported_media_type",
            Code::InvalidJson => "invalid_json",
            Code::BodyTooLarge => "body_too_large",
            Code::TooManyTokens => "too_many_tokens",
            Code::PayloadTooLarge => "payload_too_large",
            Code::InvalidToken => "invalid_token",
            Code::InvalidPushType => "invalid_push_type",
            Code::InvalidPriority => "invalid_priority",
            Code::InvalidTopic => "invalid_topic",
            Code::CollapseIdTooLong => "collapse_id_too_long",
            Code::ConflictingFields => "conflicting_fields",
            Code::AlreadyExpired => "already_expired",
            Code::InvalidField => "invalid_field",
            Code::SpoolFull => "spool_full",
            Code::SpoolUnavailable => "spool_unavailable",
            Code::Internal => "internal",
            Code::CsrfFailed => "csrf_failed",
            Code::IdempotencyKeyReused => "idempotency_key_reused",
            Code::IdempotencyInProgress => "idempotency_in_progress",
            Code::RequestTimeout => "request_timeout",
            Code::TooManyConnections => "too_many_connections",
            Code::RateLimited => "rate_limited",
            Code::AppPaused => "app_paused",
            Code::NotWaiting => "not_waiting",
            Code::AdminRequired => "admin_required",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Code::Unauthorized => StatusCode::UNAUTHORIZED,
            Code::ForbiddenApp | Code::CsrfFailed | Code::AdminRequired => StatusCode::FORBIDDEN,
            Code::UnknownAppInPath | Code::NotFound => StatusCode::NOT_FOUND,
            Code::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Code::BodyTooLarge | Code::TooManyTokens => StatusCode::PAYLOAD_TOO_LARGE,
            Code::SpoolFull
            | Code::SpoolUnavailable
            | Code::TooManyConnections
            | Code::AppPaused => StatusCode::SERVICE_UNAVAILABLE,
            Code::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Code::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            Code::IdempotencyInProgress | Code::NotWaiting => StatusCode::CONFLICT,
            Code::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// An API error: code, a message for people, and the index of the first bad notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: Code,
    pub message: String,
    pub index: Option<usize>,
    /// `Retry-After` in seconds, when the answer names one (a rate limit's).
    pub retry_after_s: Option<u64>,
    /// A credential was presented and refused (not merely missing): the answer carries
    /// [`CredentialRefused`], which counts against the peer (`login_failures`).
    pub refused_credential: bool,
    /// The state of the notification the answer is about (a `409 not_waiting`).
    pub state: Option<&'static str>,
}

/// On an answer that refused a presented credential.
#[derive(Debug, Clone, Copy)]
pub struct CredentialRefused;

impl ApiError {
    pub fn new(code: Code, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            index: None,
            retry_after_s: None,
            refused_credential: false,
            state: None,
        }
    }

    /// Naming the state of the notification it is about.
    pub fn with_state(mut self, state: crate::spool::State) -> ApiError {
        self.state = Some(state.as_str());
        self
    }

    /// Marks the answer as refusing a presented credential.
    pub fn refused_credential(mut self) -> ApiError {
        self.refused_credential = true;
        self
    }

    /// With `Retry-After: secs`.
    pub fn retry_after(mut self, secs: u64) -> ApiError {
        self.retry_after_s = Some(secs);
        self
    }

    pub fn at(mut self, index: usize) -> ApiError {
        self.index = Some(index);
        self
    }
}

impl From<crate::ingest::Rejection> for ApiError {
    fn from(r: crate::ingest::Rejection) -> ApiError {
        use crate::ingest::Problem;
        let code = match r.kind {
            Problem::ForbiddenApp => Code::ForbiddenApp,
            Problem::UnknownApp => Code::UnknownApp,
            Problem::InvalidJson => Code::InvalidJson,
            Problem::TooManyTokens => Code::TooManyTokens,
            Problem::PayloadTooLarge => Code::PayloadTooLarge,
            Problem::InvalidToken => Code::InvalidToken,
            Problem::InvalidPushType => Code::InvalidPushType,
            Problem::InvalidPriority => Code::InvalidPriority,
            Problem::InvalidTopic => Code::InvalidTopic,
            Problem::CollapseIdTooLong => Code::CollapseIdTooLong,
            Problem::ConflictingFields => Code::ConflictingFields,
            Problem::AlreadyExpired => Code::AlreadyExpired,
            Problem::InvalidField => Code::InvalidField,
            Problem::Internal => Code::Internal,
        };
        ApiError {
            code,
            message: r.message,
            index: r.index,
            retry_after_s: None,
            refused_credential: false,
            state: None,
        }
    }
}

/// How long a client should wait after a 503.
const RETRY_AFTER_S: &str = "5";

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: ErrorCode(self.code.as_str()),
                message: self.message,
                index: self.index,
                state: self.state,
            },
        };
        let mut resp = (self.code.status(), Json(body)).into_response();
        if let Some(secs) = self.retry_after_s {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        } else if self.code.status() == StatusCode::SERVICE_UNAVAILABLE
            || self.code == Code::IdempotencyInProgress
        {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_S));
        }
        if self.code == Code::Unauthorized {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if self.refused_credential {
            resp.extensions_mut().insert(CredentialRefused);
        }
        resp
    }
}

/// A path the router matched but whose parts could not be read (bad percent-encoding): the
/// resource does not exist, answered in the API's own shape rather than axum's plain text.
impl From<axum::extract::rejection::PathRejection> for ApiError {
    fn from(e: axum::extract::rejection::PathRejection) -> Self {
        ApiError::new(Code::NotFound, format!("no such resource: {e}"))
    }
}

/// A query string that could not be read.
impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(e: axum::extract::rejection::QueryRejection) -> Self {
        ApiError::new(Code::InvalidField, format!("the query string: {e}"))
    }
}
