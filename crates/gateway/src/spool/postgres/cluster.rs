//! Several gateways on one database (docs/postgres.md, "Several gateways"). Each gateway
//! registers itself in `gateways` and keeps one session of its own, apart from the pool, that
//!
//! - holds a session advisory lock of its registration (`lock_key`) for as long as the session
//!   lives: a process that dies loses it at once, so the others see the death at their next
//!   heartbeat rather than a lease later;
//! - heartbeats every `heartbeat_s`, and finds out there when the others declared it dead (its
//!   row gone): it then registers again under a new id — its old rows are already someone
//!   else's, and the fence in `COMPLETE` drops its late outcomes for them;
//! - rescues, at each heartbeat, the rows of every gateway whose heartbeat is older than
//!   `lease_s` or whose lock is free: they become nobody's and the gateways are woken to claim
//!   them;
//! - LISTENs for the wake-ups (`pushgate_work`: unowned work appeared) and the dead-token
//!   registrations and clearances of the others (`pushgate_dead`), which dispatch applies to
//!   its in-memory set, and the pauses and resumes of apps (`pushgate_pause`). A notification lost while the session was down is made good by a
//!   resync (every dead token read again, every app rescanned). LISTEN needs a session of its
//!   own: it cannot pass through a PgBouncer in transaction mode.
//!
//! At a graceful stop the gateway hands its rows back at once and deletes its registration.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use apns::DeviceToken;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{Inner, pg};
use crate::config::Postgres;
use crate::spool::{CancelAnswer, CancelAsk, ClusterEvent, GatewayInfo, SpoolError, from_ms};

/// The channel of wake-ups: work no gateway holds appeared (rescued, handed back, scheduled
/// rows come due).
pub(super) const WORK: &str = "pushgate_work";
/// The channel of dead-token changes: `+` or `-`, the app and the token's hex, tab-separated.
pub(super) const DEAD: &str = "pushgate_dead";

/// The channel of pauses: the app an operator paused or resumed (read again from the spool).
pub(super) const PAUSE: &str = "pushgate_pause";
/// The channel of cancels asked of the others: the asking gateway's id, a tab, the ask
/// (`spool::CancelAsk`, JSON).
pub(super) const CANCEL: &str = "pushgate_cancel";
/// The channel of answers: the asking gateway's id, a tab, the answer (`spool::CancelAnswer`).
pub(super) const CANCELLED: &str = "pushgate_cancelled";
/// The longest payload a NOTIFY carries (PostgreSQL's limit is 8000 bytes).
pub(super) const NOTIFY_MAX: usize = 7_900;

/// The database's clock in ms: heartbeats are written and judged by it, so that gateways on
/// hosts whose clocks disagree do not declare each other dead.
pub(super) const DB_NOW: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// Heartbeats an app removed by a reload waits before its rows are handed back: its retired
/// worker's streams in flight finish first (their outcomes are recorded under this owner).
const HAND_BACK_AFTER: u32 = 3;
/// Every this many heartbeats the pending count is read again (the others' work changes it).
const RECOUNT_EVERY: u64 = 6;
/// Every this many heartbeats (one gateway at a time) rows held by no registration are freed:
/// the backstop for a registration deleted by hand.
const ORPHANS_EVERY: u64 = 120;
/// Taken (for the transaction) by the gateway sweeping orphans.
const ORPHAN_LOCK: i64 = 0x7075_7368_6761_7468;

