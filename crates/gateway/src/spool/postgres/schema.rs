//! The PostgreSQL spool's shape: versioned migrations, applied at start under an advisory lock
//! (two gateways starting at once both come up; one migrates), and the statements of every
//! pass.
//!
//! The shape is the SQLite spool's: a request holds its payload and headers once and each
//! notification refers to it ("fan-out is cheap"). Times are milliseconds since the epoch
//! (`bigint`), as in SQLite, so the two backends page and compare alike. Tables for what comes
//! next (gateways and their leases, channels, idempotency keys, one provider token per key)
//! are created now, empty, so that the features that fill them need no migration of the hot
//! tables.

use tokio_postgres::Client;

use crate::spool::SpoolError;

/// The schema this version writes (`pushgate_schema.version`).
pub(super) const SCHEMA_VERSION: i32 = 7;

/// Any number, the same for every pushgate: the advisory lock that serialises migrations.
const MIGRATION_LOCK: i64 = 0x7075_7368_6761_7465; // "pushgate"
/// The lock a gateway of schema 2 or older held for as long as it ran (one gateway per
/// database then): held, this version refuses to start beside it.
pub(super) const OLD_GATEWAY_LOCK: i64 = 0x7075_7368_6761_7466;
/// Taken (for the transaction) by the gateway that prunes: retention runs on one at a time.
pub(super) const RETENTION_LOCK: i64 = 0x7075_7368_6761_7467;

/// Version 1. `notifications_pending` is the SQLite spool's pending index — state, then app,
/// then due time, only over rows not yet final — with the id last, which SQLite's index holds
/// implicitly (the table is keyed by it) and PostgreSQL's must name: a page of one app's
/// waiting rows in id order is then a range of the index, not a sort of the whole backlog.
/// `notifications_scheduled` serves the claim of scheduled rows, every app's at once, in due
/// order.
const MIGRATE_TO_1: &str = "
CREATE TABLE requests (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    app text NOT NULL,
    payload bytea NOT NULL,
    push_type text NOT NULL,
    priority smallint,
    topic text,
    collapse_id text,
    apns_expiration bigint,
    send_at bigint,
    expires_at bigint NOT NULL,
    created_at bigint NOT NULL,
    remaining integer NOT NULL
);
CREATE TABLE notifications (
    id uuid PRIMARY KEY,
    request_id bigint NOT NULL,
    app text NOT NULL,
    token bytea NOT NULL,
    state smallint NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    due_at bigint,
    status integer,
    reason text,
    updated_at bigint NOT NULL,
    owner uuid,
    claimed_at bigint
);
CREATE INDEX notifications_pending ON notifications (state, app, due_at, id) WHERE state < 3;
CREATE INDEX notifications_scheduled ON notifications (due_at) WHERE state = 0;
ALTER TABLE notifications SET (autovacuum_vacuum_scale_factor = 0.01);
CREATE TABLE dead_tokens (
    app text NOT NULL,
    token bytea NOT NULL,
    reason text NOT NULL,
    since bigint NOT NULL,
    PRIMARY KEY (app, token)
);
CREATE TABLE health (id integer PRIMARY KEY CHECK (id = 1), checked_at bigint NOT NULL);
CREATE TABLE gateways (
    id uuid PRIMARY KEY,
    host text NOT NULL,
    started_at bigint NOT NULL,
    heartbeat_at bigint NOT NULL
);
CREATE TABLE channels (
    app text NOT NULL,
    id text NOT NULL,
    storage_policy smallint NOT NULL,
    created_at bigint NOT NULL,
    PRIMARY KEY (app, id)
);
CREATE TABLE idempotency_keys (
    app text NOT NULL,
    key text NOT NULL,
    request_id bigint NOT NULL,
    created_at bigint NOT NULL,
    PRIMARY KEY (app, key)
);
CREATE TABLE provider_tokens (
    key_id text PRIMARY KEY,
    token text NOT NULL,
    issued_at bigint NOT NULL
);
";

