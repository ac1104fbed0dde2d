//! The PostgreSQL backend (docs/postgres.md): the same semantics as the SQLite spool — commit before the answer, a request stored whole or not at all, per-id status,
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
//!   decoding of their rows; `cluster`: several gateways on one database — registration,
//!   heartbeat, rescue, hand-back and the wake-ups.

mod bounces;
mod cluster;
mod connect;
mod copy;
mod reads;
mod schema;
mod writes;

use connect::{CONNECT_TIMEOUT, tls_config};
pub(crate) use connect::{inspect, migrate, postgres_config};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use apns::{ApnsId, DeviceToken, Reason};
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};

use super::idempotency::{self, Enqueued, IdempotencyKey, Seen};
use super::{
    AttemptRecord, Completion, DeadToken, FeedbackEntry, NewRequest, NotificationRecord,
    PendingRow, ReadyCursor, ReadyPage, RecoveryReport, Spool, SpoolError, SpoolOptions, State,
    StoredRequest, SubmitError, TokenHistory, to_ms,
};
use crate::config::Postgres;
use schema::{
    CLAIM_DUE, COMPLETE, KEYS_FORGET, NOT_MINE, PRUNE_FINISHED, REGISTER_DEAD, REQUEST_GONE,
    REQUEST_LOSES, REQUEUE_IN_FLIGHT, RETENTION_LOCK,
};

/// The PostgreSQL spool. Cheap to clone.
#[derive(Clone)]
pub(crate) struct PgSpool {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    /// This gateway among those sharing the database: the id its claims and outcomes carry.
    cluster: Arc<cluster::Registration>,
    /// `host:port/database`: what errors and logs name (never the URL).
    target: String,
    /// Notifications not yet final, as this gateway has counted them.
    pending: AtomicU64,
    max_pending: u64,
    /// How long an idempotency key is remembered.
    idempotency_window: std::time::Duration,
    commits: AtomicU64,
    /// One token search at a time.
    searches: tokio::sync::Semaphore,
    token_search_limit: usize,
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
        let session_config = pg_config.clone();
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
        let (registration, events) = cluster::registration(config);
        let spool = PgSpool {
            inner: Arc::new(Inner {
                pool,
                cluster: Arc::new(registration),
                target,
                pending: AtomicU64::new(0),
                max_pending: options.max_pending,
                idempotency_window: options.idempotency_window,
                commits: AtomicU64::new(0),
                searches: tokio::sync::Semaphore::new(1),
                token_search_limit: options.token_search_limit,
            }),
        };
        let mut c = spool.conn().await?;
        schema::migrate(&mut c, &spool.inner.target).await?;
        // Registered with its lock held, then the gateways long gone are rescued before
        // anything is read (one that died a moment ago is rescued once its heartbeat is late).
        let reg = &spool.inner.cluster;
        let mut session = cluster::open_session(&session_config, config, reg).await?;
        cluster::register(&session.client, reg, &spool.inner.target).await?;
        cluster::rescue(
            &mut session.client,
            reg,
            &spool.inner.target,
            &mut std::collections::HashSet::new(),
        )
        .await?;
        let task = tokio::spawn(cluster::run(
            Arc::downgrade(&spool.inner),
            session,
            session_config,
            config.clone(),
            events,
        ));
        *reg.task
            .lock()
            .expect("registration lock is never poisoned") = Some(task);
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

