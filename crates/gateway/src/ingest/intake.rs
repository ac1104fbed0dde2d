//! [`Intake`]: the one way in. Every listener — the HTTP API, the injector, SMTP, the
//! dashboard's test send, and the ways in still to come — parses what it received into spool
//! requests and hands them here as a [`Submission`]: committed whole (the answer comes only
//! after the spool's commit), counted, and offered straight to dispatch. A submission with an
//! idempotency key is stored once per key (`spool::idempotency`); while one is being
//! committed, another under the same key is told so rather than made to wait.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use apns::ApnsId;

use crate::auth::Caller;
use crate::config::{Config, Current};
use crate::dispatch::Dispatcher;
use crate::spool::{
    Enqueued, IdempotencyKey, NewRequest, RequestId, Spool, Store, SubmitError, Submitted,
};

/// What a way in hands over.
pub struct Submission {
    /// Who submits, when the way in knows (an SMTP session without AUTH does not). The parsers
    /// have checked its scopes already; it is carried for what comes after the commit.
    pub caller: Option<Caller>,
    /// Stored in one transaction: all of them or none.
    pub requests: Vec<NewRequest>,
    /// Runs once the requests are committed and handed to dispatch, before the submitter
    /// hears so — however the submitter fares meanwhile (a client that went away still has its
    /// hook run). Not run for a replay of an idempotency key: nothing was committed. It runs on the runtime and must not block: hand slow work (a beanstalkd
    /// delete) to a task of its own, through a channel.
    pub on_commit: Option<OnCommit>,
    /// Stored once per key: a second submission under it is answered with the first one's
    /// ids ([`Accepted::Replayed`]) and stores nothing.
    pub idempotency: Option<IdempotencyKey>,
}

/// What [`Intake::submit`] did with an accepted submission.
#[derive(Debug, PartialEq)]
pub enum Accepted {
    /// Committed now, under the ids its requests carry, as this submission.
    Committed(RequestId),
    /// Its idempotency key was committed before, with the same fingerprint: nothing was
    /// stored; the first submission's ids answer it.
    Replayed(Replay),
}

/// The first submission under a key, answering a second one.
#[derive(Debug, PartialEq)]
pub struct Replay {
    /// Its ids, in its requests' order.
    pub first: Vec<ApnsId>,
    /// This submission's ids (as its parse made them) to the first one's, when it makes the
    /// same notifications (the same body parses the same way, unless a reload changed how).
    map: Option<HashMap<ApnsId, ApnsId>>,
}

impl Replay {
    /// `ids` of this submission (in any grouping a way in answers with) as the first one
    /// answered them; `None` when this submission no longer makes the same notifications.
    pub fn translate(&self, ids: &[ApnsId]) -> Option<Vec<ApnsId>> {
        let map = self.map.as_ref()?;
        ids.iter().map(|id| map.get(id).copied()).collect()
    }
}

/// A hook run after the commit, with the committed requests.
pub type OnCommit = Box<dyn FnOnce(&[NewRequest]) + Send>;

impl Submission {
    /// `requests` from `caller`, without a hook.
    pub fn new(caller: Option<Caller>, requests: Vec<NewRequest>) -> Submission {
        Submission {
            caller,
            requests,
            on_commit: None,
            idempotency: None,
        }
    }

    /// Under idempotency key `key`.
    pub fn once(mut self, key: Option<IdempotencyKey>) -> Submission {
        self.idempotency = key;
        self
    }
}

impl std::fmt::Debug for Submission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Submission")
            .field("caller", &self.caller.as_ref().map(|c| &c.name))
            .field("requests", &self.requests.len())
            .field("on_commit", &self.on_commit.is_some())
            .field("idempotency", &self.idempotency.as_ref().map(|k| &k.key))
            .finish()
    }
}

/// What is wrong with a way in, for `/readyz`'s reason codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trouble {
    /// Its server is out of reach (a beanstalkd server).
    Unreachable,
    /// It cannot be served as configured (a beanstalkd tube).
    Misconfigured,
}

/// The configuration in force, the spool and the hand-off to dispatch.
#[derive(Debug)]
pub struct Intake {
    config: Arc<Current>,
    spool: Store,
    /// `None` when nothing dispatches (tests of a way in alone).
    dispatch: Option<Arc<Dispatcher>>,
    /// The idempotency keys (scope, key) of submissions being committed now. A std mutex,
    /// never held across an await.
    committing: Arc<Mutex<HashSet<(String, String)>>>,
    /// What is wrong with a way in now (a beanstalkd server out of reach), by way in, for
    /// `/readyz`.
    troubles: Mutex<std::collections::BTreeMap<String, (Trouble, String)>>,
    /// The warning about tokens of an unusual size.
    token_sizes: Arc<super::token_sizes::TokenSizes>,
    /// Each key's bucket, for `[[api_keys]] rate_per_s`.
    rates: super::rate::RateLimits,
    /// Refused credentials by address, for every way in that takes one.
    login_failures: crate::login_failures::LoginFailures,
}

