//! An operator's pause of an app (docs/cancel.md), stored in the spool (`app_pauses`): each
//! app's worker reads a flag, set here from what the spool says at start (a failure to read it
//! stops the start: a paused app must not send because its pause could not be read), on every
//! pause and resume, and when another gateway sharing the spool says it paused or resumed an
//! app. Whatever changes the pauses takes `Shared::pause_turn`, so that a stale read of the
//! spool never undoes a newer change.

use std::sync::atomic::Ordering;
use std::time::SystemTime;

use tracing::warn;

use super::{Dispatcher, Shared};
use crate::spool::{AppPause, Spool, SpoolError};

impl Dispatcher {
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
    /// Answers the pause in force, as the spool has it (its `since` is the first pause's,
    /// whichever gateway paused it).
    pub async fn pause_app(&self, app: &str, reject: bool) -> Result<AppPause, SpoolError> {
        let _turn = self.shared.pause_turn.lock().await;
        let pause = AppPause {
            app: app.to_owned(),
            since: SystemTime::now(),
            reject,
        };
        self.shared
            .spool
            .set_app_pause(app, Some(pause.clone()))
            .await?;
        // As stored (its `since` the first pause's); if that cannot be read, the pause asked
        // for is put in force all the same: it is stored.
        let stored = self.shared.spool.app_pauses().await.unwrap_or_default();
        let pause = stored.into_iter().find(|p| p.app == app).unwrap_or(pause);
        self.shared.apply_pause(app, Some(pause.clone()));
        Ok(pause)
    }

    /// Resumes a paused app; false when it was not paused.
    pub async fn resume_app(&self, app: &str) -> Result<bool, SpoolError> {
        let _turn = self.shared.pause_turn.lock().await;
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

    /// Puts `pause` of `app` in force here: the worker stops or resumes taking work. The map
    /// and the worker's flag change under both locks, taken in the order `apply_apps` takes
    /// them (apps, then pauses), so they never disagree and never deadlock.
    pub(super) fn apply_pause(&self, app: &str, pause: Option<AppPause>) {
        let paused = pause.is_some();
        {
            let apps = self.apps.read().expect("apps lock");
            let mut pauses = self.pauses.write().expect("pauses lock");
            match pause {
                Some(p) => pauses.insert(app.to_owned(), p),
                None => pauses.remove(app),
            };
            if let Some(w) = apps.get(app) {
                w.operator_paused.store(paused, Ordering::Release);
                w.wake.notify_one();
            }
        }
        crate::metrics::gauge(
            "pushgate_app_paused",
            &[("app", app.to_owned())],
            if paused { 1.0 } else { 0.0 },
        );
        if !paused {
            self.scan_wake.notify_one();
        }
    }

    /// Reads every pause from the spool again and puts them in force: at start (where a
    /// failure stops the start — a paused app must not send because its pause could not be
    /// read), and when another gateway paused or resumed an app.
    pub(super) async fn reload_pauses(&self) -> Result<(), SpoolError> {
        let _turn = self.pause_turn.lock().await;
        let stored = self.spool.app_pauses().await?;
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
        Ok(())
    }

    /// [`Shared::reload_pauses`] for the cluster's news: a failure keeps the pauses in force
    /// and is said.
    pub(super) async fn follow_pauses(&self) {
        if let Err(e) = self.reload_pauses().await {
            warn!(error = %crate::error_chain(&e), "reading the paused apps failed; the pauses in force are kept");
        }
    }
}
