//! Dispatch: from the spool to APNs and back (docs/architecture.md, docs/dispatch.md).
//!
//! # Parts
//!
//! - `ready`: each app's bounded in-memory queue. Ingest offers what it just committed
//!   ([`Dispatcher::offer`]); what does not fit stays in the spool.
//! - `scheduler`: reads the spool back only when needed — recovery, scheduled notifications
//!   whose time has come, due retries, a backlog that overflowed memory.
//! - `worker`: one per app; sends through the app's `apns::Pool` with many streams in flight
//!   and decides each outcome (`crate::outcomes`).
//! - the recorder (`crate::outcomes::record`, run here): records decisions in batches,
//!   registers dead tokens, and only then lets the queues forget the ids. It knows dispatch
//!   through `outcomes::Dispatch`, which `Shared` implements.
//! - `credentials`: each app's newest valid credential, pool and token signer; expiry warnings.
//!
//! ```text
//! ingest ──offer──▶ ready queue ──▶ worker ──▶ Pool::send ──▶ Outcome ──▶ decide ──▶ recorder ──▶ spool
//!                       ▲                                                                │
//!                       └────────── scheduler (due, retries, backlog) ◀──── spool ◀─────┘
//! ```

mod cancel;
mod cluster;
mod credentials;
mod guard;
mod pause;
mod ready;
mod scheduler;
mod shared;
mod supersede;
mod worker;

pub use cancel::Cancelled;
pub use ready::{Held, Ready, ReadyQueue};
pub use supersede::SupersedeHold;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use apns::Pool;
use apns::auth::{Auth, TokenSigner};
use apns::clock::SystemClock;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::{Config, Credential};
use crate::events::Events;
use crate::outcomes::history::{self, History, Sample};
use crate::outcomes::{DeadTokens, Tally};
use crate::spool::{NewRequest, Spool, SpoolError, Store, StoredRequest};
use shared::Shared;
use worker::{AppWorker, Done};

/// Tunables; the defaults suit production.
#[derive(Debug, Clone)]
pub struct DispatchOptions {
    /// Notifications held in memory per app; the rest waits in the spool.
    pub queue_capacity: usize,
    /// Streams in flight per connection the worker aims for (times `max_connections`).
    pub streams_per_connection: usize,
    /// How often a halted app is probed.
    pub probe_interval: Duration,
    /// How often the spool is checked for due work.
    pub scan_interval: Duration,
    /// How often each app's newest valid credential is looked for (roll-over, expiry).
    pub credential_check: Duration,
    /// The wall clock provider tokens are signed by (a manual one in tests of their age rules).
    pub clock: Arc<dyn apns::clock::Clock>,
    /// The first retry's backoff ceiling; it doubles with each attempt (tests shorten it so
    /// that a retry does not wait real seconds).
    pub retry_base: Duration,
}

impl Default for DispatchOptions {
    fn default() -> Self {
        DispatchOptions {
            queue_capacity: 20_000,
            streams_per_connection: 1000,
            probe_interval: Duration::from_secs(60),
            scan_interval: Duration::from_secs(1),
            credential_check: Duration::from_secs(60),
            clock: Arc::new(SystemClock),
            retry_base: crate::outcomes::backoff::BASE,
        }
    }
}

/// An app's state for stats and readiness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppStatus {
    pub connections: usize,
    pub streams_in_flight: usize,
    /// Why it is halted, if it is.
    pub halted: Option<String>,
    pub queued_in_memory: usize,
    /// Time left on the certificate in use (certificate auth).
    pub certificate_expires_in: Option<Duration>,
    /// Age of the provider token in use (token auth, once one is signed).
    pub token_age: Option<Duration>,
    /// The file of the credential new connections use.
    pub credential: Option<std::path::PathBuf>,
}

/// The running dispatcher.
#[derive(Debug)]
pub struct Dispatcher {
    shared: Arc<Shared>,
    /// To the recorder; taken at shutdown so the recorder ends once the workers have.
    done: Mutex<Option<mpsc::Sender<Done>>>,
    /// Every worker, the recorder and the scheduler; awaited on shutdown.
    tracker: TaskTracker,
    signers: Mutex<HashMap<(String, String), Arc<TokenSigner>>>,
    /// The configuration in force (shared with the ways in), for reloads and the credential
    /// check.
    config: Arc<crate::config::Current>,
    /// When each certificate file was last warned about.
    warned: Mutex<HashMap<std::path::PathBuf, SystemTime>>,
    /// Workers of apps removed from the configuration, kept so that an app added back gets
    /// its old worker and queue again: its sends still in flight are known there.
    retired: Mutex<HashMap<String, Arc<AppWorker>>>,
    /// The last hour in samples, for the dashboard's charts.
    history: Mutex<History>,
}

