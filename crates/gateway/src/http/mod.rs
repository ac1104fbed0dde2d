//! The HTTP API (docs/api.md) on axum.
//!
//! - `error`: the one place errors become `{"error": {...}}` answers.
//! - `auth`: `Authorization: Bearer` on top of [`crate::auth`] (keys and scopes).
//! - `notifications`: submit, status, lookup. `cancel`: cancels, an app's pause and resume.
//!   `apps`: feedback. `stats`: stats, health, readiness.
//! - `inject`: Momentum's REST injector, `/v1.0/inject`.
//! - `dashboard`: the admin dashboard at `/` (login, live figures, test send).

pub mod app_settings;
mod apps;
mod auth;
mod cancel;
mod dashboard;
pub mod documents;
pub mod error;
mod idempotency;
mod inject;
mod notifications;
pub mod openapi;
mod propeller;
mod stats;
mod tokens;

use std::sync::Arc;

use axum::Router;
use axum::routing::{delete, get, post};

use crate::config::Config;
use crate::dispatch::Dispatcher;
use crate::ingest::Intake;
use crate::spool::{NotificationRecord, Spool, Store};
use error::{ApiError, Code};

/// What every handler shares.
#[derive(Debug)]
pub struct ApiState {
    /// The way in: the configuration in force, and where submissions go.
    pub intake: Arc<Intake>,
    /// For reads (status, lookups, stats); submissions go through `intake`.
    pub spool: Store,
    /// `None` when the API runs without dispatch (tests of the API alone).
    pub dispatch: Option<Arc<Dispatcher>>,
    /// Dashboard sessions.
    sessions: dashboard::Sessions,
}

impl ApiState {
    pub fn new(intake: Arc<Intake>) -> ApiState {
        ApiState {
            spool: intake.spool().clone(),
            dispatch: intake.dispatch().cloned(),
            intake,
            sessions: dashboard::Sessions::default(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        self.intake.config()
    }
}

/// The API's routes.
pub fn router(state: Arc<ApiState>) -> Router {
    // HTTPS or not is fixed until a restart: so is the HSTS header.
    let https = state.config().server.tls.is_some();
    let router = Router::new()
        .route("/v1/notifications", post(notifications::submit))
        .route("/v1/notifications/lookup", post(notifications::lookup))
        .route(
            "/v1/notifications/{id}",
            get(notifications::status).delete(cancel::cancel_one),
        )
        .route(
            "/v1/requests/{request_id}/cancel",
            post(cancel::cancel_request),
        )
        .route("/v1/apps/{app}/cancel", post(cancel::cancel_app))
        .route("/v1/apps/{app}/pause", post(cancel::pause))
        .route("/v1/apps/{app}/resume", post(cancel::resume))
        .route("/v1/apps/{app}/feedback", get(apps::feedback))
        .route("/v1/apps/{app}/feedback/{token}", delete(apps::clear))
        .route("/v1/tokens/{app}/{token}", get(tokens::token))
        .route("/v1/stats", get(stats::stats))
        .route("/v1.0/inject", post(inject::inject))
        .route("/v1.0/inject/", post(inject::inject))
        // The form reads its body within `[server] max_body_bytes` itself (axum's default
        // limit for multipart would otherwise cap it at 2 MB).
        .route(
            "/post",
            get(dashboard::post_form)
                .post(propeller::post)
                .layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route("/healthz", get(stats::healthz))
        .route("/readyz", get(stats::readyz))
        .route("/openapi.json", get(openapi::document))
        .merge(dashboard::routes());
    // Metrics on the API's listener unless `[server] metrics_listen` gives them their own.
    let router = if state.config().server.metrics_listen.is_none() {
        router.route("/metrics", get(stats::metrics))
    } else {
        router
    };
    finish(router, state, https)
}

/// The metrics listener's routes (`[server] metrics_listen`): `/metrics`, and the probes
/// beside it, for a scraper or an orchestrator that reaches only that address.
pub fn metrics_router(state: Arc<ApiState>) -> Router {
    let router = Router::new()
        .route("/metrics", get(stats::metrics))
        .route("/healthz", get(stats::healthz))
        .route("/readyz", get(stats::readyz_codes));
    // No credential is read here, so none is slowed or counted.
    router
        .fallback(|| async { ApiError::new(Code::NotFound, "no such resource") })
        .layer(axum::middleware::map_response(|r| common_headers(r, false)))
        .with_state(state)
}

/// The fallback, the headers every answer carries, the slowing of guessers, and the state.
fn finish(router: Router<Arc<ApiState>>, state: Arc<ApiState>, https: bool) -> Router {
    router
        .fallback(|| async { ApiError::new(Code::NotFound, "no such resource") })
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            slow_down_guessers,
        ))
        .layer(axum::middleware::map_response(move |r| {
            common_headers(r, https)
        }))
        .with_state(state)
}

/// Refused credentials cost the peer (`login_failures`): a request that presents one — an
/// `Authorization` header, or the key in the dashboard's login form or propeller's form —
/// from an address that keeps failing waits before it is looked at, whatever its outcome (a
/// guesser cannot tell a refusal by a quick answer), and an answer that refused a credential
/// ([`error::CredentialRefused`]) counts against the address.
async fn slow_down_guessers(
    axum::extract::State(state): axum::extract::State<Arc<ApiState>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let Some(peer) = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip())
    else {
        return next.run(req).await;
    };
    let presents = req
        .headers()
        .contains_key(axum::http::header::AUTHORIZATION)
        || (req.method() == axum::http::Method::POST
            && matches!(req.uri().path(), "/login" | "/post"));
    // Probes are never held: an orchestrator's stale key must not make them time out (a
    // wrong key on `/readyz` still counts).
    let probe = matches!(req.uri().path(), "/readyz" | "/healthz");
    if presents && !probe {
        state.intake.hold_off(peer).await;
    }
    let response = next.run(req).await;
    if response
        .extensions()
        .get::<error::CredentialRefused>()
        .is_some()
    {
        state.intake.login_failures().failed(peer, "http");
    }
    response
}

