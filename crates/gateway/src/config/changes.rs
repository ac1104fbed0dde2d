//! What a reload changes, for its log line: apps added and removed, each changed app's
//! settings (old → new where a value can be shown; never a secret), and the other reloadable
//! sections. An operator who sent SIGHUP reads here whether the edit took.

use std::fmt;

use super::{App, Config, Credential};

/// The differences between the configuration in force and a reloaded one.
#[derive(Debug, Default, PartialEq)]
pub struct Changes {
    pub apps_added: Vec<String>,
    pub apps_removed: Vec<String>,
    /// Per app that stays: each changed setting, as `key old → new` or `key`.
    pub apps_changed: Vec<(String, Vec<String>)>,
    /// Other sections that changed and take effect now (`[[api_keys]]`, `[log]`, ...).
    pub sections: Vec<&'static str>,
    /// What changed but takes effect only after a restart (`[storage]`, `[server] listen`, ...).
    pub restart: Vec<&'static str>,
}

impl Changes {
    /// From `old` to `new`.
    pub fn between(old: &Config, new: &Config) -> Changes {
        let mut c = Changes::default();
        for app in &new.apps {
            match old.apps.iter().find(|a| a.name == app.name) {
                None => c.apps_added.push(app.name.clone()),
                Some(before) => {
                    let settings = app_changes(before, app);
                    if !settings.is_empty() {
                        c.apps_changed.push((app.name.clone(), settings));
                    }
                }
            }
        }
        c.apps_removed = old
            .apps
            .iter()
            .filter(|a| !new.apps.iter().any(|n| n.name == a.name))
            .map(|a| a.name.clone())
            .collect();
        let keys = |c: &Config| {
            let mut k: Vec<_> = c
                .api_keys
                .iter()
                .map(|k| {
                    (
                        k.name.clone(),
                        k.key_sha256,
                        k.scope.clone(),
                        k.admin,
                        k.rate,
                    )
                })
                .collect();
            k.sort_by(|a, b| a.0.cmp(&b.0));
            k
        };
        let smtp_limits = |c: &Config| {
            c.smtp.as_ref().map(|s| {
                (
                    s.max_message_bytes,
                    s.require_auth,
                    s.max_sessions,
                    s.command_timeout,
                    s.data_timeout,
                )
            })
        };
        // Only between two `[smtp]` sections: adding or removing one is a listener to start
        // or stop, after a restart.
        let both_smtp = old.smtp.is_some() && new.smtp.is_some();
        for (section, changed) in [
            ("[[api_keys]]", keys(old) != keys(new)),
            ("[log]", old.log != new.log),
            ("[[webhooks]]", old.webhooks != new.webhooks),
            ("[bounces]", old.bounces != new.bounces),
            (
                "[smtp] limits",
                both_smtp && smtp_limits(old) != smtp_limits(new),
            ),
            (
                "[server] max_body_bytes",
                old.server.max_body_bytes != new.server.max_body_bytes,
            ),
            (
                "[server] connection limits",
                crate::listen::Limits::of(&old.server) != crate::listen::Limits::of(&new.server),
            ),
            (
                "[server] shutdown_grace_s",
                old.server.shutdown_grace != new.server.shutdown_grace,
            ),
        ] {
            if changed {
                c.sections.push(section);
            }
        }
        let smtp = |c: &Config| c.smtp.as_ref().map(|s| (s.listen, s.tls.clone()));
        for (section, changed) in [
            (
                "[server] listen/tls",
                (old.server.listen, &old.server.tls) != (new.server.listen, &new.server.tls),
            ),
            (
                "[server] metrics_listen",
                old.server.metrics_listen != new.server.metrics_listen,
            ),
            ("[storage]", old.storage != new.storage),
            ("[smtp] listen/tls", smtp(old) != smtp(new)),
            ("[[beanstalkd]]", old.beanstalkd != new.beanstalkd),
        ] {
            if changed {
                c.restart.push(section);
            }
        }
        c
    }

