//! What the simulator saw: totals by status and reason, connections, the most streams in
//! flight on one connection, and a record of accepted notifications (full detail up to a
//! limit, ids always) so tests can check that every id arrived, and how often.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Live counters; shared by every connection.
#[derive(Debug, Default)]
pub struct Stats {
    counts: Mutex<BTreeMap<(u16, String), u64>>,
    pub(crate) connections_total: AtomicU64,
    pub(crate) connections_open: AtomicU64,
    pub(crate) max_in_flight: AtomicUsize,
    pub(crate) refused: AtomicU64,
    pub(crate) goaways: AtomicU64,
    record: Mutex<Record>,
    record_limit: AtomicUsize,
    /// Every provider token some connection took into use (a handful per hour).
    provider_tokens: Mutex<std::collections::HashSet<Box<str>>>,
}

#[derive(Debug, Default)]
struct Record {
    kept: Vec<Accepted>,
    /// Times each apns-id was accepted.
    ids: HashMap<u128, u32>,
    accepted: u64,
    duplicates: u64,
    /// For each first acceptance of a time-ordered (UUIDv7) apns-id: milliseconds from the
    /// time in the id (when the gateway accepted it) to this answer.
    latencies_ms: Vec<u32>,
}

/// One accepted notification, as `GET /notifications` shows it.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub token: String,
    pub apns_id: String,
    pub headers: Vec<(String, String)>,
    pub payload: Bytes,
}

/// A JSON line of `GET /notifications`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AcceptedJson {
    pub token: String,
    pub apns_id: String,
    pub headers: BTreeMap<String, String>,
    /// The payload, parsed when it is JSON, else as text.
    pub payload: serde_json::Value,
}

impl From<&Accepted> for AcceptedJson {
    fn from(a: &Accepted) -> AcceptedJson {
        AcceptedJson {
            token: a.token.clone(),
            apns_id: a.apns_id.clone(),
            headers: a.headers.iter().cloned().collect(),
            payload: serde_json::from_slice(&a.payload).unwrap_or_else(|_| {
                serde_json::Value::String(String::from_utf8_lossy(&a.payload).into_owned())
            }),
        }
    }
}

/// `GET /stats`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StatsSnapshot {
    /// Requests answered (refused streams are not answers).
    pub requests: u64,
    pub by_status: BTreeMap<String, u64>,
    pub by_reason: BTreeMap<String, u64>,
    pub connections_total: u64,
    pub connections_open: u64,
    /// The most streams in flight at once on one connection.
    pub max_streams_in_flight: usize,
    /// Streams reset with REFUSED_STREAM (the one-stream rule before a token is proven).
    pub refused_streams: u64,
    /// GOAWAY frames sent by `--goaway-every`.
    pub goaways: u64,
    /// 200 answers.
    pub accepted: u64,
    /// Distinct apns-ids among them.
    pub unique_ids: u64,
    /// Accepted answers for an id already accepted.
    pub duplicate_ids: u64,
    /// Distinct provider tokens (JWTs) that connections took into use: one per (team, key)
    /// every 50 minutes from a gateway that signs as Apple asks, however many connections.
    pub provider_tokens: u64,
}

impl Stats {
    pub(crate) fn new(record_limit: usize) -> Stats {
        let s = Stats::default();
        s.record_limit.store(record_limit, Ordering::Relaxed);
        s
    }

    pub(crate) fn count(&self, status: u16, reason: Option<&str>) {
        let mut c = self.counts.lock().expect("stats lock is never poisoned");
        *c.entry((status, reason.unwrap_or_default().to_owned()))
            .or_default() += 1;
    }

    pub(crate) fn accept(&self, id: u128, make: impl FnOnce() -> Accepted) {
        let limit = self.record_limit.load(Ordering::Relaxed);
        let mut r = self.record.lock().expect("stats lock is never poisoned");
        r.accepted += 1;
        let seen = r.ids.entry(id).or_default();
        *seen += 1;
        if *seen > 1 {
            r.duplicates += 1;
        } else if let Some(ms) = age_ms(id) {
            r.latencies_ms.push(ms);
        }
        if r.kept.len() < limit {
            r.kept.push(make());
        }
    }

    /// Accept-to-answer latencies so far, in milliseconds, sorted.
    pub fn latencies_ms(&self) -> Vec<u32> {
        let mut v = self.record.lock().expect("stats lock").latencies_ms.clone();
        v.sort_unstable();
        v
    }

