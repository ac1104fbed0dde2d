//! The PostgreSQL spool's queries and the decoding of their rows (a value that does not decode
//! is [`SpoolError::Corrupt`], never a panic).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use apns::{ApnsId, DeviceToken, Reason};
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::pg;
use super::schema::{
    NEXT_DUE, READY_DUE, READY_WAITING, REQUESTS_BY_ID, REQUESTS_WITHOUT_PAYLOAD, WAITING_NULL,
    WAITING_TIMED,
};
use crate::reason::Cause;
use crate::spool::{
    AppPause, AttemptRecord, FeedbackEntry, KEPT_SHOWN, NotificationRecord, PendingRow,
    ReadyCursor, ReadyPage, ReadyRow, RequestId, RequestSummary, Sendable, SpoolError, State,
    StoredRequest, TokenHistory, WaitingCursor, WaitingPage, from_ms,
};

type Client = deadpool_postgres::Object;

/// A token as stored: its bytes.
pub(super) fn token_bytes(t: &DeviceToken) -> Vec<u8> {
    t.to_bytes(&mut [0; apns::notification::MAX_TOKEN_HEX / 2])
        .to_vec()
}

fn token(b: &[u8]) -> Result<DeviceToken, SpoolError> {
    DeviceToken::from_bytes(b).map_err(|_| SpoolError::Corrupt("stored token"))
}

fn state(n: i16) -> Result<State, SpoolError> {
    State::from_i64(n.into()).ok_or(SpoolError::Corrupt("unknown state"))
}

/// Up to `limit` of `app`'s queued notifications due at `now` (ms), from `cursor` on: those
/// waiting for no time, then the retries whose time has come (the SQLite spool's order).
pub(super) async fn ready_page(
    c: &Client,
    target: &str,
    app: &str,
    cursor: ReadyCursor,
    now: i64,
    limit: usize,
    me: uuid::Uuid,
) -> Result<ReadyPage, SpoolError> {
    let mut found: Vec<Row> = Vec::new();
    let mut scanned = 0;
    let mut due_from = (i64::MIN, uuid::Uuid::nil());
    if let ReadyCursor::Start | ReadyCursor::Waiting(_) = cursor {
        let after = match cursor {
            ReadyCursor::Waiting(id) => *id.as_uuid(),
            _ => uuid::Uuid::nil(),
        };
        let st = c
            .prepare_cached(READY_WAITING)
            .await
            .map_err(pg(target, "paging ready notifications"))?;
        let rows = c
            .query(&st, &[&app, &after, &(limit as i64), &me, &now])
            .await
            .map_err(pg(target, "paging ready notifications"))?;
        scanned += rows.len();
        let last = rows.last().map(position);
        found.extend(rows);
        if scanned == limit {
            return page(c, target, found, last, scanned).await;
        }
    } else if let ReadyCursor::Due(t, id) = cursor {
        due_from = (t, *id.as_uuid());
    }
    let left = limit - scanned;
    let st = c
        .prepare_cached(READY_DUE)
        .await
        .map_err(pg(target, "paging due retries"))?;
    let rows = c
        .query(
            &st,
            &[&app, &now, &due_from.0, &due_from.1, &(left as i64), &me],
        )
        .await
        .map_err(pg(target, "paging due retries"))?;
    let n = rows.len();
    scanned += n;
    let cursor = if n == left {
        rows.last().map(position)
    } else {
        None
    };
    found.extend(rows);
    page(c, target, found, cursor, scanned).await
}

/// Where a pass goes on after this row.
fn position(r: &Row) -> ReadyCursor {
    let id = ApnsId::from_uuid(r.get(0));
    match r.get::<_, Option<i64>>(4) {
        Some(due) => ReadyCursor::Due(due, id),
        None => ReadyCursor::Waiting(id),
    }
}

/// The rows of a page with their requests, each read once; a row whose request is missing or
/// that does not decode is skipped with a warning, never the end of the page.
async fn page(
    c: &Client,
    target: &str,
    rows: Vec<Row>,
    cursor: Option<ReadyCursor>,
    scanned: usize,
) -> Result<ReadyPage, SpoolError> {
    let mut ids: Vec<i64> = rows.iter().map(|r| r.get::<_, i64>(3)).collect();
    ids.sort_unstable();
    ids.dedup();
    let requests = requests(c, target, &ids).await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let id = ApnsId::from_uuid(r.get(0));
        let Some((request, expires_at)) = requests.get(&r.get::<_, i64>(3)) else {
            tracing::warn!(id = ?id, "a queued notification without its request is skipped");
            continue;
        };
        match token(r.get::<_, &[u8]>(1)) {
            Ok(token) => out.push(ReadyRow {
                item: Sendable {
                    id,
                    token,
                    attempts: r.get::<_, i32>(2) as u32,
                    expires_at: *expires_at,
                    request: Arc::clone(request),
                },
                position: position(r),
            }),
            Err(e) => {
                tracing::warn!(id = ?id, error = %crate::error_chain(&e), "a queued notification that cannot be read is skipped");
            }
        }
    }
    Ok(ReadyPage {
        rows: out,
        cursor,
        scanned,
    })
}

