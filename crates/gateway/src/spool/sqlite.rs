//! The embedded backend: one SQLite file in WAL mode with `synchronous=FULL` (a commit survives
//! power loss), a writer thread that owns the write connection, and a read connection used from
//! blocking tasks.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use apns::{ApnsId, DeviceToken, Reason};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot};

use super::writer::{self, Command, id_from_bytes};
use super::{
    Completion, DeadToken, NewRequest, NotificationRecord, Spool, SpoolError, State, SubmitError,
    from_ms,
};

/// The schema this version writes (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 3;

/// Each notification costs one write into `notifications` and its pending index at ingest, and
/// one update that takes it out of that index at its outcome: no other index is kept up to date
/// per notification. Retention walks the primary key instead (ids are UUIDv7, so their order is
/// their creation time), and a request counts its notifications left (`remaining`) instead of
/// being found through an index on `request_id`.
///
/// A pending notification carries its app's number (`apps`), first in its pending index after
/// the state, so that the scheduler reads one app's work without reading another's: a halted
/// app's backlog costs the others nothing.
const SCHEMA: &str = "
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
    remaining INTEGER NOT NULL DEFAULT 0
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
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS notifications_pending ON notifications (state, app, due_at) WHERE state < 3;
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

// Read-side statements of every scheduler pass; like those in `writer`, checked by `plans`
// to go through the partial index of pending rows (`state < 3` repeated for that).

/// One app's queued notifications waiting for no time, in id order after a cursor. Their
/// requests are read once each (`REQUEST_BY_ID`), not once per row.
const READY_WAITING: &str = "SELECT id, token, attempts, request_id, due_at FROM notifications \
     WHERE state < 3 AND state = 1 AND app = ?1 AND due_at IS NULL AND id > ?2 ORDER BY id \
     LIMIT ?3";
/// One app's queued retries whose time (?2) has come, in (due time, id) order after a cursor
/// (?3, ?4).
const READY_DUE: &str = "SELECT id, token, attempts, request_id, due_at FROM notifications \
     WHERE state < 3 AND state = 1 AND app = ?1 AND due_at <= ?2 AND (due_at, id) > (?3, ?4) \
     ORDER BY due_at, id LIMIT ?5";
/// A request's headers, payload and expiry.
const REQUEST_BY_ID: &str = "SELECT app, payload, push_type, priority, topic, collapse_id, \
     apns_expiration, expires_at FROM requests WHERE id = ?1";
/// One app's earliest retry still to come.
const NEXT_DUE: &str = "SELECT MIN(due_at) FROM notifications \
     WHERE state < 3 AND state = 1 AND app = ?1 AND due_at > ?2";
/// An app's number.
const APP_ID: &str = "SELECT id FROM apps WHERE name = ?1";
/// Pending notifications by state.
const PENDING_COUNTS: &str =
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

/// How the spool behaves.
#[derive(Debug, Clone)]
pub struct SpoolOptions {
    /// Beyond this many pending notifications, enqueue answers [`SubmitError::Full`].
    pub max_pending: u64,
    /// Commands that may wait for the writer; a full channel makes callers wait.
    pub channel_capacity: usize,
    /// `synchronous=FULL` (default): a commit survives power loss. `false` uses NORMAL, which
    /// survives a process crash but may lose the last commits on power loss — an explicit,
    /// documented opt-in only.
    pub power_safe: bool,
}

impl Default for SpoolOptions {
    fn default() -> Self {
        SpoolOptions {
            max_pending: 10_000_000,
            channel_capacity: 4096,
            power_safe: true,
        }
    }
}

/// The SQLite spool. Cheap to clone; the writer stops when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct SqliteSpool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    /// To the writer thread; bounded, so a slow disk slows submitters instead of growing memory.
    commands: mpsc::Sender<Command>,
    /// Notifications not yet final; kept by the writer after each commit.
    pending: Arc<AtomicU64>,
    max_pending: u64,
    /// The read connection. A std mutex, taken only inside blocking tasks.
    reader: Arc<Mutex<Connection>>,
    writer: Arc<writer::WriterState>,
}

fn sql(what: &'static str) -> impl FnOnce(rusqlite::Error) -> SpoolError {
    move |source| SpoolError::Sql { what, source }
}

