//! `[storage]` for a PostgreSQL spool: where the URL comes from (an environment variable or a
//! file, never the configuration itself: it may hold a password), the pool and the timeout.

use std::time::Duration;

use toml::Spanned;

use super::super::raw::RawStorage;
use super::super::{Postgres, Secret};
use super::Cx;

impl Cx<'_> {
    /// The PostgreSQL settings, if `[storage]` names a database; `None` (SQLite) otherwise.
    pub(super) fn postgres(&mut self, st: &RawStorage) -> Option<Postgres> {
        let url = match (&st.postgres_url_env, &st.postgres_url_file) {
            (None, None) => {
                for (v, key) in [
                    (&st.pool_size, "storage.pool_size"),
                    (&st.statement_timeout_ms, "storage.statement_timeout_ms"),
                    (&st.heartbeat_s, "storage.heartbeat_s"),
                    (&st.lease_s, "storage.lease_s"),
                ] {
                    if let Some(v) = v {
                        self.problem(
                            v.span(),
                            key,
                            "only with postgres_url_env or postgres_url_file",
                        );
                    }
                }
                if let Some(f) = &st.ca_file {
                    self.problem(
                        f.span(),
                        "storage.ca_file",
                        "only with postgres_url_env or postgres_url_file",
                    );
                }
                return None;
            }
            (Some(v), Some(_)) => {
                self.problem(
                    v.span(),
                    "storage.postgres_url_env",
                    "give postgres_url_env or postgres_url_file, not both",
                );
                return None;
            }
            (Some(v), None) => self.env_secret(v, "storage.postgres_url_env")?,
            (None, Some(f)) => self.url_file(f)?,
        };
        let at = st
            .postgres_url_env
            .as_ref()
            .or(st.postgres_url_file.as_ref())
            .map(Spanned::span)
            .unwrap_or_default();
        let key = if st.postgres_url_env.is_some() {
            "storage.postgres_url_env"
        } else {
            "storage.postgres_url_file"
        };
        if let Some(s) = &st.sqlite {
            self.problem(
                s.span(),
                "storage.sqlite",
                "give sqlite or a PostgreSQL URL (postgres_url_env, postgres_url_file), not both",
            );
        }
        let pool_size = self.int(&st.pool_size, "storage.pool_size", 16, 1, 1000) as usize;
        let timeout = self.int(
            &st.statement_timeout_ms,
            "storage.statement_timeout_ms",
            30_000,
            100,
            3_600_000,
        );
        let heartbeat = self.int(&st.heartbeat_s, "storage.heartbeat_s", 5, 1, 60);
        let lease = self.int(&st.lease_s, "storage.lease_s", 30, 3, 3600);
        if lease < 2 * heartbeat
            && let Some(v) = st.lease_s.as_ref().or(st.heartbeat_s.as_ref())
        {
            self.problem(
                v.span(),
                if st.lease_s.is_some() {
                    "storage.lease_s"
                } else {
                    "storage.heartbeat_s"
                },
                format!(
                    "lease_s ({lease}) must be at least twice heartbeat_s ({heartbeat}): one late \
                     heartbeat must not declare a gateway dead"
                ),
            );
        }
        let ca_file = st
            .ca_file
            .as_ref()
            .map(|f| self.existing_file(f, "storage.ca_file"));
        let target = match url_target(url.expose()) {
            Ok(t) => t,
            Err(why) => {
                // The URL itself is never quoted: it may hold a password.
                self.problem(at, key, format!("not a PostgreSQL URL: {why}"));
                return None;
            }
        };
        Some(Postgres {
            url,
            target,
            pool_size,
            statement_timeout: Duration::from_millis(timeout as u64),
            heartbeat: Duration::from_secs(heartbeat as u64),
            lease: Duration::from_secs(lease as u64),
            ca_file,
        })
    }

    fn url_file(&mut self, f: &Spanned<String>) -> Option<Secret> {
        let path = self.path(f);
        match std::fs::read_to_string(&path) {
            Ok(s) if !s.trim().is_empty() => Some(Secret::new(s.trim())),
            Ok(_) => {
                self.problem(
                    f.span(),
                    "storage.postgres_url_file",
                    format!("{} is empty", path.display()),
                );
                None
            }
            Err(e) => {
                self.problem(
                    f.span(),
                    "storage.postgres_url_file",
                    format!("cannot read {}: {e}", path.display()),
                );
                None
            }
        }
    }
}

/// `host:port/database` of a PostgreSQL URL, for logs; or why it is not one. `sslmode`
/// `verify-ca` and `verify-full` are accepted (rustls always checks the certificate and the
/// host name), so the why never quotes the URL.
pub(crate) fn url_target(url: &str) -> Result<String, String> {
    let config = crate::spool::postgres_config(url).map_err(|e| e.to_string())?;
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => return Err("it names no host".to_owned()),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or("postgres");
    Ok(format!("{host}:{port}/{db}"))
}
