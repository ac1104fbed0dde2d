//! The SQLite spool's side of bounces (`spool::bounces`): three tables, added beside the
//! others (an older pushgate ignores them), and the statements that fill and empty them.
//!
//! Only requests injected with bounces on write here: an origin per message (and return
//! path), a row in `bounce_requests` per request. A failure joins the outbox in the
//! transaction that records it, found through its request — one indexed lookup, and only for
//! notifications that end failed or expired. One gateway owns a SQLite file, and its one
//! sender reads what is due: no lease is needed.

use std::collections::HashMap;
use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::decode::{decode_id, state, token_from_bytes};
use super::sql;
use crate::spool::{
    BounceEntry, BounceOrigin, BounceSettle, DueBounce, MAX_PER_DSN, NewRequest, SpoolError,
    from_ms, to_ms,
};

pub(super) const BOUNCE_TABLES: &str = "CREATE TABLE IF NOT EXISTS bounce_origins (
    id INTEGER PRIMARY KEY,
    return_path TEXT NOT NULL,
    headers BLOB NOT NULL,
    way TEXT NOT NULL,
    received_from TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS bounce_requests (
    request_id INTEGER PRIMARY KEY,
    origin INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS bounce_requests_origin ON bounce_requests (origin);
CREATE TABLE IF NOT EXISTS bounce_outbox (
    id BLOB PRIMARY KEY,
    origin INTEGER NOT NULL,
    app TEXT NOT NULL,
    token BLOB NOT NULL,
    state INTEGER NOT NULL,
    status INTEGER,
    reason TEXT,
    at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS bounce_outbox_origin ON bounce_outbox (origin, at);";

/// A notification that just became final (?1) joins the outbox if its request has an origin
/// (recorded at ?2). The link names its request by id and creation time: SQLite reuses the id
/// of a request deleted last, and a link an older pushgate left behind must not catch it.
pub(super) const QUEUE: &str = "INSERT OR IGNORE INTO bounce_outbox \
     (id, origin, app, token, state, status, reason, at) \
     SELECT n.id, b.origin, r.app, n.token, n.state, n.status, n.reason, ?2 \
     FROM notifications n JOIN bounce_requests b ON b.request_id = n.request_id \
     JOIN requests r ON r.id = n.request_id AND r.created_at = b.created_at WHERE n.id = ?1";

/// At open: links to requests that are gone (pruned by an older pushgate), or whose id a newer
/// request took since; then the origins nothing refers to any more.
pub(super) const FORGET_STALE: &str = "DELETE FROM bounce_requests WHERE NOT EXISTS \
     (SELECT 1 FROM requests r WHERE r.id = bounce_requests.request_id \
     AND r.created_at = bounce_requests.created_at)";
pub(super) const FORGET_ORPHANS: &str = "DELETE FROM bounce_origins WHERE \
     NOT EXISTS (SELECT 1 FROM bounce_requests b WHERE b.origin = bounce_origins.id) \
     AND NOT EXISTS (SELECT 1 FROM bounce_outbox x WHERE x.origin = bounce_origins.id)";

/// Origins whose first waiting failure was recorded by ?2 and whose next try is due at ?1,
/// oldest first.
const DUE: &str = "SELECT o.id, o.return_path, o.headers, o.way, o.received_from, \
     o.received_at, o.attempts FROM (SELECT origin, MIN(at) AS first FROM bounce_outbox \
     GROUP BY origin) f JOIN bounce_origins o ON o.id = f.origin \
     WHERE f.first <= ?2 AND o.next_at <= ?1 ORDER BY f.first LIMIT ?3";
const ENTRIES: &str = "SELECT id, app, token, state, status, reason, at FROM bounce_outbox \
     WHERE origin = ?1 ORDER BY at, id LIMIT ?2";

/// Stores the origins of `batch`'s requests (once per shared origin) and links each request
/// to its own; `request_ids` are the rows the batch's requests became, in order.
pub(super) fn link(
    tx: &Transaction<'_>,
    batch: &[NewRequest],
    request_ids: &[i64],
    now: i64,
) -> Result<(), rusqlite::Error> {
    let mut origins: HashMap<*const BounceOrigin, i64> = HashMap::new();
    for (r, &request_id) in batch.iter().zip(request_ids) {
        let Some(o) = &r.bounce else { continue };
        let origin = match origins.get(&Arc::as_ptr(o)) {
            Some(&id) => id,
            None => {
                tx.prepare_cached(
                    "INSERT INTO bounce_origins (return_path, headers, way, received_from, \
                     received_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(params![
                    o.return_path,
                    o.headers,
                    o.way,
                    o.received_from,
                    to_ms(o.received_at).min(now)
                ])?;
                let id = tx.last_insert_rowid();
                origins.insert(Arc::as_ptr(o), id);
                id
            }
        };
        // (OR REPLACE: a link an older pushgate left behind when it pruned the request.)
        tx.prepare_cached(
            "INSERT OR REPLACE INTO bounce_requests (request_id, origin, created_at) \
             VALUES (?1, ?2, ?3)",
        )?
        // The request's own time, as `insert_batch` stored it: what `QUEUE` joins on.
        .execute(params![
            request_id,
            origin,
            r.submitted.map_or(now, |s| to_ms(s.at))
        ])?;
    }
    Ok(())
}

/// An origin (?1) nothing refers to any more: no request, no failure waiting.
const FORGET_ORPHAN: &str = "DELETE FROM bounce_origins WHERE id = ?1 \
     AND NOT EXISTS (SELECT 1 FROM bounce_requests WHERE origin = ?1) \
     AND NOT EXISTS (SELECT 1 FROM bounce_outbox WHERE origin = ?1)";

/// Retention: request `request_id` is gone; so is its link, and its origin once nothing
/// refers to it.
pub(super) fn forget_request(tx: &Transaction<'_>, request_id: i64) -> Result<(), rusqlite::Error> {
    let origin: Option<i64> = tx
        .prepare_cached("DELETE FROM bounce_requests WHERE request_id = ?1 RETURNING origin")?
        .query_row(params![request_id], |r| r.get(0))
        .optional()?;
    if let Some(origin) = origin {
        tx.prepare_cached(FORGET_ORPHAN)?.execute(params![origin])?;
    }
    Ok(())
}

/// Settles a DSN of `origin` that covered `ids`.
pub(super) fn settle(
    tx: &Transaction<'_>,
    origin: i64,
    ids: &[apns::ApnsId],
    how: BounceSettle,
) -> Result<(), rusqlite::Error> {
    match how {
        BounceSettle::Done => {
            let mut del = tx.prepare_cached("DELETE FROM bounce_outbox WHERE id = ?1")?;
            for id in ids {
                del.execute(params![&id.as_uuid().as_bytes()[..]])?;
            }
            tx.prepare_cached("UPDATE bounce_origins SET attempts = 0, next_at = 0 WHERE id = ?1")?
                .execute(params![origin])?;
            // Its requests may be pruned already (retention shorter than the retries).
            tx.prepare_cached(FORGET_ORPHAN)?.execute(params![origin])?;
        }
        BounceSettle::RetryAt(at) => {
            tx.prepare_cached(
                "UPDATE bounce_origins SET attempts = attempts + 1, next_at = ?2 WHERE id = ?1",
            )?
            .execute(params![origin, to_ms(at)])?;
        }
    }
    Ok(())
}

/// Up to `limit` origins due at `now` whose first failure was recorded by `cutoff`.
pub(super) fn due(
    c: &Connection,
    now: i64,
    cutoff: i64,
    limit: usize,
) -> Result<Vec<DueBounce>, SpoolError> {
    let what = "reading the bounces due";
    let mut st = c.prepare_cached(DUE).map_err(sql(what))?;
    let origins = st
        .query_map(params![now, cutoff, limit as i64], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                BounceOrigin {
                    return_path: r.get(1)?,
                    headers: r.get(2)?,
                    way: r.get(3)?,
                    received_from: r.get(4)?,
                    received_at: from_ms(r.get(5)?),
                },
                r.get::<_, i64>(6)?,
            ))
        })
        .map_err(sql(what))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(sql(what))?;
    let mut entries = c.prepare_cached(ENTRIES).map_err(sql(what))?;
    let mut out = Vec::with_capacity(origins.len());
    for (origin, from, attempts) in origins {
        let rows = entries
            .query_map(params![origin, MAX_PER_DSN as i64], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, Option<u16>>(4)?,
                    r.get::<_, Option<String>>(5)?,
                    r.get::<_, i64>(6)?,
                ))
            })
            .map_err(sql(what))?;
        let mut list = Vec::new();
        for row in rows {
            let (id, app, token, st, status, reason, at) = row.map_err(sql(what))?;
            list.push(BounceEntry {
                id: decode_id(&id)?,
                app,
                token: token_from_bytes(&token)?,
                state: state(st)?,
                status,
                reason,
                at: from_ms(at),
            });
        }
        out.push(DueBounce {
            origin,
            from,
            attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
            lease: 0,
            entries: list,
        });
    }
    Ok(out)
}

/// Failures waiting in the outbox.
pub(super) fn waiting(c: &Connection) -> Result<u64, SpoolError> {
    c.prepare_cached("SELECT COUNT(*) FROM bounce_outbox")
        .and_then(|mut st| st.query_row([], |r| r.get::<_, i64>(0)))
        .map(|n| n.max(0) as u64)
        .map_err(sql("counting the bounces waiting"))
}
