//! `pushgate status`: the dashboard's top row in a terminal — readiness with its reasons, the
//! notifications by state, each app's health, connections and streams, and the gateways
//! sharing a PostgreSQL spool — from `GET /readyz` and `GET /v1/stats`. `--watch` redraws it.
//!
//! Exit codes: 0 ready, 1 not ready, 2 usage, 3 the gateway refused or could not be reached.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::Value;

use super::client::Api;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    connect: super::client::Connect,
    /// Redraw every this many seconds until interrupted.
    #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "2")]
    watch: Option<u64>,
}

#[allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the overview is this command's output"
)]
pub async fn run(a: Args) -> anyhow::Result<ExitCode> {
    let api = match a.connect.key().and_then(|key| a.connect.api(key)) {
        Ok(api) => api,
        Err(msg) => {
            eprintln!("pushgate status: {msg}");
            return Ok(ExitCode::from(2));
        }
    };
    loop {
        let (ready, text) = match overview(&api).await {
            Ok(o) => o,
            Err(e) => {
                eprintln!("pushgate status: {e:#}");
                return Ok(ExitCode::from(3));
            }
        };
        match a.watch {
            None => {
                print!("{text}");
                return Ok(ExitCode::from(if ready { 0 } else { 1 }));
            }
            Some(every) => {
                // Clear the screen and home the cursor, then the fresh overview.
                print!("\x1b[2J\x1b[H{text}");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(every.max(1))) => {}
                    () = super::shutdown_signal() => return Ok(ExitCode::SUCCESS),
                }
            }
        }
    }
}

/// Whether the gateway is ready, and the overview as text.
async fn overview(api: &Api) -> anyhow::Result<(bool, String)> {
    let (_, readiness) = api.get("/readyz").await?;
    let (status, stats) = api.get("/v1/stats").await?;
    if status != 200 {
        let msg = stats["error"]["message"].as_str().unwrap_or("no message");
        anyhow::bail!("the gateway answered {status} to /v1/stats: {msg}");
    }
    let ready = readiness["status"] == "ready";
    let mut out = String::new();
    let _ = writeln!(out, "{}", if ready { "ready" } else { "NOT READY" });
    // An admin key reads what and why; any other, the reasons' codes.
    match readiness["details"].as_array() {
        Some(details) => {
            for d in details {
                let _ = writeln!(out, "  {}", d["message"].as_str().unwrap_or_default());
            }
        }
        None => {
            for r in readiness["reasons"].as_array().into_iter().flatten() {
                let _ = writeln!(out, "  {}", r.as_str().unwrap_or_default());
            }
        }
    }
    let n = |v: &Value, k: &str| v[k].as_u64().unwrap_or(0);
    let t = &stats["totals"];
    let _ = writeln!(
        out,
        "notifications: {} queued, {} scheduled, {} in flight, {} delivered, {} failed, {} expired",
        n(t, "queued"),
        n(t, "scheduled"),
        n(t, "in_flight"),
        n(t, "delivered"),
        n(t, "failed"),
        n(t, "expired")
    );
    for (name, app) in stats["apps"].as_object().into_iter().flatten() {
        let health = match app["halted_reason"].as_str() {
            Some(why) => format!("halted: {why}"),
            None => "healthy".to_owned(),
        };
        let _ = writeln!(
            out,
            "app {name}: {health}; {} connections, {} streams in flight; {} queued, {} delivered, {} failed",
            n(app, "connections"),
            n(app, "streams_in_flight"),
            n(app, "queued"),
            n(app, "delivered"),
            n(app, "failed")
        );
    }
    let cluster = stats["cluster"].as_array().cloned().unwrap_or_default();
    if !cluster.is_empty() {
        let _ = writeln!(out, "gateways sharing the database:");
        for g in &cluster {
            let _ = writeln!(
                out,
                "  {}{}: last heartbeat {}, holds {}",
                g["host"].as_str().unwrap_or_default(),
                if g["this"] == true { " (this one)" } else { "" },
                g["heartbeat_at"].as_str().unwrap_or_default(),
                n(g, "holds")
            );
        }
    }
    Ok((ready, out))
}