/// This gateway's registration, shared by the spool's operations (which claim and fence with
/// its id) and the session task.
pub(super) struct Registration {
    /// Replaced when the others declared this gateway dead. A std mutex, held to copy it.
    id: Mutex<uuid::Uuid>,
    /// The advisory lock of the current session: a new one for every session, since the old
    /// session's backend may linger on the server holding the old one. Written to the
    /// registration at each heartbeat.
    lock_key: AtomicI64,
    /// When the current session opened, by the database's clock (ms): the others' heartbeats
    /// are not judged late from before it (after a failover every session was down at once).
    session_opened: AtomicI64,
    /// Host name and process id: what the cluster view shows.
    pub(super) host: String,
    /// The apps this gateway serves, written at each heartbeat.
    apps: Mutex<Vec<String>>,
    /// The apps last served, and those removed since, with the heartbeats they have been gone:
    /// one gone for [`HAND_BACK_AFTER`] heartbeats (its streams in flight finished) has its
    /// rows handed back — a reload removed it here; another gateway may serve it.
    served: Mutex<(Vec<String>, std::collections::HashMap<String, u32>)>,
    pub(super) heartbeat: Duration,
    pub(super) lease: Duration,
    /// Taken once by dispatch.
    events: Mutex<Option<mpsc::Receiver<ClusterEvent>>>,
    /// News could not be passed on (dispatch's channel full): a resync is owed.
    resync_owed: AtomicBool,
    pub(super) stop: CancellationToken,
    pub(super) task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Registration {
    pub(super) fn lock_key(&self) -> i64 {
        self.lock_key.load(Ordering::Acquire)
    }

    pub(super) fn me(&self) -> uuid::Uuid {
        *self.id.lock().expect("registration lock is never poisoned")
    }

    pub(super) fn set_apps(&self, mut apps: Vec<String>) {
        apps.sort();
        *self
            .apps
            .lock()
            .expect("registration lock is never poisoned") = apps;
    }

    fn apps(&self) -> Vec<String> {
        self.apps
            .lock()
            .expect("registration lock is never poisoned")
            .clone()
    }

    pub(super) fn take_events(&self) -> Option<mpsc::Receiver<ClusterEvent>> {
        self.events
            .lock()
            .expect("registration lock is never poisoned")
            .take()
    }
}

/// The session: its client, and the notifications its connection received.
pub(super) struct Session {
    pub(super) client: Client,
    notes: mpsc::Receiver<(String, String)>,
    /// Set when a notification could not be queued (the channel full): resync.
    overflowed: Arc<AtomicBool>,
    connection: tokio::task::JoinHandle<()>,
}

/// Connects the session under a new lock key, takes its lock and LISTENs.
pub(super) async fn open_session(
    pg_config: &tokio_postgres::Config,
    config: &Postgres,
    reg: &Registration,
) -> Result<Session, SpoolError> {
    let lock_key = uuid::Uuid::new_v4().as_u64_pair().0 as i64;
    let target = &config.target;
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(super::connect::tls_config(config)?);
    let (client, mut conn) = pg_config
        .connect(tls)
        .await
        .map_err(pg(target, "connecting the gateway's session"))?;
    let (tx, notes) = mpsc::channel(1024);
    let overflowed = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&overflowed);
    // The connection is driven here; notifications are handed on without waiting, so that a
    // slow reader never stalls the session's own queries.
    let connection = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        use futures_util::StreamExt;
        while let Some(Ok(m)) = messages.next().await {
            if let AsyncMessage::Notification(n) = m
                && tx
                    .try_send((n.channel().to_owned(), n.payload().to_owned()))
                    .is_err()
            {
                flag.store(true, Ordering::Release);
            }
        }
    });
    let session = Session {
        client,
        notes,
        overflowed,
        connection,
    };
    let locked: bool = session
        .client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&lock_key])
        .await
        .map_err(pg(target, "taking the gateway's lock"))?
        .get(0);
    if !locked {
        return Err(SpoolError::Postgres {
            what: format!("taking the gateway's lock ({target})"),
            source: "another session holds this registration's lock".into(),
        });
    }
    // A gateway of schema 2 or older holds this lock alone and neither claims nor fences:
    // sharing the database with it would send its work twice. Held shared for the session's
    // life, it also keeps an older gateway from starting beside this one.
    let old: bool = session
        .client
        .query_one(
            "SELECT pg_try_advisory_lock_shared($1)",
            &[&super::schema::OLD_GATEWAY_LOCK],
        )
        .await
        .map_err(pg(target, "looking for an older gateway"))?
        .get(0);
    if !old {
        return Err(SpoolError::Postgres {
            what: format!(
                "a gateway of an older pushgate (before schema 3) uses the PostgreSQL spool at \
                 {target}; stop every older gateway before starting this version"
            ),
            source: "the older gateways' lock is held".into(),
        });
    }
    session
        .client
        .batch_execute(&format!(
            "LISTEN {WORK}; LISTEN {DEAD}; LISTEN {PAUSE}; LISTEN {CANCEL}; LISTEN {CANCELLED}"
        ))
        .await
        .map_err(pg(target, "listening for the other gateways"))?;
    let opened: i64 = session
        .client
        .query_one(&format!("SELECT {DB_NOW}"), &[])
        .await
        .map_err(pg(target, "reading the database's clock"))?
        .get(0);
    reg.lock_key.store(lock_key, Ordering::Release);
    reg.session_opened.store(opened, Ordering::Release);
    Ok(session)
}

