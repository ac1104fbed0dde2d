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

mod beanstalkd;
mod h2load;
mod procfs;
mod report;

use h2load::h2load_ceiling;
use procfs::{clock_ticks, cpu_by_thread, cpu_seconds, peak_rss, thread_cpu, tree_cpu_seconds};
use report::{Latency, Report, SimulatorFigures, median_of, percentile, print_report};

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
    /// Apps configured; notifications are spread evenly over the first `--active` of them.
    #[arg(long, default_value_t = 1)]
    apps: u32,
    /// Apps that get notifications (default: all of them); the others are configured and
    /// idle.
    #[arg(long)]
    active: Option<u32>,
    /// Every app signs with one key (one team and key id, the common case inside one
    /// company); without it each app has a key id of its own (the same key material, which is
    /// all the simulator checks), as apps of different customers would.
    #[arg(long)]
    shared_key: bool,
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
    /// The spool: the embedded SQLite file, or PostgreSQL (a private server this bench starts,
    /// unless --postgres-url-file names a database).
    #[arg(long, value_enum, default_value_t = StorageKind::Sqlite)]
    storage: StorageKind,
    /// With --storage postgres: a file holding the URL of the database to use (it is emptied of
    /// nothing: use a database of its own). Without it, a private server in a temporary folder.
    #[arg(long)]
    postgres_url_file: Option<PathBuf>,
    /// Where the notifications come from: the HTTP API, or a private beanstalkd's tubes filled
    /// with propeller-apns' jobs before the gateway starts.
    #[arg(long, value_enum, default_value_t = Source::Http)]
    source: Source,
    /// With --source beanstalkd: the gateway's reserving connections.
    #[arg(long, default_value_t = 4)]
    beanstalkd_connections: u32,
    /// Gateway processes sharing the spool (with --storage postgres): the requests go to
    /// them in turn, and their CPU is added up.
    #[arg(long, default_value_t = 1)]
    gateways: usize,
    /// Repeat the whole measurement this many times (each with a fresh gateway and spool) and
    /// report the median of each figure too.
    #[arg(long, default_value_t = 1)]
    runs: u32,
    /// Measure a cancel instead of delivery: the apps are paused, the N notifications
    /// submitted (they wait), then each app's are cancelled (`POST /v1/apps/{app}/cancel`) and
    /// the cancel is timed; the simulator must see none of them.
    #[arg(long)]
    cancel: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Source {
    Http,
    Beanstalkd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum StorageKind {
    Sqlite,
    Postgres,
}

/// Where a run's PostgreSQL spool is: a private server of this bench (its postmaster's pid, for
/// its CPU) or a database the user named.
enum Database {
    Private(gateway::local_postgres::Server),
    Named(String),
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
    postgres_url: Option<&str>,
    beanstalkd: Option<&str>,
) -> anyhow::Result<PathBuf> {
    std::fs::write(dir.join("sim-ca.pem"), sim.ca_pem().unwrap_or_default())?;
    let storage = match postgres_url {
        Some(url) => {
            std::fs::write(dir.join("pg-url"), url)?;
            "postgres_url_file = \"pg-url\"\npool_size = 16"
        }
        None => "sqlite = \"spool.db\"",
    };
    let mut text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nshutdown_grace_s = 5\n\n[storage]\n{storage}\n\n\
         [[api_keys]]\nname = \"bench\"\nkey_sha256 = \"{key_hash}\"\nadmin = true\n"
    );
    for i in 0..a.apps {
        text.push_str(&format!(
            "\n[[apps]]\nname = \"bench{i}\"\ntopic = \"com.example.bench{i}\"\nenvironment = \"sandbox\"\n\
             endpoint = \"{}\"\nca_file = \"sim-ca.pem\"\nkey_file = \"bench-key.p8\"\nkey_id = \"{}\"\n\
             team_id = \"BENCHTEAM1\"\nmax_connections = {}\n",
            sim.endpoint(),
            key_id(a, i),
            a.connections
        ));
    }
    if let Some(server) = beanstalkd {
        text.push_str(&format!(
            "\n[[beanstalkd]]\nserver = \"{server}\"\nconnections = {}\n",
            a.beanstalkd_connections
        ));
    }
    let file = dir.join("pushgate.toml");
    std::fs::write(&file, text)?;
    Ok(file)
}

/// App `i`'s key id: one for every app with `--shared-key`, else one of its own (ten
/// characters, as Apple's are).
fn key_id(a: &Args, i: u32) -> String {
    if a.shared_key {
        "BENCHKEY01".to_owned()
    } else {
        format!("BK{i:08}")
    }
}

/// The apps that get notifications.
fn active(a: &Args) -> u32 {
    a.active.unwrap_or(a.apps)
}

