//! The HTTP API (DESIGN §3) on axum.
//!
//! - `error`: the one place errors become `{"error": {...}}` answers.
//! - `auth`: API keys (SHA-256, constant time) and their scopes.
//! - `notifications`: submit, status, lookup. `apps`: feedback. `stats`: stats, health, readiness.
//! - `inject`: Momentum's REST injector, `/v1.0/inject`.
//! - `dashboard`: the admin dashboard at `/` (login, live figures, test send).

mod apps;
pub mod auth;
mod dashboard;
pub mod error;
mod inject;
mod notifications;
pub mod openapi;
mod stats;

use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::routing::{delete, get, post};

use crate::config::Config;
use crate::dispatch::Dispatcher;
use crate::spool::{NewRequest, NotificationRecord, Spool, SqliteSpool, SubmitError};
use error::{ApiError, Code};

/// What every handler shares.
#[derive(Debug)]
pub struct ApiState {
    /// The configuration in force; replaced on reload. A std lock held to clone the `Arc`.
    config: std::sync::RwLock<Arc<Config>>,
    pub spool: SqliteSpool,
    /// `None` when the API runs without dispatch (tests of the API alone).
    pub dispatch: Option<Arc<Dispatcher>>,
    /// Dashboard sessions.
    sessions: dashboard::Sessions,
}

impl ApiState {
    pub fn new(
        config: Arc<Config>,
        spool: SqliteSpool,
        dispatch: Option<Arc<Dispatcher>>,
    ) -> ApiState {
        ApiState {
            config: std::sync::RwLock::new(config),
            spool,
            dispatch,
            sessions: dashboard::Sessions::default(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        Arc::clone(&self.config.read().expect("config lock"))
    }

    /// Replaces the configuration (API keys, apps) after a reload.
    pub fn set_config(&self, config: Arc<Config>) {
        *self.config.write().expect("config lock") = config;
    }

    /// Every ingest's last step: commits `requests` (answering only after the commit), counts
    /// them, and offers them straight to dispatch without reading back what was just written.
    ///
    /// The commit and the offer run in their own task: a client that goes away before its
    /// answer makes hyper drop the handler, and with it this future, but what reaches the
    /// writer is committed either way — and committed work must reach dispatch, not wait in
    /// the spool for an unrelated rescan.
    pub async fn commit(&self, requests: Vec<NewRequest>) -> Result<(), SubmitError> {
        let spool = self.spool.clone();
        let dispatch = self.dispatch.clone();
        let committing = tokio::spawn(async move {
            let committed = spool.enqueue(requests).await?;
            for r in &committed {
                crate::metrics::accepted(&r.app, r.len());
            }
            if let Some(d) = &dispatch {
                d.offer(&committed);
            }
            Ok(())
        });
        match committing.await {
            Ok(result) => result,
            // Only a panic ends the task early (nothing cancels it).
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
}

/// The API's routes.
pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/v1/notifications", post(notifications::submit))
        .route("/v1/notifications/lookup", post(notifications::lookup))
        .route("/v1/notifications/{id}", get(notifications::status))
        .route("/v1/apps/{app}/feedback", get(apps::feedback))
        .route("/v1/apps/{app}/feedback/{token}", delete(apps::clear))
        .route("/v1/stats", get(stats::stats))
        .route("/v1.0/inject", post(inject::inject))
        .route("/v1.0/inject/", post(inject::inject))
        .route("/healthz", get(stats::healthz))
        .route("/readyz", get(stats::readyz))
        .route("/metrics", get(stats::metrics))
        .route("/openapi.json", get(openapi::document))
        .merge(dashboard::routes())
        .fallback(|| async { ApiError::new(Code::NotFound, "no such resource") })
        .with_state(state)
}

/// RFC 3339 in UTC, to the millisecond.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    let t = t
        .replace_nanosecond(t.millisecond() as u32 * 1_000_000)
        .unwrap_or(t);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
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

/// The status document of one notification.
pub(crate) fn document(r: &NotificationRecord) -> serde_json::Value {
    serde_json::json!({
        "id": r.id.to_string(),
        "app": r.app,
        "token": r.token.as_str(),
        "state": r.state.as_str(),
        "attempts": r.attempts,
        "status_code": r.status,
        "reason": r.reason.as_ref().map(|x| x.as_str()),
        "created_at": rfc3339(r.created_at),
        "updated_at": rfc3339(r.updated_at),
        "send_at": r.send_at.map(rfc3339),
        "expires_at": rfc3339(r.expires_at),
    })
}

/// Maps a spool failure to the API's answer; the detail goes to the log, not the client.
pub(crate) fn spool_error(e: &crate::spool::SpoolError) -> ApiError {
    tracing::error!(error = %e, "spool failure");
    ApiError::new(
        Code::SpoolUnavailable,
        "the spool is unavailable; try again later",
    )
}
