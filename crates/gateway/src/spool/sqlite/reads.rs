//! The read side: every query the spool answers from its read connection, as functions of
//! that connection. [`SqliteSpool`](super::SqliteSpool) runs each on a blocking thread.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use apns::{ApnsId, DeviceToken, Reason};
use rusqlite::{Connection, OptionalExtension, params};

use super::decode::{decode_id, decode_request, state, token_from_bytes};
use super::schema::{
    APP_ID, ATTEMPTS_OF, NEXT_DUE, PENDING_COUNTS, READY_DUE, READY_WAITING, REQUEST_BY_ID,
    REQUEST_WITHOUT_PAYLOAD, REQUESTS_OF_SUBMISSION, WAITING_NULL, WAITING_TIMED,
};
use super::sql;
use super::writes::TOKEN_BYTES;
use crate::reason::Cause;
use crate::spool::{
    AppPause, AttemptRecord, FeedbackEntry, KEPT_SHOWN, NotificationRecord, PendingRow,
    ReadyCursor, ReadyPage, ReadyRow, RequestId, RequestSummary, Sendable, SpoolError, State,
    StoredRequest, TokenHistory, WaitingCursor, WaitingPage, from_ms,
};

/// Requests already read in this page, by id, with their expiry.
type RequestCache = HashMap<i64, (Arc<StoredRequest>, SystemTime)>;

/// Up to `limit` of app `app`'s queued notifications that are due at `now` (ms), from `cursor`
/// on: those waiting for no time, through the pending index of that app alone, then its
/// retries whose time has come. The page's `cursor` is where the next one goes on, `None` once
/// the pass reached the end.
pub(super) fn ready_page(
    c: &Connection,
    app: &str,
    cursor: ReadyCursor,
    now: i64,
    limit: usize,
) -> Result<ReadyPage, SpoolError> {
    let Some(app) = app_id(c, app)? else {
        return Ok(ReadyPage::default());
    };
    let mut cache = RequestCache::new();
    let mut rows = Vec::new();
    let mut scanned = 0;
    let mut due_from = (i64::MIN, Vec::new());
    if let ReadyCursor::Start | ReadyCursor::Waiting(_) = cursor {
        let after = match cursor {
            ReadyCursor::Waiting(id) => id.as_uuid().as_bytes().to_vec(),
            _ => Vec::new(),
        };
        let query = (READY_WAITING, "paging ready notifications");
        let args = params![app, after, limit as i64];
        let (n, last) = read_ready(c, query, args, &mut cache, &mut rows)?;
        scanned += n;
        if n == limit {
            return Ok(ReadyPage {
                rows,
                cursor: last,
                scanned,
            });
        }
    } else if let ReadyCursor::Due(t, id) = cursor {
        due_from = (t, id.as_uuid().as_bytes().to_vec());
    }
    let left = limit - scanned;
    let query = (READY_DUE, "paging due retries");
    let args = params![app, now, due_from.0, due_from.1, left as i64];
    let (n, last) = read_ready(c, query, args, &mut cache, &mut rows)?;
    scanned += n;
    let cursor = (n == left).then_some(last).flatten();
    Ok(ReadyPage {
        rows,
        cursor,
        scanned,
    })
}

