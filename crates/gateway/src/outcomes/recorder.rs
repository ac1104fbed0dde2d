//! The recorder: carries out the decisions dispatch's workers made. One spool transaction per
//! batch holds the outcomes and the dead tokens they found; then the in-memory dead-token set,
//! the tally, the events and the metrics; and only then are the ids released from their
//! queues. While the spool refuses a commit, dispatch is paused.
//!
//! It knows dispatch only through [`Dispatch`]: what an app is, how its queue forgets ids, how
//! sends pause and the scheduler wakes. Dispatch implements it; nothing here imports dispatch.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tracing::warn;

use apns::{ApnsId, DeviceToken};
use tokio_util::sync::CancellationToken;

use super::tally::{FailureRecord, LATEST_FAILURES, Tally};
use super::{DeadTokens, Decision};
use crate::events::{Event, Events, OutcomeEvent};
use crate::metrics::AppMetrics;
use crate::spool::{Spool, State, Store};

/// What the recorder needs from dispatch.
pub trait Dispatch: Send + Sync + 'static {
    /// An app as dispatch knows it (its worker).
    type App: Send + Sync + 'static;

    fn app_name(app: &Self::App) -> &str;
    fn app_metrics(app: &Self::App) -> &AppMetrics;
    /// The outcomes of `ids` are recorded: the app's queue forgets them (draining `ids`).
    fn release(app: &Self::App, ids: &mut Vec<ApnsId>);

    fn spool(&self) -> &Store;
    fn events(&self) -> &Events;
    fn dead_tokens(&self) -> &DeadTokens;
    fn tally(&self) -> &std::sync::Mutex<Tally>;
    fn shutdown(&self) -> &CancellationToken;

    /// Outcomes cannot be recorded: no app takes new work until they can (`why` says why).
    fn pause(&self, why: String);
    /// Outcomes are recorded again.
    fn unpause(&self);
    /// A retry was recorded, due at `at`.
    fn retry_due(&self, at: SystemTime);
    /// A notification went back to the queue due now: the scheduler should look again.
    fn rescan(&self);
}

/// One decision, for the app and token it was made for.
#[derive(Debug)]
pub struct Recorded<A> {
    pub app: Arc<A>,
    /// For the delivery log and hooks.
    pub token: DeviceToken,
    pub decision: Decision,
}

