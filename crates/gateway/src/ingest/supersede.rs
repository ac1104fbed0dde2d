//! Which key, if any, a request supersedes by (`[[apps]] supersede`, docs/cancel.md): chosen
//! at intake from the app's setting in force, stored with the request, and compared by the
//! spool and dispatch from then on — a reload that changes the setting changes what newer
//! submissions do, never what was stored.

use serde::Deserialize;

use crate::config::{Config, Supersede as Mode};
use crate::spool::{NewRequest, Supersede, SupersedeKey};

/// Sets the supersede key of each of `requests` whose app's setting gives it one.
pub(super) fn choose(config: &Config, requests: &mut [NewRequest]) {
    // A submission is mostly one app: its setting is looked up once per run.
    let mut last: Option<(&str, Mode)> = None;
    for r in requests.iter_mut() {
        if r.collapse_id.is_none() && r.push_type != apns::PushType::LiveActivity {
            continue;
        }
        let mode = match last {
            Some((app, mode)) if app == r.app => mode,
            _ => {
                let Some(app) = config.app(&r.app) else {
                    continue;
                };
                last = Some((app.name.as_str(), app.supersede));
                app.supersede
            }
        };
        r.supersede = key(mode, r).map(Supersede::new);
    }
}

/// The key `r` supersedes by under `mode`.
fn key(mode: Mode, r: &NewRequest) -> Option<SupersedeKey> {
    match mode {
        Mode::Off => None,
        Mode::LiveActivity
            if r.push_type == apns::PushType::LiveActivity && is_update(&r.payload) =>
        {
            Some(SupersedeKey::live_activity())
        }
        Mode::CollapseId | Mode::LiveActivity => r.collapse_id.as_ref().map(SupersedeKey::collapse),
    }
}

/// Whether `payload` is a Live Activity update (`"aps": {"event": "update"}`). Ingest checked
/// the payload already; one that does not read is no update.
fn is_update(payload: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Payload<'a> {
        #[serde(borrow)]
        aps: Option<Aps<'a>>,
    }
    #[derive(Deserialize)]
    struct Aps<'a> {
        #[serde(borrow)]
        event: Option<std::borrow::Cow<'a, str>>,
    }
    serde_json::from_slice::<Payload<'_>>(payload)
        .ok()
        .and_then(|p| p.aps?.event)
        .is_some_and(|e| e == "update")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_updates_are_live_activity_updates() {
        assert!(is_update(
            br#"{"aps":{"event":"update","content-state":{}}}"#
        ));
        assert!(!is_update(br#"{"aps":{"event":"end"}}"#));
        assert!(!is_update(br#"{"aps":{"event":"start"}}"#));
        assert!(!is_update(br#"{"aps":{"alert":"hi"}}"#));
        assert!(!is_update(b"not json"));
    }
}
