//! The embedded backend: one SQLite file in WAL mode with `synchronous=FULL` (a commit survives
//! power loss), a writer thread that owns the write connection, and a read connection used from
//! blocking tasks.
//!
//! - `schema`: the tables, the migrations between versions and the statements of every pass,
//!   with the test that each goes through an index.
//! - `writer`: the write connection's thread and its group commit; `writes`: what each of its
//!   commands writes.
//! - `reads`: the queries of the read connection; `decode`: stored columns back into values.

mod bounces;
mod decode;
mod export;
mod files;
mod reads;
mod schema;
mod writer;
mod writes;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use apns::{ApnsId, DeviceToken, Reason};
use rusqlite::{Connection, OpenFlags};
use tokio::sync::{mpsc, oneshot};

use self::export::copied_to;
pub(crate) use self::export::{copied, export, mark_copied};
use self::writer::Command;
use super::idempotency::{Enqueued, IdempotencyKey};
use super::{
    AttemptRecord, Completion, DeadToken, FeedbackEntry, NewRequest, NotificationRecord,
    PendingRow, ReadyCursor, ReadyPage, RecoveryReport, Spool, SpoolError, State, StoredRequest,
    SubmitError, TokenHistory, to_ms,
};

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
    /// How long an idempotency key is remembered (`[storage] idempotency_window_s`).
    pub idempotency_window: std::time::Duration,
    /// The files' mode (`[storage] mode`): they hold tokens and payloads.
    pub mode: u32,
    /// How many of the newest notifications a token's lookup reads at most
    /// ([`TOKEN_SEARCH_LIMIT`](crate::spool::TOKEN_SEARCH_LIMIT); lower in tests).
    pub token_search_limit: usize,
}