/// Requests by id, with their expiry; those that do not decode are left out (with a warning).
async fn requests(
    c: &Client,
    target: &str,
    ids: &[i64],
) -> Result<HashMap<i64, (Arc<StoredRequest>, SystemTime)>, SpoolError> {
    requests_by(c, target, ids, REQUESTS_BY_ID).await
}

/// As [`requests`], through `query` (`REQUESTS_BY_ID`, or `REQUESTS_WITHOUT_PAYLOAD` for a
/// cancel's pass, which matches on headers and times only).
async fn requests_by(
    c: &Client,
    target: &str,
    ids: &[i64],
    query: &str,
) -> Result<HashMap<i64, (Arc<StoredRequest>, SystemTime)>, SpoolError> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let st = c
        .prepare_cached(query)
        .await
        .map_err(pg(target, "reading requests"))?;
    let rows = c
        .query(&st, &[&ids])
        .await
        .map_err(pg(target, "reading requests"))?;
    let mut out = HashMap::with_capacity(rows.len());
    for r in rows {
        let id: i64 = r.get(0);
        match decode_request(&r) {
            Ok(req) => {
                out.insert(id, (Arc::new(req), from_ms(r.get(8))));
            }
            Err(e) => {
                tracing::warn!(request = id, error = %crate::error_chain(&e), "a stored request that cannot be read is skipped");
            }
        }
    }
    Ok(out)
}

/// Columns 1..=7 of a request row (app, payload, push type, priority, topic, collapse id,
/// expiration header), 9 (its submission), 10 (its time) and 11 (its supersede key) back
/// into values.
fn decode_request(r: &Row) -> Result<StoredRequest, SpoolError> {
    let bad = |_| SpoolError::Corrupt("stored request headers");
    Ok(StoredRequest {
        request_id: r
            .get::<_, Option<uuid::Uuid>>(9)
            .map(crate::spool::RequestId::from_uuid),
        created_at: from_ms(r.get(10)),
        app: r.get(1),
        payload: bytes::Bytes::from(r.get::<_, Vec<u8>>(2)),
        push_type: apns::PushType::parse(r.get(3)).map_err(bad)?,
        priority: r
            .get::<_, Option<i16>>(4)
            .map(|p| apns::Priority::from_u8(p as u8))
            .transpose()
            .map_err(bad)?,
        topic: r
            .get::<_, Option<&str>>(5)
            .map(apns::Topic::parse)
            .transpose()
            .map_err(bad)?,
        collapse_id: crate::spool::stored_collapse_id(r.get::<_, Option<&str>>(6)),
        apns_expiration: r
            .get::<_, Option<i64>>(7)
            .map(|e| apns::Expiration::from_unix(e.max(0) as u64)),
        supersede: r
            .get::<_, Option<i64>>(11)
            .map(crate::spool::SupersedeKey::from_i64),
    })
}

pub(super) async fn next_due(
    c: &Client,
    target: &str,
    app: &str,
    now: i64,
    me: uuid::Uuid,
) -> Result<Option<SystemTime>, SpoolError> {
    let st = c
        .prepare_cached(NEXT_DUE)
        .await
        .map_err(pg(target, "reading the next due time"))?;
    let row = c
        .query_one(&st, &[&app, &now, &me])
        .await
        .map_err(pg(target, "reading the next due time"))?;
    Ok(row.get::<_, Option<i64>>(0).map(from_ms))
}

pub(super) async fn request_of(
    c: &Client,
    target: &str,
    id: ApnsId,
) -> Result<Option<StoredRequest>, SpoolError> {
    let row = c
        .query_opt(
            "SELECT r.id, r.app, r.payload, r.push_type, r.priority, r.topic, r.collapse_id, \
             r.apns_expiration, r.expires_at, r.rid, r.created_at, r.skey FROM notifications n \
             JOIN requests r ON r.id = n.request_id WHERE n.id = $1",
            &[id.as_uuid()],
        )
        .await
        .map_err(pg(target, "reading a request"))?;
    row.as_ref().map(decode_request).transpose()
}

