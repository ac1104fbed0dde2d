//! Retry delays: exponential backoff with full jitter (base 1 s by default, cap 15 min), never
//! shorter than the server's `Retry-After`.

use std::time::Duration;

/// The first retry's ceiling, unless dispatch is told otherwise (`DispatchOptions::retry_base`).
pub const BASE: Duration = Duration::from_secs(1);
pub const CAP: Duration = Duration::from_secs(15 * 60);

/// The delay before retry number `attempt` (1 for the first retry) with ceiling `base` for the
/// first; `unit` is a uniform random number in [0, 1).
pub fn retry_delay(
    base: Duration,
    attempt: u32,
    retry_after: Option<Duration>,
    unit: f64,
) -> Duration {
    let exp = base
        .checked_mul(1u32 << attempt.saturating_sub(1).min(20))
        .unwrap_or(CAP)
        .min(CAP);
    let jittered = exp.mul_f64(unit.clamp(0.0, 1.0));
    jittered.max(retry_after.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_ceiling_doubles_up_to_the_cap() {
        assert_eq!(
            retry_delay(BASE, 1, None, 0.999_999),
            Duration::from_secs(1).mul_f64(0.999_999)
        );
        assert!(retry_delay(BASE, 2, None, 0.999_999) > Duration::from_millis(1999));
        assert_eq!(retry_delay(BASE, 30, None, 1.0), CAP);
        assert_eq!(retry_delay(BASE, 3, None, 0.0), Duration::ZERO);
        assert_eq!(
            retry_delay(BASE, 1, Some(Duration::from_secs(30)), 0.5),
            Duration::from_secs(30)
        );
    }

    proptest! {
        #[test]
        fn never_above_the_cap_unless_the_server_asks(attempt in 1u32..100, unit in 0.0f64..1.0) {
            prop_assert!(retry_delay(BASE, attempt, None, unit) <= CAP);
        }

        #[test]
        fn the_ceiling_grows_with_attempts(attempt in 1u32..12) {
            prop_assert!(retry_delay(BASE, attempt + 1, None, 0.999) >= retry_delay(BASE, attempt, None, 0.999));
        }

        #[test]
        fn retry_after_is_a_floor(attempt in 1u32..50, unit in 0.0f64..1.0, secs in 0u64..10_000) {
            let after = Duration::from_secs(secs);
            prop_assert!(retry_delay(BASE, attempt, Some(after), unit) >= after);
        }
    }
}
