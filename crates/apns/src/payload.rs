//! The JSON body: Apple's `aps` dictionary plus custom top-level keys.
//!
//! Field order follows Apple's documentation so encoded payloads are stable and comparable
//! byte for byte. Every optional key is left out when unset.

use bytes::Bytes;
use serde::Serialize;
use serde_json::{Map, Value};

/// A complete payload: `{"aps": {...}, <custom keys>...}`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Payload {
    pub aps: Aps,
    /// Custom keys beside `aps` (Apple ignores custom keys inside `aps`).
    #[serde(flatten)]
    pub custom: Map<String, Value>,
}

/// Apple's keys.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Aps {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert: Option<Alert>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub badge: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sound: Option<Sound>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_available: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mutable_content: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_content_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interruption_level: Option<InterruptionLevel>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relevance_score: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter_criteria: Option<String>,
    /// Live Activity: UNIX seconds after which the activity is stale.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stale_date: Option<u64>,
    /// Live Activity: the new ContentState.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_state: Option<Value>,
    /// Live Activity: send time in UNIX seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<u64>,
    /// Live Activity: start, update or end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<LiveActivityEvent>,
    /// Live Activity end: when to remove it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dismissal_date: Option<u64>,
    /// Live Activity start: the ActivityAttributes type name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attributes_type: Option<String>,
    /// Live Activity start: the static attributes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attributes: Option<Value>,
    /// Live Activity start (iOS 18+): 1 asks for a per-activity update token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_push_token: Option<u8>,
    /// Live Activity start (iOS 18+): the broadcast channel to listen on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_push_channel: Option<String>,
}

/// `aps.alert`: a plain string (shown as the body) or a dictionary.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Alert {
    Body(String),
    Fields(Box<AlertFields>),
}

/// The alert dictionary.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct AlertFields {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subtitle: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub launch_image: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title_loc_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title_loc_args: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subtitle_loc_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subtitle_loc_args: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loc_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loc_args: Option<Vec<String>>,
}

/// `aps.sound`: a sound name, or the critical-alert dictionary.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Sound {
    Name(String),
    Critical(CriticalSound),
}

/// A critical alert sound.
#[derive(Debug, Clone, Serialize)]
pub struct CriticalSound {
    /// Always 1 for a critical alert.
    pub critical: u8,
    pub name: String,
    /// 0.0 to 1.0.
    pub volume: f64,
}

/// `aps.interruption-level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum InterruptionLevel {
    Passive,
    Active,
    TimeSensitive,
    Critical,
}

/// `aps.event` of a Live Activity push.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LiveActivityEvent {
    Start,
    Update,
    End,
}

/// Why a payload could not be encoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PayloadError {
    #[error("custom key \"aps\" would replace Apple's dictionary; put custom data beside aps")]
    CustomApsKey,
    #[error("encoding payload as JSON")]
    Json(#[source] serde_json::Error),
}

impl Payload {
    /// An alert with a title and a body.
    pub fn alert(title: impl Into<String>, body: impl Into<String>) -> Payload {
        Payload {
            aps: Aps {
                alert: Some(Alert::Fields(Box::new(AlertFields {
                    title: Some(title.into()),
                    body: Some(body.into()),
                    ..AlertFields::default()
                }))),
                ..Aps::default()
            },
            custom: Map::new(),
        }
    }

    /// A silent background update (`content-available: 1`).
    pub fn background() -> Payload {
        Payload {
            aps: Aps {
                content_available: Some(1),
                ..Aps::default()
            },
            custom: Map::new(),
        }
    }

    /// Adds a custom top-level key.
    pub fn custom(mut self, key: impl Into<String>, value: Value) -> Payload {
        self.custom.insert(key.into(), value);
        self
    }

