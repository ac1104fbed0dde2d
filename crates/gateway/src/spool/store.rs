//! The boundary between the service and its storage: the [`Spool`] trait every backend
//! implements, and [`Store`], the one the gateway opened.
//!
//! Nothing outside `spool/` names a backend. The service holds a [`Store`] and calls the
//! trait; a second backend is a second implementation and a second arm in [`Store`], and
//! nothing else changes. `Store` is an enum rather than a `dyn Spool` because the trait's
//! futures are `impl Future` (no allocation per call), which a trait object cannot return.

use std::path::Path;
use std::time::SystemTime;

use apns::{ApnsId, DeviceToken, Reason};

use super::idempotency::{Enqueued, IdempotencyKey};
use super::postgres::PgSpool;
use super::sqlite::SqliteSpool;
use super::{
    AppPause, AttemptRecord, BounceSettle, CancelAnswer, CancelAsk, Completion, DeadToken,
    DueBounce, FeedbackEntry, NewRequest, NotificationRecord, PendingRow, ReadyCursor, ReadyPage,
    RecoveryReport, RequestId, RequestSummary, SpoolError, SpoolOptions, State, StoredRequest,
    SubmitError, TokenHistory, WaitingCursor, WaitingPage,
};

/// Everything the gateway asks of its storage (docs/architecture.md: "answer after commit").
///
/// The operations are grouped as the flow uses them: intake stores, dispatch reads what is
/// ready and records outcomes, the API and dashboard read status, upkeep prunes and probes.
/// The last group is what a backend shared by several gateways needs (leases, one provider
/// token per key) and what features still to come will store (broadcast channels); a backend used by one gateway alone gets the defaults, which are either trivially
/// right for it or a clear [`SpoolError::Unsupported`]. Nothing calls them yet: they are the
/// contract those issues implement and call.
///
/// A few reads are here for the tests as much as for the service (`pending_page`, `counts`,
/// `dead_token`, `request_of`, `commits`): the delivery suite checks what a backend stored
/// through the trait, so that one suite runs against every backend.
pub trait Spool: Send + Sync {
    /// Which backend this is (`"sqlite"`), for the start-up log and errors.
    fn backend(&self) -> &'static str;

    // Intake.

    /// Stores a batch whole, in one transaction, and answers after the commit with the batch,
    /// which goes on to dispatch without being read back.
    fn enqueue(
        &self,
        batch: Vec<NewRequest>,
    ) -> impl Future<Output = Result<Vec<NewRequest>, SubmitError>> + Send;

    /// As [`Spool::enqueue`], once per idempotency key (`spool::idempotency`): the key is
    /// looked up and recorded in the transaction that stores the batch. Seen within the window
    /// with the same fingerprint, the answer is [`Enqueued::Replayed`] with the first
    /// submission's ids and nothing is stored (even when the spool is full); with another
    /// fingerprint, [`SubmitError::KeyReused`].
    fn enqueue_once(
        &self,
        batch: Vec<NewRequest>,
        key: IdempotencyKey,
    ) -> impl Future<Output = Result<Enqueued, SubmitError>> + Send;

    /// The ids a submission under `key` was answered with, when the key is remembered with
    /// the same fingerprint; a read, changing nothing. For a retry that no longer parses as
    /// the first one did (an absolute expiration passed since): it was stored all the same.
    fn replay_of(
        &self,
        key: &IdempotencyKey,
    ) -> impl Future<Output = Result<Option<Vec<ApnsId>>, SpoolError>> + Send;

    /// Notifications not yet final.
    fn pending(&self) -> u64;

    /// The configured limit of pending notifications ([`SubmitError::Full`] beyond it).
    fn max_pending(&self) -> u64;

    // Dispatch.

    /// Puts whatever was in flight when the gateway stopped back in the queue. Once, at
    /// start-up, before dispatching.
    fn recover(&self) -> impl Future<Output = Result<RecoveryReport, SpoolError>> + Send;