impl SqliteSpool {
    /// Opens (creating if needed) the spool at `path` and starts its writer thread.
    pub fn open(path: &Path, options: SpoolOptions) -> Result<SqliteSpool, SpoolError> {
        let open_err = |source| SpoolError::Open {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| SpoolError::Io {
                what: format!("creating {}", dir.display()),
                source,
            })?;
        }
        let conn = Connection::open(path).map_err(open_err)?;
        let sync = if options.power_safe { "FULL" } else { "NORMAL" };
        // A page cache of 8 MiB per connection: the hot part of the notifications table stays
        // in SQLite's own cache instead of being read back from the OS page by page.
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync}; PRAGMA busy_timeout = 5000; \
             PRAGMA cache_size = -8192;"
        ))
        .map_err(open_err)?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(open_err)?;
        match version {
            0 => conn
                .execute_batch(&format!("{SCHEMA} PRAGMA user_version = {SCHEMA_VERSION};"))
                .map_err(open_err)?,
            1 => {
                conn.execute_batch(MIGRATE_1_TO_2).map_err(open_err)?;
                conn.execute_batch(MIGRATE_2_TO_3).map_err(open_err)?;
            }
            2 => conn.execute_batch(MIGRATE_2_TO_3).map_err(open_err)?,
            SCHEMA_VERSION => {}
            found => {
                return Err(SpoolError::Schema {
                    path: path.display().to_string(),
                    found,
                    known: SCHEMA_VERSION,
                });
            }
        }
        // Additive, so not a schema version: older versions ignore it.
        conn.execute_batch(HEALTH_TABLE).map_err(open_err)?;
        let pending: u64 = conn
            .query_row(
                "SELECT COUNT(*) FROM notifications WHERE state < 3",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map_err(open_err)? as u64;
        let reader = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(open_err)?;
        reader
            .execute_batch("PRAGMA busy_timeout = 5000; PRAGMA cache_size = -8192;")
            .map_err(open_err)?;
        let pending = Arc::new(AtomicU64::new(pending));
        let (tx, rx) = mpsc::channel(options.channel_capacity.max(1));
        let writer_pending = Arc::clone(&pending);
        let max_pending = options.max_pending;
        let writer = Arc::new(writer::WriterState::default());
        let writer_state = Arc::clone(&writer);
        std::thread::Builder::new()
            .name("spool-writer".into())
            .spawn(move || writer::run(conn, rx, writer_pending, max_pending, writer_state))
            .map_err(|source| SpoolError::Io {
                what: "spawning the spool writer thread".to_owned(),
                source,
            })?;
        Ok(SqliteSpool {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                commands: tx,
                pending,
                max_pending,
                reader: Arc::new(Mutex::new(reader)),
                writer,
            }),
        })
    }

    /// Transactions the writer has committed since the spool was opened.
    pub fn commits(&self) -> u64 {
        self.inner.writer.commits.load(Ordering::Relaxed)
    }

    /// Fault injection for tests: while `fail` is set, every transaction that writes fails at
    /// its commit with `SQLITE_FULL` (as on a full disk) and is rolled back. Never set by the
    /// gateway itself.
    #[doc(hidden)]
    pub fn inject_write_failures(&self, fail: bool) {
        self.inner.writer.fail_writes.store(fail, Ordering::Relaxed);
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The configured limit of pending notifications.
    pub fn max_pending(&self) -> u64 {
        self.inner.max_pending
    }

    pub(crate) async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, SpoolError>>) -> Command,
    ) -> Result<T, SpoolError> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .commands
            .send(make(tx))
            .await
            .map_err(|_| SpoolError::WriterGone)?;
        rx.await.map_err(|_| SpoolError::WriterGone)?
    }

    /// Runs `f` with the read connection on a blocking thread.
    pub(crate) async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, SpoolError> + Send + 'static,
    ) -> Result<T, SpoolError> {
        let reader = Arc::clone(&self.inner.reader);
        tokio::task::spawn_blocking(move || {
            let conn = reader.lock().expect("the reader lock is never poisoned");
            f(&conn)
        })
        .await
        .map_err(|_| SpoolError::WriterGone)?
    }

    /// Deletes up to `limit` finished notifications last updated before `before`.
    pub async fn prune(&self, before: SystemTime, limit: usize) -> Result<usize, SpoolError> {
        self.call(|reply| Command::Prune {
            before,
            limit,
            reply,
        })
        .await
    }

    /// Counts notifications by state (every state present).
    pub async fn counts(&self) -> Result<Vec<(State, u64)>, SpoolError> {
        self.read(|c| {
            count_by_state(
                c,
                "SELECT state, COUNT(*) FROM notifications GROUP BY state",
            )
        })
        .await
    }

    /// Whether `token` is registered dead for `app`, with its reason and time.
    pub async fn dead_token(
        &self,
        app: &str,
        token: &DeviceToken,
    ) -> Result<Option<(Reason, SystemTime)>, SpoolError> {
        let token = token.to_bytes(&mut [0; writer::TOKEN_BYTES]).to_vec();
        let app = app.to_owned();
        self.read(move |c| {
            c.prepare_cached("SELECT reason, since FROM dead_tokens WHERE app = ?1 AND token = ?2")
                .map_err(sql("reading a dead token"))?
                .query_row(params![app, token], |r| {
                    Ok((Reason::parse(&r.get::<_, String>(0)?), from_ms(r.get(1)?)))
                })
                .optional()
                .map_err(sql("reading a dead token"))
        })
        .await
    }

    /// Commits what was sent before, closes the file and stops the writer; later calls on
    /// any clone fail with [`SpoolError::WriterGone`].
    pub async fn close(&self) -> Result<(), SpoolError> {
        self.call(|reply| Command::Stop { reply }).await
    }

    /// Waits until the writer has applied everything sent before this call.
    pub async fn flush(&self) -> Result<(), SpoolError> {
        self.call(|reply| Command::Flush { reply }).await
    }

    /// Commits a one-row write after everything sent before it: whether the spool can take
    /// writes now (`/readyz`). A flush would not tell: an empty transaction commits on a full
    /// disk.
    pub async fn probe_write(&self) -> Result<(), SpoolError> {
        self.call(|reply| Command::Probe { reply }).await
    }
}

