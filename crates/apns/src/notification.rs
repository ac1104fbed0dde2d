//! One notification for one device, and the validated values it is made of.
//!
//! Each header value is a newtype that can only hold what Apple accepts, so a [`Notification`]
//! that passed [`Notification::validate`] is one APNs will not refuse for its shape.

use bytes::Bytes;

use crate::reason::Reason;

mod headers;
mod ids;

pub use headers::{CollapseId, Expiration, Priority, PushType, Topic};
pub use ids::{ApnsId, DeviceToken};

/// Payload limit for every push type but VoIP, in bytes of the JSON body.
pub const MAX_PAYLOAD: usize = 4096;
/// Payload limit for VoIP pushes.
pub const MAX_VOIP_PAYLOAD: usize = 5120;
/// Longest `apns-collapse-id`, in bytes.
pub const MAX_COLLAPSE_ID: usize = 64;
/// Longest device token we accept, in hex characters. Apple says not to assume 64, so we allow
/// growth, but a token of kilobytes is a client bug.
pub const MAX_TOKEN_HEX: usize = 200;

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
    #[error("collapse id is empty or has characters other than printable ASCII")]
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
