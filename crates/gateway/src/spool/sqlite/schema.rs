//! The SQLite file's shape: its schema, the migrations between versions, and the statements
//! that run on every scheduler pass, outcome or prune — kept together so that `plans` (below)
//! checks each of them against the schema it runs on.

use rusqlite::Connection;

use crate::spool::SpoolError;

/// The schema this version writes (`PRAGMA user_version`).
pub(super) const SCHEMA_VERSION: i64 = 6;

/// Each notification costs one write into `notifications` and its pending index at ingest, and
/// one update that takes it out of that index at its outcome: no other index is kept up to date
/// per notification. Retention walks the primary key instead (ids are UUIDv7, so their order is
/// their creation time), and a request counts its notifications left (`remaining`) instead of
/// being found through an index on `request_id`.
///
/// A pending notification carries its app's number (`apps`), first in its pending index after
/// the state, so that the scheduler reads one app's work without reading another's: a halted
/// app's backlog costs the others nothing.
///
/// A notification that may supersede or be superseded (`spool::supersede`) carries its key
/// (`skey`, also on its request, for dispatch's memory), and is indexed by (app, token, key)
/// while it waits; the others are not in that index at all.
///
/// A notification's last attempt is its row (status, reason, and `conn`, the connection it
/// went out on); an attempt followed by another is kept in `attempts`, so only a retry costs
/// a second write.
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS apps (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY,
    app TEXT NOT NULL,
    payload BLOB NOT NULL,
    push_type TEXT NOT NULL,
    priority INTEGER,
    topic TEXT,
    collapse_id TEXT,
    apns_expiration INTEGER,
    send_at INTEGER,
    expires_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    remaining INTEGER NOT NULL DEFAULT 0,
    rid BLOB,
    skey INTEGER
);
CREATE TABLE IF NOT EXISTS notifications (
    id BLOB PRIMARY KEY,
    request_id INTEGER NOT NULL,
    app INTEGER NOT NULL DEFAULT 0,
    token BLOB NOT NULL,
    state INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    due_at INTEGER,
    status INTEGER,
    reason TEXT,
    updated_at INTEGER NOT NULL,
    conn INTEGER,
    skey INTEGER
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS attempts (
    id BLOB NOT NULL,
    at INTEGER NOT NULL,
    status INTEGER,
    reason TEXT,
    conn INTEGER
);
CREATE INDEX IF NOT EXISTS attempts_by_id ON attempts (id);
CREATE INDEX IF NOT EXISTS notifications_pending ON notifications (state, app, due_at) WHERE state < 3;
CREATE INDEX IF NOT EXISTS notifications_superseding ON notifications (app, token, skey)
    WHERE skey IS NOT NULL AND state < 3;
CREATE TABLE IF NOT EXISTS dead_tokens (
    app TEXT NOT NULL,
    token BLOB NOT NULL,
    reason TEXT NOT NULL,
    since INTEGER NOT NULL,
    PRIMARY KEY (app, token)
) WITHOUT ROWID;
";

/// One row the readiness probe rewrites: an empty transaction commits even on a full disk, a
/// write does not.
const HEALTH_TABLE: &str = "CREATE TABLE IF NOT EXISTS health (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    checked_at INTEGER NOT NULL
);";

/// The index of submission ids (`spool::RequestId`, version 5's `requests.rid`), and the apps
/// an operator paused (`spool::cancel`). Only requests are indexed by submission, not
/// notifications: one write per request.
const SUBMISSION_INDEX: &str =
    "CREATE INDEX IF NOT EXISTS requests_rid ON requests (rid) WHERE rid IS NOT NULL;";
const PAUSES_TABLE: &str = "CREATE TABLE IF NOT EXISTS app_pauses (
    app TEXT PRIMARY KEY,
    since INTEGER NOT NULL,
    reject INTEGER NOT NULL
);";

/// Idempotency keys (`spool::idempotency`): each with the fingerprint of what was sent under it
/// and the ids it was answered with. Additive, like `health`: an older pushgate ignores it.
/// Only keyed submissions write here, so the index by age costs the others nothing.
const IDEMPOTENCY_TABLE: &str = "CREATE TABLE IF NOT EXISTS idempotency_keys (
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    fingerprint BLOB NOT NULL,
    ids BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX IF NOT EXISTS idempotency_keys_created ON idempotency_keys (created_at);";