/// Records decisions in batches: one spool command per batch (outcomes and the dead tokens
/// they found, in one transaction), then the in-memory dead-token set, the tally, events and
/// metrics, and only then are the ids released from their queues. Ends when every worker has
/// stopped.
pub async fn record<D: Dispatch>(shared: Arc<D>, mut rx: mpsc::Receiver<Recorded<D::App>>) {
    let mut batch = Vec::with_capacity(1024);
    while rx.recv_many(&mut batch, 1024).await > 0 {
        let mut earliest = None::<SystemTime>;
        let mut requeued = false;
        for d in &batch {
            let c = &d.decision.completion;
            match c.due_at {
                Some(t) => earliest = Some(earliest.map_or(t, |e| e.min(t))),
                None if c.state == State::Queued => requeued = true,
                None => {}
            }
        }
        if !commit(&*shared, &batch).await {
            warn!(
                notifications = batch.len(),
                "shutting down with outcomes the spool refused; those notifications stay queued and are sent again after restart"
            );
            return;
        }
        let sinks = shared.events().sinks();
        let now = SystemTime::now();
        for dead in batch.iter().filter_map(|d| d.decision.dead.as_ref()) {
            shared.dead_tokens().insert(&dead.app, &dead.token);
            if sinks.any() {
                sinks.send(&Event::TokenInvalidated {
                    time: now,
                    app: dead.app.clone(),
                    token: dead.token.clone(),
                    reason: dead.reason.as_str().to_owned(),
                    since: dead.since,
                });
            }
        }
        {
            let mut tally = shared.tally().lock().expect("tally lock");
            for d in &batch {
                let c = &d.decision.completion;
                if !c.state.is_final() {
                    continue;
                }
                *tally.outcomes.entry(c.state.as_str()).or_default() += 1;
                let app = D::app_name(&d.app);
                let delivered = c.state == State::Delivered;
                match tally.by_app.get_mut(app) {
                    Some((ok, bad)) => *(if delivered { ok } else { bad }) += 1,
                    None => {
                        let first = if delivered { (1, 0) } else { (0, 1) };
                        tally.by_app.insert(app.to_owned(), first);
                    }
                }
                if delivered {
                    if let Some(took) = c.id.created_at().and_then(|a| now.duration_since(a).ok()) {
                        tally.latency.record(took);
                    }
                } else {
                    let reason = c.reason.as_ref().map_or("", |r| r.as_str()).to_owned();
                    *tally.failures_by_reason.entry(reason.clone()).or_default() += 1;
                    tally.latest_failures.push_front(FailureRecord {
                        time: now,
                        id: c.id,
                        app: D::app_name(&d.app).to_owned(),
                        token: d.token.clone(),
                        state: c.state,
                        reason,
                    });
                    tally.latest_failures.truncate(LATEST_FAILURES);
                }
            }
        }
        if sinks.any() {
            let per_attempt = sinks.per_attempt();
            for d in &batch {
                let c = &d.decision.completion;
                // A notification put back without an attempt (a halt, a shutdown) is not one.
                let attempted = c.state.is_final() || c.due_at.is_some();
                if c.state.is_final() || (per_attempt && attempted) {
                    sinks.send(&Event::Outcome(OutcomeEvent {
                        time: now,
                        id: c.id,
                        app: D::app_name(&d.app).to_owned(),
                        token: d.token.clone(),
                        state: c.state,
                        status: c.status,
                        reason: c.reason.as_ref().map(|r| r.as_str().to_owned()),
                        attempts: c.attempts,
                    }));
                }
            }
        }
        // Released per app in runs (a batch is mostly one app): one queue lock per run.
        let mut run: Option<Arc<D::App>> = None;
        let mut ids = Vec::with_capacity(batch.len());
        for d in batch.drain(..) {
            let c = &d.decision.completion;
            let reason = c.reason.as_ref().map_or("", |r| r.as_str());
            if c.state.is_final() {
                D::app_metrics(&d.app).finished(c.state.as_str(), reason);
                if c.state == State::Delivered {
                    D::app_metrics(&d.app).delivered(&c.id, now);
                }
            } else if c.due_at.is_some() {
                D::app_metrics(&d.app).retry(reason);
            }
            if let Some(app) = run.as_ref().filter(|a| !Arc::ptr_eq(a, &d.app)) {
                D::release(app, &mut ids);
            }
            ids.push(c.id);
            run = Some(d.app);
        }
        if let Some(app) = run {
            D::release(&app, &mut ids);
        }
        if let Some(t) = earliest {
            shared.retry_due(t);
        }
        if requeued {
            shared.rescan();
        }
    }
}

/// The longest wait between two tries to commit outcomes the spool refused.
const COMMIT_RETRY_MAX: Duration = Duration::from_secs(5);

/// Commits `batch`'s outcomes and dead tokens. While the spool refuses them (a full disk, an
/// I/O error), dispatch is paused — no app takes new work, so at most what is already in
/// flight can be sent again after a crash — and the commit is tried again with backoff. The
/// outcomes stay here meanwhile; forgetting them would leave their rows queued, to be sent
/// again by the next scan, every few seconds, for as long as the disk stays full. False only
/// when the gateway shuts down before the spool takes them.
async fn commit<D: Dispatch>(shared: &D, batch: &[Recorded<D::App>]) -> bool {
    let mut wait = Duration::from_millis(100);
    loop {
        let completions = batch
            .iter()
            .map(|d| d.decision.completion.clone())
            .collect();
        let dead = batch
            .iter()
            .filter_map(|d| d.decision.dead.clone())
            .collect();
        match shared.spool().complete(completions, dead).await {
            Ok(()) => {
                shared.unpause();
                return true;
            }
            Err(e) => {
                shared.pause(format!(
                    "outcomes cannot be recorded: {}",
                    crate::error_chain(&e)
                ));
                crate::metrics::outcome_commit_failed();
            }
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shared.shutdown().cancelled() => return false,
        }
        wait = (wait * 2).min(COMMIT_RETRY_MAX);
    }
}
