//! The one write connection, on its own OS thread, fed by a bounded channel.
//!
//! Group commit: the thread takes every command waiting in the channel (up to a cap), applies
//! them in one transaction, commits once (one fsync with `synchronous=FULL`) and only then
//! answers each caller. If one command fails, the group is applied again one command per
//! transaction, so a failing command never takes part of another with it and a request is
//! stored whole or not at all. While a commit runs, new
//! commands queue up and form the next group, so the fsync cost is shared under load without
//! any timer.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::SystemTime;

use apns::ApnsId;
use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};
use tracing::{error, warn};

use super::writes;
use crate::spool::idempotency::{Enqueued, IdempotencyKey};
use crate::spool::{Completion, DeadToken, NewRequest, SpoolError, SubmitError, to_ms};

/// The most commands in one transaction.
const MAX_GROUP: usize = 1024;

pub(super) type Reply<T> = oneshot::Sender<Result<T, SpoolError>>;

/// Work for the writer.
#[derive(Debug)]
pub(super) enum Command {
    Enqueue {
        batch: Vec<NewRequest>,
        /// Stored once per key: looked up and recorded in the same transaction.
        key: Option<IdempotencyKey>,
        /// Answers with the batch itself once committed, so it goes on to dispatch unread.
        reply: oneshot::Sender<Result<Enqueued, SubmitError>>,
    },
    ClaimDue {
        now: SystemTime,
        limit: usize,
        reply: Reply<Vec<ApnsId>>,
    },
    /// Answers once everything sent before it is applied.
    Flush {
        reply: Reply<()>,
    },
    /// Rewrites the health row: a flush that must reach the disk.
    Probe {
        reply: Reply<()>,
    },
    /// Outcomes, and the dead tokens they found, in one transaction: a failed notification is
    /// never committed without its token in the registry.
    Complete {
        done: Vec<Completion>,
        dead: Vec<DeadToken>,
        reply: Reply<()>,
    },
    DeadToken {
        dead: DeadToken,
        reply: Reply<()>,
    },
    /// Deletes up to `limit` finished notifications last updated before `before`, and requests
    /// left without notifications; answers how many notifications went.
    Prune {
        before: SystemTime,
        limit: usize,
        reply: Reply<usize>,
    },
    /// Puts every in-flight notification back in the queue (start-up recovery).
    RequeueInFlight {
        reply: Reply<usize>,
    },
    /// Settles a DSN of a bounce origin: its failures leave the outbox, or it is tried again
    /// later.
    SettleBounce {
        origin: i64,
        ids: Vec<ApnsId>,
        how: crate::spool::BounceSettle,
        reply: Reply<()>,
    },
    /// Removes a dead token; answers whether it was there.
    ClearDeadToken {
        app: String,
        token: apns::DeviceToken,
        reply: Reply<bool>,
    },
    /// Cancels those of `ids` that are `app`'s and still wait; answers them.
    CancelWaiting {
        app: String,
        ids: Vec<ApnsId>,
        reply: Reply<Vec<ApnsId>>,
    },
    /// Pauses `app` (or, with `None`, resumes it); answers whether that changed anything.
    SetPause {
        app: String,
        pause: Option<crate::spool::AppPause>,
        reply: Reply<bool>,
    },
    /// Commits what came before, closes the connection and ends the thread.
    Stop {
        reply: Reply<()>,
    },
}

/// An answer computed inside the transaction, sent after the commit.
enum Answer {
    Enqueue(
        oneshot::Sender<Result<Enqueued, SubmitError>>,
        Result<(u64, Enqueued), SubmitError>,
    ),
    Ids(Reply<Vec<ApnsId>>, Result<Vec<ApnsId>, SpoolError>),
    Unit(Reply<()>, Result<(), SpoolError>, u64),
    Count(Reply<usize>, Result<usize, SpoolError>),
    Flag(Reply<bool>, Result<bool, SpoolError>),
    /// Pending notifications that became final, answered by id.
    Cancelled(Reply<Vec<ApnsId>>, Result<Vec<ApnsId>, SpoolError>),
}

/// What the writer shares with the spool's handles besides its channel.
#[derive(Debug, Default)]
pub(super) struct WriterState {
    /// Transactions committed.
    pub commits: AtomicU64,
    /// Fault injection for tests: while set, every transaction that writes fails at its
    /// commit as a full disk would (`SQLITE_FULL`) and is rolled back. An empty one (a flush)
    /// still succeeds, as it does on a real full disk.
    pub fail_writes: AtomicBool,
    /// How long an idempotency key is remembered.
    pub idempotency_window: std::time::Duration,
}

