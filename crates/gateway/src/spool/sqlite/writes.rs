//! What each writer command writes, inside the transaction the writer opened for its group.
//! Nothing here commits: the writer commits the group, or rolls it back, as a whole.

use apns::ApnsId;
use rusqlite::{OptionalExtension, Transaction, params};

use super::decode::id_from_bytes;
use super::schema::{
    APP_ID, APP_IDS, ATTEMPT_KEPT, ATTEMPTS_BELOW, ATTEMPTS_FORGET, CANCEL, CLAIM_DUE, COMPLETE,
    KEY_REMEMBER, KEY_SEEN, KEYS_FORGET, PRUNE_FINISHED, REQUEST_GONE, REQUEST_LOSES,
    REQUEUE_IN_FLIGHT, SUPERSEDE, SUPERSEDE_FIND,
};
use super::writer::{Command, Done};
use crate::spool::idempotency::{self, IdempotencyKey, Seen};
use crate::spool::{Completion, DeadToken, NewRequest, Replaced, State, Supersede, to_ms};

/// One command's writes.
pub(super) fn apply(
    tx: &Transaction<'_>,
    c: &Command,
    now: i64,
    current: u64,
    max_pending: u64,
    window: std::time::Duration,
) -> Result<Done, rusqlite::Error> {
    Ok(match c {
        Command::Enqueue { batch, key, .. } => {
            // A replay is answered even when the spool is full: it stores nothing.
            if let Some(k) = key {
                match seen(tx, k, now, window)? {
                    Some(Seen::Replay(ids)) => return Ok(Done::Replayed(ids)),
                    Some(Seen::Reused) => return Ok(Done::KeyReused),
                    Some(Seen::Expired) | None => {}
                }
            }
            let rows: u64 = batch.iter().map(|r| r.len() as u64).sum();
            if current + rows > max_pending {
                return Ok(Done::Full(current));
            }
            let replaced = insert_batch(tx, batch, now)?;
            if let Some(k) = key {
                tx.prepare_cached(KEY_REMEMBER)?.execute(params![
                    k.scope,
                    k.key,
                    &k.fingerprint[..],
                    idempotency::ids_blob(batch),
                    now
                ])?;
            }
            Done::Enqueued(rows, replaced)
        }
        Command::ClaimDue { now, limit, .. } => Done::Ids(claim_due(tx, to_ms(*now), *limit)?),
        Command::Flush { .. } | Command::Stop { .. } => Done::Unit(0),
        Command::Probe { .. } => {
            tx.prepare_cached(
                "INSERT INTO health (id, checked_at) VALUES (1, ?1) \
                 ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at",
            )?
            .execute(params![now])?;
            Done::Unit(0)
        }
        Command::Complete { done, dead, .. } => {
            for d in dead {
                register_dead(tx, d)?;
            }
            Done::Unit(complete(tx, done, now)?)
        }
        Command::DeadToken { dead, .. } => {
            register_dead(tx, dead)?;
            Done::Unit(0)
        }
        Command::Prune { before, limit, .. } => {
            let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
            let keys = tx
                .prepare_cached(KEYS_FORGET)?
                .execute(params![now.saturating_sub(window_ms), *limit as i64])?;
            Done::Count(prune(tx, to_ms(*before), *limit)? + keys)
        }
        Command::RequeueInFlight { .. } => Done::Count(requeue_in_flight(tx, now)?),
        Command::SettleBounce {
            origin, ids, how, ..
        } => {
            super::bounces::settle(tx, *origin, ids, *how)?;
            Done::Unit(0)
        }
        Command::CancelWaiting { app, ids, .. } => Done::Cancelled(cancel(tx, app, ids, now)?),
        Command::SetPause { app, pause, .. } => Done::Flag(match pause {
            Some(p) => {
                tx.prepare_cached(
                    "INSERT INTO app_pauses (app, since, reject) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (app) DO UPDATE SET reject = excluded.reject \
                     WHERE reject <> excluded.reject",
                )?
                .execute(params![app, to_ms(p.since), p.reject])?
                    > 0
            }
            None => {
                tx.prepare_cached("DELETE FROM app_pauses WHERE app = ?1")?
                    .execute(params![app])?
                    > 0
            }
        }),
        Command::ClearDeadToken { app, token, .. } => Done::Flag(
            tx.prepare_cached("DELETE FROM dead_tokens WHERE app = ?1 AND token = ?2")?
                .execute(params![app, token.to_bytes(&mut [0; TOKEN_BYTES])])?
                > 0,
        ),
    })
}

/// Cancels those of `ids` that are `app`'s and still wait (`spool::cancel`). Answers the ids
/// cancelled.
fn cancel(
    tx: &Transaction<'_>,
    app: &str,
    ids: &[ApnsId],
    now: i64,
) -> Result<Vec<ApnsId>, rusqlite::Error> {
    let Some(app) = tx
        .prepare_cached(APP_ID)?
        .query_row(params![app], |r| r.get::<_, i64>(0))
        .optional()?
    else {
        return Ok(Vec::new());
    };
    let mut cancel = tx.prepare_cached(CANCEL)?;
    let mut done = Vec::new();
    for id in ids {
        let key = &id.as_uuid().as_bytes()[..];
        if cancel.execute(params![key, app, now])? > 0 {
            done.push(*id);
        }
    }
    Ok(done)
}

