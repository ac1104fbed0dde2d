//! An enqueued batch into the database: one transaction, a request row each, its
//! notifications in one `INSERT … SELECT … FROM unnest`, and its idempotency key when it has
//! one.

use std::time::SystemTime;

use super::{PgSpool, reads};
use crate::spool::idempotency::{self, IdempotencyKey, Seen};
use crate::spool::{NewRequest, SpoolError, State, to_ms};

/// Takes a key — new, or forgotten (older than the window, $6) — and answers a row; a key
/// still remembered answers none. A concurrent transaction inserting the same key makes this
/// one wait for it: once it commits, the key is remembered and this one replays it.
const KEY_TAKE: &str = "INSERT INTO idempotency_keys (scope, key, fingerprint, ids, created_at) \
     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (scope, key) DO UPDATE SET \
     fingerprint = excluded.fingerprint, ids = excluded.ids, created_at = excluded.created_at \
     WHERE idempotency_keys.created_at < $6 RETURNING 1";
const KEY_SEEN: &str =
    "SELECT fingerprint, ids, created_at FROM idempotency_keys WHERE scope = $1 AND key = $2";

impl PgSpool {
    /// Stores `batch` and takes `key`, in one transaction; when the key is remembered, stores
    /// nothing and answers what it means (a replay or a reuse). Once committed, each request's
    /// `supersede` lists what it replaced, which is no longer pending.
    pub(super) async fn insert(
        &self,
        batch: &mut [NewRequest],
        key: Option<&IdempotencyKey>,
    ) -> Result<Option<Seen>, SpoolError> {
        let mut c = self.conn().await?;
        let tx = c
            .transaction()
            .await
            .map_err(self.err("beginning a transaction"))?;
        let now = to_ms(SystemTime::now());
        // What is queued now is this gateway's from the start (ingest hands it straight to
        // this gateway's dispatch) — while its registration stands: the row is locked so that
        // a rescue deleting it waits for this commit and then frees these rows too. Without
        // it (declared dead a moment ago), they are nobody's, for any gateway to claim.
        let me: Option<uuid::Uuid> = tx
            .query_opt(
                "SELECT id FROM gateways WHERE id = $1 FOR KEY SHARE",
                &[&self.inner.cluster.me()],
            )
            .await
            .map_err(self.err("reading this gateway's registration"))?
            .map(|r| r.get(0));
        if me.is_none() {
            // Stored now, these would be nobody's and sent by this gateway too: twice.
            return Err(SpoolError::Postgres {
                what: format!(
                    "this gateway's registration lapsed (the others declared it dead); it is \
                     registering again ({})",
                    self.inner.target
                ),
                source: "no registration".into(),
            });
        }
        if let Some(k) = key {
            let forgotten = idempotency::forgotten_before(
                crate::spool::from_ms(now),
                self.inner.idempotency_window,
            );
            let taken = tx
                .query_opt(
                    KEY_TAKE,
                    &[
                        &k.scope,
                        &k.key,
                        &&k.fingerprint[..],
                        &idempotency::ids_blob(batch),
                        &now,
                        &forgotten,
                    ],
                )
                .await
                .map_err(self.err("taking an idempotency key"))?;
            if taken.is_none() {
                // Dropping `tx` rolls it back: nothing of this submission is stored.
                return self.key_seen(&tx, k, now).await.map(Some);
            }
        }
        let req = tx
            .prepare_cached(
                "INSERT INTO requests (app, payload, push_type, priority, topic, collapse_id, \
                 apns_expiration, send_at, expires_at, created_at, remaining, rid, skey) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING id",
            )
            .await
            .map_err(self.err("storing a request"))?;
        let notes = tx
            .prepare_cached(
                "INSERT INTO notifications (id, request_id, app, token, state, due_at, updated_at, \
                 owner, skey) SELECT id, $2, $3, token, $4, $5, $6, $8, $9 \
                 FROM unnest($1::uuid[], $7::bytea[]) AS t(id, token)",
            )
            .await
            .map_err(self.err("storing notifications"))?;
        let mut linked = super::bounces::Linked::new();
        let mut replaced = Vec::new();
        for (i, r) in batch.iter().enumerate() {
            let send_at = r.send_at.map(to_ms).filter(|&t| t > now);
            let state = if send_at.is_some() {
                State::Scheduled
            } else {
                State::Queued
            } as i16;
            // Scheduled rows are nobody's until they come due (`CLAIM_DUE`).
            let owner = if send_at.is_some() { None } else { me };
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
                        &r.submitted.map_or(now, |s| to_ms(s.at)),
                        &(r.len() as i32),
                        &r.submitted.map(|s| *s.id.as_uuid()),
                        &r.supersede.as_ref().map(|s| s.key.as_i64()),
                    ],
                )
                .await
                .map_err(self.err("storing a request"))?;
            let request_id: i64 = row.get(0);
            super::bounces::link(self, &tx, r, request_id, now, &mut linked).await?;
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
            // Before its own rows, as on SQLite: a request does not supersede itself, and a
            // scheduled one supersedes nothing yet.
            if let Some(s) = &r.supersede
                && send_at.is_none()
            {
                for old in self.supersede(&tx, r, s, &tokens, now).await? {
                    replaced.push((i, old));
                }
            }
            let skey = r.supersede.as_ref().map(|s| s.key.as_i64());
            tx.execute(
                &notes,
                &[
                    &ids,
                    &request_id,
                    &r.app,
                    &state,
                    &send_at,
                    &now,
                    &tokens,
                    &owner,
                    &skey,
                ],
            )
            .await
            .map_err(self.err("storing notifications"))?;
        }
        tx.commit().await.map_err(self.err("committing"))?;
        self.committed();
        self.release_pending(replaced.len() as u64);
        for (i, old) in replaced {
            if let Some(s) = batch[i].supersede.as_mut() {
                s.replaced.push(old);
            }
        }
        Ok(None)
    }

    /// Supersedes, inside `tx`, what request `r` (with `s`, to `tokens`) replaces: the
    /// queued notifications to those tokens with its key that nobody or this gateway holds,
    /// except those `s` spares. (Another gateway's are being sent, or soon: they are left.)
    async fn supersede(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        r: &NewRequest,
        s: &crate::spool::Supersede,
        tokens: &[Vec<u8>],
        now: i64,
    ) -> Result<Vec<crate::spool::Replaced>, SpoolError> {
        let st = tx
            .prepare_cached(super::schema::SUPERSEDE)
            .await
            .map_err(self.err("superseding notifications"))?;
        let spare: Vec<uuid::Uuid> = s.spare.iter().map(|i| *i.as_uuid()).collect();
        let rows = tx
            .query(
                &st,
                &[
                    &r.app,
                    &tokens,
                    &s.key.as_i64(),
                    &self.inner.cluster.me(),
                    &spare,
                    &now,
                ],
            )
            .await
            .map_err(self.err("superseding notifications"))?;
        // The newer notification of each token (the last, if a token is listed twice).
        let by: std::collections::HashMap<&[u8], apns::ApnsId> = tokens
            .iter()
            .zip(&r.notifications)
            .map(|(t, (id, _))| (t.as_slice(), *id))
            .collect();
        Ok(rows
            .iter()
            .filter_map(|row| {
                let token: &[u8] = row.get(1);
                Some(crate::spool::Replaced {
                    old: apns::ApnsId::from_uuid(row.get(0)),
                    by: *by.get(token)?,
                    attempts: row.get::<_, i32>(2) as u32,
                })
            })
            .collect())
    }

    /// What the stored `key` means for a submission at `now`.
    pub(super) async fn key_seen(
        &self,
        c: &impl deadpool_postgres::GenericClient,
        key: &IdempotencyKey,
        now: i64,
    ) -> Result<Seen, SpoolError> {
        let row = c
            .query_opt(KEY_SEEN, &[&key.scope, &key.key])
            .await
            .map_err(self.err("reading an idempotency key"))?;
        match row {
            Some(r) => idempotency::judge(
                key,
                r.get::<_, &[u8]>(0),
                r.get::<_, &[u8]>(1),
                r.get(2),
                now,
                self.inner.idempotency_window,
            ),
            None => Ok(Seen::Expired),
        }
    }
}
