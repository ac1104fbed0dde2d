//! The bounded in-memory queue of one app.
//!
//! Work arrives straight from ingest after its commit (no re-read) or from the scheduler's
//! scans of the spool; what does not fit stays in the spool (`overflow` tells the scheduler to
//! page it in later). Every id in memory or in flight is "known", so a scan never loads a
//! notification twice; an id is forgotten only after its outcome is committed.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use apns::{ApnsId, DeviceToken};
use tokio::sync::Notify;

use crate::spool::StoredRequest;

/// A notification ready to send.
#[derive(Debug, Clone)]
pub struct Ready {
    pub id: ApnsId,
    pub token: DeviceToken,
    pub attempts: u32,
    pub expires_at: SystemTime,
    pub request: Arc<StoredRequest>,
}

#[derive(Debug)]
pub struct ReadyQueue {
    capacity: usize,
    /// A std mutex: held for queue operations only, never across an await.
    inner: Mutex<Inner>,
    /// Wakes the app's worker when items arrive.
    pub(crate) arrived: Notify,
}

#[derive(Debug, Default)]
struct Inner {
    items: VecDeque<Ready>,
    known: HashSet<ApnsId>,
    /// Something did not fit: the spool holds work this queue has not seen.
    overflow: bool,
}

impl ReadyQueue {
    pub fn new(capacity: usize) -> ReadyQueue {
        ReadyQueue {
            capacity: capacity.max(1),
            inner: Mutex::new(Inner::default()),
            arrived: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .expect("ready queue lock is never poisoned")
    }

    /// Adds what fits, skipping known ids; returns how many were added.
    pub fn offer(&self, items: impl IntoIterator<Item = Ready>) -> usize {
        let mut q = self.lock();
        let mut added = 0;
        for item in items {
            if q.known.contains(&item.id) {
                continue;
            }
            if q.items.len() >= self.capacity {
                q.overflow = true;
                break;
            }
            q.known.insert(item.id);
            q.items.push_back(item);
            added += 1;
        }
        drop(q);
        if added > 0 {
            self.arrived.notify_one();
        }
        added
    }

    /// Takes up to `max` items.
    pub fn take(&self, max: usize) -> Vec<Ready> {
        let mut q = self.lock();
        let n = max.min(q.items.len());
        q.items.drain(..n).collect()
    }

    /// Forgets ids whose outcome is committed.
    pub fn release(&self, ids: impl IntoIterator<Item = ApnsId>) {
        let mut q = self.lock();
        for id in ids {
            q.known.remove(&id);
        }
    }

    /// Room left, and whether work was turned away since the last call (clearing the flag).
    pub fn room(&self) -> (usize, bool) {
        let mut q = self.lock();
        let overflow = std::mem::take(&mut q.overflow);
        (self.capacity - q.items.len(), overflow)
    }

    pub fn len(&self) -> usize {
        self.lock().items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