/// Runs one of the ready queries (`query`, described as `what`, with `args`) and reads its
/// rows into `out`, reading and decoding each request once (`cache` by request id). Answers
/// how many rows the query gave and the position after the last of them whose id could be
/// read, so that paging goes on past rows that cannot be sent: a notification whose request is
/// missing, or one that does not decode, is skipped with a warning — never the end of the
/// page, nor an error that would stop every later page at it.
fn read_ready(
    c: &Connection,
    (query, what): (&str, &'static str),
    args: &[&dyn rusqlite::ToSql],
    cache: &mut RequestCache,
    out: &mut Vec<ReadyRow>,
) -> Result<(usize, Option<ReadyCursor>), SpoolError> {
    let mut st = c.prepare_cached(query).map_err(sql(what))?;
    let mut rows = st.query(args).map_err(sql(what))?;
    let (mut scanned, mut last) = (0, None);
    while let Some(r) = rows.next().map_err(sql(what))? {
        scanned += 1;
        let id = r
            .get_ref(0)
            .ok()
            .and_then(|v| v.as_blob().ok())
            .and_then(|b| decode_id(b).ok());
        let position = id.map(|id| match r.get::<_, Option<i64>>(4).ok().flatten() {
            Some(due) => ReadyCursor::Due(due, id),
            None => ReadyCursor::Waiting(id),
        });
        last = position.or(last);
        match ready_row(c, r, position.unwrap_or_default(), cache) {
            Ok(Some(row)) => out.push(row),
            Ok(None) => {
                tracing::warn!(id = ?id, "a queued notification without its request is skipped");
            }
            Err(e) => {
                tracing::warn!(id = ?id, error = %crate::error_chain(&e), "a queued notification that cannot be read is skipped");
            }
        }
    }
    Ok((scanned, last))
}

/// One row of a ready query; `None` when its request is missing.
fn ready_row(
    c: &Connection,
    r: &rusqlite::Row<'_>,
    position: ReadyCursor,
    cache: &mut RequestCache,
) -> Result<Option<ReadyRow>, SpoolError> {
    let get = |e| SpoolError::Sql {
        what: "reading a ready row",
        source: e,
    };
    let request_id: i64 = r.get(3).map_err(get)?;
    let (request, expires_at) = match cache.get(&request_id) {
        Some((req, expires)) => (Arc::clone(req), *expires),
        None => {
            let Some((req, expires)) = read_request(c, request_id)? else {
                return Ok(None);
            };
            let req = Arc::new(req);
            cache.insert(request_id, (Arc::clone(&req), expires));
            (req, expires)
        }
    };
    let blob = |i| -> Result<&[u8], SpoolError> {
        r.get_ref(i)
            .and_then(|v| v.as_blob().map_err(rusqlite::Error::from))
            .map_err(get)
    };
    Ok(Some(ReadyRow {
        item: Sendable {
            id: decode_id(blob(0)?)?,
            token: token_from_bytes(blob(1)?)?,
            attempts: r.get(2).map_err(get)?,
            expires_at,
            request,
        },
        position,
    }))
}

/// One request by id, with its expiry.
pub(super) fn read_request(
    c: &Connection,
    id: i64,
) -> Result<Option<(StoredRequest, SystemTime)>, SpoolError> {
    read_request_by(c, id, REQUEST_BY_ID)
}

/// As [`read_request`], through `query` (`REQUEST_BY_ID`, or `REQUEST_WITHOUT_PAYLOAD` for a
/// cancel's pass, which matches on headers and times only).
fn read_request_by(
    c: &Connection,
    id: i64,
    query: &str,
) -> Result<Option<(StoredRequest, SystemTime)>, SpoolError> {
    let row = c
        .prepare_cached(query)
        .map_err(sql("reading a request"))?
        .query_row(params![id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<u8>>(3)?,
                r.get::<_, Option<String>>(4)?,
                r.get::<_, Option<String>>(5)?,
                r.get::<_, Option<i64>>(6)?,
                r.get::<_, i64>(7)?,
                (
                    r.get::<_, Option<Vec<u8>>>(8)?,
                    r.get::<_, i64>(9)?,
                    r.get::<_, Option<i64>>(10)?,
                ),
            ))
        })
        .optional()
        .map_err(sql("reading a request"))?;
    let Some((app, payload, push_type, priority, topic, collapse, exp, expires, origin)) = row
    else {
        return Ok(None);
    };
    let req = decode_request(
        app, payload, &push_type, priority, topic, collapse, exp, origin,
    )?;
    Ok(Some((req, from_ms(expires))))
}

