//! Sends N notifications through the library to an APNs endpoint (the simulator) and reports
//! notifications/s, CPU seconds and peak RSS of this process, and how every notification ended.
//!
//! ```text
//! cargo run --release -p apns --example blast -- --endpoint https://127.0.0.1:2197 \
//!     --ca ca.pem --count 100000 --connections 4 --concurrency 400
//! ```
//! `scripts/bench-client.sh` runs it beside h2load against the same simulator.
#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use apns::auth::{Auth, SigningKey, TokenSigner};
use apns::clock::SystemClock;
use apns::payload::Payload;
use apns::{Consequence, DeviceToken, Endpoint, Notification, Pool, PoolConfig, PushType, Topic};
use clap::Parser;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value = "https://127.0.0.1:2197")]
    endpoint: String,
    /// Extra trust root (the simulator's CA).
    #[arg(long)]
    ca: PathBuf,
    #[arg(
        long,
        default_value = "crates/apns-mock/fixtures/AuthKey_ABC123DEFG.p8"
    )]
    key: PathBuf,
    #[arg(long, default_value_t = 100_000)]
    count: u64,
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Sending tasks sharing the pool (each waits for a stream slot).
    #[arg(long, default_value_t = 400)]
    concurrency: u64,
    /// Print the provider token's `authorization` header value and exit (for h2load).
    #[arg(long)]
    print_token: bool,
}

/// user + system CPU seconds of this process, from /proc (clock ticks of 1/100 s).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

#[tokio::main]
async fn main() {
    let a = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let key = SigningKey::from_file(&a.key, "ABC123DEFG", "TEAM123456").unwrap();
    let signer = Arc::new(TokenSigner::new(key, Arc::new(SystemClock)));
    if a.print_token {
        println!("{}", signer.token().unwrap().header().to_str().unwrap());
        return;
    }
    let mut config = PoolConfig::new(Endpoint::parse(&a.endpoint).unwrap(), Auth::Token(signer));
    config.extra_roots = vec![CertificateDer::from_pem_file(&a.ca).unwrap()];
    config.max_connections = a.connections;
    config.response_timeout = Duration::from_secs(30);
    let pool = Pool::new(config);
    // One payload for all, as the gateway shares a fan-out's body.
    let payload = Payload::alert(
        "Hello",
        "A notification of about two hundred bytes, like most alerts: who sent it, what it is about, and a line of detail so the user knows why it matters.",
    )
    .encode()
    .unwrap();
    let topic = Topic::parse("com.example.demo").unwrap();
    let next = Arc::new(AtomicU64::new(0));
    let cpu0 = cpu_seconds();
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..a.concurrency {
        let (pool, next, payload, topic) = (
            pool.clone(),
            Arc::clone(&next),
            payload.clone(),
            topic.clone(),
        );
        let count = a.count;
        tasks.spawn(async move {
            let mut tally: BTreeMap<String, u64> = BTreeMap::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return tally;
                }
                let token = DeviceToken::parse(&format!("{i:064x}")).unwrap();
                let mut n = Notification::new(token, PushType::Alert, payload.clone());
                n.topic = Some(topic.clone());
                let o = pool.send(&n).await;
                let key = match (o.consequence(), o.reason()) {
                    (Consequence::Delivered, _) => "delivered".to_owned(),
                    (c, Some(r)) => format!("{c:?}/{r}")
                        .replace("Retry { after: None, counts_as_attempt: true }", "retry"),
                    (c, None) => format!("{o:?}/{c:?}"),
                };
                *tally.entry(key).or_default() += 1;
            }
        });
    }
    let mut tally: BTreeMap<String, u64> = BTreeMap::new();
    while let Some(t) = tasks.join_next().await {
        for (k, v) in t.unwrap() {
            *tally.entry(k).or_default() += v;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let stats = pool.stats();
    let summary = serde_json::json!({
        "count": a.count,
        "seconds": (elapsed * 1000.0).round() / 1000.0,
        "per_second": (a.count as f64 / elapsed).round(),
        "cpu_seconds": cpu,
        "cpu_us_per_notification": (cpu * 1e6 / a.count as f64 * 10.0).round() / 10.0,
        "peak_rss_mb": (peak_rss_mb() * 10.0).round() / 10.0,
        "outcomes": tally,
        "connections_opened": stats.connections_opened,
        "peak_streams_per_connection": stats.peak_streams_per_connection,
    });
    println!("{summary}");
}
