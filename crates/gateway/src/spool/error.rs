//! How the spool fails.

/// Why a submit was not accepted. Nothing of a refused batch is stored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    #[error("spool is full ({pending} pending, limit {limit})")]
    Full { pending: u64, limit: u64 },
    #[error("spool is unavailable: {0}")]
    Unavailable(#[source] SpoolError),
    /// The idempotency key was used before, for another submission (another fingerprint).
    #[error("the idempotency key was used for another request")]
    KeyReused,
    /// A submission under the same idempotency key is being committed right now.
    #[error("a request with the same idempotency key is still being committed")]
    KeyInProgress,
    /// An operator paused the app with `reject` (`POST /v1/apps/{app}/pause?reject=true`);
    /// nothing is stored.
    #[error("app {app:?} is paused and refuses new notifications until it is resumed")]
    AppPaused { app: String },
    /// The key's rate limit (`[[api_keys]] rate_per_s`) refused it; nothing is stored.
    #[error("key {key:?} may submit {per_s} notifications a second; retry in {retry_after:?}")]
    RateLimited {
        key: String,
        per_s: u32,
        retry_after: std::time::Duration,
    },
}

impl SubmitError {
    /// For a rate-limited submission: whole seconds to wait, at least 1 (`Retry-After`).
    pub fn retry_after_s(&self) -> Option<u64> {
        match self {
            SubmitError::RateLimited { retry_after, .. } => {
                Some(retry_after.as_secs_f64().ceil().max(1.0) as u64)
            }
            _ => None,
        }
    }
}

impl SpoolError {
    /// An operation `backend` does not offer.
    pub fn unsupported(operation: &'static str, backend: &'static str) -> SpoolError {
        SpoolError::Unsupported { operation, backend }
    }
}

/// A storage failure. The SQLite backend's errors carry rusqlite's; another backend adds its
/// own variants.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpoolError {
    #[error("opening the spool at {path}")]
    Open {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{what}")]
    Sql {
        what: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the spool's writer has stopped")]
    WriterGone,
    #[error("the spool at {path} has schema version {found}; this pushgate knows {known}")]
    Schema {
        path: String,
        found: i64,
        known: i64,
    },
    #[error("a stored row is corrupt: {0}")]
    Corrupt(&'static str),
    /// PostgreSQL refused, failed or could not be reached; `what` says what was being done
    /// (never the URL: it may hold a password).
    #[error("{what}")]
    Postgres {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("the {backend} spool does not offer {operation}")]
    Unsupported {
        operation: &'static str,
        backend: &'static str,
    },
}
