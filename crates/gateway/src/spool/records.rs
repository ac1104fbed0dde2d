//! The records the spool stores and answers with, the same for every backend.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use apns::{ApnsId, CollapseId, DeviceToken, Expiration, Priority, PushType, Reason, Topic};
use bytes::Bytes;

use crate::reason::Cause;

/// Where a notification stands. The numbers are what the spool stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Waiting for its `send_at`.
    Scheduled = 0,
    /// Ready to send (or waiting for a retry's due time).
    Queued = 1,
    /// Handed to APNs; no answer yet.
    InFlight = 2,
    Delivered = 3,
    Failed = 4,
    Expired = 5,
    /// Withdrawn before it was sent (`DELETE /v1/notifications/{id}` and the bulk cancels):
    /// it never reaches Apple, a restart included.
    Cancelled = 6,
    /// Replaced, before it was sent, by a newer notification to the same token with the same
    /// collapse id (or Live Activity update) — `[[apps]] supersede`.
    Superseded = 7,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Scheduled => "scheduled",
            State::Queued => "queued",
            State::InFlight => "in_flight",
            State::Delivered => "delivered",
            State::Failed => "failed",
            State::Expired => "expired",
            State::Cancelled => "cancelled",
            State::Superseded => "superseded",
        }
    }

    /// Delivered, failed, expired, cancelled or superseded: nothing more will happen.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            State::Delivered
                | State::Failed
                | State::Expired
                | State::Cancelled
                | State::Superseded
        )
    }

    /// Scheduled or queued: not sent, not being sent (a cancel may still take it back).
    pub fn is_waiting(self) -> bool {
        matches!(self, State::Scheduled | State::Queued)
    }

    pub(crate) fn from_i64(n: i64) -> Option<State> {
        Some(match n {
            0 => State::Scheduled,
            1 => State::Queued,
            2 => State::InFlight,
            3 => State::Delivered,
            4 => State::Failed,
            5 => State::Expired,
            6 => State::Cancelled,
            7 => State::Superseded,
            _ => return None,
        })
    }
}

/// The id of one submission, `"request_id"` in its `202` answer and in each of its
/// notifications' documents: every request a submission stores carries it, and
/// `POST /v1/requests/{request_id}/cancel` names them all. A UUIDv7 like a notification's id,
/// so never reused (SQLite reuses row numbers once the newest rows are pruned).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestId(uuid::Uuid);

impl RequestId {
    /// A new one, ordered by time.
    #[allow(clippy::new_without_default)]
    pub fn new() -> RequestId {
        RequestId(uuid::Uuid::now_v7())
    }

    /// From its text (any form `uuid` reads; answered lowercase and hyphenated).
    pub fn parse(s: &str) -> Option<RequestId> {
        uuid::Uuid::parse_str(s).ok().map(RequestId)
    }

    pub fn from_uuid(u: uuid::Uuid) -> RequestId {
        RequestId(u)
    }

    pub fn as_uuid(&self) -> &uuid::Uuid {
        &self.0
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// Where a submission comes from as the spool stores it: its id, and when it was accepted
/// (the time a cancel's `created_before` compares, the same in memory and in the spool).
/// Given by [`Intake`](crate::ingest::Intake) to every request of a submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Submitted {
    pub id: RequestId,
    pub at: SystemTime,
}

/// One accepted request for one app: the payload and headers shared by its tokens.
#[derive(Debug, Clone)]
pub struct NewRequest {
    /// Its submission; `None` only for requests stored without one (tools, tests): their
    /// documents have no `request_id` and their `created_at` is the commit's time.
    pub submitted: Option<Submitted>,
    pub app: String,
    pub payload: Bytes,
    pub push_type: PushType,
    pub priority: Option<Priority>,
    pub topic: Option<Topic>,
    pub collapse_id: Option<CollapseId>,
    /// The `apns-expiration` header to send, if the client set one.
    pub apns_expiration: Option<Expiration>,
    /// Not before this time (`None`: now).
    pub send_at: Option<SystemTime>,
    /// The gateway gives up after this time.
    pub expires_at: SystemTime,
    /// One notification per token, with its id (also its `apns-id`).
    pub notifications: Vec<(ApnsId, DeviceToken)>,
    /// Where a permanent failure of one of them is reported as a bounce (a DSN), for a
    /// request injected over SMTP or `/v1.0/inject` with bounces on: requests of one message
    /// to one return path share it (one `Arc`), and their failures share a DSN.
    pub bounce: Option<Arc<super::BounceOrigin>>,
    /// Whether its notifications replace older queued ones to the same tokens
    /// (`spool::supersede`): set by intake from the app's `supersede` setting; after the
    /// commit, what each replaced.
    pub supersede: Option<super::Supersede>,
}

impl NewRequest {
    /// Notifications in this request.
    pub fn len(&self) -> usize {
        self.notifications.len()
    }

