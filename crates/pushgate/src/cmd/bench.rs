//! `pushgate bench`: an end-to-end measurement on one machine.
//!
//! It starts the APNs simulator in this process (`--rtt-ms` of latency on every answer,
//! `--max-streams` per connection) and a real `pushgate serve` process with a configuration of
//! its own and a fresh SQLite spool, submits N notifications through the HTTP API in batches
//! (distinct tokens, an alert of `--payload-bytes`, token auth), and waits until the simulator
//! has acknowledged every one. It reports the accepted and delivered rates, the gateway's CPU
//! (user + system, from /proc) per notification, its peak RSS, the accept → delivered latency
//! (p50, p99, from the time in each UUIDv7 id to the simulator's answer), and whether the
//! simulator saw every id exactly once. With `--h2load` it also measures the raw HTTP/2 ceiling
//! of this machine: h2load `-c 4 -m 100` against a second simulator with the same payload and
//! headers.
//!
//! With `--pin` (on machines with at least two CPUs) the gateway runs on CPU 0 and this process
//! (simulator and load) on CPU 1, both through taskset(1).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Notifications to send.
    #[arg(short = 'n', long, default_value_t = 100_000)]
    notifications: u64,
    /// Latency the simulator adds to every answer (a round trip to Apple).
    #[arg(long, default_value_t = 0)]
    rtt_ms: u64,
    /// The simulator's MAX_CONCURRENT_STREAMS per connection.
    #[arg(long, default_value_t = 1000)]
    max_streams: u32,
    /// Connections per app (`max_connections`).
    #[arg(long, default_value_t = 4)]
    connections: u32,
    /// Apps; notifications are spread over them evenly.
    #[arg(long, default_value_t = 1)]
    apps: u32,
    /// Size of each notification's JSON payload, in bytes (about).
    #[arg(long, default_value_t = 150)]
    payload_bytes: usize,
    /// Tokens per HTTP request.
    #[arg(long, default_value_t = 10_000)]
    batch: usize,
    /// Requests submitted at once.
    #[arg(long, default_value_t = 2)]
    concurrency: usize,
    /// Pin the gateway to CPU 0 and the simulator and load to CPU 1 (taskset).
    #[arg(long)]
    pin: bool,
    /// Also measure h2load -c 4 -m 100 against a simulator with the same payload and headers.
    #[arg(long)]
    h2load: bool,
    /// Print one JSON document.
    #[arg(long)]
    json: bool,
    /// Keep the working folder (configuration, spool, logs of the last run) here instead of a
    /// temporary one.
    #[arg(long)]
    keep: Option<PathBuf>,
    /// Repeat the whole measurement this many times (each with a fresh gateway and spool) and
    /// report the median of each figure too.
    #[arg(long, default_value_t = 1)]
    runs: u32,
}

/// The gateway process; killed if the bench ends early.
struct Gateway {
    child: Child,
    url: String,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// user + system CPU seconds of `pid`, from /proc.
fn cpu_seconds(pid: u32, ticks: f64) -> anyhow::Result<f64> {
    stat_cpu(
        &std::fs::read_to_string(format!("/proc/{pid}/stat"))?,
        ticks,
    )
}

/// user + system CPU seconds in the text of a `/proc/.../stat` file.
fn stat_cpu(stat: &str, ticks: f64) -> anyhow::Result<f64> {
    // The command name may hold spaces; fields are counted after its closing parenthesis.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let (utime, stime): (f64, f64) = (f[11].parse()?, f[12].parse()?);
    Ok((utime + stime) / ticks)
}

/// user + system CPU seconds of each live thread of `pid`, by thread id, with its name.
fn thread_cpu(
    pid: u32,
    ticks: f64,
) -> anyhow::Result<std::collections::HashMap<u32, (String, f64)>> {
    let mut out = std::collections::HashMap::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let entry = entry?;
        let Some(tid) = entry
            .file_name()
            .to_str()
            .and_then(|t| t.parse::<u32>().ok())
        else {
            continue;
        };
        // A thread may end between the listing and the read.
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let name = stat
            .split_once('(')
            .and_then(|(_, r)| r.rsplit_once(')'))
            .map_or("?", |(n, _)| n)
            .to_owned();
        out.insert(tid, (name, stat_cpu(&stat, ticks)?));
    }
    Ok(out)
}

