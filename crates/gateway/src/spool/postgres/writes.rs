//! An enqueued batch into the database: one transaction, a request row each, its
//! notifications in one `INSERT … SELECT … FROM unnest`.

use std::time::SystemTime;

use super::{PgSpool, reads};
use crate::spool::{NewRequest, SpoolError, State, to_ms};

impl PgSpool {
    pub(super) async fn insert(&self, batch: &[NewRequest]) -> Result<(), SpoolError> {
        let mut c = self.conn().await?;
        let tx = c
            .transaction()
            .await
            .map_err(self.err("beginning a transaction"))?;
        let req = tx
            .prepare_cached(
                "INSERT INTO requests (app, payload, push_type, priority, topic, collapse_id, \
                 apns_expiration, send_at, expires_at, created_at, remaining) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id",
            )
            .await
            .map_err(self.err("storing a request"))?;
        let notes = tx
            .prepare_cached(
                "INSERT INTO notifications (id, request_id, app, token, state, due_at, updated_at) \
                 SELECT id, $2, $3, token, $4, $5, $6 FROM unnest($1::uuid[], $7::bytea[]) \
                 AS t(id, token)",
            )
            .await
            .map_err(self.err("storing notifications"))?;
        let now = to_ms(SystemTime::now());
        for r in batch {
            let send_at = r.send_at.map(to_ms).filter(|&t| t > now);
            let state = if send_at.is_some() {
                State::Scheduled
            } else {
                State::Queued
            } as i16;
            let row = tx
                .query_one(
                    &req,
                    &[
                        &r.app,
                        &&r.payload[..],
                        &r.push_type.as_str(),
                        &r.priority.map(|p| i16::from(p.as_u8())),
                        &r.topic.as_ref().map(|t| t.as_str()),
                        &r.collapse_id.as_ref().map(|c| c.as_str()),
                        &r.apns_expiration.map(|e| e.as_unix() as i64),
                        &send_at,
                        &to_ms(r.expires_at),
                        &now,
                        &(r.len() as i32),
                    ],
                )
                .await
                .map_err(self.err("storing a request"))?;
            let request_id: i64 = row.get(0);
            let ids: Vec<uuid::Uuid> = r
                .notifications
                .iter()
                .map(|(id, _)| *id.as_uuid())
                .collect();
            let tokens: Vec<Vec<u8>> = r
                .notifications
                .iter()
                .map(|(_, t)| reads::token_bytes(t))
                .collect();
            tx.execute(
                &notes,
                &[&ids, &request_id, &r.app, &state, &send_at, &now, &tokens],
            )
            .await
            .map_err(self.err("storing notifications"))?;
        }
        tx.commit().await.map_err(self.err("committing"))?;
        self.committed();
        Ok(())
    }
}
