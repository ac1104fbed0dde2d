//! Per-key rate limits (`[[api_keys]] rate_per_s` / `burst`): one token bucket per key name,
//! shared by every way in — the HTTP API, the injector, SMTP AUTH, a beanstalkd tube's
//! `as_key` — since they all submit through [`Intake`](super::Intake).
//!
//! A bucket holds up to `burst` notifications and refills at `rate_per_s`. A submission of `n`
//! is let through when the bucket holds `min(n, burst)` — so one larger than the burst is not
//! refused forever — and takes all `n`, leaving the bucket in debt until it refills; refused,
//! it learns how long until it would pass (the `Retry-After`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::Rate;

/// The buckets, by key name. Names come from the configuration, so the map stays small.
#[derive(Debug, Default)]
pub struct RateLimits {
    /// A std mutex: held for one bucket's arithmetic, never across an await.
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// May be negative: a submission larger than what was left.
    tokens: f64,
    at: Instant,
}

impl RateLimits {
    /// Takes `n` notifications from `key`'s bucket at `now`, or answers how long until a
    /// submission of `n` would pass.
    pub fn take(&self, key: &str, rate: Rate, n: usize, now: Instant) -> Result<(), Duration> {
        let (per_s, burst) = (f64::from(rate.per_s), f64::from(rate.burst));
        let mut buckets = self
            .buckets
            .lock()
            .expect("the buckets lock is never poisoned");
        let b = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        // A reload may have lowered the burst: never more than it.
        b.tokens = (b.tokens + elapsed * per_s).min(burst);
        // (Callers read the clock before the lock: it never moves back.)
        b.at = b.at.max(now);
        let needed = (n as f64).min(burst);
        if b.tokens >= needed {
            b.tokens -= n as f64;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((needed - b.tokens) / per_s))
        }
    }

    /// Gives back `n` taken for a submission that stored nothing (a replay, a refusal).
    pub fn give_back(&self, key: &str, rate: Rate, n: usize) {
        let mut buckets = self
            .buckets
            .lock()
            .expect("the buckets lock is never poisoned");
        if let Some(b) = buckets.get_mut(key) {
            b.tokens = (b.tokens + n as f64).min(f64::from(rate.burst));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: Rate = Rate {
        per_s: 10,
        burst: 20,
    };

    #[test]
    fn a_burst_then_the_rate() {
        let limits = RateLimits::default();
        let t0 = Instant::now();
        assert!(limits.take("k", RATE, 20, t0).is_ok(), "the burst");
        let wait = limits.take("k", RATE, 1, t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(100), "one notification at 10/s");
        assert!(limits.take("k", RATE, 1, t0 + wait).is_ok());
        // Another key has its own bucket.
        assert!(limits.take("other", RATE, 20, t0).is_ok());
    }

    #[test]
    fn a_submission_larger_than_the_burst_passes_on_a_full_bucket_and_leaves_a_debt() {
        let limits = RateLimits::default();
        let t0 = Instant::now();
        assert!(limits.take("k", RATE, 50, t0).is_ok(), "a full bucket");
        // 20 - 50 = -30: 3.1 s until one more (from -30 to 1 at 10/s), 5 s until the 20 a
        // submission of 50 needs.
        let wait = limits.take("k", RATE, 1, t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(3_100));
        let wait = limits.take("k", RATE, 50, t0).unwrap_err();
        assert_eq!(
            wait,
            Duration::from_secs(5),
            "until the bucket is full again"
        );
    }

    #[test]
    fn a_lowered_burst_applies_at_once() {
        let limits = RateLimits::default();
        let t0 = Instant::now();
        assert!(limits.take("k", RATE, 1, t0).is_ok());
        let small = Rate {
            per_s: 10,
            burst: 2,
        };
        assert!(limits.take("k", small, 2, t0).is_ok());
        assert!(limits.take("k", small, 1, t0).is_err());
    }
}