/// A new registration (not yet in the table).
pub(super) fn registration(config: &Postgres) -> (Registration, mpsc::Sender<ClusterEvent>) {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_owned());
    let (tx, rx) = mpsc::channel(4096);
    (
        Registration {
            id: Mutex::new(uuid::Uuid::now_v7()),
            lock_key: AtomicI64::new(0),
            session_opened: AtomicI64::new(0),
            host: format!("{host} (pid {})", std::process::id()),
            apps: Mutex::new(Vec::new()),
            served: Mutex::default(),
            heartbeat: config.heartbeat,
            lease: config.lease,
            events: Mutex::new(Some(rx)),
            resync_owed: AtomicBool::new(false),
            stop: CancellationToken::new(),
            task: Mutex::new(None),
        },
        tx,
    )
}

/// Writes the registration (again, after a declared death, under a new id).
pub(super) async fn register(
    c: &Client,
    reg: &Registration,
    target: &str,
) -> Result<(), SpoolError> {
    c.execute(
        &format!(
            "INSERT INTO gateways (id, host, started_at, heartbeat_at, lock_key, apps) \
             VALUES ($1, $2, {DB_NOW}, {DB_NOW}, $3, $4)"
        ),
        &[&reg.me(), &reg.host, &reg.lock_key(), &reg.apps()],
    )
    .await
    .map_err(pg(target, "registering the gateway"))?;
    Ok(())
}

/// One gateway the rescue looked at.
struct Other {
    id: uuid::Uuid,
    host: String,
    apps: Vec<String>,
}

/// Frees the rows of every gateway that is gone — its heartbeat older than the lease, or its
/// session lock free while its heartbeat is late (two heartbeats: a session that is only
/// reconnecting, as in a database failover, is not a death) — and answers how many rows were
/// freed. Warns, once per gateway, about one that serves other apps than this one.
pub(super) async fn rescue(
    c: &mut Client,
    reg: &Registration,
    target: &str,
    warned: &mut std::collections::HashSet<uuid::Uuid>,
) -> Result<u64, SpoolError> {
    let me = reg.me();
    let lease = reg.lease.as_millis() as i64;
    let quiet = 2 * reg.heartbeat.as_millis() as i64;
    // Silence is counted from the later of a gateway's heartbeat and this session's start: a
    // session that was down itself (a failover took every session at once) has not watched.
    let since = reg.session_opened.load(Ordering::Acquire);
    let rows = c
        .query(
            &format!(
                "SELECT id, host, greatest(heartbeat_at, $4) < {DB_NOW} - $2, lock_key, apps, \
                 greatest(heartbeat_at, $4) < {DB_NOW} - $3 FROM gateways WHERE id <> $1"
            ),
            &[&me, &lease, &quiet, &since],
        )
        .await
        .map_err(pg(target, "reading the other gateways"))?;
    let mut gone = Vec::new();
    let mine = reg.apps();
    for r in &rows {
        let other = Other {
            id: r.get(0),
            host: r.get(1),
            apps: r.get(4),
        };
        let (stale, key, late): (bool, i64, bool) = (r.get(2), r.get(3), r.get(5));
        let dead = stale
            || late && {
                // The lock of a live gateway's session is held; a free one means the session
                // (and so the process, or its path to the database) is gone.
                let free: bool = c
                    .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
                    .await
                    .map_err(pg(target, "probing a gateway's lock"))?
                    .get(0);
                if free {
                    c.execute("SELECT pg_advisory_unlock($1)", &[&key])
                        .await
                        .map_err(pg(target, "probing a gateway's lock"))?;
                }
                free
            };
        if dead {
            gone.push(other);
        } else if !mine.is_empty()
            && !other.apps.is_empty()
            && other.apps != mine
            && warned.insert(other.id)
        {
            warn!(other = %other.host, theirs = ?other.apps, ours = ?mine, "the gateways sharing this database serve different apps; each claims only its own apps' notifications");
        }
    }
    let mut freed = 0;
    for g in gone {
        let tx = c
            .transaction()
            .await
            .map_err(pg(target, "rescuing a gateway's notifications"))?;
        // Judged again as it is deleted: a heartbeat since the look above keeps it alive.
        let deleted = tx
            .execute(
                &format!(
                    "DELETE FROM gateways WHERE id = $1 \
                     AND greatest(heartbeat_at, $3) < {DB_NOW} - $2"
                ),
                &[&g.id, &quiet, &since],
            )
            .await
            .map_err(pg(target, "rescuing a gateway's notifications"))?;
        if deleted == 0 {
            continue;
        }
        let n = free_rows(&tx, g.id, target, "rescuing a gateway's notifications").await?;
        tx.commit()
            .await
            .map_err(pg(target, "rescuing a gateway's notifications"))?;
        warn!(gateway = %g.id, host = %g.host, notifications = n, "a gateway sharing the database stopped answering; its notifications are rescued");
        freed += n;
    }
    Ok(freed)
}