/// A key as stored, if it is.
pub(super) const KEY_SEEN: &str =
    "SELECT fingerprint, ids, created_at FROM idempotency_keys WHERE scope = ?1 AND key = ?2";
/// A key taken (or taken again, once forgotten).
pub(super) const KEY_REMEMBER: &str = "INSERT INTO idempotency_keys \
     (scope, key, fingerprint, ids, created_at) VALUES (?1, ?2, ?3, ?4, ?5) \
     ON CONFLICT (scope, key) DO UPDATE SET fingerprint = excluded.fingerprint, \
     ids = excluded.ids, created_at = excluded.created_at";
/// Retention: up to ?2 keys older than the window (created before ?1).
pub(super) const KEYS_FORGET: &str = "DELETE FROM idempotency_keys WHERE rowid IN \
     (SELECT rowid FROM idempotency_keys WHERE created_at < ?1 LIMIT ?2)";

// Read-side statements of every scheduler pass; like the writer's below, checked by `plans`
// to go through the partial index of pending rows (`state < 3` repeated for that).

/// One app's queued notifications waiting for no time, in id order after a cursor. Their
/// requests are read once each (`REQUEST_BY_ID`), not once per row.
pub(super) const READY_WAITING: &str = "SELECT id, token, attempts, request_id, due_at FROM notifications \
     WHERE state < 3 AND state = 1 AND app = ?1 AND due_at IS NULL AND id > ?2 ORDER BY id \
     LIMIT ?3";
/// One app's queued retries whose time (?2) has come, in (due time, id) order after a cursor
/// (?3, ?4).
pub(super) const READY_DUE: &str = "SELECT id, token, attempts, request_id, due_at FROM notifications \
     WHERE state < 3 AND state = 1 AND app = ?1 AND due_at <= ?2 AND (due_at, id) > (?3, ?4) \
     ORDER BY due_at, id LIMIT ?5";
/// A request's headers, payload and expiry.
pub(super) const REQUEST_BY_ID: &str = "SELECT app, payload, push_type, priority, topic, collapse_id, \
     apns_expiration, expires_at, rid, created_at, skey FROM requests WHERE id = ?1";
/// As `REQUEST_BY_ID` with an empty payload: what a cancel's pass matches on.
pub(super) const REQUEST_WITHOUT_PAYLOAD: &str = "SELECT app, X'', push_type, priority, topic, \
     collapse_id, apns_expiration, expires_at, rid, created_at, skey FROM requests WHERE id = ?1";
/// A cancel's pass over one app's waiting rows of one state (?1): those waiting for no time,
/// in id order after a cursor (?3)...
pub(super) const WAITING_NULL: &str = "SELECT id, request_id, due_at FROM notifications \
     WHERE state < 3 AND state = ?1 AND app = ?2 AND due_at IS NULL AND id > ?3 ORDER BY id \
     LIMIT ?4";
/// ...then those with a time (a schedule, a retry's due time), in (time, id) order after a
/// cursor (?3, ?4).
pub(super) const WAITING_TIMED: &str = "SELECT id, request_id, due_at FROM notifications \
     WHERE state < 3 AND state = ?1 AND app = ?2 AND (due_at, id) > (?3, ?4) \
     ORDER BY due_at, id LIMIT ?5";
/// A cancel: the row, if it still waits (scheduled or queued) for that app (?2). (A waiting
/// row's last attempt, if it made one, is in `attempts` already: the retry that followed it
/// wrote it there.)
pub(super) const CANCEL: &str = "UPDATE notifications SET state = 6, status = NULL, \
     reason = 'Cancelled', due_at = NULL, updated_at = ?3, conn = NULL \
     WHERE id = ?1 AND state < 2 AND app = ?2";
/// Supersede: an app's (?1) queued notifications to token ?2 with key ?3 (never scheduled
/// ones: those take part once their time has come), with their attempts.
pub(super) const SUPERSEDE_FIND: &str = "SELECT id, attempts FROM notifications \
     WHERE app = ?1 AND token = ?2 AND skey = ?3 AND state < 3 AND state = 1";