impl Default for SpoolOptions {
    fn default() -> Self {
        SpoolOptions {
            max_pending: 10_000_000,
            channel_capacity: 4096,
            power_safe: true,
            idempotency_window: std::time::Duration::from_secs(86_400),
            mode: 0o600,
            token_search_limit: crate::spool::TOKEN_SEARCH_LIMIT,
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
    /// To the writer thread; bounded, so a slow disk slows submitters instead of growing memory.
    commands: mpsc::Sender<Command>,
    /// Notifications not yet final; kept by the writer after each commit.
    pending: Arc<AtomicU64>,
    max_pending: u64,
    /// The read connection. A std mutex, taken only inside blocking tasks.
    reader: Arc<Mutex<Connection>>,
    /// A read connection for the searches operators run by hand (a token's notifications walk
    /// up to a million rows): on the reader, they would hold up the scheduler's pages.
    lookup: Arc<Mutex<Connection>>,
    /// One search at a time: others wait here, not on a blocking thread of their own.
    searches: Arc<tokio::sync::Semaphore>,
    token_search_limit: usize,
    writer: Arc<writer::WriterState>,
    /// An exclusive `flock` on `<file>.lock` beside the spool, held until the spool closes: a
    /// second gateway (or `pushgate db copy`) on the same file is refused instead of sending
    /// the same work. A file of its own, never the database: closing any descriptor of the
    /// database would drop SQLite's own `fcntl` locks on it.
    owner: Mutex<Option<std::fs::File>>,
}

impl SqliteSpool {
    /// Opens (creating if needed) the spool at `path` and starts its writer thread.
    pub fn open(path: &Path, options: SpoolOptions) -> Result<SqliteSpool, SpoolError> {
        let open_err = |source| SpoolError::Open {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            files::make_dir(dir, options.mode)?;
        }
        let owner = hold(path)?;
        files::restrict(path, options.mode)?;
        let conn = Connection::open(path).map_err(open_err)?;
        if let Some(to) = copied_to(&conn).map_err(open_err)? {
            return Err(SpoolError::Io {
                what: format!(
                    "the spool at {} was copied to PostgreSQL ({to}): serving it too would send \
                     its notifications twice (drop its table copied_to_postgres to serve it anyway)",
                    path.display()
                ),
                source: std::io::Error::from(std::io::ErrorKind::AlreadyExists),
            });
        }
        let sync = if options.power_safe { "FULL" } else { "NORMAL" };
        // A page cache of 8 MiB per connection: the hot part of the notifications table stays
        // in SQLite's own cache instead of being read back from the OS page by page.
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync}; PRAGMA busy_timeout = 5000; \
             PRAGMA cache_size = -8192;"
        ))
        .map_err(open_err)?;
        schema::migrate(&conn, path)?;
        let pending: u64 = conn
            .query_row(
                "SELECT COUNT(*) FROM notifications WHERE state < 3",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map_err(open_err)? as u64;
        let read_only = || {
            Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(open_err)
        };
        let reader = read_only()?;
        reader
            .execute_batch("PRAGMA busy_timeout = 5000; PRAGMA cache_size = -8192;")
            .map_err(open_err)?;
        // SQLite's default cache (2 MiB): a search passes over the rows once.
        let lookup = read_only()?;
        lookup
            .execute_batch("PRAGMA busy_timeout = 5000;")
            .map_err(open_err)?;
        let pending = Arc::new(AtomicU64::new(pending));
        let (tx, rx) = mpsc::channel(options.channel_capacity.max(1));
        let writer_pending = Arc::clone(&pending);
        let max_pending = options.max_pending;
        let writer = Arc::new(writer::WriterState {
            idempotency_window: options.idempotency_window,
            ..writer::WriterState::default()
        });
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
                commands: tx,
                pending,
                max_pending,
                reader: Arc::new(Mutex::new(reader)),
                lookup: Arc::new(Mutex::new(lookup)),
                searches: Arc::new(tokio::sync::Semaphore::new(1)),
                token_search_limit: options.token_search_limit,
                writer,
                owner: Mutex::new(Some(owner)),
            }),
        })
    }

    /// Fault injection for tests: while `fail` is set, every transaction that writes fails at
    /// its commit with `SQLITE_FULL` (as on a full disk) and is rolled back. Never set by the
    /// gateway itself.
    #[doc(hidden)]
    pub fn inject_write_failures(&self, fail: bool) {
        self.inner.writer.fail_writes.store(fail, Ordering::Relaxed);
    }

    async fn call<T>(
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

    /// Hands a batch to the writer and waits for its commit.
    async fn send_enqueue(
        &self,
        batch: Vec<NewRequest>,
        key: Option<IdempotencyKey>,
    ) -> Result<Enqueued, SubmitError> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .commands
            .send(Command::Enqueue {
                batch,
                key,
                reply: tx,
            })
            .await
            .map_err(|_| SubmitError::Unavailable(SpoolError::WriterGone))?;
        rx.await
            .map_err(|_| SubmitError::Unavailable(SpoolError::WriterGone))?
    }

    /// Runs `f` with the read connection on a blocking thread.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, SpoolError> + Send + 'static,
    ) -> Result<T, SpoolError> {
        Self::read_on(Arc::clone(&self.inner.reader), f).await
    }

    /// Runs `f` with the lookup connection on a blocking thread, one search at a time (the
    /// turn is kept until the search ends, even if its caller went away).
    async fn search<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, SpoolError> + Send + 'static,
    ) -> Result<T, SpoolError> {
        let turn = Arc::clone(&self.inner.searches)
            .acquire_owned()
            .await
            .map_err(|_| SpoolError::WriterGone)?;
        Self::read_on(Arc::clone(&self.inner.lookup), move |c| {
            let _turn = turn;
            f(c)
        })
        .await
    }

    async fn read_on<T: Send + 'static>(
        reader: Arc<Mutex<Connection>>,
        f: impl FnOnce(&Connection) -> Result<T, SpoolError> + Send + 'static,
    ) -> Result<T, SpoolError> {
        tokio::task::spawn_blocking(move || {
            let conn = reader.lock().expect("the reader lock is never poisoned");
            f(&conn)
        })
        .await
        .map_err(|_| SpoolError::WriterGone)?
    }
}