/// Up to `limit` of app `app`'s waiting notifications from `cursor` on, with their requests
/// (`spool::cancel`): the scheduled ones, then the queued ones, each first those waiting for
/// no time and then the timed ones, through the pending index of that app alone.
pub(super) fn waiting_page(
    c: &Connection,
    app: &str,
    mut cursor: WaitingCursor,
    limit: usize,
) -> Result<WaitingPage, SpoolError> {
    let Some(app) = app_id(c, app)? else {
        return Ok(WaitingPage::default());
    };
    let what = "paging waiting notifications";
    let mut cache: HashMap<i64, Option<Arc<StoredRequest>>> = HashMap::new();
    let mut page = WaitingPage::default();
    let mut scanned = 0;
    loop {
        let state = if cursor.queued { 1 } else { 0 };
        let left = limit - scanned;
        let mut read = |st: &mut rusqlite::CachedStatement<'_>,
                        args: &[&dyn rusqlite::ToSql]|
         -> Result<(usize, Option<ReadyCursor>), SpoolError> {
            let mut rows = st.query(args).map_err(sql(what))?;
            let (mut n, mut last) = (0, None);
            while let Some(r) = rows.next().map_err(sql(what))? {
                n += 1;
                let blob: Vec<u8> = r.get(0).map_err(sql(what))?;
                let id = decode_id(&blob)?;
                let request_id: i64 = r.get(1).map_err(sql(what))?;
                last = Some(match r.get::<_, Option<i64>>(2).map_err(sql(what))? {
                    Some(t) => ReadyCursor::Due(t, id),
                    None => ReadyCursor::Waiting(id),
                });
                let request = match cache.get(&request_id) {
                    Some(req) => req.clone(),
                    None => {
                        let req = read_request_by(c, request_id, REQUEST_WITHOUT_PAYLOAD)?
                            .map(|(req, _)| Arc::new(req));
                        cache.insert(request_id, req.clone());
                        req
                    }
                };
                // A row without its request cannot be sent either: nothing to cancel.
                if let Some(req) = request {
                    page.rows.push((id, req));
                }
            }
            Ok((n, last))
        };
        let (n, last) = match cursor.at {
            ReadyCursor::Start | ReadyCursor::Waiting(_) => {
                let after = match cursor.at {
                    ReadyCursor::Waiting(id) => id.as_uuid().as_bytes().to_vec(),
                    _ => Vec::new(),
                };
                let mut st = c.prepare_cached(WAITING_NULL).map_err(sql(what))?;
                let (n, last) = read(&mut st, params![state, app, after, left as i64])?;
                if n < left {
                    // On to the timed ones of this state.
                    cursor.at = ReadyCursor::Due(i64::MIN, ApnsId::from_uuid(uuid::Uuid::nil()));
                    scanned += n;
                    continue;
                }
                (n, last)
            }
            ReadyCursor::Due(t, id) => {
                let mut st = c.prepare_cached(WAITING_TIMED).map_err(sql(what))?;
                read(
                    &mut st,
                    params![state, app, t, &id.as_uuid().as_bytes()[..], left as i64],
                )?
            }
        };
        scanned += n;
        if n == left {
            page.cursor = last.map(|at| WaitingCursor {
                queued: cursor.queued,
                at,
            });
            return Ok(page);
        }
        if cursor.queued {
            return Ok(page);
        }
        cursor = WaitingCursor {
            queued: true,
            at: ReadyCursor::Start,
        };
    }
}

/// A submission's apps and notifications still stored; `None` if none of its requests is.
pub(super) fn request_summary(
    c: &Connection,
    id: RequestId,
) -> Result<Option<RequestSummary>, SpoolError> {
    let what = "reading a submission";
    let mut st = c
        .prepare_cached(REQUESTS_OF_SUBMISSION)
        .map_err(sql(what))?;
    let mut rows = st
        .query(params![&id.as_uuid().as_bytes()[..]])
        .map_err(sql(what))?;
    let mut summary = RequestSummary::default();
    let mut found = false;
    while let Some(r) = rows.next().map_err(sql(what))? {
        found = true;
        let app: String = r.get(0).map_err(sql(what))?;
        if !summary.apps.contains(&app) {
            summary.apps.push(app);
        }
        summary.notifications += r.get::<_, i64>(1).map_err(sql(what))?.max(0) as u64;
    }
    summary.apps.sort();
    Ok(found.then_some(summary))
}

/// The apps an operator paused.
pub(super) fn app_pauses(c: &Connection) -> Result<Vec<AppPause>, SpoolError> {
    let what = "reading paused apps";
    let mut st = c
        .prepare_cached("SELECT app, since, reject FROM app_pauses ORDER BY app")
        .map_err(sql(what))?;
    let rows = st
        .query_map([], |r| {
            Ok(AppPause {
                app: r.get(0)?,
                since: from_ms(r.get(1)?),
                reject: r.get(2)?,
            })
        })
        .map_err(sql(what))?;
    rows.collect::<Result<_, _>>().map_err(sql(what))
}

