//! A run's figures: the report, the median of several runs, and its text form.

use serde_json::{Value, json};

/// The percentile `p` (0..1) of sorted `v`.
pub(super) fn percentile(v: &[u32], p: f64) -> Option<u32> {
    if v.is_empty() {
        return None;
    }
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v.get(i).copied()
}

/// The median of every numeric figure of `reports` (the first report's other fields).
pub(super) fn median_of(reports: &[Value]) -> Value {
    fn merge(values: &[&Value]) -> Value {
        match values[0] {
            Value::Object(first) => Value::Object(
                first
                    .keys()
                    .map(|k| {
                        let vs: Vec<&Value> = values.iter().map(|v| &v[k.as_str()]).collect();
                        (k.clone(), merge(&vs))
                    })
                    .collect(),
            ),
            Value::Number(_) => {
                let mut ns: Vec<f64> = values.iter().filter_map(|v| v.as_f64()).collect();
                ns.sort_by(f64::total_cmp);
                ns.get(ns.len() / 2).map_or(Value::Null, |m| json!(m))
            }
            other => other.clone(),
        }
    }
    let all: Vec<&Value> = reports.iter().collect();
    merge(&all)
}

/// One run's figures (`--json` prints them; BENCHMARKS.md quotes them).
#[derive(Debug, serde::Serialize)]
pub(super) struct Report {
    pub(super) notifications: u64,
    pub(super) rtt_ms: u64,
    pub(super) max_streams: u32,
    pub(super) connections: u32,
    pub(super) apps: u32,
    /// Apps the notifications are spread over (`--active`; the others are configured only).
    pub(super) active_apps: u32,
    /// Every app signs with one key (`--shared-key`), or each with a key of its own.
    pub(super) shared_key: bool,
    pub(super) payload_bytes: usize,
    pub(super) pinned: bool,
    /// `http`, or `beanstalkd` (then "accepted" is jobs committed and deleted).
    pub(super) source: &'static str,
    /// `sqlite` or `postgres`.
    pub(super) storage: &'static str,
    /// Gateway processes sharing the spool.
    pub(super) gateways: usize,
    /// The PostgreSQL server's CPU (postmaster and backends) a notification, when this bench
    /// started the server.
    pub(super) database_cpu_us_per_notification: Option<f64>,
    pub(super) accepted_per_s: u64,
    pub(super) delivered_per_s: u64,
    pub(super) seconds: f64,
    pub(super) gateway_cpu_s: f64,
    pub(super) gateway_cpu_s_per_1000: f64,
    pub(super) gateway_cpu_us_per_notification: f64,
    /// CPU µs a notification by thread name.
    pub(super) gateway_cpu_us_by_thread: std::collections::BTreeMap<String, f64>,
    pub(super) gateway_peak_rss_bytes: u64,
    pub(super) latency_ms: Latency,
    pub(super) simulator: SimulatorFigures,
    /// Every id reached the simulator exactly once.
    pub(super) exactly_once: bool,
    pub(super) h2load_per_s: Option<f64>,
    pub(super) of_h2load: Option<f64>,
}

#[derive(Debug, serde::Serialize)]
pub(super) struct Latency {
    pub(super) p50: Option<u32>,
    pub(super) p99: Option<u32>,
}

/// What the simulator counted.
#[derive(Debug, serde::Serialize)]
pub(super) struct SimulatorFigures {
    pub(super) accepted: u64,
    pub(super) unique_ids: u64,
    pub(super) duplicate_ids: u64,
    pub(super) connections: u64,
    pub(super) max_streams_in_flight: usize,
}

#[allow(clippy::print_stdout, reason = "the report")]
pub(super) fn print_report(r: &Value) {
    if r["mode"] == "cancel" {
        println!(
            "{} notifications waiting ({} app(s), {}): cancelled {} in {:.2} s ({} /s, {:.1} µs of gateway CPU each); the simulator saw {}",
            r["notifications"],
            r["apps"],
            r["storage"].as_str().unwrap_or("sqlite"),
            r["cancelled"],
            r["cancel_seconds"].as_f64().unwrap_or_default(),
            r["cancelled_per_s"],
            r["cancel_cpu_us_per_notification"]
                .as_f64()
                .unwrap_or_default(),
            r["simulator_accepted"],
        );
        return;
    }
    println!(
        "{} notifications ({} app(s){} × {} connections, {} streams, {} ms RTT, ~{} B payload, {}{}{})",
        r["notifications"],
        r["apps"],
        match (r["active_apps"].as_u64(), r["apps"].as_u64()) {
            (Some(m), Some(n)) if m < n => format!(", {m} sending"),
            _ => String::new(),
        } + if r["shared_key"] == true && r["apps"].as_u64() > Some(1) {
            ", one key"
        } else {
            ""
        },
        r["connections"],
        r["max_streams"],
        r["rtt_ms"],
        r["payload_bytes"],
        r["storage"].as_str().unwrap_or("sqlite"),
        match r["gateways"].as_u64() {
            Some(n) if n > 1 => format!(", {n} gateways"),
            _ => String::new(),
        },
        if r["pinned"] == true { ", pinned" } else { "" }
    );
    println!(
        "  {}   {:>9} /s\n  delivered  {:>9} /s  in {:.2} s",
        if r["source"] == "beanstalkd" {
            "jobs committed and deleted"
        } else {
            "accepted"
        },
        r["accepted_per_s"],
        r["delivered_per_s"],
        r["seconds"].as_f64().unwrap_or_default()
    );
    println!(
        "  gateway CPU {:.2} s per 1000 ({:.1} µs a notification), peak RSS {:.0} MB",
        r["gateway_cpu_s_per_1000"].as_f64().unwrap_or_default(),
        r["gateway_cpu_us_per_notification"]
            .as_f64()
            .unwrap_or_default(),
        r["gateway_peak_rss_bytes"].as_f64().unwrap_or_default() / 1e6
    );
    if let Some(db) = r["database_cpu_us_per_notification"].as_f64() {
        println!("  PostgreSQL CPU {db:.1} µs a notification (postmaster and backends)");
    }
    if let Some(by) = r["gateway_cpu_us_by_thread"].as_object() {
        let parts: Vec<String> = by
            .iter()
            .map(|(k, v)| format!("{k} {:.1}", v.as_f64().unwrap_or_default()))
            .collect();
        println!("  gateway CPU µs by thread: {}", parts.join(", "));
    }
    println!(
        "  accept → delivered p50 {} ms, p99 {} ms",
        r["latency_ms"]["p50"], r["latency_ms"]["p99"]
    );
    println!(
        "  simulator: {} accepted, {} unique, {} duplicates → exactly once: {}",
        r["simulator"]["accepted"],
        r["simulator"]["unique_ids"],
        r["simulator"]["duplicate_ids"],
        r["exactly_once"]
    );
    if let Some(c) = r["h2load_per_s"].as_f64() {
        println!(
            "  h2load -c 4 -m 100 ceiling {c:.0} /s; delivered is {:.0} % of it",
            r["of_h2load"].as_f64().unwrap_or_default() * 100.0
        );
    }
}
