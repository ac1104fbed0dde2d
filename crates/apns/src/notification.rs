//! One notification for one device, and the validated values it is made of.
//!
//! Each header value is a newtype that can only hold what Apple accepts, so a [`Notification`]
//! that passed [`Notification::validate`] is one APNs will not refuse for its shape.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use bytes::Bytes;
use uuid::Uuid;

use crate::reason::Reason;

/// Payload limit for every push type but VoIP, in bytes of the JSON body.
pub const MAX_PAYLOAD: usize = 4096;
/// Payload limit for VoIP pushes.
pub const MAX_VOIP_PAYLOAD: usize = 5120;
/// Longest `apns-collapse-id`, in bytes.
pub const MAX_COLLAPSE_ID: usize = 64;
/// Longest device token we accept, in hex characters. Apple says not to assume 64, so we allow
/// growth, but a token of kilobytes is a client bug.
pub const MAX_TOKEN_HEX: usize = 200;

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

/// `apns-push-type`: every type Apple documents, plus an open arm for new ones.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PushType {
    Alert,
    Background,
    Voip,
    Complication,
    FileProvider,
    Location,
    Mdm,
    LiveActivity,
    PushToTalk,
    Controls,
    Widgets,
    /// A type this version does not know; sent as written, with no topic or priority rules.
    Other(Box<str>),
}

impl PushType {
    /// Every documented type.
    pub const KNOWN: &'static [PushType] = &[
        PushType::Alert,
        PushType::Background,
        PushType::Voip,
        PushType::Complication,
        PushType::FileProvider,
        PushType::Location,
        PushType::Mdm,
        PushType::LiveActivity,
        PushType::PushToTalk,
        PushType::Controls,
        PushType::Widgets,
    ];

    /// The header value.
    pub fn as_str(&self) -> &str {
        match self {
            PushType::Alert => "alert",
            PushType::Background => "background",
            PushType::Voip => "voip",
            PushType::Complication => "complication",
            PushType::FileProvider => "fileprovider",
            PushType::Location => "location",
            PushType::Mdm => "mdm",
            PushType::LiveActivity => "liveactivity",
            PushType::PushToTalk => "pushtotalk",
            PushType::Controls => "controls",
            PushType::Widgets => "widgets",
            PushType::Other(s) => s,
        }
    }

    /// Parses a header value; unknown non-empty lowercase words become [`PushType::Other`].
    pub fn parse(s: &str) -> Result<PushType, NotificationError> {
        Ok(match s {
            "alert" => PushType::Alert,
            "background" => PushType::Background,
            "voip" => PushType::Voip,
            "complication" => PushType::Complication,
            "fileprovider" => PushType::FileProvider,
            "location" => PushType::Location,
            "mdm" => PushType::Mdm,
            "liveactivity" => PushType::LiveActivity,
            "pushtotalk" => PushType::PushToTalk,
            "controls" => PushType::Controls,
            "widgets" => PushType::Widgets,
            other
                if !other.is_empty()
                    && other.len() <= 32
                    && other.bytes().all(|b| b.is_ascii_lowercase() || b == b'-') =>
            {
                PushType::Other(other.into())
            }
            other => {
                return Err(NotificationError::InvalidPushType {
                    push_type: other.into(),
                });
            }
        })
    }

    /// The suffix Apple requires on the bundle id for this type (`None`: the bare bundle id,
    /// or no rule we know of).
    pub fn topic_suffix(&self) -> Option<&'static str> {
        match self {
            PushType::Voip => Some(".voip"),
            PushType::Complication => Some(".complication"),
            PushType::FileProvider => Some(".pushkit.fileprovider"),
            PushType::Location => Some(".location-query"),
            PushType::LiveActivity => Some(".push-type.liveactivity"),
            PushType::PushToTalk => Some(".voip-ptt"),
            PushType::Controls => Some(".push-type.controls"),
            PushType::Widgets => Some(".push-type.widgets"),
            PushType::Alert | PushType::Background | PushType::Mdm | PushType::Other(_) => None,
        }
    }

    /// The payload limit for this type, in bytes.
    pub fn payload_limit(&self) -> usize {
        match self {
            PushType::Voip => MAX_VOIP_PAYLOAD,
            _ => MAX_PAYLOAD,
        }
    }

    /// The default priority when a request names none: 5 for background pushes (10 is an
    /// error there), 10 otherwise, as Apple's default.
    pub fn default_priority(&self) -> Priority {
        match self {
            PushType::Background => Priority::Conserve,
            _ => Priority::Immediate,
        }
    }
}