    /// Encodes the body once; the result can be shared by every notification of a fan-out.
    /// Size limits depend on the push type and are checked by `Notification::validate`.
    pub fn encode(&self) -> Result<Bytes, PayloadError> {
        if self.custom.contains_key("aps") {
            return Err(PayloadError::CustomApsKey);
        }
        let mut buf = Vec::with_capacity(256);
        serde_json::to_writer(&mut buf, self).map_err(PayloadError::Json)?;
        Ok(Bytes::from(buf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn encoded(p: &Payload) -> String {
        String::from_utf8(p.encode().unwrap().to_vec()).unwrap()
    }

    #[test]
    fn a_simple_alert() {
        let p = Payload::alert("Hello", "World");
        assert_eq!(
            encoded(&p),
            r#"{"aps":{"alert":{"title":"Hello","body":"World"}}}"#
        );
    }

    #[test]
    fn a_string_alert_with_badge_sound_and_custom_keys() {
        let mut p = Payload::default().custom("order", json!({"id": 42}));
        p.aps.alert = Some(Alert::Body("Your order shipped".into()));
        p.aps.badge = Some(0);
        p.aps.sound = Some(Sound::Name("default".into()));
        p.aps.thread_id = Some("orders".into());
        p.aps.category = Some("ORDER".into());
        assert_eq!(
            encoded(&p),
            r#"{"aps":{"alert":"Your order shipped","badge":0,"sound":"default","thread-id":"orders","category":"ORDER"},"order":{"id":42}}"#
        );
    }

    #[test]
    fn every_alert_key_and_a_critical_sound() {
        let mut p = Payload::default();
        p.aps.alert = Some(Alert::Fields(Box::new(AlertFields {
            title: Some("T".into()),
            subtitle: Some("S".into()),
            body: Some("B".into()),
            launch_image: Some("L.png".into()),
            title_loc_key: Some("TK".into()),
            title_loc_args: Some(vec!["a".into()]),
            subtitle_loc_key: Some("SK".into()),
            subtitle_loc_args: Some(vec!["b".into()]),
            loc_key: Some("K".into()),
            loc_args: Some(vec!["c".into(), "d".into()]),
        })));
        p.aps.sound = Some(Sound::Critical(CriticalSound {
            critical: 1,
            name: "alarm.caf".into(),
            volume: 0.5,
        }));
        p.aps.mutable_content = Some(1);
        p.aps.target_content_id = Some("win".into());
        p.aps.interruption_level = Some(InterruptionLevel::TimeSensitive);
        p.aps.relevance_score = Some(0.75);
        p.aps.filter_criteria = Some("work".into());
        assert_eq!(
            encoded(&p),
            concat!(
                r#"{"aps":{"alert":{"title":"T","subtitle":"S","body":"B","launch-image":"L.png","#,
                r#""title-loc-key":"TK","title-loc-args":["a"],"subtitle-loc-key":"SK","#,
                r#""subtitle-loc-args":["b"],"loc-key":"K","loc-args":["c","d"]},"#,
                r#""sound":{"critical":1,"name":"alarm.caf","volume":0.5},"mutable-content":1,"#,
                r#""target-content-id":"win","interruption-level":"time-sensitive","#,
                r#""relevance-score":0.75,"filter-criteria":"work"}}"#
            )
        );
    }

    #[test]
    fn live_activity_keys() {
        let mut p = Payload::default();
        p.aps.timestamp = Some(1_700_000_000);
        p.aps.event = Some(LiveActivityEvent::Start);
        p.aps.content_state = Some(json!({"score": "1-0"}));
        p.aps.stale_date = Some(1_700_003_600);
        p.aps.dismissal_date = Some(1_700_007_200);
        p.aps.attributes_type = Some("MatchAttributes".into());
        p.aps.attributes = Some(json!({"home": "A"}));
        p.aps.input_push_token = Some(1);
        p.aps.input_push_channel = Some("dHN0LXNyY2g=".into());
        assert_eq!(
            encoded(&p),
            concat!(
                r#"{"aps":{"stale-date":1700003600,"content-state":{"score":"1-0"},"#,
                r#""timestamp":1700000000,"event":"start","dismissal-date":1700007200,"#,
                r#""attributes-type":"MatchAttributes","attributes":{"home":"A"},"#,
                r#""input-push-token":1,"input-push-channel":"dHN0LXNyY2g="}}"#
            )
        );
    }

    #[test]
    fn background_payload() {
        assert_eq!(
            encoded(&Payload::background()),
            r#"{"aps":{"content-available":1}}"#
        );
    }

    #[test]
    fn a_custom_aps_key_is_refused() {
        let p = Payload::alert("a", "b").custom("aps", json!({}));
        assert!(matches!(p.encode(), Err(PayloadError::CustomApsKey)));
    }
}
