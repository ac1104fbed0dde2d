//! Prometheus metrics at `/metrics`.
//!
//! Each stage records its own through the `metrics` facade; labels stay bounded: app, outcome
//! (a state), reason (Apple's reason strings and the gateway's own), status class — never a
//! token or an id. Gauges that describe the present (connections, queues, halts, credentials)
//! are set when the page is scraped. The names are listed in docs/metrics.md.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// APNs answer time buckets, in seconds.
const RESPONSE_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Accept-to-delivered buckets, in seconds.
const DELIVERY_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0, 3600.0, 86_400.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process's recorder, installed on first use (one per process: a test binary may run
/// several gateways, which then share it). `None` if another recorder was installed first.
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("pushgate_apns_response_seconds".into()),
                    RESPONSE_BUCKETS,
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("pushgate_accept_to_delivered_seconds".into()),
                        DELIVERY_BUCKETS,
                    )
                })
                .and_then(PrometheusBuilder::install_recorder)
                .inspect(|h| start_upkeep(h.clone()))
                .map_err(|e| tracing::warn!(error = %e, "metrics are not recorded"))
                .ok()
        })
        .as_ref()
}

/// How often histogram samples are folded into their buckets.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The exporter keeps every histogram sample until it is folded into buckets, which happens at
/// a scrape or at upkeep; without upkeep, a gateway nobody scrapes would keep two samples per
/// notification forever. A thread of its own, so it runs whatever the runtimes do.
fn start_upkeep(handle: PrometheusHandle) {
    let started = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                // This thread's own timer (nothing else runs on it); an early wake-up only
                // folds sooner.
                std::thread::park_timeout(UPKEEP_INTERVAL);
                handle.run_upkeep();
            }
        });
    if let Err(e) = started {
        tracing::warn!(error = %e, "metrics upkeep did not start; histograms are folded at scrapes only");
    }
}

/// Notifications accepted (committed) by ingest.
pub fn accepted(app: &str, n: usize) {
    metrics::counter!("pushgate_notifications_accepted_total", "app" => app.to_owned())
        .increment(n as u64);
}

/// A beanstalkd job settled: `committed`, `replayed`, `released`, `buried` or `lost` (its
/// reservation ended before its verdict).
pub fn beanstalkd_job(tube: &str, outcome: &'static str) {
    metrics::counter!("pushgate_beanstalkd_jobs_total", "tube" => tube.to_owned(), "outcome" => outcome)
        .increment(1);
}

/// Accepted notifications whose token is not of the size devices issue today.
pub fn unusual_tokens(app: &str, n: u64) {
    metrics::counter!("pushgate_unusual_tokens_total", "app" => app.to_owned()).increment(n);
}

/// News from the other gateways sharing the spool, by kind.
pub fn cluster_event(kind: &'static str) {
    metrics::counter!("pushgate_cluster_events_total", "kind" => kind).increment(1);
}

/// Notifications of `app` cancelled before they were sent (`outcome="cancelled"`).
pub fn cancelled(app: &str, n: u64) {
    metrics::counter!(
        "pushgate_notifications_total",
        "app" => app.to_owned(),
        "outcome" => "cancelled",
        "reason" => "Cancelled"
    )
    .increment(n);
}

/// Notifications of `app` replaced by newer ones before they were sent
/// (`outcome="superseded"`).
pub fn superseded(app: &str, n: u64) {
    metrics::counter!(
        "pushgate_notifications_total",
        "app" => app.to_owned(),
        "outcome" => "superseded",
        "reason" => "Superseded"
    )
    .increment(n);
}

/// A submission answered from its idempotency key: stored before, nothing stored now.
pub fn replayed() {
    metrics::counter!("pushgate_idempotent_replays_total").increment(1);
}

