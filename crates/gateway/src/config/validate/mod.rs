//! From the raw file to [`Config`]: defaults, ranges, relative paths, credentials loaded, and
//! every problem collected with its line instead of stopping at the first.

mod app;
mod beanstalkd;
mod bounces;
mod postgres;
mod spans;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::raw::{RawConfig, S};
use super::*;
use spans::{Spans, display_path, segments};

/// Validates the text of a configuration file read from `file` (relative paths resolve against
/// its folder).
pub fn load_str(text: &str, file: &Path) -> Result<Config, ConfigError> {
    let mut cx = Cx {
        text,
        newlines: text
            .bytes()
            .enumerate()
            .filter(|&(_, b)| b == b'\n')
            .map(|(i, _)| i)
            .collect(),
        dir: file.parent().map(Path::to_owned).unwrap_or_default(),
        problems: Vec::new(),
    };
    let error = |problems| ConfigError {
        file: file.to_owned(),
        problems,
    };
    let deserializer = match toml::de::Deserializer::parse(text) {
        Ok(d) => d,
        Err(e) => return Err(error(vec![cx.toml_problem(&e)])),
    };
    let mut unknown = Vec::new();
    let raw: RawConfig = match serde_ignored::deserialize(deserializer, |path| {
        unknown.push(segments(&path));
    }) {
        Ok(raw) => raw,
        Err(e) => return Err(error(vec![cx.toml_problem(&e)])),
    };
    let spans = (!unknown.is_empty()).then(|| Spans::parse(text));
    for path in unknown {
        let span = spans.as_ref().and_then(|s| s.locate(&path));
        let last = match path.last() {
            Some(spans::Seg::Key(k)) => momentum_name(k),
            _ => None,
        };
        let message = match last {
            Some(hint) => format!("unknown key; {hint}"),
            None => "unknown key".to_owned(),
        };
        cx.problems.push(Problem {
            line: span.map(|s| cx.line_of(s.start)),
            key: display_path(&path),
            message,
        });
    }
    let config = cx.config(raw, file);
    if cx.problems.is_empty() {
        Ok(config)
    } else {
        cx.problems.sort_by_key(|p| p.line.unwrap_or(0));
        Err(error(cx.problems))
    }
}

struct Cx<'a> {
    text: &'a str,
    /// The offset of every line's end (its `\n`), in order: a line is found by a binary
    /// search, not by counting from the top each time (10,000 apps made that 5 s).
    newlines: Vec<usize>,
    dir: PathBuf,
    problems: Vec<Problem>,
}

const EVENTS: [(&str, WebhookEvent); 4] = [
    ("failed", WebhookEvent::Failed),
    ("token_invalidated", WebhookEvent::TokenInvalidated),
    ("expired", WebhookEvent::Expired),
    ("app_halted", WebhookEvent::AppHalted),
];