/// Makes `owner`'s pending rows nobody's and, when there were any, wakes every gateway to
/// claim them (at `tx`'s commit). Answers how many.
async fn free_rows(
    tx: &tokio_postgres::Transaction<'_>,
    owner: uuid::Uuid,
    target: &str,
    what: &str,
) -> Result<u64, SpoolError> {
    let n = tx
        .execute(
            "UPDATE notifications SET owner = NULL WHERE state < 3 AND owner = $1",
            &[&owner],
        )
        .await
        .map_err(pg(target, what))?;
    if n > 0 {
        tx.execute(&format!("NOTIFY {WORK}"), &[])
            .await
            .map_err(pg(target, what))?;
    }
    Ok(n)
}

/// Gives this gateway's rows back and deletes its registration (a graceful stop).
async fn hand_back(c: &mut Client, reg: &Registration, target: &str) -> Result<u64, SpoolError> {
    let me = reg.me();
    let tx = c
        .transaction()
        .await
        .map_err(pg(target, "handing notifications back"))?;
    let n = free_rows(&tx, me, target, "handing notifications back").await?;
    tx.execute("DELETE FROM gateways WHERE id = $1", &[&me])
        .await
        .map_err(pg(target, "handing notifications back"))?;
    tx.commit()
        .await
        .map_err(pg(target, "handing notifications back"))?;
    Ok(n)
}

/// Runs the session until the spool stops: heartbeats, rescues, notifications, and a new
/// session (with a resync) whenever the old one is lost.
pub(super) async fn run(
    spool: Weak<Inner>,
    mut session: Session,
    pg_config: tokio_postgres::Config,
    config: Postgres,
    events: mpsc::Sender<ClusterEvent>,
) {
    let Some(inner) = spool.upgrade() else {
        return;
    };
    let (reg, target) = (Arc::clone(&inner.cluster), inner.target.clone());
    drop(inner);
    let mut warned = std::collections::HashSet::new();
    let mut beats: u64 = 0;
    loop {
        let mut tick = tokio::time::interval(reg.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                note = session.notes.recv() => match note {
                    Some((channel, payload)) => forward(&events, &reg, &channel, &payload),
                    None => break,
                },
                _ = tick.tick() => {
                    beats += 1;
                    if let Err(e) = beat(&mut session.client, &reg, &target, &events, &mut warned).await {
                        warn!(error = %crate::error_chain(&e), "the gateway's heartbeat failed");
                    }
                    if let Err(e) = upkeep(&mut session.client, &spool, &target, beats).await {
                        warn!(error = %crate::error_chain(&e), "the cluster's upkeep failed");
                    }
                }
                () = reg.stop.cancelled() => {
                    match hand_back(&mut session.client, &reg, &target).await {
                        Ok(n) => info!(notifications = n, "handed this gateway's notifications back to the others"),
                        Err(e) => warn!(error = %crate::error_chain(&e), "handing notifications back failed; the others rescue them after lease_s"),
                    }
                    let _ = session.client.execute("SELECT pg_advisory_unlock($1)", &[&reg.lock_key()]).await;
                    session.connection.abort();
                    return;
                }
            }
            if session.overflowed.swap(false, Ordering::AcqRel) {
                reg.resync_owed.store(true, Ordering::Release);
            }
            // Owed until it is passed on.
            if reg.resync_owed.load(Ordering::Acquire)
                && events.try_send(ClusterEvent::Resync).is_ok()
            {
                reg.resync_owed.store(false, Ordering::Release);
            }
        }
        if spool.strong_count() == 0 {
            return;
        }
        warn!(target = %target, "the gateway's database session was lost; opening a new one");
        let mut wait = Duration::from_millis(100);
        session = loop {
            tokio::select! {
                opened = open_session(&pg_config, &config, &reg) => match opened {
                    Ok(s) => break s,
                    Err(e) => warn!(error = %crate::error_chain(&e), "opening the gateway's session again"),
                },
                () = reg.stop.cancelled() => return,
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(5));
        };
        // What was said while the session was down is not known: read everything again.
        reg.resync_owed.store(true, Ordering::Release);
    }
}