impl Spool for SqliteSpool {
    async fn enqueue(&self, batch: Vec<NewRequest>) -> Result<Vec<NewRequest>, SubmitError> {
        let rows: u64 = batch.iter().map(|r| r.len() as u64).sum();
        let pending = self.inner.pending.load(Ordering::Acquire);
        if pending + rows > self.inner.max_pending {
            return Err(SubmitError::Full {
                pending,
                limit: self.inner.max_pending,
            });
        }
        let (tx, rx) = oneshot::channel();
        self.inner
            .commands
            .send(Command::Enqueue { batch, reply: tx })
            .await
            .map_err(|_| SubmitError::Unavailable(SpoolError::WriterGone))?;
        rx.await
            .map_err(|_| SubmitError::Unavailable(SpoolError::WriterGone))?
    }

    async fn claim_due(&self, now: SystemTime, limit: usize) -> Result<Vec<ApnsId>, SpoolError> {
        self.call(|reply| Command::ClaimDue { now, limit, reply })
            .await
    }

    async fn complete(
        &self,
        done: Vec<Completion>,
        dead: Vec<DeadToken>,
    ) -> Result<(), SpoolError> {
        self.call(|reply| Command::Complete { done, dead, reply })
            .await
    }

    async fn register_dead_token(&self, dead: DeadToken) -> Result<(), SpoolError> {
        self.call(|reply| Command::DeadToken { dead, reply }).await
    }

    async fn get(&self, id: ApnsId) -> Result<Option<NotificationRecord>, SpoolError> {
        self.read(move |c| read_record(c, id)).await
    }

    fn pending(&self) -> u64 {
        self.inner.pending.load(Ordering::Acquire)
    }
}

pub(crate) fn token_from_bytes(b: &[u8]) -> Result<DeviceToken, SpoolError> {
    DeviceToken::from_bytes(b).map_err(|_| SpoolError::Corrupt("stored token"))
}