    /// Moves scheduled notifications whose time has come to queued; returns their ids.
    fn claim_due(
        &self,
        now: SystemTime,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<ApnsId>, SpoolError>> + Send;

    /// Up to `limit` of `app`'s queued notifications that are due at `now`, from `cursor` on;
    /// the page's cursor is where the next one goes on, `None` at the end of the pass. Every
    /// due notification is read once a pass, however many there are.
    fn ready_page(
        &self,
        app: &str,
        cursor: ReadyCursor,
        now: SystemTime,
        limit: usize,
    ) -> impl Future<Output = Result<ReadyPage, SpoolError>> + Send;

    /// The earliest due time after `now` of `app`'s queued retries.
    fn next_due(
        &self,
        app: &str,
        now: SystemTime,
    ) -> impl Future<Output = Result<Option<SystemTime>, SpoolError>> + Send;

    /// The payload and headers of the request a notification belongs to.
    fn request_of(
        &self,
        id: ApnsId,
    ) -> impl Future<Output = Result<Option<StoredRequest>, SpoolError>> + Send;

    // Outcomes.

    /// Records results and decisions, and registers the dead tokens they found, in one
    /// transaction: all of it or none.
    fn complete(
        &self,
        done: Vec<Completion>,
        dead: Vec<DeadToken>,
    ) -> impl Future<Output = Result<(), SpoolError>> + Send;

    // Bounces (`spool::bounces`): failures queue in the outbox inside `complete`.

    /// Up to `limit` bounce origins whose next try is due at `now` and whose first waiting
    /// failure was recorded by `cutoff` (the batching window), each with its failures. On
    /// PostgreSQL each is leased to this gateway for [`BOUNCE_LEASE`](super::BOUNCE_LEASE), so that two gateways
    /// never send one DSN at once.
    fn bounces_due(
        &self,
        now: SystemTime,
        cutoff: SystemTime,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<DueBounce>, SpoolError>> + Send;

    /// What became of the DSN of `origin` (taken under `lease`) that reported `ids`. Answers
    /// false when the lease was lost meanwhile (another gateway took the origin): nothing is
    /// changed then.
    fn settle_bounce(
        &self,
        origin: i64,
        lease: i64,
        ids: Vec<ApnsId>,
        how: BounceSettle,
    ) -> impl Future<Output = Result<bool, SpoolError>> + Send;

    /// Failures waiting in the outbox.
    fn bounces_waiting(&self) -> impl Future<Output = Result<u64, SpoolError>> + Send;

    // Cancel and pause (`spool::cancel`).

    /// Up to `limit` of `app`'s waiting (scheduled or queued) notifications from `cursor` on,
    /// with their requests: a bulk cancel's pass, which picks what it names.
    fn waiting_page(
        &self,
        app: &str,
        cursor: WaitingCursor,
        limit: usize,
    ) -> impl Future<Output = Result<WaitingPage, SpoolError>> + Send;

    /// Cancels, in one transaction, those of `ids` that are `app`'s and still wait (and, on
    /// PostgreSQL, that no other gateway holds — with `mine`, that this gateway holds);
    /// answers them. The caller has made sure that none of them is being sent
    /// (`dispatch::cancel`).
    fn cancel_waiting(
        &self,
        app: &str,
        ids: Vec<ApnsId>,
        mine: bool,
    ) -> impl Future<Output = Result<Vec<ApnsId>, SpoolError>> + Send;

    /// A submission's apps and size; `None` when none of its requests is stored.
    fn request_summary(
        &self,
        id: RequestId,
    ) -> impl Future<Output = Result<Option<RequestSummary>, SpoolError>> + Send;

    /// The apps an operator paused.
    fn app_pauses(&self) -> impl Future<Output = Result<Vec<AppPause>, SpoolError>> + Send;

    /// Pauses `app` (`Some`) or resumes it (`None`); answers whether that changed anything
    /// (a pause of a paused app changes only its `reject`).
    fn set_app_pause(
        &self,
        app: &str,
        pause: Option<AppPause>,
    ) -> impl Future<Output = Result<bool, SpoolError>> + Send;

    /// Adds (or refreshes) a dead token.
    fn register_dead_token(
        &self,
        dead: DeadToken,
    ) -> impl Future<Output = Result<(), SpoolError>> + Send;

    /// Removes a dead token (the device registered again); `false` if it was not registered.
    fn clear_dead_token(
        &self,
        app: &str,
        token: &DeviceToken,
    ) -> impl Future<Output = Result<bool, SpoolError>> + Send;

    /// Every registered dead token (app, token), for dispatch's suppression set.
    fn all_dead_tokens(
        &self,
    ) -> impl Future<Output = Result<Vec<(String, DeviceToken)>, SpoolError>> + Send;

    /// Whether `token` is registered dead for `app`, with its reason and time.
    fn dead_token(
        &self,
        app: &str,
        token: &DeviceToken,
    ) -> impl Future<Output = Result<Option<(Reason, SystemTime)>, SpoolError>> + Send;

    /// Dead tokens of `app` registered at or after `since`, oldest first.
    fn feedback(
        &self,
        app: &str,
        since: SystemTime,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<FeedbackEntry>, SpoolError>> + Send;

    // Status.

    /// One notification, or `None`.
    fn get(
        &self,
        id: ApnsId,
    ) -> impl Future<Output = Result<Option<NotificationRecord>, SpoolError>> + Send;

    /// Many notifications at once (unknown ids are left out).
    fn get_many(
        &self,
        ids: Vec<ApnsId>,
    ) -> impl Future<Output = Result<Vec<NotificationRecord>, SpoolError>> + Send;

    /// A notification's attempts before its last, oldest first (the last is its record); the
    /// last [`KEPT_SHOWN`](super::KEPT_SHOWN) of them.
    fn attempts(
        &self,
        id: ApnsId,
    ) -> impl Future<Output = Result<Vec<AttemptRecord>, SpoolError>> + Send;

    /// A notification and its [`Spool::attempts`], read together (they agree).
    fn history(
        &self,
        id: ApnsId,
    ) -> impl Future<Output = Result<Option<(NotificationRecord, Vec<AttemptRecord>)>, SpoolError>> + Send;

    /// Up to `limit` of the last notifications of `app` to `token`, newest first, among the
    /// [`TOKEN_SEARCH_LIMIT`](super::TOKEN_SEARCH_LIMIT) most recent notifications. One search
    /// runs at a time; others wait for their turn.
    fn token_history(
        &self,
        app: &str,
        token: &DeviceToken,
        limit: usize,
    ) -> impl Future<Output = Result<TokenHistory, SpoolError>> + Send;

    /// Up to `limit` pending notifications with ids after `after`, in id order (ids are
    /// time-ordered, so roughly acceptance order).
    fn pending_page(
        &self,
        after: Option<ApnsId>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<PendingRow>, SpoolError>> + Send;

    /// Notifications by state (every state present).
    fn counts(&self) -> impl Future<Output = Result<Vec<(State, u64)>, SpoolError>> + Send;

    /// Notifications not yet final, by state (cheap: through the index of pending rows).
    fn pending_counts(&self) -> impl Future<Output = Result<Vec<(State, u64)>, SpoolError>> + Send;

    /// Notifications by app and state.
    fn counts_by_app(
        &self,
    ) -> impl Future<Output = Result<Vec<(String, State, u64)>, SpoolError>> + Send;

    // Upkeep.

    /// Deletes up to `limit` finished notifications last updated before `before`, the requests
    /// left without notifications, and up to `limit` idempotency keys older than the window;
    /// answers how many notifications and keys went (the pruner goes on while a chunk is full).
    fn prune(
        &self,
        before: SystemTime,
        limit: usize,
    ) -> impl Future<Output = Result<usize, SpoolError>> + Send;

    /// Commits a small write after everything sent before it: whether the spool takes writes
    /// now (`/readyz`).
    fn probe_write(&self) -> impl Future<Output = Result<(), SpoolError>> + Send;

    /// Waits until everything sent before this call is applied.
    fn flush(&self) -> impl Future<Output = Result<(), SpoolError>> + Send;

    /// Commits what was sent before and closes the backend; later calls fail.
    fn close(&self) -> impl Future<Output = Result<(), SpoolError>> + Send;

    /// Transactions committed since the spool was opened (group commit's figure).
    fn commits(&self) -> u64;

    // Shared by several gateways. The defaults are a backend that one gateway owns whole.

    /// The news from the other gateways sharing this spool, taken once (by dispatch). `None`:
    /// no other gateway can share it.
    fn cluster_events(&self) -> Option<tokio::sync::mpsc::Receiver<super::ClusterEvent>> {
        None
    }

    /// The apps this gateway serves, for the cluster view (and the warning when the gateways
    /// sharing the spool disagree).
    fn serve_apps(&self, _apps: Vec<String>) {}

    /// The gateways sharing this spool; empty for a spool one gateway owns.
    fn gateways(&self) -> impl Future<Output = Result<Vec<super::GatewayInfo>, SpoolError>> + Send {
        async { Ok(Vec::new()) }
    }

    /// The provider token the gateways sharing this spool present for `key`: the stored one
    /// when it was issued at `fresh_after` or later, else one signed now and stored, under a
    /// lock, so that the cluster presents one token per key as Apple asks. `None`: sign
    /// locally (one gateway alone presents one token per key anyway). The token is a live
    /// credential for up to an hour: never logged.
    fn shared_provider_token(
        &self,
        _key: &apns::auth::SigningKey,
        _fresh_after: SystemTime,
    ) -> impl Future<Output = Result<Option<(String, SystemTime)>, SpoolError>> + Send {
        async { Ok(None) }
    }

    /// Asks the other gateways sharing the spool to cancel what of `ask` they hold (in
    /// memory: only they know whether it is being sent); answers how many were asked — their
    /// answers come as [`ClusterEvent::CancelAnswered`](super::ClusterEvent). 0: no other
    /// gateway shares this spool.
    fn ask_cancel(
        &self,
        _ask: &CancelAsk,
    ) -> impl Future<Output = Result<usize, SpoolError>> + Send {
        async { Ok(0) }
    }

    /// Answers gateway `asker`'s cancel ask.
    fn answer_cancel(
        &self,
        _asker: uuid::Uuid,
        _answer: &CancelAnswer,
    ) -> impl Future<Output = Result<(), SpoolError>> + Send {
        async { Ok(()) }
    }

    /// The broadcast channels created for `app`.
    fn channels(
        &self,
        _app: &str,
    ) -> impl Future<Output = Result<Vec<Channel>, SpoolError>> + Send {
        async {
            Err(SpoolError::unsupported(
                "broadcast channels",
                self.backend(),
            ))
        }
    }
}

/// A Live Activity broadcast channel Apple created for an app.
#[derive(Debug, Clone, PartialEq)]
pub struct Channel {
    pub app: String,
    /// Apple's id for it (base64 text, never reused).
    pub id: String,
    /// `message-storage-policy`: 0 keeps no message, 1 keeps the latest.
    pub storage_policy: u8,
    pub created_at: SystemTime,
}

/// The spool the gateway opened. Cheap to clone: every clone is the same spool.
#[derive(Debug, Clone)]
pub struct Store(Backend);

#[derive(Debug, Clone)]
enum Backend {
    Sqlite(SqliteSpool),
    Postgres(PgSpool),
}

impl Store {
    /// Opens the backend that `[storage]` names (creating and migrating it as needed).
    pub async fn open(storage: &crate::config::Storage) -> Result<Store, SpoolError> {
        let options = SpoolOptions {
            max_pending: storage.max_pending,
            idempotency_window: storage.idempotency_window,
            mode: storage.mode,
            ..SpoolOptions::default()
        };
        match &storage.postgres {
            Some(pg) => Store::postgres(pg, options).await,
            None => Store::sqlite(&storage.sqlite, options),
        }
    }

    /// The PostgreSQL spool `config` names: connected, its schema migrated.
    pub async fn postgres(
        config: &crate::config::Postgres,
        options: SpoolOptions,
    ) -> Result<Store, SpoolError> {
        PgSpool::open(config, options)
            .await
            .map(|s| Store(Backend::Postgres(s)))
    }

    /// The embedded SQLite spool at `path`.
    pub fn sqlite(path: &Path, options: SpoolOptions) -> Result<Store, SpoolError> {
        SqliteSpool::open(path, options).map(|s| Store(Backend::Sqlite(s)))
    }

    /// Fault injection for tests: while `fail` is set, every write fails at its commit as on
    /// a full disk, and is rolled back. Never set by the gateway itself.
    #[doc(hidden)]
    pub fn inject_write_failures(&self, fail: bool) {
        match &self.0 {
            Backend::Sqlite(s) => s.inject_write_failures(fail),
            Backend::Postgres(_) => {
                assert!(
                    !fail,
                    "fault injection is the SQLite spool's; stop the server instead"
                );
            }
        }
    }
}

/// `on!(self, s => expr)`: `expr` with `s` bound to whichever backend this is.
macro_rules! on {
    ($self:ident, $s:ident => $e:expr) => {
        match &$self.0 {
            Backend::Sqlite($s) => $e,
            Backend::Postgres($s) => $e,
        }
    };
}

impl Spool for Store {
    fn backend(&self) -> &'static str {
        on!(self, s => s.backend())
    }
    async fn enqueue(&self, batch: Vec<NewRequest>) -> Result<Vec<NewRequest>, SubmitError> {
        on!(self, s => s.enqueue(batch).await)
    }
    async fn enqueue_once(
        &self,
        batch: Vec<NewRequest>,
        key: IdempotencyKey,
    ) -> Result<Enqueued, SubmitError> {
        on!(self, s => s.enqueue_once(batch, key).await)
    }
    async fn replay_of(&self, key: &IdempotencyKey) -> Result<Option<Vec<ApnsId>>, SpoolError> {
        on!(self, s => s.replay_of(key).await)
    }
    fn pending(&self) -> u64 {
        on!(self, s => s.pending())
    }
    fn max_pending(&self) -> u64 {
        on!(self, s => s.max_pending())
    }
    async fn recover(&self) -> Result<RecoveryReport, SpoolError> {
        on!(self, s => s.recover().await)
    }
    async fn claim_due(&self, now: SystemTime, limit: usize) -> Result<Vec<ApnsId>, SpoolError> {
        on!(self, s => s.claim_due(now, limit).await)
    }
    async fn ready_page(
        &self,
        app: &str,
        cursor: ReadyCursor,
        now: SystemTime,
        limit: usize,
    ) -> Result<ReadyPage, SpoolError> {
        on!(self, s => s.ready_page(app, cursor, now, limit).await)
    }
    async fn next_due(&self, app: &str, now: SystemTime) -> Result<Option<SystemTime>, SpoolError> {
        on!(self, s => s.next_due(app, now).await)
    }
    async fn request_of(&self, id: ApnsId) -> Result<Option<StoredRequest>, SpoolError> {
        on!(self, s => s.request_of(id).await)
    }
    async fn complete(
        &self,
        done: Vec<Completion>,
        dead: Vec<DeadToken>,
    ) -> Result<(), SpoolError> {
        on!(self, s => s.complete(done, dead).await)
    }
    async fn bounces_due(
        &self,
        now: SystemTime,
        cutoff: SystemTime,
        limit: usize,
    ) -> Result<Vec<DueBounce>, SpoolError> {
        on!(self, s => s.bounces_due(now, cutoff, limit).await)
    }
    async fn settle_bounce(
        &self,
        origin: i64,
        lease: i64,
        ids: Vec<ApnsId>,
        how: BounceSettle,
    ) -> Result<bool, SpoolError> {
        on!(self, s => s.settle_bounce(origin, lease, ids, how).await)
    }
    async fn bounces_waiting(&self) -> Result<u64, SpoolError> {
        on!(self, s => s.bounces_waiting().await)
    }
    async fn waiting_page(
        &self,
        app: &str,
        cursor: WaitingCursor,
        limit: usize,
    ) -> Result<WaitingPage, SpoolError> {
        on!(self, s => s.waiting_page(app, cursor, limit).await)
    }
    async fn cancel_waiting(
        &self,
        app: &str,
        ids: Vec<ApnsId>,
        mine: bool,
    ) -> Result<Vec<ApnsId>, SpoolError> {
        on!(self, s => s.cancel_waiting(app, ids, mine).await)
    }
    async fn request_summary(&self, id: RequestId) -> Result<Option<RequestSummary>, SpoolError> {
        on!(self, s => s.request_summary(id).await)
    }
    async fn app_pauses(&self) -> Result<Vec<AppPause>, SpoolError> {
        on!(self, s => s.app_pauses().await)
    }
    async fn set_app_pause(&self, app: &str, pause: Option<AppPause>) -> Result<bool, SpoolError> {
        on!(self, s => s.set_app_pause(app, pause).await)
    }
    async fn register_dead_token(&self, dead: DeadToken) -> Result<(), SpoolError> {
        on!(self, s => s.register_dead_token(dead).await)
    }
    async fn clear_dead_token(&self, app: &str, token: &DeviceToken) -> Result<bool, SpoolError> {
        on!(self, s => s.clear_dead_token(app, token).await)
    }
    async fn all_dead_tokens(&self) -> Result<Vec<(String, DeviceToken)>, SpoolError> {
        on!(self, s => s.all_dead_tokens().await)
    }
    async fn dead_token(
        &self,
        app: &str,
        token: &DeviceToken,
    ) -> Result<Option<(Reason, SystemTime)>, SpoolError> {
        on!(self, s => s.dead_token(app, token).await)
    }
    async fn feedback(
        &self,
        app: &str,
        since: SystemTime,
        limit: usize,
    ) -> Result<Vec<FeedbackEntry>, SpoolError> {
        on!(self, s => s.feedback(app, since, limit).await)
    }
    async fn get(&self, id: ApnsId) -> Result<Option<NotificationRecord>, SpoolError> {
        on!(self, s => s.get(id).await)
    }
    async fn get_many(&self, ids: Vec<ApnsId>) -> Result<Vec<NotificationRecord>, SpoolError> {
        on!(self, s => s.get_many(ids).await)
    }
    async fn attempts(&self, id: ApnsId) -> Result<Vec<AttemptRecord>, SpoolError> {
        on!(self, s => s.attempts(id).await)
    }
    async fn history(
        &self,
        id: ApnsId,
    ) -> Result<Option<(NotificationRecord, Vec<AttemptRecord>)>, SpoolError> {
        on!(self, s => s.history(id).await)
    }
    async fn token_history(
        &self,
        app: &str,
        token: &DeviceToken,
        limit: usize,
    ) -> Result<TokenHistory, SpoolError> {
        on!(self, s => s.token_history(app, token, limit).await)
    }
    async fn pending_page(
        &self,
        after: Option<ApnsId>,
        limit: usize,
    ) -> Result<Vec<PendingRow>, SpoolError> {
        on!(self, s => s.pending_page(after, limit).await)
    }
    async fn counts(&self) -> Result<Vec<(State, u64)>, SpoolError> {
        on!(self, s => s.counts().await)
    }
    async fn pending_counts(&self) -> Result<Vec<(State, u64)>, SpoolError> {
        on!(self, s => s.pending_counts().await)
    }
    async fn counts_by_app(&self) -> Result<Vec<(String, State, u64)>, SpoolError> {
        on!(self, s => s.counts_by_app().await)
    }
    async fn prune(&self, before: SystemTime, limit: usize) -> Result<usize, SpoolError> {
        on!(self, s => s.prune(before, limit).await)
    }
    async fn probe_write(&self) -> Result<(), SpoolError> {
        on!(self, s => s.probe_write().await)
    }
    async fn flush(&self) -> Result<(), SpoolError> {
        on!(self, s => s.flush().await)
    }
    async fn close(&self) -> Result<(), SpoolError> {
        on!(self, s => s.close().await)
    }
    fn commits(&self) -> u64 {
        on!(self, s => s.commits())
    }
    fn cluster_events(&self) -> Option<tokio::sync::mpsc::Receiver<super::ClusterEvent>> {
        on!(self, s => s.cluster_events())
    }
    fn serve_apps(&self, apps: Vec<String>) {
        on!(self, s => s.serve_apps(apps))
    }
    async fn gateways(&self) -> Result<Vec<super::GatewayInfo>, SpoolError> {
        on!(self, s => s.gateways().await)
    }
    async fn shared_provider_token(
        &self,
        key: &apns::auth::SigningKey,
        fresh_after: SystemTime,
    ) -> Result<Option<(String, SystemTime)>, SpoolError> {
        on!(self, s => s.shared_provider_token(key, fresh_after).await)
    }
    async fn ask_cancel(&self, ask: &CancelAsk) -> Result<usize, SpoolError> {
        on!(self, s => s.ask_cancel(ask).await)
    }
    async fn answer_cancel(
        &self,
        asker: uuid::Uuid,
        answer: &CancelAnswer,
    ) -> Result<(), SpoolError> {
        on!(self, s => s.answer_cancel(asker, answer).await)
    }
    async fn channels(&self, app: &str) -> Result<Vec<Channel>, SpoolError> {
        on!(self, s => s.channels(app).await)
    }
}
