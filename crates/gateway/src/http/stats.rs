//! `GET /v1/stats`, `GET /healthz`, `GET /readyz`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};

use super::app_settings::{AppSettings, in_use};
use super::auth::authenticate;
use super::documents::{
    AppStats, Counts, ErrorBody, Health, PausedApp, Readiness, ReadinessDetail, ReadyReason,
    ReadyStatus, Stats,
};
use super::error::ApiError;
use super::{ApiState, spool_error};
use crate::ingest::Trouble;
use crate::spool::{Spool, State as NState};

#[utoipa::path(get, path = "/v1/stats", tag = "operations", security(("api_key" = [])),
    responses(
        (status = 200, description = "Counts by state, and per app (of the key's apps) its counts, connections, streams in flight, health and settings in force", body = Stats),
        (status = 401, description = "unauthorized", body = ErrorBody), (status = 500, description = "internal", body = ErrorBody), (status = 503, description = "spool_full or spool_unavailable; retry after Retry-After seconds", body = ErrorBody, headers(("Retry-After" = u32, description = "seconds to wait"))),
    ))]
pub async fn stats(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
) -> Result<Json<Stats>, ApiError> {
    let config = state.config();
    let caller = authenticate(&config.api_keys, &headers)?;
    let counts = state
        .spool
        .counts_by_app()
        .await
        .map_err(|e| spool_error(&e))?;
    let mut apps: BTreeMap<String, AppStats> = BTreeMap::new();
    for app in config.apps.iter().filter(|a| caller.may_use(&a.name)) {
        let status = state.dispatch.as_ref().and_then(|d| d.status(&app.name));
        let status = status.as_ref();
        apps.insert(
            app.name.clone(),
            AppStats {
                counts: Counts::default(),
                connections: status.map_or(0, |s| s.connections),
                streams_in_flight: status.map_or(0, |s| s.streams_in_flight),
                healthy: status.is_none_or(|s| s.halted.is_none()),
                halted_reason: status.and_then(|s| s.halted.clone()),
                paused: state
                    .dispatch
                    .as_ref()
                    .and_then(|d| d.pause_of(&app.name))
                    .as_ref()
                    .map(PausedApp::from),
                settings: AppSettings::of(
                    app,
                    in_use(app, status.and_then(|s| s.credential.as_deref())),
                ),
            },
        );
    }
    let mut totals = Counts::default();
    for (app, s, n) in counts {
        if let Some(a) = apps.get_mut(&app) {
            a.counts.add(s, n);
            totals.add(s, n);
        }
    }
    // In flight is known to dispatch, not the spool (which still says queued).
    for (name, a) in &mut apps {
        let moved = a.counts.shift(state.in_flight_now(Some(name)));
        totals.shift(moved);
    }
    let cluster = match caller.admin {
        true => {
            let gateways = state.spool.gateways().await.map_err(|e| spool_error(&e))?;
            (!gateways.is_empty()).then(|| gateways.into_iter().map(Into::into).collect())
        }
        false => None,
    };
    Ok(Json(Stats {
        totals,
        apps,
        cluster,
    }))
}

#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Running", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Ready when the spool's writer answers within 2 s, the spool is below its limit, and no app
/// is halted. Public: anyone reads the reason codes; an admin key also reads what and why
/// (app names, errors), which a stranger has no business knowing.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    security((), ("api_key" = [])),
    responses(
        (status = 200, description = "Ready: the spool is writable and below its limit, no app is halted", body = Readiness),
        (status = 503, description = "Not ready: the reasons as codes (with an admin key, each with its app and message)", body = Readiness),
    ))]
pub async fn readyz(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    // A key that is wrong, or not an admin's, reads what anyone reads: a probe is no place
    // for a 401. A wrong one still counts against its address, like any refused credential.
    let auth = authenticate(&state.config().api_keys, &headers);
    let admin = auth.as_ref().is_ok_and(|c| c.admin);
    let (code, readiness) = readiness(&state, admin).await;
    let mut response = (code, Json(readiness)).into_response();
    if auth.is_err_and(|e| e.refused_credential) {
        response
            .extensions_mut()
            .insert(super::error::CredentialRefused);
    }
    response
}

/// `/readyz` on the metrics listener (`[server] metrics_listen`): the codes, whatever the
/// request carries — that listener is plain HTTP, no place for an admin key.
pub async fn readyz_codes(State(state): State<Arc<ApiState>>) -> (StatusCode, Json<Readiness>) {
    let (code, readiness) = readiness(&state, false).await;
    (code, Json(readiness))
}