fn sql(what: &'static str) -> impl FnOnce(rusqlite::Error) -> SpoolError {
    move |source| SpoolError::Sql { what, source }
}

impl Spool for SqliteSpool {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn enqueue(&self, batch: Vec<NewRequest>) -> Result<Vec<NewRequest>, SubmitError> {
        let rows: u64 = batch.iter().map(|r| r.len() as u64).sum();
        let pending = self.inner.pending.load(Ordering::Acquire);
        if pending + rows > self.inner.max_pending {
            return Err(SubmitError::Full {
                pending,
                limit: self.inner.max_pending,
            });
        }
        match self.send_enqueue(batch, None).await? {
            Enqueued::Stored(batch) => Ok(batch),
            Enqueued::Replayed(_) => Err(SubmitError::Unavailable(SpoolError::Corrupt(
                "a replay answered a submission without a key",
            ))),
        }
    }

    async fn enqueue_once(
        &self,
        batch: Vec<NewRequest>,
        key: IdempotencyKey,
    ) -> Result<Enqueued, SubmitError> {
        // No early refusal when full: the writer answers a replay first, which stores nothing.
        self.send_enqueue(batch, Some(key)).await
    }

    async fn replay_of(&self, key: &IdempotencyKey) -> Result<Option<Vec<ApnsId>>, SpoolError> {
        let key = key.clone();
        let window = self.inner.writer.idempotency_window;
        self.read(move |c| reads::replay_of(c, &key, window)).await
    }

    fn pending(&self) -> u64 {
        self.inner.pending.load(Ordering::Acquire)
    }

    fn max_pending(&self) -> u64 {
        self.inner.max_pending
    }

    async fn recover(&self) -> Result<RecoveryReport, SpoolError> {
        let start = Instant::now();
        let requeued = self
            .call(|reply| Command::RequeueInFlight { reply })
            .await?;
        Ok(RecoveryReport {
            requeued,
            pending: self.pending(),
            elapsed: start.elapsed(),
        })
    }

    async fn claim_due(&self, now: SystemTime, limit: usize) -> Result<Vec<ApnsId>, SpoolError> {
        self.call(|reply| Command::ClaimDue { now, limit, reply })
            .await
    }

    async fn ready_page(
        &self,
        app: &str,
        cursor: ReadyCursor,
        now: SystemTime,
        limit: usize,
    ) -> Result<ReadyPage, SpoolError> {
        let (app, now) = (app.to_owned(), to_ms(now));
        self.read(move |c| reads::ready_page(c, &app, cursor, now, limit))
            .await
    }

    async fn next_due(&self, app: &str, now: SystemTime) -> Result<Option<SystemTime>, SpoolError> {
        let (app, now) = (app.to_owned(), to_ms(now));
        self.read(move |c| reads::next_due(c, &app, now)).await
    }

    async fn request_of(&self, id: ApnsId) -> Result<Option<StoredRequest>, SpoolError> {
        self.read(move |c| reads::request_of(c, id)).await
    }

    async fn complete(
        &self,
        done: Vec<Completion>,
        dead: Vec<DeadToken>,
    ) -> Result<(), SpoolError> {
        self.call(|reply| Command::Complete { done, dead, reply })
            .await
    }

    async fn bounces_due(
        &self,
        now: SystemTime,
        cutoff: SystemTime,
        limit: usize,
    ) -> Result<Vec<crate::spool::DueBounce>, SpoolError> {
        let (now, cutoff) = (to_ms(now), to_ms(cutoff));
        self.read(move |c| bounces::due(c, now, cutoff, limit))
            .await
    }

    async fn settle_bounce(
        &self,
        origin: i64,
        _lease: i64,
        ids: Vec<ApnsId>,
        how: crate::spool::BounceSettle,
    ) -> Result<bool, SpoolError> {
        // One gateway owns the file: no lease to check.
        self.call(|reply| Command::SettleBounce {
            origin,
            ids,
            how,
            reply,
        })
        .await
        .map(|()| true)
    }

