//! Dead tokens in memory, so suppression costs a hash lookup instead of a read per send. The
//! spool's `dead_tokens` table is the record; this set is loaded from it at start-up and
//! updated after each registration or clearance commits.

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;

use apns::DeviceToken;

/// Dead tokens by app. Looked up by `&str` and `&DeviceToken`, so the check made before every
/// send allocates nothing.
#[derive(Debug, Default)]
pub struct DeadTokens {
    /// A std lock: held for one lookup or insert, never across an await.
    set: RwLock<HashMap<String, HashSet<DeviceToken>>>,
}

impl DeadTokens {
    pub fn new(entries: impl IntoIterator<Item = (String, DeviceToken)>) -> DeadTokens {
        let mut set: HashMap<String, HashSet<DeviceToken>> = HashMap::new();
        for (app, token) in entries {
            set.entry(app).or_default().insert(token);
        }
        DeadTokens {
            set: RwLock::new(set),
        }
    }

    /// Every entry replaced by `entries` (a resync with the spool).
    pub fn replace(&self, entries: impl IntoIterator<Item = (String, DeviceToken)>) {
        let fresh = DeadTokens::new(entries);
        let fresh = fresh
            .set
            .into_inner()
            .expect("dead-token lock is never poisoned");
        *self.set.write().expect("dead-token lock is never poisoned") = fresh;
    }

    pub fn is_dead(&self, app: &str, token: &DeviceToken) -> bool {
        self.set
            .read()
            .expect("dead-token lock is never poisoned")
            .get(app)
            .is_some_and(|tokens| tokens.contains(token))
    }

    pub fn insert(&self, app: &str, token: &DeviceToken) {
        let mut set = self.set.write().expect("dead-token lock is never poisoned");
        match set.get_mut(app) {
            Some(tokens) => {
                tokens.insert(token.clone());
            }
            None => {
                set.insert(app.to_owned(), HashSet::from([token.clone()]));
            }
        }
    }

    pub fn remove(&self, app: &str, token: &DeviceToken) {
        let mut set = self.set.write().expect("dead-token lock is never poisoned");
        if let Some(tokens) = set.get_mut(app) {
            tokens.remove(token);
            if tokens.is_empty() {
                set.remove(app);
            }
        }
    }
}
