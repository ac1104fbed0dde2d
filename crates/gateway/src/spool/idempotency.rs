//! Idempotency keys: a submission sent twice — a client retrying after a lost answer, a
//! beanstalkd job redelivered after a crash between the commit and its `delete` — is stored
//! once. The key is checked and recorded in the transaction that stores the submission, so
//! there is no moment at which the notifications are committed and the key is not (nor the
//! reverse), and a duplicate in the same group commit sees the first one's key.
//!
//! A key is remembered for the spool's idempotency window (`SpoolOptions::idempotency_window`)
//! with the ids it was answered with, so a replay answers the same ids however long the
//! notifications themselves are kept.

use std::time::{Duration, SystemTime};

use apns::ApnsId;

use super::{NewRequest, SpoolError};

/// Who sent a submission and under what key, with a fingerprint of what was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    /// Where keys are unique: an API key's name (`key:<name>`), an SMTP sender, a beanstalkd
    /// server. Two callers may use the same key without meeting.
    pub scope: String,
    /// The caller's key (an `Idempotency-Key` header, a `Message-ID`, a job's id).
    pub key: String,
    /// SHA-256 of the raw submission: the same key with another body is a mistake.
    pub fingerprint: [u8; 32],
}

impl IdempotencyKey {
    /// `key` in `scope`, for a submission whose raw bytes are `body`.
    pub fn new(scope: impl Into<String>, key: impl Into<String>, body: &[u8]) -> IdempotencyKey {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, body);
        let mut fingerprint = [0; 32];
        fingerprint.copy_from_slice(digest.as_ref());
        IdempotencyKey {
            scope: scope.into(),
            key: key.into(),
            fingerprint,
        }
    }
}

/// What a keyed enqueue did.
#[derive(Debug)]
pub enum Enqueued {
    /// Stored (the batch, to go on to dispatch unread).
    Stored(Vec<NewRequest>),
    /// The key was seen with the same fingerprint: nothing stored; these are the ids the
    /// first submission was answered with, in its order.
    Replayed(Vec<ApnsId>),
}

/// What a key already stored means for a new submission under it.
#[derive(Debug, PartialEq)]
pub(crate) enum Seen {
    /// The same submission: answer its ids.
    Replay(Vec<ApnsId>),
    /// Another submission under the same key.
    Reused,
    /// Older than the window: forgotten, the new submission takes the key.
    Expired,
}

/// Judges the stored row (`fingerprint`, `ids`, `created_at` in ms) for `key` at `now`.
pub(crate) fn judge(
    key: &IdempotencyKey,
    fingerprint: &[u8],
    ids: &[u8],
    created_at: i64,
    now: i64,
    window: Duration,
) -> Result<Seen, SpoolError> {
    let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
    if created_at < now.saturating_sub(window_ms) {
        return Ok(Seen::Expired);
    }
    if fingerprint != key.fingerprint {
        return Ok(Seen::Reused);
    }
    ids_from_blob(ids).map(Seen::Replay)
}

/// Every notification id of `batch`, in order, 16 bytes each.
pub(crate) fn ids_blob(batch: &[NewRequest]) -> Vec<u8> {
    let n: usize = batch.iter().map(NewRequest::len).sum();
    let mut blob = Vec::with_capacity(n * 16);
    for r in batch {
        for (id, _) in &r.notifications {
            blob.extend_from_slice(id.as_uuid().as_bytes());
        }
    }
    blob
}

fn ids_from_blob(blob: &[u8]) -> Result<Vec<ApnsId>, SpoolError> {
    if !blob.len().is_multiple_of(16) {
        return Err(SpoolError::Corrupt("an idempotency key's ids"));
    }
    Ok(blob
        .chunks_exact(16)
        .map(|c| {
            let mut b = [0; 16];
            b.copy_from_slice(c);
            ApnsId::from_uuid(uuid::Uuid::from_bytes(b))
        })
        .collect())
}

/// The first moment (ms) at which a key created at `now` minus the window is forgotten.
pub(crate) fn forgotten_before(now: SystemTime, window: Duration) -> i64 {
    super::to_ms(now.checked_sub(window).unwrap_or(std::time::UNIX_EPOCH))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(body: &[u8]) -> IdempotencyKey {
        IdempotencyKey::new("key:shop", "k1", body)
    }

    #[test]
    fn the_same_body_replays_another_is_reused_an_old_one_expired() {
        let ids = [ApnsId::new(), ApnsId::new()];
        let blob: Vec<u8> = ids
            .iter()
            .flat_map(|i| i.as_uuid().as_bytes().to_vec())
            .collect();
        let k = key(b"{}");
        let day = Duration::from_secs(86_400);
        let now = 1_000_000_000_000;
        assert_eq!(
            judge(&k, &k.fingerprint, &blob, now - 1_000, now, day).unwrap(),
            Seen::Replay(ids.to_vec())
        );
        assert_eq!(
            judge(&k, &key(b"{ }").fingerprint, &blob, now, now, day).unwrap(),
            Seen::Reused
        );
        assert_eq!(
            judge(&k, &k.fingerprint, &blob, now - 86_400_001, now, day).unwrap(),
            Seen::Expired
        );
        assert!(judge(&k, &k.fingerprint, &blob[..15], now, now, day).is_err());
    }
}
