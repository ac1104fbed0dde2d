//! Start-up recovery: whatever was in flight when the process stopped goes back to the queue
//! (at-least-once: APNs may see it twice, it is never lost), and the backlog is read in pages
//! by key so memory stays bounded however large it is.

use std::time::{Duration, Instant, SystemTime};

use apns::{ApnsId, DeviceToken};
use rusqlite::params;

use super::sqlite::{SqliteSpool, decode_id, token_from_bytes};
use super::writer::Command;
use super::{SpoolError, State, from_ms};

/// What recovery found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// In-flight notifications put back in the queue.
    pub requeued: usize,
    /// Notifications pending after recovery.
    pub pending: u64,
    pub elapsed: Duration,
}

/// One pending notification, as the dispatcher pages them in.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingRow {
    pub id: ApnsId,
    pub request_id: i64,
    pub app: String,
    pub token: DeviceToken,
    pub state: State,
    pub attempts: u32,
    pub due_at: Option<SystemTime>,
}

impl SqliteSpool {
    /// Re-queues in-flight notifications. Call once at start-up, before dispatching.
    pub async fn recover(&self) -> Result<RecoveryReport, SpoolError> {
        let start = Instant::now();
        let requeued = self
            .call(|reply| Command::RequeueInFlight { reply })
            .await?;
        Ok(RecoveryReport {
            requeued,
            pending: super::Spool::pending(self),
            elapsed: start.elapsed(),
        })
    }

    /// Up to `limit` pending notifications with ids after `after`, in id order (ids are
    /// time-ordered UUIDs, so this is roughly acceptance order).
    pub async fn pending_page(
        &self,
        after: Option<ApnsId>,
        limit: usize,
    ) -> Result<Vec<PendingRow>, SpoolError> {
        let after = after.map_or_else(Vec::new, |id| id.as_uuid().as_bytes().to_vec());
        self.read(move |c| {
            let sql = |source| SpoolError::Sql {
                what: "paging pending notifications",
                source,
            };
            let mut st = c
                .prepare_cached(
                    "SELECT n.id, n.request_id, r.app, n.token, n.state, n.attempts, n.due_at \
                     FROM notifications n JOIN requests r ON r.id = n.request_id \
                     WHERE n.id > ?1 AND n.state < 3 ORDER BY n.id LIMIT ?2",
                )
                .map_err(sql)?;
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
                .map_err(sql)?;
            let mut out = Vec::with_capacity(limit.min(10_000));
            for row in rows {
                let (id, request_id, app, token, state, attempts, due) = row.map_err(sql)?;
                out.push(PendingRow {
                    id: decode_id(&id)?,
                    request_id,
                    app,
                    token: token_from_bytes(&token)?,
                    state: State::from_i64(state).ok_or(SpoolError::Corrupt("unknown state"))?,
                    attempts,
                    due_at: due.map(from_ms),
                });
            }
            Ok(out)
        })
        .await
    }
}