    async fn enqueue(&self, mut batch: Vec<NewRequest>) -> Result<Vec<NewRequest>, SubmitError> {
        let rows: u64 = batch.iter().map(|r| r.len() as u64).sum();
        let limit = self.inner.max_pending;
        self.reserve(rows)
            .map_err(|pending| SubmitError::Full { pending, limit })?;
        if let Err(e) = self.insert(&mut batch, None).await {
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
        mut batch: Vec<NewRequest>,
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
            Ok(()) => match self.insert(&mut batch, Some(&key)).await {
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
        if !rows.is_empty() {
            // Now queued and nobody's: every gateway serving their apps may take them.
            c.execute(&format!("NOTIFY {}", cluster::WORK), &[])
                .await
                .map_err(self.err("waking the other gateways"))?;
        }
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
        let me = self.inner.cluster.me();
        reads::ready_page(&c, &self.inner.target, app, cursor, to_ms(now), limit, me).await
    }

    async fn next_due(&self, app: &str, now: SystemTime) -> Result<Option<SystemTime>, SpoolError> {
        let c = self.conn().await?;
        let me = self.inner.cluster.me();
        reads::next_due(&c, &self.inner.target, app, to_ms(now), me).await
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
                // Sent at the commit: the other gateways suppress it too.
                tx.execute(
                    "SELECT pg_notify($1, $2)",
                    &[
                        &cluster::DEAD,
                        &cluster::dead_payload(true, &d.app, &d.token),
                    ],
                )
                .await
                .map_err(self.err("telling the other gateways of a dead token"))?;
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
        let conns: Vec<Option<i64>> = done.iter().map(|c| c.conn.map(|n| n as i64)).collect();
        let now = to_ms(SystemTime::now());
        let me = self.inner.cluster.me();
        let st = tx
            .prepare_cached(COMPLETE)
            .await
            .map_err(self.err("recording outcomes"))?;
        let rows = tx
            .query(
                &st,
                &[
                    &ids, &states, &attempts, &status, &reasons, &due, &now, &me, &conns,
                ],
            )
            .await
            .map_err(self.err("recording outcomes"))?;
        if rows.len() < ids.len() {
            // Some were final already (a duplicate send's outcome), or — what the log must
            // say — another gateway rescued them after this one was declared dead.
            let theirs: i64 = tx
                .query_one(NOT_MINE, &[&ids, &me])
                .await
                .map_err(self.err("recording outcomes"))?
                .get(0);
            if theirs > 0 {
                tracing::warn!(
                    notifications = theirs,
                    "outcomes not recorded: those notifications are no longer this gateway's \
                     (rescued by another after this one was declared dead); they are sent again"
                );
            }
        }
        tx.commit().await.map_err(self.err("committing outcomes"))?;
        self.committed();
        let finished = rows
            .iter()
            .filter(|r| r.get::<_, i16>(0) >= State::Delivered as i16)
            .count() as u64;
        self.release_pending(finished);
        Ok(())
    }

    async fn waiting_page(
        &self,
        app: &str,
        cursor: crate::spool::WaitingCursor,
        limit: usize,
    ) -> Result<crate::spool::WaitingPage, SpoolError> {
        let c = self.conn().await?;
        reads::waiting_page(&c, &self.inner.target, app, cursor, limit).await
    }

    async fn cancel_waiting(
        &self,
        app: &str,
        ids: Vec<ApnsId>,
        mine: bool,
    ) -> Result<Vec<ApnsId>, SpoolError> {
        if ids.is_empty() {
            return Ok(ids);
        }
        let mut c = self.conn().await?;
        let tx = c
            .transaction()
            .await
            .map_err(self.err("beginning a transaction"))?;
        let uuids: Vec<uuid::Uuid> = ids.iter().map(|i| *i.as_uuid()).collect();
        let now = to_ms(SystemTime::now());
        let me = self.inner.cluster.me();
        let st = tx
            .prepare_cached(schema::CANCEL)
            .await
            .map_err(self.err("cancelling notifications"))?;
        let rows = tx
            .query(&st, &[&uuids, &app, &me, &now, &mine])
            .await
            .map_err(self.err("cancelling notifications"))?;
        tx.commit().await.map_err(self.err("committing a cancel"))?;
        self.committed();
        self.release_pending(rows.len() as u64);
        Ok(rows
            .iter()
            .map(|r| ApnsId::from_uuid(r.get::<_, uuid::Uuid>(0)))
            .collect())
    }

    async fn request_summary(
        &self,
        id: crate::spool::RequestId,
    ) -> Result<Option<crate::spool::RequestSummary>, SpoolError> {
        let c = self.conn().await?;
        reads::request_summary(&c, &self.inner.target, id).await
    }

    async fn app_pauses(&self) -> Result<Vec<crate::spool::AppPause>, SpoolError> {
        let c = self.conn().await?;
        reads::app_pauses(&c, &self.inner.target).await
    }

    async fn set_app_pause(
        &self,
        app: &str,
        pause: Option<crate::spool::AppPause>,
    ) -> Result<bool, SpoolError> {
        let mut c = self.conn().await?;
        let tx = c
            .transaction()
            .await
            .map_err(self.err("beginning a transaction"))?;
        let changed = match &pause {
            Some(p) => tx
                .execute(
                    "INSERT INTO app_pauses (app, since, reject) VALUES ($1, $2, $3) \
                     ON CONFLICT (app) DO UPDATE SET reject = excluded.reject \
                     WHERE app_pauses.reject <> excluded.reject",
                    &[&app, &to_ms(p.since), &p.reject],
                )
                .await
                .map_err(self.err("pausing an app"))?,
            None => tx
                .execute("DELETE FROM app_pauses WHERE app = $1", &[&app])
                .await
                .map_err(self.err("resuming an app"))?,
        } > 0;
        if changed {
            // Sent at the commit: the other gateways pause or resume it too.
            tx.execute("SELECT pg_notify($1, $2)", &[&cluster::PAUSE, &app])
                .await
                .map_err(self.err("telling the other gateways of a pause"))?;
        }
        tx.commit().await.map_err(self.err("committing a pause"))?;
        self.committed();
        Ok(changed)
    }

    async fn ask_cancel(&self, ask: &crate::spool::CancelAsk) -> Result<usize, SpoolError> {
        let c = self.conn().await?;
        let me = self.inner.cluster.me();
        // The others that are alive: one whose heartbeat is past its lease would never
        // answer. (Not filtered by the apps they serve: a gateway writes those at its first
        // heartbeat, seconds after it starts taking work.)
        let lease = i64::try_from(self.inner.cluster.lease.as_millis()).unwrap_or(i64::MAX);
        let others: i64 = c
            .query_one(
                &format!(
                    "SELECT count(*) FROM gateways WHERE id <> $1 AND heartbeat_at >= {} - $2",
                    cluster::DB_NOW
                ),
                &[&me, &lease],
            )
            .await
            .map_err(self.err("counting the other gateways"))?
            .get(0);
        if others == 0 {
            return Ok(0);
        }
        let payload = format!("{me}\t{}", ask.encode());
        if payload.len() > cluster::NOTIFY_MAX {
            tracing::warn!(
                bytes = payload.len(),
                "a cancel too large to ask the other gateways of (a cancel of many ids); what they hold is not cancelled"
            );
            return Ok(0);
        }
        c.execute("SELECT pg_notify($1, $2)", &[&cluster::CANCEL, &payload])
            .await
            .map_err(self.err("asking the other gateways to cancel"))?;
        Ok(usize::try_from(others).unwrap_or(0))
    }

    async fn answer_cancel(
        &self,
        asker: uuid::Uuid,
        answer: &crate::spool::CancelAnswer,
    ) -> Result<(), SpoolError> {
        let c = self.conn().await?;
        let mut payload = format!("{asker}\t{}", answer.encode());
        if payload.len() > cluster::NOTIFY_MAX {
            // The count alone: the ids would not fit.
            let count = crate::spool::CancelAnswer {
                ids: Vec::new(),
                ..answer.clone()
            };
            payload = format!("{asker}\t{}", count.encode());
        }
        c.execute("SELECT pg_notify($1, $2)", &[&cluster::CANCELLED, &payload])
            .await
            .map_err(self.err("answering a cancel"))?;
        Ok(())
    }

    async fn register_dead_token(&self, dead: DeadToken) -> Result<(), SpoolError> {
        self.complete(Vec::new(), vec![dead]).await
    }

    async fn clear_dead_token(&self, app: &str, token: &DeviceToken) -> Result<bool, SpoolError> {
        let mut c = self.conn().await?;
        let tx = c
            .transaction()
            .await
            .map_err(self.err("beginning a transaction"))?;
        let n = tx
            .execute(
                "DELETE FROM dead_tokens WHERE app = $1 AND token = $2",
                &[&app, &reads::token_bytes(token)],
            )
            .await
            .map_err(self.err("clearing a dead token"))?;
        if n > 0 {
            tx.execute(
                "SELECT pg_notify($1, $2)",
                &[&cluster::DEAD, &cluster::dead_payload(false, app, token)],
            )
            .await
            .map_err(self.err("telling the other gateways of a cleared token"))?;
        }
        tx.commit()
            .await
            .map_err(self.err("committing a cleared token"))?;
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

    async fn attempts(&self, id: ApnsId) -> Result<Vec<AttemptRecord>, SpoolError> {
        let c = self.conn().await?;
        reads::attempts_of(&c, &self.inner.target, id).await
    }

    async fn history(
        &self,
        id: ApnsId,
    ) -> Result<Option<(NotificationRecord, Vec<AttemptRecord>)>, SpoolError> {
        let mut c = self.conn().await?;
        reads::history(&mut c, &self.inner.target, id).await
    }

    async fn token_history(
        &self,
        app: &str,
        token: &DeviceToken,
        limit: usize,
    ) -> Result<TokenHistory, SpoolError> {
        // One search at a time: each holds a pooled connection for its scan.
        let _turn = self
            .inner
            .searches
            .acquire()
            .await
            .map_err(|_| SpoolError::WriterGone)?;
        let mut c = self.conn().await?;
        let most = self.inner.token_search_limit;
        reads::token_history(&mut c, &self.inner.target, app, token, limit, most).await
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

    async fn bounces_due(
        &self,
        now: SystemTime,
        cutoff: SystemTime,
        limit: usize,
    ) -> Result<Vec<crate::spool::DueBounce>, SpoolError> {
        self.take_due_bounces(now, cutoff, limit).await
    }

    async fn settle_bounce(
        &self,
        origin: i64,
        lease: i64,
        ids: Vec<ApnsId>,
        how: crate::spool::BounceSettle,
    ) -> Result<bool, SpoolError> {
        self.settle(origin, lease, ids, how).await
    }

    async fn bounces_waiting(&self) -> Result<u64, SpoolError> {
        self.waiting_bounces().await
    }

    async fn prune(&self, before: SystemTime, limit: usize) -> Result<usize, SpoolError> {
        let before = to_ms(before);
        let first_id = first_id_at(before);
        let mut c = self.conn().await?;
        let tx = c
            .transaction()
            .await
            .map_err(self.err("beginning a transaction"))?;
        // One gateway prunes at a time; the others find the lock taken and leave it.
        let ours: bool = tx
            .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&RETENTION_LOCK])
            .await
            .map_err(self.err("taking the retention lock"))?
            .get(0);
        if !ours {
            return Ok(0);
        }
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

    /// Hands this gateway's notifications back to the others, ends its registration, and
    /// closes the pool; later operations fail.
    async fn close(&self) -> Result<(), SpoolError> {
        let reg = &self.inner.cluster;
        reg.stop.cancel();
        let task = reg
            .task
            .lock()
            .expect("registration lock is never poisoned")
            .take();
        if let Some(t) = task {
            let _ = t.await;
        }
        self.inner.pool.close();
        Ok(())
    }

    fn cluster_events(&self) -> Option<tokio::sync::mpsc::Receiver<crate::spool::ClusterEvent>> {
        self.inner.cluster.take_events()
    }

    fn serve_apps(&self, apps: Vec<String>) {
        self.inner.cluster.set_apps(apps);
    }

    async fn gateways(&self) -> Result<Vec<crate::spool::GatewayInfo>, SpoolError> {
        let c = self.conn().await?;
        cluster::gateways(&c, &self.inner.target, self.inner.cluster.me()).await
    }

    async fn shared_provider_token(
        &self,
        key: &apns::auth::SigningKey,
        fresh_after: SystemTime,
    ) -> Result<Option<(String, SystemTime)>, SpoolError> {
        let mut c = self.conn().await?;
        let what = "sharing the provider token";
        let tx = c.transaction().await.map_err(self.err(what))?;
        // One gateway renews a key's token at a time; the others wait and read its work.
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtext('pushgate provider token ' || $1))",
            &[&key.key_id()],
        )
        .await
        .map_err(self.err(what))?;
        // A token from a host whose clock is a little ahead is still the cluster's; one from
        // further ahead is replaced (it would never be renewed).
        let skew = std::time::Duration::from_secs(300);
        let stored = tx
            .query_opt(
                "SELECT token, issued_at, team_id FROM provider_tokens WHERE key_id = $1",
                &[&key.key_id()],
            )
            .await
            .map_err(self.err(what))?;
        if let Some(r) = stored {
            let (token, issued, team): (String, i64, String) = (r.get(0), r.get(1), r.get(2));
            let issued = crate::spool::from_ms(issued);
            if team == key.team_id() && issued >= fresh_after && issued <= SystemTime::now() + skew
            {
                tx.commit().await.map_err(self.err(what))?;
                return Ok(Some((token, issued)));
            }
        }
        // In the stored precision, so that every gateway holds the same `iat`.
        let now = crate::spool::from_ms(to_ms(SystemTime::now()));
        // The signing error names no key material (jsonwebtoken's message).
        let token = key.sign_at(now).map_err(|e| SpoolError::Postgres {
            what: format!("signing a provider token for key {}", key.key_id()),
            source: Box::new(e),
        })?;
        // Never replaced by an older one (a host whose clock is behind), unless of another team.
        let stored = tx
            .query_opt(
                "INSERT INTO provider_tokens (key_id, token, issued_at, team_id) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (key_id) DO UPDATE SET \
                 token = excluded.token, issued_at = excluded.issued_at, team_id = excluded.team_id \
                 WHERE provider_tokens.issued_at < excluded.issued_at \
                 OR provider_tokens.issued_at > $5 OR provider_tokens.team_id <> excluded.team_id \
                 RETURNING 1",
                &[
                    &key.key_id(),
                    &Hidden(&token),
                    &to_ms(now),
                    &key.team_id(),
                    &to_ms(now + skew),
                ],
            )
            .await
            .map_err(self.err(what))?;
        let shared = match stored {
            Some(_) => (token, now),
            None => {
                let r = tx
                    .query_one(
                        "SELECT token, issued_at FROM provider_tokens WHERE key_id = $1",
                        &[&key.key_id()],
                    )
                    .await
                    .map_err(self.err(what))?;
                (r.get(0), crate::spool::from_ms(r.get(1)))
            }
        };
        tx.commit().await.map_err(self.err(what))?;
        Ok(Some(shared))
    }

    fn commits(&self) -> u64 {
        self.inner.commits.load(Ordering::Relaxed)
    }
}

/// A provider token as a statement parameter. tokio-postgres logs the parameters of every
/// statement at debug level, with their `Debug`: this one shows nothing.
struct Hidden<'a>(&'a str);

impl std::fmt::Debug for Hidden<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<provider token>")
    }
}

impl tokio_postgres::types::ToSql for Hidden<'_> {
    fn to_sql(
        &self,
        ty: &tokio_postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        self.0.to_sql(ty, out)
    }

    fn accepts(ty: &tokio_postgres::types::Type) -> bool {
        <&str as tokio_postgres::types::ToSql>::accepts(ty)
    }

    tokio_postgres::types::to_sql_checked!();
}

/// The smallest UUIDv7 of millisecond `ms`: ids below it were created before `ms`.
fn first_id_at(ms: i64) -> uuid::Uuid {
    let mut id = [0u8; 16];
    id[..6].copy_from_slice(&ms.max(0).to_be_bytes()[2..]);
    uuid::Uuid::from_bytes(id)
}
