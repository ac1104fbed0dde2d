//! What `pushgate db copy` takes from a SQLite spool, and the mark it leaves on one it copied.

use std::path::Path;
use std::time::SystemTime;

use apns::Reason;
use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::decode::{decode_id, state, token_from_bytes};
use super::reads::read_request;
use super::sql;
use crate::reason::Cause;
use crate::spool::{SpoolError, from_ms, to_ms};

/// What `pushgate db copy` takes from a SQLite spool: every request with notifications not yet
/// final, those notifications, the dead-token registry and the paused apps. The file is
/// brought to this version's schema first (the caller holds it: no gateway runs on it), then
/// read in one read transaction (the backlog is held in memory: about 200 bytes a
/// notification).
pub(crate) fn export(path: &Path) -> Result<crate::spool::Export, SpoolError> {
    let open_err = |source| SpoolError::Open {
        path: path.display().to_string(),
        source,
    };
    let mut c = Connection::open(path).map_err(open_err)?;
    super::schema::migrate(&c, path)?;
    let tx = c.transaction().map_err(open_err)?;
    read_export(&tx)
}

/// Where `pushgate db copy` copied this spool to, and when, if it did.
pub(super) fn copied_to(c: &Connection) -> Result<Option<String>, rusqlite::Error> {
    let marked: bool = c.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'copied_to_postgres'",
        [],
        |r| r.get(0),
    )?;
    if !marked {
        return Ok(None);
    }
    c.query_row(
        "SELECT target || ' at ' || datetime(at / 1000, 'unixepoch') || ' UTC' \
         FROM copied_to_postgres ORDER BY at DESC LIMIT 1",
        [],
        |r| r.get(0),
    )
    .optional()
}

/// Whether the spool at `path` was copied before (`Some(where and when)`).
pub(crate) fn copied(path: &Path) -> Result<Option<String>, SpoolError> {
    let open_err = |source| SpoolError::Open {
        path: path.display().to_string(),
        source,
    };
    let c =
        Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(open_err)?;
    copied_to(&c).map_err(open_err)
}

/// Marks the spool at `path` as copied to `target`: a gateway will not serve it again.
pub(crate) fn mark_copied(path: &Path, target: &str) -> Result<(), SpoolError> {
    let open_err = |source| SpoolError::Open {
        path: path.display().to_string(),
        source,
    };
    let c = Connection::open(path).map_err(open_err)?;
    c.execute_batch(
        "CREATE TABLE IF NOT EXISTS copied_to_postgres (target TEXT NOT NULL, at INTEGER NOT NULL)",
    )
    .map_err(open_err)?;
    c.execute(
        "INSERT INTO copied_to_postgres (target, at) VALUES (?1, ?2)",
        rusqlite::params![target, to_ms(SystemTime::now())],
    )
    .map_err(open_err)?;
    Ok(())
}

/// Every request with pending notifications, with them, and every dead token.
fn read_export(c: &Connection) -> Result<crate::spool::Export, SpoolError> {
    let what = "reading the spool to copy";
    let mut out = crate::spool::Export::default();
    let mut st = c
        .prepare(
            "SELECT n.id, n.token, n.state, n.attempts, n.due_at, n.status, n.reason, n.request_id, \
             r.send_at, r.created_at, n.conn FROM notifications n JOIN requests r ON r.id = n.request_id \
             WHERE n.state < 3 ORDER BY n.request_id, n.id",
        )
        .map_err(sql(what))?;
    // Histories are read only when some notification was retried.
    let retried: bool = c
        .query_row("SELECT EXISTS (SELECT 1 FROM attempts)", [], |r| r.get(0))
        .map_err(sql(what))?;
    let mut rows = st.query([]).map_err(sql(what))?;
    let mut current: Option<i64> = None;
    while let Some(r) = rows.next().map_err(sql(what))? {
        let request_id: i64 = r.get(7).map_err(sql(what))?;
        if current != Some(request_id) {
            let Some((request, expires_at)) = read_request(c, request_id)? else {
                continue;
            };
            out.requests.push(crate::spool::ExportedRequest {
                request,
                send_at: r.get::<_, Option<i64>>(8).map_err(sql(what))?.map(from_ms),
                expires_at,
                created_at: from_ms(r.get(9).map_err(sql(what))?),
                notifications: Vec::new(),
            });
            current = Some(request_id);
        }
        let id = decode_id(
            r.get_ref(0)
                .map_err(sql(what))?
                .as_blob()
                .map_err(|e| sql(what)(e.into()))?,
        )?;
        let n = crate::spool::ExportedNotification {
            id,
            token: token_from_bytes(
                r.get_ref(1)
                    .map_err(sql(what))?
                    .as_blob()
                    .map_err(|e| sql(what)(e.into()))?,
            )?,
            state: state(r.get(2).map_err(sql(what))?)?,
            attempts: r.get(3).map_err(sql(what))?,
            due_at: r.get::<_, Option<i64>>(4).map_err(sql(what))?.map(from_ms),
            status: r.get(5).map_err(sql(what))?,
            reason: r
                .get::<_, Option<String>>(6)
                .map_err(sql(what))?
                .as_deref()
                .map(Cause::parse),
            conn: r
                .get::<_, Option<i64>>(10)
                .map_err(sql(what))?
                .map(|n| n as u64),
            history: if retried {
                super::reads::attempts_of(c, id)?
            } else {
                Vec::new()
            },
        };
        if let Some(last) = out.requests.last_mut() {
            last.notifications.push(n);
        }
    }
    out.pauses = super::reads::app_pauses(c)?;
    let mut st = c
        .prepare("SELECT app, token, reason, since FROM dead_tokens ORDER BY app, token")
        .map_err(sql(what))?;
    let mut rows = st.query([]).map_err(sql(what))?;
    while let Some(r) = rows.next().map_err(sql(what))? {
        out.dead.push(crate::spool::DeadToken {
            app: r.get(0).map_err(sql(what))?,
            token: token_from_bytes(&r.get::<_, Vec<u8>>(1).map_err(sql(what))?)?,
            reason: Reason::parse(&r.get::<_, String>(2).map_err(sql(what))?),
            since: from_ms(r.get(3).map_err(sql(what))?),
        });
    }
    Ok(out)
}
