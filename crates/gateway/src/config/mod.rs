//! The configuration file (docs/configuration.md): TOML, read raw (`raw`), then checked and turned into a
//! typed [`Config`] with every credential loaded (`validate`). Every problem is reported at
//! once, each with the file, line and key; `serve` and `config check` share this path, so a bad
//! file is refused before any port is bound.

mod changes;
mod raw;
mod validate;

pub use changes::Changes;
pub use validate::load_str;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use apns::Endpoint;
use apns::Topic;
use apns::auth::{ClientIdentity, SigningKey};
use rustls_pki_types::CertificateDer;

/// The whole configuration, validated, with credentials loaded.
#[derive(Debug)]
pub struct Config {
    /// The file it came from.
    pub file: PathBuf,
    pub server: Server,
    pub storage: Storage,
    pub api_keys: Vec<ApiKey>,
    pub smtp: Option<Smtp>,
    pub log: Log,
    pub webhooks: Vec<Webhook>,
    /// beanstalkd servers whose tubes are ways in (propeller-apns' producers).
    pub beanstalkd: Vec<Beanstalkd>,
    /// `[bounces]`: DSNs for injected notifications that fail; off without the section.
    pub bounces: Option<Bounces>,
    pub apps: Vec<App>,
}

/// `[bounces]`: delivery status notifications (RFC 3464) for notifications injected over
/// SMTP or `/v1.0/inject` that end failed or expired, sent through a relay
/// (docs/momentum.md, "Bounces").
#[derive(Debug, Clone, PartialEq)]
pub struct Bounces {
    /// The relay, `host:port`.
    pub smarthost: String,
    /// STARTTLS before anything is sent (the relay's certificate checked against Mozilla's
    /// roots and `ca_file`'s).
    pub starttls: bool,
    pub extra_roots: Vec<CertificateDer<'static>>,
    /// AUTH user and password (PLAIN or LOGIN, as the relay offers; only over STARTTLS).
    pub auth: Option<(String, Secret)>,
    /// The DSN's `From:` (the envelope sender is always null, `MAIL FROM:<>`).
    pub from: String,
    /// `Reporting-MTA`: this gateway's name (default: the domain of `from`).
    pub reporting_mta: String,
    /// Failures of one message within this of the first share a DSN.
    pub window: Duration,
    /// The first retry after the relay refused or could not be reached; doubling up to
    /// `retry_max`.
    pub retry: Duration,
    pub retry_max: Duration,
    /// A DSN the relay has not taken within this of its first failure is given up.
    pub give_up: Duration,
    /// Also bounce notifications the gateway did not send because their token was already
    /// known dead (suppressed).
    pub suppressed: bool,
}

/// One `[[beanstalkd]]`: a server and the tubes consumed from it.
#[derive(Debug, Clone, PartialEq)]
pub struct Beanstalkd {
    /// `host:port`, as written (resolved at each connect).
    pub server: String,
    pub tubes: Vec<Tube>,
    /// A job reserved this many times without pushgate releasing it (each time a crash or a
    /// timeout) is buried; 0 never buries for that.
    pub max_reserves: u32,
    /// Reserving connections.
    pub connections: usize,
}

/// A tube and the app its jobs go to.
#[derive(Debug, Clone, PartialEq)]
pub struct Tube {
    pub tube: String,
    pub app: String,
    /// The API key whose scopes apply to the tube's jobs; without one, the tube reaches only
    /// its own app.
    pub as_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    pub shutdown_grace: Duration,
    /// A new connection sends its first request head, and any request its head once its first
    /// byte is in, within this.
    pub header_read_timeout: Duration,
    /// A keep-alive connection may stay silent this long between requests.
    pub keepalive_idle: Duration,
    /// A request body arrives whole within this of its head.
    pub body_read_timeout: Duration,
    /// Connections served at once; past it, `503 too_many_connections`.
    pub max_open_connections: usize,
    pub tls: Option<TlsFiles>,
    /// `/metrics` (with `/healthz` and `/readyz`) on a listener of its own, plain HTTP, instead
    /// of the API's.
    pub metrics_listen: Option<SocketAddr>,
    /// Which addresses' refused credentials slow them down (`login_failures`).
    pub slow_failed_logins: SlowFailedLogins,
}