/// An app's counters and histograms, registered once and reused: looking a metric up by name
/// and labels on every notification costs more than the rest of its bookkeeping.
#[derive(Debug)]
pub struct AppMetrics {
    app: String,
    attempts: [(&'static str, metrics::Counter); 7],
    response: metrics::Histogram,
    delivered_after: metrics::Histogram,
    /// `pushgate_notifications_total{outcome="delivered",reason=""}`, the common case, counted
    /// without the lock and lookup of `finished`.
    delivered_total: metrics::Counter,
    /// outcome → reason → counter; reason → retry counter. Few distinct keys per app; looked
    /// up by `&str`, so counting a known (outcome, reason) allocates nothing.
    finished: std::sync::Mutex<
        std::collections::HashMap<
            &'static str,
            std::collections::HashMap<String, metrics::Counter>,
        >,
    >,
    retries: std::sync::Mutex<std::collections::HashMap<String, metrics::Counter>>,
}

const RESULTS: [&str; 7] = [
    "2xx",
    "4xx",
    "5xx",
    "timeout",
    "connection_lost",
    "unreachable",
    "rejected_connection",
];

impl AppMetrics {
    pub fn new(app: &str) -> AppMetrics {
        let _ = handle();
        let a = app.to_owned();
        AppMetrics {
            attempts: RESULTS.map(|r| {
                (
                    r,
                    metrics::counter!("pushgate_attempts_total", "app" => a.clone(), "result" => r),
                )
            }),
            response: metrics::histogram!("pushgate_apns_response_seconds", "app" => a.clone()),
            delivered_after: metrics::histogram!("pushgate_accept_to_delivered_seconds", "app" => a.clone()),
            delivered_total: metrics::counter!(
                "pushgate_notifications_total",
                "app" => a.clone(),
                "outcome" => "delivered",
                "reason" => ""
            ),
            finished: Default::default(),
            retries: Default::default(),
            app: a,
        }
    }

    /// One attempt's result class (`2xx`, `4xx`, `5xx`, `timeout`, `connection_lost`,
    /// `unreachable`, `rejected_connection`) and, when APNs answered, its answer time.
    pub fn attempt(&self, result: &'static str, took: Option<Duration>) {
        if let Some((_, c)) = self.attempts.iter().find(|(r, _)| *r == result) {
            c.increment(1);
        }
        if let Some(t) = took {
            self.response.record(t.as_secs_f64());
        }
    }

    /// A notification reached a final state.
    pub fn finished(&self, outcome: &'static str, reason: &str) {
        if outcome == "delivered" && reason.is_empty() {
            self.delivered_total.increment(1);
            return;
        }
        let mut m = self.finished.lock().expect("metrics lock");
        let by_reason = m.entry(outcome).or_default();
        match by_reason.get(reason) {
            Some(c) => c.increment(1),
            None => {
                let c = metrics::counter!(
                    "pushgate_notifications_total",
                    "app" => self.app.clone(),
                    "outcome" => outcome,
                    "reason" => reason.to_owned()
                );
                c.increment(1);
                by_reason.insert(reason.to_owned(), c);
            }
        }
    }

    /// A retry was scheduled.
    pub fn retry(&self, reason: &str) {
        let mut m = self.retries.lock().expect("metrics lock");
        match m.get(reason) {
            Some(c) => c.increment(1),
            None => {
                let c = metrics::counter!("pushgate_retries_total", "app" => self.app.clone(), "reason" => reason.to_owned());
                c.increment(1);
                m.insert(reason.to_owned(), c);
            }
        }
    }

    /// Time from acceptance to delivery (`now`); acceptance is read from the id (a
    /// time-ordered UUID).
    pub fn delivered(&self, id: &apns::ApnsId, now: SystemTime) {
        let Some(accepted) = id.created_at() else {
            return;
        };
        if let Ok(d) = now.duration_since(accepted) {
            self.delivered_after.record(d.as_secs_f64());
        }
    }
}

/// Rows the scheduler read from the spool for `app` (pages of its ready notifications).
pub fn rows_read(app: &str, n: usize) {
    metrics::counter!("pushgate_spool_rows_read_total", "app" => app.to_owned())
        .increment(n as u64);
}

/// Failures waiting in the bounce outbox for a DSN.
pub fn bounces_waiting(n: u64) {
    metrics::gauge!("pushgate_bounces_waiting").set(n as f64);
}

/// A DSN's fate: `sent` (the relay took it), `deferred` (refused for now or unreachable; tried
/// again), `failed` (refused for good, or given up).
pub fn bounce(outcome: &'static str) {
    metrics::counter!("pushgate_bounces_total", "outcome" => outcome).increment(1);
}

/// A commit of outcomes the spool refused (dispatch pauses until one succeeds).
pub fn outcome_commit_failed() {
    metrics::counter!("pushgate_outcome_commit_failures_total").increment(1);
}

/// A gauge set at scrape time.
pub fn gauge(name: &'static str, labels: &[(&'static str, String)], value: f64) {
    let labels: Vec<metrics::Label> = labels
        .iter()
        .map(|(k, v)| metrics::Label::new(*k, v.clone()))
        .collect();
    metrics::gauge!(name, labels).set(value);
}

/// A connection (HTTP) or session (SMTP) opened on `listener`.
pub fn connection_opened(listener: &'static str) {
    metrics::gauge!("pushgate_connections_open", "listener" => listener).increment(1.0);
}

/// One closed.
pub fn connection_closed(listener: &'static str) {
    metrics::gauge!("pushgate_connections_open", "listener" => listener).decrement(1.0);
}

/// A submission a key's rate limit refused (`key`: its name, from the configuration).
pub fn rate_limited(key: &str) {
    metrics::counter!("pushgate_rate_limited_total", "key" => key.to_owned()).increment(1);
}

/// A credential presented and refused: a wrong API key (HTTP, the injector, the dashboard's
/// login) or SMTP AUTH.
pub fn auth_failed(listener: &'static str) {
    metrics::counter!("pushgate_auth_failures_total", "listener" => listener).increment(1);
}

/// A connection refused past the listener's cap.
pub fn connection_refused(listener: &'static str) {
    metrics::counter!("pushgate_connections_refused_total", "listener" => listener).increment(1);
}

/// A connection closed because a deadline passed: `phase` is `handshake`, `header`, `idle`,
/// `body` (HTTP) or `command`, `data` (SMTP).
pub fn connection_timed_out(listener: &'static str, phase: &'static str) {
    metrics::counter!("pushgate_connections_timed_out_total", "listener" => listener, "phase" => phase)
        .increment(1);
}
