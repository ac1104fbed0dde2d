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
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use tokio::sync::{mpsc, oneshot};
use tracing::{error, warn};

use super::{Completion, DeadToken, NewRequest, SpoolError, State, SubmitError, to_ms};

// The statements that run on every scan or outcome. Each test of `plans` (below) checks that
// SQLite answers them through an index: a statement that scans the whole notifications table
// costs nothing at 10,000 rows and a second of CPU at 1,000,000. `state < 3` is spelled out
// wherever a narrower state is asked for, because SQLite uses the partial index of pending
// rows only for a WHERE clause that repeats its condition.

/// One app's (?3) scheduled notifications whose time has come become queued.
pub(crate) const CLAIM_DUE: &str = "UPDATE notifications SET state = 1, due_at = NULL, \
     updated_at = ?1 WHERE id IN (SELECT id FROM notifications WHERE state < 3 AND state = 0 \
     AND app = ?3 AND due_at <= ?1 ORDER BY due_at LIMIT ?2) RETURNING id";
/// Every app's number, for the statements that go through the pending index app by app.
pub(crate) const APP_IDS: &str = "SELECT id FROM apps";
/// An app's number, if it has one.
const APP_ID: &str = "SELECT id FROM apps WHERE name = ?1";
/// Start-up recovery: what was in flight goes back to the queue.
pub(crate) const REQUEUE_IN_FLIGHT: &str =
    "UPDATE notifications SET state = 1, updated_at = ?1 WHERE state < 3 AND state = 2";
/// One outcome.
pub(crate) const COMPLETE: &str = "UPDATE notifications SET state = ?2, attempts = ?3, \
     status = ?4, reason = ?5, due_at = ?6, updated_at = ?7 WHERE id = ?1 AND state < 3";
/// Retention: finished notifications last updated before ?1, walking the primary key up to
/// ?3, the first id of that time (a notification created later cannot have finished earlier);
/// answers each one's request.
pub(crate) const PRUNE_FINISHED: &str = "DELETE FROM notifications WHERE id IN (SELECT id FROM \
     notifications WHERE id < ?3 AND state >= 3 AND updated_at < ?1 LIMIT ?2) RETURNING request_id";
/// Retention: a request loses `?2` notifications, and goes with the last.
pub(crate) const REQUEST_LOSES: &str =
    "UPDATE requests SET remaining = remaining - ?2 WHERE id = ?1 RETURNING remaining";
pub(crate) const REQUEST_GONE: &str = "DELETE FROM requests WHERE id = ?1";

/// The most commands in one transaction.
const MAX_GROUP: usize = 1024;

pub(crate) type Reply<T> = oneshot::Sender<Result<T, SpoolError>>;