impl Cx<'_> {
    fn line_of(&self, offset: usize) -> usize {
        // The newlines before `offset`, plus one.
        self.newlines
            .partition_point(|&n| n < offset.min(self.text.len()))
            + 1
    }

    fn toml_problem(&self, e: &toml::de::Error) -> Problem {
        let mut message = e.message().trim().to_owned();
        // Momentum's `logmode = 0644`: TOML has no leading zeros.
        if message.contains("leading zero") {
            message.push_str(
                " (a file mode like Momentum's logmode is written as a string: mode = \"0644\")",
            );
        }
        Problem {
            line: e.span().map(|s| self.line_of(s.start)),
            key: String::new(),
            message,
        }
    }

    fn problem(&mut self, span: Range<usize>, key: &str, message: impl Into<String>) {
        let line = (span != (0..0)).then(|| self.line_of(span.start));
        self.problems.push(Problem {
            line,
            key: key.to_owned(),
            message: message.into(),
        });
    }

    fn path(&self, s: &Spanned<String>) -> PathBuf {
        let p = Path::new(s.get_ref());
        if p.is_absolute() {
            p.to_owned()
        } else {
            self.dir.join(p)
        }
    }

    /// An integer in `min..=max`, or the default.
    fn int(&mut self, v: &S<i64>, key: &str, default: i64, min: i64, max: i64) -> i64 {
        match v {
            None => default,
            Some(s) if (min..=max).contains(s.get_ref()) => *s.get_ref(),
            Some(s) => {
                let msg = format!("{} is out of range ({min} to {max})", s.get_ref());
                self.problem(s.span(), key, msg);
                default
            }
        }
    }

    /// An octal file mode (`"0644"`), at most 0777.
    fn mode(&mut self, v: &S<String>, key: &str, default: u32) -> u32 {
        match v {
            None => default,
            Some(m) => u32::from_str_radix(m.get_ref(), 8)
                .ok()
                .filter(|m| *m <= 0o777)
                .unwrap_or_else(|| {
                    self.problem(
                        m.span(),
                        key,
                        format!("{:?} is not an octal file mode like \"0644\"", m.get_ref()),
                    );
                    default
                }),
        }
    }

    fn addr(&mut self, v: &S<String>, key: &str, default: &str) -> SocketAddr {
        let fallback = default.parse().expect("defaults are valid addresses");
        match v {
            None => fallback,
            Some(s) => s.get_ref().parse().unwrap_or_else(|_| {
                self.problem(
                    s.span(),
                    key,
                    format!("{:?} is not an address like 127.0.0.1:8080", s.get_ref()),
                );
                fallback
            }),
        }
    }

    fn existing_file(&mut self, v: &Spanned<String>, key: &str) -> PathBuf {
        let p = self.path(v);
        if !p.is_file() {
            self.problem(
                v.span(),
                key,
                format!("file {} does not exist", p.display()),
            );
        }
        p
    }

    fn tls(&mut self, cert: &S<String>, key: &S<String>, section: &str) -> Option<TlsFiles> {
        match (cert, key) {
            (None, None) => None,
            (Some(c), Some(k)) => Some(TlsFiles {
                cert: self.existing_file(c, &format!("{section}.tls_cert")),
                key: self.existing_file(k, &format!("{section}.tls_key")),
            }),
            (Some(s), None) | (None, Some(s)) => {
                self.problem(
                    s.span(),
                    &format!("{section}.tls_cert"),
                    "tls_cert and tls_key go together",
                );
                None
            }
        }
    }

    fn config(&mut self, raw: RawConfig, file: &Path) -> Config {
        let s = raw.server;
        let server = Server {
            listen: self.addr(&s.listen, "server.listen", "127.0.0.1:8080"),
            max_body_bytes: self.int(
                &s.max_body_bytes,
                "server.max_body_bytes",
                16 << 20,
                1024,
                1 << 30,
            ) as usize,
            shutdown_grace: secs(self.int(
                &s.shutdown_grace_s,
                "server.shutdown_grace_s",
                30,
                0,
                3600,
            )),
            header_read_timeout: secs(self.int(
                &s.header_read_timeout_s,
                "server.header_read_timeout_s",
                10,
                1,
                600,
            )),
            keepalive_idle: secs(self.int(
                &s.keepalive_idle_s,
                "server.keepalive_idle_s",
                60,
                1,
                3600,
            )),
            body_read_timeout: secs(self.int(
                &s.body_read_timeout_s,
                "server.body_read_timeout_s",
                60,
                1,
                3600,
            )),
            max_open_connections: self.int(
                &s.max_open_connections,
                "server.max_open_connections",
                1000,
                1,
                1_000_000,
            ) as usize,
            tls: self.tls(&s.tls_cert, &s.tls_key, "server"),
            metrics_listen: s
                .metrics_listen
                .as_ref()
                .map(|_| self.addr(&s.metrics_listen, "server.metrics_listen", "127.0.0.1:9100")),
            slow_failed_logins: match s.slow_failed_logins.as_ref().map(|v| v.get_ref().as_str()) {
                None | Some("remote") => crate::config::SlowFailedLogins::Remote,
                Some("all") => crate::config::SlowFailedLogins::All,
                Some("off") => crate::config::SlowFailedLogins::Off,
                Some(other) => {
                    let span = s
                        .slow_failed_logins
                        .as_ref()
                        .map(|v| v.span())
                        .unwrap_or_default();
                    self.problem(
                        span,
                        "server.slow_failed_logins",
                        format!("{other:?} is not \"remote\", \"all\" or \"off\""),
                    );
                    crate::config::SlowFailedLogins::Remote
                }
            },
        };
        if let (Some(m), Some(v)) = (server.metrics_listen, s.metrics_listen.as_ref())
            && m == server.listen
            && m.port() != 0
        {
            self.problem(
                v.span(),
                "server.metrics_listen",
                format!("{m} is server.listen too: give the metrics another address"),
            );
        }
        let st = raw.storage;
        let postgres = self.postgres(&st);
        let storage = Storage {
            sqlite: st
                .sqlite
                .as_ref()
                .map_or_else(|| self.dir.join("pushgate-data/spool.db"), |p| self.path(p)),
            postgres,
            retention: secs(self.int(
                &st.retention_s,
                "storage.retention_s",
                604_800,
                0,
                i64::MAX / 1000,
            )),
            max_pending: self.int(
                &st.max_pending,
                "storage.max_pending",
                10_000_000,
                1,
                i64::MAX,
            ) as u64,
            idempotency_window: secs(self.int(
                &st.idempotency_window_s,
                "storage.idempotency_window_s",
                86_400,
                1,
                i64::MAX / 1000,
            )),
            mode: self.mode(&st.mode, "storage.mode", 0o600),
        };
        let app_lines: Vec<beanstalkd::AppLine> = raw
            .apps
            .iter()
            .map(|a| beanstalkd::AppLine {
                name: a.get_ref().name.as_ref().map(|n| n.get_ref().clone()),
                line: self.line_of(a.span().start),
            })
            .collect();
        let apps: Vec<App> = raw
            .apps
            .into_iter()
            .enumerate()
            .filter_map(|(i, a)| self.app(i, a))
            .collect();
        self.unique_names(&apps);
        self.unique_topics(&apps, &app_lines);
        let app_names: HashSet<&str> = apps.iter().map(|a| a.name.as_str()).collect();
        let mut api_keys: Vec<ApiKey> = Vec::new();
        for (i, k) in raw.api_keys.into_iter().enumerate() {
            let (span, k) = (k.span(), k.into_inner());
            let at = |f: &str| format!("api_keys[{i}].{f}");
            let name = match &k.name {
                Some(n) if !n.get_ref().is_empty() => n.get_ref().clone(),
                _ => {
                    self.problem(span.clone(), &at("name"), "required");
                    String::new()
                }
            };
            let hash = match &k.key_sha256 {
                Some(h) => parse_sha256(h.get_ref()).unwrap_or_else(|| {
                    self.problem(
                        h.span(),
                        &at("key_sha256"),
                        "must be 64 lowercase hex characters (the SHA-256 of the key)",
                    );
                    [0; 32]
                }),
                None => {
                    self.problem(span.clone(), &at("key_sha256"), "required");
                    [0; 32]
                }
            };
            let admin = k.admin.as_ref().is_some_and(|a| *a.get_ref());
            let scope = match &k.apps {
                None if admin => Scope::All,
                None => {
                    self.problem(
                        span.clone(),
                        &at("apps"),
                        "required: a list of app names, or [\"*\"]",
                    );
                    Scope::Apps(Vec::new())
                }
                Some(list) if list.get_ref().iter().any(|a| a == "*") => Scope::All,
                Some(list) => {
                    for a in list.get_ref() {
                        if !app_names.contains(a.as_str()) {
                            self.problem(
                                list.span(),
                                &at("apps"),
                                format!("no app is named {a:?}"),
                            );
                        }
                    }
                    if list.get_ref().is_empty() {
                        self.problem(
                            list.span(),
                            &at("apps"),
                            "empty; name at least one app, or \"*\"",
                        );
                    }
                    Scope::Apps(list.get_ref().clone())
                }
            };
            let rate = match (&k.rate_per_s, &k.burst) {
                (Some(_), _) => {
                    let per_s = self.int(&k.rate_per_s, &at("rate_per_s"), 1, 1, 1_000_000);
                    let burst = self.int(&k.burst, &at("burst"), per_s, 1, 10_000_000);
                    Some(crate::config::Rate {
                        per_s: per_s as u32,
                        burst: burst as u32,
                    })
                }
                (None, Some(b)) => {
                    self.problem(b.span(), &at("burst"), "needs rate_per_s");
                    None
                }
                (None, None) => None,
            };
            // Two entries may share a name while a key is replaced (both work until the old one
            // is removed): they must then be the same key to the gateway — apps, admin and rate
            // alike (its rate limit is the name's).
            if let Some(twin) = api_keys.iter().find(|o| o.name == name)
                && (twin.scope != scope || twin.admin != admin || twin.rate != rate)
            {
                self.problem(
                    span.clone(),
                    &at("name"),
                    format!(
                        "another key is named {name:?} with other apps, admin or rate: two entries \
                         of one name are one key being replaced, and must agree"
                    ),
                );
            }
            if hash != [0; 32] && api_keys.iter().any(|o| o.key_sha256 == hash) {
                self.problem(
                    span.clone(),
                    &at("key_sha256"),
                    "the same key is configured twice",
                );
            }
            api_keys.push(ApiKey {
                name,
                key_sha256: hash,
                scope,
                admin,
                rate,
            });
        }
        let smtp = raw.smtp.map(|sm| {
            let sm = sm.into_inner();
            let tls = self.tls(&sm.tls_cert, &sm.tls_key, "smtp");
            let require_auth = sm.require_auth.as_ref().is_some_and(|r| *r.get_ref());
            if let (true, None, Some(r)) = (require_auth, &tls, &sm.require_auth) {
                self.problem(
                    r.span(),
                    "smtp.require_auth",
                    "AUTH is refused over plain text: set tls_cert and tls_key",
                );
            }
            Smtp {
                listen: self.addr(&sm.listen, "smtp.listen", "127.0.0.1:2525"),
                max_message_bytes: self.int(
                    &sm.max_message_bytes,
                    "smtp.max_message_bytes",
                    10 << 20,
                    1024,
                    1 << 30,
                ) as usize,
                tls,
                require_auth,
                max_sessions: self.int(&sm.max_sessions, "smtp.max_sessions", 100, 1, 100_000)
                    as usize,
                command_timeout: secs(self.int(
                    &sm.command_timeout_s,
                    "smtp.command_timeout_s",
                    300,
                    1,
                    3600,
                )),
                data_timeout: secs(self.int(
                    &sm.data_timeout_s,
                    "smtp.data_timeout_s",
                    600,
                    1,
                    7200,
                )),
            }
        });
        let lg = raw.log;
        let mode = self.mode(&lg.mode, "log.mode", 0o644);
        let log = Log {
            file: lg.file.as_ref().map(|f| self.path(f)),
            mode,
            max_bytes: self.int(&lg.max_bytes, "log.max_bytes", 100 << 20, 4096, i64::MAX) as u64,
            heartbeat: secs(self.int(&lg.heartbeat_s, "log.heartbeat_s", 60, 1, 86_400)),
            per_attempt: lg.per_attempt.as_ref().is_some_and(|p| *p.get_ref()),
        };
        let webhooks = raw
            .webhooks
            .into_iter()
            .enumerate()
            .map(|(i, w)| {
                let (span, w) = (w.span(), w.into_inner());
                let at = |f: &str| format!("webhooks[{i}].{f}");
                let url = match &w.url {
                    Some(u) if u.get_ref().starts_with("http://") || u.get_ref().starts_with("https://") => u.get_ref().clone(),
                    Some(u) => {
                        self.problem(u.span(), &at("url"), "must start with http:// or https://");
                        String::new()
                    }
                    None => {
                        self.problem(span, &at("url"), "required");
                        String::new()
                    }
                };
                let events = match &w.events {
                    None => EVENTS.iter().map(|(_, e)| *e).collect(),
                    Some(list) => list
                        .get_ref()
                        .iter()
                        .filter_map(|name| {
                            let found = EVENTS.iter().find(|(n, _)| n == name).map(|(_, e)| *e);
                            if found.is_none() {
                                self.problem(list.span(), &at("events"), format!("unknown event {name:?} (failed, token_invalidated, expired, app_halted)"));
                            }
                            found
                        })
                        .collect(),
                };
                let secret = w.secret_env.as_ref().and_then(|v| self.env_secret(v, &at("secret_env")));
                // User information in the URL is Basic auth: kept out of the URL (and of every
                // label, log line and Host header), sent as a header.
                let (url, basic) = crate::config::split_userinfo(&url);
                let name = w.name.as_ref().map(|n| n.get_ref().clone());
                Webhook { url, name, basic: basic.map(Secret::new), events, secret }
            })
            .collect();
        let beanstalkd = self.beanstalkd(raw.beanstalkd, &apps, &app_lines, &api_keys);
        let bounces = raw.bounces.map(|b| self.bounces(b));
        Config {
            file: file.to_owned(),
            server,
            storage,
            api_keys,
            smtp,
            log,
            webhooks,
            beanstalkd,
            bounces,
            apps,
        }
    }

    /// A secret read from file `f` (its line end trimmed), or the problem of reading it.
    fn file_secret(&mut self, f: &Spanned<String>, key: &str) -> Option<Secret> {
        let path = self.path(f);
        match std::fs::read_to_string(&path) {
            Ok(s) => Some(Secret(s.trim_end_matches(['\r', '\n']).to_owned())),
            Err(e) => {
                self.problem(
                    f.span(),
                    key,
                    format!("cannot read {}: {e}", path.display()),
                );
                None
            }
        }
    }

    fn env_secret(&mut self, var: &Spanned<String>, key: &str) -> Option<Secret> {
        match std::env::var(var.get_ref()) {
            Ok(v) if !v.is_empty() => Some(Secret(v)),
            _ => {
                self.problem(
                    var.span(),
                    key,
                    format!("environment variable {} is not set", var.get_ref()),
                );
                None
            }
        }
    }

    fn unique_names(&mut self, apps: &[App]) {
        let mut seen = HashSet::new();
        for a in apps {
            for d in std::iter::once(&a.name).chain(&a.smtp_domains) {
                if !seen.insert(d.clone()) {
                    self.problem(
                        0..0,
                        "apps",
                        format!("{d:?} names two apps (app names and smtp_domains must be unique)"),
                    );
                }
            }
        }
    }
}