/// A heartbeat: this gateway's row refreshed (or written again under a new id when the others
/// declared it dead), then the rescue of the gateways that are gone.
async fn beat(
    c: &mut Client,
    reg: &Registration,
    target: &str,
    events: &mpsc::Sender<ClusterEvent>,
    warned: &mut std::collections::HashSet<uuid::Uuid>,
) -> Result<(), SpoolError> {
    let apps = reg.apps();
    let alive = c
        .execute(
            &format!(
                "UPDATE gateways SET heartbeat_at = {DB_NOW}, apps = $2, lock_key = $3 WHERE id = $1"
            ),
            &[&reg.me(), &apps, &reg.lock_key()],
        )
        .await
        .map_err(pg(target, "writing the gateway's heartbeat"))?;
    let gone: Vec<String> = {
        let mut served = reg
            .served
            .lock()
            .expect("registration lock is never poisoned");
        let (last, removed) = &mut *served;
        for a in last.iter().filter(|a| !apps.contains(a)) {
            removed.insert(a.clone(), 0);
        }
        removed.retain(|a, _| !apps.contains(a));
        for beats in removed.values_mut() {
            *beats += 1;
        }
        last.clone_from(&apps);
        removed
            .iter()
            .filter(|(_, b)| **b >= HAND_BACK_AFTER)
            .map(|(a, _)| a.clone())
            .collect()
    };
    if !gone.is_empty() && alive > 0 {
        let n = c
            .execute(
                "WITH freed AS (UPDATE notifications SET owner = NULL WHERE state < 3 \
                 AND app = ANY($2) AND owner = $1 RETURNING 1) \
                 SELECT pg_notify($3, '') FROM (SELECT 1 FROM freed LIMIT 1) f",
                &[&reg.me(), &gone, &WORK],
            )
            .await
            .map_err(pg(target, "handing back the notifications of apps removed"))?;
        if n > 0 {
            info!(apps = ?gone, "apps no longer served here: their notifications are handed back to the gateways that serve them");
        }
        // Handed back (a failure above keeps them for the next heartbeat).
        let mut served = reg
            .served
            .lock()
            .expect("registration lock is never poisoned");
        for a in &gone {
            served.1.remove(a);
        }
    }
    if alive == 0 {
        let old = reg.me();
        // What dispatch holds under the old registration is someone else's now: dropped
        // before this gateway claims anything again.
        tokio::select! {
            sent = events.send(ClusterEvent::Fenced) => if sent.is_err() {
                return Ok(());
            },
            // Stopping (or nobody reading: `db copy`) is not a reason to hang.
            () = reg.stop.cancelled() => return Ok(()),
            () = tokio::time::sleep(Duration::from_secs(10)) => {
                warn!("dispatch did not take the news that this gateway was declared dead in time");
            }
        }
        *reg.id.lock().expect("registration lock is never poisoned") = uuid::Uuid::now_v7();
        warn!(old = %old, new = %reg.me(), "the other gateways declared this one dead (its heartbeat or session lapsed) and rescued its notifications; registering again. Outcomes of sends made under the old registration are not recorded");
        register(c, reg, target).await?;
        reg.resync_owed.store(true, Ordering::Release);
    }
    rescue(c, reg, target, warned).await?;
    Ok(())
}

