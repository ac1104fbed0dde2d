//! An app's settings in force — after defaults and the last reload — as `GET /v1/stats` and
//! the dashboard show them: what an operator checks after editing the file ("did my
//! `max_connections` take?", "which key is it signing with?"). Never a secret: a credential is
//! named by its file's name (not its folder), its key id and team, or its certificate's
//! subject and expiry.

use std::time::SystemTime;

use serde::Serialize;
use utoipa::ToSchema;

use crate::config::{App, Credential, Environment};
use crate::rfc3339;

/// One app's effective settings.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AppSettings {
    /// `production` or `sandbox`.
    pub environment: &'static str,
    /// The APNs host and port connections go to.
    pub endpoint: String,
    /// The bundle id (push types add their suffix).
    pub topic: String,
    pub max_connections: usize,
    pub delivery_response_timeout_ms: u64,
    pub idle_timeout_s: u64,
    pub max_attempts: u32,
    pub default_ttl_s: u64,
    pub suppress_dead_tokens: bool,
    /// The credential new connections use; null when none is valid (the app is halted).
    pub credential: Option<CredentialInUse>,
    /// How many credentials are configured (the inline one and `[[apps.credentials]]`).
    pub credentials_configured: usize,
}

/// The credential new connections use, without its secret.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CredentialInUse {
    /// `token` (a .p8 signing key) or `certificate`.
    pub kind: &'static str,
    /// The file's name.
    pub file: String,
    /// Token keys: the key id and team id the provider tokens carry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub team_id: Option<String>,
    /// Certificates: the subject and the end of validity (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_after: Option<String>,
}

impl AppSettings {
    /// `app`'s settings, with credential `in_use` (an index into its credentials).
    pub fn of(app: &App, in_use: Option<usize>) -> AppSettings {
        AppSettings {
            environment: match app.environment {
                Environment::Production => "production",
                Environment::Sandbox => "sandbox",
            },
            endpoint: app.endpoint.to_string(),
            topic: app.topic.as_str().to_owned(),
            max_connections: app.max_connections,
            delivery_response_timeout_ms: app.response_timeout.as_millis() as u64,
            idle_timeout_s: app.idle_timeout.as_secs(),
            max_attempts: app.max_attempts,
            default_ttl_s: app.default_ttl.as_secs(),
            suppress_dead_tokens: app.suppress_dead_tokens,
            credential: in_use
                .and_then(|i| app.credentials.get(i))
                .map(CredentialInUse::of),
            credentials_configured: app.credentials.len(),
        }
    }

    /// One line for people (the dashboard's settings column).
    pub fn summary(&self) -> String {
        let credential = match &self.credential {
            None => "no valid credential".to_owned(),
            Some(c) => match (&c.key_id, &c.not_after) {
                (Some(kid), _) => format!("signs with {} (key {kid})", c.file),
                (None, Some(until)) => format!("certificate {} until {until}", c.file),
                (None, None) => c.file.clone(),
            },
        };
        format!(
            "{} at {} · up to {} connections · response timeout {} ms · idle {} s · {} attempts \
             · TTL {} s · dead tokens {} · {credential}",
            self.environment,
            self.endpoint,
            self.max_connections,
            self.delivery_response_timeout_ms,
            self.idle_timeout_s,
            self.max_attempts,
            self.default_ttl_s,
            if self.suppress_dead_tokens {
                "suppressed"
            } else {
                "sent to"
            },
        )
    }
}

impl CredentialInUse {
    fn of(c: &Credential) -> CredentialInUse {
        let file = c.file_name();
        match c {
            Credential::Token { key, .. } => CredentialInUse {
                kind: "token",
                file,
                key_id: Some(key.key_id().to_owned()),
                team_id: Some(key.team_id().to_owned()),
                subject: None,
                not_after: None,
            },
            Credential::Certificate { identity, .. } => CredentialInUse {
                kind: "certificate",
                file,
                key_id: None,
                team_id: None,
                subject: Some(identity.info().subject.clone()),
                not_after: Some(rfc3339::format(identity.info().not_after)),
            },
        }
    }
}

/// The index of the credential `app` uses: the one of `file`, as dispatch names it, when
/// `app` lists it — the configuration read may be older or newer than dispatch's settings, a
/// reload in between — else the one the configuration picks now (as when nothing dispatches).
pub fn in_use(app: &App, file: Option<&std::path::Path>) -> Option<usize> {
    file.and_then(|f| app.credentials.iter().position(|c| c.file() == f))
        .or_else(|| app.active_credential(SystemTime::now()))
}
