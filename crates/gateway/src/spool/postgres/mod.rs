//! The PostgreSQL backend, for one gateway (docs/postgres.md): the same semantics as the SQLite
//! spool — commit before the answer, a request stored whole or not at all, per-id status,
//! scheduled sends, retries with due times, expiry, the dead-token registry, retention in
//! chunks, recovery at start — on a database the team already runs, with its replication and
//! failover.
//!
//! Connections come from a bounded pool (deadpool); every operation takes one for its
//! statements and gives it back, so nothing holds a connection across a send to Apple. A
//! transaction spans only the statements of one operation. TLS is rustls (Mozilla's roots and
//! the configured `ca_file`), as everywhere else.
//!
//! - `schema`: the migrations and the statements of every pass; `reads`: the queries and the
//!   decoding of their rows.

mod connect;
mod copy;
mod reads;
mod schema;
mod writes;

use connect::{CONNECT_TIMEOUT, exclusive, keep_lock, tls_config};
pub(crate) use connect::{inspect, migrate, postgres_config};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use apns::{ApnsId, DeviceToken, Reason};
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};

use super::idempotency::{self, Enqueued, IdempotencyKey, Seen};
use super::{
    Completion, DeadToken, FeedbackEntry, NewRequest, NotificationRecord, PendingRow, ReadyCursor,
    ReadyPage, RecoveryReport, Spool, SpoolError, SpoolOptions, State, StoredRequest, SubmitError,
    to_ms,
};
use crate::config::Postgres;
use schema::{
    CLAIM_DUE, COMPLETE, KEYS_FORGET, PRUNE_FINISHED, REGISTER_DEAD, REQUEST_GONE, REQUEST_LOSES,
    REQUEUE_IN_FLIGHT,
};

/// The PostgreSQL spool. Cheap to clone.
#[derive(Clone)]
pub(crate) struct PgSpool {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    /// The connection holding [`schema::GATEWAY_LOCK`]; dropped (and the lock with it) when the
    /// spool closes. A std mutex, held to swap it.
    lock: std::sync::Mutex<Option<tokio_postgres::Client>>,
    /// Takes the lock again when its connection is lost (`keep_lock`); stopped at close.
    keeper: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// `host:port/database`: what errors and logs name (never the URL).
    target: String,
    /// Notifications not yet final, as this gateway has counted them.
    pending: AtomicU64,
    max_pending: u64,
    /// How long an idempotency key is remembered.
    idempotency_window: std::time::Duration,
    commits: AtomicU64,
}

impl std::fmt::Debug for PgSpool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSpool")
            .field("target", &self.inner.target)
            .finish_non_exhaustive()
    }
}

/// An error from PostgreSQL while doing `what` on `target`.
fn pg(target: &str, what: &str) -> impl FnOnce(tokio_postgres::Error) -> SpoolError {
    let what = format!("{what} ({target})");
    move |e| SpoolError::Postgres {
        what,
        source: Box::new(e),
    }
}

impl PgSpool {
    /// Connects, migrates the schema (under the advisory lock) and counts what is pending.
    pub(crate) async fn open(
        config: &Postgres,
        options: SpoolOptions,
    ) -> Result<PgSpool, SpoolError> {
        let target = config.target.clone();
        let mut pg_config = postgres_config(config.url.expose())
            .map_err(pg(&target, "reading the PostgreSQL URL"))?;
        // Added to the URL's own `options` (a `search_path`, say), not instead of them.
        let session = format!(
            "{} -c statement_timeout={}",
            pg_config.get_options().unwrap_or_default(),
            config.statement_timeout.as_millis()
        );
        pg_config.options(session.trim_start());
        pg_config.tcp_user_timeout(CONNECT_TIMEOUT);
        // An idle connection (the gateway lock's) whose path went silent is noticed in about
        // half a minute, not the kernel's two hours.
        pg_config.keepalives_idle(std::time::Duration::from_secs(10));
        pg_config.keepalives_interval(std::time::Duration::from_secs(5));
        pg_config.keepalives_retries(3);
        pg_config.application_name("pushgate");
        let (lock, lock_conn) = exclusive(&pg_config, config).await?;
        let lock_config = pg_config.clone();
        let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls_config(config)?);
        let manager = Manager::from_config(
            pg_config,
            tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| SpoolError::Postgres {
                what: format!("making the connection pool ({target})"),
                source: Box::new(e),
            })?;
        let spool = PgSpool {
            inner: Arc::new(Inner {
                pool,
                lock: std::sync::Mutex::new(Some(lock)),
                keeper: std::sync::Mutex::new(None),
                target,
                pending: AtomicU64::new(0),
                max_pending: options.max_pending,
                idempotency_window: options.idempotency_window,
                commits: AtomicU64::new(0),
            }),
        };
        let keeper = tokio::spawn(keep_lock(
            Arc::downgrade(&spool.inner),
            lock_conn,
            lock_config,
            config.clone(),
        ));
        *spool.inner.keeper.lock().expect("keeper mutex") = Some(keeper);
        let mut c = spool.conn().await?;
        schema::migrate(&mut c, &spool.inner.target).await?;
        let pending: i64 = c
            .query_one("SELECT count(*) FROM notifications WHERE state < 3", &[])
            .await
            .map_err(spool.err("counting pending notifications"))?
            .get(0);
        spool
            .inner
            .pending
            .store(u64::try_from(pending).unwrap_or(0), Ordering::Release);
        Ok(spool)
    }

    /// A connection from the pool.
    async fn conn(&self) -> Result<Object, SpoolError> {
        self.inner
            .pool
            .get()
            .await
            .map_err(|e| SpoolError::Postgres {
                what: format!("connecting to PostgreSQL ({})", self.inner.target),
                source: Box::new(e),
            })
    }

    fn err(&self, what: &str) -> impl FnOnce(tokio_postgres::Error) -> SpoolError {
        pg(&self.inner.target, what)
    }

    /// `n` fewer pending notifications (never below zero).
    /// Reserves room for `n` pending notifications before their insert (given back if it
    /// fails), so that concurrent submits cannot all pass the limit at once; `Err` with the
    /// count when there is none.
    fn reserve(&self, n: u64) -> Result<(), u64> {
        let limit = self.inner.max_pending;
        self.inner
            .pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
                p.checked_add(n).filter(|&total| total <= limit)
            })
            .map(|_| ())
    }

    fn release_pending(&self, n: u64) {
        let _ = self
            .inner
            .pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
                Some(p.saturating_sub(n))
            });
    }

    fn committed(&self) {
        self.inner.commits.fetch_add(1, Ordering::Relaxed);
    }
}

