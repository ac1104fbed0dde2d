//! Cancels and pauses (docs/cancel.md), where the spool and dispatch meet.
//!
//! A cancel must never take back a notification Apple then receives: on SQLite a notification
//! being sent is still `queued` in the spool, and only its app's queue knows it is in flight.
//! So a cancel first holds the queues of the apps it names (`ReadyQueue::hold`): what it names
//! leaves the queue and is not offered again, and the ids already taken — in flight, or their
//! outcome not yet committed — are set aside. Only then does it cancel in the spool what still
//! waits, those ids excepted, page by page; the holds end after that. A cancel runs in a task
//! of its own, so that a client going away mid-way cannot leave a queue held.
//!
//! A pause is the operator's, stored in the spool (`app_pauses`); each app's worker reads a
//! flag, set here from what the spool says at start, on every pause and resume, and when
//! another gateway sharing the spool says it paused or resumed an app.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use apns::ApnsId;
use tracing::{info, warn};

use super::worker::AppWorker;
use super::{Dispatcher, Shared};
use crate::spool::{AppPause, CANCEL_PAGE, CancelTarget, Spool, SpoolError, WaitingCursor};

/// What a cancel did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cancelled {
    /// The notifications it cancelled.
    pub ids: Vec<ApnsId>,
    /// How many, by app.
    pub by_app: Vec<(String, u64)>,
}

impl Cancelled {
    pub fn count(&self) -> u64 {
        self.by_app.iter().map(|(_, n)| n).sum()
    }
}