impl Intake {
    /// Submits to `spool` and hands off to `dispatch`, reading the configuration dispatch
    /// puts in force (one copy for both, so a reload reaches every way in).
    pub fn new(spool: Store, dispatch: Arc<Dispatcher>) -> Intake {
        Intake {
            config: Arc::clone(dispatch.current()),
            spool,
            dispatch: Some(dispatch),
            committing: Arc::default(),
            troubles: Mutex::default(),
            token_sizes: Arc::default(),
            rates: super::rate::RateLimits::default(),
            login_failures: crate::login_failures::LoginFailures::default(),
        }
    }

    /// For a way in tested alone: `config` in force, nothing dispatching.
    pub fn standalone(config: Arc<Config>, spool: Store) -> Intake {
        Intake {
            config: Arc::new(Current::new(config)),
            spool,
            dispatch: None,
            committing: Arc::default(),
            troubles: Mutex::default(),
            token_sizes: Arc::default(),
            rates: super::rate::RateLimits::default(),
            login_failures: crate::login_failures::LoginFailures::default(),
        }
    }

    /// Refused credentials by address (the HTTP API, the dashboard's login, SMTP AUTH).
    pub fn login_failures(&self) -> &crate::login_failures::LoginFailures {
        &self.login_failures
    }

    /// How long a credential from `peer` waits before it is looked at: nothing unless the
    /// address keeps failing and `[server] slow_failed_logins` covers it.
    pub fn login_delay(&self, peer: std::net::IpAddr) -> std::time::Duration {
        if self.config().server.slow_failed_logins.applies_to(peer) {
            self.login_failures.delay(peer)
        } else {
            std::time::Duration::ZERO
        }
    }