impl Spool for PgSpool {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn enqueue(&self, batch: Vec<NewRequest>) -> Result<Vec<NewRequest>, SubmitError> {
        let rows: u64 = batch.iter().map(|r| r.len() as u64).sum();
        let limit = self.inner.max_pending;
        self.reserve(rows)
            .map_err(|pending| SubmitError::Full { pending, limit })?;
        if let Err(e) = self.insert(&batch, None).await {
            self.release_pending(rows);
            return Err(SubmitError::Unavailable(e));
        }
        Ok(batch)
    }

    async fn replay_of(&self, key: &IdempotencyKey) -> Result<Option<Vec<ApnsId>>, SpoolError> {
        let c = self.conn().await?;
        let now = to_ms(SystemTime::now());
        Ok(match self.key_seen(&c, key, now).await? {
            Seen::Replay(ids) => Some(ids),
            Seen::Reused | Seen::Expired => None,
        })
    }

    async fn enqueue_once(
        &self,
        batch: Vec<NewRequest>,
        key: IdempotencyKey,
    ) -> Result<Enqueued, SubmitError> {
        let rows: u64 = batch.iter().map(|r| r.len() as u64).sum();
        let limit = self.inner.max_pending;
        let seen = match self.reserve(rows) {
            // Full: a replay is answered all the same (it stores nothing).
            Err(pending) => {
                let c = self.conn().await.map_err(SubmitError::Unavailable)?;
                let now = to_ms(SystemTime::now());
                match self.key_seen(&c, &key, now).await {
                    Ok(Seen::Expired) => Err(SubmitError::Full { pending, limit }),
                    other => other.map_err(SubmitError::Unavailable),
                }
            }
            Ok(()) => match self.insert(&batch, Some(&key)).await {
                Ok(None) => return Ok(Enqueued::Stored(batch)),
                Ok(Some(seen)) => {
                    self.release_pending(rows);
                    Ok(seen)
                }
                Err(e) => {
                    self.release_pending(rows);
                    Err(SubmitError::Unavailable(e))
                }
            },
        }?;
        match seen {
            Seen::Replay(ids) => Ok(Enqueued::Replayed(ids)),
            Seen::Reused => Err(SubmitError::KeyReused),
            Seen::Expired => Err(SubmitError::Unavailable(SpoolError::Corrupt(
                "an idempotency key neither taken nor remembered",
            ))),
        }
    }

    fn pending(&self) -> u64 {
        self.inner.pending.load(Ordering::Acquire)
    }

    fn max_pending(&self) -> u64 {
        self.inner.max_pending
    }

    async fn recover(&self) -> Result<RecoveryReport, SpoolError> {
        let start = Instant::now();
        let c = self.conn().await?;
        let requeued = c
            .execute(REQUEUE_IN_FLIGHT, &[&to_ms(SystemTime::now())])
            .await
            .map_err(self.err("requeueing notifications in flight"))?;
        self.committed();
        Ok(RecoveryReport {
            requeued: requeued as usize,
            pending: self.pending(),
            elapsed: start.elapsed(),
        })
    }