/// The number of app `name`; `None` for an app that never had a notification.
fn app_id(c: &Connection, name: &str) -> Result<Option<i64>, SpoolError> {
    c.prepare_cached(APP_ID)
        .map_err(sql("reading an app's number"))?
        .query_row(params![name], |r| r.get(0))
        .optional()
        .map_err(sql("reading an app's number"))
}

/// One notification with its request's times, on the read connection.
pub(super) fn read_record(
    c: &Connection,
    id: ApnsId,
) -> Result<Option<NotificationRecord>, SpoolError> {
    let row = c
        .prepare_cached(
            "SELECT n.token, n.state, n.attempts, n.status, n.reason, r.created_at, \
             n.updated_at, r.send_at, r.expires_at, r.app, n.conn, r.rid FROM notifications n \
             JOIN requests r ON r.id = n.request_id WHERE n.id = ?1",
        )
        .map_err(sql("reading a notification"))?
        .query_row(params![&id.as_uuid().as_bytes()[..]], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, u32>(2)?,
                r.get::<_, Option<u16>>(3)?,
                r.get::<_, Option<String>>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, i64>(6)?,
                r.get::<_, Option<i64>>(7)?,
                r.get::<_, i64>(8)?,
                r.get::<_, String>(9)?,
                r.get::<_, Option<i64>>(10)?,
                r.get::<_, Option<Vec<u8>>>(11)?,
            ))
        })
        .optional()
        .map_err(sql("reading a notification"))?;
    let Some((
        token,
        st,
        attempts,
        status,
        reason,
        created,
        updated,
        send_at,
        expires,
        app,
        conn,
        rid,
    )) = row
    else {
        return Ok(None);
    };
    Ok(Some(NotificationRecord {
        id,
        request_id: rid
            .as_deref()
            .and_then(|b| uuid::Uuid::from_slice(b).ok())
            .map(crate::spool::RequestId::from_uuid),
        app,
        token: token_from_bytes(&token)?,
        state: state(st)?,
        attempts,
        status,
        reason: reason.as_deref().map(Cause::parse),
        created_at: from_ms(created),
        updated_at: from_ms(updated),
        send_at: send_at.map(from_ms),
        expires_at: from_ms(expires),
        conn: conn.map(|n| n as u64),
    }))
}

/// A notification's earlier attempts, oldest first (the last [`KEPT_SHOWN`] of them).
pub(super) fn attempts_of(c: &Connection, id: ApnsId) -> Result<Vec<AttemptRecord>, SpoolError> {
    let what = "reading a notification's attempts";
    let mut st = c.prepare_cached(ATTEMPTS_OF).map_err(sql(what))?;
    let rows = st
        .query_map(
            params![&id.as_uuid().as_bytes()[..], KEPT_SHOWN as i64],
            |r| {
                Ok(AttemptRecord {
                    at: from_ms(r.get(0)?),
                    status: r.get(1)?,
                    reason: r.get::<_, Option<String>>(2)?.as_deref().map(Cause::parse),
                    conn: r.get::<_, Option<i64>>(3)?.map(|n| n as u64),
                })
            },
        )
        .map_err(sql(what))?;
    let mut kept: Vec<AttemptRecord> = rows.collect::<Result<_, _>>().map_err(sql(what))?;
    kept.reverse();
    Ok(kept)
}