    async fn bounces_waiting(&self) -> Result<u64, SpoolError> {
        self.read(bounces::waiting).await
    }

    async fn waiting_page(
        &self,
        app: &str,
        cursor: crate::spool::WaitingCursor,
        limit: usize,
    ) -> Result<crate::spool::WaitingPage, SpoolError> {
        let app = app.to_owned();
        self.search(move |c| reads::waiting_page(c, &app, cursor, limit))
            .await
    }

    /// (`mine` means nothing here: one gateway holds the whole file.)
    async fn cancel_waiting(
        &self,
        app: &str,
        ids: Vec<ApnsId>,
        _mine: bool,
    ) -> Result<Vec<ApnsId>, SpoolError> {
        if ids.is_empty() {
            return Ok(ids);
        }
        let app = app.to_owned();
        self.call(|reply| Command::CancelWaiting { app, ids, reply })
            .await
    }

    async fn request_summary(
        &self,
        id: crate::spool::RequestId,
    ) -> Result<Option<crate::spool::RequestSummary>, SpoolError> {
        self.read(move |c| reads::request_summary(c, id)).await
    }

    async fn app_pauses(&self) -> Result<Vec<crate::spool::AppPause>, SpoolError> {
        self.read(reads::app_pauses).await
    }

    async fn set_app_pause(
        &self,
        app: &str,
        pause: Option<crate::spool::AppPause>,
    ) -> Result<bool, SpoolError> {
        let app = app.to_owned();
        self.call(|reply| Command::SetPause { app, pause, reply })
            .await
    }

    async fn register_dead_token(&self, dead: DeadToken) -> Result<(), SpoolError> {
        self.call(|reply| Command::DeadToken { dead, reply }).await
    }

    async fn clear_dead_token(&self, app: &str, token: &DeviceToken) -> Result<bool, SpoolError> {
        let (app, token) = (app.to_owned(), token.clone());
        self.call(|reply| Command::ClearDeadToken { app, token, reply })
            .await
    }

    async fn all_dead_tokens(&self) -> Result<Vec<(String, DeviceToken)>, SpoolError> {
        self.read(reads::all_dead_tokens).await
    }

    async fn dead_token(
        &self,
        app: &str,
        token: &DeviceToken,
    ) -> Result<Option<(Reason, SystemTime)>, SpoolError> {
        let (app, token) = (app.to_owned(), token.clone());
        self.read(move |c| reads::dead_token(c, &app, &token)).await
    }

    async fn feedback(
        &self,
        app: &str,
        since: SystemTime,
        limit: usize,
    ) -> Result<Vec<FeedbackEntry>, SpoolError> {
        let (app, since) = (app.to_owned(), to_ms(since));
        self.read(move |c| reads::feedback(c, &app, since, limit))
            .await
    }

    async fn get(&self, id: ApnsId) -> Result<Option<NotificationRecord>, SpoolError> {
        self.read(move |c| reads::read_record(c, id)).await
    }

    async fn get_many(&self, ids: Vec<ApnsId>) -> Result<Vec<NotificationRecord>, SpoolError> {
        self.read(move |c| reads::records(c, ids)).await
    }

    async fn attempts(&self, id: ApnsId) -> Result<Vec<AttemptRecord>, SpoolError> {
        self.read(move |c| reads::attempts_of(c, id)).await
    }

    async fn history(
        &self,
        id: ApnsId,
    ) -> Result<Option<(NotificationRecord, Vec<AttemptRecord>)>, SpoolError> {
        // One read of both, in one transaction: the record and its attempts agree.
        self.read(move |c| {
            let tx = c
                .unchecked_transaction()
                .map_err(sql("reading a history"))?;
            let Some(record) = reads::read_record(&tx, id)? else {
                return Ok(None);
            };
            Ok(Some((record, reads::attempts_of(&tx, id)?)))
        })
        .await
    }