/// `[server] slow_failed_logins`: every address that keeps failing is slowed down, or every
/// one but loopback (a reverse proxy on this host would otherwise slow every client behind
/// it), or none. Failures are counted and logged either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlowFailedLogins {
    All,
    Remote,
    Off,
}

impl SlowFailedLogins {
    /// Whether `peer`'s failures slow it down.
    pub fn applies_to(self, peer: std::net::IpAddr) -> bool {
        match self {
            SlowFailedLogins::All => true,
            SlowFailedLogins::Remote => !peer.to_canonical().is_loopback(),
            SlowFailedLogins::Off => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Storage {
    /// The SQLite file, unless `postgres` is set.
    pub sqlite: PathBuf,
    /// The PostgreSQL spool, when the file names one (`postgres_url_env` or
    /// `postgres_url_file`); SQLite otherwise.
    pub postgres: Option<Postgres>,
    /// Finished notifications are kept this long.
    pub retention: Duration,
    pub max_pending: u64,
    /// An idempotency key (an `Idempotency-Key`, a `Message-ID`, a beanstalkd job) is
    /// remembered this long.
    pub idempotency_window: Duration,
    /// The SQLite spool's files (`spool.db`, its `-wal`, `-shm` and `.lock`); a folder made for
    /// them gets the same with the execute bits of its read bits.
    pub mode: u32,
}

/// A PostgreSQL spool's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Postgres {
    /// The connection URL (`postgres://user:password@host:port/db?sslmode=...`); it may hold
    /// a password, so it is never logged: [`Postgres::target`] is.
    pub url: Secret,
    /// `host:port/database`, for logs and errors.
    pub target: String,
    /// Connections in the pool.
    pub pool_size: usize,
    /// The server cancels a statement that runs longer.
    pub statement_timeout: Duration,
    /// How often this gateway tells the others it is alive (`heartbeat_s`).
    pub heartbeat: Duration,
    /// A gateway silent this long is declared dead and its notifications rescued (`lease_s`).
    pub lease: Duration,
    /// A private CA the server's certificate is checked against (besides Mozilla's roots).
    pub ca_file: Option<PathBuf>,
}

/// An API key: only its SHA-256 is configured, compared in constant time.
#[derive(Debug, Clone)]
pub struct ApiKey {
    pub name: String,
    pub key_sha256: [u8; 32],
    pub scope: Scope,
    /// All apps, the dashboard, every app's stats.
    pub admin: bool,
    /// How many notifications a second the key may submit, by every way in together.
    pub rate: Option<Rate>,
}

/// A key's rate limit: a token bucket of `burst` notifications refilled at `per_s` a second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_s: u32,
    pub burst: u32,
}

/// Which apps a key may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    All,
    Apps(Vec<String>),
}

