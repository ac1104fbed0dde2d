//! A job's body as propeller-apns' producers write it — `{"token", "title", "body", "badge"}`,
//! Python's `json.dumps` (any key order, `null`s, `\uXXXX` escapes) — plus, optionally, the
//! HTTP API's own keys (`topic`, `expiration`, `ttl`, `priority`, `push_type`, `collapse_id`,
//! `sound`, `data`, `aps`, `send_at`, `delay`) with their meanings and defaults. It becomes the API's
//! document for the tube's app, so every check and default is the API's.
//!
//! The payload is propeller's: `alert` with the `title` and `body` given (an empty or null one
//! left out), `badge` left out when it is 0 or null.

use serde_json::{Map, Value};

/// The keys a job may carry besides propeller's four.
const EXTENSIONS: [&str; 11] = [
    "topic",
    "expiration",
    "ttl",
    "priority",
    "push_type",
    "collapse_id",
    "sound",
    "data",
    "aps",
    "send_at",
    "delay",
];

/// The HTTP API's document for a job of `app`'s tube, or why the job is not a notification.
pub fn document(body: &[u8], app: &str) -> Result<Value, String> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(job)) => from_job(job, app),
        Ok(_) => Err("the job is not a JSON object".to_owned()),
        Err(e) => Err(format!("the job is not JSON: {e}")),
    }
}

/// As [`document`], for a job already parsed (propeller's form builds one).
pub fn from_job(job: Map<String, Value>, app: &str) -> Result<Value, String> {
    let mut doc = Map::new();
    doc.insert("app".to_owned(), Value::String(app.to_owned()));
    let mut alert = Map::new();
    for (k, v) in job {
        match k.as_str() {
            "token" => match v {
                Value::String(t) => {
                    doc.insert("tokens".to_owned(), Value::Array(vec![Value::String(t)]));
                }
                _ => return Err("\"token\" must be a string of hex digits".to_owned()),
            },
            "title" | "body" => match v {
                Value::Null => {}
                Value::String(s) if s.is_empty() => {}
                Value::String(s) => {
                    alert.insert(k, Value::String(s));
                }
                _ => return Err(format!("{k:?} must be a string or null")),
            },
            "badge" => match v {
                Value::Null => {}
                Value::Number(n) if n.as_u64() == Some(0) => {}
                Value::Number(n) if n.is_u64() => {
                    doc.insert(k, Value::Number(n));
                }
                _ => return Err("\"badge\" must be a whole number or null".to_owned()),
            },
            other if EXTENSIONS.contains(&other) => {
                doc.insert(k, v);
            }
            other => {
                return Err(format!(
                    "unknown field {other:?} (a job has token, title, body, badge and the API's {})",
                    EXTENSIONS.join(", ")
                ));
            }
        }
    }
    if !doc.contains_key("tokens") {
        return Err("the job has no \"token\"".to_owned());
    }
    if !alert.is_empty() {
        doc.insert("alert".to_owned(), Value::Object(alert));
    }
    Ok(Value::Object(doc))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(body: &str) -> Result<Value, String> {
        document(body.as_bytes(), "shop")
    }

    #[test]
    fn propellers_job_becomes_the_apis_document() {
        // As Python's json.dumps writes it: any order, escapes, nulls.
        let d = doc(r#"{"body": "Caf\u00e9 open", "badge": 3, "token": "aabb", "title": null}"#)
            .expect("a notification");
        assert_eq!(
            d,
            serde_json::json!({"app": "shop", "tokens": ["aabb"], "alert": {"body": "Café open"}, "badge": 3})
        );
        let d = doc(r#"{"token": "aabb", "title": "Hi", "body": "", "badge": 0}"#).unwrap();
        assert_eq!(
            d,
            serde_json::json!({"app": "shop", "tokens": ["aabb"], "alert": {"title": "Hi"}})
        );
        let d = doc(r#"{"token": "aabb", "title": "Hi", "ttl": 60, "data": {"o": 1}}"#).unwrap();
        assert_eq!(d["ttl"], 60);
        assert_eq!(d["data"]["o"], 1);
    }

    #[test]
    fn what_is_not_a_notification_says_why() {
        for (body, why) in [
            ("{not json", "not JSON"),
            ("[1]", "not a JSON object"),
            (r#"{"title": "Hi"}"#, "no \"token\""),
            (r#"{"token": 12}"#, "\"token\" must be"),
            (r#"{"token": "aa", "title": 3}"#, "\"title\" must be"),
            (r#"{"token": "aa", "badge": "3"}"#, "\"badge\" must be"),
            (r#"{"token": "aa", "badge": -1}"#, "\"badge\" must be"),
            (
                r#"{"token": "aa", "colour": "red"}"#,
                "unknown field \"colour\"",
            ),
        ] {
            let e = doc(body).unwrap_err();
            assert!(e.contains(why), "{body}: {e}");
        }
    }
}