pub(crate) fn decode_id(b: &[u8]) -> Result<ApnsId, SpoolError> {
    id_from_bytes(b).map_err(|_| SpoolError::Corrupt("stored id"))
}

/// One dead token, as the feedback endpoint lists them.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedbackEntry {
    pub token: DeviceToken,
    pub reason: Reason,
    pub since: SystemTime,
}

impl SqliteSpool {
    /// Many notifications at once (unknown ids are left out), in one blocking read.
    pub async fn get_many(&self, ids: Vec<ApnsId>) -> Result<Vec<NotificationRecord>, SpoolError> {
        self.read(move |c| {
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(r) = read_record(c, id)? {
                    out.push(r);
                }
            }
            Ok(out)
        })
        .await
    }

    /// Dead tokens of `app` registered at or after `since`, oldest first.
    pub async fn feedback(
        &self,
        app: &str,
        since: SystemTime,
        limit: usize,
    ) -> Result<Vec<FeedbackEntry>, SpoolError> {
        let app = app.to_owned();
        let since = super::to_ms(since);
        self.read(move |c| {
            let mut st = c
                .prepare_cached(
                    "SELECT token, reason, since FROM dead_tokens WHERE app = ?1 AND since >= ?2 \
                     ORDER BY since, token LIMIT ?3",
                )
                .map_err(sql("listing dead tokens"))?;
            let rows = st
                .query_map(params![app, since, limit as i64], |r| {
                    Ok((
                        r.get::<_, Vec<u8>>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                })
                .map_err(sql("listing dead tokens"))?;
            let mut out = Vec::new();
            for row in rows {
                let (token, reason, since) = row.map_err(sql("listing dead tokens"))?;
                out.push(FeedbackEntry {
                    token: token_from_bytes(&token)?,
                    reason: Reason::parse(&reason),
                    since: from_ms(since),
                });
            }
            Ok(out)
        })
        .await
    }

    /// Removes a dead token (the device registered again); `false` if it was not registered.
    pub async fn clear_dead_token(
        &self,
        app: &str,
        token: &DeviceToken,
    ) -> Result<bool, SpoolError> {
        let (app, token) = (app.to_owned(), token.clone());
        self.call(|reply| Command::ClearDeadToken { app, token, reply })
            .await
    }

    /// Notifications by app and state.
    pub async fn counts_by_app(&self) -> Result<Vec<(String, State, u64)>, SpoolError> {
        self.read(|c| {
            let mut st = c
                .prepare_cached(
                    "SELECT r.app, n.state, COUNT(*) FROM notifications n \
                     JOIN requests r ON r.id = n.request_id GROUP BY r.app, n.state",
                )
                .map_err(sql("counting notifications"))?;
            let rows = st
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                })
                .map_err(sql("counting notifications"))?;
            let mut out = Vec::new();
            for row in rows {
                let (app, s, n) = row.map_err(sql("counting notifications"))?;
                let s = State::from_i64(s).ok_or(SpoolError::Corrupt("unknown state"))?;
                out.push((app, s, n as u64));
            }
            Ok(out)
        })
        .await
    }
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
    pub app: String,
    pub payload: bytes::Bytes,
    pub push_type: apns::PushType,
    pub priority: Option<apns::Priority>,
    pub topic: Option<apns::Topic>,
    pub collapse_id: Option<apns::CollapseId>,
    pub apns_expiration: Option<apns::Expiration>,
}

impl SqliteSpool {
    /// The request a notification belongs to.
    pub async fn request_of(&self, id: ApnsId) -> Result<Option<StoredRequest>, SpoolError> {
        self.read(move |c| {
            let request_id: Option<i64> = c
                .prepare_cached("SELECT request_id FROM notifications WHERE id = ?1")
                .map_err(sql("reading a request"))?
                .query_row(params![&id.as_uuid().as_bytes()[..]], |r| r.get(0))
                .optional()
                .map_err(sql("reading a request"))?;
            match request_id {
                Some(rid) => Ok(read_request(c, rid)?.map(|(request, _)| request)),
                None => Ok(None),
            }
        })
        .await
    }
}