impl FromStr for PushType {
    type Err = NotificationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PushType::parse(s)
    }
}

impl fmt::Display for PushType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `apns-priority`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Priority {
    /// 10: deliver now.
    Immediate,
    /// 5: deliver when it suits the device's power state.
    Conserve,
    /// 1: power first; never wakes the device.
    Low,
}

impl Priority {
    /// Parses 10, 5 or 1.
    pub fn from_u8(n: u8) -> Result<Priority, NotificationError> {
        match n {
            10 => Ok(Priority::Immediate),
            5 => Ok(Priority::Conserve),
            1 => Ok(Priority::Low),
            other => Err(NotificationError::InvalidPriority {
                priority: other.into(),
            }),
        }
    }

    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Immediate => "10",
            Priority::Conserve => "5",
            Priority::Low => "1",
        }
    }

    /// The number.
    pub fn as_u8(self) -> u8 {
        match self {
            Priority::Immediate => 10,
            Priority::Conserve => 5,
            Priority::Low => 1,
        }
    }
}

/// `apns-topic`: a bundle id, possibly with a push-type suffix.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Topic(Arc<str>);

impl Topic {
    /// Accepts a non-empty printable ASCII string without spaces.
    pub fn parse(s: &str) -> Result<Topic, NotificationError> {
        if s.is_empty() || s.len() > 255 || !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(NotificationError::InvalidTopic { topic: s.into() });
        }
        Ok(Topic(s.into()))
    }

    /// The bundle id plus the push type's suffix.
    pub fn for_push_type(bundle: &str, push_type: &PushType) -> Result<Topic, NotificationError> {
        match push_type.topic_suffix() {
            Some(suffix) if !bundle.ends_with(suffix) => Topic::parse(&format!("{bundle}{suffix}")),
            _ => Topic::parse(bundle),
        }
    }

    /// The header value.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `apns-collapse-id`: at most 64 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CollapseId(Arc<str>);

impl CollapseId {
    /// Accepts 1 to 64 bytes of visible text.
    pub fn parse(s: &str) -> Result<CollapseId, NotificationError> {
        if s.len() > MAX_COLLAPSE_ID {
            return Err(NotificationError::CollapseIdTooLong { len: s.len() });
        }
        if s.is_empty() || s.chars().any(char::is_control) {
            return Err(NotificationError::InvalidCollapseId);
        }
        Ok(CollapseId(s.into()))
    }

    /// The header value.
    pub fn as_str(&self) -> &str {
        &self.0
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

/// `apns-expiration`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Expiration {
    /// `0`: one delivery attempt, never stored by APNs.
    Immediately,
    /// Store and retry until this UNIX time (seconds).
    At(u64),
}

impl Expiration {
    /// From the header's number.
    pub fn from_unix(secs: u64) -> Expiration {
        if secs == 0 {
            Expiration::Immediately
        } else {
            Expiration::At(secs)
        }
    }

    /// The header's number.
    pub fn as_unix(self) -> u64 {
        match self {
            Expiration::Immediately => 0,
            Expiration::At(s) => s,
        }
    }
}

/// One notification for one device token.
///
/// The payload is [`Bytes`], so a fan-out to many tokens shares one encoded body.
#[derive(Debug, Clone)]
pub struct Notification {
    /// Sent as `apns-id`; also our id for the notification.
    pub id: ApnsId,
    pub token: DeviceToken,
    /// `None` leaves the header out (single-topic certificates only).
    pub topic: Option<Topic>,
    pub push_type: PushType,
    /// `None` leaves the header out; APNs then assumes 10.
    pub priority: Option<Priority>,
    /// `None` leaves the header out; APNs then applies its own storage policy.
    pub expiration: Option<Expiration>,
    pub collapse_id: Option<CollapseId>,
    /// The JSON body, already encoded.
    pub payload: Bytes,
}

impl Notification {
    /// A notification with a fresh id and no optional headers.
    pub fn new(token: DeviceToken, push_type: PushType, payload: Bytes) -> Notification {
        Notification {
            id: ApnsId::new(),
            token,
            topic: None,
            push_type,
            priority: None,
            expiration: None,
            collapse_id: None,
            payload,
        }
    }

