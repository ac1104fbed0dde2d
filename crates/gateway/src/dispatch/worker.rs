//! One app's sender: takes ready notifications, sends them through the app's pool with many
//! streams in flight, and turns each outcome into a decision for the recorder.
//!
//! While the app is halted it takes nothing; every probe interval it sends one notification as
//! a probe, and resumes if that is not refused again (or when the configuration is reloaded).

use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use apns::{Notification, Outcome, Pool};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::Shared;
use super::guard::{Closed, EnvGuard, Held};
use super::ready::{Ready, ReadyQueue};
use crate::outcomes::{Decision, Limits, decide, expired, suppressed};
use crate::reason::{Cause, GatewayReason};
use crate::spool::Completion;

/// Notifications taken from the queue at once (one in-flight mark covers them).
const TAKE: usize = 2048;
/// The most free slots the worker waits for before it takes more (fewer with a small pool).
const REFILL_CHUNK: usize = 64;

/// A decision for the recorder (`outcomes::record`).
pub(crate) type Done = crate::outcomes::Recorded<AppWorker>;

#[derive(Debug)]
pub(crate) struct AppWorker {
    pub name: String,
    pub queue: Arc<ReadyQueue>,
    pub settings: RwLock<Settings>,
    /// Bumped after every change of `settings`, so the worker re-reads them only then instead
    /// of cloning them for every answer.
    pub settings_version: std::sync::atomic::AtomicU64,
    /// Whether and why it is halted. A std mutex, never held across an await.
    halted: Mutex<Halt>,
    /// Wakes the worker on resume (reload) or stop.
    pub wake: Notify,
    pub stopped: std::sync::atomic::AtomicBool,
    /// Paused by an operator (`dispatch::cancel`): nothing is taken, not even a probe; what is
    /// in flight finishes.
    pub operator_paused: std::sync::atomic::AtomicBool,
    /// Whether its task runs. Changed with `stopped` under this lock, so that an app removed
    /// and added back either keeps its running task or gets a new one, never both or none.
    running: Mutex<bool>,
    pub metrics: crate::metrics::AppMetrics,
    /// Told when the app halts.
    events: Arc<crate::events::Events>,
}

/// An app's halt, and what withdraws the sends started before it.
#[derive(Debug, Default)]
struct Halt {
    /// `Some(reason)` while halted.
    reason: Option<Cause>,
    /// Every send waits on a clone of this; a halt cancels it (and puts a new one in its place
    /// for the probes), so that sends still waiting for a stream are withdrawn instead of
    /// reaching APNs with a credential it has just refused.
    withdraw: CancellationToken,
}

/// What a reload may change.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub pool: Option<Pool>,
    /// The index of the credential the pool uses.
    pub credential: Option<usize>,
    /// Its file: what names it to a reader of another configuration than the one the index
    /// is into (a reload in between).
    pub credential_file: Option<std::path::PathBuf>,
    pub limits: Limits,
    pub suppress_dead_tokens: bool,
    pub max_in_flight: usize,
}

impl AppWorker {
    pub fn new(
        name: String,
        events: Arc<crate::events::Events>,
        queue_capacity: usize,
        settings: Settings,
        halted: Option<Cause>,
    ) -> AppWorker {
        AppWorker {
            metrics: crate::metrics::AppMetrics::new(&name),
            name,
            queue: Arc::new(ReadyQueue::new(queue_capacity)),
            settings: RwLock::new(settings),
            settings_version: std::sync::atomic::AtomicU64::new(0),
            halted: Mutex::new(Halt {
                reason: halted,
                withdraw: CancellationToken::new(),
            }),
            wake: Notify::new(),
            stopped: std::sync::atomic::AtomicBool::new(false),
            operator_paused: std::sync::atomic::AtomicBool::new(false),
            running: Mutex::new(true),
            events,
        }
    }

    pub fn halted(&self) -> Option<Cause> {
        self.halted.lock().expect("halt lock").reason.clone()
    }

    pub(crate) fn is_halted(&self) -> bool {
        self.halted.lock().expect("halt lock").reason.is_some()
    }

    /// What withdraws sends started now, should the app halt before they are written.
    fn withdrawal(&self) -> CancellationToken {
        self.halted.lock().expect("halt lock").withdraw.clone()
    }

    pub fn halt(&self, reason: Cause) {
        let newly = {
            let mut h = self.halted.lock().expect("halt lock");
            let newly = h.reason.is_none();
            h.reason = Some(reason.clone());
            if newly {
                std::mem::take(&mut h.withdraw).cancel();
            }
            newly
        };
        if newly {
            warn!(app = %self.name, %reason, "app halted: its notifications stay queued");
            self.events.app_halted(&self.name, reason.as_str());
        }
    }

