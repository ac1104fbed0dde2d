//! Outcomes since the gateway started, for the dashboard.

use std::collections::{BTreeMap, VecDeque};
use std::time::SystemTime;

/// Outcomes since the gateway started, for the dashboard: counts by final state, failures by
/// reason, the latest failures, each app's deliveries and failures, and how long deliveries
/// took (the charts' samples are differences of these, `super::history`).
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub outcomes: BTreeMap<&'static str, u64>,
    pub failures_by_reason: BTreeMap<String, u64>,
    /// Newest first, at most [`LATEST_FAILURES`].
    pub latest_failures: VecDeque<FailureRecord>,
    /// Per app: delivered, and failed or expired.
    pub by_app: BTreeMap<String, (u64, u64)>,
    /// Accept → delivered times.
    pub latency: Latency,
}

/// Accept → delivered times in buckets that double every two steps, from 1 ms: a quantile is
/// read to within a factor of 1.41, which is what a chart of the last hour can show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Latency(pub [u64; LATENCY_BUCKETS]);

/// 60 buckets: the last ends past eight days.
pub const LATENCY_BUCKETS: usize = 60;

impl Default for Latency {
    fn default() -> Latency {
        Latency([0; LATENCY_BUCKETS])
    }
}

impl Latency {
    /// The bucket's upper bound, in milliseconds.
    pub fn bound_ms(i: usize) -> f64 {
        2f64.powf(i as f64 / 2.0)
    }

    pub fn record(&mut self, took: std::time::Duration) {
        let ms = took.as_secs_f64() * 1000.0;
        let i = if ms <= 1.0 {
            0
        } else {
            ((2.0 * ms.log2()).ceil() as usize).min(LATENCY_BUCKETS - 1)
        };
        self.0[i] += 1;
    }

    /// The counts recorded since `earlier`.
    pub fn since(&self, earlier: &Latency) -> Latency {
        let mut d = Latency::default();
        for (i, (now, then)) in self.0.iter().zip(&earlier.0).enumerate() {
            d.0[i] = now.saturating_sub(*then);
        }
        d
    }

    /// The `q` quantile's bucket bound in milliseconds (`None` without samples).
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let total: u64 = self.0.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = (q * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.0.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(Latency::bound_ms(i));
            }
        }
        Some(Latency::bound_ms(LATENCY_BUCKETS - 1))
    }
}

/// How many recent failures the dashboard keeps.
pub const LATEST_FAILURES: usize = 20;

#[derive(Debug, Clone)]
pub struct FailureRecord {
    pub time: SystemTime,
    pub id: apns::ApnsId,
    pub app: String,
    pub token: apns::DeviceToken,
    pub state: crate::spool::State,
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::Latency;
    use std::time::Duration;

    #[test]
    fn quantiles_come_from_the_buckets_within_a_factor_of_1_41() {
        let mut l = Latency::default();
        for ms in 1..=100u64 {
            l.record(Duration::from_millis(ms));
        }
        let p50 = l.quantile_ms(0.5).unwrap();
        let p99 = l.quantile_ms(0.99).unwrap();
        assert!((50.0..=50.0 * 1.415).contains(&p50), "{p50}");
        assert!((99.0..=99.0 * 1.415).contains(&p99), "{p99}");
        assert_eq!(Latency::default().quantile_ms(0.5), None);
        let before = l.clone();
        l.record(Duration::from_secs(3600));
        let hour = l.since(&before).quantile_ms(0.5).unwrap();
        assert!(
            (3_600_000.0..=3_600_000.0 * 1.415).contains(&hour),
            "{hour}"
        );
    }
}
