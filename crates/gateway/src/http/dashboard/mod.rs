//! The dashboard at `/` for admin keys: a login form that takes an admin API key and sets a
//! session cookie (HttpOnly, SameSite=Strict, Secure over HTTPS), a server-rendered page whose
//! figures a small script refreshes from `/dashboard/data`, a lookup box (a notification's
//! attempts, a token's last notifications, clearing a dead token) and a test-send form, each
//! change protected by a per-session CSRF token. Every asset is embedded in the binary; the Content-Security-Policy
//! allows nothing from elsewhere and no inline script.

mod control;
mod data;
mod lookup;
mod page;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use apns::ApnsId;
use aws_lc_rs::constant_time::verify_slices_are_equal;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde::Deserialize;

use super::ApiState;
use super::error::{ApiError, Code};
use crate::auth::{Caller, check_key};
use crate::spool::Spool;

/// The session cookie's name.
const COOKIE: &str = "pushgate_session";
/// How long a session lasts.
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Most sessions kept at once; the oldest are dropped beyond this.
const MAX_SESSIONS: usize = 1000;

/// A logged-in admin.
#[derive(Debug, Clone)]
struct Session {
    caller: Caller,
    /// The SHA-256 of the key that logged in: the session lasts while that very key is
    /// configured (and admin), not merely a key of the same name.
    key_sha256: [u8; 32],
    csrf: String,
    expires: Instant,
}

/// Sessions by their cookie value. A std lock, held only to look up or change the map.
#[derive(Debug, Default)]
pub struct Sessions(Mutex<HashMap<String, Session>>);

impl Sessions {
    fn create(&self, caller: Caller, key_sha256: [u8; 32]) -> (String, Session) {
        let session = Session {
            caller,
            key_sha256,
            csrf: random_hex(),
            expires: Instant::now() + SESSION_TTL,
        };
        let id = random_hex();
        let mut map = self.0.lock().expect("sessions lock");
        let now = Instant::now();
        map.retain(|_, s| s.expires > now);
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        map.insert(id.clone(), session.clone());
        (id, session)
    }

    fn get(&self, id: &str) -> Option<Session> {
        let map = self.0.lock().expect("sessions lock");
        map.get(id).filter(|s| s.expires > Instant::now()).cloned()
    }

    fn remove(&self, id: &str) {
        self.0.lock().expect("sessions lock").remove(id);
    }
}

fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    // aws-lc-rs's system RNG; it does not fail on supported platforms.
    let _ = aws_lc_rs::rand::fill(&mut bytes);
    hex::encode(bytes)
}

/// The dashboard's routes.
pub fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/", get(index))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/dashboard/data", get(data_json))
        .route("/dashboard/send", post(send))
        .route("/dashboard/notifications/{id}", get(notification))
        .route("/dashboard/tokens/{app}/{token}", get(lookup::token))
        .route("/dashboard/tokens/{app}/{token}/clear", post(lookup::clear))
        .route("/dashboard/apps/{app}/pause", post(control::pause))
        .route("/dashboard/apps/{app}/resume", post(control::resume))
        .route(
            "/dashboard/notifications/{id}/cancel",
            post(control::cancel),
        )
        .route(
            "/dashboard/requests/{rid}/cancel",
            post(control::cancel_request),
        )
        .route("/dashboard/app.js", get(script))
        .route("/dashboard/app.css", get(style))
}

/// The session id in the request's cookies.
fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            c.trim()
                .strip_prefix(&format!("{COOKIE}="))
                .map(str::to_owned)
        })
}

fn session(state: &ApiState, headers: &HeaderMap) -> Option<(String, Session)> {
    let id = cookie(headers)?;
    let s = state.sessions.get(&id)?;
    // A key removed, replaced or demoted by a reload ends its sessions.
    let still_admin = state
        .config()
        .api_keys
        .iter()
        .any(|k| k.key_sha256 == s.key_sha256 && k.admin);
    still_admin.then_some((id, s))
}

fn csrf_ok(session: &Session, presented: Option<&str>) -> bool {
    presented
        .is_some_and(|p| verify_slices_are_equal(p.as_bytes(), session.csrf.as_bytes()).is_ok())
}

