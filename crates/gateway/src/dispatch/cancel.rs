//! Cancels (docs/cancel.md), where the spool and dispatch meet.
//!
//! A cancel must never take back a notification Apple then receives: on SQLite a notification
//! being sent is still `queued` in the spool, and only its app's queue knows it is in flight.
//! So a cancel first holds the queues of the apps it names (`ReadyQueue::hold`): what it names
//! leaves the queue and is not offered again, and the ids already taken — in flight, or their
//! outcome not yet committed — are set aside. Only then does it cancel in the spool what still
//! waits, those ids excepted, page by page; the holds end after that. A cancel runs in a task
//! of its own, so that a client going away mid-way cannot leave a queue held.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use apns::ApnsId;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::worker::AppWorker;
use super::{Dispatcher, Shared};
use crate::spool::{
    CANCEL_PAGE, CancelAnswer, CancelAsk, CancelTarget, Spool, SpoolError, WaitingCursor,
};

/// How long a cancel waits for the other gateways sharing a PostgreSQL spool to answer its
/// ask. One that has not answered by then (dead, not yet rescued) keeps what it holds: the
/// answer does not count it.
const ASK_WAIT: Duration = Duration::from_secs(3);

/// What a cancel did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cancelled {
    /// The notifications it cancelled (an `Ids` cancel's).
    pub ids: Vec<ApnsId>,
    /// How many this gateway cancelled, by app.
    pub by_app: Vec<(String, u64)>,
    /// How many the other gateways sharing the spool cancelled, of what they held.
    pub elsewhere: u64,
}

impl Cancelled {
    pub fn count(&self) -> u64 {
        self.by_app.iter().map(|(_, n)| n).sum::<u64>() + self.elsewhere
    }
}

