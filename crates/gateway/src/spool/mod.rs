//! The durable queue (docs/architecture.md: "answer after commit", "fan-out is cheap"; docs/spool.md).
//!
//! # Parts
//!
//! - `store`: the boundary. [`Spool`] is every operation the service needs from storage —
//!   enqueue a batch, read what is ready, record outcomes and dead tokens, answer status,
//!   recover, prune — and [`Store`] is the backend the gateway opened. Nothing outside this
//!   folder names a backend.
//! - `records`: what is stored and answered, the same for every backend; `error`: how it fails.
//! - `postgres`: the backend on a PostgreSQL database, for teams that run one; any number of
//!   gateways may share it (claims, leases, rescue, wake-ups: `postgres::cluster`).
//! - `sqlite`: the embedded backend. Its writer owns the one write connection on a dedicated
//!   OS thread fed by a bounded channel and commits in groups (one transaction, one fsync, for
//!   whatever arrived while the previous commit ran); callers get their answer only after the
//!   commit. Reads use their own connection (WAL allows it). At start-up, rows left in flight
//!   go back to the queue.
//! - `retention`: finished rows older than `retention_s` are deleted in small chunks, each its
//!   own short transaction, so the writer never stalls behind a prune.
//!
//! A request's payload and headers are stored once (`requests`); each of its notifications is
//! a small row (id, token, state, attempts, last answer and its connection, due time); an
//! attempt followed by another is kept in `attempts`, so a notification's history costs a
//! write only when it is retried.

mod admin;
mod bounces;
mod cancel;
mod error;
mod idempotency;
mod postgres;
mod records;
mod retention;
mod sqlite;
mod store;
mod supersede;

pub use admin::{SpoolStatus, copy_from_sqlite, migrate, status};
pub use bounces::{BOUNCE_LEASE, BounceEntry, BounceOrigin, BounceSettle, DueBounce, MAX_PER_DSN};
pub use cancel::{
    AppPause, CANCEL_PAGE, CancelAnswer, CancelAsk, CancelTarget, RequestSummary, WaitingCursor,
    WaitingPage,
};
pub use error::{SpoolError, SubmitError};
pub use idempotency::{Enqueued, IdempotencyKey};
pub use records::{
    AttemptRecord, ClusterEvent, Completion, CopyReport, DeadToken, Export, ExportedNotification,
    ExportedRequest, FeedbackEntry, GatewayInfo, KEPT_SHOWN, NewRequest, NotificationRecord,
    PendingRow, ReadyCursor, ReadyPage, ReadyRow, RecoveryReport, RequestId, Sendable, State,
    StoredRequest, Submitted, TOKEN_SEARCH_LIMIT, TokenHistory,
};
pub use retention::spawn_pruner;
pub use sqlite::SpoolOptions;
pub use store::{Channel, Spool, Store};
pub use supersede::{Replaced, Supersede, SupersedeKey};

pub(crate) use postgres::postgres_config;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the epoch, as stored.
pub(crate) fn to_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A stored collapse id. One that ingest refuses today (not printable ASCII: an earlier version
/// took it, then could not put it in a header and sent without it) reads as none, so its row
/// is still sent as it always was rather than reading as corrupt.
pub(crate) fn stored_collapse_id(s: Option<&str>) -> Option<apns::CollapseId> {
    s.and_then(|s| apns::CollapseId::parse(s).ok())
}

pub(crate) fn from_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}