/// What the spool knows of `key`, judged at `now`.
fn seen(
    tx: &Transaction<'_>,
    key: &IdempotencyKey,
    now: i64,
    window: std::time::Duration,
) -> Result<Option<Seen>, rusqlite::Error> {
    let row = tx
        .prepare_cached(KEY_SEEN)?
        .query_row(params![key.scope, key.key], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .optional()?;
    row.map(|(fingerprint, ids, created_at)| {
        idempotency::judge(key, &fingerprint, &ids, created_at, now, window).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Blob, Box::new(e))
        })
    })
    .transpose()
}

/// Room for the bytes of any token (`DeviceToken::to_bytes` writes into `[0; TOKEN_BYTES]`).
pub(super) const TOKEN_BYTES: usize = apns::notification::MAX_TOKEN_HEX / 2;

/// Stores `batch`; answers what its requests superseded, by the request's index.
fn insert_batch(
    tx: &Transaction<'_>,
    batch: &[NewRequest],
    now: i64,
) -> Result<Vec<(usize, Replaced)>, rusqlite::Error> {
    let mut req = tx.prepare_cached(
        "INSERT INTO requests (app, payload, push_type, priority, topic, collapse_id, \
         apns_expiration, send_at, expires_at, created_at, remaining, rid, skey) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?;
    let mut note = tx.prepare_cached(
        "INSERT INTO notifications (id, request_id, app, token, state, attempts, due_at, \
         updated_at, skey) VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6, ?7, ?8)",
    )?;
    let mut replaced = Vec::new();
    let mut app_id = tx.prepare_cached(APP_ID)?;
    let mut new_app = tx.prepare_cached("INSERT INTO apps (name) VALUES (?1)")?;
    let bounces = batch.iter().any(|r| r.bounce.is_some());
    let mut request_ids = Vec::new();
    for (i, r) in batch.iter().enumerate() {
        // Numbered in the same transaction: a rollback takes a new app's number with it.
        let app = match app_id
            .query_row(params![r.app], |row| row.get::<_, i64>(0))
            .optional()?
        {
            Some(id) => id,
            None => {
                new_app.execute(params![r.app])?;
                tx.last_insert_rowid()
            }
        };
        let send_at = r.send_at.map(to_ms).filter(|&t| t > now);
        req.execute(params![
            r.app,
            &r.payload[..],
            r.push_type.as_str(),
            r.priority.map(|p| p.as_u8()),
            r.topic.as_ref().map(|t| t.as_str()),
            r.collapse_id.as_ref().map(|c| c.as_str()),
            r.apns_expiration.map(|e| e.as_unix() as i64),
            send_at,
            to_ms(r.expires_at),
            r.submitted.map_or(now, |s| to_ms(s.at)),
            r.len() as i64,
            r.submitted.map(|s| s.id.as_uuid().as_bytes().to_vec()),
            r.supersede.as_ref().map(|s| s.key.as_i64()),
        ])?;
        let request_id = tx.last_insert_rowid();
        if bounces {
            request_ids.push(request_id);
        }
        let state = if send_at.is_some() {
            State::Scheduled
        } else {
            State::Queued
        };
        let mut buf = [0; TOKEN_BYTES];
        // Before its own rows: a request does not supersede itself (a token listed twice is
        // sent twice, as without supersede). A scheduled one supersedes nothing yet.
        if let Some(s) = &r.supersede
            && send_at.is_none()
        {
            supersede(tx, app, r, s, now, |old| replaced.push((i, old)))?;
        }
        let skey = r.supersede.as_ref().map(|s| s.key.as_i64());
        for (id, token) in &r.notifications {
            note.execute(params![
                &id.as_uuid().as_bytes()[..],
                request_id,
                app,
                token.to_bytes(&mut buf),
                state as i64,
                send_at,
                now,
                skey,
            ])?;
        }
    }
    if bounces {
        super::bounces::link(tx, batch, &request_ids, now)?;
    }
    Ok(replaced)
}

/// Supersedes what request `r` (of app number `app`, with `s`) replaces: for each of its
/// tokens, the queued notifications with its key, except those `s` spares.
fn supersede(
    tx: &Transaction<'_>,
    app: i64,
    r: &NewRequest,
    s: &Supersede,
    now: i64,
    mut found: impl FnMut(Replaced),
) -> Result<(), rusqlite::Error> {
    let mut find = tx.prepare_cached(SUPERSEDE_FIND)?;
    let mut mark = tx.prepare_cached(SUPERSEDE)?;
    let mut buf = [0; TOKEN_BYTES];
    let key = s.key.as_i64();
    for (by, token) in &r.notifications {
        let older = find
            .query_map(params![app, token.to_bytes(&mut buf), key], |row| {
                Ok((row.get::<_, Vec<u8>>(0)?, row.get::<_, u32>(1)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        for (old, attempts) in older {
            let old = id_from_bytes(&old)?;
            if !s.spares(&old) && mark.execute(params![&old.as_uuid().as_bytes()[..], now])? > 0 {
                found(Replaced {
                    old,
                    by: *by,
                    attempts,
                });
            }
        }
    }
    Ok(())
}

/// Up to `limit` scheduled notifications whose time has come, app by app (every app, the
/// removed ones too: their notifications become queued on time and wait for them).
fn claim_due(tx: &Transaction<'_>, now: i64, limit: usize) -> Result<Vec<ApnsId>, rusqlite::Error> {
    let apps: Vec<i64> = tx
        .prepare_cached(APP_IDS)?
        .query_map([], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    let mut st = tx.prepare_cached(CLAIM_DUE)?;
    let mut ids = Vec::new();
    for app in apps {
        let left = limit - ids.len();
        if left == 0 {
            break;
        }
        let rows = st.query_map(params![now, left as i64, app], |row| {
            row.get::<_, Vec<u8>>(0)
        })?;
        for r in rows {
            ids.push(id_from_bytes(&r?)?);
        }
    }
    Ok(ids)
}

/// Applies results; returns how many pending notifications became final.
fn complete(tx: &Transaction<'_>, done: &[Completion], now: i64) -> Result<u64, rusqlite::Error> {
    let mut st = tx.prepare_cached(COMPLETE)?;
    let mut finished = 0;
    for c in done {
        let id = &c.id.as_uuid().as_bytes()[..];
        let reason = c.reason.as_ref().map(|r| r.as_str());
        let conn = c.conn.map(|n| n as i64);
        let changed = st.execute(params![
            id,
            c.state as i64,
            c.attempts,
            c.status,
            reason,
            c.due_at.map(to_ms),
            now,
            conn,
        ])?;
        if changed > 0 && c.state.is_final() {
            finished += 1;
            if c.state != State::Delivered {
                tx.prepare_cached(super::bounces::QUEUE)?
                    .execute(params![id, now])?;
            }
        }
        if changed > 0 && c.is_retried_attempt() {
            tx.prepare_cached(ATTEMPT_KEPT)?
                .execute(params![id, now, c.status, reason, conn])?;
        }
    }
    Ok(finished)
}

fn register_dead(tx: &Transaction<'_>, d: &DeadToken) -> Result<(), rusqlite::Error> {
    tx.prepare_cached(
        "INSERT INTO dead_tokens (app, token, reason, since) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (app, token) DO UPDATE SET reason = excluded.reason, since = excluded.since",
    )?
    .execute(params![
        d.app,
        d.token.to_bytes(&mut [0; TOKEN_BYTES]),
        d.reason.as_str(),
        to_ms(d.since)
    ])?;
    Ok(())
}

fn prune(tx: &Transaction<'_>, before: i64, limit: usize) -> Result<usize, rusqlite::Error> {
    let mut by_request: std::collections::HashMap<i64, i64> = std::collections::HashMap::new();
    let mut gone = Vec::new();
    let first_id = first_id_at(before);
    {
        let mut st = tx.prepare_cached(PRUNE_FINISHED)?;
        let mut rows = st.query(params![before, limit as i64, &first_id[..]])?;
        while let Some(r) = rows.next()? {
            gone.push(r.get::<_, Vec<u8>>(0)?);
            *by_request.entry(r.get(1)?).or_default() += 1;
        }
    }
    // Their histories go with them: only notifications that were retried have one.
    let kept: bool = tx
        .prepare_cached(ATTEMPTS_BELOW)?
        .query_row(params![&first_id[..]], |r| r.get(0))?;
    if kept {
        let mut forget = tx.prepare_cached(ATTEMPTS_FORGET)?;
        for id in &gone {
            forget.execute(params![id])?;
        }
    }
    let mut loses = tx.prepare_cached(REQUEST_LOSES)?;
    let mut remove = tx.prepare_cached(REQUEST_GONE)?;
    for (request, n) in by_request {
        let left: Option<i64> = loses
            .query_row(params![request, n], |r| r.get(0))
            .optional()?;
        if left.is_some_and(|l| l <= 0) {
            remove.execute(params![request])?;
            super::bounces::forget_request(tx, request)?;
        }
    }
    Ok(gone.len())
}

/// The smallest UUIDv7 of millisecond `ms`, as stored: ids below it were created before `ms`.
fn first_id_at(ms: i64) -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..6].copy_from_slice(&ms.max(0).to_be_bytes()[2..]);
    id
}

fn requeue_in_flight(tx: &Transaction<'_>, now: i64) -> Result<usize, rusqlite::Error> {
    tx.prepare_cached(REQUEUE_IN_FLIGHT)?.execute(params![now])
}
