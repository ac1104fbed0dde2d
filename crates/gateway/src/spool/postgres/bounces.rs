//! The PostgreSQL spool's side of bounces (`spool::bounces`), as in SQLite — origins, their
//! requests, the outbox filled by `COMPLETE` — with one addition for several gateways: the
//! sender leases the origins it takes (`lease_until`), so each DSN has one sender at a time;
//! a gateway that dies mid-send leaves its lease to run out, and another sends it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use deadpool_postgres::GenericClient;

use super::PgSpool;
use crate::spool::{
    BOUNCE_LEASE, BounceEntry, BounceOrigin, BounceSettle, DueBounce, MAX_PER_DSN, NewRequest,
    SpoolError, State, from_ms, to_ms,
};

/// Takes up to $2 origins due now (the database's clock) whose first waiting failure was
/// recorded by $1, leasing them to gateway $3 for $4 ms. An origin leased to a gateway that is
/// no longer registered (it died mid-send) is taken at once, without waiting out the lease.
const TAKE_DUE: &str = "WITH f AS (SELECT origin, MIN(at) AS first FROM bounce_outbox \
     GROUP BY origin HAVING MIN(at) <= $1), \
     c AS (SELECT o.id FROM bounce_origins o JOIN f ON f.origin = o.id \
     WHERE o.next_at <= (extract(epoch from clock_timestamp()) * 1000)::bigint \
     AND (o.lease_until < (extract(epoch from clock_timestamp()) * 1000)::bigint \
     OR NOT EXISTS (SELECT 1 FROM gateways g WHERE g.id = o.lease_owner)) \
     ORDER BY f.first LIMIT $2 FOR UPDATE OF o SKIP LOCKED) \
     UPDATE bounce_origins o SET lease_owner = $3, \
     lease_until = (extract(epoch from clock_timestamp()) * 1000)::bigint + $4 FROM c \
     WHERE o.id = c.id RETURNING o.id, o.return_path, o.headers, o.way, o.received_from, \
     o.received_at, o.attempts, o.lease_until";
const ENTRIES: &str = "SELECT id, app, token, state, status, reason, at FROM bounce_outbox \
     WHERE origin = $1 ORDER BY at, id LIMIT $2";
/// The origin ($1) while the lease taken on it is still the one this gateway took ($2): a
/// lease ends at a millisecond of the database's clock, so another take (another gateway's,
/// or this one's under a new registration) ends at another.
const FENCE: &str = "SELECT 1 FROM bounce_origins WHERE id = $1 AND lease_until = $2 FOR UPDATE";
/// An origin ($1) nothing refers to any more.
const FORGET_ORPHAN: &str = "DELETE FROM bounce_origins o WHERE o.id = $1 \
     AND NOT EXISTS (SELECT 1 FROM bounce_requests b WHERE b.origin = o.id) \
     AND NOT EXISTS (SELECT 1 FROM bounce_outbox x WHERE x.origin = o.id)";

/// Origins already stored in this transaction, by the address of the `Arc` their requests
/// share.
pub(super) type Linked = HashMap<usize, i64>;

/// Stores `r`'s origin (once per shared origin in `linked`) and links request `request_id`
/// to it.
pub(super) async fn link(
    spool: &PgSpool,
    tx: &impl GenericClient,
    r: &NewRequest,
    request_id: i64,
    now: i64,
    linked: &mut Linked,
) -> Result<(), SpoolError> {
    let Some(o) = &r.bounce else { return Ok(()) };
    let origin = match linked.get(&(Arc::as_ptr(o) as usize)) {
        Some(&id) => id,
        None => {
            let row = tx
                .query_one(
                    "INSERT INTO bounce_origins (return_path, headers, way, received_from, \
                     received_at) VALUES ($1, $2, $3, $4, $5) RETURNING id",
                    &[
                        &o.return_path,
                        &o.headers,
                        &o.way,
                        &o.received_from,
                        &to_ms(o.received_at).min(now),
                    ],
                )
                .await
                .map_err(spool.err("storing a bounce origin"))?;
            let id: i64 = row.get(0);
            linked.insert(Arc::as_ptr(o) as usize, id);
            id
        }
    };
    tx.execute(
        "INSERT INTO bounce_requests (request_id, origin) VALUES ($1, $2)",
        &[&request_id, &origin],
    )
    .await
    .map_err(spool.err("linking a request to its bounce origin"))?;
    Ok(())
}

