//! The guard against a wrong `environment` (docs/dispatch.md, "Halts and resumption").
//!
//! A sandbox token sent to production (or the reverse) is answered BadDeviceToken, so an app
//! configured for the wrong environment sees every token called bad. Registering those tokens
//! as dead would suppress every device the app has. So until the app's credential has proved
//! itself on this endpoint — a 200, or [`WINDOW`] answers since start, reload or resume — a
//! BadDeviceToken outcome is *held*: neither committed nor its token registered. When the
//! window closes:
//!
//! - at least half of its answers BadDeviceToken → the app halts with `LikelyWrongEnvironment`
//!   and the held notifications go back to the queue without using an attempt;
//! - otherwise (or at the first 200) the held outcomes are committed as dead tokens.
//!
//! A window that stays open while the app has nothing more to send is closed by the same rule
//! once it holds [`MIN_EVIDENCE`] answers; with fewer, one stray bad token among a handful of
//! sends is no sign of a wrong environment, and it is committed.

use apns::{Outcome, Reason};

use super::ready::Ready;
use crate::outcomes::Decision;

/// Answers after which the credential counts as proved.
pub(crate) const WINDOW: u32 = 100;
/// Answers an idle app needs in its window before BadDeviceToken halts it.
pub(crate) const MIN_EVIDENCE: u32 = 10;

/// A BadDeviceToken outcome not yet committed.
#[derive(Debug)]
pub(crate) struct Held {
    pub ready: Ready,
    pub decision: Decision,
}

/// What the worker does with the held outcomes when the window closes.
#[derive(Debug)]
pub(crate) enum Closed {
    /// Commit them as decided (dead tokens).
    Commit(Vec<Held>),
    /// Halt the app; put them back without an attempt.
    Halt(Vec<Held>),
}

#[derive(Debug, Default)]
pub(crate) struct EnvGuard {
    proven: bool,
    answers: u32,
    bad: u32,
    held: Vec<Held>,
}

impl EnvGuard {
    /// Opens a new window (start, reload, resume). What was held is returned, to go back to
    /// the queue: it was judged under settings no longer in force.
    pub fn reset(&mut self) -> Vec<Held> {
        let held = std::mem::take(&mut self.held);
        *self = EnvGuard::default();
        held
    }

    /// Counts an attempt's outcome. Gives it back unless it is held; closes the window when
    /// this answer decides it.
    pub fn answer(
        &mut self,
        outcome: &Outcome,
        ready: Ready,
        decision: Decision,
    ) -> (Option<Held>, Option<Closed>) {
        let item = Held { ready, decision };
        if self.proven {
            return (Some(item), None);
        }
        let Outcome::Response(r) = outcome else {
            return (Some(item), None);
        };
        self.answers += 1;
        let bad = outcome.reason() == Some(&Reason::BadDeviceToken);
        let passed = if bad {
            self.bad += 1;
            self.held.push(item);
            None
        } else {
            Some(item)
        };
        let closed = if r.status == 200 {
            self.proven = true;
            Some(Closed::Commit(std::mem::take(&mut self.held)))
        } else if self.answers >= WINDOW {
            self.close()
        } else {
            None
        };
        (passed, closed)
    }

    /// The app has nothing in flight and nothing queued: closes a window that holds anything,
    /// if it has seen enough to judge; a small one is committed.
    pub fn idle(&mut self) -> Option<Closed> {
        if self.held.is_empty() {
            return None;
        }
        if self.answers >= MIN_EVIDENCE {
            self.close()
        } else {
            Some(Closed::Commit(std::mem::take(&mut self.held)))
        }
    }

    fn close(&mut self) -> Option<Closed> {
        let held = std::mem::take(&mut self.held);
        if self.bad * 2 >= self.answers {
            // Not proved: a new window opens after the halt ends (reload or probe).
            *self = EnvGuard::default();
            Some(Closed::Halt(held))
        } else {
            self.proven = true;
            Some(Closed::Commit(held))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcomes::testing::{answer, ready};
    use crate::outcomes::{Limits, decide};
    use std::time::{Duration, SystemTime};

    /// Feeds one answer; returns whether it passed and what closed.
    fn feed(g: &mut EnvGuard, o: &Outcome) -> (bool, Option<Closed>) {
        let r = ready(0, Duration::from_secs(60), None);
        let d = decide(
            &r,
            "a",
            o,
            Limits {
                max_attempts: 3,
                retry_base: crate::outcomes::backoff::BASE,
            },
            SystemTime::now(),
        );
        let (passed, closed) = g.answer(o, r, d);
        (passed.is_some(), closed)
    }

    fn bad() -> Outcome {
        answer(400, Some(Reason::BadDeviceToken))
    }

    #[test]
    fn a_window_of_bad_tokens_halts_with_everything_held() {
        let mut g = EnvGuard::default();
        for _ in 0..WINDOW - 1 {
            assert!(matches!(feed(&mut g, &bad()), (false, None)));
        }
        let (passed, closed) = feed(&mut g, &bad());
        assert!(!passed);
        assert!(matches!(closed, Some(Closed::Halt(h)) if h.len() == WINDOW as usize));
    }

    #[test]
    fn a_200_proves_the_credential_and_commits_what_was_held() {
        let mut g = EnvGuard::default();
        for _ in 0..3 {
            feed(&mut g, &bad());
        }
        let (passed, closed) = feed(&mut g, &answer(200, None));
        assert!(passed);
        assert!(matches!(closed, Some(Closed::Commit(h)) if h.len() == 3));
        // Proved: later bad tokens pass at once.
        assert!(matches!(feed(&mut g, &bad()), (true, None)));
    }

    #[test]
    fn a_mostly_good_window_commits_its_bad_tokens() {
        let mut g = EnvGuard::default();
        let mut closed = None;
        for i in 0..WINDOW {
            // 503s: answers that are neither proof nor BadDeviceToken.
            let o = if i % 10 == 0 {
                bad()
            } else {
                answer(503, Some(Reason::ServiceUnavailable))
            };
            closed = feed(&mut g, &o).1.or(closed);
        }
        assert!(matches!(closed, Some(Closed::Commit(h)) if h.len() == 10));
    }

    #[test]
    fn an_idle_window_halts_only_with_enough_evidence() {
        let mut g = EnvGuard::default();
        for _ in 0..MIN_EVIDENCE - 1 {
            feed(&mut g, &bad());
        }
        assert!(
            matches!(g.idle(), Some(Closed::Commit(h)) if h.len() == MIN_EVIDENCE as usize - 1)
        );
        let mut g = EnvGuard::default();
        for _ in 0..MIN_EVIDENCE {
            feed(&mut g, &bad());
        }
        assert!(matches!(g.idle(), Some(Closed::Halt(_))));
        assert!(g.idle().is_none(), "nothing held after the verdict");
    }

    #[test]
    fn timeouts_and_lost_connections_are_no_answers() {
        let mut g = EnvGuard::default();
        for _ in 0..WINDOW * 2 {
            assert!(matches!(feed(&mut g, &Outcome::Timeout), (true, None)));
        }
        assert!(g.idle().is_none());
    }
}