/// CPU µs a notification by thread name between two [`thread_cpu`] readings; what threads
/// that ended in between used is the rest of `total`, reported as "other".
fn cpu_by_thread(
    before: &std::collections::HashMap<u32, (String, f64)>,
    after: &std::collections::HashMap<u32, (String, f64)>,
    total: f64,
    n: f64,
) -> std::collections::BTreeMap<String, f64> {
    let mut by: std::collections::BTreeMap<String, f64> = std::collections::BTreeMap::new();
    for (tid, (name, cpu)) in after {
        let was = before.get(tid).map_or(0.0, |(_, c)| *c);
        *by.entry(name.clone()).or_default() += cpu - was;
    }
    let counted: f64 = by.values().sum();
    *by.entry("other".to_owned()).or_default() += (total - counted).max(0.0);
    by.into_iter().map(|(k, v)| (k, v * 1e6 / n)).collect()
}

/// Peak resident set of `pid`, in bytes.
fn peak_rss(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .context("no VmHWM")?;
    Ok(kb.parse::<u64>()? * 1024)
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// The alert body that makes the payload about `bytes` long.
fn alert_body(bytes: usize) -> String {
    // {"aps":{"alert":{"title":"Hello","body":"..."}}} is 41 bytes around the body.
    "x".repeat(bytes.saturating_sub(41).max(1))
}

fn write_config(
    dir: &Path,
    sim: &apns_mock::RunningMock,
    a: &Args,
    key_hash: &str,
) -> anyhow::Result<PathBuf> {
    std::fs::write(dir.join("sim-ca.pem"), sim.ca_pem().unwrap_or_default())?;
    let mut text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nshutdown_grace_s = 5\n\n[storage]\nsqlite = \"spool.db\"\n\n\
         [[api_keys]]\nname = \"bench\"\nkey_sha256 = \"{key_hash}\"\nadmin = true\n"
    );
    for i in 0..a.apps {
        text.push_str(&format!(
            "\n[[apps]]\nname = \"bench{i}\"\ntopic = \"com.example.bench{i}\"\nenvironment = \"sandbox\"\n\
             endpoint = \"{}\"\nca_file = \"sim-ca.pem\"\nkey_file = \"bench-key.p8\"\nkey_id = \"BENCHKEY01\"\n\
             team_id = \"BENCHTEAM1\"\nmax_connections = {}\n",
            sim.endpoint(),
            a.connections
        ));
    }
    let file = dir.join("pushgate.toml");
    std::fs::write(&file, text)?;
    Ok(file)
}

fn start_gateway(config: &Path, dir: &Path, pin: bool) -> anyhow::Result<Gateway> {
    let exe = std::env::current_exe()?;
    let log = std::fs::File::create(dir.join("serve.log"))?;
    let mut cmd = if pin {
        let mut c = Command::new("taskset");
        c.args(["-c", "0"]).arg(&exe);
        c
    } else {
        Command::new(&exe)
    };
    let mut child = cmd
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .context("starting pushgate serve")?;
    let line = BufReader::new(child.stdout.take().context("no stdout")?)
        .lines()
        .next()
        .context("pushgate serve exited before listening; see serve.log")??;
    let url = line
        .strip_prefix("pushgate listening on ")
        .with_context(|| format!("unexpected first line {line:?}"))?
        .to_owned();
    Ok(Gateway { child, url })
}

/// The percentile `p` (0..1) of sorted `v`.
fn percentile(v: &[u32], p: f64) -> Option<u32> {
    if v.is_empty() {
        return None;
    }
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v.get(i).copied()
}

#[allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the report is this command's output"
)]
pub async fn run(a: Args) -> anyhow::Result<ExitCode> {
    if a.notifications == 0 || a.apps == 0 || a.batch == 0 || a.concurrency == 0 || a.runs == 0 {
        eprintln!(
            "pushgate bench: -n, --apps, --batch, --concurrency and --runs must be at least 1"
        );
        return Ok(ExitCode::from(2));
    }
    let mut reports = Vec::new();
    for _ in 0..a.runs {
        let report = run_once(&a).await?;
        if a.json {
            println!("{report}");
        } else {
            print_report(&report);
        }
        reports.push(report);
    }
    if a.runs > 1 {
        let median = median_of(&reports);
        if a.json {
            println!("{}", json!({ "median": median }));
        } else {
            println!("median of {} runs:", a.runs);
            print_report(&median);
        }
    }
    Ok(if reports.iter().all(|r| r["exactly_once"] == true) {
        ExitCode::SUCCESS
    } else {
        eprintln!("pushgate bench: the simulator did not see every id exactly once");
        ExitCode::from(1)
    })
}

