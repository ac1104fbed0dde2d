//! The bounded in-memory queue of one app.
//!
//! Work arrives straight from ingest after its commit (no re-read) or from the scheduler's
//! scans of the spool; what does not fit stays in the spool (`overflow` tells the scheduler to
//! page it in later). Every id in memory or in flight is "known", so a scan never loads a
//! notification twice; an id is forgotten only after its outcome is committed, and then kept
//! for a short while as "recently released": a page read before that commit (or an offer from
//! ingest that lost a race with the scheduler) would otherwise send it again.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use apns::ApnsId;
use tokio::sync::Notify;

use crate::spool::CancelTarget;

/// A notification ready to send: the spool's own record, as the scheduler read it back or as
/// ingest committed it, not a copy of it.
pub use crate::spool::Sendable as Ready;

#[derive(Debug)]
pub struct ReadyQueue {
    capacity: usize,
    /// A std mutex: held for queue operations only, never across an await.
    inner: Mutex<Inner>,
    /// Wakes the app's worker when items arrive.
    pub(crate) arrived: Notify,
}

/// How long a released id is still refused by `offer`: far longer than a page read or an offer
/// after a commit takes; a retry due sooner than this is sent this much later.
const RECENT: Duration = Duration::from_secs(2);
/// How long after its end a cancel's hold has surely lapsed.
pub(super) const HOLD_LAPSE: Duration = Duration::from_millis(2_100);

/// Hashes an [`ApnsId`] by its last 8 bytes. Ids are UUIDv7 whose last 62 bits are random,
/// so they spread as well as SipHash would, at a fraction of its cost (these sets see every
/// notification twice).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.rchunks(8).take(1) {
            let mut b = [0u8; 8];
            b[8 - chunk.len()..].copy_from_slice(chunk);
            self.0 ^= u64::from_le_bytes(b);
        }
    }

    // The length prefix of a slice adds nothing to an id.
    fn write_usize(&mut self, _: usize) {}
}

type IdMap<V> = HashMap<ApnsId, V, std::hash::BuildHasherDefault<IdHasher>>;

/// Where a known id is. One map for all three, so a notification costs one hash operation at
/// each step (offer, take, release, forget) instead of one per set it moves between.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Known {
    Queued,
    /// Taken by the worker and not yet released: in flight (the spool still says queued).
    InFlight,
    /// Released at this time; refused by `offer` until `RECENT` has passed.
    Released(Instant),
}

#[derive(Debug, Default)]
struct Inner {
    items: VecDeque<Ready>,
    known: IdMap<Known>,
    in_flight: usize,
    /// Ids released within `RECENT`, oldest first (their `known` entry says when).
    recent: VecDeque<(Instant, ApnsId)>,
    /// Something did not fit: the spool holds work this queue has not seen.
    overflow: bool,
    /// The cancels running on this app (`dispatch::cancel`): what they name is neither queued
    /// nor taken here until each has written its cancel, and for `RECENT` after.
    holds: Vec<Hold>,
    next_hold: u64,
}

/// What [`ReadyQueue::hold`] found.
#[derive(Debug)]
pub struct Held {
    /// The hold, for [`ReadyQueue::end_hold`].
    pub id: u64,
    /// Taken and not settled when the hold began.
    pub busy: Vec<ApnsId>,
}

/// One cancel's hold on the queue.
#[derive(Debug)]
struct Hold {
    id: u64,
    target: Arc<CancelTarget>,
    /// Once its cancel is written: when the hold ends.
    until: Option<Instant>,
}

impl Inner {
    /// Whether a cancel running now names `item`.
    fn held(&self, item: &Ready) -> bool {
        self.holds
            .iter()
            .any(|h| h.target.names(&item.id, &item.request))
    }

    fn forget_old(&mut self) {
        let now = Instant::now();
        if !self.holds.is_empty() {
            let before = self.holds.len();
            self.holds.retain(|h| h.until.is_none_or(|t| now < t));
            if self.holds.len() < before {
                // What the hold kept out and its cancel left waiting is offered again.
                self.overflow = true;
            }
        }
        while let Some((t, id)) = self.recent.front().copied() {
            if now.duration_since(t) < RECENT {
                break;
            }
            self.recent.pop_front();
            // Only if it has not been offered again since (then it is known anew).
            if self.known.get(&id) == Some(&Known::Released(t)) {
                self.known.remove(&id);
            }
        }
    }
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