/// Security headers for every dashboard page.
fn html(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

async fn index(State(state): State<Arc<ApiState>>, headers: HeaderMap) -> Response {
    match session(&state, &headers) {
        Some((_, s)) => {
            let data = data::build(&state).await;
            html(
                StatusCode::OK,
                page::dashboard(&s.caller.name, &s.csrf, &data),
            )
        }
        None => html(StatusCode::OK, page::login(None)),
    }
}

/// `GET /post`: propeller's test form, for a logged-in admin; the login page otherwise.
pub(super) async fn post_form(State(state): State<Arc<ApiState>>, headers: HeaderMap) -> Response {
    match session(&state, &headers) {
        Some(_) => {
            let topics: Vec<String> = state
                .config()
                .apps
                .iter()
                .map(|a| a.topic.as_str().to_owned())
                .collect();
            html(StatusCode::OK, page::propeller_form(&topics))
        }
        None => html(
            StatusCode::UNAUTHORIZED,
            page::login(Some("log in as an admin to use the propeller form")),
        ),
    }
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    key: String,
}

async fn login(State(state): State<Arc<ApiState>>, Form(form): Form<LoginForm>) -> Response {
    let config = state.config();
    match check_key(&config.api_keys, form.key.trim()).filter(|c| c.admin) {
        Some(caller) => {
            tracing::info!(key = %caller.name, "dashboard login");
            let digest =
                aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, form.key.trim().as_bytes());
            let mut key_sha256 = [0u8; 32];
            key_sha256.copy_from_slice(digest.as_ref());
            let (id, _) = state.sessions.create(caller, key_sha256);
            let secure = if config.server.tls.is_some() {
                "; Secure"
            } else {
                ""
            };
            let cookie = format!(
                "{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{secure}",
                SESSION_TTL.as_secs()
            );
            let mut r = Redirect::to("/").into_response();
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        None => {
            let mut r = html(
                StatusCode::UNAUTHORIZED,
                page::login(Some("That is not an admin API key.")),
            );
            r.extensions_mut().insert(super::error::CredentialRefused);
            r
        }
    }
}

#[derive(Debug, Deserialize)]
struct LogoutForm {
    csrf: String,
}

async fn logout(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Form(form): Form<LogoutForm>,
) -> Response {
    if let Some((id, s)) = session(&state, &headers) {
        if !csrf_ok(&s, Some(&form.csrf)) {
            return html(
                StatusCode::FORBIDDEN,
                page::login(Some("Refused: bad form token.")),
            );
        }
        state.sessions.remove(&id);
    }
    let mut r = Redirect::to("/").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("pushgate_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
    );
    r
}

/// The `x-csrf-token` header of a script's request, checked against the session's.
fn csrf_header(session: &Session, headers: &HeaderMap) -> Result<(), ApiError> {
    let presented = headers.get("x-csrf-token").and_then(|v| v.to_str().ok());
    if csrf_ok(session, presented) {
        Ok(())
    } else {
        Err(ApiError::new(
            Code::CsrfFailed,
            "missing or wrong CSRF token; reload the page",
        ))
    }
}

fn unauthorized() -> ApiError {
    ApiError::new(Code::Unauthorized, "log in to the dashboard first")
}

async fn data_json(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    session(&state, &headers).ok_or_else(unauthorized)?;
    Ok(Json(data::build(&state).await.to_json()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestSend {
    app: String,
    token: String,
    title: Option<String>,
    body: Option<String>,
}

/// The test-send form: one alert to one token, through the API's own checks.
async fn send(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Json(form): Json<TestSend>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (_, s) = session(&state, &headers).ok_or_else(unauthorized)?;
    csrf_header(&s, &headers)?;
    let doc = serde_json::json!({
        "app": form.app,
        "tokens": [form.token.trim()],
        "alert": {"title": form.title.unwrap_or_default(), "body": form.body.unwrap_or_default()},
    });
    let config = state.config();
    let (requests, ids) = crate::ingest::json::parse(
        doc.to_string().as_bytes(),
        &s.caller,
        &config,
        SystemTime::now(),
    )?;
    state
        .intake
        .submit(crate::ingest::Submission::new(
            Some(s.caller.clone()),
            requests,
        ))
        .await
        .map_err(super::notifications::submit_error)?;
    tracing::info!(key = %s.caller.name, "dashboard test send");
    let ids: Vec<String> = ids.iter().map(ApnsId::to_string).collect();
    Ok(Json(serde_json::json!({ "ids": ids })))
}

async fn notification(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<super::documents::NotificationDocument>, ApiError> {
    session(&state, &headers).ok_or_else(unauthorized)?;
    let not_found = || ApiError::new(Code::NotFound, "no such notification");
    let id = ApnsId::parse(&id).map_err(|_| not_found())?;
    let (record, earlier) = state
        .spool
        .history(id)
        .await
        .map_err(|e| super::spool_error(&e))?
        .ok_or_else(not_found)?;
    Ok(Json(super::documents::NotificationDocument::with_history(
        &state.with_live_state(record),
        &earlier,
    )))
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut r = body.into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

async fn script() -> Response {
    asset(
        include_str!("assets/app.js"),
        "text/javascript; charset=utf-8",
    )
}

async fn style() -> Response {
    asset(include_str!("assets/app.css"), "text/css; charset=utf-8")
}