/// The median of every numeric figure of `reports` (the first report's other fields).
fn median_of(reports: &[Value]) -> Value {
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
struct Report {
    notifications: u64,
    rtt_ms: u64,
    max_streams: u32,
    connections: u32,
    apps: u32,
    payload_bytes: usize,
    pinned: bool,
    accepted_per_s: u64,
    delivered_per_s: u64,
    seconds: f64,
    gateway_cpu_s: f64,
    gateway_cpu_s_per_1000: f64,
    gateway_cpu_us_per_notification: f64,
    /// CPU µs a notification by thread name.
    gateway_cpu_us_by_thread: std::collections::BTreeMap<String, f64>,
    gateway_peak_rss_bytes: u64,
    latency_ms: Latency,
    simulator: SimulatorFigures,
    /// Every id reached the simulator exactly once.
    exactly_once: bool,
    h2load_per_s: Option<f64>,
    of_h2load: Option<f64>,
}

#[derive(Debug, serde::Serialize)]
struct Latency {
    p50: Option<u32>,
    p99: Option<u32>,
}

/// What the simulator counted.
#[derive(Debug, serde::Serialize)]
struct SimulatorFigures {
    accepted: u64,
    unique_ids: u64,
    duplicate_ids: u64,
    connections: u64,
    max_streams_in_flight: usize,
}

/// One measurement: a fresh simulator, gateway and spool.
async fn run_once(a: &Args) -> anyhow::Result<Value> {
    let tmp = tempfile::tempdir()?;
    let dir = match &a.keep {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            // A fresh spool for every run.
            for f in ["spool.db", "spool.db-wal", "spool.db-shm"] {
                let _ = std::fs::remove_file(d.join(f));
            }
            d.clone()
        }
        None => tmp.path().to_owned(),
    };
    // A signing key of its own, trusted by the simulator.
    let key = rcgen::KeyPair::generate().context("generating the signing key")?;
    std::fs::write(dir.join("bench-key.p8"), key.serialize_pem())?;
    let sim = apns_mock::MockApns::builder()
        .jwt_key(key.public_key_pem().into_bytes())
        .latency(Duration::from_millis(a.rtt_ms))
        .max_streams(a.max_streams)
        .record_limit(0)
        .spawn()
        .await?;
    if a.pin {
        // This process: simulator and load on CPU 1 (every thread).
        let _ = Command::new("taskset")
            .args(["-a", "-p", "-c", "1", &std::process::id().to_string()])
            .stdout(Stdio::null())
            .status();
    }
    let api_key = "bench-api-key-0123456789";
    let config = write_config(&dir, &sim, a, &gateway::auth::key_sha256_hex(api_key))?;
    let gw = start_gateway(&config, &dir, a.pin)?;
    let pid = gw.child.id();
    let ticks = clock_ticks();

    // Bodies built before the clock starts: distinct tokens, one app per batch in turn.
    let body = alert_body(a.payload_bytes);
    let batches: Vec<Bytes> = (0..a.notifications)
        .step_by(a.batch)
        .enumerate()
        .map(|(i, start)| {
            let end = (start + a.batch as u64).min(a.notifications);
            let tokens: Vec<String> = (start..end).map(|t| format!("{t:064x}")).collect();
            Bytes::from(
                json!({"app": format!("bench{}", i as u32 % a.apps), "tokens": tokens,
                       "alert": {"title": "Hello", "body": body}})
                .to_string(),
            )
        })
        .collect();
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let url = format!("{}/v1/notifications", gw.url);
    let cpu0 = cpu_seconds(pid, ticks)?;
    let threads0 = thread_cpu(pid, ticks)?;
    let t0 = Instant::now();
    let submit = |b: Bytes| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let req = http::Request::post(url)
                .header("content-type", "application/json")
                .header("authorization", format!("Bearer {api_key}"))
                .body(Full::new(b))?;
            let resp = client.request(req).await?;
            let status = resp.status();
            let text = resp.into_body().collect().await?.to_bytes();
            if status != 202 {
                bail!(
                    "the gateway answered {status}: {}",
                    String::from_utf8_lossy(&text)
                );
            }
            anyhow::Ok(())
        }
    };
    {
        use futures_util::StreamExt;
        let mut results = futures_util::stream::iter(batches.into_iter().map(submit))
            .buffer_unordered(a.concurrency);
        while let Some(r) = results.next().await {
            r?;
        }
    }
    let accepted_in = t0.elapsed();
    let deadline = Instant::now() + Duration::from_secs(120 + a.notifications / 1000);
    loop {
        let s = sim.stats().snapshot();
        if s.accepted >= a.notifications {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the simulator acknowledged {} of {} in time; see {}",
                s.accepted,
                a.notifications,
                dir.join("serve.log").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let delivered_in = t0.elapsed();
    let cpu = cpu_seconds(pid, ticks)? - cpu0;
    let threads = thread_cpu(pid, ticks)?;
    let rss = peak_rss(pid)?;
    let stats = sim.stats().snapshot();
    let latencies = sim.stats().latencies_ms();
    let exactly_once = stats.unique_ids == a.notifications && stats.duplicate_ids == 0;
    drop(gw);
    sim.shutdown().await;

    let ceiling = if a.h2load {
        Some(
            h2load_ceiling(
                &dir,
                a.notifications.min(200_000),
                &body,
                a.max_streams,
                a.pin,
            )
            .await?,
        )
    } else {
        None
    };
    let n = a.notifications as f64;
    let delivered_rate = n / delivered_in.as_secs_f64();
    let report = Report {
        notifications: a.notifications,
        rtt_ms: a.rtt_ms,
        max_streams: a.max_streams,
        connections: a.connections,
        apps: a.apps,
        payload_bytes: a.payload_bytes,
        pinned: a.pin,
        accepted_per_s: (n / accepted_in.as_secs_f64()).round() as u64,
        delivered_per_s: delivered_rate.round() as u64,
        seconds: delivered_in.as_secs_f64(),
        gateway_cpu_s: cpu,
        gateway_cpu_s_per_1000: cpu * 1000.0 / n,
        gateway_cpu_us_per_notification: cpu * 1e6 / n,
        gateway_cpu_us_by_thread: cpu_by_thread(&threads0, &threads, cpu, n),
        gateway_peak_rss_bytes: rss,
        latency_ms: Latency {
            p50: percentile(&latencies, 0.5),
            p99: percentile(&latencies, 0.99),
        },
        simulator: SimulatorFigures {
            accepted: stats.accepted,
            unique_ids: stats.unique_ids,
            duplicate_ids: stats.duplicate_ids,
            connections: stats.connections_total,
            max_streams_in_flight: stats.max_streams_in_flight,
        },
        exactly_once,
        h2load_per_s: ceiling,
        of_h2load: ceiling.map(|c| delivered_rate / c),
    };
    // As a JSON value: the median of several runs is taken figure by figure.
    Ok(serde_json::to_value(report)?)
}

#[allow(clippy::print_stdout, reason = "the report")]
fn print_report(r: &Value) {
    println!(
        "{} notifications ({} app(s) × {} connections, {} streams, {} ms RTT, ~{} B payload{})",
        r["notifications"],
        r["apps"],
        r["connections"],
        r["max_streams"],
        r["rtt_ms"],
        r["payload_bytes"],
        if r["pinned"] == true { ", pinned" } else { "" }
    );
    println!(
        "  accepted   {:>9} /s\n  delivered  {:>9} /s  in {:.2} s",
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

/// h2load `-c 4 -m 100` against a simulator without provider-token checks (so h2load's
/// concurrent streams are not held to one before a first success), with the same payload,
/// path and headers the gateway sends; returns requests per second.
async fn h2load_ceiling(
    dir: &Path,
    n: u64,
    body: &str,
    max_streams: u32,
    pin: bool,
) -> anyhow::Result<f64> {
    let sim = apns_mock::MockApns::builder()
        .max_streams(max_streams)
        .record_limit(0)
        .spawn()
        .await?;
    std::fs::write(dir.join("h2load-ca.pem"), sim.ca_pem().unwrap_or_default())?;
    let payload = json!({"aps": {"alert": {"title": "Hello", "body": body}}}).to_string();
    let data = dir.join("h2load-body.json");
    std::fs::write(&data, payload)?;
    let url = format!("{}/3/device/{:064x}", sim.endpoint(), 1);
    let mut cmd = if pin {
        let mut c = Command::new("taskset");
        c.args(["-c", "0", "h2load"]);
        c
    } else {
        Command::new("h2load")
    };
    let out = cmd
        .args(["-n", &n.to_string(), "-c", "4", "-m", "100", "-d"])
        .arg(&data)
        .args([
            "-H",
            "apns-topic: com.example.bench0",
            "-H",
            "apns-push-type: alert",
            "-H",
            "apns-priority: 10",
            "-H",
            "authorization: bearer eyJhbGciOiJFUzI1NiIsImtpZCI6IkJFTkNIS0VZMDEifQ.e30.c2ln",
            &url,
        ])
        .output()
        .context("running h2load (Debian's nghttp2-client)")?;
    sim.shutdown().await;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.trim().strip_prefix("finished in "))
        .and_then(|l| l.split(", ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|r| r.parse().ok())
        .with_context(|| format!("no rate in h2load's output:\n{text}"))
}