    /// Adds what fits, skipping known and recently released ids; returns how many were added.
    pub fn offer(&self, items: impl IntoIterator<Item = Ready>) -> usize {
        self.fill(items).0
    }

    /// As [`ReadyQueue::offer`]; answers how many were added and how many of the leading items
    /// were dealt with (added, or skipped as known) before the queue was full.
    pub fn fill(&self, items: impl IntoIterator<Item = Ready>) -> (usize, usize) {
        let mut q = self.lock();
        q.forget_old();
        let (mut added, mut handled) = (0, 0);
        for item in items {
            let full = q.items.len() >= self.capacity;
            let held = !q.holds.is_empty() && q.held(&item);
            match q.known.entry(item.id) {
                Entry::Occupied(e) => {
                    if let Known::Released(_) = e.get() {
                        // Possibly stale; if it really is due again (a retry, a requeue), a
                        // later scan takes it once the window has passed.
                        q.overflow = true;
                    }
                    handled += 1;
                    continue;
                }
                Entry::Vacant(_) if full => {
                    q.overflow = true;
                    break;
                }
                // Named by a cancel: it may be cancelled in the spool by now. If it is not
                // (the cancel failed), the scan asked for when the hold ends offers it again.
                // (Not `overflow` now: the scheduler would walk the whole held backlog again
                // at every scan while the cancel runs.)
                Entry::Vacant(_) if held => {
                    handled += 1;
                    continue;
                }
                Entry::Vacant(e) => {
                    e.insert(Known::Queued);
                }
            }
            q.items.push_back(item);
            added += 1;
            handled += 1;
        }
        drop(q);
        if added > 0 {
            self.arrived.notify_one();
        }
        (added, handled)
    }

    /// Records that the spool holds work this queue has not seen (its reader stopped because
    /// the queue was full), so that the worker asks for more once it is down to half.
    pub fn mark_overflow(&self) {
        self.lock().overflow = true;
    }

    /// Takes up to `max` items.
    pub fn take(&self, max: usize) -> Vec<Ready> {
        let mut q = self.lock();
        let n = max.min(q.items.len());
        let taken: Vec<Ready> = q.items.drain(..n).collect();
        let mut moved = 0;
        for r in &taken {
            if let Some(k) = q.known.get_mut(&r.id)
                && *k != Known::InFlight
            {
                *k = Known::InFlight;
                moved += 1;
            }
        }
        q.in_flight += moved;
        taken
    }

    /// Whether `id` has been taken for sending and its outcome is not yet committed.
    pub fn is_in_flight(&self, id: &ApnsId) -> bool {
        self.lock().known.get(id) == Some(&Known::InFlight)
    }

    /// How many are taken for sending and not yet settled.
    pub fn in_flight_count(&self) -> usize {
        self.lock().in_flight
    }

    /// Whether the spool holds work this queue has not seen and the queue is down to half: the
    /// scheduler should page more in now rather than at its next interval.
    pub fn wants_refill(&self) -> bool {
        let q = self.lock();
        q.overflow && q.items.len() <= self.capacity / 2
    }

    /// Forgets ids whose outcome is committed.
    pub fn release(&self, ids: impl IntoIterator<Item = ApnsId>) {
        let mut guard = self.lock();
        let q = &mut *guard;
        let now = Instant::now();
        for id in ids {
            let Some(k) = q.known.get_mut(&id) else {
                continue;
            };
            match *k {
                // Released twice: the first release's time stands.
                Known::Released(_) => continue,
                Known::InFlight => q.in_flight -= 1,
                Known::Queued => {}
            }
            *k = Known::Released(now);
            q.recent.push_back((now, id));
        }
        q.forget_old();
    }

    /// Drops what waits unsent (the spool still holds it), keeping the ids in flight: for an
    /// app removed from the configuration, whose worker is kept aside, and for every app of a
    /// gateway the others declared dead (what waited is theirs now).
    pub fn drop_waiting(&self) {
        let mut q = self.lock();
        let waiting: Vec<ApnsId> = q.items.drain(..).map(|r| r.id).collect();
        for id in waiting {
            q.known.remove(&id);
        }
    }

