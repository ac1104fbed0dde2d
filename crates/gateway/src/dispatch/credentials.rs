//! Each app's credential and pool: the newest valid credential (roll-over and expiry, checked
//! every `credential_check`), the provider-token signer per key (kept across reloads while the
//! key stays the same), and the warnings for certificates about to expire.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use apns::auth::{Auth, SigningKey, TokenSigner};
use apns::{Pool, PoolConfig};
use tracing::{info, warn};

use super::Dispatcher;
use super::worker::{AppWorker, Settings};
use crate::config::{App, Credential};
use crate::outcomes::Limits;
use crate::reason::{Cause, GatewayReason};

/// Puts `settings` in force for `w`: its old pool finishes its streams and closes.
pub(super) fn replace_settings(
    w: &AppWorker,
    settings: Settings,
    problem: Option<Cause>,
    why: &str,
) {
    let old = std::mem::replace(&mut *w.settings.write().expect("settings lock"), settings);
    // After the write: a worker that sees the new version reads the new settings.
    w.settings_version
        .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    if let Some(p) = old.pool {
        p.close();
    }
    match problem {
        Some(p) => w.halt(p),
        None => w.resume(why),
    }
}

impl Dispatcher {
    /// Every `credential_check`: an app whose newest valid credential changed (a certificate
    /// expired, or a newer one became valid) gets a pool with it; certificates that expire
    /// within 30 days are warned about once a day.
    pub fn check_credentials(&self) {
        let config = self.config.get();
        let now = SystemTime::now();
        let apps = self.shared.apps.read().expect("apps lock").clone();
        for app in &config.apps {
            let Some(w) = apps.get(&app.name) else {
                continue;
            };
            if w.settings().credential != app.active_credential(now) {
                let (settings, problem) = self.settings_for(app);
                info!(app = %app.name, credential = ?settings.credential.and_then(|i| app.credentials.get(i)).map(Credential::file), "switching to the newest valid credential");
                replace_settings(w, settings, problem, "a valid credential was found");
            }
            for c in &app.credentials {
                let Some(left) = c.expires_soon(now) else {
                    continue;
                };
                if self.warned_today(c.file(), now) {
                    warn!(app = %app.name, file = %c.file().display(), days_left = left.div_euclid(86_400), "certificate expires soon; roll a new one in with [[apps.credentials]]");
                }
            }
        }
    }

    /// True once a day per file: whether to warn about it now.
    fn warned_today(&self, file: &std::path::Path, now: SystemTime) -> bool {
        let mut warned = self.warned.lock().expect("warned lock");
        match warned.get(file) {
            Some(t) if now.duration_since(*t).unwrap_or_default() < Duration::from_secs(86_400) => {
                false
            }
            _ => {
                warned.insert(file.to_owned(), now);
                true
            }
        }
    }

    /// The signer of `key`: one per (team, key) for as long as the key stays the same — a
    /// reload that re-signed would show Apple a new token on every connection sooner than it
    /// allows (TooManyProviderTokenUpdates). A key changed behind the same ids gets a new one.
    fn signer_for(&self, key: &Arc<SigningKey>) -> Arc<TokenSigner> {
        let mut signers = self.signers.lock().expect("signers lock");
        let ids = (key.team_id().to_owned(), key.key_id().to_owned());
        match signers.get(&ids) {
            Some(s) if s.key().same_as(key) => Arc::clone(s),
            _ => {
                let clock = Arc::clone(&self.shared.options.clock);
                let s = Arc::new(TokenSigner::new(Arc::clone(key), clock));
                signers.insert(ids, Arc::clone(&s));
                s
            }
        }
    }

    /// A signer for every token key `config` uses, before any worker does.
    pub(super) fn make_signers(&self, config: &crate::config::Config) {
        for c in config.apps.iter().flat_map(|a| &a.credentials) {
            if let Credential::Token { key, .. } = c {
                self.signer_for(key);
            }
        }
    }

    /// The pool and limits for `app`, with its newest valid credential
    /// ([`App::active_credential`]).
    pub(super) fn settings_for(&self, app: &App) -> (Settings, Option<Cause>) {
        let now = SystemTime::now();
        let credential = app.active_credential(now);
        let auth = credential
            .and_then(|i| app.credentials.get(i))
            .map(|c| match c {
                Credential::Token { key, .. } => Auth::Token(self.signer_for(key)),
                Credential::Certificate { identity, .. } => {
                    Auth::Certificate(Arc::new(identity.clone()))
                }
            });
        if auth.is_none() {
            warn!(app = %app.name, "no credential is valid now (every certificate expired or not yet valid)");
        }
        let limits = Limits {
            max_attempts: app.max_attempts,
            retry_base: self.shared.options.retry_base,
        };
        let max_in_flight = app.max_connections * self.shared.options.streams_per_connection;
        let pool = auth.map(|auth| {
            let mut c = PoolConfig::new(app.endpoint.clone(), auth);
            c.extra_roots = app.extra_roots.clone();
            c.max_connections = app.max_connections;
            c.response_timeout = app.response_timeout;
            c.idle_timeout = app.idle_timeout;
            Pool::new(c)
        });
        let problem = pool
            .is_none()
            .then_some(GatewayReason::NoUsableCredential.into());
        (
            Settings {
                pool,
                credential,
                credential_file: credential
                    .and_then(|i| app.credentials.get(i))
                    .map(|c| c.file().to_owned()),
                limits,
                suppress_dead_tokens: app.suppress_dead_tokens,
                max_in_flight,
            },
            problem,
        )
    }
}