/// Runs the writer until every sender is gone.
pub(super) fn run(
    mut conn: Connection,
    mut rx: mpsc::Receiver<Command>,
    pending: Arc<AtomicU64>,
    max_pending: u64,
    state: Arc<WriterState>,
) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    let mut stop = None;
    while let Some(first) = rx.blocking_recv() {
        group.push(first);
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(c) => group.push(c),
                Err(_) => break,
            }
        }
        // A stop ends the group: what came before it is committed, what came after is refused.
        if let Some(i) = group.iter().position(|c| matches!(c, Command::Stop { .. })) {
            let rest: Vec<Command> = group.drain(i..).collect();
            let mut rest = rest.into_iter();
            if let Some(Command::Stop { reply }) = rest.next() {
                stop = Some(reply);
            }
            let refused: Vec<Answer> = rest.map(|c| refuse(c, || SpoolError::WriterGone)).collect();
            deliver(refused, &pending);
        }
        let answers = apply_group(&mut conn, &mut group, &pending, max_pending, &state);
        deliver(answers, &pending);
        if stop.is_some() {
            break;
        }
    }
    rx.close();
    while let Ok(c) = rx.try_recv() {
        deliver(vec![refuse(c, || SpoolError::WriterGone)], &pending);
    }
    // Everything in the WAL goes into the file, and the WAL is emptied: what a stop leaves
    // is `spool.db` (the files go with the last connection).
    if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)") {
        warn!(error = %e, "checkpointing the spool at close failed; the WAL stays beside it");
    }
    let closed = conn.close().map_err(|(_, source)| SpoolError::Sql {
        what: "closing the spool",
        source,
    });
    if let Some(reply) = stop {
        let _ = reply.send(closed);
    }
}

/// Applies a group in one transaction. If a command fails, the transaction is rolled back and
/// the group is applied again one command per transaction, so the failing command is refused
/// alone. Savepoints per command would give the same isolation on the first try, but copy every
/// page a command touches into the statement journal: a cost paid by every group for a failure
/// that almost never happens.
fn apply_group(
    conn: &mut Connection,
    group: &mut Vec<Command>,
    pending: &AtomicU64,
    max_pending: u64,
    state: &WriterState,
) -> Vec<Answer> {
    let now = to_ms(SystemTime::now());
    match transact(conn, group, now, pending, max_pending, state) {
        Ok(done) => group
            .drain(..)
            .zip(done)
            .map(|(c, d)| answer(c, Ok(d), max_pending))
            .collect(),
        Err(Failure::Command(e)) if group.len() > 1 => {
            warn!(error = %e, "a spool command failed; its group is applied again one at a time");
            for c in group.drain(..) {
                let one = std::slice::from_ref(&c);
                let r = match transact(conn, one, now, pending, max_pending, state) {
                    Ok(mut done) => Ok(done.remove(0)),
                    Err(f) => Err(f.into_error()),
                };
                // Answered (and counted in `pending`) before the next one is admitted.
                deliver(vec![answer(c, r, max_pending)], pending);
            }
            Vec::new()
        }
        Err(f) => {
            let e = f.into_error();
            error!(error = %e, "a spool transaction failed; its commands are refused");
            group
                .drain(..)
                .map(|c| answer(c, Err(duplicate(&e)), max_pending))
                .collect()
        }
    }
}

/// What one command did inside a transaction; its caller hears of it after the commit.
pub(super) enum Done {
    /// Stored this many, and superseded these (by request index): no longer pending.
    Enqueued(u64, Vec<(usize, crate::spool::Replaced)>),
    /// Refused by `max_pending` (nothing written), with the count it was refused at.
    Full(u64),
    /// The idempotency key was seen with the same fingerprint: these are its ids.
    Replayed(Vec<ApnsId>),
    /// The idempotency key was seen with another fingerprint (nothing written).
    KeyReused,
    Ids(Vec<ApnsId>),
    /// How many pending notifications became final.
    Unit(u64),
    Count(usize),
    Flag(bool),
    /// Cancelled: no longer pending.
    Cancelled(Vec<ApnsId>),
}

/// Why [`transact`] rolled back.
enum Failure {
    Command(SpoolError),
    Transaction(SpoolError),
}

impl Failure {
    fn into_error(self) -> SpoolError {
        match self {
            Failure::Command(e) | Failure::Transaction(e) => e,
        }
    }
}