/// One page of [`SqliteSpool::ready_page`].
#[derive(Debug, Clone, Default)]
pub struct ReadyPage {
    pub rows: Vec<ReadyRow>,
    /// Where the next page starts; `None` at the end of the pass.
    pub cursor: Option<ReadyCursor>,
    /// Rows the page read, those it skipped as unsendable included.
    pub scanned: usize,
}

/// Runs one of the ready queries (`query`, described as `what`, with `args`) and reads its
/// rows into `out`, reading and decoding each request once (`cache` by request id). Answers
/// how many rows the query gave and the position after the last of them whose id could be
/// read, so that paging goes on past rows that cannot be sent: a notification whose request is
/// missing, or one that does not decode, is skipped with a warning — never the end of the
/// page, nor an error that would stop every later page at it.
fn read_ready(
    c: &Connection,
    (query, what): (&str, &'static str),
    args: &[&dyn rusqlite::ToSql],
    cache: &mut std::collections::HashMap<i64, (Arc<StoredRequest>, SystemTime)>,
    out: &mut Vec<ReadyRow>,
) -> Result<(usize, Option<ReadyCursor>), SpoolError> {
    let mut st = c.prepare_cached(query).map_err(sql(what))?;
    let mut rows = st.query(args).map_err(sql(what))?;
    let (mut scanned, mut last) = (0, None);
    while let Some(r) = rows.next().map_err(sql(what))? {
        scanned += 1;
        let id = r
            .get_ref(0)
            .ok()
            .and_then(|v| v.as_blob().ok())
            .and_then(|b| decode_id(b).ok());
        let position = id.map(|id| match r.get::<_, Option<i64>>(4).ok().flatten() {
            Some(due) => ReadyCursor::Due(due, id),
            None => ReadyCursor::Waiting(id),
        });
        last = position.or(last);
        match ready_row(c, r, position.unwrap_or_default(), cache) {
            Ok(Some(row)) => out.push(row),
            Ok(None) => {
                tracing::warn!(id = ?id, "a queued notification without its request is skipped");
            }
            Err(e) => {
                tracing::warn!(id = ?id, error = %crate::error_chain(&e), "a queued notification that cannot be read is skipped");
            }
        }
    }
    Ok((scanned, last))
}

/// One row of a ready query; `None` when its request is missing.
fn ready_row(
    c: &Connection,
    r: &rusqlite::Row<'_>,
    position: ReadyCursor,
    cache: &mut std::collections::HashMap<i64, (Arc<StoredRequest>, SystemTime)>,
) -> Result<Option<ReadyRow>, SpoolError> {
    let get = |e| SpoolError::Sql {
        what: "reading a ready row",
        source: e,
    };
    let request_id: i64 = r.get(3).map_err(get)?;
    let (request, expires_at) = match cache.get(&request_id) {
        Some((req, expires)) => (Arc::clone(req), *expires),
        None => {
            let Some((req, expires)) = read_request(c, request_id)? else {
                return Ok(None);
            };
            let req = Arc::new(req);
            cache.insert(request_id, (Arc::clone(&req), expires));
            (req, expires)
        }
    };
    let blob = |i| -> Result<&[u8], SpoolError> {
        r.get_ref(i)
            .and_then(|v| v.as_blob().map_err(rusqlite::Error::from))
            .map_err(get)
    };
    Ok(Some(ReadyRow {
        item: Sendable {
            id: decode_id(blob(0)?)?,
            token: token_from_bytes(blob(1)?)?,
            attempts: r.get(2).map_err(get)?,
            expires_at,
            request,
        },
        position,
    }))
}

/// One request by id, with its expiry.
fn read_request(
    c: &Connection,
    id: i64,
) -> Result<Option<(StoredRequest, SystemTime)>, SpoolError> {
    let row = c
        .prepare_cached(REQUEST_BY_ID)
        .map_err(sql("reading a request"))?
        .query_row(params![id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<u8>>(3)?,
                r.get::<_, Option<String>>(4)?,
                r.get::<_, Option<String>>(5)?,
                r.get::<_, Option<i64>>(6)?,
                r.get::<_, i64>(7)?,
            ))
        })
        .optional()
        .map_err(sql("reading a request"))?;
    let Some((app, payload, push_type, priority, topic, collapse, exp, expires)) = row else {
        return Ok(None);
    };
    let req = decode_request(app, payload, &push_type, priority, topic, collapse, exp)?;
    Ok(Some((req, from_ms(expires))))
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