/// Notifications by id, with their requests' times (unknown ids are left out); on a client or
/// in a transaction.
pub(super) async fn records(
    c: &impl GenericClient,
    target: &str,
    ids: &[ApnsId],
) -> Result<Vec<NotificationRecord>, SpoolError> {
    let ids: Vec<uuid::Uuid> = ids.iter().map(|i| *i.as_uuid()).collect();
    let st = c
        .prepare_cached(
            "SELECT n.id, n.token, n.state, n.attempts, n.status, n.reason, r.created_at, \
             n.updated_at, r.send_at, r.expires_at, r.app, n.conn, r.rid FROM notifications n \
             JOIN requests r ON r.id = n.request_id WHERE n.id = ANY($1)",
        )
        .await
        .map_err(pg(target, "reading notifications"))?;
    let rows = c
        .query(&st, &[&ids])
        .await
        .map_err(pg(target, "reading notifications"))?;
    let mut by_id = HashMap::with_capacity(rows.len());
    for r in rows {
        let id = ApnsId::from_uuid(r.get(0));
        by_id.insert(
            id,
            NotificationRecord {
                id,
                request_id: r
                    .get::<_, Option<uuid::Uuid>>(12)
                    .map(crate::spool::RequestId::from_uuid),
                token: token(r.get::<_, &[u8]>(1))?,
                state: state(r.get(2))?,
                attempts: r.get::<_, i32>(3) as u32,
                status: r.get::<_, Option<i32>>(4).map(|s| s as u16),
                reason: r.get::<_, Option<&str>>(5).map(Cause::parse),
                created_at: from_ms(r.get(6)),
                updated_at: from_ms(r.get(7)),
                send_at: r.get::<_, Option<i64>>(8).map(from_ms),
                expires_at: from_ms(r.get(9)),
                app: r.get(10),
                conn: r.get::<_, Option<i64>>(11).map(|n| n as u64),
            },
        );
    }
    // In the order asked.
    Ok(ids
        .iter()
        .filter_map(|id| by_id.get(&ApnsId::from_uuid(*id)).cloned())
        .collect())
}

/// A notification's earlier attempts, oldest first (the last [`KEPT_SHOWN`] of them).
pub(super) async fn attempts_of(
    c: &impl GenericClient,
    target: &str,
    id: ApnsId,
) -> Result<Vec<AttemptRecord>, SpoolError> {
    let rows = c
        .query(
            "SELECT at, status, reason, conn FROM attempts WHERE id = $1 ORDER BY seq DESC \
             LIMIT $2",
            &[id.as_uuid(), &(KEPT_SHOWN as i64)],
        )
        .await
        .map_err(pg(target, "reading a notification's attempts"))?;
    Ok(rows
        .iter()
        .rev()
        .map(|r| AttemptRecord {
            at: from_ms(r.get(0)),
            status: r.get::<_, Option<i32>>(1).map(|s| s as u16),
            reason: r.get::<_, Option<&str>>(2).map(Cause::parse),
            conn: r.get::<_, Option<i64>>(3).map(|n| n as u64),
        })
        .collect())
}

/// A notification and its earlier attempts, read in one snapshot.
pub(super) async fn history(
    c: &mut Client,
    target: &str,
    id: ApnsId,
) -> Result<Option<(NotificationRecord, Vec<AttemptRecord>)>, SpoolError> {
    let what = "reading a history";
    let tx = c
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(pg(target, what))?;
    let Some(record) = records(&tx, target, &[id]).await?.pop() else {
        return Ok(None);
    };
    let earlier = attempts_of(&tx, target, id).await?;
    tx.commit().await.map_err(pg(target, what))?;
    Ok(Some((record, earlier)))
}