impl Dispatcher {
    /// Cancels what `target` names of `apps` that still waits (scheduled, queued, or waiting
    /// for a retry), never what is being sent or was; on a PostgreSQL spool the other
    /// gateways are asked for what they hold. Answers what it cancelled. `Ids` cancels answer
    /// the ids; the bulk ones only the counts (`ids` stays empty).
    pub async fn cancel(
        &self,
        target: CancelTarget,
        apps: Vec<String>,
    ) -> Result<Cancelled, SpoolError> {
        let shared = Arc::clone(&self.shared);
        let workers = self.workers_of(apps);
        let task = tokio::spawn(async move {
            let target = Arc::new(target);
            let mut done = cancel_here(&shared, &target, &workers).await?;
            // What is cancelled here needs no other gateway (a cancel by id, done).
            let all_here = match &*target {
                CancelTarget::Ids(ids) => ids.iter().all(|i| done.ids.contains(i)),
                _ => false,
            };
            if !all_here {
                let apps: Vec<String> = workers.iter().map(|(a, _)| a.clone()).collect();
                ask_others(&shared, &target, apps, &mut done).await;
            }
            let n = done.count();
            if n > 0 {
                info!(cancelled = n, elsewhere = done.elsewhere, target = %describe(&target), "notifications cancelled");
            }
            Ok(done)
        });
        match task.await {
            Ok(result) => result,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    /// Each app with its worker (a removed app's too: its sends in flight are known there).
    fn workers_of(&self, apps: Vec<String>) -> Vec<(String, Option<Arc<AppWorker>>)> {
        apps.into_iter()
            .map(|a| {
                let live = self.shared.apps.read().expect("apps lock").get(&a).cloned();
                let w =
                    live.or_else(|| self.retired.lock().expect("retired lock").get(&a).cloned());
                (a, w)
            })
            .collect()
    }
}

impl Shared {
    /// Another gateway's ask: what of it this one holds is cancelled — the same pass as the
    /// asker's, which reaches the rows this gateway owns (in its queue, claimed by a page it
    /// had no room for, waiting for a retry) — and the asker told how much (in a task of its
    /// own: the cluster's news goes on meanwhile).
    pub(super) fn answer_ask(self: &Arc<Shared>, from: uuid::Uuid, ask: CancelAsk) {
        let shared = Arc::clone(self);
        tokio::spawn(async move {
            let workers: Vec<(String, Option<Arc<AppWorker>>)> = {
                let apps = shared.apps.read().expect("apps lock");
                ask.apps
                    .iter()
                    .map(|a| (a.clone(), apps.get(a).cloned()))
                    .collect()
            };
            let target = Arc::new(ask.target);
            let done = match cancel_here(&shared, &target, &workers).await {
                Ok(done) => done,
                Err(e) => {
                    warn!(error = %crate::error_chain(&e), "cancelling for another gateway failed; it is told none were");
                    super::Cancelled::default()
                }
            };
            // The ids only for a cancel by id (the asker answers with them); a bulk cancel's
            // would not fit in a notification's payload.
            let answer = CancelAnswer {
                op: ask.op,
                cancelled: done.count(),
                ids: match &*target {
                    CancelTarget::Ids(_) => done.ids,
                    _ => Vec::new(),
                },
            };
            if answer.cancelled > 0 {
                info!(cancelled = answer.cancelled, target = %describe(&target), "notifications cancelled for another gateway");
            }
            if let Err(e) = shared.spool.answer_cancel(from, &answer).await {
                warn!(error = %crate::error_chain(&e), "answering another gateway's cancel failed");
            }
        });
    }

    /// An answer to one of this gateway's asks, for the cancel waiting on it.
    pub(super) fn take_answer(&self, answer: CancelAnswer) {
        let waiter = self
            .cancel_asks
            .lock()
            .expect("asks lock")
            .get(&answer.op)
            .cloned();
        if let Some(w) = waiter {
            let _ = w.try_send(answer);
        }
    }
}

/// A cancel here: the holds on its apps' queues, then the spool's part for each app.
async fn cancel_here(
    shared: &Arc<Shared>,
    target: &Arc<CancelTarget>,
    workers: &[(String, Option<Arc<AppWorker>>)],
) -> Result<Cancelled, SpoolError> {
    let mut holds = Holds {
        shared: Arc::clone(shared),
        held: Vec::with_capacity(workers.len()),
    };
    let mut done = Cancelled::default();
    for (app, worker) in workers {
        let busy: HashSet<ApnsId> = match worker {
            Some(w) => {
                let held = w.queue.hold(Arc::clone(target));
                holds.held.push((Arc::clone(w), held.id));
                held.busy.into_iter().collect()
            }
            None => HashSet::new(),
        };
        let n = cancel_app(shared, target, app, worker.as_deref(), &busy, &mut done.ids).await?;
        if n > 0 {
            crate::metrics::cancelled(app, n);
            done.by_app.push((app.clone(), n));
        }
    }
    // Dropping the holds ends them.
    drop(holds);
    Ok(done)
}

/// Asks the other gateways sharing the spool (none on SQLite) for what of `target` they hold,
/// and waits up to [`ASK_WAIT`] for their answers; what they cancelled joins `done`.
async fn ask_others(
    shared: &Shared,
    target: &CancelTarget,
    apps: Vec<String>,
    done: &mut Cancelled,
) {
    let ask = CancelAsk {
        op: uuid::Uuid::now_v7(),
        target: target.clone(),
        apps,
    };
    let (tx, mut answers) = mpsc::channel(64);
    shared
        .cancel_asks
        .lock()
        .expect("asks lock")
        .insert(ask.op, tx);
    let asked = match shared.spool.ask_cancel(&ask).await {
        Ok(n) => n,
        Err(e) => {
            warn!(error = %crate::error_chain(&e), "asking the other gateways to cancel failed; what they hold is not cancelled");
            0
        }
    };
    let deadline = tokio::time::Instant::now() + ASK_WAIT;
    let mut heard = 0;
    while heard < asked {
        match tokio::time::timeout_at(deadline, answers.recv()).await {
            Ok(Some(a)) => {
                heard += 1;
                done.elsewhere += a.cancelled;
                if matches!(target, CancelTarget::Ids(_)) {
                    done.ids.extend(a.ids);
                }
            }
            _ => break,
        }
    }
    if heard < asked {
        warn!(
            asked,
            answered = heard,
            "some gateways sharing the spool did not answer a cancel in time; what they hold was not cancelled"
        );
    }
    shared
        .cancel_asks
        .lock()
        .expect("asks lock")
        .remove(&ask.op);
}

/// One cancel's holds on its apps' queues. Dropped — the cancel written, failed, or its task
/// panicked — they end: two seconds later they lapse and a scan offers again what they kept
/// out and the cancel left waiting.
struct Holds {
    shared: Arc<Shared>,
    held: Vec<(Arc<AppWorker>, u64)>,
}

impl Drop for Holds {
    fn drop(&mut self) {
        for (w, hold) in &self.held {
            w.queue.end_hold(*hold);
        }
        self.shared.scan_wake.notify_one();
        let held = std::mem::take(&mut self.held);
        let shared = Arc::clone(&self.shared);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                tokio::time::sleep(super::ready::HOLD_LAPSE).await;
                for (w, _) in held {
                    w.queue.lapse_holds();
                }
                shared.scan_wake.notify_one();
            });
        }
    }
}