impl SqliteSpool {
    /// Up to `limit` of `app`'s queued notifications that are due at `now`, from `cursor` on:
    /// those waiting for no time, through the pending index of that app alone, then its
    /// retries whose time has come. The page's `cursor` is where the next one goes on, `None`
    /// once the pass reached the end; every due notification is read once a pass, however
    /// many there are.
    pub async fn ready_page(
        &self,
        app: &str,
        cursor: ReadyCursor,
        now: SystemTime,
        limit: usize,
    ) -> Result<ReadyPage, SpoolError> {
        let app = app.to_owned();
        let now = super::to_ms(now);
        self.read(move |c| {
            let Some(app) = app_id(c, &app)? else {
                return Ok(ReadyPage::default());
            };
            let mut cache = std::collections::HashMap::new();
            let mut rows = Vec::new();
            let mut scanned = 0;
            let mut due_from = (i64::MIN, Vec::new());
            if let ReadyCursor::Start | ReadyCursor::Waiting(_) = cursor {
                let after = match cursor {
                    ReadyCursor::Waiting(id) => id.as_uuid().as_bytes().to_vec(),
                    _ => Vec::new(),
                };
                let query = (READY_WAITING, "paging ready notifications");
                let args = params![app, after, limit as i64];
                let (n, last) = read_ready(c, query, args, &mut cache, &mut rows)?;
                scanned += n;
                if n == limit {
                    return Ok(ReadyPage {
                        rows,
                        cursor: last,
                        scanned,
                    });
                }
            } else if let ReadyCursor::Due(t, id) = cursor {
                due_from = (t, id.as_uuid().as_bytes().to_vec());
            }
            let left = limit - scanned;
            let query = (READY_DUE, "paging due retries");
            let args = params![app, now, due_from.0, due_from.1, left as i64];
            let (n, last) = read_ready(c, query, args, &mut cache, &mut rows)?;
            scanned += n;
            let cursor = (n == left).then_some(last).flatten();
            Ok(ReadyPage {
                rows,
                cursor,
                scanned,
            })
        })
        .await
    }

    /// Every registered dead token (app, token), for the dispatcher's suppression set.
    pub async fn all_dead_tokens(&self) -> Result<Vec<(String, DeviceToken)>, SpoolError> {
        self.read(|c| {
            let mut st = c
                .prepare_cached("SELECT app, token FROM dead_tokens")
                .map_err(sql("reading dead tokens"))?;
            let rows = st
                .query_map([], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
                })
                .map_err(sql("reading dead tokens"))?;
            let mut out = Vec::new();
            for row in rows {
                let (app, t) = row.map_err(sql("reading dead tokens"))?;
                out.push((app, token_from_bytes(&t)?));
            }
            Ok(out)
        })
        .await
    }
}

impl SqliteSpool {
    /// The earliest due time after `now` of `app`'s queued notifications waiting for a retry.
    pub async fn next_due(
        &self,
        app: &str,
        now: SystemTime,
    ) -> Result<Option<SystemTime>, SpoolError> {
        let app = app.to_owned();
        let now = super::to_ms(now);
        self.read(move |c| {
            let Some(app) = app_id(c, &app)? else {
                return Ok(None);
            };
            c.prepare_cached(NEXT_DUE)
                .map_err(sql("reading the next due time"))?
                .query_row(params![app, now], |r| r.get::<_, Option<i64>>(0))
                .map(|t| t.map(from_ms))
                .map_err(sql("reading the next due time"))
        })
        .await
    }
}

/// The number of app `name`; `None` for an app that never had a notification.
fn app_id(c: &Connection, name: &str) -> Result<Option<i64>, SpoolError> {
    c.prepare_cached(APP_ID)
        .map_err(sql("reading an app's number"))?
        .query_row(params![name], |r| r.get(0))
        .optional()
        .map_err(sql("reading an app's number"))
}

