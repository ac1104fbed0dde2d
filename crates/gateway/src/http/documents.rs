//! The API's documents: what the handlers return and the bodies they read, as types. Each is
//! serialised (or parsed) by the handler and described by the same type in `/openapi.json`, so
//! the document cannot drift from what is served; `.ci/run` checks the two agree with
//! schemathesis against a running gateway.

use std::collections::BTreeMap;
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};

use super::error::Code;
use crate::rfc3339;
use crate::spool::{AttemptRecord, FeedbackEntry, NotificationRecord, State};

/// An error code. The schema is made from [`Code::ALL`], so the document cannot miss one; its
/// description gives each code's HTTP status.
#[derive(Debug, Serialize)]
pub struct ErrorCode(pub &'static str);

impl utoipa::PartialSchema for ErrorCode {
    fn schema() -> RefOr<Schema> {
        let mut names: Vec<&str> = Vec::new();
        let mut lines = Vec::new();
        for code in Code::ALL {
            let name = code.as_str();
            let line = format!("`{name}` ({})", code.status().as_u16());
            if !lines.contains(&line) {
                lines.push(line);
            }
            if !names.contains(&name) {
                names.push(name);
            }
        }
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(names))
            .description(Some(format!(
                "The error code, with its HTTP status: {}.",
                lines.join(", ")
            )))
            .into()
    }
}

impl ToSchema for ErrorCode {
    fn name() -> std::borrow::Cow<'static, str> {
        "ErrorCode".into()
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    pub message: String,
    /// The index of the first invalid notification in the request, when there is one.
    #[schema(value_type = Option<u32>)]
    pub index: Option<usize>,
    /// The notification's state, on a `409 not_waiting` (`in_flight`, `delivered`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub state: Option<&'static str>,
}

/// `{"error": {...}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// One id per token, notifications in request order, tokens in order.
#[derive(Debug, Serialize, ToSchema)]
pub struct Ids {
    pub ids: Vec<String>,
    /// The submission's id: `POST /v1/requests/{request_id}/cancel` takes back what of it
    /// still waits. (On a replay of an Idempotency-Key, the first submission's, when it is
    /// still stored.)
    pub request_id: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NotificationState {
    Scheduled,
    Queued,
    InFlight,
    Delivered,
    Failed,
    Expired,
    /// Taken back before it was sent (`DELETE /v1/notifications/{id}`, the bulk cancels).
    Cancelled,
    /// Replaced before it was sent by a newer one to the same token with the same collapse id
    /// (or Live Activity update): `[[apps]] supersede`.
    Superseded,
}

impl From<State> for NotificationState {
    fn from(s: State) -> Self {
        match s {
            State::Scheduled => NotificationState::Scheduled,
            State::Queued => NotificationState::Queued,
            State::InFlight => NotificationState::InFlight,
            State::Delivered => NotificationState::Delivered,
            State::Failed => NotificationState::Failed,
            State::Expired => NotificationState::Expired,
            State::Cancelled => NotificationState::Cancelled,
            State::Superseded => NotificationState::Superseded,
        }
    }
}

/// What happened to one notification.
#[derive(Debug, Serialize, ToSchema)]
pub struct NotificationDocument {
    pub id: String,
    /// The id of the submission it came in (none for notifications stored before pushgate
    /// kept them).
    pub request_id: Option<String>,
    pub app: String,
    pub token: String,
    pub state: NotificationState,
    pub attempts: u32,
    /// Apple's HTTP status of the last answer.
    pub status_code: Option<u16>,
    /// Apple's reason (`Unregistered`, `BadDeviceToken`, ...) or the gateway's own (`Expired`,
    /// `MaxAttempts`).
    pub reason: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub send_at: Option<String>,
    pub expires_at: String,
    /// The connection the last attempt went out on, as the gateway's logs number them
    /// (`conn=`); none before the first attempt.
    pub connection: Option<u64>,
    /// Every attempt, oldest first (the last 100 before the last): in the answer for one
    /// notification (`GET /v1/notifications/{id}`), not in lookups of many.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<AttemptDocument>>,
}

/// One attempt to send a notification.
#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptDocument {
    /// When its outcome was recorded.
    pub at: String,
    /// Apple's HTTP status, when it answered.
    pub status_code: Option<u16>,
    /// Apple's reason; for an attempt Apple never answered, `Timeout` or `ConnectionLost`; for
    /// the last, the notification's own (`MaxAttempts`, `Expired`) when the gateway gave up.
    pub reason: Option<String>,
    /// The connection it went out on (`conn=` in the logs).
    pub connection: Option<u64>,
}