    pub fn is_empty(&self) -> bool {
        self.notifications.is_empty()
    }
}

/// The result of one attempt, or a decision about a notification, to record.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub id: ApnsId,
    pub state: State,
    /// Attempts made so far, including this one.
    pub attempts: u32,
    /// Apple's status, if it answered.
    pub status: Option<u16>,
    /// Apple's reason, or the gateway's own (`Unregistered` when suppressed, `Expired`,
    /// `MaxAttempts`).
    pub reason: Option<Cause>,
    /// For a retry: when it is due.
    pub due_at: Option<SystemTime>,
    /// The connection the attempt went out on (`apns::Sent::conn`); `None` for a decision
    /// no attempt led to (expired, suppressed, put back unsent).
    pub conn: Option<u64>,
}

impl Completion {
    /// Whether this records an attempt that will be followed by another: such an attempt is
    /// kept in the notification's history ([`AttemptRecord`]), since its row will show the
    /// next one. An attempt is one that went out (a connection) or was answered.
    pub fn is_retried_attempt(&self) -> bool {
        !self.state.is_final() && (self.conn.is_some() || self.status.is_some())
    }
}

/// One earlier attempt of a notification: what its row showed before the next attempt. The
/// last attempt is the row itself ([`NotificationRecord`]'s status, reason and connection).
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRecord {
    pub at: SystemTime,
    pub status: Option<u16>,
    pub reason: Option<Cause>,
    pub conn: Option<u64>,
}

/// A device token's last notifications for one app, newest first, as the lookup answers.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TokenHistory {
    pub notifications: Vec<NotificationRecord>,
    /// The search stopped at its limit ([`TOKEN_SEARCH_LIMIT`] notifications) before reaching
    /// the oldest stored: older ones to this token may exist.
    pub truncated: bool,
}

/// How many of a notification's earlier attempts its history shows: the last ones. A halted
/// app's probe can be put back many times; its history stays readable.
pub const KEPT_SHOWN: usize = 100;

/// How many of the most recent notifications a token lookup reads at most. Nothing indexes
/// notifications by token (an index would cost every notification a write at ingest for a
/// question operators ask by hand), so the lookup walks the newest first and stops here.
pub const TOKEN_SEARCH_LIMIT: usize = 1_000_000;

/// A token Apple declared dead for an app.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadToken {
    pub app: String,
    pub token: DeviceToken,
    pub reason: Reason,
    pub since: SystemTime,
}

/// What the spool knows about one notification.
#[derive(Debug, Clone, PartialEq)]
pub struct NotificationRecord {
    pub id: ApnsId,
    /// Its submission's id (none for requests stored before request ids were kept).
    pub request_id: Option<RequestId>,
    pub app: String,
    pub token: DeviceToken,
    pub state: State,
    pub attempts: u32,
    pub status: Option<u16>,
    pub reason: Option<Cause>,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
    pub send_at: Option<SystemTime>,
    pub expires_at: SystemTime,
    /// The connection of the last attempt, when one went out.
    pub conn: Option<u64>,
}

/// One dead token, as the feedback endpoint lists them.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedbackEntry {
    pub token: DeviceToken,
    pub reason: Reason,
    pub since: SystemTime,
}

/// A queued notification with what it takes to send it: what the scheduler reads back, what
/// dispatch's queues hold and send, and what an outcome is decided for.
#[derive(Debug, Clone)]
pub struct Sendable {
    pub id: ApnsId,
    pub token: DeviceToken,
    pub attempts: u32,
    pub expires_at: SystemTime,
    /// Shared by every notification of its request that is in memory at once.
    pub request: Arc<StoredRequest>,
}

/// The payload and headers stored once for a request, as dispatch will send them.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRequest {
    /// Its submission's id, when it has one (what a cancel of a request matches in memory).
    pub request_id: Option<RequestId>,
    /// When it was accepted (what a cancel's `created_before` matches in memory).
    pub created_at: SystemTime,
    pub app: String,
    pub payload: bytes::Bytes,
    pub push_type: apns::PushType,
    pub priority: Option<apns::Priority>,
    pub topic: Option<apns::Topic>,
    pub collapse_id: Option<apns::CollapseId>,
    pub apns_expiration: Option<apns::Expiration>,
    /// Its supersede key, when it was stored with one (what a supersede's hold matches in
    /// memory).
    pub supersede: Option<super::SupersedeKey>,
}