/// A request's stored columns back into values.
fn decode_request(
    app: String,
    payload: Vec<u8>,
    push_type: &str,
    priority: Option<u8>,
    topic: Option<String>,
    collapse_id: Option<String>,
    apns_expiration: Option<i64>,
) -> Result<StoredRequest, SpoolError> {
    let bad = |_| SpoolError::Corrupt("stored request headers");
    Ok(StoredRequest {
        app,
        payload: bytes::Bytes::from(payload),
        push_type: apns::PushType::parse(push_type).map_err(bad)?,
        priority: priority
            .map(apns::Priority::from_u8)
            .transpose()
            .map_err(bad)?,
        topic: topic
            .as_deref()
            .map(apns::Topic::parse)
            .transpose()
            .map_err(bad)?,
        collapse_id: collapse_id
            .as_deref()
            .map(apns::CollapseId::parse)
            .transpose()
            .map_err(bad)?,
        apns_expiration: apns_expiration.map(|e| apns::Expiration::from_unix(e.max(0) as u64)),
    })
}

/// One notification with its request's times, on the read connection.
fn read_record(c: &Connection, id: ApnsId) -> Result<Option<NotificationRecord>, SpoolError> {
    let row = c
        .prepare_cached(
            "SELECT n.token, n.state, n.attempts, n.status, n.reason, r.created_at, \
             n.updated_at, r.send_at, r.expires_at, r.app FROM notifications n \
             JOIN requests r ON r.id = n.request_id WHERE n.id = ?1",
        )
        .map_err(sql("reading a notification"))?
        .query_row(params![&id.as_uuid().as_bytes()[..]], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, u32>(2)?,
                r.get::<_, Option<u16>>(3)?,
                r.get::<_, Option<String>>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, i64>(6)?,
                r.get::<_, Option<i64>>(7)?,
                r.get::<_, i64>(8)?,
                r.get::<_, String>(9)?,
            ))
        })
        .optional()
        .map_err(sql("reading a notification"))?;
    let Some((token, state, attempts, status, reason, created, updated, send_at, expires, app)) =
        row
    else {
        return Ok(None);
    };
    Ok(Some(NotificationRecord {
        id,
        app,
        token: token_from_bytes(&token)?,
        state: State::from_i64(state).ok_or(SpoolError::Corrupt("unknown state"))?,
        attempts,
        status,
        reason: reason.as_deref().map(Reason::parse),
        created_at: from_ms(created),
        updated_at: from_ms(updated),
        send_at: send_at.map(from_ms),
        expires_at: from_ms(expires),
    }))
}

impl SqliteSpool {
    /// Notifications not yet final, by state (read through the index of pending rows).
    pub async fn pending_counts(&self) -> Result<Vec<(State, u64)>, SpoolError> {
        self.read(|c| count_by_state(c, PENDING_COUNTS)).await
    }
}

/// Runs a `SELECT state, COUNT(*) ... GROUP BY state` query.
fn count_by_state(c: &Connection, query: &str) -> Result<Vec<(State, u64)>, SpoolError> {
    let mut st = c
        .prepare_cached(query)
        .map_err(sql("counting notifications"))?;
    let rows = st
        .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))
        .map_err(sql("counting notifications"))?;
    let mut out = Vec::new();
    for row in rows {
        let (s, n) = row.map_err(sql("counting notifications"))?;
        out.push((
            State::from_i64(s).ok_or(SpoolError::Corrupt("unknown state"))?,
            n as u64,
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod plans {
    use super::writer::{
        CLAIM_DUE, COMPLETE, PRUNE_FINISHED, REQUEST_GONE, REQUEST_LOSES, REQUEUE_IN_FLIGHT,
    };
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
        for query in [
            CLAIM_DUE,
            REQUEUE_IN_FLIGHT,
            COMPLETE,
            PRUNE_FINISHED,
            REQUEST_LOSES,
            REQUEST_GONE,
            READY_WAITING,
            READY_DUE,
            REQUEST_BY_ID,
            NEXT_DUE,
            APP_ID,
            super::writer::APP_IDS,
            PENDING_COUNTS,
        ] {
            let steps = plan(&c, query);
            // The scheduler's statements read one app's rows, not every app's.
            if [CLAIM_DUE, READY_WAITING, READY_DUE, NEXT_DUE].contains(&query) {
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
    }
}
