//! `pushgate db copy --from-sqlite`: what a SQLite spool holds not yet final, into this one.

use std::sync::atomic::Ordering;
use std::time::SystemTime;

use super::{PgSpool, reads};
use crate::spool::{SpoolError, to_ms};

impl PgSpool {
    /// Stores what `export` holds, each request in a transaction of its own with its
    /// notifications as they stand (ids, states, attempts, due times, last answers). A request
    /// any of whose notifications is already here was copied by a run that stopped half-way,
    /// and is left as it is. Dead tokens already registered keep their entry.
    pub(crate) async fn import(
        &self,
        export: &crate::spool::Export,
    ) -> Result<crate::spool::CopyReport, SpoolError> {
        let mut report = crate::spool::CopyReport::default();
        let mut c = self.conn().await?;
        for r in &export.requests {
            if r.notifications.is_empty() {
                continue;
            }
            let ids: Vec<uuid::Uuid> = r.notifications.iter().map(|n| *n.id.as_uuid()).collect();
            let there = c
                .query_opt(
                    "SELECT 1 FROM notifications WHERE id = ANY($1) LIMIT 1",
                    &[&ids],
                )
                .await
                .map_err(self.err("looking for a copied request"))?
                .is_some();
            if there {
                report.already_there += 1;
                continue;
            }
            let tx = c
                .transaction()
                .await
                .map_err(self.err("beginning a transaction"))?;
            let q = &r.request;
            // Its supersede key goes with it: what it may still supersede or be superseded by.
            let skey = q.supersede.map(|k| k.as_i64());
            let request_id: i64 = tx
                .query_one(
                    "INSERT INTO requests (app, payload, push_type, priority, topic, collapse_id, \
                     apns_expiration, send_at, expires_at, created_at, remaining, rid, skey) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING id",
                    &[
                        &q.app,
                        &&q.payload[..],
                        &q.push_type.as_str(),
                        &q.priority.map(|p| i16::from(p.as_u8())),
                        &q.topic.as_ref().map(|t| t.as_str()),
                        &q.collapse_id.as_ref().map(|c| c.as_str()),
                        &q.apns_expiration.map(|e| e.as_unix() as i64),
                        &r.send_at.map(to_ms),
                        &to_ms(r.expires_at),
                        &to_ms(r.created_at),
                        &(r.notifications.len() as i32),
                        &q.request_id.map(|r| *r.as_uuid()),
                        &skey,
                    ],
                )
                .await
                .map_err(self.err("copying a request"))?
                .get(0);
            let now = to_ms(SystemTime::now());
            for n in &r.notifications {
                tx.execute(
                    "INSERT INTO notifications (id, request_id, app, token, state, attempts, \
                     due_at, status, reason, updated_at, conn, skey) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                    &[
                        n.id.as_uuid(),
                        &request_id,
                        &q.app,
                        &reads::token_bytes(&n.token),
                        &(n.state as i16),
                        &(n.attempts as i32),
                        &n.due_at.map(to_ms),
                        &n.status.map(i32::from),
                        &n.reason.as_ref().map(ToString::to_string),
                        &now,
                        &n.conn.map(|c| c as i64),
                        &skey,
                    ],
                )
                .await
                .map_err(self.err("copying a notification"))?;
                for a in &n.history {
                    tx.execute(
                        "INSERT INTO attempts (id, at, status, reason, conn) \
                         VALUES ($1, $2, $3, $4, $5)",
                        &[
                            n.id.as_uuid(),
                            &to_ms(a.at),
                            &a.status.map(i32::from),
                            &a.reason.as_ref().map(ToString::to_string),
                            &a.conn.map(|c| c as i64),
                        ],
                    )
                    .await
                    .map_err(self.err("copying a notification's attempts"))?;
                }
            }
            tx.commit()
                .await
                .map_err(self.err("committing a copied request"))?;
            self.committed();
            report.requests += 1;
            report.notifications += r.notifications.len();
            self.inner
                .pending
                .fetch_add(r.notifications.len() as u64, Ordering::AcqRel);
        }
        for d in &export.dead {
            let n = c
                .execute(
                    "INSERT INTO dead_tokens (app, token, reason, since) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (app, token) DO NOTHING",
                    &[
                        &d.app,
                        &reads::token_bytes(&d.token),
                        &d.reason.as_str(),
                        &to_ms(d.since),
                    ],
                )
                .await
                .map_err(self.err("copying a dead token"))?;
            report.dead_tokens += n as usize;
        }
        for p in &export.pauses {
            c.execute(
                "INSERT INTO app_pauses (app, since, reject) VALUES ($1, $2, $3) \
                 ON CONFLICT (app) DO NOTHING",
                &[&p.app, &to_ms(p.since), &p.reject],
            )
            .await
            .map_err(self.err("copying a paused app"))?;
        }
        // Gateways already running on this database pause those apps too.
        for p in &export.pauses {
            c.execute(
                "SELECT pg_notify($1, $2)",
                &[&super::cluster::PAUSE, &p.app],
            )
            .await
            .map_err(self.err("telling the gateways of a copied pause"))?;
        }
        Ok(report)
    }
}