/// One transaction over `commands`: everything or nothing.
fn transact(
    conn: &mut Connection,
    commands: &[Command],
    now: i64,
    pending: &AtomicU64,
    max_pending: u64,
    state: &WriterState,
) -> Result<Vec<Done>, Failure> {
    let sql = |what, source| SpoolError::Sql { what, source };
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(|e| Failure::Transaction(sql("beginning a transaction", e)))?;
    let mut done = Vec::with_capacity(commands.len());
    // Admission against max_pending counts what this transaction already admitted.
    let mut admitted = 0u64;
    for c in commands {
        let d = writes::apply(
            &tx,
            c,
            now,
            pending.load(Ordering::Acquire) + admitted,
            max_pending,
            state.idempotency_window,
        )
        .map_err(|e| Failure::Command(sql("applying a spool command", e)))?;
        if let Done::Enqueued(rows, replaced) = &d {
            admitted += rows - replaced.len() as u64;
        }
        done.push(d);
    }
    let writes = commands.iter().any(|c| !matches!(c, Command::Flush { .. }));
    if writes && state.fail_writes.load(Ordering::Relaxed) {
        // Dropping `tx` rolls it back.
        return Err(Failure::Transaction(sql(
            "committing",
            rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
                Some("database or disk is full (injected fault)".to_owned()),
            ),
        )));
    }
    tx.commit()
        .map_err(|e| Failure::Transaction(sql("committing", e)))?;
    state.commits.fetch_add(1, Ordering::Relaxed);
    Ok(done)
}

/// The answer to `c`, from what it did (or why it failed).
fn answer(c: Command, r: Result<Done, SpoolError>, max_pending: u64) -> Answer {
    let done = match r {
        Ok(done) => done,
        Err(e) => return refuse(c, move || duplicate(&e)),
    };
    match (c, done) {
        (
            Command::Enqueue {
                mut batch, reply, ..
            },
            Done::Enqueued(rows, replaced),
        ) => {
            let pending = rows - replaced.len() as u64;
            for (i, r) in replaced {
                if let Some(s) = batch.get_mut(i).and_then(|r| r.supersede.as_mut()) {
                    s.replaced.push(r);
                }
            }
            Answer::Enqueue(reply, Ok((pending, Enqueued::Stored(batch))))
        }
        (Command::Enqueue { reply, .. }, Done::Replayed(ids)) => {
            Answer::Enqueue(reply, Ok((0, Enqueued::Replayed(ids))))
        }
        (Command::Enqueue { reply, .. }, Done::KeyReused) => {
            Answer::Enqueue(reply, Err(SubmitError::KeyReused))
        }
        (Command::Enqueue { reply, .. }, Done::Full(pending)) => Answer::Enqueue(
            reply,
            Err(SubmitError::Full {
                pending,
                limit: max_pending,
            }),
        ),
        (Command::ClaimDue { reply, .. }, Done::Ids(ids)) => Answer::Ids(reply, Ok(ids)),
        (
            Command::Flush { reply }
            | Command::Probe { reply }
            | Command::Stop { reply }
            | Command::Complete { reply, .. }
            | Command::DeadToken { reply, .. }
            | Command::SettleBounce { reply, .. },
            Done::Unit(finished),
        ) => Answer::Unit(reply, Ok(()), finished),
        (Command::Prune { reply, .. } | Command::RequeueInFlight { reply }, Done::Count(n)) => {
            Answer::Count(reply, Ok(n))
        }
        (
            Command::ClearDeadToken { reply, .. } | Command::SetPause { reply, .. },
            Done::Flag(f),
        ) => Answer::Flag(reply, Ok(f)),
        (Command::CancelWaiting { reply, .. }, Done::Cancelled(ids)) => {
            Answer::Cancelled(reply, Ok(ids))
        }
        (c, _) => refuse(c, || {
            SpoolError::Corrupt("a spool command answered out of kind")
        }),
    }
}

/// Sends answers (after the commit) and keeps the pending count.
fn deliver(answers: Vec<Answer>, pending: &AtomicU64) {
    for a in answers {
        match a {
            Answer::Enqueue(reply, r) => {
                if let Ok((rows, _)) = &r {
                    pending.fetch_add(*rows, Ordering::AcqRel);
                }
                let _ = reply.send(r.map(|(_, enqueued)| enqueued));
            }
            Answer::Ids(reply, r) => {
                let _ = reply.send(r);
            }
            Answer::Unit(reply, r, finished) => {
                if finished > 0 {
                    pending.fetch_sub(finished, Ordering::AcqRel);
                }
                let _ = reply.send(r);
            }
            Answer::Count(reply, r) => {
                let _ = reply.send(r);
            }
            Answer::Flag(reply, r) => {
                let _ = reply.send(r);
            }
            Answer::Cancelled(reply, r) => {
                if let Ok(ids) = &r {
                    pending.fetch_sub(ids.len() as u64, Ordering::AcqRel);
                }
                let _ = reply.send(r);
            }
        }
    }
}