    pub fn is_empty(&self) -> bool {
        *self == Changes::default()
    }
}

/// `a` to `b`, setting by setting.
fn app_changes(a: &App, b: &App) -> Vec<String> {
    let mut out = Vec::new();
    let mut shown = |key: &str, old: String, new: String| {
        if old != new {
            out.push(format!("{key} {old} → {new}"));
        }
    };
    shown("topic", a.topic.as_str().into(), b.topic.as_str().into());
    shown(
        "environment",
        format!("{:?}", a.environment).to_lowercase(),
        format!("{:?}", b.environment).to_lowercase(),
    );
    shown("endpoint", a.endpoint.to_string(), b.endpoint.to_string());
    shown(
        "smtp_domains",
        format!("{:?}", a.smtp_domains),
        format!("{:?}", b.smtp_domains),
    );
    shown(
        "max_connections",
        a.max_connections.to_string(),
        b.max_connections.to_string(),
    );
    shown(
        "delivery_response_timeout_ms",
        a.response_timeout.as_millis().to_string(),
        b.response_timeout.as_millis().to_string(),
    );
    shown(
        "idle_timeout_s",
        a.idle_timeout.as_secs().to_string(),
        b.idle_timeout.as_secs().to_string(),
    );
    shown(
        "max_attempts",
        a.max_attempts.to_string(),
        b.max_attempts.to_string(),
    );
    shown(
        "default_ttl_s",
        a.default_ttl.as_secs().to_string(),
        b.default_ttl.as_secs().to_string(),
    );
    shown(
        "suppress_dead_tokens",
        a.suppress_dead_tokens.to_string(),
        b.suppress_dead_tokens.to_string(),
    );
    shown(
        "supersede",
        a.supersede.as_str().to_owned(),
        b.supersede.as_str().to_owned(),
    );
    shown("bounces", a.bounces.to_string(), b.bounces.to_string());
    if a.extra_roots != b.extra_roots {
        out.push("ca_file".to_owned());
    }
    let same_credentials = a.credentials.len() == b.credentials.len()
        && a.credentials
            .iter()
            .zip(&b.credentials)
            .all(|(x, y)| same(x, y));
    if !same_credentials {
        let names = |app: &App| {
            app.credentials
                .iter()
                .map(Credential::file_name)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (before, after) = (names(a), names(b));
        out.push(if before == after {
            format!("credentials ({after}, contents changed)")
        } else {
            format!("credentials ({before} → {after})")
        });
    }
    out
}

/// The same credential: the same file with the same contents (a file replaced in place is a
/// change).
fn same(a: &Credential, b: &Credential) -> bool {
    a.file() == b.file()
        && match (a, b) {
            (Credential::Token { key: x, .. }, Credential::Token { key: y, .. }) => x.same_as(y),
            (
                Credential::Certificate { identity: x, .. },
                Credential::Certificate { identity: y, .. },
            ) => x.certified_key().cert == y.certified_key().cert,
            _ => false,
        }
}

impl fmt::Display for Changes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("nothing changed");
        }
        let mut parts = Vec::new();
        if !self.apps_added.is_empty() {
            parts.push(format!("apps added: {}", self.apps_added.join(", ")));
        }
        if !self.apps_removed.is_empty() {
            parts.push(format!("apps removed: {}", self.apps_removed.join(", ")));
        }
        for (app, settings) in &self.apps_changed {
            parts.push(format!("app {app}: {}", settings.join(", ")));
        }
        if !self.sections.is_empty() {
            parts.push(format!("changed: {}", self.sections.join(", ")));
        }
        if !self.restart.is_empty() {
            parts.push(format!(
                "changed, applied after a restart: {}",
                self.restart.join(", ")
            ));
        }
        f.write_str(&parts.join("; "))
    }
}
