//! What dispatch's tasks share: the spool, the workers by name, the scheduler's wake-ups, the
//! tally and the pause; and the recorder's view of it (`outcomes::Dispatch`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::DispatchOptions;
use super::worker::AppWorker;
use crate::events::Events;
use crate::outcomes::{DeadTokens, Tally};
use crate::spool::Store;

#[derive(Debug)]
pub(crate) struct Shared {
    pub spool: Store,
    /// Where recorded outcomes and halts are told (delivery log, hooks).
    pub events: Arc<Events>,
    pub dead: Arc<DeadTokens>,
    pub options: DispatchOptions,
    pub shutdown: CancellationToken,
    /// App workers by name. A std lock, held to clone the list.
    pub(super) apps: RwLock<HashMap<String, Arc<AppWorker>>>,
    /// Wakes the scheduler.
    pub scan_wake: Notify,
    /// Something may be waiting in the spool that no queue has seen.
    pub rescan_needed: AtomicBool,
    /// The earliest due time of a retry recorded since the last scan.
    pub next_retry: Mutex<Option<SystemTime>>,
    /// Outcomes since start (a std lock, held to update or clone).
    pub tally: Mutex<Tally>,
    /// `Some(why)` while outcomes cannot be committed: no app takes new work until they are
    /// (a std lock, held to read or swap).
    pub(super) paused: Mutex<Option<String>>,
    /// The apps an operator paused, as the spool has them (`dispatch::cancel`). A std lock,
    /// held to read or change the map; taken after `apps` when both are held.
    pub(super) pauses: RwLock<HashMap<String, crate::spool::AppPause>>,
    /// Taken by whatever changes the pauses (an operator's, a reload of them from the spool),
    /// so that a stale read of the spool never undoes a newer change.
    pub(super) pause_turn: tokio::sync::Mutex<()>,
    /// This gateway's cancels waiting for the other gateways' answers, by ask (a std lock,
    /// held to look one up).
    pub(super) cancel_asks:
        Mutex<HashMap<uuid::Uuid, tokio::sync::mpsc::Sender<crate::spool::CancelAnswer>>>,
}

impl Shared {
    pub fn apps(&self) -> Vec<Arc<AppWorker>> {
        self.apps
            .read()
            .expect("apps lock")
            .values()
            .cloned()
            .collect()
    }

    pub fn rescan(&self) {
        self.rescan_needed.store(true, Ordering::Release);
        self.scan_wake.notify_one();
    }

    /// Why dispatch is paused, if it is.
    pub fn paused(&self) -> Option<String> {
        self.paused.lock().expect("pause lock").clone()
    }

    pub fn is_paused(&self) -> bool {
        self.paused.lock().expect("pause lock").is_some()
    }

    /// Pauses every app's sends: outcomes cannot be committed.
    pub(super) fn pause(&self, why: String) {
        let was = self.paused.lock().expect("pause lock").replace(why.clone());
        if was.is_none() {
            crate::metrics::gauge("pushgate_dispatch_paused", &[], 1.0);
            warn!(reason = %why, "dispatch paused: outcomes cannot be recorded; retrying, no new sends meanwhile");
        }
    }

    /// Ends a pause; the workers look for work again.
    pub(super) fn unpause(&self) {
        if self.paused.lock().expect("pause lock").take().is_some() {
            crate::metrics::gauge("pushgate_dispatch_paused", &[], 0.0);
            info!("outcomes recorded again; dispatch resumed");
            for w in self.apps() {
                w.wake.notify_one();
            }
        }
    }
}

/// The recorder's view of dispatch.
impl crate::outcomes::Dispatch for Shared {
    type App = AppWorker;

    fn app_name(app: &AppWorker) -> &str {
        &app.name
    }
    fn app_metrics(app: &AppWorker) -> &crate::metrics::AppMetrics {
        &app.metrics
    }
    fn release(app: &AppWorker, ids: &mut Vec<apns::ApnsId>) {
        app.queue.release(ids.drain(..));
    }
    fn spool(&self) -> &Store {
        &self.spool
    }
    fn events(&self) -> &Events {
        &self.events
    }
    fn dead_tokens(&self) -> &DeadTokens {
        &self.dead
    }
    fn tally(&self) -> &Mutex<Tally> {
        &self.tally
    }
    fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }
    fn pause(&self, why: String) {
        Shared::pause(self, why);
    }
    fn unpause(&self) {
        Shared::unpause(self);
    }
    fn retry_due(&self, at: SystemTime) {
        let mut next = self.next_retry.lock().expect("retry lock");
        *next = Some(next.map_or(at, |n| n.min(at)));
    }
    fn rescan(&self) {
        Shared::rescan(self);
    }
}