    async fn token_history(
        &self,
        app: &str,
        token: &DeviceToken,
        limit: usize,
    ) -> Result<TokenHistory, SpoolError> {
        let (app, token) = (app.to_owned(), token.clone());
        let most = self.inner.token_search_limit;
        self.search(move |c| reads::token_history(c, &app, &token, limit, most))
            .await
    }

    async fn pending_page(
        &self,
        after: Option<ApnsId>,
        limit: usize,
    ) -> Result<Vec<PendingRow>, SpoolError> {
        self.read(move |c| reads::pending_page(c, after, limit))
            .await
    }

    async fn counts(&self) -> Result<Vec<(State, u64)>, SpoolError> {
        self.read(|c| reads::counts(c, false)).await
    }

    async fn pending_counts(&self) -> Result<Vec<(State, u64)>, SpoolError> {
        self.read(|c| reads::counts(c, true)).await
    }

    async fn counts_by_app(&self) -> Result<Vec<(String, State, u64)>, SpoolError> {
        self.read(reads::counts_by_app).await
    }

    async fn prune(&self, before: SystemTime, limit: usize) -> Result<usize, SpoolError> {
        self.call(|reply| Command::Prune {
            before,
            limit,
            reply,
        })
        .await
    }

    /// A flush would not tell: an empty transaction commits on a full disk.
    async fn probe_write(&self) -> Result<(), SpoolError> {
        self.call(|reply| Command::Probe { reply }).await
    }

    async fn flush(&self) -> Result<(), SpoolError> {
        self.call(|reply| Command::Flush { reply }).await
    }

    /// Stops the writer too; later calls on any clone fail with [`SpoolError::WriterGone`].
    async fn close(&self) -> Result<(), SpoolError> {
        // The read connection closes first, so that the writer's is the file's last: closing
        // it, SQLite removes `-wal` and `-shm` (a read-only connection closing last could
        // not), and a clean stop leaves `spool.db` alone. Later reads find an empty database
        // and fail, as every call after close does.
        let reader = Arc::clone(&self.inner.reader);
        let closed_reader = tokio::task::spawn_blocking(move || {
            let mut conn = reader.lock().expect("the reader lock is never poisoned");
            let old = std::mem::replace(
                &mut *conn,
                Connection::open_in_memory().map_err(sql("closing the spool's reader"))?,
            );
            old.close().map_err(|(_, source)| SpoolError::Sql {
                what: "closing the spool's reader",
                source,
            })
        })
        .await
        .map_err(|_| SpoolError::WriterGone)?;
        let stopped = self.call(|reply| Command::Stop { reply }).await;
        drop(self.inner.owner.lock().expect("owner lock").take());
        stopped.and(closed_reader)
    }

    fn commits(&self) -> u64 {
        self.inner.writer.commits.load(Ordering::Relaxed)
    }
}

/// The schema version of the file at `path` without changing it (`None`: no file yet), and
/// the version this pushgate writes.
pub(crate) fn schema_version(path: &Path) -> Result<(Option<i64>, i64), SpoolError> {
    if !path.exists() {
        return Ok((None, schema::SCHEMA_VERSION));
    }
    let open_err = |source| SpoolError::Open {
        path: path.display().to_string(),
        source,
    };
    let c =
        Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(open_err)?;
    let v: i64 = c
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(open_err)?;
    Ok((Some(v), schema::SCHEMA_VERSION))
}

/// Takes the exclusive `flock` (on `<path>.lock`) that says a gateway uses the spool at `path`.
pub(crate) fn hold(path: &Path) -> Result<std::fs::File, SpoolError> {
    let io = |what: String| move |source| SpoolError::Io { what, source };
    let mut lock = path.as_os_str().to_owned();
    lock.push(".lock");
    let lock = Path::new(&lock);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock)
        .map_err(io(format!("opening {}", lock.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(SpoolError::Io {
            what: format!(
                "another gateway uses the spool at {}: stop it first",
                path.display()
            ),
            source: std::io::Error::from(std::io::ErrorKind::WouldBlock),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(io(format!("locking {}", path.display()))(e)),
    }
}
