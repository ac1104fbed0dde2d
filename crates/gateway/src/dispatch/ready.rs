//! The bounded in-memory queue of one app.
//!
//! Work arrives straight from ingest after its commit (no re-read) or from the scheduler's
//! scans of the spool; what does not fit stays in the spool (`overflow` tells the scheduler to
//! page it in later). Every id in memory or in flight is "known", so a scan never loads a
//! notification twice; an id is forgotten only after its outcome is committed, and then kept
//! for a short while as "recently released": a page read before that commit (or an offer from
//! ingest that lost a race with the scheduler) would otherwise send it again.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use apns::{ApnsId, DeviceToken};
use tokio::sync::Notify;

use crate::spool::{CancelTarget, SupersedeKey};

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
    /// In flight with a supersede key: id to its (token, key) [`pair`], for a supersede's
    /// hold to spare (`dispatch::supersede`).
    keyed_in_flight: IdMap<u64>,
    /// The supersedes being committed on this app, each with the (token, key) pairs it names:
    /// what they name is not taken meanwhile but parked, and goes back when they end.
    supersedes: Vec<(u64, HashSet<u64>)>,
    /// Named by a supersede being committed: still known as queued, taken by nobody.
    parked: Vec<Ready>,
}

/// A (token, supersede key) pair as one number: what a supersede's hold names. Two pairs
/// that share it only make a hold wider (a notification spared or parked for nothing), never
/// narrower.
pub(crate) fn pair(token: &DeviceToken, key: SupersedeKey) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    token.hash(&mut h);
    key.hash(&mut h);
    h.finish()
}