fn start_gateway(config: &Path, dir: &Path, log: &str, pin: bool) -> anyhow::Result<Gateway> {
    let exe = std::env::current_exe()?;
    let log = std::fs::File::create(dir.join(log))?;
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
    if a.active.is_some_and(|m| m == 0 || m > a.apps) {
        eprintln!("pushgate bench: --active is 1 to --apps");
        return Ok(ExitCode::from(2));
    }
    if a.gateways == 0 || (a.gateways > 1 && a.storage != StorageKind::Postgres) {
        eprintln!(
            "pushgate bench: --gateways is at least 1, and more than one share a spool only with \
             --storage postgres"
        );
        return Ok(ExitCode::from(2));
    }
    let database = match (a.storage, &a.postgres_url_file) {
        (StorageKind::Sqlite, _) => None,
        (StorageKind::Postgres, Some(f)) => Some(Database::Named(
            std::fs::read_to_string(f)
                .with_context(|| format!("reading {}", f.display()))?
                .trim()
                .to_owned(),
        )),
        (StorageKind::Postgres, None) => Some(Database::Private(
            tokio::task::spawn_blocking(gateway::local_postgres::Server::private)
                .await?
                .context("--storage postgres without --postgres-url-file starts a private server: install Debian's postgresql")?,
        )),
    };
    let mut reports = Vec::new();
    for _ in 0..a.runs {
        let report = run_once(&a, database.as_ref()).await?;
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

/// One measurement: a fresh simulator, gateway and spool.
async fn run_once(a: &Args, database: Option<&Database>) -> anyhow::Result<Value> {
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
    // A fresh database for every run on a private server; a named one is used as it is.
    let postgres_url = match database {
        Some(Database::Private(server)) => Some(server.database().await.url.expose().to_owned()),
        Some(Database::Named(url)) => Some(url.clone()),
        None => None,
    };
    let db_pid = match database {
        Some(Database::Private(server)) => server.pid(),
        _ => None,
    };
    // Filled before the gateway starts (and before the clock does).
    let tubes = match a.source {
        Source::Http => None,
        Source::Beanstalkd => {
            let server = gateway::local_beanstalkd::Server::start().context(
                "--source beanstalkd starts a private server: install Debian's beanstalkd",
            )?;
            let payload = alert_body(a.payload_bytes);
            beanstalkd::fill(&server.addr, active(a), a.notifications, &payload).await?;
            Some(server)
        }
    };
    let config = write_config(
        &dir,
        &sim,
        a,
        &gateway::auth::key_sha256_hex(api_key),
        postgres_url.as_deref(),
        tubes.as_ref().map(|s| s.addr.as_str()),
    )?;
    let gws = (0..a.gateways)
        .map(|i| {
            let log = match i {
                0 => "serve.log".to_owned(),
                i => format!("serve-{i}.log"),
            };
            start_gateway(&config, &dir, &log, a.pin)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let pids: Vec<u32> = gws.iter().map(|g| g.child.id()).collect();
    let ticks = clock_ticks();
    let cpu_all = || -> anyhow::Result<f64> { pids.iter().map(|&p| cpu_seconds(p, ticks)).sum() };
    let threads_all =
        || -> anyhow::Result<Vec<_>> { pids.iter().map(|&p| thread_cpu(p, ticks)).collect() };

    // Bodies built before the clock starts: distinct tokens, one app per batch in turn.
    let body = alert_body(a.payload_bytes);
    let batches: Vec<Bytes> = (0..a.notifications)
        .step_by(a.batch)
        .enumerate()
        .map(|(i, start)| {
            let end = (start + a.batch as u64).min(a.notifications);
            let tokens: Vec<String> = (start..end).map(|t| format!("{t:064x}")).collect();
            Bytes::from(
                json!({"app": format!("bench{}", i as u32 % active(a)), "tokens": tokens,
                       "alert": {"title": "Hello", "body": body}})
                .to_string(),
            )
        })
        .collect();
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let urls: Vec<String> = gws
        .iter()
        .map(|g| format!("{}/v1/notifications", g.url))
        .collect();
    let api = |method: &'static str, path: String| {
        let (client, base) = (client.clone(), gws[0].url.clone());
        async move {
            let req = http::Request::builder()
                .method(method)
                .uri(format!("{base}{path}"))
                .header("authorization", format!("Bearer {api_key}"))
                .body(Full::new(Bytes::new()))?;
            let resp = client.request(req).await?;
            let status = resp.status();
            let text = resp.into_body().collect().await?.to_bytes();
            if status != 200 {
                bail!(
                    "{path}: the gateway answered {status}: {}",
                    String::from_utf8_lossy(&text)
                );
            }
            anyhow::Ok(serde_json::from_slice::<Value>(&text)?)
        }
    };
    if a.cancel {
        for i in 0..a.apps {
            api("POST", format!("/v1/apps/bench{i}/pause")).await?;
        }
    }
    let cpu0 = cpu_all()?;
    let db_cpu0 = db_pid.map(|p| tree_cpu_seconds(p, ticks));
    let threads0 = threads_all()?;
    let t0 = Instant::now();
    let submit = |(i, b): (usize, Bytes)| {
        let (client, url) = (client.clone(), urls[i % urls.len()].clone());
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
    match &tubes {
        None => {
            use futures_util::StreamExt;
            let mut results =
                futures_util::stream::iter(batches.into_iter().enumerate().map(submit))
                    .buffer_unordered(a.concurrency);
            while let Some(r) = results.next().await {
                r?;
            }
        }
        Some(server) => {
            let limit = Duration::from_secs(120 + a.notifications / 1000);
            beanstalkd::drained(&server.addr, active(a), limit).await?;
        }
    }
    let accepted_in = t0.elapsed();
    if a.cancel {
        let cpu1 = cpu_all()?;
        let t1 = Instant::now();
        let mut cancelled = 0;
        for i in 0..a.apps {
            let answer = api("POST", format!("/v1/apps/bench{i}/cancel")).await?;
            cancelled += answer["cancelled"].as_u64().unwrap_or(0);
        }
        let cancel_in = t1.elapsed();
        let cancel_cpu = cpu_all()? - cpu1;
        let stats = api("GET", "/v1/stats".to_owned()).await?;
        let seen = sim.stats().snapshot().accepted;
        let n = a.notifications as f64;
        return Ok(json!({
            "mode": "cancel",
            "notifications": a.notifications,
            "apps": a.apps,
            "storage": match a.storage {
                StorageKind::Sqlite => "sqlite",
                StorageKind::Postgres => "postgres",
            },
            "accepted_per_s": (n / accepted_in.as_secs_f64()).round(),
            "cancel_seconds": cancel_in.as_secs_f64(),
            "cancelled_per_s": (cancelled as f64 / cancel_in.as_secs_f64()).round(),
            "cancel_cpu_us_per_notification": cancel_cpu * 1e6 / n,
            "cancelled": cancelled,
            "stored_cancelled": stats["totals"]["cancelled"],
            "simulator_accepted": seen,
            "exactly_once": cancelled == a.notifications && seen == 0,
        }));
    }
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
                dir.join("serve*.log").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let delivered_in = t0.elapsed();
    let cpu = cpu_all()? - cpu0;
    let db_cpu = db_pid
        .zip(db_cpu0)
        .map(|(p, before)| tree_cpu_seconds(p, ticks) - before);
    let threads = threads_all()?;
    let rss = pids
        .iter()
        .map(|&p| peak_rss(p))
        .collect::<anyhow::Result<Vec<_>>>()?
        .into_iter()
        .max()
        .unwrap_or(0);
    let stats = sim.stats().snapshot();
    let latencies = sim.stats().latencies_ms();
    let exactly_once = stats.unique_ids == a.notifications && stats.duplicate_ids == 0;
    drop(gws);
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
    // Every gateway's threads of a name added up; "other" what no thread accounts for.
    let mut by_thread = std::collections::BTreeMap::new();
    for (before, after) in threads0.iter().zip(&threads) {
        for (name, us) in cpu_by_thread(before, after, 0.0, n) {
            *by_thread.entry(name).or_insert(0.0) += us;
        }
    }
    let counted: f64 = by_thread.values().sum();
    *by_thread.entry("other".to_owned()).or_insert(0.0) += (cpu * 1e6 / n - counted).max(0.0);
    let delivered_rate = n / delivered_in.as_secs_f64();
    let report = Report {
        notifications: a.notifications,
        rtt_ms: a.rtt_ms,
        max_streams: a.max_streams,
        connections: a.connections,
        apps: a.apps,
        active_apps: active(a),
        shared_key: a.shared_key,
        payload_bytes: a.payload_bytes,
        pinned: a.pin,
        source: match a.source {
            Source::Http => "http",
            Source::Beanstalkd => "beanstalkd",
        },
        storage: match a.storage {
            StorageKind::Sqlite => "sqlite",
            StorageKind::Postgres => "postgres",
        },
        database_cpu_us_per_notification: db_cpu.map(|c| c * 1e6 / n),
        accepted_per_s: (n / accepted_in.as_secs_f64()).round() as u64,
        delivered_per_s: delivered_rate.round() as u64,
        seconds: delivered_in.as_secs_f64(),
        gateway_cpu_s: cpu,
        gateway_cpu_s_per_1000: cpu * 1000.0 / n,
        gateway_cpu_us_per_notification: cpu * 1e6 / n,
        gateway_cpu_us_by_thread: by_thread,
        gateways: a.gateways,
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