/// One page of [`Spool::ready_page`](super::Spool::ready_page).
#[derive(Debug, Clone, Default)]
pub struct ReadyPage {
    pub rows: Vec<ReadyRow>,
    /// Where the next page starts; `None` at the end of the pass.
    pub cursor: Option<ReadyCursor>,
    /// Rows the page read, those it skipped as unsendable included.
    pub scanned: usize,
}

/// A queued notification that is due (its request shared by the rows of one request within a
/// page), and where a pass over the app's ready rows goes on after it.
#[derive(Debug, Clone)]
pub struct ReadyRow {
    pub item: Sendable,
    pub position: ReadyCursor,
}

/// Where a pass over one app's ready notifications goes on: first those waiting for no time
/// (in id order), then the retries that are due (in due-time order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadyCursor {
    /// The beginning of a pass.
    #[default]
    Start,
    /// After this waiting notification.
    Waiting(ApnsId),
    /// After this due retry (due time in ms, id).
    Due(i64, ApnsId),
}

/// What recovery found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// In-flight notifications put back in the queue.
    pub requeued: usize,
    /// Notifications pending after recovery.
    pub pending: u64,
    pub elapsed: Duration,
}

/// One pending notification, as the dispatcher pages them in.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingRow {
    pub id: ApnsId,
    pub request_id: i64,
    pub app: String,
    pub token: DeviceToken,
    pub state: State,
    pub attempts: u32,
    pub due_at: Option<SystemTime>,
}

/// What `pushgate db copy` carries from one spool to another.
#[derive(Debug, Clone, Default)]
pub struct Export {
    pub requests: Vec<ExportedRequest>,
    pub dead: Vec<DeadToken>,
    /// The apps an operator paused: paused on the new spool too.
    pub pauses: Vec<super::AppPause>,
}

/// A request with its notifications not yet final.
#[derive(Debug, Clone)]
pub struct ExportedRequest {
    pub request: StoredRequest,
    pub send_at: Option<SystemTime>,
    pub expires_at: SystemTime,
    pub created_at: SystemTime,
    pub notifications: Vec<ExportedNotification>,
}

/// One notification not yet final, as it stands.
#[derive(Debug, Clone)]
pub struct ExportedNotification {
    pub id: ApnsId,
    pub token: DeviceToken,
    pub state: State,
    pub attempts: u32,
    pub due_at: Option<SystemTime>,
    pub status: Option<u16>,
    pub reason: Option<Cause>,
    /// The last attempt's connection.
    pub conn: Option<u64>,
    /// The attempts a retry followed, oldest first.
    pub history: Vec<AttemptRecord>,
}

/// What a copy did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyReport {
    /// The spool was copied before (where and when): nothing was copied this time.
    pub copied_before: Option<String>,
    pub requests: usize,
    pub notifications: usize,
    /// Requests already in the destination (a copy run before): left as they are.
    pub already_there: usize,
    pub dead_tokens: usize,
}

/// What the other gateways sharing a spool did that this one must know (PostgreSQL only).
#[derive(Debug, Clone, PartialEq)]
pub enum ClusterEvent {
    /// Work no gateway holds appeared (rescued, handed back, scheduled rows come due): rescan.
    Work,
    /// Another gateway registered this token dead.
    DeadToken { app: String, token: DeviceToken },
    /// Another gateway cleared this dead token.
    TokenCleared { app: String, token: DeviceToken },
    /// The others declared this gateway dead and rescued its notifications: what dispatch
    /// holds unsent is theirs now — drop it (what is in flight finishes; its outcome is not
    /// recorded).
    Fenced,
    /// An operator paused or resumed an app on another gateway: read the pauses again.
    Paused,
    /// Another gateway asks this one to cancel what of a cancel it holds (`dispatch::cancel`).
    CancelAsked {
        from: uuid::Uuid,
        ask: super::CancelAsk,
    },
    /// Another gateway's answer to this one's ask.
    CancelAnswered(super::CancelAnswer),
    /// Some news may have been missed (the session was lost, or too much came at once): read
    /// every dead token and pause again and rescan every app.
    Resync,
}

/// One gateway sharing the spool, as the cluster view shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayInfo {
    pub id: String,
    /// Host name and process id.
    pub host: String,
    pub started_at: SystemTime,
    pub heartbeat_at: SystemTime,
    /// The apps it serves.
    pub apps: Vec<String>,
    /// Notifications not yet final that it holds.
    pub holds: u64,
    /// Whether it is the gateway answering.
    pub this: bool,
}