    /// Checks the rules APNs applies to a request's shape: payload present and within the
    /// push type's limit, priority allowed for the push type, topic suffix matching it.
    /// Token, collapse id and push type were checked when their values were made.
    pub fn validate(&self) -> Result<(), NotificationError> {
        if self.payload.is_empty() {
            return Err(NotificationError::PayloadEmpty);
        }
        let limit = self.push_type.payload_limit();
        if self.payload.len() > limit {
            return Err(NotificationError::PayloadTooLarge {
                size: self.payload.len(),
                limit,
            });
        }
        if self.push_type == PushType::Background && self.priority == Some(Priority::Immediate) {
            return Err(NotificationError::PriorityNotAllowed {
                priority: Priority::Immediate,
                push_type: self.push_type.clone(),
            });
        }
        if let (Some(topic), Some(suffix)) = (&self.topic, self.push_type.topic_suffix())
            && !topic.as_str().ends_with(suffix)
        {
            return Err(NotificationError::TopicSuffix {
                topic: topic.clone(),
                push_type: self.push_type.clone(),
                suffix,
            });
        }
        Ok(())
    }
}

/// Why a notification (or one of its values) is not acceptable to APNs.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum NotificationError {
    #[error(
        "device token is not an even-length hex string of at most {MAX_TOKEN_HEX} characters (got {len} characters)"
    )]
    InvalidToken { len: usize },
    #[error("unknown push type {push_type:?}")]
    InvalidPushType { push_type: String },
    #[error("priority {priority} is not one of 10, 5, 1")]
    InvalidPriority { priority: u32 },
    #[error("priority {} is not allowed for {push_type} pushes", priority.as_u8())]
    PriorityNotAllowed {
        priority: Priority,
        push_type: PushType,
    },
    #[error("topic {topic:?} is not a valid topic")]
    InvalidTopic { topic: String },
    #[error("topic {topic} must end with {suffix:?} for {push_type} pushes")]
    TopicSuffix {
        topic: Topic,
        push_type: PushType,
        suffix: &'static str,
    },
    #[error("collapse id is {len} bytes, over the limit of {MAX_COLLAPSE_ID}")]
    CollapseIdTooLong { len: usize },
    #[error("collapse id is empty or contains control characters")]
    InvalidCollapseId,
    #[error("apns-id is not a canonical UUID")]
    InvalidApnsId,
    #[error("payload is empty")]
    PayloadEmpty,
    #[error("payload is {size} bytes, over the limit of {limit}")]
    PayloadTooLarge { size: usize, limit: usize },
}

impl NotificationError {
    /// The reason APNs would answer with, where it has one.
    pub fn reason(&self) -> Option<Reason> {
        Some(match self {
            NotificationError::InvalidToken { .. } => Reason::BadDeviceToken,
            NotificationError::InvalidPushType { .. } => Reason::InvalidPushType,
            NotificationError::InvalidPriority { .. }
            | NotificationError::PriorityNotAllowed { .. } => Reason::BadPriority,
            NotificationError::InvalidTopic { .. } | NotificationError::TopicSuffix { .. } => {
                Reason::BadTopic
            }
            NotificationError::CollapseIdTooLong { .. } | NotificationError::InvalidCollapseId => {
                Reason::BadCollapseId
            }
            NotificationError::InvalidApnsId => Reason::BadMessageId,
            NotificationError::PayloadEmpty => Reason::PayloadEmpty,
            NotificationError::PayloadTooLarge { .. } => Reason::PayloadTooLarge,
        })
    }
}

#[cfg(test)]
mod tests;
