//! The identities of a notification: its device token and its `apns-id`.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use uuid::Uuid;

use super::{MAX_TOKEN_HEX, NotificationError};

/// A device token in lowercase hex. Shared, not copied: a token is cloned for the request, the
/// outcome and the delivery log of every notification.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceToken(Arc<str>);

impl DeviceToken {
    /// Parses hex (either case), normalising to lowercase.
    pub fn parse(s: &str) -> Result<DeviceToken, NotificationError> {
        let bad = || NotificationError::InvalidToken { len: s.len() };
        if s.is_empty() || !s.len().is_multiple_of(2) || s.len() > MAX_TOKEN_HEX {
            return Err(bad());
        }
        if !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        Ok(DeviceToken(s.to_ascii_lowercase().into()))
    }

    /// The token of these bytes (as a device reports it), in lowercase hex.
    pub fn from_bytes(bytes: &[u8]) -> Result<DeviceToken, NotificationError> {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        if bytes.is_empty() || bytes.len() * 2 > MAX_TOKEN_HEX {
            return Err(NotificationError::InvalidToken {
                len: bytes.len() * 2,
            });
        }
        let mut hex = String::with_capacity(bytes.len() * 2);
        for b in bytes {
            hex.push(char::from(HEX[usize::from(b >> 4)]));
            hex.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        Ok(DeviceToken(hex.into()))
    }

    /// The token's bytes (the inverse of [`DeviceToken::from_bytes`]), written into `buf`
    /// rather than a new allocation: storage converts every notification's token.
    pub fn to_bytes<'a>(&self, buf: &'a mut [u8; MAX_TOKEN_HEX / 2]) -> &'a [u8] {
        let nibble = |b: u8| match b {
            b'0'..=b'9' => b - b'0',
            _ => b - b'a' + 10,
        };
        let hex = self.0.as_bytes();
        let out = &mut buf[..hex.len() / 2];
        for (o, p) in out.iter_mut().zip(hex.chunks_exact(2)) {
            *o = (nibble(p[0]) << 4) | nibble(p[1]);
        }
        out
    }

    /// The lowercase hex form.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for DeviceToken {
    type Err = NotificationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DeviceToken::parse(s)
    }
}

impl fmt::Display for DeviceToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for DeviceToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceToken({})", self.0)
    }
}

/// `apns-id`: a UUID, sent in lowercase canonical form. The gateway's notification id is the
/// same value, so Apple's answers and our records share one key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ApnsId(Uuid);

impl ApnsId {
    /// A new time-ordered (v7) id.
    pub fn new() -> ApnsId {
        ApnsId(Uuid::now_v7())
    }

    /// `n` new time-ordered (v7) ids of this millisecond, in ascending order, their random bits
    /// drawn from the operating system in one call instead of one per id (ingest names every
    /// notification of a request at once). Sorted because storage appends ids in order far
    /// more cheaply than it inserts them at random places.
    pub fn many(n: usize) -> Vec<ApnsId> {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut random = vec![0u8; n * 10];
        if getrandom::fill(&mut random).is_err() {
            // No system randomness (never seen on Linux): fall back to the one-at-a-time path.
            return (0..n).map(|_| ApnsId::new()).collect();
        }
        let mut ids: Vec<ApnsId> = random
            .chunks_exact(10)
            .map(|r| {
                let bytes: &[u8; 10] = r.try_into().expect("chunks of 10");
                ApnsId(uuid::Builder::from_unix_timestamp_millis(ms, bytes).into_uuid())
            })
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Wraps a UUID.
    pub fn from_uuid(u: Uuid) -> ApnsId {
        ApnsId(u)
    }

    /// The UUID.
    pub fn as_uuid(&self) -> &Uuid {
        &self.0
    }

    /// When a time-ordered (v7) id was made — for the gateway, when its notification was
    /// accepted. `None` for an id without a timestamp (one a client chose, say).
    pub fn created_at(&self) -> Option<std::time::SystemTime> {
        let (secs, nanos) = self.0.get_timestamp()?.to_unix();
        Some(std::time::UNIX_EPOCH + std::time::Duration::new(secs, nanos))
    }

    /// Parses the canonical hyphenated form (either case), as APNs requires.
    pub fn parse(s: &str) -> Result<ApnsId, NotificationError> {
        if s.len() != 36 {
            return Err(NotificationError::InvalidApnsId);
        }
        Uuid::try_parse(s)
            .map(ApnsId)
            .map_err(|_| NotificationError::InvalidApnsId)
    }

    /// Writes the lowercase hyphenated form into a stack buffer (no allocation).
    pub fn encode<'a>(&self, buf: &'a mut [u8; 36]) -> &'a str {
        self.0.hyphenated().encode_lower(buf)
    }
}

impl Default for ApnsId {
    fn default() -> Self {
        ApnsId::new()
    }
}

impl fmt::Display for ApnsId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl fmt::Debug for ApnsId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApnsId({})", self.0.hyphenated())
    }
}

impl FromStr for ApnsId {
    type Err = NotificationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ApnsId::parse(s)
    }
}
