//! Dead tokens in memory, so suppression costs a hash lookup instead of a read per send. The
//! spool's `dead_tokens` table is the record; this set is loaded from it at start-up and
//! updated after each registration or clearance commits.

use std::collections::HashSet;
use std::sync::RwLock;

use apns::DeviceToken;

#[derive(Debug, Default)]
pub struct DeadTokens {
    /// (app, token). A std lock: held for one lookup or insert, never across an await.
    set: RwLock<HashSet<(String, DeviceToken)>>,
}

impl DeadTokens {
    pub fn new(entries: impl IntoIterator<Item = (String, DeviceToken)>) -> DeadTokens {
        DeadTokens {
            set: RwLock::new(entries.into_iter().collect()),
        }
    }

    pub fn is_dead(&self, app: &str, token: &DeviceToken) -> bool {
        self.set
            .read()
            .expect("dead-token lock is never poisoned")
            .contains(&(app.to_owned(), token.clone()))
    }

    pub fn insert(&self, app: &str, token: &DeviceToken) {
        self.set
            .write()
            .expect("dead-token lock is never poisoned")
            .insert((app.to_owned(), token.clone()));
    }

    pub fn remove(&self, app: &str, token: &DeviceToken) {
        self.set
            .write()
            .expect("dead-token lock is never poisoned")
            .remove(&(app.to_owned(), token.clone()));
    }
}