/// Work for the writer.
#[derive(Debug)]
pub(crate) enum Command {
    Enqueue {
        batch: Vec<NewRequest>,
        /// Answers with the batch itself once committed, so it goes on to dispatch unread.
        reply: oneshot::Sender<Result<Vec<NewRequest>, SubmitError>>,
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
    /// Removes a dead token; answers whether it was there.
    ClearDeadToken {
        app: String,
        token: apns::DeviceToken,
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
        oneshot::Sender<Result<Vec<NewRequest>, SubmitError>>,
        Result<(u64, Vec<NewRequest>), SubmitError>,
    ),
    Ids(Reply<Vec<ApnsId>>, Result<Vec<ApnsId>, SpoolError>),
    Unit(Reply<()>, Result<(), SpoolError>, u64),
    Count(Reply<usize>, Result<usize, SpoolError>),
    Flag(Reply<bool>, Result<bool, SpoolError>),
}

/// What the writer shares with the spool's handles besides its channel.
#[derive(Debug, Default)]
pub(crate) struct WriterState {
    /// Transactions committed.
    pub commits: AtomicU64,
    /// Fault injection for tests: while set, every transaction that writes fails at its
    /// commit as a full disk would (`SQLITE_FULL`) and is rolled back. An empty one (a flush)
    /// still succeeds, as it does on a real full disk.
    pub fail_writes: AtomicBool,
}

/// Runs the writer until every sender is gone.
pub(crate) fn run(
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
enum Done {
    Enqueued(u64),
    /// Refused by `max_pending` (nothing written), with the count it was refused at.
    Full(u64),
    Ids(Vec<ApnsId>),
    /// How many pending notifications became final.
    Unit(u64),
    Count(usize),
    Flag(bool),
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
        let d = apply(
            &tx,
            c,
            now,
            pending.load(Ordering::Acquire) + admitted,
            max_pending,
        )
        .map_err(|e| Failure::Command(sql("applying a spool command", e)))?;
        if let Done::Enqueued(rows) = d {
            admitted += rows;
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

/// One command's writes.
fn apply(
    tx: &Transaction<'_>,
    c: &Command,
    now: i64,
    current: u64,
    max_pending: u64,
) -> Result<Done, rusqlite::Error> {
    Ok(match c {
        Command::Enqueue { batch, .. } => {
            let rows: u64 = batch.iter().map(|r| r.len() as u64).sum();
            if current + rows > max_pending {
                return Ok(Done::Full(current));
            }
            insert_batch(tx, batch, now)?;
            Done::Enqueued(rows)
        }
        Command::ClaimDue { now, limit, .. } => Done::Ids(claim_due(tx, to_ms(*now), *limit)?),
        Command::Flush { .. } | Command::Stop { .. } => Done::Unit(0),
        Command::Probe { .. } => {
            tx.prepare_cached(
                "INSERT INTO health (id, checked_at) VALUES (1, ?1) \
                 ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at",
            )?
            .execute(params![now])?;
            Done::Unit(0)
        }
        Command::Complete { done, dead, .. } => {
            for d in dead {
                register_dead(tx, d)?;
            }
            Done::Unit(complete(tx, done, now)?)
        }
        Command::DeadToken { dead, .. } => {
            register_dead(tx, dead)?;
            Done::Unit(0)
        }
        Command::Prune { before, limit, .. } => Done::Count(prune(tx, to_ms(*before), *limit)?),
        Command::RequeueInFlight { .. } => Done::Count(requeue_in_flight(tx, now)?),
        Command::ClearDeadToken { app, token, .. } => Done::Flag(
            tx.prepare_cached("DELETE FROM dead_tokens WHERE app = ?1 AND token = ?2")?
                .execute(params![app, token.to_bytes(&mut [0; TOKEN_BYTES])])?
                > 0,
        ),
    })
}

/// The answer to `c`, from what it did (or why it failed).
fn answer(c: Command, r: Result<Done, SpoolError>, max_pending: u64) -> Answer {
    let done = match r {
        Ok(done) => done,
        Err(e) => return refuse(c, move || duplicate(&e)),
    };
    match (c, done) {
        (Command::Enqueue { batch, reply }, Done::Enqueued(rows)) => {
            Answer::Enqueue(reply, Ok((rows, batch)))
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
            | Command::DeadToken { reply, .. },
            Done::Unit(finished),
        ) => Answer::Unit(reply, Ok(()), finished),
        (Command::Prune { reply, .. } | Command::RequeueInFlight { reply }, Done::Count(n)) => {
            Answer::Count(reply, Ok(n))
        }
        (Command::ClearDeadToken { reply, .. }, Done::Flag(f)) => Answer::Flag(reply, Ok(f)),
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
                let _ = reply.send(r.map(|(_, batch)| batch));
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
        | Command::Stop { reply } => Answer::Unit(reply, Err(err()), 0),
        Command::Prune { reply, .. } | Command::RequeueInFlight { reply } => {
            Answer::Count(reply, Err(err()))
        }
        Command::ClearDeadToken { reply, .. } => Answer::Flag(reply, Err(err())),
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

/// Room for the bytes of any token (`DeviceToken::to_bytes` writes into `[0; TOKEN_BYTES]`).
pub(crate) const TOKEN_BYTES: usize = apns::notification::MAX_TOKEN_HEX / 2;

fn insert_batch(
    tx: &Transaction<'_>,
    batch: &[NewRequest],
    now: i64,
) -> Result<(), rusqlite::Error> {
    let mut req = tx.prepare_cached(
        "INSERT INTO requests (app, payload, push_type, priority, topic, collapse_id, \
         apns_expiration, send_at, expires_at, created_at, remaining) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?;
    let mut note = tx.prepare_cached(
        "INSERT INTO notifications (id, request_id, app, token, state, attempts, due_at, \
         updated_at) VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6, ?7)",
    )?;
    let mut app_id = tx.prepare_cached(APP_ID)?;
    let mut new_app = tx.prepare_cached("INSERT INTO apps (name) VALUES (?1)")?;
    for r in batch {
        // Numbered in the same transaction: a rollback takes a new app's number with it.
        let app = match app_id
            .query_row(params![r.app], |row| row.get::<_, i64>(0))
            .optional()?
        {
            Some(id) => id,
            None => {
                new_app.execute(params![r.app])?;
                tx.last_insert_rowid()
            }
        };
        let send_at = r.send_at.map(to_ms).filter(|&t| t > now);
        req.execute(params![
            r.app,
            &r.payload[..],
            r.push_type.as_str(),
            r.priority.map(|p| p.as_u8()),
            r.topic.as_ref().map(|t| t.as_str()),
            r.collapse_id.as_ref().map(|c| c.as_str()),
            r.apns_expiration.map(|e| e.as_unix() as i64),
            send_at,
            to_ms(r.expires_at),
            now,
            r.len() as i64,
        ])?;
        let request_id = tx.last_insert_rowid();
        let state = if send_at.is_some() {
            State::Scheduled
        } else {
            State::Queued
        };
        let mut buf = [0; TOKEN_BYTES];
        for (id, token) in &r.notifications {
            note.execute(params![
                &id.as_uuid().as_bytes()[..],
                request_id,
                app,
                token.to_bytes(&mut buf),
                state as i64,
                send_at,
                now,
            ])?;
        }
    }
    Ok(())
}

/// Up to `limit` scheduled notifications whose time has come, app by app (every app, the
/// removed ones too: their notifications become queued on time and wait for them).
fn claim_due(tx: &Transaction<'_>, now: i64, limit: usize) -> Result<Vec<ApnsId>, rusqlite::Error> {
    let apps: Vec<i64> = tx
        .prepare_cached(APP_IDS)?
        .query_map([], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    let mut st = tx.prepare_cached(CLAIM_DUE)?;
    let mut ids = Vec::new();
    for app in apps {
        let left = limit - ids.len();
        if left == 0 {
            break;
        }
        let rows = st.query_map(params![now, left as i64, app], |row| {
            row.get::<_, Vec<u8>>(0)
        })?;
        for r in rows {
            ids.push(id_from_bytes(&r?)?);
        }
    }
    Ok(ids)
}

pub(crate) fn id_from_bytes(b: &[u8]) -> Result<ApnsId, rusqlite::Error> {
    uuid::Uuid::from_slice(b)
        .map(ApnsId::from_uuid)
        .map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Blob, Box::new(e))
        })
}

/// Applies results; returns how many pending notifications became final.
fn complete(tx: &Transaction<'_>, done: &[Completion], now: i64) -> Result<u64, rusqlite::Error> {
    let mut st = tx.prepare_cached(COMPLETE)?;
    let mut finished = 0;
    for c in done {
        let changed = st.execute(params![
            &c.id.as_uuid().as_bytes()[..],
            c.state as i64,
            c.attempts,
            c.status,
            c.reason.as_ref().map(|r| r.as_str()),
            c.due_at.map(to_ms),
            now,
        ])?;
        if changed > 0 && c.state.is_final() {
            finished += 1;
        }
    }
    Ok(finished)
}

fn register_dead(tx: &Transaction<'_>, d: &DeadToken) -> Result<(), rusqlite::Error> {
    tx.prepare_cached(
        "INSERT INTO dead_tokens (app, token, reason, since) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (app, token) DO UPDATE SET reason = excluded.reason, since = excluded.since",
    )?
    .execute(params![
        d.app,
        d.token.to_bytes(&mut [0; TOKEN_BYTES]),
        d.reason.as_str(),
        to_ms(d.since)
    ])?;
    Ok(())
}

fn prune(tx: &Transaction<'_>, before: i64, limit: usize) -> Result<usize, rusqlite::Error> {
    let mut by_request: std::collections::HashMap<i64, i64> = std::collections::HashMap::new();
    let mut gone = 0;
    {
        let mut st = tx.prepare_cached(PRUNE_FINISHED)?;
        let mut rows = st.query(params![before, limit as i64, &first_id_at(before)[..]])?;
        while let Some(r) = rows.next()? {
            *by_request.entry(r.get(0)?).or_default() += 1;
            gone += 1;
        }
    }
    let mut loses = tx.prepare_cached(REQUEST_LOSES)?;
    let mut remove = tx.prepare_cached(REQUEST_GONE)?;
    for (request, n) in by_request {
        let left: Option<i64> = loses
            .query_row(params![request, n], |r| r.get(0))
            .optional()?;
        if left.is_some_and(|l| l <= 0) {
            remove.execute(params![request])?;
        }
    }
    Ok(gone)
}

/// The smallest UUIDv7 of millisecond `ms`, as stored: ids below it were created before `ms`.
fn first_id_at(ms: i64) -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..6].copy_from_slice(&ms.max(0).to_be_bytes()[2..]);
    id
}

fn requeue_in_flight(tx: &Transaction<'_>, now: i64) -> Result<usize, rusqlite::Error> {
    tx.prepare_cached(REQUEUE_IN_FLIGHT)?.execute(params![now])
}