/// Up to `limit` of the last notifications of `app` to `token`, among the newest `most`
/// (walked backwards along the primary key: ids are time-ordered), and whether older ones went
/// unsearched. Within a statement timeout: a search must not hold its connection for long.
pub(super) async fn token_history(
    c: &mut Client,
    target: &str,
    app: &str,
    token: &DeviceToken,
    limit: usize,
    most: usize,
) -> Result<TokenHistory, SpoolError> {
    let what = "searching a token's notifications";
    let most = most as i64;
    let tx = c
        .build_transaction()
        .read_only(true)
        .start()
        .await
        .map_err(pg(target, what))?;
    tx.batch_execute("SET LOCAL statement_timeout = '10s'")
        .await
        .map_err(pg(target, what))?;
    let rows = tx
        .query(
            "SELECT id FROM (SELECT id, app, token FROM notifications ORDER BY id DESC LIMIT $1) \
             recent WHERE token = $2 AND app = $3 ORDER BY id DESC LIMIT $4",
            &[&most, &token_bytes(token), &app, &(limit as i64)],
        )
        .await
        .map_err(pg(target, what))?;
    let ids: Vec<ApnsId> = rows.iter().map(|r| ApnsId::from_uuid(r.get(0))).collect();
    // Fewer than asked for: were there older notifications the search did not reach? (An
    // index-only walk of the same entries.)
    let truncated = ids.len() < limit
        && tx
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM notifications ORDER BY id DESC OFFSET $1)",
                &[&most],
            )
            .await
            .map_err(pg(target, what))?
            .get::<_, bool>(0);
    let notifications = records(&tx, target, &ids).await?;
    tx.commit().await.map_err(pg(target, what))?;
    Ok(TokenHistory {
        notifications,
        truncated,
    })
}

pub(super) async fn pending_page(
    c: &Client,
    target: &str,
    after: Option<ApnsId>,
    limit: usize,
) -> Result<Vec<PendingRow>, SpoolError> {
    let after = after.map_or_else(uuid::Uuid::nil, |id| *id.as_uuid());
    let rows = c
        .query(
            "SELECT id, request_id, app, token, state, attempts, due_at FROM notifications \
             WHERE id > $1 AND state < 3 ORDER BY id LIMIT $2",
            &[&after, &(limit as i64)],
        )
        .await
        .map_err(pg(target, "paging pending notifications"))?;
    rows.iter()
        .map(|r| {
            Ok(PendingRow {
                id: ApnsId::from_uuid(r.get(0)),
                request_id: r.get(1),
                app: r.get(2),
                token: token(r.get::<_, &[u8]>(3))?,
                state: state(r.get(4))?,
                attempts: r.get::<_, i32>(5) as u32,
                due_at: r.get::<_, Option<i64>>(6).map(from_ms),
            })
        })
        .collect()
}

pub(super) async fn dead_token(
    c: &Client,
    target: &str,
    app: &str,
    t: &DeviceToken,
) -> Result<Option<(Reason, SystemTime)>, SpoolError> {
    let row = c
        .query_opt(
            "SELECT reason, since FROM dead_tokens WHERE app = $1 AND token = $2",
            &[&app, &token_bytes(t)],
        )
        .await
        .map_err(pg(target, "reading a dead token"))?;
    Ok(row.map(|r| (Reason::parse(r.get(0)), from_ms(r.get(1)))))
}

pub(super) async fn all_dead_tokens(
    c: &Client,
    target: &str,
) -> Result<Vec<(String, DeviceToken)>, SpoolError> {
    let rows = c
        .query("SELECT app, token FROM dead_tokens", &[])
        .await
        .map_err(pg(target, "reading dead tokens"))?;
    rows.iter()
        .map(|r| Ok((r.get(0), token(r.get::<_, &[u8]>(1))?)))
        .collect()
}

pub(super) async fn feedback(
    c: &Client,
    target: &str,
    app: &str,
    since: i64,
    limit: usize,
) -> Result<Vec<FeedbackEntry>, SpoolError> {
    let rows = c
        .query(
            "SELECT token, reason, since FROM dead_tokens WHERE app = $1 AND since >= $2 \
             ORDER BY since, token LIMIT $3",
            &[&app, &since, &(limit as i64)],
        )
        .await
        .map_err(pg(target, "listing dead tokens"))?;
    rows.iter()
        .map(|r| {
            Ok(FeedbackEntry {
                token: token(r.get::<_, &[u8]>(0))?,
                reason: Reason::parse(r.get(1)),
                since: from_ms(r.get(2)),
            })
        })
        .collect()
}

/// Notifications by state: all, or those not yet final (through the pending index).
pub(super) async fn counts(
    c: &Client,
    target: &str,
    pending_only: bool,
) -> Result<Vec<(State, u64)>, SpoolError> {
    let query = if pending_only {
        "SELECT state, count(*) FROM notifications WHERE state < 3 GROUP BY state"
    } else {
        "SELECT state, count(*) FROM notifications GROUP BY state"
    };
    let rows = c
        .query(query, &[])
        .await
        .map_err(pg(target, "counting notifications"))?;
    rows.iter()
        .map(|r| Ok((state(r.get(0))?, r.get::<_, i64>(1) as u64)))
        .collect()
}

