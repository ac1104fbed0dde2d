//! A warning about accepted tokens of a size no device issues today. Apple's device tokens are
//! 32 bytes (64 hex characters); Apple says not to count on that, so such a token is still
//! accepted and sent, but it will most likely come back `BadDeviceToken` — and a user who
//! "fixed" a short token by padding it should hear so at once, not from the delivery log.
//! One warning per app a minute at most (a flood of them must not flood the log); the metric
//! `pushgate_unusual_tokens_total` counts every one.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::spool::NewRequest;

/// The size of the tokens Apple's devices issue today, in hex characters.
pub const USUAL_TOKEN_HEX: usize = 64;

/// How often one app's warning may be repeated.
const EVERY: Duration = Duration::from_secs(60);

/// Per app: when it was last warned about, and how many came since.
#[derive(Debug, Default)]
pub(super) struct TokenSizes {
    apps: Mutex<HashMap<String, (Instant, u64)>>,
}

impl TokenSizes {
    /// Looks at the tokens of committed requests; warns, rate-limited, about unusual ones.
    pub(super) fn check(&self, committed: &[NewRequest]) {
        for r in committed {
            let mut unusual = r
                .notifications
                .iter()
                .filter(|(_, t)| t.as_str().len() != USUAL_TOKEN_HEX);
            let Some((first_id, first)) = unusual.next() else {
                continue;
            };
            let n = 1 + unusual.count() as u64;
            crate::metrics::unusual_tokens(&r.app, n);
            let Some(earlier) = self.due(&r.app, n, Instant::now()) else {
                continue;
            };
            tracing::warn!(
                app = %r.app,
                notifications = n,
                first = %first_id,
                hex_characters = first.as_str().len(),
                suppressed_notifications = earlier,
                "accepted device tokens of an unusual size: Apple's are {USUAL_TOKEN_HEX} hex \
                 characters (32 bytes), and it answers BadDeviceToken to a token no device issued"
            );
        }
    }

    /// Whether `app`'s warning about `n` more is due at `now`: `Some` with how many were
    /// counted without a warning since the last one, or `None` (they are counted).
    fn due(&self, app: &str, n: u64, now: Instant) -> Option<u64> {
        let mut apps = self
            .apps
            .lock()
            .expect("the token-size lock is never poisoned");
        match apps.get_mut(app) {
            Some((at, since)) if now.duration_since(*at) < EVERY => {
                *since += n;
                None
            }
            Some((at, since)) => {
                *at = now;
                Some(std::mem::take(since))
            }
            None => {
                apps.insert(app.to_owned(), (now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_warning_per_app_a_minute_with_what_came_between() {
        let t = TokenSizes::default();
        let start = Instant::now();
        assert_eq!(t.due("shop", 2, start), Some(0), "the first at once");
        assert_eq!(t.due("shop", 3, start + Duration::from_secs(10)), None);
        assert_eq!(
            t.due("news", 1, start + Duration::from_secs(10)),
            Some(0),
            "per app"
        );
        assert_eq!(t.due("shop", 4, start + Duration::from_secs(59)), None);
        assert_eq!(
            t.due("shop", 1, start + Duration::from_secs(60)),
            Some(7),
            "a minute on, with the 3 + 4 counted meanwhile"
        );
        assert_eq!(t.due("shop", 1, start + Duration::from_secs(61)), None);
    }
}
