//! What the dashboard shows, gathered once for the page and for each refresh.

use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use crate::config::Credential;
use crate::http::app_settings::AppSettings;
use crate::http::{ApiState, Pending};
use crate::outcomes::Tally;
use crate::outcomes::history::{INTERVAL, Sample};
use crate::rfc3339;

#[derive(Debug)]
pub struct Data {
    pub time: SystemTime,
    /// Notifications not yet final, by state.
    pub pending: Pending,
    pub tally: Tally,
    pub apps: Vec<AppRow>,
    /// Credentials that expire within 30 days (or have), as sentences.
    pub warnings: Vec<String>,
    /// The gateways sharing a PostgreSQL spool (empty on SQLite).
    pub cluster: Vec<crate::spool::GatewayInfo>,
    /// The last hour's samples and the interval in progress (none without dispatch).
    pub history: Option<(Vec<Sample>, Sample)>,
}

/// The charts' data: the samples without their apps, and each app's strip as a string of
/// [`crate::outcomes::history::AppSample::code`]s, oldest first, the interval in progress last.
fn history_json(samples: &[Sample], live: &Sample) -> Value {
    let all: Vec<&Sample> = samples.iter().chain(std::iter::once(live)).collect();
    let bare = |s: &Sample| {
        json!({
            "at_ms": s.at_ms,
            "seconds": s.seconds,
            "delivered": s.delivered,
            "failed": s.failed,
            "p50_ms": s.p50_ms,
            "p99_ms": s.p99_ms,
            "queued": s.queued,
        })
    };
    let health: serde_json::Map<String, Value> = live
        .apps
        .keys()
        .map(|app| {
            // An interval in which the app was not configured is idle: every strip has a cell
            // for every sample, so cells stay in time.
            let strip: String = all
                .iter()
                .map(|s| s.apps.get(app).map_or('i', |c| c.code()))
                .collect();
            (app.clone(), Value::String(strip))
        })
        .collect();
    json!({
        "interval_s": INTERVAL.as_secs(),
        "samples": samples.iter().map(bare).collect::<Vec<_>>(),
        "live": bare(live),
        "health": health,
    })
}

#[derive(Debug)]
pub struct AppRow {
    pub name: String,
    pub halted: Option<String>,
    /// An operator's pause, while it lasts.
    pub paused: Option<crate::spool::AppPause>,
    pub connections: usize,
    pub streams_in_flight: usize,
    pub queued_in_memory: usize,
    pub credentials: Vec<CredentialRow>,
    pub settings: AppSettings,
}

#[derive(Debug)]
pub struct CredentialRow {
    /// The file's name (not its folder).
    pub file: String,
    pub kind: &'static str,
    /// Certificates only.
    pub not_after: Option<SystemTime>,
    pub days_left: Option<i64>,
    pub expiring: bool,
    /// The one new connections use.
    pub active: bool,
}

pub async fn build(state: &ApiState) -> Data {
    let now = SystemTime::now();
    let config = state.config();
    let pending = state.pending_now().await.unwrap_or_default();
    let tally = state
        .dispatch
        .as_ref()
        .map(|d| d.tally())
        .unwrap_or_default();
    let cluster = {
        use crate::spool::Spool;
        state.spool.gateways().await.unwrap_or_default()
    };
    let mut warnings = Vec::new();
    let apps = config
        .apps
        .iter()
        .map(|app| {
            let status = state.dispatch.as_ref().and_then(|d| d.status(&app.name));
            // The one dispatch uses (the file's choice until dispatch has made it).
            let active = crate::http::app_settings::in_use(
                app,
                status.as_ref().and_then(|s| s.credential.as_deref()),
            );
            let credentials = app
                .credentials
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let file = c.file_name();
                    let (kind, not_after) = match c {
                        Credential::Token { .. } => ("token key (.p8, does not expire)", None),
                        Credential::Certificate { identity, .. } => {
                            ("certificate", Some(identity.info().not_after))
                        }
                    };
                    let left = c.expires_in(now);
                    let soon = c.expires_soon(now);
                    let expiring = soon.is_some();
                    if let Some(left) = soon {
                        let days = left / 86_400;
                        warnings.push(if days < 0 {
                            format!("{}: {file} expired {} days ago", app.name, -days)
                        } else {
                            format!("{}: {file} expires in {days} days", app.name)
                        });
                    }
                    CredentialRow {
                        file,
                        kind,
                        not_after,
                        days_left: left.map(|l| l.div_euclid(86_400)),
                        expiring,
                        active: active == Some(i),
                    }
                })
                .collect();
            AppRow {
                name: app.name.clone(),
                halted: status.as_ref().and_then(|s| s.halted.clone()),
                paused: state.dispatch.as_ref().and_then(|d| d.pause_of(&app.name)),
                connections: status.as_ref().map_or(0, |s| s.connections),
                streams_in_flight: status.as_ref().map_or(0, |s| s.streams_in_flight),
                queued_in_memory: status.as_ref().map_or(0, |s| s.queued_in_memory),
                credentials,
                settings: AppSettings::of(app, active),
            }
        })
        .collect();
    let history = state.dispatch.as_ref().map(|d| d.history(&tally));
    Data {
        time: now,
        pending,
        tally,
        apps,
        warnings,
        cluster,
        history,
    }
}

impl Data {
    /// A final-state count since start.
    pub fn outcome(&self, state: &str) -> u64 {
        self.tally.outcomes.get(state).copied().unwrap_or(0)
    }

    pub fn to_json(&self) -> Value {
        let ms = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or(Duration::ZERO)
                .as_millis() as u64
        };
        json!({
            "time_ms": ms(self.time),
            "figures": {
                "delivered": self.outcome("delivered"),
                "failed": self.outcome("failed"),
                "expired": self.outcome("expired"),
                "queued": self.pending.queued,
                "scheduled": self.pending.scheduled,
                "in_flight": self.pending.in_flight,
            },
            "apps": self.apps.iter().map(|a| json!({
                "name": a.name,
                "healthy": a.halted.is_none(),
                "halted": a.halted,
                "paused": a.paused.as_ref().map(|p| json!({
                    "since": rfc3339::format(p.since),
                    "reject": p.reject,
                })),
                "connections": a.connections,
                "streams_in_flight": a.streams_in_flight,
                "queued_in_memory": a.queued_in_memory,
                "credentials": a.credentials.iter().map(|c| json!({
                    "file": c.file,
                    "kind": c.kind,
                    "not_after": c.not_after.map(rfc3339::format),
                    "days_left": c.days_left,
                    "expiring": c.expiring,
                    "active": c.active,
                })).collect::<Vec<_>>(),
                "settings": a.settings.summary(),
            })).collect::<Vec<_>>(),
            "failures_by_reason": self.tally.failures_by_reason.iter()
                .map(|(r, n)| json!({"reason": r, "count": n})).collect::<Vec<_>>(),
            "latest_failures": self.tally.latest_failures.iter().map(|f| json!({
                "time": rfc3339::format(f.time),
                "id": f.id.to_string(),
                "app": f.app,
                "token": f.token.as_str(),
                "state": f.state.as_str(),
                "reason": f.reason,
            })).collect::<Vec<_>>(),
            "warnings": self.warnings,
            "history": self.history.as_ref().map(|(samples, live)| history_json(samples, live)),
            "cluster": self.cluster.iter().map(|g| json!({
                "host": g.host,
                "id": g.id,
                "heartbeat_at": rfc3339::format(g.heartbeat_at),
                "apps": g.apps.join(", "),
                "holds": g.holds,
                "this": g.this,
            })).collect::<Vec<_>>(),
        })
    }
}