/// The spool's part of a cancel for one app: what `target` names that still waits, except
/// `busy` (taken from its queue when the hold began); the ids cancelled join `ids` for an
/// `Ids` cancel. Then what of `busy` waits again (a retry, a send put back) and the cancel
/// names is cancelled too: it was not sent after all. Answers how many were cancelled.
async fn cancel_app(
    shared: &Shared,
    target: &CancelTarget,
    app: &str,
    worker: Option<&AppWorker>,
    busy: &HashSet<ApnsId>,
    ids: &mut Vec<ApnsId>,
) -> Result<u64, SpoolError> {
    let mut n = 0u64;
    if let CancelTarget::Ids(named) = target {
        let named: Vec<ApnsId> = named
            .iter()
            .filter(|i| !busy.contains(i))
            .copied()
            .collect();
        for chunk in named.chunks(CANCEL_PAGE) {
            let cancelled = shared
                .spool
                .cancel_waiting(app, chunk.to_vec(), false)
                .await?;
            n += cancelled.len() as u64;
            ids.extend(cancelled);
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
            n += shared.spool.cancel_waiting(app, named, false).await?.len() as u64;
            match page.cursor {
                Some(c) => cursor = c,
                None => break,
            }
        }
    }
    Ok(n + sweep(shared, target, app, worker, busy, ids).await?)
}

/// What of `busy` (taken when the hold began) is no longer taken and waits again (a retry, a
/// send put back): it was not sent after all, and nothing takes it now (the hold keeps it out
/// of the queue), so what of it `target` names is cancelled. Answers how many.
async fn sweep(
    shared: &Shared,
    target: &CancelTarget,
    app: &str,
    worker: Option<&AppWorker>,
    busy: &HashSet<ApnsId>,
    ids: &mut Vec<ApnsId>,
) -> Result<u64, SpoolError> {
    let back: Vec<ApnsId> = match worker {
        Some(w) => busy
            .iter()
            .filter(|id| !w.queue.is_in_flight(id))
            .copied()
            .collect(),
        None => Vec::new(),
    };
    if back.is_empty() {
        return Ok(0);
    }
    let mut again = Vec::new();
    for r in shared.spool.get_many(back).await? {
        if !r.state.is_waiting() {
            continue;
        }
        let named = match target {
            CancelTarget::Ids(named) => named.contains(&r.id),
            _ => shared
                .spool
                .request_of(r.id)
                .await?
                .is_some_and(|req| target.names(&r.id, &req)),
        };
        if named {
            again.push(r.id);
        }
    }
    // Only those still this gateway's: on PostgreSQL a row nobody owns after its send was
    // rescued meanwhile (its outcome was not recorded), not put back.
    let cancelled = shared.spool.cancel_waiting(app, again, true).await?;
    let n = cancelled.len() as u64;
    if matches!(target, CancelTarget::Ids(_)) {
        ids.extend(cancelled);
    }
    Ok(n)
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