impl Dispatcher {
    /// Recovers the spool (in-flight rows back to the queue), loads the dead tokens and starts
    /// a worker per app, the recorder and the scheduler.
    pub async fn start(
        current: Arc<crate::config::Current>,
        spool: Store,
        options: DispatchOptions,
    ) -> Result<Arc<Dispatcher>, SpoolError> {
        let news = spool.cluster_events();
        let report = spool.recover().await?;
        info!(backend = spool.backend(), requeued = report.requeued, pending = report.pending, took = ?report.elapsed, "spool recovered");
        let dead = Arc::new(DeadTokens::new(spool.all_dead_tokens().await?));
        let config = current.get();
        let (done_tx, done_rx) = mpsc::channel(4096);
        let shared = Arc::new(Shared {
            spool,
            events: Arc::new(Events::start(&config)),
            dead,
            options,
            shutdown: CancellationToken::new(),
            apps: RwLock::new(HashMap::new()),
            scan_wake: Notify::new(),
            rescan_needed: AtomicBool::new(true),
            next_retry: Mutex::new(None),
            tally: Mutex::new(Tally::default()),
            paused: Mutex::new(None),
            pauses: RwLock::new(HashMap::new()),
            pause_turn: tokio::sync::Mutex::new(()),
            cancel_asks: Mutex::new(HashMap::new()),
        });
        // The operators' pauses before anything runs: the workers start paused or not by them,
        // and a start that cannot read them stops here, holding nothing.
        shared.reload_pauses().await?;
        let d = Arc::new(Dispatcher {
            shared: Arc::clone(&shared),
            done: Mutex::new(Some(done_tx)),
            tracker: TaskTracker::new(),
            signers: Mutex::new(HashMap::new()),
            config: Arc::clone(&current),
            warned: Mutex::new(HashMap::new()),
            retired: Mutex::new(HashMap::new()),
            history: Mutex::new(History::default()),
        });
        d.history
            .lock()
            .expect("history lock")
            .start(std::time::Instant::now(), &Tally::default());
        crate::metrics::gauge("pushgate_dispatch_paused", &[], 0.0);
        d.tracker
            .spawn(crate::outcomes::record(Arc::clone(&shared), done_rx));
        d.tracker.spawn(scheduler::run(Arc::clone(&shared)));
        if let Some(news) = news {
            d.tracker.spawn(cluster::follow(Arc::clone(&shared), news));
        }
        // The signers first, with the cluster's tokens, then the workers that use them.
        d.make_signers(&config);
        d.sync_provider_tokens().await;
        d.apply_apps(&config);
        shared.scan_wake.notify_one();
        let weak = Arc::downgrade(&d);
        let stop = shared.shutdown.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(cluster::TOKEN_SYNC) => {}
                    () = stop.cancelled() => return,
                }
                match weak.upgrade() {
                    Some(d) => d.sync_provider_tokens().await,
                    None => return,
                }
            }
        });
        let weak = Arc::downgrade(&d);
        let stop = shared.shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(history::INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = stop.cancelled() => return,
                }
                match weak.upgrade() {
                    Some(d) => {
                        let (tally, now) = (d.tally(), d.history_now());
                        let mut h = d.history.lock().expect("history lock");
                        h.sample(SystemTime::now(), &tally, &now);
                    }
                    None => return,
                }
            }
        });
        let weak = Arc::downgrade(&d);
        let (every, stop) = (shared.options.credential_check, shared.shutdown.clone());
        tokio::spawn(async move {
            // At start (expiry warnings at once), then every `credential_check`.
            loop {
                match weak.upgrade() {
                    Some(d) => d.check_credentials(),
                    None => return,
                }
                tokio::select! {
                    () = tokio::time::sleep(every) => {}
                    () = stop.cancelled() => return,
                }
            }
        });
        Ok(d)
    }

    /// Outcomes since start.
    pub fn tally(&self) -> Tally {
        self.shared.tally.lock().expect("tally lock").clone()
    }

    /// The last hour's samples, oldest first, and the interval in progress up to `tally` (the
    /// caller's copy of [`Dispatcher::tally`]).
    pub fn history(&self, tally: &Tally) -> (Vec<Sample>, Sample) {
        let now = self.history_now();
        let h = self.history.lock().expect("history lock");
        (
            h.samples().cloned().collect(),
            h.live(SystemTime::now(), tally, &now),
        )
    }

    /// The queue's depth and the first apps' halts, as a sample records them.
    fn history_now(&self) -> history::Now {
        let config = self.config.get();
        let mut names: Vec<&str> = config.apps.iter().map(|a| a.name.as_str()).collect();
        names.sort_unstable();
        names.truncate(history::STRIP_APPS);
        let apps = names
            .into_iter()
            .map(|name| {
                let halted = self.status(name).is_some_and(|s| s.halted.is_some());
                (name.to_owned(), halted)
            })
            .collect();
        history::Now {
            instant: std::time::Instant::now(),
            queued: self.shared.spool.pending(),
            apps,
        }
    }

    /// The event hub (delivery log, hooks).
    pub fn events(&self) -> &Arc<Events> {
        &self.shared.events
    }

    /// The dead-token set the API keeps in step when a token is cleared.
    pub fn dead_tokens(&self) -> &Arc<DeadTokens> {
        &self.shared.dead
    }

    /// Hands just-committed requests to their apps' queues (no re-read), ending the
    /// submission's supersede `hold` first (`dispatch::supersede`): what they replaced is
    /// counted, and gives its place in memory to its successor. Scheduled ones — any with a
    /// `send_at`: intake drops one already past, so the spool stored these as scheduled,
    /// nobody's — wait for the scheduler; what does not fit is read back from the spool later.
    pub fn offer(&self, requests: &[NewRequest], hold: SupersedeHold) {
        let now = SystemTime::now();
        let stored: Vec<Option<Arc<StoredRequest>>> = requests
            .iter()
            .map(|r| {
                r.send_at.is_none().then(|| {
                    Arc::new(StoredRequest {
                        request_id: r.submitted.map(|s| s.id),
                        created_at: r.submitted.map_or(now, |s| s.at),
                        app: r.app.clone(),
                        payload: r.payload.clone(),
                        push_type: r.push_type.clone(),
                        priority: r.priority,
                        topic: r.topic.clone(),
                        collapse_id: r.collapse_id.clone(),
                        apns_expiration: r.apns_expiration,
                        supersede: r.supersede.as_ref().map(|s| s.key),
                    })
                })
            })
            .collect();
        let replaced = self.end_supersede(requests, &stored, hold);
        let apps = self.shared.apps.read().expect("apps lock");
        for (r, request) in requests.iter().zip(&stored) {
            let Some(request) = request else {
                continue;
            };
            let Some(worker) = apps.get(&r.app) else {
                continue;
            };
            let fresh = |(id, _): &&(apns::ApnsId, apns::DeviceToken)| {
                replaced.is_empty() || !replaced.contains(id)
            };
            let items = r
                .notifications
                .iter()
                .filter(fresh)
                .map(|(id, token)| Ready {
                    id: *id,
                    token: token.clone(),
                    attempts: 0,
                    expires_at: r.expires_at,
                    request: Arc::clone(request),
                });
            let (_, handled) = worker.queue.fill(items);
            // Not all of them fit: the scheduler reads the rest back.
            let n = if replaced.is_empty() {
                r.notifications.len()
            } else {
                r.notifications.iter().filter(fresh).count()
            };
            if handled < n {
                self.shared.rescan();
            }
        }
    }

    /// Whether notification `id` of `app` is being sent now. The spool records it as queued
    /// until its outcome is committed; this is where "in flight" is known.
    pub fn is_in_flight(&self, app: &str, id: &apns::ApnsId) -> bool {
        let apps = self.shared.apps.read().expect("apps lock");
        apps.get(app).is_some_and(|w| w.queue.is_in_flight(id))
    }

    /// How many of `app`'s notifications are being sent now.
    pub fn in_flight_count(&self, app: &str) -> u64 {
        let apps = self.shared.apps.read().expect("apps lock");
        apps.get(app)
            .map_or(0, |w| w.queue.in_flight_count() as u64)
    }

    /// Connections, streams and health of `app`.
    pub fn status(&self, app: &str) -> Option<AppStatus> {
        let apps = self.shared.apps.read().expect("apps lock");
        let w = apps.get(app)?;
        let settings = w.settings();
        let pool = settings.pool;
        let stats = pool.as_ref().map(Pool::stats).unwrap_or_default();
        let (mut certificate_expires_in, mut token_age) = (None, None);
        match pool.as_ref().map(|p| &p.config().auth) {
            Some(Auth::Certificate(id)) => {
                certificate_expires_in = Some(
                    id.info()
                        .not_after
                        .duration_since(SystemTime::now())
                        .unwrap_or_default(),
                );
            }
            Some(Auth::Token(signer)) => token_age = signer.current_age(),
            None => {}
        }
        Some(AppStatus {
            connections: stats.connections,
            streams_in_flight: stats.streams_in_flight,
            halted: w.halted().map(|c| c.to_string()),
            queued_in_memory: w.queue.len(),
            certificate_expires_in,
            token_age,
            credential: settings.credential_file,
        })
    }

    /// Why dispatch is paused (outcomes cannot be committed), if it is.
    pub fn paused(&self) -> Option<String> {
        self.shared.paused()
    }

    /// Apps that are halted, with their reasons.
    pub fn halted(&self) -> Vec<(String, String)> {
        let mut v: Vec<_> = self
            .shared
            .apps()
            .into_iter()
            .filter_map(|a| a.halted().map(|r| (a.name.clone(), r.to_string())))
            .collect();
        v.sort();
        v
    }

    /// Puts a (re)loaded configuration in force: new connections use the new settings,
    /// connections in use finish their streams and close, halted apps resume, removed apps stop
    /// (their notifications stay in the spool until the app returns). The apps are applied
    /// first and the configuration published after, so a way in never accepts for an app whose
    /// worker does not exist yet.
    pub fn reload(&self, config: Arc<Config>) {
        self.shared.events.reload(&config);
        self.apply_apps(&config);
        self.config.set(config);
        self.shared.rescan();
    }

    /// The configuration in force, shared with the ways in (see [`crate::ingest::Intake`]).
    pub fn current(&self) -> &Arc<crate::config::Current> {
        &self.config
    }

    fn apply_apps(&self, config: &Config) {
        self.shared
            .spool
            .serve_apps(config.apps.iter().map(|a| a.name.clone()).collect());
        // Signers of keys no app uses any more go; the others are kept (`settings_for`).
        self.signers
            .lock()
            .expect("signers lock")
            .retain(|_, signer| {
                config.apps.iter().flat_map(|a| &a.credentials).any(
                    |c| matches!(c, Credential::Token { key, .. } if key.same_as(signer.key())),
                )
            });
        let mut apps = self.shared.apps.write().expect("apps lock");
        let mut keep = std::collections::HashSet::new();
        for app in &config.apps {
            keep.insert(app.name.clone());
            let (settings, problem) = self.settings_for(app);
            match apps.get(&app.name) {
                Some(w) => {
                    credentials::replace_settings(w, settings, problem, "configuration reloaded")
                }
                None => {
                    let Some(done) = self.done.lock().expect("done lock").clone() else {
                        continue;
                    };
                    let retired = self.retired.lock().expect("retired lock").remove(&app.name);
                    let (w, spawn) = match retired {
                        Some(w) => {
                            info!(app = %app.name, "app added back to the configuration");
                            credentials::replace_settings(&w, settings, problem, "app added back");
                            let spawn = w.revive();
                            // After `revive`: a running task that used up the resume's wake-up
                            // while still stopping looks again now.
                            w.wake.notify_one();
                            (w, spawn)
                        }
                        None => (
                            Arc::new(AppWorker::new(
                                app.name.clone(),
                                Arc::clone(&self.shared.events),
                                self.shared.options.queue_capacity,
                                settings,
                                problem,
                            )),
                            true,
                        ),
                    };
                    w.operator_paused.store(
                        self.shared.operator_pause(&app.name).is_some(),
                        Ordering::Release,
                    );
                    if spawn {
                        self.tracker.spawn(worker::run(
                            Arc::clone(&w),
                            Arc::clone(&self.shared),
                            done,
                        ));
                    }
                    apps.insert(app.name.clone(), w);
                }
            }
        }
        apps.retain(|name, w| {
            let stays = keep.contains(name);
            if !stays {
                info!(app = %name, "app removed from the configuration; its notifications stay queued");
                w.stopped.store(true, Ordering::Release);
                w.wake.notify_one();
                if let Some(p) = w.settings().pool {
                    p.close();
                }
                self.retired
                    .lock()
                    .expect("retired lock")
                    .insert(name.clone(), Arc::clone(w));
            }
            stays
        });
    }

    /// Stops taking work, lets streams in flight finish within `grace`, records their outcomes,
    /// and closes the connections. What was not finished stays in the spool (in flight rows are
    /// re-queued at the next start).
    pub async fn shutdown(&self, grace: Duration) {
        self.shared.shutdown.cancel();
        self.done.lock().expect("done lock").take();
        self.tracker.close();
        for w in self.shared.apps() {
            // Sends still waiting for a stream slot give up at once (their notifications go
            // back to the queue); streams already open finish within the grace period.
            if let Some(p) = w.settings().pool {
                p.close();
            }
            w.wake.notify_one();
        }
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            warn!(
                ?grace,
                "streams still in flight at the end of the grace period; they will be re-sent after restart"
            );
        }
        for w in self.shared.apps() {
            if let Some(p) = w.settings().pool {
                p.close();
            }
        }
    }
}
