//! Spool figures for BENCHMARKS.md: submit throughput and CPU per notification by batch size,
//! recovery time and file size for a large backlog.
//!
//! ```text
//! cargo run --release -p gateway --example spool_bench -- submit --batch 100 --total 200000
//! cargo run --release -p gateway --example spool_bench -- recover --total 1000000
//! ```
#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use apns::payload::Payload;
use apns::{ApnsId, DeviceToken, PushType};
use clap::Parser;
use gateway::spool::{NewRequest, Spool, SpoolOptions, Store};

#[derive(Debug, Parser)]
enum Args {
    /// Submit `total` notifications in requests of `batch` tokens from `concurrency` tasks.
    Submit {
        #[arg(long, default_value_t = 100)]
        batch: u64,
        #[arg(long, default_value_t = 200_000)]
        total: u64,
        #[arg(long, default_value_t = 64)]
        concurrency: u64,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Fill a spool with `total` pending notifications, then time a restart's recovery.
    Recover {
        #[arg(long, default_value_t = 1_000_000)]
        total: u64,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (t(11) + t(12)) / 100.0
}

fn request(first: u64, n: u64, payload: &bytes::Bytes) -> NewRequest {
    NewRequest {
        submitted: None,
        app: "bench".into(),
        payload: payload.clone(),
        push_type: PushType::Alert,
        priority: None,
        topic: None,
        collapse_id: None,
        apns_expiration: None,
        send_at: None,
        expires_at: SystemTime::now() + Duration::from_secs(86_400),
        notifications: (first..first + n)
            .map(|i| {
                (
                    ApnsId::new(),
                    DeviceToken::parse(&format!("{i:064x}")).unwrap(),
                )
            })
            .collect(),
        bounce: None,
        supersede: None,
    }
}

fn workdir(dir: Option<PathBuf>) -> (Option<tempfile::TempDir>, PathBuf) {
    match dir {
        Some(d) => (None, d.join("bench-spool.db")),
        None => {
            let t = tempfile::tempdir_in(".").unwrap();
            let p = t.path().join("bench-spool.db");
            (Some(t), p)
        }
    }
}

fn file_size(path: &std::path::Path) -> u64 {
    ["", "-wal"]
        .iter()
        .map(|s| std::fs::metadata(format!("{}{s}", path.display())).map_or(0, |m| m.len()))
        .sum()
}

async fn fill(spool: &Store, batch: u64, total: u64, concurrency: u64) {
    let payload = Payload::alert(
        "Hello",
        "A notification of about one hundred and fifty bytes of alert text.",
    )
    .encode()
    .unwrap();
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (spool, next, payload) = (spool.clone(), Arc::clone(&next), payload.clone());
        tasks.spawn(async move {
            loop {
                let first = next.fetch_add(batch, Ordering::Relaxed);
                if first >= total {
                    return;
                }
                let n = batch.min(total - first);
                spool
                    .enqueue(vec![request(first, n, &payload)])
                    .await
                    .unwrap();
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

#[tokio::main]
async fn main() {
    match Args::parse() {
        Args::Submit {
            batch,
            total,
            concurrency,
            dir,
        } => {
            let (_keep, path) = workdir(dir);
            let spool = Store::sqlite(&path, SpoolOptions::default()).unwrap();
            let (cpu0, t0) = (cpu_seconds(), Instant::now());
            fill(&spool, batch, total, concurrency).await;
            let (secs, cpu) = (t0.elapsed().as_secs_f64(), cpu_seconds() - cpu0);
            println!(
                "{}",
                serde_json::json!({
                    "batch": batch, "total": total, "concurrency": concurrency,
                    "seconds": secs, "notifications_per_second": (total as f64 / secs).round(),
                    "requests_per_second": ((total as f64 / batch as f64) / secs).round(),
                    "cpu_us_per_notification": (cpu * 1e6 / total as f64 * 10.0).round() / 10.0,
                    "file_bytes": file_size(&path),
                })
            );
            spool.close().await.unwrap();
        }
        Args::Recover { total, dir } => {
            let (_keep, path) = workdir(dir);
            let spool = Store::sqlite(&path, SpoolOptions::default()).unwrap();
            fill(&spool, 10_000, total, 4).await;
            spool.close().await.unwrap();
            let size = file_size(&path);
            let t0 = Instant::now();
            let spool = Store::sqlite(&path, SpoolOptions::default()).unwrap();
            let opened = t0.elapsed();
            let report = spool.recover().await.unwrap();
            let recovered = t0.elapsed();
            let mut after = None;
            let mut paged = 0;
            loop {
                let page = spool.pending_page(after, 10_000).await.unwrap();
                let Some(last) = page.last() else { break };
                after = Some(last.id);
                paged += page.len();
            }
            let all = t0.elapsed();
            println!(
                "{}",
                serde_json::json!({
                    "pending": report.pending, "paged": paged,
                    "open_ms": opened.as_millis(), "recover_ms": recovered.as_millis(),
                    "open_recover_and_page_all_ms": all.as_millis(),
                    "file_bytes": size, "bytes_per_notification": size / total.max(1),
                })
            );
        }
    }
}