    /// The totals now.
    pub fn snapshot(&self) -> StatsSnapshot {
        let mut s = StatsSnapshot::default();
        for ((status, reason), n) in self.counts.lock().expect("stats lock").iter() {
            s.requests += n;
            *s.by_status.entry(status.to_string()).or_default() += n;
            if !reason.is_empty() {
                *s.by_reason.entry(reason.clone()).or_default() += n;
            }
        }
        s.connections_total = self.connections_total.load(Ordering::Relaxed);
        s.connections_open = self.connections_open.load(Ordering::Relaxed);
        s.max_streams_in_flight = self.max_in_flight.load(Ordering::Relaxed);
        s.refused_streams = self.refused.load(Ordering::Relaxed);
        s.goaways = self.goaways.load(Ordering::Relaxed);
        s.provider_tokens = self.provider_tokens.lock().expect("stats lock").len() as u64;
        let r = self.record.lock().expect("stats lock");
        s.accepted = r.accepted;
        s.unique_ids = r.ids.len() as u64;
        s.duplicate_ids = r.duplicates;
        s
    }

    /// Counts a provider token (the `authorization` value) that a connection took into use.
    pub(crate) fn provider_token(&self, header: &str) {
        let mut seen = self.provider_tokens.lock().expect("stats lock");
        if !seen.contains(header) {
            seen.insert(header.into());
        }
    }

    /// The accepted notifications kept so far (up to the record limit).
    pub fn notifications(&self) -> Vec<AcceptedJson> {
        let r = self.record.lock().expect("stats lock");
        r.kept.iter().map(AcceptedJson::from).collect()
    }

    /// How many times each apns-id (lowercase) was accepted.
    pub fn id_counts(&self) -> HashMap<uuid::Uuid, u32> {
        let r = self.record.lock().expect("stats lock");
        r.ids
            .iter()
            .map(|(k, v)| (uuid::Uuid::from_u128(*k), *v))
            .collect()
    }

    /// Forgets everything (`POST /reset`); open connections stay counted as open.
    pub fn reset(&self) {
        self.counts.lock().expect("stats lock").clear();
        *self.record.lock().expect("stats lock") = Record::default();
        self.connections_total.store(
            self.connections_open.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
        self.max_in_flight.store(0, Ordering::Relaxed);
        self.refused.store(0, Ordering::Relaxed);
        self.goaways.store(0, Ordering::Relaxed);
        self.provider_tokens.lock().expect("stats lock").clear();
    }
}

/// The stats listener: `GET /stats`, `GET /notifications` (JSON lines), `GET /ids` (one
/// `id count` a line), `POST /reset`.
pub fn router(stats: std::sync::Arc<Stats>) -> axum::Router {
    use axum::routing::{get, post};
    use axum::{Json, extract::State, http::header, response::IntoResponse};
    type S = State<std::sync::Arc<Stats>>;
    async fn get_stats(State(s): S) -> Json<StatsSnapshot> {
        Json(s.snapshot())
    }
    async fn get_notifications(State(s): S) -> impl IntoResponse {
        let mut out = String::new();
        for n in s.notifications() {
            out.push_str(&serde_json::to_string(&n).expect("plain JSON values serialise"));
            out.push('\n');
        }
        ([(header::CONTENT_TYPE, "application/x-ndjson")], out)
    }
    /// Every accepted apns-id with how many times it was accepted, whatever the record limit:
    /// a soak's ledger of millions needs ids, not payloads.
    async fn get_ids(State(s): S) -> impl IntoResponse {
        use std::fmt::Write as _;
        let counts = s.id_counts();
        let mut out = String::with_capacity(counts.len() * 40);
        for (id, n) in counts {
            writeln!(out, "{id} {n}").expect("writing to a String cannot fail");
        }
        ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], out)
    }
    async fn post_reset(State(s): S) -> axum::http::StatusCode {
        s.reset();
        axum::http::StatusCode::NO_CONTENT
    }
    axum::Router::new()
        .route("/stats", get(get_stats))
        .route("/notifications", get(get_notifications))
        .route("/ids", get(get_ids))
        .route("/reset", post(post_reset))
        .with_state(stats)
}

/// Milliseconds since the time in a UUIDv7 `id`, if it is one.
fn age_ms(id: u128) -> Option<u32> {
    let u = uuid::Uuid::from_u128(id);
    let (secs, nanos) = u.get_timestamp()?.to_unix();
    let at = std::time::UNIX_EPOCH + std::time::Duration::new(secs, nanos);
    let age = std::time::SystemTime::now().duration_since(at).ok()?;
    Some(u32::try_from(age.as_millis()).unwrap_or(u32::MAX))
}