/// What pushgate calls a Momentum `ecelerity.conf` name an operator brought along
/// (docs/momentum.md's table), for the "unknown key" it is.
fn momentum_name(key: &str) -> Option<&'static str> {
    Some(match key {
        "heartbeat" => "did you mean heartbeat_s (in [log], seconds)?",
        "logfile" => "did you mean file (in [log])?",
        "logmode" => "did you mean mode (in [log], a string: mode = \"0644\")?",
        "max_outbound_connections" => {
            "did you mean max_connections (in [[apps]])? An HTTP/2 connection carries many streams: 4 is plenty"
        }
        "delivery_response_timeout" => {
            "did you mean delivery_response_timeout_ms (in [[apps]], milliseconds)?"
        }
        "idle_timeout" => "did you mean idle_timeout_s (in [[apps]], seconds)?",
        "tls_certificate" => "did you mean certificate (in [[apps]])?",
        "tls_key" => "did you mean certificate_key (in [[apps]])?",
        "routes" => "say environment = \"production\" or \"sandbox\" (in [[apps]]) instead",
        "tls" | "tls_verify" | "tls_ciphers" => {
            "not needed: TLS 1.2 or later to Apple, its certificate always verified"
        }
        "delivery_method" => "not needed: every app delivers to APNs",
        "mcmt_reception" => "not needed: [smtp] always takes MCMT",
        _ => return None,
    })
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

fn parse_sha256(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

fn secs(n: i64) -> Duration {
    Duration::from_secs(n.max(0) as u64)
}
