//! The durable queue (docs/architecture.md: "answer after commit", "fan-out is cheap"; docs/spool.md).
//!
//! # Parts
//!
//! - [`Spool`]: the operations every backend offers — enqueue a batch, claim due scheduled
//!   rows, record attempts and their results, register dead tokens, recover, prune. A PostgreSQL
//!   backend with leases can implement the same trait later.
//! - `sqlite`: the embedded backend. `writer` owns the one write connection on a dedicated OS
//!   thread fed by a bounded channel and commits in groups (one transaction, one fsync, for
//!   whatever arrived while the previous commit ran); callers get their answer only after the
//!   commit. Reads use their own connection (WAL allows it).
//! - `recovery`: at start-up, rows left in flight go back to the queue, and the backlog is paged
//!   in by key, never loaded whole.
//! - `retention`: finished rows older than `retention_s` are deleted in small chunks, each its
//!   own short transaction, so the writer never stalls behind a prune.
//!
//! A request's payload and headers are stored once (`requests`); each of its notifications is
//! a small row (id, token, state, attempts, last answer, due time).

mod recovery;
mod retention;
mod sqlite;
mod writer;

pub use recovery::{PendingRow, RecoveryReport};
pub use retention::spawn_pruner;
pub use sqlite::{
    FeedbackEntry, ReadyCursor, ReadyPage, ReadyRow, Sendable, SpoolOptions, SqliteSpool,
    StoredRequest,
};

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use apns::{ApnsId, CollapseId, DeviceToken, Expiration, Priority, PushType, Reason, Topic};
use bytes::Bytes;

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
        }
    }

    /// Delivered, failed or expired: nothing more will happen.
    pub fn is_final(self) -> bool {
        matches!(self, State::Delivered | State::Failed | State::Expired)
    }

    pub(crate) fn from_i64(n: i64) -> Option<State> {
        Some(match n {
            0 => State::Scheduled,
            1 => State::Queued,
            2 => State::InFlight,
            3 => State::Delivered,
            4 => State::Failed,
            5 => State::Expired,
            _ => return None,
        })
    }
}

/// One accepted request for one app: the payload and headers shared by its tokens.
#[derive(Debug, Clone)]
pub struct NewRequest {
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
    pub reason: Option<Reason>,
    /// For a retry: when it is due.
    pub due_at: Option<SystemTime>,
}

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
    pub app: String,
    pub token: DeviceToken,
    pub state: State,
    pub attempts: u32,
    pub status: Option<u16>,
    pub reason: Option<Reason>,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
    pub send_at: Option<SystemTime>,
    pub expires_at: SystemTime,
}

/// Why a submit was not accepted. Nothing of a refused batch is stored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    #[error("spool is full ({pending} pending, limit {limit})")]
    Full { pending: u64, limit: u64 },
    #[error("spool is unavailable: {0}")]
    Unavailable(#[source] SpoolError),
}

/// A storage failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpoolError {
    #[error("opening the spool at {path}")]
    Open {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{what}")]
    Sql {
        what: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the spool's writer has stopped")]
    WriterGone,
    #[error("the spool at {path} has schema version {found}; this pushgate knows {known}")]
    Schema {
        path: String,
        found: i64,
        known: i64,
    },
    #[error("a stored row is corrupt: {0}")]
    Corrupt(&'static str),
}

/// The operations of a spool backend (docs/architecture.md). The gateway holds one.
pub trait Spool: Send + Sync {
    /// Stores a batch whole, in one transaction, and answers after the commit with the batch,
    /// which goes on to dispatch without being read back.
    fn enqueue(
        &self,
        batch: Vec<NewRequest>,
    ) -> impl Future<Output = Result<Vec<NewRequest>, SubmitError>> + Send;

    /// Moves scheduled notifications whose time has come to queued; returns their ids.
    fn claim_due(
        &self,
        now: SystemTime,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<ApnsId>, SpoolError>> + Send;

    /// Records results and decisions, and registers the dead tokens they found, in one
    /// transaction: all of it or none.
    fn complete(
        &self,
        done: Vec<Completion>,
        dead: Vec<DeadToken>,
    ) -> impl Future<Output = Result<(), SpoolError>> + Send;

    /// Adds (or refreshes) a dead token.
    fn register_dead_token(
        &self,
        dead: DeadToken,
    ) -> impl Future<Output = Result<(), SpoolError>> + Send;

    /// One notification, or `None`.
    fn get(
        &self,
        id: ApnsId,
    ) -> impl Future<Output = Result<Option<NotificationRecord>, SpoolError>> + Send;

    /// Notifications not yet final.
    fn pending(&self) -> u64;
}

/// Milliseconds since the epoch, as stored.
pub(crate) fn to_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

pub(crate) fn from_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}