/// ...and one of them superseded, if it still waits.
pub(super) const SUPERSEDE: &str = "UPDATE notifications SET state = 7, status = NULL, \
     reason = 'Superseded', due_at = NULL, updated_at = ?2, conn = NULL \
     WHERE id = ?1 AND state < 3 AND state = 1";
/// A submission's requests: their apps and notifications still stored.
pub(super) const REQUESTS_OF_SUBMISSION: &str =
    "SELECT app, remaining FROM requests WHERE rid = ?1";
/// One app's earliest retry still to come.
pub(super) const NEXT_DUE: &str = "SELECT MIN(due_at) FROM notifications \
     WHERE state < 3 AND state = 1 AND app = ?1 AND due_at > ?2";
/// An app's number.
pub(super) const APP_ID: &str = "SELECT id FROM apps WHERE name = ?1";
/// Pending notifications by state.
pub(super) const PENDING_COUNTS: &str =
    "SELECT state, COUNT(*) FROM notifications WHERE state < 3 GROUP BY state";

/// Version 1 kept two more indexes on `notifications` (by finish time, by request); version 2
/// counts each request's notifications instead. One transaction: a failed migration leaves the
/// file at version 1.
const MIGRATE_1_TO_2: &str = "BEGIN IMMEDIATE;
ALTER TABLE requests ADD COLUMN remaining INTEGER NOT NULL DEFAULT 0;
UPDATE requests SET remaining = (SELECT COUNT(*) FROM notifications n WHERE n.request_id = requests.id);
DROP INDEX IF EXISTS notifications_finished;
DROP INDEX IF EXISTS notifications_request;
PRAGMA user_version = 2;
COMMIT;";

