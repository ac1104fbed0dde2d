//! Reading work back from the spool: at start-up (recovery), for scheduled notifications whose
//! time has come, for retries that are due, and for a backlog that did not fit in memory. The
//! hot path never comes here: what ingest commits goes straight to the app's queue.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use tracing::warn;

use super::Shared;
use super::ready::Ready;
use crate::spool::Spool;

/// Rows read per page.
const PAGE: usize = 1000;

/// Runs until shutdown: every scan interval, or when woken, claims due scheduled rows and, if
/// anything may be waiting in the spool, pages it into the queues that have room.
pub(crate) async fn run(shared: Arc<Shared>) {
    // Where the last pass stopped: the next one goes on from there instead of re-reading rows
    // the queues already hold; it starts over once it reaches the end.
    let mut cursor = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(shared.options.scan_interval) => {}
            _ = shared.scan_wake.notified() => {}
            _ = shared.shutdown.cancelled() => return,
        }
        if let Err(e) = scan(&shared, &mut cursor).await {
            warn!(error = %e, "reading due notifications from the spool failed");
        }
    }
}

async fn scan(
    shared: &Shared,
    cursor: &mut Option<apns::ApnsId>,
) -> Result<(), crate::spool::SpoolError> {
    let now = SystemTime::now();
    loop {
        let claimed = shared.spool.claim_due(now, 10_000).await?;
        if !claimed.is_empty() {
            shared.rescan_needed.store(true, Ordering::Release);
        }
        if claimed.len() < 10_000 {
            break;
        }
    }
    let due_retry = shared
        .next_retry
        .lock()
        .expect("retry lock")
        .is_some_and(|t| t <= now);
    // Every queue's flag is read (and cleared), not just up to the first one set.
    let mut overflow = false;
    for a in shared.apps() {
        overflow |= a.queue.take_overflow();
    }
    if !(shared.rescan_needed.swap(false, Ordering::AcqRel) || due_retry || overflow) {
        return Ok(());
    }
    // The retries due later than now: remember the earliest so the next scan comes in time.
    let later = shared.spool.next_due(now).await?;
    *shared.next_retry.lock().expect("retry lock") = later;
    let apps: HashMap<String, _> = shared
        .apps()
        .into_iter()
        .map(|a| (a.name.clone(), a))
        .collect();
    let mut wrapped = cursor.is_none();
    loop {
        let page = shared.spool.ready_page(*cursor, now, PAGE).await?;
        let rows = page.rows;
        *cursor = page.cursor;
        let mut by_app: HashMap<&str, Vec<Ready>> = HashMap::new();
        for r in &rows {
            by_app.entry(r.app.as_str()).or_default().push(Ready {
                id: r.id,
                token: r.token.clone(),
                attempts: r.attempts,
                expires_at: r.expires_at,
                request: Arc::clone(&r.request),
            });
        }
        for (app, items) in by_app {
            // An app that is not configured (removed) keeps its notifications in the spool.
            if let Some(worker) = apps.get(app) {
                worker.queue.offer(items);
            }
        }
        if apps.values().all(|a| a.queue.space() == 0) {
            // Everything is full; the rest waits for the next scan.
            shared.rescan_needed.store(true, Ordering::Release);
            break;
        }
        if cursor.is_none() {
            // The end: go once more from the start if this pass began in the middle.
            if wrapped {
                break;
            }
            wrapped = true;
        }
    }
    Ok(())
}