/// Headers on every answer: no content-type sniffing; nothing kept by caches unless the answer
/// says otherwise (the dashboard's script and stylesheet say `no-cache`), since answers carry
/// tokens, statuses and CSRF tokens; and, over HTTPS, HSTS for a year.
async fn common_headers(mut r: axum::response::Response, https: bool) -> axum::response::Response {
    use axum::http::{HeaderValue, header};
    let h = r.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    if https {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    r
}

impl ApiState {
    /// `r` as the API shows it: a queued notification that dispatch is sending now is
    /// `in_flight` (being in flight is known in memory, not written to the spool).
    pub(crate) fn with_live_state(&self, mut r: NotificationRecord) -> NotificationRecord {
        if r.state == crate::spool::State::Queued
            && self
                .dispatch
                .as_ref()
                .is_some_and(|d| d.is_in_flight(&r.app, &r.id))
        {
            r.state = crate::spool::State::InFlight;
        }
        r
    }

    /// How many of `app`'s notifications (every app's with `None`) dispatch is sending now;
    /// the spool still counts them as queued.
    pub(crate) fn in_flight_now(&self, app: Option<&str>) -> u64 {
        let Some(d) = &self.dispatch else {
            return 0;
        };
        match app {
            Some(a) => d.in_flight_count(a),
            None => self
                .config()
                .apps
                .iter()
                .map(|a| d.in_flight_count(&a.name))
                .sum(),
        }
    }

    /// Not-yet-final notifications of every app by state, as the API shows them.
    pub(crate) async fn pending_now(&self) -> Result<Pending, crate::spool::SpoolError> {
        let counts = self.spool.pending_counts().await?;
        let count = |st| counts.iter().find(|(s, _)| *s == st).map_or(0, |(_, n)| *n);
        let mut p = Pending {
            scheduled: count(crate::spool::State::Scheduled),
            queued: count(crate::spool::State::Queued),
            in_flight: count(crate::spool::State::InFlight),
        };
        p.shift(self.in_flight_now(None));
        Ok(p)
    }
}

/// Not-yet-final notifications by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Pending {
    pub scheduled: u64,
    pub queued: u64,
    pub in_flight: u64,
}

impl Pending {
    /// Moves `n` (at most all) from queued to in flight.
    pub fn shift(&mut self, n: u64) {
        let n = n.min(self.queued);
        self.queued -= n;
        self.in_flight += n;
    }
}

/// Maps a spool failure to the API's answer; the detail goes to the log, not the client.
pub(crate) fn spool_error(e: &crate::spool::SpoolError) -> ApiError {
    tracing::error!(error = %e, "spool failure");
    ApiError::new(
        Code::SpoolUnavailable,
        "the spool is unavailable; try again later",
    )
}
