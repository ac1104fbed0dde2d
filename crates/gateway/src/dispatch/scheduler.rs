//! Reading work back from the spool: at start-up (recovery), for scheduled notifications whose
//! time has come, for retries that are due, and for a backlog that did not fit in memory. The
//! hot path never comes here: what ingest commits goes straight to the app's queue.
//!
//! Each app is read on its own, through the pending index of that app alone, and only when
//! its queue has room: a halted app or one with a long backlog costs the others nothing, and
//! costs itself only the pages its queue takes in.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use tracing::warn;

use super::Shared;
use super::worker::AppWorker;
use crate::spool::{ReadyCursor, Spool};

/// Rows read per page.
const PAGE: usize = 1000;

/// Every app is read this often even when nothing said it may have work: the fallback for a
/// wake-up that never came (another gateway's news lost on the way). Cheap: an app with
/// nothing waiting costs one indexed query.
const FULL_RESCAN: std::time::Duration = std::time::Duration::from_secs(30);

/// What the scheduler keeps of one app between scans.
#[derive(Debug)]
struct AppScan {
    /// Where the last pass stopped because the queue was full; the next one goes on from
    /// there instead of re-reading rows the queue already holds.
    cursor: ReadyCursor,
    /// The spool may hold work of this app that its queue has not seen.
    behind: bool,
}

impl Default for AppScan {
    /// An app the scheduler has not read yet may have work waiting: read it. (A wake-up that
    /// came before the app's worker existed — the other gateways' news at start, say — was
    /// spent on a scan that could not see it.)
    fn default() -> AppScan {
        AppScan {
            cursor: ReadyCursor::default(),
            behind: true,
        }
    }
}

/// Runs until shutdown: every scan interval, or when woken, claims due scheduled rows and, for
/// each app whose spool may hold work its queue has not seen, pages that work in while the
/// queue has room.
pub(crate) async fn run(shared: Arc<Shared>) {
    let mut apps = HashMap::new();
    let mut last_full = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(shared.options.scan_interval) => {}
            _ = shared.scan_wake.notified() => {}
            _ = shared.shutdown.cancelled() => return,
        }
        if last_full.elapsed() >= FULL_RESCAN {
            last_full = tokio::time::Instant::now();
            shared.rescan_needed.store(true, Ordering::Release);
        }
        if let Err(e) = scan(&shared, &mut apps).await {
            warn!(error = %e, "reading due notifications from the spool failed");
        }
    }
}

async fn scan(
    shared: &Shared,
    scans: &mut HashMap<String, AppScan>,
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
    let due_retry = {
        let mut next = shared.next_retry.lock().expect("retry lock");
        let due = next.is_some_and(|t| t <= now);
        if due {
            *next = None;
        }
        due
    };
    let everyone = shared.rescan_needed.swap(false, Ordering::AcqRel) || due_retry;
    let apps = shared.apps();
    scans.retain(|name, _| apps.iter().any(|a| &a.name == name));
    // What the flags said goes into every app's `behind` before anything is read: a read that
    // fails leaves it there for the next scan instead of losing it.
    for app in &apps {
        let scan = scans.entry(app.name.clone()).or_default();
        // Every queue's flag is read (and cleared), not just up to the first one set.
        scan.behind |= app.queue.take_overflow() | everyone;
    }
    let mut read_any = false;
    for app in &apps {
        let Some(scan) = scans.get_mut(&app.name) else {
            continue;
        };
        if !scan.behind {
            continue;
        }
        if halted_with_work(app) || app.queue.space() == 0 {
            // Not read now; the queue's flag, taken above, is set again so that its worker
            // still asks for more once the queue is down to half.
            app.queue.mark_overflow();
            continue;
        }
        scan.behind = !read_app(shared, app, &mut scan.cursor, now).await?;
        read_any = true;
    }
    if read_any || due_retry {
        // The retries due later than now: the earliest, so that the next scan comes in time.
        let mut later: Option<SystemTime> = None;
        for app in &apps {
            if let Some(t) = shared.spool.next_due(&app.name, now).await? {
                later = Some(later.map_or(t, |l| l.min(t)));
            }
        }
        if let Some(t) = later {
            let mut next = shared.next_retry.lock().expect("retry lock");
            *next = Some(next.map_or(t, |n| n.min(t)));
        }
    }
    Ok(())
}

/// One pass over `app`'s ready notifications from `cursor`, a page at a time, while its queue
/// has room. True when the pass reached the end (once more from the start if it began in the
/// middle); false when the queue filled first, with `cursor` after the last row it took in,
/// and the queue told to ask for more once it is down to half.
async fn read_app(
    shared: &Shared,
    app: &AppWorker,
    cursor: &mut ReadyCursor,
    now: SystemTime,
) -> Result<bool, crate::spool::SpoolError> {
    let mut wrapped = *cursor == ReadyCursor::Start;
    loop {
        // A pass stops as soon as the queue is full, or the app halted while it ran.
        if app.queue.space() == 0 || halted_with_work(app) {
            app.queue.mark_overflow();
            return Ok(false);
        }
        // On a shared spool a page is a claim, and what this gateway read but could not take
        // no other could send: no more than the queue takes (a halted app: one, its probe),
        // but not in pages so small that walking rows already queued takes thousands. A spool
        // one gateway owns reads whole pages.
        let limit = if shared.spool.backend() != "postgres" {
            PAGE
        } else if app.is_halted() {
            1
        } else {
            app.queue.space().clamp(PAGE / 10, PAGE)
        };
        let page = shared
            .spool
            .ready_page(&app.name, *cursor, now, limit)
            .await?;
        crate::metrics::rows_read(&app.name, page.scanned);
        let positions: Vec<ReadyCursor> = page.rows.iter().map(|r| r.position).collect();
        let (_, handled) = app.queue.fill(page.rows.into_iter().map(|r| r.item));
        if handled < positions.len() {
            // Full within this page: the next pass goes on after the last row taken in.
            if let Some(p) = handled.checked_sub(1).map(|i| positions[i]) {
                *cursor = p;
            }
            return Ok(false);
        }
        match page.cursor {
            Some(c) => *cursor = c,
            None => {
                *cursor = ReadyCursor::Start;
                if wrapped {
                    return Ok(true);
                }
                wrapped = true;
            }
        }
    }
}

/// A halted app takes nothing but a probe now and then: its backlog waits in the spool, except
/// what the queue needs to have something to probe with.
fn halted_with_work(app: &AppWorker) -> bool {
    app.is_halted() && !app.queue.is_empty()
}