impl Dispatcher {
    /// Cancels what `target` names of `apps` that still waits (scheduled, queued, or waiting
    /// for a retry), never what is being sent or was. Answers what it cancelled. `Ids`
    /// cancels answer the ids; the bulk ones only the counts (`ids` stays empty).
    pub async fn cancel(
        &self,
        target: CancelTarget,
        apps: Vec<String>,
    ) -> Result<Cancelled, SpoolError> {
        let shared = Arc::clone(&self.shared);
        let workers: Vec<Arc<AppWorker>> = apps.iter().filter_map(|a| self.worker(a)).collect();
        let task = tokio::spawn(async move {
            let target = Arc::new(target);
            let mut holds = Vec::with_capacity(workers.len());
            let mut busy = HashSet::new();
            for w in &workers {
                let (hold, taken) = w.queue.hold(Arc::clone(&target));
                busy.extend(taken);
                holds.push((Arc::clone(w), hold));
            }
            let result = cancel_waiting(&shared, &target, &apps, &busy).await;
            for (w, hold) in &holds {
                w.queue.end_hold(*hold);
            }
            shared.rescan();
            // The holds lapse `RECENT` after their end; what they kept out and the cancel left
            // waiting (a failed write) is offered again by a scan then.
            let later = Arc::clone(&shared);
            tokio::spawn(async move {
                tokio::time::sleep(super::ready::HOLD_LAPSE).await;
                for (w, _) in holds {
                    w.queue.lapse_holds();
                }
                later.rescan();
            });
            if let Ok(done) = &result {
                for (app, n) in &done.by_app {
                    crate::metrics::cancelled(app, *n);
                }
                let n = done.count();
                if n > 0 {
                    info!(cancelled = n, target = %describe(&target), "notifications cancelled");
                }
            }
            result
        });
        match task.await {
            Ok(result) => result,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    /// The worker of `app`, a removed app's too (its sends in flight are known there).
    fn worker(&self, app: &str) -> Option<Arc<AppWorker>> {
        let live = self
            .shared
            .apps
            .read()
            .expect("apps lock")
            .get(app)
            .cloned();
        live.or_else(|| self.retired.lock().expect("retired lock").get(app).cloned())
    }

    /// The operator's pause of `app`, if it is paused.
    pub fn pause_of(&self, app: &str) -> Option<AppPause> {
        self.shared.operator_pause(app)
    }

    /// Every app an operator paused.
    pub fn operator_pauses(&self) -> Vec<AppPause> {
        let mut v: Vec<AppPause> = self
            .shared
            .pauses
            .read()
            .expect("pauses lock")
            .values()
            .cloned()
            .collect();
        v.sort_by(|a, b| a.app.cmp(&b.app));
        v
    }

    /// Pauses `app` (nothing of it is sent until it is resumed; what is in flight finishes),
    /// stored in the spool first. `reject`: ingest answers `503 app_paused` meanwhile.
    /// Answers the pause in force.
    pub async fn pause_app(&self, app: &str, reject: bool) -> Result<AppPause, SpoolError> {
        let since = self.pause_of(app).map_or_else(SystemTime::now, |p| p.since);
        let pause = AppPause {
            app: app.to_owned(),
            since,
            reject,
        };
        self.shared
            .spool
            .set_app_pause(app, Some(pause.clone()))
            .await?;
        self.shared.apply_pause(app, Some(pause.clone()));
        Ok(pause)
    }

    /// Resumes a paused app; false when it was not paused.
    pub async fn resume_app(&self, app: &str) -> Result<bool, SpoolError> {
        let was = self.shared.spool.set_app_pause(app, None).await?;
        let here = self.pause_of(app).is_some();
        self.shared.apply_pause(app, None);
        Ok(was || here)
    }
}

impl Shared {
    pub(super) fn operator_pause(&self, app: &str) -> Option<AppPause> {
        self.pauses.read().expect("pauses lock").get(app).cloned()
    }

    /// Puts `pause` of `app` in force here: the worker stops or resumes taking work.
    pub(super) fn apply_pause(&self, app: &str, pause: Option<AppPause>) {
        let paused = pause.is_some();
        {
            let mut pauses = self.pauses.write().expect("pauses lock");
            match pause {
                Some(p) => pauses.insert(app.to_owned(), p),
                None => pauses.remove(app),
            };
        }
        let worker = self.apps.read().expect("apps lock").get(app).cloned();
        if let Some(w) = worker {
            w.operator_paused.store(paused, Ordering::Release);
            w.wake.notify_one();
        }
        crate::metrics::gauge(
            "pushgate_app_paused",
            &[("app", app.to_owned())],
            if paused { 1.0 } else { 0.0 },
        );
        if !paused {
            self.rescan();
        }
    }

    /// Reads every pause from the spool again and puts them in force (at start, and when
    /// another gateway paused or resumed an app).
    pub(super) async fn reload_pauses(&self) {
        let stored = match self.spool.app_pauses().await {
            Ok(p) => p,
            Err(e) => {
                warn!(error = %crate::error_chain(&e), "reading the paused apps failed; the pauses in force are kept");
                return;
            }
        };
        let known: Vec<String> = self
            .pauses
            .read()
            .expect("pauses lock")
            .keys()
            .cloned()
            .collect();
        for app in known {
            if !stored.iter().any(|p| p.app == app) {
                self.apply_pause(&app, None);
            }
        }
        for p in stored {
            if self.operator_pause(&p.app).as_ref() != Some(&p) {
                let app = p.app.clone();
                self.apply_pause(&app, Some(p));
            }
        }
    }
}

/// The spool's part of a cancel: what `target` names of `apps`, still waiting, except `busy`.
async fn cancel_waiting(
    shared: &Shared,
    target: &CancelTarget,
    apps: &[String],
    busy: &HashSet<ApnsId>,
) -> Result<Cancelled, SpoolError> {
    let mut done = Cancelled::default();
    for app in apps {
        let mut n = 0u64;
        if let CancelTarget::Ids(ids) = target {
            let ids: Vec<ApnsId> = ids.iter().filter(|i| !busy.contains(i)).copied().collect();
            for chunk in ids.chunks(CANCEL_PAGE) {
                let cancelled = shared.spool.cancel_waiting(app, chunk.to_vec()).await?;
                n += cancelled.len() as u64;
                done.ids.extend(cancelled);
            }
        } else {
            let mut cursor = WaitingCursor::default();
            loop {
                let page = shared.spool.waiting_page(app, cursor, CANCEL_PAGE).await?;
                let named: Vec<ApnsId> = page
                    .rows
                    .iter()
                    .filter(|(id, req)| target.names(id, req) && !busy.contains(id))
                    .map(|(id, _)| *id)
                    .collect();
                n += shared.spool.cancel_waiting(app, named).await?.len() as u64;
                match page.cursor {
                    Some(c) => cursor = c,
                    None => break,
                }
            }
        }
        if n > 0 {
            done.by_app.push((app.clone(), n));
        }
    }
    Ok(done)
}

/// A cancel in words, for the log.
fn describe(target: &CancelTarget) -> String {
    match target {
        CancelTarget::Ids(ids) if ids.len() == 1 => format!("notification {}", ids[0]),
        CancelTarget::Ids(ids) => format!("{} notifications by id", ids.len()),
        CancelTarget::Request(r) => format!("request {r}"),
        CancelTarget::App {
            app, collapse_id, ..
        } => match collapse_id {
            Some(c) => format!("app {app}, collapse id {}", c.as_str()),
            None => format!("app {app}"),
        },
    }
}