/// The (token, key) pair of `item`, if it has a supersede key.
fn pair_of(item: &Ready) -> Option<u64> {
    item.request.supersede.map(|k| pair(&item.token, k))
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

    /// Whether a supersede being committed names `item`.
    fn parks(&self, item: &Ready) -> bool {
        !self.supersedes.is_empty()
            && pair_of(item).is_some_and(|p| self.supersedes.iter().any(|(_, s)| s.contains(&p)))
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
            let parks = q.parks(&item);
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
                // Named by a supersede being committed: it may be superseded in a moment.
                Entry::Vacant(e) if parks => {
                    e.insert(Known::Queued);
                    q.parked.push(item);
                    added += 1;
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

    /// Takes up to `max` items (fewer when a supersede being committed names some: those are
    /// parked until it ends).
    pub fn take(&self, max: usize) -> Vec<Ready> {
        let mut guard = self.lock();
        let q = &mut *guard;
        let n = max.min(q.items.len());
        let mut taken: Vec<Ready> = q.items.drain(..n).collect();
        if !q.supersedes.is_empty() {
            let (parked, rest): (Vec<Ready>, Vec<Ready>) =
                taken.into_iter().partition(|r| q.parks(r));
            q.parked.extend(parked);
            taken = rest;
        }
        let mut moved = 0;
        for r in &taken {
            if let Some(k) = q.known.get_mut(&r.id)
                && *k != Known::InFlight
            {
                *k = Known::InFlight;
                moved += 1;
                if let Some(p) = pair_of(r) {
                    q.keyed_in_flight.insert(r.id, p);
                }
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
                Known::InFlight => {
                    q.in_flight -= 1;
                    if !q.keyed_in_flight.is_empty() {
                        q.keyed_in_flight.remove(&id);
                    }
                }
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
        let mut waiting: Vec<ApnsId> = q.items.drain(..).map(|r| r.id).collect();
        waiting.extend(q.parked.drain(..).map(|r| r.id));
        for id in waiting {
            q.known.remove(&id);
        }
    }

    /// Starts a supersede's hold on the (token, key) [`pair`]s it names: until
    /// [`ReadyQueue::end_supersede`], what they name is neither queued nor taken. Answers the
    /// hold and, sorted, the ids they name that are taken and not yet settled: the supersede
    /// leaves those alone.
    pub fn supersede_hold(&self, pairs: HashSet<u64>) -> (u64, Vec<ApnsId>) {
        let mut guard = self.lock();
        let q = &mut *guard;
        q.next_hold += 1;
        let id = q.next_hold;
        let mut spare: Vec<ApnsId> = q
            .keyed_in_flight
            .iter()
            .filter(|(_, p)| pairs.contains(p))
            .map(|(id, _)| *id)
            .collect();
        spare.sort_unstable();
        q.supersedes.push((id, pairs));
        (id, spare)
    }

    /// Ends supersede hold `id`, whose commit replaced each `old` by `new` (`None`: by nothing
    /// this queue is to hold, the commit failed or the newer one is not for now). A replaced
    /// notification still queued here gives its place to its newer one; every replaced id is
    /// refused by `offer` for a while (a page read before the commit may still name it); what
    /// the hold parked and was not replaced goes back to the queue.
    pub fn end_supersede(&self, id: u64, replaced: Vec<(ApnsId, Option<Ready>)>) {
        let mut guard = self.lock();
        let q = &mut *guard;
        q.supersedes.retain(|(h, _)| *h != id);
        let now = Instant::now();
        let mut swap: IdMap<Option<Ready>> = IdMap::default();
        for (old, new) in replaced {
            match q.known.get(&old) {
                Some(Known::Queued) => {
                    swap.insert(old, new);
                }
                // Spared, so not replaced; or already settled.
                Some(Known::InFlight | Known::Released(_)) => {}
                None => {
                    q.known.insert(old, Known::Released(now));
                    q.recent.push_back((now, old));
                }
            }
        }
        let swapped = !swap.is_empty();
        if swapped {
            let mut items = std::mem::take(&mut q.items);
            let mut parked = std::mem::take(&mut q.parked);
            let mut keep = |item: Ready, q: &mut Inner| -> Option<Ready> {
                let Some(new) = swap.remove(&item.id) else {
                    return Some(item);
                };
                q.known.insert(item.id, Known::Released(now));
                q.recent.push_back((now, item.id));
                let new = new?;
                match q.known.entry(new.id) {
                    Entry::Vacant(e) => {
                        e.insert(Known::Queued);
                        Some(new)
                    }
                    Entry::Occupied(_) => None,
                }
            };
            q.items = items.drain(..).filter_map(|i| keep(i, q)).collect();
            q.parked = parked.drain(..).filter_map(|i| keep(i, q)).collect();
        }
        // What no other supersede still names goes back; what a cancel names now is left to
        // it (the scan at its end offers again what it left).
        let parked = std::mem::take(&mut q.parked);
        let mut back = 0;
        for item in parked {
            if q.parks(&item) {
                q.parked.push(item);
            } else if (!q.holds.is_empty() && q.held(&item)) || q.items.len() >= self.capacity {
                q.known.remove(&item.id);
                q.overflow = true;
            } else {
                q.items.push_back(item);
                back += 1;
            }
        }
        drop(guard);
        if back > 0 || swapped {
            self.arrived.notify_one();
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
                supersede: None,
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

    fn keyed(id: ApnsId, token: &str, key: SupersedeKey) -> Ready {
        let mut r = item(id);
        r.token = DeviceToken::parse(token).expect("hex");
        let mut req = (*r.request).clone();
        req.supersede = Some(key);
        r.request = Arc::new(req);
        r
    }

    #[test]
    fn a_supersede_hold_spares_what_is_in_flight_and_parks_what_it_names() {
        let key = SupersedeKey::live_activity();
        let q = ReadyQueue::new(10);
        let (sent, old, other, new) = (ApnsId::new(), ApnsId::new(), ApnsId::new(), ApnsId::new());
        q.offer([keyed(sent, "aa", key)]);
        assert_eq!(q.take(1).len(), 1);
        q.offer([keyed(old, "aa", key), keyed(other, "bb", key)]);
        let (hold, spare) =
            q.supersede_hold([pair(&DeviceToken::parse("aa").unwrap(), key)].into());
        assert_eq!(spare, vec![sent], "what is being sent is spared");
        let taken = q.take(10);
        assert_eq!(
            taken.iter().map(|r| r.id).collect::<Vec<_>>(),
            vec![other],
            "what the hold names is not taken"
        );
        // Offered meanwhile (a page read before the commit): parked, not queued twice.
        assert_eq!(q.offer([keyed(old, "aa", key)]), 0);
        q.end_supersede(hold, vec![(old, Some(keyed(new, "aa", key)))]);
        let taken = q.take(10);
        assert_eq!(taken.iter().map(|r| r.id).collect::<Vec<_>>(), vec![new]);
        assert_eq!(
            q.offer([keyed(old, "aa", key)]),
            0,
            "the replaced one is refused"
        );
        assert!(q.is_empty());
    }

    #[test]
    fn the_successor_takes_its_place_and_an_unreplaced_parked_one_goes_back() {
        let key = SupersedeKey::live_activity();
        let q = ReadyQueue::new(10);
        let ids: Vec<ApnsId> = (0..4).map(|_| ApnsId::new()).collect();
        q.offer([
            keyed(ids[0], "aa", key),
            item(ids[1]),
            keyed(ids[2], "cc", key),
        ]);
        let aa = pair(&DeviceToken::parse("aa").unwrap(), key);
        let cc = pair(&DeviceToken::parse("cc").unwrap(), key);
        let (hold, _) = q.supersede_hold([aa, cc].into());
        // Taking parks both keyed ones; only the unkeyed one leaves.
        assert_eq!(q.take(10).len(), 1);
        q.end_supersede(hold, vec![(ids[0], Some(keyed(ids[3], "aa", key)))]);
        let order: Vec<ApnsId> = q.take(10).iter().map(|r| r.id).collect();
        assert_eq!(
            order,
            vec![ids[3], ids[2]],
            "the newer one first, where the older was"
        );
        // A hold that ends replacing nothing (its commit failed) puts everything back.
        let q = ReadyQueue::new(10);
        q.offer([keyed(ids[0], "aa", key)]);
        let (hold, _) = q.supersede_hold([aa].into());
        assert!(q.take(10).is_empty());
        q.end_supersede(hold, Vec::new());
        assert_eq!(q.take(10).len(), 1);
    }
}