impl NotificationDocument {
    /// The document with its history: the attempts kept before the last (`earlier`), then
    /// the last, which is the record itself once the notification is final (an attempt that a
    /// retry followed is among `earlier` already).
    pub fn with_history(r: &NotificationRecord, earlier: &[AttemptRecord]) -> Self {
        let mut history: Vec<AttemptDocument> = earlier
            .iter()
            .map(|a| AttemptDocument {
                at: rfc3339::format(a.at),
                status_code: a.status,
                reason: a.reason.as_ref().map(ToString::to_string),
                connection: a.conn,
            })
            .collect();
        if r.state.is_final() && (r.conn.is_some() || r.status.is_some()) {
            history.push(AttemptDocument {
                at: rfc3339::format(r.updated_at),
                status_code: r.status,
                reason: r.reason.as_ref().map(ToString::to_string),
                connection: r.conn,
            });
        }
        NotificationDocument {
            history: Some(history),
            ..NotificationDocument::from(r)
        }
    }
}

impl From<&NotificationRecord> for NotificationDocument {
    fn from(r: &NotificationRecord) -> Self {
        NotificationDocument {
            id: r.id.to_string(),
            request_id: r.request_id.map(|r| r.to_string()),
            app: r.app.clone(),
            token: r.token.as_str().to_owned(),
            state: r.state.into(),
            attempts: r.attempts,
            status_code: r.status,
            reason: r.reason.as_ref().map(ToString::to_string),
            created_at: rfc3339::format(r.created_at),
            updated_at: rfc3339::format(r.updated_at),
            send_at: r.send_at.map(rfc3339::format),
            expires_at: rfc3339::format(r.expires_at),
            connection: r.conn,
            history: None,
        }
    }
}

/// A device token of an app: whether it is registered dead, and its last notifications.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenDocument {
    pub app: String,
    pub token: String,
    /// Registered dead (Apple answered `Unregistered` or `BadDeviceToken` for it): sends to it
    /// are suppressed until it is cleared (`DELETE /v1/apps/{app}/feedback/{token}`).
    pub dead: Option<DeadTokenState>,
    /// Its last notifications, newest first.
    pub notifications: Vec<NotificationDocument>,
    /// The search read the 1,000,000 most recent notifications and stopped before the oldest
    /// stored: older notifications to this token may exist.
    pub truncated: bool,
}