/// Version 2: idempotency keys as the spool keeps them (`spool::idempotency`) — each with the
/// fingerprint of what was sent under it and the ids it was answered with — in place of
/// version 1's placeholder, which nothing wrote.
const MIGRATE_1_TO_2: &str = "
DROP TABLE idempotency_keys;
CREATE TABLE idempotency_keys (
    scope text NOT NULL,
    key text NOT NULL,
    fingerprint bytea NOT NULL,
    ids bytea NOT NULL,
    created_at bigint NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
";

/// Version 3: several gateways on one database (`cluster`). Each registration holds a session
/// advisory lock of its own (`lock_key`) for as long as its session lives, so a gateway whose
/// process died is seen dead at once, not only when its heartbeat is `lease_s` old; `apps` is
/// what it serves (a warning when the gateways disagree). A provider token records the team
/// it was signed for.
const MIGRATE_2_TO_3: &str = "
ALTER TABLE gateways ADD COLUMN lock_key bigint NOT NULL DEFAULT 0;
ALTER TABLE gateways ADD COLUMN apps text[] NOT NULL DEFAULT '{}';
ALTER TABLE provider_tokens ADD COLUMN team_id text NOT NULL DEFAULT '';
";

/// Version 4: each attempt's connection (`conn`, the number the sending gateway's logs give
/// it), and the attempts before a notification's last (`attempts`), as in the SQLite spool.
/// Only a retry writes an attempt; `seq` orders them and lets retention delete in chunks.
const MIGRATE_3_TO_4: &str = "
ALTER TABLE notifications ADD COLUMN conn bigint;
CREATE TABLE attempts (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id uuid NOT NULL,
    at bigint NOT NULL,
    status integer,
    reason text,
    conn bigint
);
CREATE INDEX attempts_by_id ON attempts (id);
";

/// Version 5: bounces (`spool::bounces`) — the origin of each message injected with bounces
/// on, its requests, and the outbox of failures waiting for a DSN. A gateway sending a DSN
/// leases its origin (`lease_until`), so that two gateways never send the same one. (`IF NOT
/// EXISTS`: a database an operator took back to version 4 by hand still migrates.)
const MIGRATE_4_TO_5: &str = "
CREATE TABLE IF NOT EXISTS bounce_origins (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    return_path text NOT NULL,
    headers bytea NOT NULL,
    way text NOT NULL,
    received_from text NOT NULL,
    received_at bigint NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    next_at bigint NOT NULL DEFAULT 0,
    lease_until bigint NOT NULL DEFAULT 0,
    lease_owner uuid
);
CREATE TABLE IF NOT EXISTS bounce_requests (request_id bigint PRIMARY KEY, origin bigint NOT NULL);
CREATE INDEX IF NOT EXISTS bounce_requests_origin ON bounce_requests (origin);
CREATE TABLE IF NOT EXISTS bounce_outbox (
    id uuid PRIMARY KEY,
    origin bigint NOT NULL,
    app text NOT NULL,
    token bytea NOT NULL,
    state smallint NOT NULL,
    status integer,
    reason text,
    at bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS bounce_outbox_origin ON bounce_outbox (origin, at);
";

/// Version 6: cancel and pause (`spool::cancel`) — each request's submission id (`rid`,
/// indexed: a cancel of a submission finds its requests; notifications are not indexed by it),
/// and the apps an operator paused. Adding a column without a default rewrites nothing.
const MIGRATE_5_TO_6: &str = "
ALTER TABLE requests ADD COLUMN IF NOT EXISTS rid uuid;
CREATE INDEX IF NOT EXISTS requests_rid ON requests (rid) WHERE rid IS NOT NULL;
CREATE TABLE IF NOT EXISTS app_pauses (
    app text PRIMARY KEY,
    since bigint NOT NULL,
    reject boolean NOT NULL
);
";

/// Version 7: supersede (`spool::supersede`) — each request's and notification's key, and
/// the index of waiting notifications by (app, token, key), which holds only keyed rows.
const MIGRATE_6_TO_7: &str = "
ALTER TABLE requests ADD COLUMN IF NOT EXISTS skey bigint;
ALTER TABLE notifications ADD COLUMN IF NOT EXISTS skey bigint;
CREATE INDEX IF NOT EXISTS notifications_superseding ON notifications (app, token, skey)
    WHERE skey IS NOT NULL AND state < 3;
";

/// Brings the database to [`SCHEMA_VERSION`], in one transaction under the migration lock:
/// the first gateway to take it migrates, the others find the work done. Refuses a database
/// newer than this pushgate knows. Answers the version found before.
pub(super) async fn migrate(c: &mut Client, target: &str) -> Result<i32, SpoolError> {
    let err = |what: &str| {
        let what = format!("{what} ({target})");
        move |e: tokio_postgres::Error| SpoolError::Postgres {
            what,
            source: Box::new(e),
        }
    };
    let tx = c.transaction().await.map_err(err("migrating"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(err("taking the migration lock"))?;
    // `CREATE … IF NOT EXISTS` on a database already migrated is not news to log.
    tx.batch_execute("SET LOCAL client_min_messages = warning")
        .await
        .map_err(err("migrating"))?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS pushgate_schema (version integer NOT NULL)")
        .await
        .map_err(err("reading the schema version"))?;
    let found: Option<i32> = tx
        .query_opt("SELECT version FROM pushgate_schema", &[])
        .await
        .map_err(err("reading the schema version"))?
        .map(|r| r.get(0));
    let found = found.unwrap_or(0);
    if found > SCHEMA_VERSION {
        return Err(SpoolError::Schema {
            path: target.to_owned(),
            found: found.into(),
            known: SCHEMA_VERSION.into(),
        });
    }
    if found < 1 {
        tx.batch_execute(MIGRATE_TO_1)
            .await
            .map_err(err("creating the schema"))?;
    }
    if found < 2 {
        tx.batch_execute(MIGRATE_1_TO_2)
            .await
            .map_err(err("migrating the schema to version 2"))?;
    }
    if found < 3 {
        tx.batch_execute(MIGRATE_2_TO_3)
            .await
            .map_err(err("migrating the schema to version 3"))?;
    }
    if found < 4 {
        tx.batch_execute(MIGRATE_3_TO_4)
            .await
            .map_err(err("migrating the schema to version 4"))?;
    }
    if found < 5 {
        tx.batch_execute(MIGRATE_4_TO_5)
            .await
            .map_err(err("migrating the schema to version 5"))?;
    }
    if found < 6 {
        tx.batch_execute(MIGRATE_5_TO_6)
            .await
            .map_err(err("migrating the schema to version 6"))?;
    }
    if found < 7 {
        tx.batch_execute(MIGRATE_6_TO_7)
            .await
            .map_err(err("migrating the schema to version 7"))?;
    }
    if found < SCHEMA_VERSION {
        tx.execute("DELETE FROM pushgate_schema", &[])
            .await
            .map_err(err("recording the schema version"))?;
        tx.execute(
            "INSERT INTO pushgate_schema (version) VALUES ($1)",
            &[&SCHEMA_VERSION],
        )
        .await
        .map_err(err("recording the schema version"))?;
    }
    tx.commit().await.map_err(err("committing the migration"))?;
    Ok(found)
}

/// Retention: up to $2 idempotency keys created before $1.
pub(super) const KEYS_FORGET: &str = "DELETE FROM idempotency_keys WHERE (scope, key) IN \
     (SELECT scope, key FROM idempotency_keys WHERE created_at < $1 LIMIT $2)";

// The statements of every scheduler pass and outcome, as in the SQLite spool; `state < 3` is
// spelled out for the partial index of pending rows.

// The ready pages order by the pending index's own columns, the leading ones fixed by the
// WHERE clause: the same order as `ORDER BY id` (or `due_at, id`), but one the planner can only
// serve from that index. Ordered by id alone, it walked the primary key and filtered out every
// finished row on the way (44 ms a page of 1,000 in `pushgate bench`, against 2 ms).

// A page is also a claim: of the rows no gateway holds (owner NULL) or this one ($me) holds,
// those in no other transaction's hands (SKIP LOCKED) are read, and the unowned ones become
// this gateway's — while its registration stands (`g`, locked FOR KEY SHARE so that a rescue
// deleting it waits for the claim, and then frees what it claimed). Rows other gateways hold
// are not seen. The final SELECT reads the rows as the statement began; the columns it reads
// are not the ones the claim changes.

/// One app's queued notifications waiting for no time, in id order after a cursor ($2),
/// claimed for $4 at $5.
pub(super) const READY_WAITING: &str = "WITH g AS (SELECT id FROM gateways WHERE id = $4 \
     FOR KEY SHARE), c AS MATERIALIZED (SELECT n.id, n.owner FROM notifications n \
     WHERE n.state < 3 AND n.state = 1 AND n.app = $1 AND n.due_at IS NULL AND n.id > $2 \
     AND (n.owner IS NULL OR n.owner = $4) AND EXISTS (SELECT 1 FROM g) \
     ORDER BY n.state, n.app, n.due_at, n.id LIMIT $3 FOR UPDATE OF n SKIP LOCKED), \
     u AS (UPDATE notifications n SET owner = $4, claimed_at = $5 FROM c \
     WHERE n.id = c.id AND c.owner IS NULL) \
     SELECT n.id, n.token, n.attempts, n.request_id, n.due_at FROM notifications n \
     JOIN c ON n.id = c.id ORDER BY n.id";
/// One app's queued retries whose time ($2) has come, in (due time, id) order after a cursor
/// ($3, $4), claimed for $6.
pub(super) const READY_DUE: &str = "WITH g AS (SELECT id FROM gateways WHERE id = $6 \
     FOR KEY SHARE), c AS MATERIALIZED (SELECT n.id, n.owner FROM notifications n \
     WHERE n.state < 3 AND n.state = 1 AND n.app = $1 AND n.due_at <= $2 \
     AND (n.due_at, n.id) > ($3, $4) AND (n.owner IS NULL OR n.owner = $6) \
     AND EXISTS (SELECT 1 FROM g) ORDER BY n.state, n.app, n.due_at, n.id LIMIT $5 \
     FOR UPDATE OF n SKIP LOCKED), \
     u AS (UPDATE notifications n SET owner = $6, claimed_at = $2 FROM c \
     WHERE n.id = c.id AND c.owner IS NULL) \
     SELECT n.id, n.token, n.attempts, n.request_id, n.due_at FROM notifications n \
     JOIN c ON n.id = c.id ORDER BY n.due_at, n.id";
/// The requests of a page, each read once.
pub(super) const REQUESTS_BY_ID: &str = "SELECT id, app, payload, push_type, priority, topic, \
     collapse_id, apns_expiration, expires_at, rid, created_at, skey FROM requests \
     WHERE id = ANY($1)";
/// As `REQUESTS_BY_ID` with an empty payload: what a cancel's pass matches on.
pub(super) const REQUESTS_WITHOUT_PAYLOAD: &str = "SELECT id, app, ''::bytea, push_type, \
     priority, topic, collapse_id, apns_expiration, expires_at, rid, created_at, skey \
     FROM requests WHERE id = ANY($1)";
/// A cancel's pass over one app's waiting rows of one state ($1), as in the SQLite spool:
/// those waiting for no time after an id...
/// (In the pending index's own order, as the ready pages: see below.)
pub(super) const WAITING_NULL: &str = "SELECT id, request_id, due_at FROM notifications \
     WHERE state < 3 AND state = $1 AND app = $2 AND due_at IS NULL AND id > $3 \
     ORDER BY state, app, due_at, id LIMIT $4";
/// ...then the timed ones after (time, id).
pub(super) const WAITING_TIMED: &str = "SELECT id, request_id, due_at FROM notifications \
     WHERE state < 3 AND state = $1 AND app = $2 AND (due_at, id) > ($3, $4) \
     ORDER BY state, app, due_at, id LIMIT $5";
/// Supersede: app $1's queued notifications to one of tokens $2 with key $3 that nobody or
/// this gateway ($4) holds, except those taken for sending here ($5), become superseded at
/// $6; answers each one's id, token and attempts. Locked in id order, so two submissions
/// superseding the same rows wait for each other rather than deadlock.
pub(super) const SUPERSEDE: &str = "WITH old AS (SELECT id FROM notifications \
     WHERE app = $1 AND token = ANY($2) AND skey = $3 AND state < 3 AND state = 1 \
     AND (owner = $4 OR owner IS NULL) AND NOT (id = ANY($5)) ORDER BY id FOR UPDATE) \
     UPDATE notifications n SET state = 7, status = NULL, reason = 'Superseded', \
     due_at = NULL, updated_at = $6, conn = NULL, owner = NULL FROM old WHERE n.id = old.id \
     RETURNING n.id, n.token, n.attempts";
/// A cancel of those of $1 that are app $2's, still wait, and are this gateway's ($3) or,
/// unless $5 (mine only), nobody's. The rows are locked first, and a row another transaction changed meanwhile (a claim,
/// an outcome) is judged again as it now is. (A waiting row's last attempt, if it made one,
/// is in its history already: the retry that followed it wrote it there.)
pub(super) const CANCEL: &str = "WITH c AS (SELECT id FROM notifications WHERE id = ANY($1) \
     AND state < 2 AND app = $2 AND (owner = $3 OR (owner IS NULL AND NOT $5)) FOR UPDATE) \
     UPDATE notifications n SET state = 6, status = NULL, reason = 'Cancelled', due_at = NULL, \
     updated_at = $4, conn = NULL, owner = NULL FROM c WHERE n.id = c.id RETURNING n.id";
/// One app's earliest retry still to come that this gateway ($3) may claim.
pub(super) const NEXT_DUE: &str = "SELECT MIN(due_at) FROM notifications \
     WHERE state < 3 AND state = 1 AND app = $1 AND due_at > $2 \
     AND (owner IS NULL OR owner = $3)";
/// Scheduled notifications whose time ($1) has come become queued, held by no gateway: the
/// first gateway serving the app to page them in claims them (each row once, cluster-wide).
pub(super) const CLAIM_DUE: &str = "UPDATE notifications SET state = 1, due_at = NULL, \
     owner = NULL, updated_at = $1 WHERE id IN (SELECT id FROM notifications WHERE state < 3 AND state = 0 \
     AND due_at <= $1 ORDER BY due_at LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING id";
/// Outcomes in one statement, fenced by owner: the rows still pending and still this
/// gateway's ($8) take theirs — an outcome for a row another gateway rescued is not applied.
/// Answers each one's new state, so the pending count loses those that became final. An
/// attempt that a retry follows (still pending, and it went out or was answered) is kept in
/// `attempts` by the same statement, and a failure of a request injected with bounces on
/// joins the bounce outbox.
pub(super) const COMPLETE: &str = "WITH u AS (UPDATE notifications n SET state = o.state, \
     attempts = o.attempts, status = o.status, reason = o.reason, due_at = o.due_at, \
     updated_at = $7, conn = o.conn FROM unnest($1::uuid[], $2::smallint[], $3::integer[], \
     $4::integer[], $5::text[], $6::bigint[], $9::bigint[]) \
     AS o(id, state, attempts, status, reason, due_at, conn) \
     WHERE n.id = o.id AND n.state < 3 AND n.owner = $8 \
     RETURNING n.id, n.state, n.status, n.reason, n.conn, n.request_id, n.app, n.token), \
     kept AS (INSERT INTO attempts (id, at, status, reason, conn) SELECT id, $7, status, reason, \
     conn FROM u WHERE state < 3 AND (conn IS NOT NULL OR status IS NOT NULL)), \
     bounced AS (INSERT INTO bounce_outbox (id, origin, app, token, state, status, reason, at) \
     SELECT u.id, b.origin, u.app, u.token, u.state, u.status, u.reason, $7 FROM u \
     JOIN bounce_requests b ON b.request_id = u.request_id WHERE u.state IN (4, 5) \
     ON CONFLICT (id) DO NOTHING) \
     SELECT state FROM u";

/// Of these ids, those still pending but held by another gateway (or none): the outcomes the
/// fence dropped, for the log.
pub(super) const NOT_MINE: &str = "SELECT count(*) FROM notifications \
     WHERE id = ANY($1) AND state < 3 AND owner IS DISTINCT FROM $2";
pub(super) const REGISTER_DEAD: &str = "INSERT INTO dead_tokens (app, token, reason, since) \
     VALUES ($1, $2, $3, $4) ON CONFLICT (app, token) DO UPDATE SET reason = excluded.reason, \
     since = excluded.since";
/// Retention: finished notifications last updated before $1, walking the primary key below
/// $3 (the first id of that time), each request once with how many it lost; their kept
/// attempts go with them.
pub(super) const PRUNE_FINISHED: &str = "WITH gone AS (DELETE FROM notifications WHERE id IN \
     (SELECT id FROM notifications WHERE id < $3 AND state >= 3 AND updated_at < $1 LIMIT $2) \
     RETURNING id, request_id), \
     history AS (DELETE FROM attempts WHERE id IN (SELECT id FROM gone)) \
     SELECT request_id, count(*) FROM gone GROUP BY request_id";
pub(super) const REQUEST_LOSES: &str =
    "UPDATE requests SET remaining = remaining - $2 WHERE id = $1 RETURNING remaining";
/// A request left without notifications goes, with its link to a bounce origin, and the
/// origin once nothing else refers to it (the statement sees the tables as they were before
/// it: the link it deletes is still there for the check, hence `request_id <> $1`).
pub(super) const REQUEST_GONE: &str = "WITH r AS (DELETE FROM requests WHERE id = $1), \
     l AS (DELETE FROM bounce_requests WHERE request_id = $1 RETURNING origin) \
     DELETE FROM bounce_origins o USING l WHERE o.id = l.origin \
     AND NOT EXISTS (SELECT 1 FROM bounce_requests b WHERE b.origin = o.id AND b.request_id <> $1) \
     AND NOT EXISTS (SELECT 1 FROM bounce_outbox x WHERE x.origin = o.id)";
/// Start-up recovery: what a version before 3 left in flight goes back to the queue (this
/// version never stores `in_flight`; a dead gateway's rows are rescued by `cluster`).
pub(super) const REQUEUE_IN_FLIGHT: &str = "UPDATE notifications SET state = 1, owner = NULL, updated_at = $1 WHERE state < 3 AND state = 2";