/// Up to `limit` of the last notifications of `app` to `token`, walking the newest `most`
/// notifications by id (their order of creation) from the newest: the token is compared here,
/// and only a match's request is read for its app.
pub(super) fn token_history(
    c: &Connection,
    app: &str,
    token: &DeviceToken,
    limit: usize,
    most: usize,
) -> Result<TokenHistory, SpoolError> {
    let what = "searching a token's notifications";
    let wanted = token.to_bytes(&mut [0; TOKEN_BYTES]).to_vec();
    let mut st = c
        .prepare_cached("SELECT id, token, request_id FROM notifications ORDER BY id DESC")
        .map_err(sql(what))?;
    let mut rows = st.raw_query();
    let mut apps: HashMap<i64, bool> = HashMap::new();
    let mut found = Vec::new();
    let (mut scanned, mut truncated) = (0, false);
    while let Some(r) = rows.next().map_err(sql(what))? {
        if scanned == most {
            truncated = true;
            break;
        }
        scanned += 1;
        if r.get_ref(1).map_err(sql(what))?.as_blob().ok() != Some(&wanted[..]) {
            continue;
        }
        let request: i64 = r.get(2).map_err(sql(what))?;
        let ours = match apps.get(&request) {
            Some(&ours) => ours,
            None => {
                let name: Option<String> = c
                    .prepare_cached("SELECT app FROM requests WHERE id = ?1")
                    .map_err(sql(what))?
                    .query_row(params![request], |r| r.get(0))
                    .optional()
                    .map_err(sql(what))?;
                *apps.entry(request).or_insert(name.as_deref() == Some(app))
            }
        };
        if ours {
            found.push(decode_id(&r.get::<_, Vec<u8>>(0).map_err(sql(what))?)?);
            if found.len() == limit {
                break;
            }
        }
    }
    drop(rows);
    Ok(TokenHistory {
        notifications: records(c, found)?,
        truncated,
    })
}

/// The earliest due time after `now` (ms) of app `app`'s queued notifications waiting for a
/// retry.
pub(super) fn next_due(
    c: &Connection,
    app: &str,
    now: i64,
) -> Result<Option<SystemTime>, SpoolError> {
    let Some(app) = app_id(c, app)? else {
        return Ok(None);
    };
    c.prepare_cached(NEXT_DUE)
        .map_err(sql("reading the next due time"))?
        .query_row(params![app, now], |r| r.get::<_, Option<i64>>(0))
        .map(|t| t.map(from_ms))
        .map_err(sql("reading the next due time"))
}

/// The request a notification belongs to.
pub(super) fn request_of(c: &Connection, id: ApnsId) -> Result<Option<StoredRequest>, SpoolError> {
    let request_id: Option<i64> = c
        .prepare_cached("SELECT request_id FROM notifications WHERE id = ?1")
        .map_err(sql("reading a request"))?
        .query_row(params![&id.as_uuid().as_bytes()[..]], |r| r.get(0))
        .optional()
        .map_err(sql("reading a request"))?;
    match request_id {
        Some(rid) => Ok(read_request(c, rid)?.map(|(request, _)| request)),
        None => Ok(None),
    }
}

/// Many notifications (unknown ids are left out).
pub(super) fn records(
    c: &Connection,
    ids: Vec<ApnsId>,
) -> Result<Vec<NotificationRecord>, SpoolError> {
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(r) = read_record(c, id)? {
            out.push(r);
        }
    }
    Ok(out)
}

/// Up to `limit` pending notifications with ids after `after`, in id order.
pub(super) fn pending_page(
    c: &Connection,
    after: Option<ApnsId>,
    limit: usize,
) -> Result<Vec<PendingRow>, SpoolError> {
    let after = after.map_or_else(Vec::new, |id| id.as_uuid().as_bytes().to_vec());
    let what = "paging pending notifications";
    let mut st = c
        .prepare_cached(
            "SELECT n.id, n.request_id, r.app, n.token, n.state, n.attempts, n.due_at \
             FROM notifications n JOIN requests r ON r.id = n.request_id \
             WHERE n.id > ?1 AND n.state < 3 ORDER BY n.id LIMIT ?2",
        )
        .map_err(sql(what))?;
    let rows = st
        .query_map(params![after, limit as i64], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Vec<u8>>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, u32>(5)?,
                r.get::<_, Option<i64>>(6)?,
            ))
        })
        .map_err(sql(what))?;
    let mut out = Vec::with_capacity(limit.min(10_000));
    for row in rows {
        let (id, request_id, app, token, st, attempts, due) = row.map_err(sql(what))?;
        out.push(PendingRow {
            id: decode_id(&id)?,
            request_id,
            app,
            token: token_from_bytes(&token)?,
            state: state(st)?,
            attempts,
            due_at: due.map(from_ms),
        });
    }
    Ok(out)
}

/// Whether `token` is registered dead for `app`, with its reason and time.
pub(super) fn dead_token(
    c: &Connection,
    app: &str,
    token: &DeviceToken,
) -> Result<Option<(Reason, SystemTime)>, SpoolError> {
    c.prepare_cached("SELECT reason, since FROM dead_tokens WHERE app = ?1 AND token = ?2")
        .map_err(sql("reading a dead token"))?
        .query_row(params![app, token.to_bytes(&mut [0; TOKEN_BYTES])], |r| {
            Ok((Reason::parse(&r.get::<_, String>(0)?), from_ms(r.get(1)?)))
        })
        .optional()
        .map_err(sql("reading a dead token"))
}