    /// Starts a cancel's hold: what `target` names is taken out of the queue and kept out
    /// (not offered, not taken) until [`ReadyQueue::end_hold`]. Answers the hold and every id
    /// taken and not yet settled — being sent, or its outcome not yet committed: the cancel
    /// leaves those alone, whatever it names.
    pub fn hold(&self, target: Arc<CancelTarget>) -> Held {
        let mut guard = self.lock();
        let q = &mut *guard;
        q.next_hold += 1;
        let id = q.next_hold;
        let mut kept = VecDeque::with_capacity(q.items.len());
        for item in q.items.drain(..) {
            if target.names(&item.id, &item.request) {
                q.known.remove(&item.id);
            } else {
                kept.push_back(item);
            }
        }
        q.items = kept;
        q.holds.push(Hold {
            id,
            target,
            until: None,
        });
        let busy = q
            .known
            .iter()
            .filter(|(_, k)| **k == Known::InFlight)
            .map(|(id, _)| *id)
            .collect();
        Held { id, busy }
    }

    /// Ends hold `id` once its cancel is written, after `RECENT` (a page read before the
    /// cancel's commit may still be offered meanwhile); asks for a scan, which offers again
    /// what the cancel left waiting.
    pub fn end_hold(&self, id: u64) {
        let mut q = self.lock();
        let until = Instant::now() + RECENT;
        for h in q.holds.iter_mut().filter(|h| h.id == id) {
            h.until = Some(until);
        }
        q.overflow = true;
    }

    /// Drops the holds whose time is up (and asks for a scan if any was).
    pub fn lapse_holds(&self) {
        self.lock().forget_old();
    }

    /// Room left.
    pub fn space(&self) -> usize {
        self.capacity - self.lock().items.len()
    }

    /// Whether work was turned away (or refused as recently released) since the last call;
    /// clears the flag.
    pub fn take_overflow(&self) -> bool {
        std::mem::take(&mut self.lock().overflow)
    }

    pub fn len(&self) -> usize {
        self.lock().items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::StoredRequest;
    use apns::DeviceToken;
    use std::time::SystemTime;

    fn item(id: ApnsId) -> Ready {
        Ready {
            id,
            token: DeviceToken::parse("aa").expect("hex"),
            attempts: 0,
            expires_at: SystemTime::now(),
            request: Arc::new(StoredRequest {
                request_id: None,
                created_at: SystemTime::now(),
                app: "a".into(),
                payload: bytes::Bytes::from_static(b"{}"),
                push_type: apns::PushType::Alert,
                priority: None,
                topic: None,
                collapse_id: None,
                apns_expiration: None,
            }),
        }
    }

    #[test]
    fn known_ids_are_not_queued_twice_and_capacity_overflows_to_the_spool() {
        let q = ReadyQueue::new(2);
        let (a, b, c) = (ApnsId::new(), ApnsId::new(), ApnsId::new());
        assert_eq!(q.offer([item(a), item(a), item(b)]), 2);
        assert_eq!(q.offer([item(c)]), 0, "full");
        assert_eq!(
            (q.space(), q.take_overflow()),
            (0, true),
            "the overflow is reported once"
        );
        assert!(!q.take_overflow());
        assert_eq!(
            q.fill([item(a), item(ApnsId::new())]),
            (0, 1),
            "known, then full"
        );
        assert!(q.take_overflow());
        let taken = q.take(10);
        assert_eq!(taken.len(), 2);
        assert_eq!(q.offer([item(a)]), 0, "taken but not finished: still known");
    }

    /// Regression: a page read before an outcome committed offered the notification again after
    /// it was released, and it was sent twice (found by the end-to-end benchmark).
    #[test]
    fn a_recently_released_id_is_refused() {
        let q = ReadyQueue::new(10);
        let a = ApnsId::new();
        q.offer([item(a)]);
        q.take(1);
        q.release([a]);
        assert_eq!(q.offer([item(a)]), 0);
        assert!(q.is_empty());
        assert!(
            q.take_overflow(),
            "a later scan is asked for, in case it is due again"
        );
    }

    #[test]
    fn in_flight_is_counted_from_take_to_release() {
        let q = ReadyQueue::new(10);
        let (a, b, c) = (ApnsId::new(), ApnsId::new(), ApnsId::new());
        q.offer([item(a), item(b), item(c)]);
        assert_eq!((q.in_flight_count(), q.is_in_flight(&a)), (0, false));
        q.take(2);
        assert_eq!(q.in_flight_count(), 2);
        assert!(q.is_in_flight(&a) && q.is_in_flight(&b) && !q.is_in_flight(&c));
        q.release([a, a]);
        assert_eq!(q.in_flight_count(), 1, "a second release changes nothing");
        assert!(!q.is_in_flight(&a));
        q.release([b]);
        assert_eq!((q.in_flight_count(), q.len()), (0, 1));
    }
}
