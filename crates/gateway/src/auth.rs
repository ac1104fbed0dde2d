//! API keys and who is calling: the keys of `[[api_keys]]` (SHA-256, compared in constant time
//! against every configured key, so timing tells nothing about which key, or how much of one,
//! matched) and their scopes. Every way in asks here — the HTTP API with `Authorization:
//! Bearer`, SMTP with AUTH, the injector with Basic auth — so no listener needs another's code.

use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::digest::{SHA256, digest};

use crate::config::{ApiKey, Scope};

/// Who is calling.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub scope: Scope,
    pub admin: bool,
}

impl Caller {
    /// The caller a configured key makes.
    pub fn of(key: &ApiKey) -> Caller {
        Caller {
            name: key.name.clone(),
            scope: key.scope.clone(),
            admin: key.admin,
        }
    }

    /// Whether the key may use `app`.
    pub fn may_use(&self, app: &str) -> bool {
        self.admin
            || match &self.scope {
                Scope::All => true,
                Scope::Apps(apps) => apps.iter().any(|a| a == app),
            }
    }

    /// Whether the key covers every app (then an unknown app is `unknown_app`, not forbidden).
    pub fn covers_all(&self) -> bool {
        self.admin || self.scope == Scope::All
    }
}

/// The caller for a presented key, if it is one of `keys`.
pub fn check_key(keys: &[ApiKey], presented: &str) -> Option<Caller> {
    let hash = digest(&SHA256, presented.as_bytes());
    let mut found = None;
    for k in keys {
        // Every key is compared; no early exit.
        if verify_slices_are_equal(hash.as_ref(), &k.key_sha256).is_ok() {
            found = Some(Caller::of(k));
        }
    }
    found
}

/// The lowercase hex SHA-256 of a key, as `key_sha256` wants it.
pub fn key_sha256_hex(key: &str) -> String {
    hex::encode(digest(&SHA256, key.as_bytes()))
}