    pub fn resume(&self, why: &str) {
        let was = self.halted.lock().expect("halt lock").reason.take();
        if let Some(reason) = was {
            info!(app = %self.name, was = %reason, why, "app resumed");
        }
        self.wake.notify_one();
    }

    /// Marks a removed app added back as wanted again; true when its task had ended and a new
    /// one must be started (the same worker, so the same queue: ids still in flight from
    /// before the removal are known, and never sent a second time).
    pub fn revive(&self) -> bool {
        let mut running = self.running.lock().expect("running lock");
        self.stopped
            .store(false, std::sync::atomic::Ordering::Release);
        !std::mem::replace(&mut *running, true)
    }

    /// The task's last check before it ends: false when the app was added back meanwhile.
    fn may_end(&self, shutting_down: bool) -> bool {
        let mut running = self.running.lock().expect("running lock");
        if shutting_down || self.stopped.load(std::sync::atomic::Ordering::Acquire) {
            *running = false;
            true
        } else {
            false
        }
    }

    pub fn settings(&self) -> Settings {
        self.settings.read().expect("settings lock").clone()
    }
}

fn record_attempt(
    metrics: &crate::metrics::AppMetrics,
    outcome: &Outcome,
    took: std::time::Duration,
) {
    let (result, took) = match outcome {
        Outcome::Response(r) => (
            match r.status {
                200..=299 => "2xx",
                400..=499 => "4xx",
                _ => "5xx",
            },
            Some(took),
        ),
        Outcome::Timeout => ("timeout", None),
        Outcome::ConnectionLost { .. } => ("connection_lost", None),
        Outcome::Unreachable => ("unreachable", None),
        Outcome::ConnectionRejected => ("rejected_connection", None),
        Outcome::NotSentInTime => ("not_sent_in_time", None),
        // Not an attempt: withdrawn before it was written.
        Outcome::Withdrawn => return,
    };
    metrics.attempt(result, took);
}

fn requeued(r: &Ready) -> Completion {
    Completion {
        id: r.id,
        state: crate::spool::State::Queued,
        attempts: r.attempts,
        status: None,
        reason: None,
        due_at: None,
        conn: None,
    }
}

fn notification(r: &Ready) -> Notification {
    let q = &r.request;
    Notification {
        id: r.id,
        token: r.token.clone(),
        topic: q.topic.clone(),
        push_type: q.push_type.clone(),
        priority: q.priority,
        expiration: q.apns_expiration,
        collapse_id: q.collapse_id.clone(),
        payload: q.payload.clone(),
    }
}

/// One send: the notification, its outcome and the connection it came from, how long it took,
/// and whether it was never sent
/// because its pool had been closed (a reload or a shutdown) or the app halted first. A named
/// function, so the set of sends in progress holds this one future type unboxed.
async fn send_one(
    pool: Pool,
    r: Ready,
    withdraw: tokio_util::sync::WaitForCancellationFutureOwned,
) -> (Ready, apns::Sent, std::time::Duration, bool) {
    let n = notification(&r);
    let started = Instant::now();
    // Never opened past the notification's expiry, however long the wait for a stream.
    let left = r
        .expires_at
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    let sent = pool.send_traced(&n, Some(started + left), withdraw).await;
    let unsent = sent.outcome == Outcome::Withdrawn
        || (sent.outcome == Outcome::Unreachable && pool.is_closed());
    (r, sent, started.elapsed(), unsent)
}

