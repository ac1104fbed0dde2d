//! The last hour in samples, for the dashboard's charts: every [`INTERVAL`] the growth of the
//! tally (delivered, failed by reason, accept → delivered quantiles, each app's figures) and
//! the queue's depth at that moment, in a ring of [`SAMPLES`]. Kept in memory by the gateway
//! itself — no external service — and reset by a restart.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use super::tally::Tally;

/// How often a sample is taken.
pub const INTERVAL: Duration = Duration::from_secs(10);
/// An hour of them.
pub const SAMPLES: usize = 360;
/// Apps with a health strip: the first this many by name (the rest are in the dashboard's
/// table), so that a gateway of thousands of apps keeps an hour of strips in kilobytes.
pub const STRIP_APPS: usize = 50;

/// One interval.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    /// The interval's end, UNIX milliseconds.
    pub at_ms: u64,
    /// Its length, measured on the monotonic clock (the live one is shorter).
    pub seconds: f64,
    pub delivered: u64,
    /// Failed or expired, by reason (`""` for none).
    pub failed: BTreeMap<String, u64>,
    /// Accept → delivered, of the notifications delivered in the interval.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Notifications not yet final at its end.
    pub queued: u64,
    pub apps: BTreeMap<String, AppSample>,
}

/// One app in one interval: the health strip's cell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppSample {
    pub delivered: u64,
    pub failed: u64,
    pub halted: bool,
}

impl AppSample {
    /// The cell as one letter: `b` halted or only failures, `w` some failures, `o` delivered,
    /// `i` idle (a strip is an hour of these in a string: small to send every refresh).
    pub fn code(&self) -> char {
        match (self.halted, self.delivered, self.failed) {
            (true, _, _) | (false, 0, 1..) => 'b',
            (false, _, 1..) => 'w',
            (false, 1.., 0) => 'o',
            (false, 0, 0) => 'i',
        }
    }
}

/// What the gateway looks like at a sampling moment, besides the tally.
#[derive(Debug, Clone)]
pub struct Now {
    /// The moment, on the monotonic clock (intervals are measured on it: a wall clock that
    /// steps would make rates wrong).
    pub instant: Instant,
    pub queued: u64,
    /// The first [`STRIP_APPS`] configured apps by name, and whether each is halted.
    pub apps: Vec<(String, bool)>,
}

#[derive(Debug, Default)]
pub struct History {
    samples: VecDeque<Sample>,
    /// The tally and time of the last sample (or the start).
    last: Option<(Instant, Tally)>,
}

impl History {
    /// Takes the sample ending `at`.
    pub fn sample(&mut self, at: SystemTime, tally: &Tally, now: &Now) {
        let sample = self.since_last(at, tally, now);
        if self.samples.len() == SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
        self.last = Some((now.instant, tally.clone()));
    }

    /// The interval in progress, up to `at` (not kept).
    pub fn live(&self, at: SystemTime, tally: &Tally, now: &Now) -> Sample {
        self.since_last(at, tally, now)
    }

    /// The samples, oldest first.
    pub fn samples(&self) -> impl Iterator<Item = &Sample> {
        self.samples.iter()
    }

    /// Starts counting from `tally` at `at` (the gateway's start).
    pub fn start(&mut self, at: Instant, tally: &Tally) {
        self.last = Some((at, tally.clone()));
    }

    fn since_last(&self, at: SystemTime, tally: &Tally, now: &Now) -> Sample {
        let empty = Tally::default();
        let (from, before) = match &self.last {
            Some((t, before)) => (*t, before),
            None => (now.instant, &empty),
        };
        let count = |t: &Tally, s: &str| t.outcomes.get(s).copied().unwrap_or(0);
        let mut failed = BTreeMap::new();
        for (reason, n) in &tally.failures_by_reason {
            let d = n.saturating_sub(before.failures_by_reason.get(reason).copied().unwrap_or(0));
            if d > 0 {
                failed.insert(reason.clone(), d);
            }
        }
        let latency = tally.latency.since(&before.latency);
        let apps = now
            .apps
            .iter()
            .map(|(name, halted)| {
                let (ok, bad) = tally.by_app.get(name).copied().unwrap_or_default();
                let (ok0, bad0) = before.by_app.get(name).copied().unwrap_or_default();
                let cell = AppSample {
                    delivered: ok.saturating_sub(ok0),
                    failed: bad.saturating_sub(bad0),
                    halted: *halted,
                };
                (name.clone(), cell)
            })
            .collect();
        Sample {
            at_ms: at
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            seconds: (now.instant.saturating_duration_since(from).as_secs_f64() * 10.0).round()
                / 10.0,
            delivered: count(tally, "delivered").saturating_sub(count(before, "delivered")),
            failed,
            // A bucket's bound, to a tenth of a millisecond: the JSON stays short.
            p50_ms: latency.quantile_ms(0.5).map(|q| (q * 10.0).round() / 10.0),
            p99_ms: latency.quantile_ms(0.99).map(|q| (q * 10.0).round() / 10.0),
            queued: now.queued,
            apps,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_the_growth_between_two_moments_and_the_ring_keeps_an_hour() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let i0 = Instant::now();
        let mut tally = Tally::default();
        let mut h = History::default();
        h.start(i0, &tally);
        let at = |d: Duration| Now {
            instant: i0 + d,
            queued: 7,
            apps: vec![("shop".into(), false), ("news".into(), true)],
        };
        *tally.outcomes.entry("delivered").or_default() += 5;
        *tally
            .failures_by_reason
            .entry("BadDeviceToken".into())
            .or_default() += 2;
        tally.by_app.insert("shop".into(), (5, 2));
        for _ in 0..5 {
            tally.latency.record(Duration::from_millis(30));
        }
        let live = h.live(
            t0 + Duration::from_secs(4),
            &tally,
            &at(Duration::from_secs(4)),
        );
        assert_eq!((live.delivered, live.seconds), (5, 4.0));
        h.sample(t0 + INTERVAL, &tally, &at(INTERVAL));
        let s = h.samples().last().unwrap().clone();
        assert_eq!(s.delivered, 5);
        assert_eq!(s.failed["BadDeviceToken"], 2);
        assert!(s.p50_ms.unwrap() >= 30.0);
        assert_eq!(s.queued, 7);
        assert_eq!(
            s.apps["shop"],
            AppSample {
                delivered: 5,
                failed: 2,
                halted: false
            }
        );
        assert!(s.apps["news"].halted);
        // Nothing since: the next sample is empty.
        h.sample(t0 + 2 * INTERVAL, &tally, &at(2 * INTERVAL));
        let s = h.samples().last().unwrap();
        assert_eq!((s.delivered, s.failed.len(), s.p50_ms), (0, 0, None));
        for i in 0..SAMPLES as u32 {
            h.sample(t0 + (3 + i) * INTERVAL, &tally, &at((3 + i) * INTERVAL));
        }
        assert_eq!(h.samples().count(), SAMPLES);
    }

    #[test]
    fn a_cell_is_one_letter() {
        let cell = |delivered, failed, halted| {
            AppSample {
                delivered,
                failed,
                halted,
            }
            .code()
        };
        assert_eq!(cell(0, 0, false), 'i');
        assert_eq!(cell(3, 0, false), 'o');
        assert_eq!(cell(3, 1, false), 'w');
        assert_eq!(cell(0, 1, false), 'b');
        assert_eq!(cell(3, 0, true), 'b');
    }
}