impl Scope {
    /// Whether `app` is within it.
    pub fn covers(&self, app: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Apps(apps) => apps.iter().any(|a| a == app),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Smtp {
    pub listen: SocketAddr,
    pub max_message_bytes: usize,
    pub tls: Option<TlsFiles>,
    pub require_auth: bool,
    /// Sessions open at once; past it, `421 4.3.2`.
    pub max_sessions: usize,
    /// A command line (or an AUTH response) arrives whole within this of the previous reply.
    pub command_timeout: Duration,
    /// A message's content arrives whole within this of the `354`.
    pub data_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Log {
    pub file: Option<PathBuf>,
    pub mode: u32,
    pub max_bytes: u64,
    pub heartbeat: Duration,
    pub per_attempt: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookEvent {
    Failed,
    TokenInvalidated,
    Expired,
    AppHalted,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Webhook {
    /// Where to POST, without the user information a configured URL may carry.
    pub url: String,
    /// `[[webhooks]] name`: its metrics label (else the URL's host and port).
    pub name: Option<String>,
    /// The configured URL's user information (`user:password@`), sent as Basic auth.
    pub basic: Option<Secret>,
    pub events: Vec<WebhookEvent>,
    pub secret: Option<Secret>,
}

impl Webhook {
    /// The hook's label in metrics and logs: its `name`, else the URL's host and port — never
    /// its path or query, which services like Slack make the secret.
    pub fn label(&self) -> String {
        if let Some(n) = &self.name {
            return n.clone();
        }
        let rest = self
            .url
            .split_once("://")
            .map_or(self.url.as_str(), |(_, r)| r);
        rest.split(['/', '?', '#'])
            .next()
            .unwrap_or(rest)
            .to_owned()
    }
}

/// Splits the user information off `url` (`https://user:pass@host/...`): the URL without it,
/// and it percent-decoded.
pub fn split_userinfo(url: &str) -> (String, Option<String>) {
    let Some((scheme, rest)) = url.split_once("://") else {
        return (url.to_owned(), None);
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    match authority.rsplit_once('@') {
        Some((info, host)) => {
            let decoded = percent_decode(info);
            (format!("{scheme}://{host}{tail}"), Some(decoded))
        }
        None => (url.to_owned(), None),
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A secret read from the environment or a file. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(secret: impl Into<String>) -> Secret {
        Secret(secret.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Environment {
    Production,
    Sandbox,
}

/// One app (Momentum's "domain").
#[derive(Debug)]
pub struct App {
    pub name: String,
    pub smtp_domains: Vec<String>,
    /// The bundle id.
    pub topic: Topic,
    pub environment: Environment,
    pub endpoint: Endpoint,
    /// Trusted in addition to Mozilla's roots (`ca_file`).
    pub extra_roots: Vec<CertificateDer<'static>>,
    /// In order: the inline credential first, then `[[apps.credentials]]`.
    pub credentials: Vec<Credential>,
    pub max_connections: usize,
    pub response_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_attempts: u32,
    pub default_ttl: Duration,
    pub suppress_dead_tokens: bool,
    /// `bounces`: DSNs for this app's injected notifications, when `[bounces]` is set.
    pub bounces: bool,
    /// `supersede`: what makes a newer notification replace an older one still queued.
    pub supersede: Supersede,
}

/// `[[apps]] supersede` (docs/cancel.md): which newer notifications replace older ones still
/// queued for the same token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Supersede {
    /// One with the same `collapse_id` (the default): Apple would show only the newer.
    #[default]
    CollapseId,
    /// As `CollapseId`, and a Live Activity update (`"event": "update"`) replaces older
    /// updates to the same activity token: the newest content state wins.
    LiveActivity,
    /// None: everything accepted is sent.
    Off,
}

impl Supersede {
    pub fn as_str(self) -> &'static str {
        match self {
            Supersede::CollapseId => "collapse_id",
            Supersede::LiveActivity => "live_activity",
            Supersede::Off => "off",
        }
    }
}

impl App {
    /// The credential new connections use at `now`, by its index in `credentials`: the newest
    /// valid one. A token key (.p8) does not expire and is preferred, the last listed first (a
    /// rotated key is listed after the one it replaces); otherwise the certificate that is valid
    /// now with the latest not-before. An expired (or not yet valid) certificate is never used.
    pub fn active_credential(&self, now: std::time::SystemTime) -> Option<usize> {
        let last_token = self
            .credentials
            .iter()
            .rposition(|c| matches!(c, Credential::Token { .. }));
        last_token.or_else(|| {
            self.credentials
                .iter()
                .enumerate()
                .filter_map(|(i, c)| match c {
                    Credential::Certificate { identity, .. } => {
                        let info = identity.info();
                        (info.not_before <= now && now < info.not_after)
                            .then_some((info.not_before, i))
                    }
                    Credential::Token { .. } => None,
                })
                .max()
                .map(|(_, i)| i)
        })
    }
}

/// A loaded credential and the file it came from.
#[derive(Debug)]
pub enum Credential {
    Token {
        key: std::sync::Arc<SigningKey>,
        file: PathBuf,
    },
    Certificate {
        identity: ClientIdentity,
        file: PathBuf,
    },
}

/// Certificates expiring within this are warned about (log, dashboard).
pub const EXPIRY_WARNING: Duration = Duration::from_secs(30 * 86_400);

impl Credential {
    /// Seconds from `now` until the certificate expires (negative once it has); `None` for a
    /// token key, which does not expire.
    pub fn expires_in(&self, now: std::time::SystemTime) -> Option<i64> {
        let Credential::Certificate { identity, .. } = self else {
            return None;
        };
        Some(match identity.info().not_after.duration_since(now) {
            Ok(left) => left.as_secs() as i64,
            Err(past) => -(past.duration().as_secs() as i64),
        })
    }

    /// Seconds left (negative once expired) when the certificate expires within
    /// [`EXPIRY_WARNING`] — or already has; `None` for one with longer left, and for a token key.
    pub fn expires_soon(&self, now: std::time::SystemTime) -> Option<i64> {
        self.expires_in(now)
            .filter(|&left| left < EXPIRY_WARNING.as_secs() as i64)
    }

    /// The file it was loaded from.
    pub fn file(&self) -> &Path {
        match self {
            Credential::Token { file, .. } | Credential::Certificate { file, .. } => file,
        }
    }

    /// The file's name without its folder: how the dashboard, the stats and the reload's log
    /// line name it.
    pub fn file_name(&self) -> String {
        self.file()
            .file_name()
            .map_or_else(String::new, |f| f.to_string_lossy().into_owned())
    }
}

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based; `None` when the problem has no single place (a missing section).
    pub line: Option<usize>,
    /// The key, e.g. `apps[0].key_file`.
    pub key: String,
    pub message: String,
}

/// The configuration in force: one, shared by everything that reads it (the ways in, the API,
/// dispatch) and replaced whole on reload. A std lock, held only to clone or swap the `Arc`.
#[derive(Debug)]
pub struct Current(std::sync::RwLock<std::sync::Arc<Config>>);

impl Current {
    pub fn new(config: std::sync::Arc<Config>) -> Current {
        Current(std::sync::RwLock::new(config))
    }

    /// The configuration in force now.
    pub fn get(&self) -> std::sync::Arc<Config> {
        std::sync::Arc::clone(&self.0.read().expect("config lock is never poisoned"))
    }

    /// Puts `config` in force.
    pub fn set(&self, config: std::sync::Arc<Config>) {
        *self.0.write().expect("config lock is never poisoned") = config;
    }
}

/// Every problem found in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "{}: {n} problem{}",
            self.file.display(),
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            write!(f, "\n  {}", self.file.display())?;
            if let Some(line) = p.line {
                write!(f, ":{line}")?;
            }
            if p.key.is_empty() {
                write!(f, ": {}", p.message)?;
            } else {
                write!(f, ": {}: {}", p.key, p.message)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads and validates `path`, loading every credential it names.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_owned(),
            problems: vec![Problem {
                line: None,
                key: String::new(),
                message: format!("cannot read the file: {e}"),
            }],
        })?;
        load_str(&text, path)
    }

    /// The app named `name`.
    pub fn app(&self, name: &str) -> Option<&App> {
        self.apps.iter().find(|a| a.name == name)
    }

    /// The app a recipient domain routes to: its name or one of its `smtp_domains` (Momentum's
    /// "domain"), compared without regard to case.
    pub fn app_for_domain(&self, domain: &str) -> Option<&App> {
        self.apps.iter().find(|a| {
            a.name.eq_ignore_ascii_case(domain)
                || a.smtp_domains
                    .iter()
                    .any(|d| d.eq_ignore_ascii_case(domain))
        })
    }
}