/// Runs `app` until it is stopped or the gateway shuts down and its streams have finished.
pub(crate) async fn run(app: Arc<AppWorker>, shared: Arc<Shared>, done: mpsc::Sender<Done>) {
    let mut sends = FuturesUnordered::new();
    let mut next_probe = Instant::now() + shared.options.probe_interval;
    let mut probing = false;
    let mut seen = app
        .settings_version
        .load(std::sync::atomic::Ordering::Acquire);
    let mut settings = app.settings();
    let mut guard = EnvGuard::default();
    loop {
        let shutting_down = shared.shutdown.is_cancelled();
        let stopping = shutting_down || app.stopped.load(std::sync::atomic::Ordering::Acquire);
        if stopping && sends.is_empty() {
            // What the guard held goes back to the queue before the task ends.
            let _ = put_back(&app, &done, guard.reset()).await;
            if app.may_end(shutting_down) {
                if !shutting_down {
                    // Removed from the configuration: what waits unsent stays in the spool.
                    app.queue.drop_waiting();
                }
                break;
            }
            continue;
        }
        let version = app
            .settings_version
            .load(std::sync::atomic::Ordering::Acquire);
        if version != seen {
            seen = version;
            settings = app.settings();
            // New settings, new proof: what was held goes back to the queue.
            if !put_back(&app, &done, guard.reset()).await {
                break;
            }
        }
        if sends.is_empty() && app.is_halted() {
            // A halted app learns nothing more until it resumes: what the guard held goes
            // back to the queue instead of staying in flight for probe after probe.
            if !put_back(&app, &done, guard.reset()).await {
                break;
            }
        } else if sends.is_empty()
            && app.queue.is_empty()
            && let Some(closed) = guard.idle()
            && !settle(&app, &done, closed).await
        {
            break;
        }
        let halted = app.is_halted();
        // While outcomes cannot be committed, nothing new is sent (the recorder wakes us);
        // nor while an operator has paused the app (a resume wakes us).
        let paused = shared.is_paused()
            || app
                .operator_paused
                .load(std::sync::atomic::Ordering::Acquire);
        let probe_now =
            halted && !paused && !probing && sends.is_empty() && Instant::now() >= next_probe;
        let room = settings.max_in_flight.saturating_sub(sends.len());
        // Refill in chunks, not one slot per answer: each take locks the queue and settles
        // expiry and suppression for what it took, which is cheaper done for many at once.
        let chunk = (settings.max_in_flight / 16).clamp(1, REFILL_CHUNK);
        // Without a usable credential (halted `NoUsableCredential`) nothing can be sent, not
        // even a probe: taking work would only empty the queue.
        let idle = stopping || paused || settings.pool.is_none();
        let want = match (idle, halted, probe_now) {
            (true, _, _) => 0,
            (false, false, _) if room < chunk => 0,
            (false, false, _) => room.min(TAKE),
            (false, true, true) => 1,
            (false, true, false) => 0,
        };
        let batch = if want > 0 {
            let batch = app.queue.take(want);
            // A backlog waits in the spool: refill before the queue runs dry.
            if app.queue.wants_refill() {
                shared.scan_wake.notify_one();
            }
            batch
        } else {
            Vec::new()
        };
        if !batch.is_empty() {
            if let Some((pool, go)) = start_sends(&app, &shared, &done, &settings, batch).await {
                // A probe counts only once it is sent: one settled unsent (expired, or to a
                // dead token) leaves the probe due, and the next notification is tried.
                if probe_now {
                    probing = true;
                    next_probe = Instant::now() + shared.options.probe_interval;
                    info!(app = %app.name, "probing a halted app with one notification");
                }
                let withdraw = app.withdrawal();
                for r in go {
                    sends.push(send_one(
                        pool.clone(),
                        r,
                        withdraw.clone().cancelled_owned(),
                    ));
                }
            }
            continue;
        }
        if probe_now {
            // Nothing to probe with; look again later.
            next_probe = Instant::now() + shared.options.probe_interval;
        }
        tokio::select! {
            _ = app.queue.arrived.notified(), if want > 0 => {}
            Some((ready, apns::Sent { outcome, conn }, took, unsent)) = sends.next(), if !sends.is_empty() => {
                record_attempt(&app.metrics, &outcome, took);
                let was_probe = std::mem::take(&mut probing);
                let passed = if unsent {
                    // Never sent: its pool was closed by a reload or the shutdown, or the app
                    // halted first. Back to the queue, due at once, without using an attempt.
                    Some(Held { decision: Decision { completion: requeued(&ready), dead: None, halt: None }, ready })
                } else {
                    let now = SystemTime::now();
                    let mut decision = if outcome == Outcome::NotSentInTime {
                        // It expired while it waited for a stream: never sent.
                        Decision { completion: expired(&ready), dead: None, halt: None }
                    } else {
                        let mut d = decide(&ready, &app.name, &outcome, settings.limits, now);
                        // An attempt is one that went out on a connection: answered, or cut
                        // off waiting. (An unreachable endpoint's send never did.)
                        let went_out = matches!(
                            outcome,
                            Outcome::Response(_) | Outcome::Timeout | Outcome::ConnectionLost { .. }
                        );
                        d.completion.conn = conn.filter(|_| went_out);
                        d
                    };
                    if outcome == Outcome::Unreachable {
                        not_before_reconnect(&mut decision, settings.pool.as_ref(), now);
                    }
                    let (passed, closed) = guard.answer(&outcome, ready, decision);
                    if let Some(closed) = closed
                        && !settle(&app, &done, closed).await
                    {
                        break;
                    }
                    passed
                };
                // A held answer (BadDeviceToken before the credential proved itself) neither
                // halts nor resumes.
                let Some(Held { ready, decision }) = passed else { continue };
                match &decision.halt {
                    Some(reason) => app.halt(reason.clone()),
                    // Only an answer from APNs shows the credential works again: a timeout or
                    // an unreachable endpoint keeps the app halted until the next probe.
                    None if was_probe && matches!(outcome, Outcome::Response(_)) && !unsent => {
                        app.resume("a probe succeeded");
                        // A resume opens a new window for the wrong-environment guard.
                        if !put_back(&app, &done, guard.reset()).await {
                            break;
                        }
                    }
                    None => {}
                }
                if done.send(Done { app: Arc::clone(&app), token: ready.token, decision }).await.is_err() {
                    break;
                }
            }
            _ = app.wake.notified() => {}
            // Only when a probe could start then: with sends in flight or dispatch paused a
            // past `next_probe` would wake this loop at once, over and over.
            _ = tokio::time::sleep_until(next_probe), if halted && !probing && !paused && sends.is_empty() => {}
            _ = shared.shutdown.cancelled(), if !stopping => {}
        }
    }
}