    async fn claim_due(&self, now: SystemTime, limit: usize) -> Result<Vec<ApnsId>, SpoolError> {
        let c = self.conn().await?;
        let st = c
            .prepare_cached(CLAIM_DUE)
            .await
            .map_err(self.err("claiming scheduled notifications"))?;
        let rows = c
            .query(&st, &[&to_ms(now), &(limit as i64)])
            .await
            .map_err(self.err("claiming scheduled notifications"))?;
        self.committed();
        Ok(rows
            .iter()
            .map(|r| ApnsId::from_uuid(r.get::<_, uuid::Uuid>(0)))
            .collect())
    }

    async fn ready_page(
        &self,
        app: &str,
        cursor: ReadyCursor,
        now: SystemTime,
        limit: usize,
    ) -> Result<ReadyPage, SpoolError> {
        let c = self.conn().await?;
        reads::ready_page(&c, &self.inner.target, app, cursor, to_ms(now), limit).await
    }

    async fn next_due(&self, app: &str, now: SystemTime) -> Result<Option<SystemTime>, SpoolError> {
        let c = self.conn().await?;
        reads::next_due(&c, &self.inner.target, app, to_ms(now)).await
    }

    async fn request_of(&self, id: ApnsId) -> Result<Option<StoredRequest>, SpoolError> {
        let c = self.conn().await?;
        reads::request_of(&c, &self.inner.target, id).await
    }

    async fn complete(
        &self,
        done: Vec<Completion>,
        dead: Vec<DeadToken>,
    ) -> Result<(), SpoolError> {
        let mut c = self.conn().await?;
        let tx = c
            .transaction()
            .await
            .map_err(self.err("beginning a transaction"))?;
        if !dead.is_empty() {
            let st = tx
                .prepare_cached(REGISTER_DEAD)
                .await
                .map_err(self.err("registering a dead token"))?;
            for d in &dead {
                tx.execute(
                    &st,
                    &[
                        &d.app,
                        &reads::token_bytes(&d.token),
                        &d.reason.as_str(),
                        &to_ms(d.since),
                    ],
                )
                .await
                .map_err(self.err("registering a dead token"))?;
            }
        }
        let ids: Vec<uuid::Uuid> = done.iter().map(|c| *c.id.as_uuid()).collect();
        let states: Vec<i16> = done.iter().map(|c| c.state as i16).collect();
        let attempts: Vec<i32> = done.iter().map(|c| c.attempts as i32).collect();
        let status: Vec<Option<i32>> = done.iter().map(|c| c.status.map(i32::from)).collect();
        let reasons: Vec<Option<String>> = done
            .iter()
            .map(|c| c.reason.as_ref().map(ToString::to_string))
            .collect();
        let due: Vec<Option<i64>> = done.iter().map(|c| c.due_at.map(to_ms)).collect();
        let now = to_ms(SystemTime::now());
        let st = tx
            .prepare_cached(COMPLETE)
            .await
            .map_err(self.err("recording outcomes"))?;
        let rows = tx
            .query(
                &st,
                &[&ids, &states, &attempts, &status, &reasons, &due, &now],
            )
            .await
            .map_err(self.err("recording outcomes"))?;
        tx.commit().await.map_err(self.err("committing outcomes"))?;
        self.committed();
        let finished = rows
            .iter()
            .filter(|r| r.get::<_, i16>(0) >= State::Delivered as i16)
            .count() as u64;
        self.release_pending(finished);
        Ok(())
    }

    async fn register_dead_token(&self, dead: DeadToken) -> Result<(), SpoolError> {
        self.complete(Vec::new(), vec![dead]).await
    }

    async fn clear_dead_token(&self, app: &str, token: &DeviceToken) -> Result<bool, SpoolError> {
        let c = self.conn().await?;
        let n = c
            .execute(
                "DELETE FROM dead_tokens WHERE app = $1 AND token = $2",
                &[&app, &reads::token_bytes(token)],
            )
            .await
            .map_err(self.err("clearing a dead token"))?;
        self.committed();
        Ok(n > 0)
    }

    async fn all_dead_tokens(&self) -> Result<Vec<(String, DeviceToken)>, SpoolError> {
        let c = self.conn().await?;
        reads::all_dead_tokens(&c, &self.inner.target).await
    }

    async fn dead_token(
        &self,
        app: &str,
        token: &DeviceToken,
    ) -> Result<Option<(Reason, SystemTime)>, SpoolError> {
        let c = self.conn().await?;
        reads::dead_token(&c, &self.inner.target, app, token).await
    }

    async fn feedback(
        &self,
        app: &str,
        since: SystemTime,
        limit: usize,
    ) -> Result<Vec<FeedbackEntry>, SpoolError> {
        let c = self.conn().await?;
        reads::feedback(&c, &self.inner.target, app, to_ms(since), limit).await
    }