/// Why and since when a token is registered dead.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadTokenState {
    pub reason: String,
    pub since: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LookupBody {
    /// At most 10,000.
    pub ids: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LookupAnswer {
    /// The known ones among those asked, of apps the key may use.
    pub notifications: Vec<NotificationDocument>,
}

/// A token Apple declared dead.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = FeedbackEntry)]
pub struct DeadTokenEntry {
    pub token: String,
    pub reason: String,
    /// UNIX seconds.
    pub timestamp: u64,
}

impl From<&FeedbackEntry> for DeadTokenEntry {
    fn from(e: &FeedbackEntry) -> Self {
        DeadTokenEntry {
            token: e.token.as_str().to_owned(),
            reason: e.reason.as_str().to_owned(),
            timestamp: e
                .since
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }
}

/// Notifications by state.
#[derive(Debug, Clone, Copy, Default, Serialize, ToSchema)]
pub struct Counts {
    pub scheduled: u64,
    pub queued: u64,
    pub in_flight: u64,
    pub delivered: u64,
    pub failed: u64,
    pub expired: u64,
    pub cancelled: u64,
    pub superseded: u64,
}

impl Counts {
    pub fn add(&mut self, state: State, n: u64) {
        *match state {
            State::Scheduled => &mut self.scheduled,
            State::Queued => &mut self.queued,
            State::InFlight => &mut self.in_flight,
            State::Delivered => &mut self.delivered,
            State::Failed => &mut self.failed,
            State::Expired => &mut self.expired,
            State::Cancelled => &mut self.cancelled,
            State::Superseded => &mut self.superseded,
        } += n;
    }

    /// Moves `n` (at most all) from queued to in flight: dispatch knows what is in flight,
    /// the spool still says queued.
    pub fn shift(&mut self, n: u64) -> u64 {
        let n = n.min(self.queued);
        self.queued -= n;
        self.in_flight += n;
        n
    }
}

/// One app's counts, connections, streams in flight and health.
#[derive(Debug, Serialize, ToSchema)]
pub struct AppStats {
    #[serde(flatten)]
    pub counts: Counts,
    pub connections: usize,
    pub streams_in_flight: usize,
    pub healthy: bool,
    /// Why the app is halted, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub halted_reason: Option<String>,
    /// Paused by an operator (`POST /v1/apps/{app}/pause`), while it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused: Option<PausedApp>,
    /// Its settings in force: after defaults and the last reload.
    pub settings: super::app_settings::AppSettings,
}

/// Counts by state, and per app (of the key's apps) its counts and health.
#[derive(Debug, Serialize, ToSchema)]
pub struct Stats {
    pub totals: Counts,
    pub apps: BTreeMap<String, AppStats>,
    /// The gateways sharing a PostgreSQL spool, for an admin key; absent otherwise (and on
    /// SQLite, which one gateway owns).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<Vec<GatewayDoc>>,
}

/// One gateway sharing the spool.
#[derive(Debug, Serialize, ToSchema)]
pub struct GatewayDoc {
    pub id: String,
    /// Host name and process id.
    pub host: String,
    /// RFC 3339.
    pub started_at: String,
    pub heartbeat_at: String,
    pub apps: Vec<String>,
    /// Notifications not yet final that it holds (claimed, being sent or to be retried).
    pub holds: u64,
    /// The gateway that answered.
    pub this: bool,
}

impl From<crate::spool::GatewayInfo> for GatewayDoc {
    fn from(g: crate::spool::GatewayInfo) -> GatewayDoc {
        GatewayDoc {
            id: g.id,
            host: g.host,
            started_at: rfc3339::format(g.started_at),
            heartbeat_at: rfc3339::format(g.heartbeat_at),
            apps: g.apps,
            holds: g.holds,
            this: g.this,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    pub status: &'static str,
}

/// `GET /readyz`: reason codes for anyone; what and why for an admin key.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    pub status: ReadyStatus,
    /// Why not ready, as codes, each once (empty when ready).
    pub reasons: Vec<ReadyReason>,
    /// With an admin key: each problem, with its app (or way in) and the gateway's words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Vec<ReadinessDetail>>,
    /// With an admin key: the apps an operator paused. A pause is chosen, not a fault: it
    /// leaves the gateway ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused_apps: Option<Vec<PausedApp>>,
}

/// An app an operator paused.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PausedApp {
    pub app: String,
    /// Since when (RFC 3339).
    pub since: String,
    /// Ingest answers `503 app_paused` meanwhile.
    pub reject: bool,
}

impl From<&crate::spool::AppPause> for PausedApp {
    fn from(p: &crate::spool::AppPause) -> PausedApp {
        PausedApp {
            app: p.app.clone(),
            since: crate::rfc3339::format(p.since),
            reject: p.reject,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReadyStatus {
    Ready,
    NotReady,
}

/// Why a gateway is not ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReadyReason {
    /// The spool does not take writes (its write failed, or did not answer within 2 s).
    SpoolUnavailable,
    /// The spool holds `max_pending` notifications not yet final.
    SpoolFull,
    /// Dispatch stopped taking work: the spool refused its outcomes.
    DispatchPaused,
    /// An app stopped sending (its credential or configuration was refused).
    AppHalted,
    /// A beanstalkd server is out of reach.
    BeanstalkdUnreachable,
    /// A watched beanstalkd tube cannot be served as configured.
    BeanstalkdTube,
}

/// One reason a gateway is not ready, as an admin key reads it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReadinessDetail {
    pub reason: ReadyReason,
    /// The app halted, when the reason is an app's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// The way in (`beanstalkd 127.0.0.1:11300`, its tube), when the reason is one's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub way: Option<String>,
    pub message: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct Vctx {
    /// The device token, when the template's part has no X-Device-Token.
    #[serde(rename = "DLV_Dest_ID")]
    pub dest_id: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct InjectRecipient {
    /// `local@domain`: the domain names the app; the local part may be the token.
    pub to: String,
    /// The sender: where a DSN goes when a notification made for this recipient fails and
    /// neither the push part nor the template names a `Return-Path` (`[bounces]`).
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub vctx: Option<Vctx>,
}

/// Momentum's REST injection.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Injection {
    /// A MIME message with `message/vnd.msys.apn` parts.
    pub template: String,
    pub recipients: Vec<InjectRecipient>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InjectResult {
    /// `success` or `failure`.
    pub status: &'static str,
    /// The first id (success).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mid: Option<String>,
    /// SMTP-style: `250 <id>`, or e.g. `550 5.1.2 ...`, `554 5.6.0 push part 1: ...`.
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ids: Option<Vec<String>>,
}

/// One result per recipient, in order.
#[derive(Debug, Serialize, ToSchema)]
pub struct InjectAnswer {
    pub results: Vec<InjectResult>,
    pub status: &'static str,
}

/// A refused injection: Momentum's document, or the API's error for a request that is not one.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum InjectRefusal {
    Momentum(InjectAnswer),
    Request(ErrorBody),
}