    /// Waits [`Intake::login_delay`] (at most `login_failures::MAX_DELAY`, within the
    /// listeners' drain at shutdown).
    pub async fn hold_off(&self, peer: std::net::IpAddr) {
        let wait = self.login_delay(peer);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// The configuration in force (API keys, apps, limits).
    pub fn config(&self) -> Arc<Config> {
        self.config.get()
    }

    pub fn spool(&self) -> &Store {
        &self.spool
    }

    pub fn dispatch(&self) -> Option<&Arc<Dispatcher>> {
        self.dispatch.as_ref()
    }

    /// Reports what is wrong with the way in `way` now (its kind, in words), or (`None`) that
    /// nothing is.
    pub fn trouble(&self, way: &str, problem: Option<(Trouble, String)>) {
        let mut t = self
            .troubles
            .lock()
            .expect("the troubles lock is never poisoned");
        match problem {
            Some(p) => t.insert(way.to_owned(), p),
            None => t.remove(way),
        };
    }

    /// Every way in with a problem now, and the problem.
    pub fn troubles(&self) -> Vec<(String, Trouble, String)> {
        let t = self
            .troubles
            .lock()
            .expect("the troubles lock is never poisoned");
        t.iter()
            .map(|(w, (kind, p))| (w.clone(), *kind, p.clone()))
            .collect()
    }

    /// Commits the submission's requests, runs its hook, counts them and offers them straight
    /// to dispatch without reading back what was just written; answers after all of that.
    ///
    /// This runs in its own task: a client that goes away before its answer makes hyper drop
    /// the handler, and with it the handler's future, but what reaches the writer is committed
    /// either way — and committed work must reach dispatch (and its hook run), not wait in the
    /// spool for an unrelated rescan.
    pub async fn submit(&self, submission: Submission) -> Result<Accepted, SubmitError> {
        // The key's rate limit (as the configuration in force has it, so a reload reaches
        // sessions already open), before anything is stored. What stores nothing — refused
        // by the limit, the spool or its key, or a replay — gives its tokens back.
        let charged = match &submission.caller {
            Some(c) => self
                .config()
                .api_keys
                .iter()
                .find(|k| k.name == c.name)
                .and_then(|k| k.rate)
                .map(|rate| {
                    let n: usize = submission.requests.iter().map(NewRequest::len).sum();
                    (c.name.clone(), rate, n)
                }),
            None => None,
        };
        if let Some((key, rate, n)) = &charged
            && let Err(wait) = self.rates.take(key, *rate, *n, std::time::Instant::now())
        {
            crate::metrics::rate_limited(key);
            return Err(SubmitError::RateLimited {
                key: key.clone(),
                per_s: rate.per_s,
                retry_after: wait,
            });
        }
        // An app an operator paused with `reject` takes nothing until it is resumed.
        if let Some(d) = &self.dispatch
            && let Some(p) = submission
                .requests
                .iter()
                .find_map(|r| d.pause_of(&r.app).filter(|p| p.reject))
        {
            if let Some((key, rate, n)) = &charged {
                self.rates.give_back(key, *rate, *n);
            }
            return Err(SubmitError::AppPaused { app: p.app });
        }
        let result = self.commit(submission).await;
        if let Some((key, rate, n)) = &charged
            && matches!(result, Err(_) | Ok(Accepted::Replayed(_)))
        {
            self.rates.give_back(key, *rate, *n);
        }
        result
    }

    /// [`Intake::submit`] past the rate limit.
    async fn commit(&self, submission: Submission) -> Result<Accepted, SubmitError> {
        let spool = self.spool.clone();
        let dispatch = self.dispatch.clone();
        let token_sizes = Arc::clone(&self.token_sizes);
        let config = self.config();
        let claim = match &submission.idempotency {
            Some(k) => Some(Claim::take(&self.committing, k)?),
            None => None,
        };
        let committing = tokio::spawn(async move {
            let Submission {
                caller,
                mut requests,
                on_commit,
                idempotency,
            } = submission;
            // One id and one time for the whole submission, whatever its requests.
            // To the millisecond, as the spool keeps it: a cancel's `created_before` then
            // names the same notifications in memory as in the spool.
            let submitted = Submitted {
                id: RequestId::new(),
                at: crate::spool::from_ms(crate::spool::to_ms(std::time::SystemTime::now())),
            };
            for r in &mut requests {
                r.submitted = Some(submitted);
                // A time already past is no schedule: the spool stores it queued and dispatch
                // takes it now — both decide from this, not each from its own clock (a row
                // the spool called scheduled, nobody's, must not be sent from memory).
                if r.send_at.is_some_and(|t| t <= submitted.at) {
                    r.send_at = None;
                }
            }
            super::supersede::choose(&config, &mut requests);
            drop(config);
            // What these may supersede is neither taken nor queued until the commit's end
            // (`dispatch::supersede`); the hold ends however this task does.
            let hold = dispatch.as_ref().map(|d| d.supersede_hold(&mut requests));
            let committed = match idempotency {
                None => spool.enqueue(requests).await?,
                Some(key) => {
                    // In the order the spool keeps a key's ids: requests, then notifications.
                    let order: Vec<ApnsId> = requests
                        .iter()
                        .flat_map(|r| r.notifications.iter().map(|(id, _)| *id))
                        .collect();
                    match spool.enqueue_once(requests, key).await? {
                        Enqueued::Stored(committed) => committed,
                        Enqueued::Replayed(first) => {
                            crate::metrics::replayed();
                            let map = (order.len() == first.len())
                                .then(|| order.into_iter().zip(first.iter().copied()).collect());
                            return Ok(Accepted::Replayed(Replay { first, map }));
                        }
                    }
                }
            };
            // Committed: a submission under the same key now finds it in the spool.
            drop(claim);
            for r in &committed {
                crate::metrics::accepted(&r.app, r.len());
            }
            token_sizes.check(&committed);
            tracing::debug!(
                caller = caller.as_ref().map(|c| c.name.as_str()),
                requests = committed.len(),
                "submission committed"
            );
            if let Some(d) = &dispatch {
                d.offer(&committed, hold.unwrap_or_default());
            }
            // After the offer: a hook that panics cannot keep committed work from dispatch.
            if let Some(hook) = on_commit {
                let run = std::panic::AssertUnwindSafe(|| hook(&committed));
                if std::panic::catch_unwind(run).is_err() {
                    tracing::error!("a submission's on-commit hook panicked");
                }
            }
            Ok(Accepted::Committed(submitted.id))
        });
        match committing.await {
            Ok(result) => result,
            // Only a panic ends the task early (nothing cancels it).
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
}

/// An idempotency key being committed, released when dropped (committed, refused, or the task
/// gone).
struct Claim {
    set: Arc<Mutex<HashSet<(String, String)>>>,
    entry: (String, String),
}

impl Claim {
    fn take(
        set: &Arc<Mutex<HashSet<(String, String)>>>,
        key: &IdempotencyKey,
    ) -> Result<Claim, SubmitError> {
        let entry = (key.scope.clone(), key.key.clone());
        if !set
            .lock()
            .expect("the committing set is never poisoned")
            .insert(entry.clone())
        {
            return Err(SubmitError::KeyInProgress);
        }
        Ok(Claim {
            set: Arc::clone(set),
            entry,
        })
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Ok(mut set) = self.set.lock() {
            set.remove(&self.entry);
        }
    }
}