fn refuse(c: Command, err: impl Fn() -> SpoolError) -> Answer {
    match c {
        Command::Enqueue { reply, .. } => {
            Answer::Enqueue(reply, Err(SubmitError::Unavailable(err())))
        }
        Command::ClaimDue { reply, .. } => Answer::Ids(reply, Err(err())),
        Command::Flush { reply }
        | Command::Probe { reply }
        | Command::Complete { reply, .. }
        | Command::DeadToken { reply, .. }
        | Command::SettleBounce { reply, .. }
        | Command::Stop { reply } => Answer::Unit(reply, Err(err()), 0),
        Command::Prune { reply, .. } | Command::RequeueInFlight { reply } => {
            Answer::Count(reply, Err(err()))
        }
        Command::ClearDeadToken { reply, .. } | Command::SetPause { reply, .. } => {
            Answer::Flag(reply, Err(err()))
        }
        Command::CancelWaiting { reply, .. } => Answer::Cancelled(reply, Err(err())),
    }
}

/// The same error again, for every caller of a failed group (errors are not `Clone`).
fn duplicate(e: &SpoolError) -> SpoolError {
    match e {
        SpoolError::Sql { what, source } => SpoolError::Sql {
            what,
            source: clone_err(source),
        },
        SpoolError::Corrupt(what) => SpoolError::Corrupt(what),
        other => SpoolError::Io {
            what: other.to_string(),
            source: std::io::Error::other(other.to_string()),
        },
    }
}

/// rusqlite errors are not `Clone`; keep the message for every caller of a failed group.
fn clone_err(e: &rusqlite::Error) -> rusqlite::Error {
    match e {
        rusqlite::Error::SqliteFailure(code, msg) => {
            rusqlite::Error::SqliteFailure(*code, msg.clone())
        }
        other => rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
            Some(other.to_string()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::IdempotencyKey;

    fn request(token: &str) -> NewRequest {
        NewRequest {
            app: "shop".into(),
            payload: bytes::Bytes::from_static(br#"{"aps":{"badge":1}}"#),
            push_type: apns::PushType::Alert,
            priority: None,
            topic: None,
            collapse_id: None,
            apns_expiration: None,
            send_at: None,
            expires_at: SystemTime::now() + std::time::Duration::from_secs(3_600),
            notifications: vec![(ApnsId::new(), apns::DeviceToken::parse(token).expect("hex"))],
            bounce: None,
            supersede: None,
            submitted: None,
        }
    }

    /// Two submissions of one key in the same group (one transaction): the first is stored,
    /// the second replays its ids, and only one request is in the file.
    #[test]
    fn a_duplicate_key_in_one_group_replays_the_first() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("spool.db");
        let mut conn = Connection::open(&path).expect("open");
        super::super::schema::migrate(&conn, &path).expect("schema");
        let key = IdempotencyKey::new("key:shop", "k", b"body");
        let (first, second) = (request("aa"), request("bb"));
        let first_ids: Vec<ApnsId> = first.notifications.iter().map(|(id, _)| *id).collect();
        let (tx1, mut rx1) = oneshot::channel();
        let (tx2, mut rx2) = oneshot::channel();
        let mut group = vec![
            Command::Enqueue {
                batch: vec![first],
                key: Some(key.clone()),
                reply: tx1,
            },
            Command::Enqueue {
                batch: vec![second],
                key: Some(key),
                reply: tx2,
            },
        ];
        let pending = AtomicU64::new(0);
        let state = WriterState {
            idempotency_window: std::time::Duration::from_secs(60),
            ..WriterState::default()
        };
        let answers = apply_group(&mut conn, &mut group, &pending, 100, &state);
        deliver(answers, &pending);
        assert_eq!(state.commits.load(Ordering::Relaxed), 1, "one transaction");
        assert!(matches!(rx1.try_recv(), Ok(Ok(Enqueued::Stored(_)))));
        match rx2.try_recv() {
            Ok(Ok(Enqueued::Replayed(ids))) => assert_eq!(ids, first_ids),
            other => panic!("expected a replay, got {other:?}"),
        }
        assert_eq!(pending.load(Ordering::Relaxed), 1);
        let requests: i64 = conn
            .query_row("SELECT count(*) FROM requests", [], |r| r.get(0))
            .expect("count");
        assert_eq!(requests, 1);
    }
}
