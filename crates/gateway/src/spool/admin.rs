//! The spool as `pushgate db` sees it: its status without changing it, a migration ahead of a
//! start, and a copy from SQLite into PostgreSQL.

use std::path::Path;

use super::postgres::PgSpool;
use super::{Spool, SpoolError, SpoolOptions, Store};

/// What `pushgate db status` says of the spool `[storage]` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolStatus {
    /// `"sqlite"` or `"postgres"`.
    pub backend: &'static str,
    /// The file, or `host:port/database` (never a URL: it may hold a password).
    pub target: String,
    /// PostgreSQL's `server_version`.
    pub server_version: Option<String>,
    /// The schema version found; `None` before the first start.
    pub schema: Option<i64>,
    /// The schema version this pushgate writes (a newer one is refused).
    pub known: i64,
}

/// The spool `[storage]` names, read without changing it.
pub async fn status(storage: &crate::config::Storage) -> Result<SpoolStatus, SpoolError> {
    match &storage.postgres {
        Some(pg) => {
            let (version, schema, known) = super::postgres::inspect(pg).await?;
            Ok(SpoolStatus {
                backend: "postgres",
                target: pg.target.clone(),
                server_version: Some(version),
                schema,
                known,
            })
        }
        None => {
            let path = storage.sqlite.clone();
            let (schema, known) =
                tokio::task::spawn_blocking(move || super::sqlite::schema_version(&path))
                    .await
                    .map_err(|_| SpoolError::WriterGone)??;
            Ok(SpoolStatus {
                backend: "sqlite",
                target: storage.sqlite.display().to_string(),
                server_version: None,
                schema,
                known,
            })
        }
    }
}

/// Creates or migrates the spool `[storage]` names, as a gateway does at start (PostgreSQL:
/// under the migration lock only, so beside a running gateway, and a gateway starting
/// meanwhile waits for it or finds the work done). Answers the status before and after.
pub async fn migrate(
    storage: &crate::config::Storage,
) -> Result<(SpoolStatus, SpoolStatus), SpoolError> {
    let mut before = status(storage).await?;
    match &storage.postgres {
        Some(pg) => {
            // What the migration found under its lock, not what the status read before it:
            // another pushgate may have migrated in between.
            let found = super::postgres::migrate(pg).await?;
            before.schema = (found > 0).then_some(found.into());
        }
        None => Store::open(storage).await?.close().await?,
    }
    let after = status(storage).await?;
    Ok((before, after))
}

/// `pushgate db copy --from-sqlite FILE`: copies the notifications not yet final of the SQLite
/// spool at `file` (with their requests) and its dead-token registry into the PostgreSQL spool
/// `storage` names. Refuses while a gateway holds the file (its notifications would be sent
/// by two gateways); gateways may run on the database meanwhile (what it copies is nobody's,
/// for them to claim). Running it again copies nothing twice.
pub async fn copy_from_sqlite(
    file: &Path,
    storage: &crate::config::Storage,
) -> Result<crate::spool::CopyReport, SpoolError> {
    let Some(pg) = &storage.postgres else {
        return Err(SpoolError::unsupported(
            "copying into it (the configuration names no PostgreSQL spool)",
            "sqlite",
        ));
    };
    if !file.exists() {
        return Err(SpoolError::Io {
            what: format!("no SQLite spool at {}", file.display()),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        });
    }
    let path = file.to_owned();
    // Held from the read to the mark: no gateway starts on the file meanwhile.
    let (owner, export) = tokio::task::spawn_blocking(move || {
        let owner = super::sqlite::hold(&path)?;
        if let Some(to) = super::sqlite::copied(&path)? {
            return Ok((owner, Err(to)));
        }
        Ok::<_, SpoolError>((owner, Ok(super::sqlite::export(&path)?)))
    })
    .await
    .map_err(|_| SpoolError::WriterGone)??;
    let export = match export {
        Ok(e) => e,
        // Copied before: nothing to do (a second run is a no-op, not a second copy).
        Err(to) => {
            return Ok(crate::spool::CopyReport {
                copied_before: Some(to),
                ..crate::spool::CopyReport::default()
            });
        }
    };
    let spool = PgSpool::open(pg, SpoolOptions::default()).await?;
    // Nothing dispatches here: the cluster's news is not read.
    drop(crate::spool::Spool::cluster_events(&spool));
    let report = spool.import(&export).await;
    spool.close().await?;
    let report = report?;
    let (path, target) = (file.to_owned(), pg.target.clone());
    tokio::task::spawn_blocking(move || super::sqlite::mark_copied(&path, &target))
        .await
        .map_err(|_| SpoolError::WriterGone)??;
    drop(owner);
    Ok(report)
}
