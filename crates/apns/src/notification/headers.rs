//! The header values of a notification, each a type that can only hold what Apple accepts.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use super::{MAX_COLLAPSE_ID, MAX_PAYLOAD, MAX_VOIP_PAYLOAD, NotificationError};

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
        // An HTTP/2 header value: visible ASCII and spaces (what `HeaderValue::from_str` takes).
        if s.is_empty() || !s.bytes().all(|b| (b' '..=b'~').contains(&b)) {
            return Err(NotificationError::InvalidCollapseId);
        }
        Ok(CollapseId(s.into()))
    }

    /// The header value.
    pub fn as_str(&self) -> &str {
        &self.0
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