    async fn get(&self, id: ApnsId) -> Result<Option<NotificationRecord>, SpoolError> {
        let c = self.conn().await?;
        Ok(reads::records(&c, &self.inner.target, &[id]).await?.pop())
    }

    async fn get_many(&self, ids: Vec<ApnsId>) -> Result<Vec<NotificationRecord>, SpoolError> {
        let c = self.conn().await?;
        reads::records(&c, &self.inner.target, &ids).await
    }

    async fn pending_page(
        &self,
        after: Option<ApnsId>,
        limit: usize,
    ) -> Result<Vec<PendingRow>, SpoolError> {
        let c = self.conn().await?;
        reads::pending_page(&c, &self.inner.target, after, limit).await
    }

    async fn counts(&self) -> Result<Vec<(State, u64)>, SpoolError> {
        let c = self.conn().await?;
        reads::counts(&c, &self.inner.target, false).await
    }

    async fn pending_counts(&self) -> Result<Vec<(State, u64)>, SpoolError> {
        let c = self.conn().await?;
        reads::counts(&c, &self.inner.target, true).await
    }

    async fn counts_by_app(&self) -> Result<Vec<(String, State, u64)>, SpoolError> {
        let c = self.conn().await?;
        reads::counts_by_app(&c, &self.inner.target).await
    }

    async fn prune(&self, before: SystemTime, limit: usize) -> Result<usize, SpoolError> {
        let before = to_ms(before);
        let first_id = first_id_at(before);
        let mut c = self.conn().await?;
        let tx = c
            .transaction()
            .await
            .map_err(self.err("beginning a transaction"))?;
        let forgotten =
            idempotency::forgotten_before(SystemTime::now(), self.inner.idempotency_window);
        let keys = tx
            .execute(KEYS_FORGET, &[&forgotten, &(limit as i64)])
            .await
            .map_err(self.err("pruning idempotency keys"))?;
        let rows = tx
            .query(PRUNE_FINISHED, &[&before, &(limit as i64), &first_id])
            .await
            .map_err(self.err("pruning finished notifications"))?;
        let mut gone = 0usize;
        for r in &rows {
            let (request, n): (i64, i64) = (r.get(0), r.get(1));
            gone += n as usize;
            let loses = tx
                .prepare_cached(REQUEST_LOSES)
                .await
                .map_err(self.err("pruning finished notifications"))?;
            let left: Option<i32> = tx
                .query_opt(&loses, &[&request, &(n as i32)])
                .await
                .map_err(self.err("pruning finished notifications"))?
                .map(|r| r.get(0));
            if left.is_some_and(|l| l <= 0) {
                tx.execute(REQUEST_GONE, &[&request])
                    .await
                    .map_err(self.err("pruning finished requests"))?;
            }
        }
        tx.commit().await.map_err(self.err("committing a prune"))?;
        self.committed();
        Ok(gone + keys as usize)
    }

    async fn probe_write(&self) -> Result<(), SpoolError> {
        let c = self.conn().await?;
        c.execute(
            "INSERT INTO health (id, checked_at) VALUES (1, $1) \
             ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at",
            &[&to_ms(SystemTime::now())],
        )
        .await
        .map_err(self.err("writing the health row"))?;
        self.committed();
        Ok(())
    }

    /// Every operation commits before it answers: nothing is waiting to be applied. Answers
    /// whether the spool still takes work (a closed one, or a database out of reach, does not).
    async fn flush(&self) -> Result<(), SpoolError> {
        self.conn().await.map(drop)
    }

    /// Closes the pool and gives up the gateway lock; later operations fail.
    async fn close(&self) -> Result<(), SpoolError> {
        self.inner.pool.close();
        let keeper = self.inner.keeper.lock().expect("keeper mutex").take();
        if let Some(k) = keeper {
            k.abort();
            let _ = k.await;
        }
        // Released before the connection goes, so that a gateway started right after this
        // one closed finds it free (dropping the client would end the session a little later).
        let client = self.inner.lock.lock().expect("lock mutex").take();
        if let Some(client) = client {
            let _ = client
                .execute("SELECT pg_advisory_unlock($1)", &[&schema::GATEWAY_LOCK])
                .await;
        }
        Ok(())
    }

    fn commits(&self) -> u64 {
        self.inner.commits.load(Ordering::Relaxed)
    }
}

/// The smallest UUIDv7 of millisecond `ms`: ids below it were created before `ms`.
fn first_id_at(ms: i64) -> uuid::Uuid {
    let mut id = [0u8; 16];
    id[..6].copy_from_slice(&ms.max(0).to_be_bytes()[2..]);
    uuid::Uuid::from_bytes(id)
}