/// Every registered dead token (app, token).
pub(super) fn all_dead_tokens(c: &Connection) -> Result<Vec<(String, DeviceToken)>, SpoolError> {
    let mut st = c
        .prepare_cached("SELECT app, token FROM dead_tokens")
        .map_err(sql("reading dead tokens"))?;
    let rows = st
        .query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
        })
        .map_err(sql("reading dead tokens"))?;
    let mut out = Vec::new();
    for row in rows {
        let (app, t) = row.map_err(sql("reading dead tokens"))?;
        out.push((app, token_from_bytes(&t)?));
    }
    Ok(out)
}

/// Dead tokens of `app` registered at or after `since` (ms), oldest first.
pub(super) fn feedback(
    c: &Connection,
    app: &str,
    since: i64,
    limit: usize,
) -> Result<Vec<FeedbackEntry>, SpoolError> {
    let mut st = c
        .prepare_cached(
            "SELECT token, reason, since FROM dead_tokens WHERE app = ?1 AND since >= ?2 \
             ORDER BY since, token LIMIT ?3",
        )
        .map_err(sql("listing dead tokens"))?;
    let rows = st
        .query_map(params![app, since, limit as i64], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .map_err(sql("listing dead tokens"))?;
    let mut out = Vec::new();
    for row in rows {
        let (token, reason, since) = row.map_err(sql("listing dead tokens"))?;
        out.push(FeedbackEntry {
            token: token_from_bytes(&token)?,
            reason: Reason::parse(&reason),
            since: from_ms(since),
        });
    }
    Ok(out)
}

/// Notifications by state: every one (`pending_only` false), or those not yet final, read
/// through the index of pending rows.
pub(super) fn counts(c: &Connection, pending_only: bool) -> Result<Vec<(State, u64)>, SpoolError> {
    let query = if pending_only {
        PENDING_COUNTS
    } else {
        "SELECT state, COUNT(*) FROM notifications GROUP BY state"
    };
    let mut st = c
        .prepare_cached(query)
        .map_err(sql("counting notifications"))?;
    let rows = st
        .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))
        .map_err(sql("counting notifications"))?;
    let mut out = Vec::new();
    for row in rows {
        let (s, n) = row.map_err(sql("counting notifications"))?;
        out.push((state(s)?, n as u64));
    }
    Ok(out)
}

/// Notifications by app and state.
pub(super) fn counts_by_app(c: &Connection) -> Result<Vec<(String, State, u64)>, SpoolError> {
    let mut st = c
        .prepare_cached(
            "SELECT r.app, n.state, COUNT(*) FROM notifications n \
             JOIN requests r ON r.id = n.request_id GROUP BY r.app, n.state",
        )
        .map_err(sql("counting notifications"))?;
    let rows = st
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .map_err(sql("counting notifications"))?;
    let mut out = Vec::new();
    for row in rows {
        let (app, s, n) = row.map_err(sql("counting notifications"))?;
        out.push((app, state(s)?, n as u64));
    }
    Ok(out)
}

/// The ids a remembered key with the same fingerprint was answered with.
pub(super) fn replay_of(
    c: &Connection,
    key: &crate::spool::IdempotencyKey,
    window: std::time::Duration,
) -> Result<Option<Vec<ApnsId>>, SpoolError> {
    use crate::spool::idempotency::{Seen, judge};
    let row = c
        .prepare_cached(super::schema::KEY_SEEN)
        .and_then(|mut st| {
            st.query_row(rusqlite::params![key.scope, key.key], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .optional()
        })
        .map_err(sql("reading an idempotency key"))?;
    let Some((fingerprint, ids, created_at)) = row else {
        return Ok(None);
    };
    let now = crate::spool::to_ms(std::time::SystemTime::now());
    Ok(
        match judge(key, &fingerprint, &ids, created_at, now, window)? {
            Seen::Replay(ids) => Some(ids),
            Seen::Reused | Seen::Expired => None,
        },
    )
}
