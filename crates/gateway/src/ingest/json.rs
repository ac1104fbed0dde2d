//! The HTTP API's notification documents → spool requests.
//!
//! Atomic: every notification is checked before anything is submitted; the first problem
//! answers with its code and the index of its notification. Checks run key → scope → body, as
//! the contract orders them (the key is checked by the caller).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use apns::{ApnsId, CollapseId, DeviceToken, Expiration, Priority, PushType, Topic};
use bytes::Bytes;
use serde_json::{Map, Value};

use super::{Problem, Rejection};
use crate::auth::Caller;
use crate::config::{App, Config};
use crate::spool::NewRequest;

/// Most tokens in one request.
pub const MAX_TOKENS: usize = 10_000;

const FIELDS: &[&str] = &[
    "app",
    "tokens",
    "alert",
    "badge",
    "sound",
    "data",
    "aps",
    "push_type",
    "priority",
    "topic",
    "collapse_id",
    "expiration",
    "ttl",
    "send_at",
    "delay",
];

/// How far ahead a `delay`, `ttl` or `expiration` may reach: ten years.
const MAX_AHEAD_S: u64 = 10 * 365 * 86_400;

/// Parses and checks a `POST /v1/notifications` body; returns the requests to store and the ids
/// to answer, in request order, tokens in order.
pub fn parse(
    body: &[u8],
    caller: &Caller,
    config: &Config,
    now: SystemTime,
) -> Result<(Vec<NewRequest>, Vec<ApnsId>), Rejection> {
    let doc: Value = serde_json::from_slice(body)
        .map_err(|e| Rejection::new(Problem::InvalidJson, format!("the body is not JSON: {e}")))?;
    parse_value(&doc, caller, config, now)
}

/// As [`parse`], for a document already parsed (a beanstalkd job, propeller's form, built as
/// the API's document without a round trip through text).
pub fn parse_value(
    doc: &Value,
    caller: &Caller,
    config: &Config,
    now: SystemTime,
) -> Result<(Vec<NewRequest>, Vec<ApnsId>), Rejection> {
    let list: Vec<&Map<String, Value>> = match doc {
        Value::Object(o) if o.contains_key("notifications") => {
            if o.len() > 1 {
                return Err(field("a batch has only the key \"notifications\""));
            }
            match &o["notifications"] {
                Value::Array(a) if !a.is_empty() => a
                    .iter()
                    .enumerate()
                    .map(|(i, n)| {
                        n.as_object()
                            .ok_or_else(|| field("each notification is an object").at(i))
                    })
                    .collect::<Result<_, _>>()?,
                _ => return Err(field("\"notifications\" must be a non-empty array")),
            }
        }
        Value::Object(o) => vec![o],
        _ => {
            return Err(field(
                "the body must be a notification object or {\"notifications\": [...]}",
            ));
        }
    };
    // Scope first, for every notification.
    let mut apps = Vec::with_capacity(list.len());
    for (i, n) in list.iter().enumerate() {
        let name = n
            .get("app")
            .and_then(Value::as_str)
            .ok_or_else(|| field("\"app\" is required and must be a string").at(i))?;
        if !caller.may_use(name) {
            return Err(Rejection::new(
                Problem::ForbiddenApp,
                format!("this key may not use app {name:?}"),
            )
            .at(i));
        }
        let app = config.app(name).ok_or_else(|| {
            Rejection::new(Problem::UnknownApp, format!("no app is named {name:?}")).at(i)
        })?;
        apps.push(app);
    }
    let total: usize = list
        .iter()
        .map(|n| {
            n.get("tokens")
                .and_then(Value::as_array)
                .map_or(0, Vec::len)
        })
        .sum();
    if total > MAX_TOKENS {
        return Err(Rejection::new(
            Problem::TooManyTokens,
            format!("{total} tokens in one request; at most {MAX_TOKENS}"),
        ));
    }
    let mut requests = Vec::with_capacity(list.len());
    let mut ids = Vec::with_capacity(total);
    for (i, (n, app)) in list.iter().zip(apps).enumerate() {
        let r = one(n, app, now).map_err(|e| e.at(i))?;
        ids.extend(r.notifications.iter().map(|(id, _)| *id));
        requests.push(r);
    }
    Ok((requests, ids))
}

