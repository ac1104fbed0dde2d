//! Supersede's memory half (docs/cancel.md, "Supersede"). The spool replaces an older queued
//! notification by a newer one in the newer one's commit (`spool::supersede`), but on SQLite
//! only dispatch knows what is in flight. So intake, before the commit, holds the queue of
//! each app it submits keyed notifications for ([`Dispatcher::supersede_hold`]): what those
//! (token, key) pairs name is neither taken nor queued until the commit's end, and what is
//! already taken is spared by the commit (sent, as it was going to be). After the commit,
//! [`Dispatcher::offer`] ends the holds: a replaced notification still in memory gives its
//! place to the newest that replaced it, and every replaced id is refused for a while by the
//! queue (a page the scheduler read before the commit may still name it).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::SystemTime;

use apns::ApnsId;

use super::Dispatcher;
use super::ready::{Ready, ReadyQueue, pair};
use crate::events::{Event, OutcomeEvent};
use crate::spool::{NewRequest, State, StoredRequest};

/// The holds of one submission, ended by [`Dispatcher::offer`] — or, if the submission never
/// gets there (refused, replayed, its task gone), when dropped, replacing nothing.
#[derive(Debug, Default)]
pub struct SupersedeHold {
    holds: Vec<(String, Arc<ReadyQueue>, u64)>,
}

impl Drop for SupersedeHold {
    fn drop(&mut self) {
        for (_, queue, id) in self.holds.drain(..) {
            queue.end_supersede(id, Vec::new());
        }
    }
}

impl Dispatcher {
    /// Holds, for the keyed requests of `requests` that are for now (a scheduled one
    /// supersedes nothing yet), their apps' queues on the (token, key) pairs they name, and
    /// tells each of those requests what is in flight and must be spared.
    pub fn supersede_hold(&self, requests: &mut [NewRequest]) -> SupersedeHold {
        let mut pairs: HashMap<String, HashSet<u64>> = HashMap::new();
        for r in requests.iter() {
            let Some(s) = r.supersede.as_ref().filter(|_| r.send_at.is_none()) else {
                continue;
            };
            let set = match pairs.get_mut(&r.app) {
                Some(set) => set,
                None => pairs.entry(r.app.clone()).or_default(),
            };
            set.extend(r.notifications.iter().map(|(_, t)| pair(t, s.key)));
        }
        let mut hold = SupersedeHold::default();
        if pairs.is_empty() {
            return hold;
        }
        let mut spares: HashMap<String, Arc<[ApnsId]>> = HashMap::new();
        {
            let apps = self.shared.apps.read().expect("apps lock");
            for (app, set) in pairs {
                let Some(w) = apps.get(&app) else {
                    continue;
                };
                let (id, spare) = w.queue.supersede_hold(set);
                hold.holds.push((app.clone(), Arc::clone(&w.queue), id));
                spares.insert(app, Arc::from(spare));
            }
        }
        for r in requests.iter_mut() {
            if let (Some(s), Some(spare)) = (r.supersede.as_mut(), spares.get(&r.app)) {
                s.spare = Arc::clone(spare);
            }
        }
        hold
    }

    /// Ends `hold` after the commit of `requests`: counts and reports what they replaced, and
    /// puts each replaced notification's newest successor in its place in memory. Answers
    /// the ids replaced, which are not to be offered (a submission may replace its own).
    pub(super) fn end_supersede(
        &self,
        requests: &[NewRequest],
        stored: &[Option<Arc<StoredRequest>>],
        mut hold: SupersedeHold,
    ) -> HashSet<ApnsId> {
        let mut by_of: HashMap<ApnsId, ApnsId> = HashMap::new();
        for r in requests {
            for x in r.supersede.iter().flat_map(|s| &s.replaced) {
                by_of.insert(x.old, x.by);
            }
        }
        if by_of.is_empty() {
            return HashSet::new();
        }
        // Where each newer notification of this submission is: its request and token.
        let mut newer: HashMap<ApnsId, (usize, &apns::DeviceToken)> = HashMap::new();
        for (i, r) in requests.iter().enumerate() {
            if r.supersede.is_some() {
                newer.extend(r.notifications.iter().map(|(id, t)| (*id, (i, t))));
            }
        }
        let sinks = self.shared.events.sinks();
        let now = SystemTime::now();
        let mut replacements: HashMap<&str, Vec<(ApnsId, Option<Ready>)>> = HashMap::new();
        for r in requests {
            let Some(s) = &r.supersede else { continue };
            if s.replaced.is_empty() {
                continue;
            }
            crate::metrics::superseded(&r.app, s.replaced.len() as u64);
            tracing::debug!(app = %r.app, superseded = s.replaced.len(), "superseded by newer notifications");
            for x in &s.replaced {
                // The newest of the chain (a submission may replace its own notifications).
                let mut last = x.by;
                while let Some(next) = by_of.get(&last) {
                    last = *next;
                }
                let successor = newer.get(&last).and_then(|&(i, token)| {
                    Some(Ready {
                        id: last,
                        token: token.clone(),
                        attempts: 0,
                        expires_at: requests[i].expires_at,
                        request: Arc::clone(stored[i].as_ref()?),
                    })
                });
                if sinks.any()
                    && let Some(&(_, token)) = newer.get(&x.by)
                {
                    sinks.send(&Event::Outcome(OutcomeEvent {
                        time: now,
                        id: x.old,
                        app: r.app.clone(),
                        token: token.clone(),
                        state: State::Superseded,
                        status: None,
                        reason: Some("Superseded".to_owned()),
                        attempts: x.attempts,
                    }));
                }
                replacements
                    .entry(r.app.as_str())
                    .or_default()
                    .push((x.old, successor));
            }
        }
        for (app, queue, id) in std::mem::take(&mut hold.holds) {
            queue.end_supersede(id, replacements.remove(app.as_str()).unwrap_or_default());
        }
        by_of.into_keys().collect()
    }
}
