//! The completer: carries out the workers' decisions. One spool transaction per batch holds the
//! outcomes and the dead tokens they found; then the in-memory dead-token set, the tally, the
//! events and the metrics; and only then are the ids released from their queues. While the
//! spool refuses a commit, dispatch is paused.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tracing::warn;

use super::worker::{AppWorker, Done};
use super::{FailureRecord, LATEST_FAILURES, Shared};
use crate::events::{Event, OutcomeEvent};
use crate::spool::Spool;

/// Records decisions in batches: one spool command per batch (outcomes and the dead tokens
/// they found, in one transaction), then the in-memory dead-token set, the tally, events and
/// metrics, and only then are the ids released from their queues. Ends when every worker has
/// stopped.
pub(super) async fn complete(shared: Arc<Shared>, mut rx: mpsc::Receiver<Done>) {
    let mut batch = Vec::with_capacity(1024);
    while rx.recv_many(&mut batch, 1024).await > 0 {
        let mut earliest = None::<SystemTime>;
        let mut requeued = false;
        for d in &batch {
            let c = &d.decision.completion;
            match c.due_at {
                Some(t) => earliest = Some(earliest.map_or(t, |e| e.min(t))),
                None if c.state == crate::spool::State::Queued => requeued = true,
                None => {}
            }
        }
        if !commit(&shared, &batch).await {
            warn!(
                notifications = batch.len(),
                "shutting down with outcomes the spool refused; those notifications stay queued and are sent again after restart"
            );
            return;
        }
        let sinks = shared.events.sinks();
        let now = SystemTime::now();
        for dead in batch.iter().filter_map(|d| d.decision.dead.as_ref()) {
            shared.dead.insert(&dead.app, &dead.token);
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
            let mut tally = shared.tally.lock().expect("tally lock");
            for d in &batch {
                let c = &d.decision.completion;
                if !c.state.is_final() {
                    continue;
                }
                *tally.outcomes.entry(c.state.as_str()).or_default() += 1;
                if c.state != crate::spool::State::Delivered {
                    let reason = c.reason.as_ref().map_or("", |r| r.as_str()).to_owned();
                    *tally.failures_by_reason.entry(reason.clone()).or_default() += 1;
                    tally.latest_failures.push_front(FailureRecord {
                        time: now,
                        id: c.id,
                        app: d.app.name.clone(),
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
                        app: d.app.name.clone(),
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
        let mut run: Option<Arc<AppWorker>> = None;
        let mut ids = Vec::with_capacity(batch.len());
        for d in batch.drain(..) {
            let c = &d.decision.completion;
            let reason = c.reason.as_ref().map_or("", |r| r.as_str());
            if c.state.is_final() {
                d.app.metrics.finished(c.state.as_str(), reason);
                if c.state == crate::spool::State::Delivered {
                    d.app.metrics.delivered(&c.id, now);
                }
            } else if c.due_at.is_some() {
                d.app.metrics.retry(reason);
            }
            if let Some(app) = run.as_ref().filter(|a| !Arc::ptr_eq(a, &d.app)) {
                app.queue.release(ids.drain(..));
            }
            ids.push(c.id);
            run = Some(d.app);
        }
        if let Some(app) = run {
            app.queue.release(ids.drain(..));
        }
        if let Some(t) = earliest {
            let mut next = shared.next_retry.lock().expect("retry lock");
            *next = Some(next.map_or(t, |n| n.min(t)));
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
async fn commit(shared: &Shared, batch: &[Done]) -> bool {
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
        match shared.spool.complete(completions, dead).await {
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
            () = shared.shutdown.cancelled() => return false,
        }
        wait = (wait * 2).min(COMMIT_RETRY_MAX);
    }
}