/// Version 3 numbers the apps and keeps a pending notification's app in its pending index
/// (finished rows keep 0: nothing reads them by app). One transaction.
const MIGRATE_2_TO_3: &str = "BEGIN IMMEDIATE;
CREATE TABLE apps (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
INSERT INTO apps (name) SELECT DISTINCT app FROM requests ORDER BY app;
ALTER TABLE notifications ADD COLUMN app INTEGER NOT NULL DEFAULT 0;
UPDATE notifications SET app = COALESCE((SELECT a.id FROM requests r \
    JOIN apps a ON a.name = r.app WHERE r.id = notifications.request_id), 0) WHERE state < 3;
DROP INDEX notifications_pending;
CREATE INDEX notifications_pending ON notifications (state, app, due_at) WHERE state < 3;
PRAGMA user_version = 3;
COMMIT;";

/// Version 4 keeps each attempt's connection, and the attempts before a notification's last
/// (`attempts`). One transaction.
const MIGRATE_3_TO_4: &str = "BEGIN IMMEDIATE;
ALTER TABLE notifications ADD COLUMN conn INTEGER;
CREATE TABLE attempts (id BLOB NOT NULL, at INTEGER NOT NULL, status INTEGER, reason TEXT, conn INTEGER);
CREATE INDEX attempts_by_id ON attempts (id);
PRAGMA user_version = 4;
COMMIT;";

/// Version 5 keeps each request's submission id (`rid`), and cancelled notifications (state
/// 6), which an older pushgate could not read: it refuses the file instead. One transaction.
const MIGRATE_4_TO_5: &str = "BEGIN IMMEDIATE;
ALTER TABLE requests ADD COLUMN rid BLOB;
PRAGMA user_version = 5;
COMMIT;";

/// Version 6 keeps supersede keys (`spool::supersede`) and superseded notifications (state
/// 7), which an older pushgate could not read. One transaction.
const MIGRATE_5_TO_6: &str = "BEGIN IMMEDIATE;
ALTER TABLE requests ADD COLUMN skey INTEGER;
ALTER TABLE notifications ADD COLUMN skey INTEGER;
CREATE INDEX notifications_superseding ON notifications (app, token, skey)
    WHERE skey IS NOT NULL AND state < 3;
PRAGMA user_version = 6;
COMMIT;";

// The statements that run on every scan or outcome. Each test of `plans` (below) checks that
// SQLite answers them through an index: a statement that scans the whole notifications table
// costs nothing at 10,000 rows and a second of CPU at 1,000,000. `state < 3` is spelled out
// wherever a narrower state is asked for, because SQLite uses the partial index of pending
// rows only for a WHERE clause that repeats its condition.

/// One app's (?3) scheduled notifications whose time has come become queued.
pub(super) const CLAIM_DUE: &str = "UPDATE notifications SET state = 1, due_at = NULL, \
     updated_at = ?1 WHERE id IN (SELECT id FROM notifications WHERE state < 3 AND state = 0 \
     AND app = ?3 AND due_at <= ?1 ORDER BY due_at LIMIT ?2) RETURNING id";
/// Every app's number, for the statements that go through the pending index app by app.
pub(super) const APP_IDS: &str = "SELECT id FROM apps";
/// Start-up recovery: what was in flight goes back to the queue.
pub(super) const REQUEUE_IN_FLIGHT: &str =
    "UPDATE notifications SET state = 1, updated_at = ?1 WHERE state < 3 AND state = 2";
/// One outcome.
pub(super) const COMPLETE: &str = "UPDATE notifications SET state = ?2, attempts = ?3, \
     status = ?4, reason = ?5, due_at = ?6, updated_at = ?7, conn = ?8 WHERE id = ?1 AND state < 3";
/// An attempt that a retry follows, kept for the notification's history.
pub(super) const ATTEMPT_KEPT: &str =
    "INSERT INTO attempts (id, at, status, reason, conn) VALUES (?1, ?2, ?3, ?4, ?5)";
/// A notification's earlier attempts, the last [`KEPT_SHOWN`](crate::spool::KEPT_SHOWN) of
/// them, newest first.
pub(super) const ATTEMPTS_OF: &str =
    "SELECT at, status, reason, conn FROM attempts WHERE id = ?1 ORDER BY rowid DESC LIMIT ?2";
/// Retention: whether any attempt is kept of a notification below id ?1 (when none is, a
/// prune deletes no attempts one by one).
pub(super) const ATTEMPTS_BELOW: &str = "SELECT EXISTS (SELECT 1 FROM attempts WHERE id < ?1)";
/// Retention: a pruned notification's kept attempts.
pub(super) const ATTEMPTS_FORGET: &str = "DELETE FROM attempts WHERE id = ?1";
/// Retention: finished notifications last updated before ?1, walking the primary key up to
/// ?3, the first id of that time (a notification created later cannot have finished earlier);
/// answers each one's id and request.
pub(super) const PRUNE_FINISHED: &str = "DELETE FROM notifications WHERE id IN (SELECT id FROM \
     notifications WHERE id < ?3 AND state >= 3 AND updated_at < ?1 LIMIT ?2) \
     RETURNING id, request_id";
/// Retention: a request loses `?2` notifications, and goes with the last.
pub(super) const REQUEST_LOSES: &str =
    "UPDATE requests SET remaining = remaining - ?2 WHERE id = ?1 RETURNING remaining";
pub(super) const REQUEST_GONE: &str = "DELETE FROM requests WHERE id = ?1";

/// Brings the file at `path` (open as `conn`) to [`SCHEMA_VERSION`]: creates the schema in a
/// new file, applies each migration in order to an older one (each its own transaction), and
/// refuses a file newer than this pushgate knows.
pub(super) fn migrate(conn: &Connection, path: &std::path::Path) -> Result<(), SpoolError> {
    let open_err = |source| SpoolError::Open {
        path: path.display().to_string(),
        source,
    };
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(open_err)?;
    match version {
        0 => conn
            .execute_batch(&format!("{SCHEMA} PRAGMA user_version = {SCHEMA_VERSION};"))
            .map_err(open_err)?,
        1..=5 => {
            let steps = [
                MIGRATE_1_TO_2,
                MIGRATE_2_TO_3,
                MIGRATE_3_TO_4,
                MIGRATE_4_TO_5,
                MIGRATE_5_TO_6,
            ];
            for step in &steps[(version - 1) as usize..] {
                // A development build between versions 4 and 5 added `rid` without the
                // version: its files need only the number.
                let has_rid: bool = conn
                    .query_row(
                        "SELECT EXISTS (SELECT 1 FROM pragma_table_info('requests') \
                         WHERE name = 'rid')",
                        [],
                        |r| r.get(0),
                    )
                    .map_err(open_err)?;
                let step = if *step == MIGRATE_4_TO_5 && has_rid {
                    "PRAGMA user_version = 5;"
                } else {
                    step
                };
                conn.execute_batch(step).map_err(open_err)?;
            }
        }
        SCHEMA_VERSION => {}
        found => {
            return Err(SpoolError::Schema {
                path: path.display().to_string(),
                found,
                known: SCHEMA_VERSION,
            });
        }
    }
    // Additive, so not a schema version: older versions ignore them.
    conn.execute_batch(HEALTH_TABLE).map_err(open_err)?;
    conn.execute_batch(SUBMISSION_INDEX).map_err(open_err)?;
    conn.execute_batch(PAUSES_TABLE).map_err(open_err)?;
    conn.execute_batch(IDEMPOTENCY_TABLE).map_err(open_err)?;
    conn.execute_batch(super::bounces::BOUNCE_TABLES)
        .map_err(open_err)?;
    // An older pushgate prunes requests without their links, and SQLite reuses request ids:
    // a stale link would send a stranger's failures to its return path.
    let stale = conn
        .execute(super::bounces::FORGET_STALE, [])
        .map_err(open_err)?;
    if stale > 0 {
        conn.execute(super::bounces::FORGET_ORPHANS, [])
            .map_err(open_err)?;
    }
    Ok(())
}

#[cfg(test)]
mod plans {
    use super::*;

    /// SQLite's plan for `query`, one line per step.
    fn plan(c: &Connection, query: &str) -> Vec<String> {
        let mut st = c
            .prepare(&format!("EXPLAIN QUERY PLAN {query}"))
            .unwrap_or_else(|e| panic!("{query}: {e}"));
        // Unbound parameters are NULL, which is all a plan needs.
        let mut rows = st.raw_query();
        let mut steps = Vec::new();
        while let Some(r) = rows.next().expect("plan row") {
            steps.push(r.get::<_, String>(3).expect("plan detail"));
        }
        steps
    }

    /// No statement of a scheduler pass, an outcome or retention reads the whole notifications
    /// table: each goes through its primary key or one of its indexes.
    #[test]
    fn periodic_statements_use_an_index() {
        let c = Connection::open_in_memory().expect("memory database");
        c.execute_batch(SCHEMA).expect("schema");
        c.execute_batch(IDEMPOTENCY_TABLE).expect("keys");
        c.execute_batch(SUBMISSION_INDEX).expect("submission index");
        for query in [
            CLAIM_DUE,
            REQUEUE_IN_FLIGHT,
            COMPLETE,
            ATTEMPTS_OF,
            ATTEMPTS_BELOW,
            ATTEMPTS_FORGET,
            PRUNE_FINISHED,
            REQUEST_LOSES,
            REQUEST_GONE,
            READY_WAITING,
            READY_DUE,
            REQUEST_BY_ID,
            NEXT_DUE,
            APP_ID,
            APP_IDS,
            PENDING_COUNTS,
            KEY_SEEN,
            KEYS_FORGET,
            WAITING_NULL,
            WAITING_TIMED,
            CANCEL,
            SUPERSEDE_FIND,
            SUPERSEDE,
            REQUESTS_OF_SUBMISSION,
            REQUEST_WITHOUT_PAYLOAD,
        ] {
            let steps = plan(&c, query);
            // The scheduler's statements read one app's rows, not every app's.
            if [
                CLAIM_DUE,
                READY_WAITING,
                READY_DUE,
                NEXT_DUE,
                WAITING_NULL,
                WAITING_TIMED,
            ]
            .contains(&query)
            {
                assert!(
                    steps
                        .iter()
                        .any(|s| s.contains("notifications_pending (state=? AND app=?")),
                    "{query}\nreads past other apps' rows: {steps:?}"
                );
            }
            assert!(
                steps.iter().all(|s| !s.starts_with("SCAN notifications")
                    && !s.starts_with("SCAN n ")
                    && s != "SCAN n"),
                "{query}\nreads the whole table: {steps:?}"
            );
            assert!(!steps.is_empty(), "{query}: no plan");
        }
        // A supersede looks its token's rows up, not the app's whole backlog.
        let steps = plan(&c, SUPERSEDE_FIND);
        assert!(
            steps
                .iter()
                .any(|s| s.contains("notifications_superseding (app=? AND token=? AND skey=?)")),
            "{steps:?}"
        );
    }
}