/// Whether the gateway is ready, and why not; with `details` for an admin.
async fn readiness(state: &ApiState, admin: bool) -> (StatusCode, Readiness) {
    let mut found: Vec<ReadinessDetail> = Vec::new();
    let mut problem = |reason, app: Option<&str>, way: Option<&str>, message: String| {
        found.push(ReadinessDetail {
            reason,
            app: app.map(str::to_owned),
            way: way.map(str::to_owned),
            message,
        });
    };
    match tokio::time::timeout(Duration::from_secs(2), state.spool.probe_write()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            let why = crate::error_chain(&e);
            tracing::error!(error = %why, "the spool does not take writes");
            problem(
                ReadyReason::SpoolUnavailable,
                None,
                None,
                format!("spool unavailable: {why}"),
            );
        }
        Err(_) => problem(
            ReadyReason::SpoolUnavailable,
            None,
            None,
            "spool writer did not answer within 2 s".to_owned(),
        ),
    }
    let (pending, limit) = (state.spool.pending(), state.spool.max_pending());
    if pending >= limit {
        problem(
            ReadyReason::SpoolFull,
            None,
            None,
            format!("spool full: {pending} pending, limit {limit}"),
        );
    }
    if let Some(d) = &state.dispatch {
        if let Some(why) = d.paused() {
            problem(
                ReadyReason::DispatchPaused,
                None,
                None,
                format!("dispatch paused: {why}"),
            );
        }
        for (app, reason) in d.halted() {
            problem(
                ReadyReason::AppHalted,
                Some(&app),
                None,
                format!("app {app} halted: {reason}"),
            );
        }
    }
    for (way, kind, message) in state.intake.troubles() {
        let reason = match kind {
            Trouble::Unreachable => ReadyReason::BeanstalkdUnreachable,
            Trouble::Misconfigured => ReadyReason::BeanstalkdTube,
        };
        problem(reason, None, Some(&way), format!("{way}: {message}"));
    }
    let mut reasons: Vec<ReadyReason> = Vec::new();
    for d in &found {
        if !reasons.contains(&d.reason) {
            reasons.push(d.reason);
        }
    }
    let (status, code) = if reasons.is_empty() {
        (ReadyStatus::Ready, StatusCode::OK)
    } else {
        (ReadyStatus::NotReady, StatusCode::SERVICE_UNAVAILABLE)
    };
    let details = admin.then_some(found);
    let paused_apps = admin.then(|| {
        state.dispatch.as_ref().map_or_else(Vec::new, |d| {
            d.operator_pauses().iter().map(PausedApp::from).collect()
        })
    });
    (
        code,
        Readiness {
            status,
            reasons,
            details,
            paused_apps,
        },
    )
}

/// `GET /metrics`: Prometheus text, with the gauges of the present set first.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses(
        (status = 200, description = "Prometheus text (docs/metrics.md)", body = String, content_type = "text/plain"),
        (status = 503, description = "Metrics are not recorded in this process", body = String, content_type = "text/plain"),
    ))]
pub async fn metrics(State(state): State<Arc<ApiState>>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let Some(handle) = crate::metrics::handle() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics are not recorded in this process",
        )
            .into_response();
    };
    let config = state.config();
    for app in &config.apps {
        let labels = [("app", app.name.clone())];
        let status = state.dispatch.as_ref().and_then(|d| d.status(&app.name));
        let s = status.as_ref();
        crate::metrics::gauge(
            "pushgate_connections",
            &labels,
            s.map_or(0, |s| s.connections) as f64,
        );
        crate::metrics::gauge(
            "pushgate_streams_in_flight",
            &labels,
            s.map_or(0, |s| s.streams_in_flight) as f64,
        );
        crate::metrics::gauge(
            "pushgate_app_halted",
            &labels,
            f64::from(u8::from(s.is_some_and(|s| s.halted.is_some()))),
        );
        crate::metrics::gauge(
            "pushgate_ready_queue_depth",
            &labels,
            s.map_or(0, |s| s.queued_in_memory) as f64,
        );
        // Every configured certificate, in use or waiting to roll over (negative once expired).
        let now = std::time::SystemTime::now();
        for c in &app.credentials {
            if let Some(left) = c.expires_in(now) {
                crate::metrics::gauge(
                    "pushgate_certificate_expiry_seconds",
                    &[("app", app.name.clone()), ("file", c.file_name())],
                    left as f64,
                );
            }
        }
        if let Some(age) = s.and_then(|s| s.token_age) {
            crate::metrics::gauge(
                "pushgate_provider_token_age_seconds",
                &labels,
                age.as_secs_f64(),
            );
        }
    }
    if let Ok(p) = state.pending_now().await {
        for (st, n) in [
            (NState::Scheduled, p.scheduled),
            (NState::Queued, p.queued),
            (NState::InFlight, p.in_flight),
        ] {
            crate::metrics::gauge(
                "pushgate_spool_notifications",
                &[("state", st.as_str().to_owned())],
                n as f64,
            );
        }
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        handle.render(),
    )
        .into_response()
}