impl PgSpool {
    pub(super) async fn take_due_bounces(
        &self,
        now: SystemTime,
        cutoff: SystemTime,
        limit: usize,
    ) -> Result<Vec<DueBounce>, SpoolError> {
        let c = self.conn().await?;
        let what = "reading the bounces due";
        // The lease is on the database's clock, so gateways whose clocks differ agree on it.
        let _ = now;
        let lease_ms = BOUNCE_LEASE.as_millis() as i64;
        let me = self.inner.cluster.me();
        let origins = c
            .query(TAKE_DUE, &[&to_ms(cutoff), &(limit as i64), &me, &lease_ms])
            .await
            .map_err(self.err(what))?;
        let mut out = Vec::with_capacity(origins.len());
        for o in origins {
            let origin: i64 = o.get(0);
            let rows = c
                .query(ENTRIES, &[&origin, &(MAX_PER_DSN as i64)])
                .await
                .map_err(self.err(what))?;
            let mut entries = Vec::with_capacity(rows.len());
            for r in rows {
                let st: i16 = r.get(3);
                entries.push(BounceEntry {
                    id: apns::ApnsId::from_uuid(r.get(0)),
                    app: r.get(1),
                    token: apns::DeviceToken::from_bytes(r.get::<_, &[u8]>(2))
                        .map_err(|_| SpoolError::Corrupt("stored token"))?,
                    state: State::from_i64(st.into())
                        .ok_or(SpoolError::Corrupt("unknown state"))?,
                    status: r
                        .get::<_, Option<i32>>(4)
                        .and_then(|s| u16::try_from(s).ok()),
                    reason: r.get(5),
                    at: from_ms(r.get(6)),
                });
            }
            out.push(DueBounce {
                origin,
                from: BounceOrigin {
                    return_path: o.get(1),
                    headers: o.get(2),
                    way: o.get(3),
                    received_from: o.get(4),
                    received_at: from_ms(o.get(5)),
                },
                attempts: u32::try_from(o.get::<_, i32>(6)).unwrap_or(0),
                lease: o.get(7),
                entries,
            });
        }
        Ok(out)
    }

    pub(super) async fn settle(
        &self,
        origin: i64,
        lease: i64,
        ids: Vec<apns::ApnsId>,
        how: BounceSettle,
    ) -> Result<bool, SpoolError> {
        let mut c = self.conn().await?;
        let what = "settling a bounce";
        let tx = c.transaction().await.map_err(self.err(what))?;
        if tx
            .query_opt(FENCE, &[&origin, &lease])
            .await
            .map_err(self.err(what))?
            .is_none()
        {
            // Another gateway took it (this one's lease ran out): its word counts now.
            return Ok(false);
        }
        match how {
            BounceSettle::Done => {
                let ids: Vec<uuid::Uuid> = ids.iter().map(|i| *i.as_uuid()).collect();
                tx.execute("DELETE FROM bounce_outbox WHERE id = ANY($1)", &[&ids])
                    .await
                    .map_err(self.err(what))?;
                tx.execute(
                    "UPDATE bounce_origins SET attempts = 0, next_at = 0, lease_until = 0, \
                     lease_owner = NULL WHERE id = $1",
                    &[&origin],
                )
                .await
                .map_err(self.err(what))?;
                // Its requests may be pruned already (retention shorter than the retries).
                tx.execute(FORGET_ORPHAN, &[&origin])
                    .await
                    .map_err(self.err(what))?;
            }
            BounceSettle::RetryAt(at) => {
                // Due after the same wait on the database's clock, which the take reads.
                let wait = at
                    .duration_since(SystemTime::now())
                    .unwrap_or_default()
                    .as_millis() as i64;
                tx.execute(
                    "UPDATE bounce_origins SET attempts = attempts + 1, \
                     next_at = (extract(epoch from clock_timestamp()) * 1000)::bigint + $2, \
                     lease_until = 0, lease_owner = NULL WHERE id = $1",
                    &[&origin, &wait],
                )
                .await
                .map_err(self.err(what))?;
            }
        }
        tx.commit().await.map_err(self.err(what))?;
        self.committed();
        Ok(true)
    }

    pub(super) async fn waiting_bounces(&self) -> Result<u64, SpoolError> {
        let c = self.conn().await?;
        let n: i64 = c
            .query_one("SELECT count(*) FROM bounce_outbox", &[])
            .await
            .map_err(self.err("counting the bounces waiting"))?
            .get(0);
        Ok(n.max(0) as u64)
    }
}
