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
            let earlier = {
                let mut apps = self
                    .apps
                    .lock()
                    .expect("the token-size lock is never poisoned");
                let now = Instant::now();
                match apps.get_mut(&r.app) {
                    Some((at, since)) if now.duration_since(*at) < EVERY => {
                        *since += n;
                        continue;
                    }
                    Some((at, since)) => {
                        *at = now;
                        std::mem::take(since)
                    }
                    None => {
                        apps.insert(r.app.clone(), (now, 0));
                        0
                    }
                }
            };
            tracing::warn!(
                app = %r.app,
                notifications = n,
                first = %first_id,
                hex_characters = first.as_str().len(),
                suppressed_since_last_warning = earlier,
                "accepted device tokens of an unusual size: Apple's are {USUAL_TOKEN_HEX} hex \
                 characters (32 bytes), and it answers BadDeviceToken to a token no device issued"
            );
        }
    }
}