fn field(message: impl Into<String>) -> Rejection {
    Rejection::new(Problem::InvalidField, message)
}

fn int(n: &Map<String, Value>, key: &str) -> Result<Option<u64>, Rejection> {
    match n.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| field(format!("\"{key}\" must be a non-negative integer"))),
    }
}

fn string<'a>(n: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, Rejection> {
    match n.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(field(format!("\"{key}\" must be a string"))),
    }
}

pub(crate) fn one(
    n: &Map<String, Value>,
    app: &App,
    now: SystemTime,
) -> Result<NewRequest, Rejection> {
    if let Some(k) = n.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(field(format!("unknown field {k:?}")));
    }
    let tokens = match n.get("tokens") {
        Some(Value::Array(a)) if !a.is_empty() => a
            .iter()
            .enumerate()
            .map(|(j, t)| {
                let s = t
                    .as_str()
                    .ok_or_else(|| field(format!("tokens[{j}] must be a string")))?;
                DeviceToken::parse(s)
                    .map_err(|e| Rejection::new(Problem::InvalidToken, format!("tokens[{j}]: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?,
        _ => {
            return Err(field(
                "\"tokens\" is required: a non-empty array of hex device tokens",
            ));
        }
    };

    // The aps dictionary: a raw `aps` is the base; alert, badge and sound replace its keys.
    let mut aps = match n.get("aps") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(o)) => o.clone(),
        Some(_) => return Err(field("\"aps\" must be an object")),
    };
    match n.get("alert") {
        None | Some(Value::Null) => {}
        Some(v @ (Value::String(_) | Value::Object(_))) => {
            aps.insert("alert".into(), v.clone());
        }
        Some(_) => return Err(field("\"alert\" must be a string or an object")),
    }
    if let Some(b) = int(n, "badge")? {
        aps.insert("badge".into(), Value::from(b));
    }
    match n.get("sound") {
        None | Some(Value::Null) => {}
        Some(v @ (Value::String(_) | Value::Object(_))) => {
            aps.insert("sound".into(), v.clone());
        }
        Some(_) => return Err(field("\"sound\" must be a string or an object")),
    }
    let data = match n.get("data") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(o)) if o.contains_key("aps") => {
            return Err(field(
                "\"data\" may not contain \"aps\"; use the \"aps\" field",
            ));
        }
        Some(Value::Object(o)) => o.clone(),
        Some(_) => return Err(field("\"data\" must be an object")),
    };

    let push_type = match string(n, "push_type")? {
        Some(s) => match PushType::parse(s) {
            Ok(PushType::Other(_)) | Err(_) => {
                return Err(Rejection::new(
                    Problem::InvalidPushType,
                    format!("unknown push type {s:?}"),
                ));
            }
            Ok(t) => t,
        },
        None if ["alert", "badge", "sound"]
            .iter()
            .any(|k| aps.contains_key(*k)) =>
        {
            PushType::Alert
        }
        None if aps.len() == 1 && aps.get("content-available") == Some(&Value::from(1)) => {
            PushType::Background
        }
        None => {
            return Err(Rejection::new(
                Problem::InvalidPushType,
                "\"push_type\" is required unless the aps has alert, badge or sound (alert) or only content-available: 1 (background)",
            ));
        }
    };
    let priority = match n.get("priority") {
        None | Some(Value::Null) => push_type.default_priority(),
        Some(v) => v
            .as_u64()
            .and_then(|p| u8::try_from(p).ok())
            .and_then(|p| Priority::from_u8(p).ok())
            .ok_or_else(|| {
                Rejection::new(Problem::InvalidPriority, "\"priority\" must be 10, 5 or 1")
            })?,
    };
    if push_type == PushType::Background && priority == Priority::Immediate {
        return Err(Rejection::new(
            Problem::InvalidPriority,
            "background pushes must use priority 5 or 1",
        ));
    }
    let bundle = app.topic.as_str();
    let topic = match string(n, "topic")? {
        None => Topic::for_push_type(bundle, &push_type),
        Some(t) if t == bundle => Topic::for_push_type(bundle, &push_type),
        Some(t) if push_type.topic_suffix().is_some_and(|s| t.strip_suffix(s) == Some(bundle)) => {
            Topic::parse(t)
        }
        Some(t) => {
            return Err(Rejection::new(
                Problem::InvalidTopic,
                format!("topic {t:?} is not this app's topic {bundle:?} (with or without the push type's suffix)"),
            ));
        }
    }
    .map_err(|e| Rejection::new(Problem::InvalidTopic, e.to_string()))?;
    let collapse_id = string(n, "collapse_id")?
        .map(|c| {
            CollapseId::parse(c).map_err(|e| match e {
                apns::NotificationError::CollapseIdTooLong { .. } => {
                    Rejection::new(Problem::CollapseIdTooLong, e.to_string())
                }
                _ => field(format!("\"collapse_id\": {e}")),
            })
        })
        .transpose()?;

    if n.contains_key("send_at") && n.contains_key("delay") {
        return Err(Rejection::new(
            Problem::ConflictingFields,
            "give \"send_at\" or \"delay\", not both",
        ));
    }
    if n.contains_key("expiration") && n.contains_key("ttl") {
        return Err(Rejection::new(
            Problem::ConflictingFields,
            "give \"expiration\" or \"ttl\", not both",
        ));
    }
    // Beyond ten years is a mistake (and past the clock's range, an overflow): refused.
    let within = |field: &str, v: Option<u64>| match v {
        Some(s) if s > MAX_AHEAD_S => Err(Rejection::new(
            Problem::InvalidField,
            format!("\"{field}\" is more than ten years ahead"),
        )),
        other => Ok(other),
    };
    let delay = within("delay", int(n, "delay")?)?;
    let ttl = within("ttl", int(n, "ttl")?)?;
    let now_unix = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let expiration = int(n, "expiration")?;
    within("expiration", expiration.map(|e| e.saturating_sub(now_unix)))?;
    let send_at = match (string(n, "send_at")?, delay) {
        (Some(s), _) => Some(parse_rfc3339(s)?),
        (None, Some(d)) => Some(now + Duration::from_secs(d)),
        (None, None) => None,
    };
    let start = send_at.map_or(now, |s| s.max(now));
    let unix = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (apns_expiration, expires_at) = match (expiration, ttl) {
        (Some(0), _) | (None, Some(0)) => (Some(Expiration::Immediately), start + app.default_ttl),
        (Some(e), _) => {
            if e <= unix(start) {
                return Err(Rejection::new(
                    Problem::AlreadyExpired,
                    format!("expiration {e} is not after the send time {}", unix(start)),
                ));
            }
            (Some(Expiration::At(e)), UNIX_EPOCH + Duration::from_secs(e))
        }
        (None, Some(ttl)) => {
            let at = unix(start) + ttl;
            (
                Some(Expiration::At(at)),
                UNIX_EPOCH + Duration::from_secs(at),
            )
        }
        (None, None) => (None, start + app.default_ttl),
    };

    #[derive(serde::Serialize)]
    struct Body<'a> {
        aps: &'a Map<String, Value>,
        #[serde(flatten)]
        data: &'a Map<String, Value>,
    }
    let payload = serde_json::to_vec(&Body {
        aps: &aps,
        data: &data,
    })
    .map_err(|e| Rejection::new(Problem::Internal, format!("encoding the payload: {e}")))?;
    let limit = push_type.payload_limit();
    if payload.len() > limit {
        return Err(Rejection::new(
            Problem::PayloadTooLarge,
            format!(
                "the payload is {} bytes; Apple's limit for {push_type} is {limit}",
                payload.len()
            ),
        ));
    }
    Ok(NewRequest {
        submitted: None,
        app: app.name.clone(),
        payload: Bytes::from(payload),
        push_type,
        priority: Some(priority),
        topic: Some(topic),
        collapse_id,
        apns_expiration,
        send_at,
        expires_at,
        notifications: ApnsId::many(tokens.len()).into_iter().zip(tokens).collect(),
        bounce: None,
        supersede: None,
    })
}

fn parse_rfc3339(s: &str) -> Result<SystemTime, Rejection> {
    crate::rfc3339::parse(s).map_err(|_| {
        field(format!(
            "\"send_at\" {s:?} is not an RFC 3339 time with an offset"
        ))
    })
}