/// An unreachable endpoint: the retry waits at least until the pool will try to connect
/// again. Unreachable sends use no attempt, so their own backoff would stay at its first step
/// and an outage would rewrite every queued row each second.
fn not_before_reconnect(decision: &mut Decision, pool: Option<&Pool>, now: SystemTime) {
    let Some(wait) = pool.and_then(Pool::reconnect_in) else {
        return;
    };
    if let Some(due) = decision.completion.due_at.as_mut() {
        *due = (*due).max(now + wait);
    }
}

/// Carries out the wrong-environment guard's verdict on the outcomes it held. False when the
/// recorder has gone (shutdown).
async fn settle(app: &Arc<AppWorker>, done: &mpsc::Sender<Done>, closed: Closed) -> bool {
    match closed {
        Closed::Commit(held) => forward(app, done, held).await,
        Closed::Halt(held) => {
            app.halt(GatewayReason::LikelyWrongEnvironment.into());
            put_back(app, done, held).await
        }
    }
}

/// Puts held outcomes back in the queue, due at once, without using an attempt.
async fn put_back(app: &Arc<AppWorker>, done: &mpsc::Sender<Done>, held: Vec<Held>) -> bool {
    let back = held
        .into_iter()
        .map(|h| Held {
            decision: Decision {
                completion: requeued(&h.ready),
                dead: None,
                halt: None,
            },
            ready: h.ready,
        })
        .collect();
    forward(app, done, back).await
}

async fn forward(app: &Arc<AppWorker>, done: &mpsc::Sender<Done>, items: Vec<Held>) -> bool {
    for Held { ready, decision } in items {
        let d = Done {
            app: Arc::clone(app),
            token: ready.token,
            decision,
        };
        if done.send(d).await.is_err() {
            return false;
        }
    }
    true
}

/// Settles what need not be sent (expired, suppressed) and returns the rest with the pool to
/// send them through. Being in flight is kept in memory (the queue's in-flight set), not
/// written to the spool: after a crash such a notification is queued and sent again either way.
async fn start_sends(
    app: &Arc<AppWorker>,
    shared: &Arc<Shared>,
    done: &mpsc::Sender<Done>,
    settings: &Settings,
    batch: Vec<Ready>,
) -> Option<(Pool, Vec<Ready>)> {
    let now = SystemTime::now();
    let mut go = Vec::with_capacity(batch.len());
    for r in batch {
        let settled: Option<Completion> = if now >= r.expires_at {
            Some(expired(&r))
        } else if settings.suppress_dead_tokens && shared.dead.is_dead(&app.name, &r.token) {
            Some(suppressed(&r))
        } else {
            None
        };
        match settled {
            Some(completion) => {
                let decision = Decision {
                    completion,
                    dead: None,
                    halt: None,
                };
                let _ = done
                    .send(Done {
                        app: Arc::clone(app),
                        token: r.token,
                        decision,
                    })
                    .await;
            }
            None => go.push(r),
        }
    }
    if go.is_empty() {
        return None;
    }
    let Some(pool) = settings.pool.clone() else {
        app.halt(GatewayReason::NoUsableCredential.into());
        app.queue.release(go.iter().map(|r| r.id));
        return None;
    };
    Some((pool, go))
}