/// Every few heartbeats: the pending count read again (what the others claimed and finished
/// changes it), and now and then the backstop — rows whose owner has no registration (deleted
/// by hand, say) freed — on one gateway at a time.
async fn upkeep(
    c: &mut Client,
    spool: &Weak<Inner>,
    target: &str,
    beats: u64,
) -> Result<(), SpoolError> {
    if beats.is_multiple_of(RECOUNT_EVERY) {
        let pending: i64 = c
            .query_one("SELECT count(*) FROM notifications WHERE state < 3", &[])
            .await
            .map_err(pg(target, "counting pending notifications"))?
            .get(0);
        if let Some(inner) = spool.upgrade() {
            inner
                .pending
                .store(u64::try_from(pending).unwrap_or(0), Ordering::Release);
        }
    }
    if beats.is_multiple_of(ORPHANS_EVERY) {
        let tx = c
            .transaction()
            .await
            .map_err(pg(target, "freeing orphaned notifications"))?;
        let ours: bool = tx
            .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&ORPHAN_LOCK])
            .await
            .map_err(pg(target, "freeing orphaned notifications"))?
            .get(0);
        if ours {
            let n = tx
                .execute(
                    "UPDATE notifications SET owner = NULL WHERE state < 3 AND owner IS NOT NULL \
                     AND NOT EXISTS (SELECT 1 FROM gateways g WHERE g.id = notifications.owner)",
                    &[],
                )
                .await
                .map_err(pg(target, "freeing orphaned notifications"))?;
            if n > 0 {
                tx.execute(&format!("NOTIFY {WORK}"), &[])
                    .await
                    .map_err(pg(target, "freeing orphaned notifications"))?;
                warn!(
                    notifications = n,
                    "freed notifications held by no registered gateway"
                );
            }
        }
        tx.commit()
            .await
            .map_err(pg(target, "freeing orphaned notifications"))?;
    }
    Ok(())
}

/// A notification as dispatch's event.
fn forward(events: &mpsc::Sender<ClusterEvent>, reg: &Registration, channel: &str, payload: &str) {
    let event = if channel == WORK {
        Some(ClusterEvent::Work)
    } else if channel == PAUSE {
        Some(ClusterEvent::Paused)
    } else if channel == CANCEL || channel == CANCELLED {
        // Asks go to every gateway but the asker; answers to the asker alone.
        let (gateway, body) = payload.split_once('\t').unwrap_or_default();
        let gateway = uuid::Uuid::parse_str(gateway).ok();
        let mine = gateway.is_some_and(|g| g == reg.me());
        match (channel == CANCEL, mine, gateway) {
            (true, false, Some(from)) => {
                CancelAsk::decode(body).map(|ask| ClusterEvent::CancelAsked { from, ask })
            }
            (false, true, _) => CancelAnswer::decode(body).map(ClusterEvent::CancelAnswered),
            _ => None,
        }
    } else {
        let mut parts = payload.splitn(3, '\t');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(sign), Some(app), Some(hex)) => {
                DeviceToken::parse(hex).ok().map(|token| match sign {
                    "+" => ClusterEvent::DeadToken {
                        app: app.to_owned(),
                        token,
                    },
                    _ => ClusterEvent::TokenCleared {
                        app: app.to_owned(),
                        token,
                    },
                })
            }
            _ => None,
        }
    };
    if let Some(e) = event
        && events.try_send(e).is_err()
    {
        reg.resync_owed.store(true, Ordering::Release);
    }
}

/// The payload of a dead-token change.
pub(super) fn dead_payload(registered: bool, app: &str, token: &DeviceToken) -> String {
    format!(
        "{}\t{app}\t{}",
        if registered { '+' } else { '-' },
        token.as_str()
    )
}

/// Every registered gateway, with what it holds.
pub(super) async fn gateways(
    c: &deadpool_postgres::Object,
    target: &str,
    me: uuid::Uuid,
) -> Result<Vec<GatewayInfo>, SpoolError> {
    let held = c
        .query(
            "SELECT owner, count(*) FROM notifications WHERE state < 3 AND owner IS NOT NULL \
             GROUP BY owner",
            &[],
        )
        .await
        .map_err(pg(target, "counting what each gateway holds"))?;
    let held: std::collections::HashMap<uuid::Uuid, i64> =
        held.iter().map(|r| (r.get(0), r.get(1))).collect();
    let rows = c
        .query(
            "SELECT id, host, started_at, heartbeat_at, apps FROM gateways ORDER BY started_at",
            &[],
        )
        .await
        .map_err(pg(target, "reading the gateways"))?;
    Ok(rows
        .iter()
        .map(|r| {
            let id: uuid::Uuid = r.get(0);
            GatewayInfo {
                id: id.to_string(),
                host: r.get(1),
                started_at: from_ms(r.get(2)),
                heartbeat_at: from_ms(r.get(3)),
                apps: r.get(4),
                holds: held.get(&id).copied().unwrap_or(0) as u64,
                this: id == me,
            }
        })
        .collect())
}
