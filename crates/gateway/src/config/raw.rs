//! The configuration file as written: every key optional here, with its position kept
//! (`Spanned`) so problems can name a line. `validate` turns this into the typed `Config`.

use serde::Deserialize;
use toml::Spanned;

pub type S<T> = Option<Spanned<T>>;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawConfig {
    pub server: RawServer,
    pub storage: RawStorage,
    pub api_keys: Vec<Spanned<RawApiKey>>,
    pub smtp: S<RawSmtp>,
    pub log: RawLog,
    pub webhooks: Vec<Spanned<RawWebhook>>,
    pub beanstalkd: Vec<Spanned<RawBeanstalkd>>,
    pub bounces: S<RawBounces>,
    pub apps: Vec<Spanned<RawApp>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawBounces {
    pub smarthost: S<String>,
    pub starttls: S<bool>,
    pub ca_file: S<String>,
    pub username: S<String>,
    pub password_env: S<String>,
    pub password_file: S<String>,
    pub from: S<String>,
    pub reporting_mta: S<String>,
    pub window_s: S<i64>,
    pub retry_s: S<i64>,
    pub retry_max_s: S<i64>,
    pub give_up_s: S<i64>,
    pub suppressed: S<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawBeanstalkd {
    pub server: S<String>,
    pub tubes: S<Vec<RawTube>>,
    pub watch_default: S<bool>,
    pub max_reserves: S<i64>,
    pub connections: S<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawTube {
    pub tube: Option<String>,
    pub app: Option<String>,
    pub as_key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawServer {
    pub listen: S<String>,
    pub max_body_bytes: S<i64>,
    pub shutdown_grace_s: S<i64>,
    pub header_read_timeout_s: S<i64>,
    pub keepalive_idle_s: S<i64>,
    pub body_read_timeout_s: S<i64>,
    pub max_open_connections: S<i64>,
    pub tls_cert: S<String>,
    pub tls_key: S<String>,
    pub metrics_listen: S<String>,
    pub slow_failed_logins: S<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawStorage {
    pub sqlite: S<String>,
    pub postgres_url_env: S<String>,
    pub postgres_url_file: S<String>,
    pub pool_size: S<i64>,
    pub statement_timeout_ms: S<i64>,
    pub heartbeat_s: S<i64>,
    pub lease_s: S<i64>,
    pub ca_file: S<String>,
    pub retention_s: S<i64>,
    pub max_pending: S<i64>,
    pub mode: S<String>,
    pub idempotency_window_s: S<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawApiKey {
    pub name: S<String>,
    pub key_sha256: S<String>,
    pub apps: S<Vec<String>>,
    pub admin: S<bool>,
    pub rate_per_s: S<i64>,
    pub burst: S<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawSmtp {
    pub listen: S<String>,
    pub max_message_bytes: S<i64>,
    pub tls_cert: S<String>,
    pub tls_key: S<String>,
    pub require_auth: S<bool>,
    pub max_sessions: S<i64>,
    pub command_timeout_s: S<i64>,
    pub data_timeout_s: S<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawLog {
    pub file: S<String>,
    pub mode: S<String>,
    pub max_bytes: S<i64>,
    pub heartbeat_s: S<i64>,
    pub per_attempt: S<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawWebhook {
    pub name: S<String>,
    pub url: S<String>,
    pub events: S<Vec<String>>,
    pub secret_env: S<String>,
}

/// The keys that name one credential; an app has them inline, and `[[apps.credentials]]`
/// entries have them alone.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawCredential {
    pub key_file: S<String>,
    pub key_id: S<String>,
    pub team_id: S<String>,
    pub certificate: S<String>,
    pub certificate_key: S<String>,
    pub certificate_password_env: S<String>,
    pub certificate_password_file: S<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawApp {
    pub name: S<String>,
    pub smtp_domains: S<Vec<String>>,
    pub topic: S<String>,
    pub environment: S<String>,
    pub endpoint: S<String>,
    pub ca_file: S<String>,
    pub key_file: S<String>,
    pub key_id: S<String>,
    pub team_id: S<String>,
    pub certificate: S<String>,
    pub certificate_key: S<String>,
    pub certificate_password_env: S<String>,
    pub certificate_password_file: S<String>,
    pub credentials: Vec<Spanned<RawCredential>>,
    pub max_connections: S<i64>,
    pub delivery_response_timeout_ms: S<i64>,
    pub idle_timeout_s: S<i64>,
    pub max_attempts: S<i64>,
    pub default_ttl_s: S<i64>,
    pub suppress_dead_tokens: S<bool>,
    pub bounces: S<bool>,
    pub supersede: S<String>,
}

impl RawApp {
    /// The inline credential keys, as one entry.
    pub fn inline_credential(&mut self) -> Spanned<RawCredential> {
        let cred = RawCredential {
            key_file: self.key_file.take(),
            key_id: self.key_id.take(),
            team_id: self.team_id.take(),
            certificate: self.certificate.take(),
            certificate_key: self.certificate_key.take(),
            certificate_password_env: self.certificate_password_env.take(),
            certificate_password_file: self.certificate_password_file.take(),
        };
        Spanned::new(0..0, cred)
    }
}