pub(super) async fn counts_by_app(
    c: &Client,
    target: &str,
) -> Result<Vec<(String, State, u64)>, SpoolError> {
    let rows = c
        .query(
            "SELECT app, state, count(*) FROM notifications GROUP BY app, state",
            &[],
        )
        .await
        .map_err(pg(target, "counting notifications"))?;
    rows.iter()
        .map(|r| Ok((r.get(0), state(r.get(1))?, r.get::<_, i64>(2) as u64)))
        .collect()
}

/// Up to `limit` of `app`'s waiting notifications from `cursor` on, with their requests: the
/// SQLite spool's pass (`sqlite::reads::waiting_page`), whoever holds them.
pub(super) async fn waiting_page(
    c: &Client,
    target: &str,
    app: &str,
    mut cursor: WaitingCursor,
    limit: usize,
) -> Result<WaitingPage, SpoolError> {
    let what = "paging waiting notifications";
    let mut found: Vec<(ApnsId, i64)> = Vec::new();
    let mut next = None;
    loop {
        let state: i16 = if cursor.queued { 1 } else { 0 };
        let left = (limit - found.len()) as i64;
        let timed = matches!(cursor.at, ReadyCursor::Due(..));
        let rows = match cursor.at {
            ReadyCursor::Start | ReadyCursor::Waiting(_) => {
                let after = match cursor.at {
                    ReadyCursor::Waiting(id) => *id.as_uuid(),
                    _ => uuid::Uuid::nil(),
                };
                let st = c
                    .prepare_cached(WAITING_NULL)
                    .await
                    .map_err(pg(target, what))?;
                c.query(&st, &[&state, &app, &after, &left])
                    .await
                    .map_err(pg(target, what))?
            }
            ReadyCursor::Due(t, id) => {
                let st = c
                    .prepare_cached(WAITING_TIMED)
                    .await
                    .map_err(pg(target, what))?;
                c.query(&st, &[&state, &app, &t, id.as_uuid(), &left])
                    .await
                    .map_err(pg(target, what))?
            }
        };
        let n = rows.len() as i64;
        let mut last = None;
        for r in rows {
            let id = ApnsId::from_uuid(r.get(0));
            last = Some(match r.get::<_, Option<i64>>(2) {
                Some(t) => ReadyCursor::Due(t, id),
                None => ReadyCursor::Waiting(id),
            });
            found.push((id, r.get(1)));
        }
        if n == left {
            next = last.map(|at| WaitingCursor {
                queued: cursor.queued,
                at,
            });
            break;
        }
        cursor = match (timed, cursor.queued) {
            (false, q) => WaitingCursor {
                queued: q,
                at: ReadyCursor::Due(i64::MIN, ApnsId::from_uuid(uuid::Uuid::nil())),
            },
            (true, false) => WaitingCursor {
                queued: true,
                at: ReadyCursor::Start,
            },
            (true, true) => break,
        };
    }
    let mut ids: Vec<i64> = found.iter().map(|(_, r)| *r).collect();
    ids.sort_unstable();
    ids.dedup();
    let requests = requests_by(c, target, &ids, REQUESTS_WITHOUT_PAYLOAD).await?;
    Ok(WaitingPage {
        rows: found
            .into_iter()
            .filter_map(|(id, r)| requests.get(&r).map(|(req, _)| (id, Arc::clone(req))))
            .collect(),
        cursor: next,
    })
}

/// A submission's apps and notifications still stored.
pub(super) async fn request_summary(
    c: &Client,
    target: &str,
    id: RequestId,
) -> Result<Option<RequestSummary>, SpoolError> {
    let rows = c
        .query(
            "SELECT app, remaining FROM requests WHERE rid = $1",
            &[id.as_uuid()],
        )
        .await
        .map_err(pg(target, "reading a submission"))?;
    if rows.is_empty() {
        return Ok(None);
    }
    let mut summary = RequestSummary::default();
    for r in rows {
        let app: String = r.get(0);
        if !summary.apps.contains(&app) {
            summary.apps.push(app);
        }
        summary.notifications += r.get::<_, i32>(1).max(0) as u64;
    }
    summary.apps.sort();
    Ok(Some(summary))
}

/// The apps an operator paused.
pub(super) async fn app_pauses(c: &Client, target: &str) -> Result<Vec<AppPause>, SpoolError> {
    let rows = c
        .query(
            "SELECT app, since, reject FROM app_pauses ORDER BY app",
            &[],
        )
        .await
        .map_err(pg(target, "reading paused apps"))?;
    Ok(rows
        .iter()
        .map(|r| AppPause {
            app: r.get(0),
            since: from_ms(r.get(1)),
            reject: r.get(2),
        })
        .collect())
}
