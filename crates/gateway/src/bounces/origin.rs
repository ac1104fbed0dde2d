//! Which requests of an injected message get a bounce origin, and what it says: the return
//! path (the push part's `Return-Path`, else the message's, else the envelope sender), the
//! original headers, how the message came in.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use crate::config::Config;
use crate::ingest::mcmt::{Parsed, ReturnPath, header_section};
use crate::spool::{BounceOrigin, NewRequest};

/// The most of a message's header section a DSN quotes (it is stored with every message):
/// cut at a line end.
const MAX_HEADERS: usize = 16 * 1024;

/// How an injected message came in, for its origin.
pub struct Arrival<'a> {
    /// `smtp` or `inject`.
    pub way: &'static str,
    /// The SMTP client's address, the injecting key's name.
    pub received_from: String,
    /// The whole message (its header section is quoted).
    pub message: &'a [u8],
    /// The envelope sender of recipient `i` (SMTP: `MAIL FROM` for all; inject: each
    /// recipient's `from`).
    pub envelope: &'a dyn Fn(usize) -> ReturnPath,
}

impl std::fmt::Debug for Arrival<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Arrival")
            .field("way", &self.way)
            .field("received_from", &self.received_from)
            .field("message_bytes", &self.message.len())
            .finish_non_exhaustive()
    }
}

/// One notification of a request: its id and token.
type Notification = (apns::ApnsId, apns::DeviceToken);

/// Most distinct return paths one message's failures may go to; push parts naming more get
/// no bounce (each origin stores the message's headers again).
const MAX_ORIGINS: usize = 16;

/// Gives each request of `parsed` whose app has bounces on the origin its failures are
/// reported to; requests to the same return path share one. A request whose notifications
/// were made for recipients with different envelope senders (an injection's `from`s) is split,
/// into runs of neighbouring notifications that share a return path (the order of ids stays
/// the parse's, which an idempotent replay relies on), so that no sender hears of another's
/// tokens. Nothing when `[bounces]` is not configured, or the return path is absent
/// everywhere; nothing for a null envelope sender (`<>`), whatever the headers say.
pub fn attach(config: &Config, parsed: &mut Parsed, arrival: &Arrival<'_>) {
    if config.bounces.is_none() {
        return;
    }
    if parsed.origins.len() != parsed.requests.len() {
        tracing::warn!(
            way = arrival.way,
            "the parse gave no return path per request; no bounce for this message"
        );
        return;
    }
    let mut origins: HashMap<String, Arc<BounceOrigin>> = HashMap::new();
    let mut headers = None::<Vec<u8>>;
    let mut beyond = 0usize;
    let now = SystemTime::now();
    let requests = std::mem::take(&mut parsed.requests);
    let mut out = Vec::with_capacity(requests.len());
    for (r, (part, owners)) in requests.into_iter().zip(&parsed.origins) {
        if !config.app(&r.app).is_some_and(|a| a.bounces) {
            out.push(r);
            continue;
        }
        let path = |owner: usize| match (arrival.envelope)(owner) {
            ReturnPath::Null => ReturnPath::Null,
            envelope => part.clone().or(parsed.return_path.clone()).or(envelope),
        };
        // Each notification's return path, in order; most requests have one for all.
        let paths: Vec<Option<String>> = (0..r.notifications.len())
            .map(|i| match path(owners.get(i).copied().unwrap_or(0)) {
                ReturnPath::Address(a) => Some(a),
                ReturnPath::Absent | ReturnPath::Null => None,
            })
            .collect();
        let mut origin_of = |address: &Option<String>| -> Option<Arc<BounceOrigin>> {
            let address = address.as_ref()?;
            if let Some(o) = origins.get(address) {
                return Some(Arc::clone(o));
            }
            if origins.len() >= MAX_ORIGINS {
                beyond += 1;
                return None;
            }
            let o = Arc::new(BounceOrigin {
                return_path: address.clone(),
                headers: headers
                    .get_or_insert_with(|| quoted_headers(arrival.message))
                    .clone(),
                way: arrival.way.to_owned(),
                received_from: arrival.received_from.clone(),
                received_at: now,
            });
            origins.insert(address.clone(), Arc::clone(&o));
            Some(o)
        };
        if paths.iter().all(|p| *p == paths[0]) {
            let bounce = paths.first().and_then(&mut origin_of);
            out.push(NewRequest { bounce, ..r });
            continue;
        }
        let mut runs: Vec<(Option<String>, Vec<Notification>)> = Vec::new();
        for (n, p) in r.notifications.iter().zip(paths) {
            match runs.last_mut() {
                Some((q, list)) if *q == p => list.push(n.clone()),
                _ => runs.push((p, vec![n.clone()])),
            }
        }
        for (p, notifications) in runs {
            out.push(NewRequest {
                bounce: origin_of(&p),
                notifications,
                ..r.clone()
            });
        }
    }
    parsed.requests = out;
    if beyond > 0 {
        tracing::warn!(
            way = arrival.way,
            requests = beyond,
            "a message names more than {MAX_ORIGINS} return paths; the rest get no bounce"
        );
    }
}

/// The header section of `message`, at most [`MAX_HEADERS`] bytes, cut after a line.
fn quoted_headers(message: &[u8]) -> Vec<u8> {
    let head = header_section(message);
    if head.len() <= MAX_HEADERS {
        return head.to_vec();
    }
    let cut = head[..MAX_HEADERS]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(MAX_HEADERS, |i| i + 1);
    head[..cut].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_headers_are_cut_after_a_line() {
        let mut m = Vec::new();
        for i in 0..2000 {
            m.extend_from_slice(format!("X-Filler-{i}: some value\r\n").as_bytes());
        }
        m.extend_from_slice(b"\r\nbody");
        let q = quoted_headers(&m);
        assert!(q.len() <= MAX_HEADERS);
        assert!(q.ends_with(b"\r\n"), "cut at a line end");
        assert_eq!(quoted_headers(b"A: 1\r\n\r\nbody"), b"A: 1\r\n");
    }
}
