//! The raw HTTP/2 ceiling of this machine, from h2load against a second simulator.

use std::path::Path;
use std::process::Command;

use anyhow::Context;
use serde_json::json;

/// h2load `-c 4 -m 100` against a simulator without provider-token checks (so h2load's
/// concurrent streams are not held to one before a first success), with the same payload,
/// path and headers the gateway sends; returns requests per second.
pub(super) async fn h2load_ceiling(
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
