//! What the spool does for supersede (docs/cancel.md, "Supersede"): a newer notification to a
//! token replaces an older one still queued for the same token, app and key, in the
//! transaction that stores the newer one.
//!
//! Each notification that may supersede or be superseded carries its key ([`SupersedeKey`],
//! chosen by intake from the app's `supersede` setting), stored beside it and indexed only
//! while it waits, so the look-up costs the others nothing. As for a cancel, the spool cannot
//! tell what is in flight on SQLite: intake asks dispatch first, and hands the ids taken for
//! sending as [`Supersede::spare`]; the transaction leaves those alone (they are sent; the newer
//! one is sent after them).

use std::sync::Arc;

use apns::{ApnsId, CollapseId};

/// What a notification replaces an older one by: a digest of its collapse id, or the one key
/// of Live Activity updates. Stored (a 64-bit integer), so it is the same in every process and
/// version: the first 8 bytes of SHA-256 over a tag and the id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SupersedeKey(i64);

impl SupersedeKey {
    /// Notifications with collapse id `id`.
    pub fn collapse(id: &CollapseId) -> SupersedeKey {
        SupersedeKey::digest(b"c:", id.as_str().as_bytes())
    }

    /// Live Activity updates (`"event": "update"`) to one activity's token.
    pub fn live_activity() -> SupersedeKey {
        SupersedeKey::digest(b"la", b"")
    }

    fn digest(tag: &[u8], s: &[u8]) -> SupersedeKey {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        ctx.update(tag);
        ctx.update(s);
        let d = ctx.finish();
        let mut b = [0u8; 8];
        b.copy_from_slice(&d.as_ref()[..8]);
        SupersedeKey(i64::from_be_bytes(b))
    }

    /// As stored.
    pub fn as_i64(self) -> i64 {
        self.0
    }

    pub(crate) fn from_i64(n: i64) -> SupersedeKey {
        SupersedeKey(n)
    }
}

/// A request's part in supersede: its key, what the transaction must leave alone, and (once
/// committed) what it replaced.
#[derive(Debug, Clone)]
pub struct Supersede {
    pub key: SupersedeKey,
    /// Ids taken for sending by this gateway when the submission's hold began, sorted (one
    /// list for the whole submission): never superseded.
    pub spare: Arc<[ApnsId]>,
    /// Filled by the spool's commit: the older notifications this request replaced.
    pub replaced: Vec<Replaced>,
}

impl Supersede {
    /// With key `key`, sparing nothing yet.
    pub fn new(key: SupersedeKey) -> Supersede {
        Supersede {
            key,
            spare: Arc::from(Vec::new()),
            replaced: Vec::new(),
        }
    }

    /// Whether `id` is to be left alone.
    pub fn spares(&self, id: &ApnsId) -> bool {
        self.spare.binary_search(id).is_ok()
    }
}

/// One older notification a newer one replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replaced {
    /// The older one, now `superseded`.
    pub old: ApnsId,
    /// The newer one (of the same token) that replaced it.
    pub by: ApnsId,
    /// Attempts the older one had made (a retry waiting for its time).
    pub attempts: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_stable_and_tell_collapse_ids_apart() {
        let a = SupersedeKey::collapse(&CollapseId::parse("score").expect("id"));
        let b = SupersedeKey::collapse(&CollapseId::parse("score2").expect("id"));
        assert_ne!(a, b);
        assert_ne!(a, SupersedeKey::live_activity());
        // Stored: a change of the digest would strand every key written before it.
        assert_eq!(
            a.as_i64(),
            SupersedeKey::collapse(&CollapseId::parse("score").expect("id")).as_i64()
        );
        // The first 8 bytes of SHA-256("c:score"), big-endian (computed apart, with Python's
        // hashlib).
        assert_eq!(a.as_i64(), -7_017_540_004_716_921_711);
    }
}
