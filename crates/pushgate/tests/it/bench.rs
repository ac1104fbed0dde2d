//! `pushgate bench` as a smoke run: it works end to end and reports what it promises. The
//! figures themselves are measured in BENCHMARKS.md, never asserted here.

use std::process::Command;

#[test]
fn a_small_bench_run_reports_every_figure_and_exactly_once() {
    let out = Command::new(env!("CARGO_BIN_EXE_pushgate"))
        .args([
            "bench", "-n", "2000", "--batch", "500", "--apps", "2", "--runs", "2", "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "two runs and their median: {lines:?}");
    let median = &lines[2]["median"];
    assert_eq!(median["notifications"], 2000.0);
    assert_eq!(median["exactly_once"], true);
    let r = &lines[1];
    assert_eq!(r["notifications"], 2000);
    assert_eq!(r["exactly_once"], true, "{r}");
    assert_eq!(r["simulator"]["unique_ids"], 2000);
    assert_eq!(r["simulator"]["duplicate_ids"], 0);
    for key in [
        "accepted_per_s",
        "delivered_per_s",
        "gateway_cpu_s_per_1000",
        "gateway_cpu_us_per_notification",
        "gateway_peak_rss_bytes",
    ] {
        assert!(r[key].as_f64().is_some_and(|v| v > 0.0), "{key}: {r}");
    }
    let (p50, p99) = (
        r["latency_ms"]["p50"].as_u64().unwrap(),
        r["latency_ms"]["p99"].as_u64().unwrap(),
    );
    assert!(p50 <= p99, "{r}");
}

/// `--source beanstalkd`: jobs put in a private beanstalkd's tubes before the gateway starts,
/// consumed, committed, deleted and delivered, each once.
#[test]
fn a_bench_from_beanstalkd_tubes_delivers_every_job_once() {
    if std::env::var("CI").as_deref() != Ok("true")
        && !std::path::Path::new("/usr/bin/beanstalkd").exists()
    {
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_pushgate"))
        .args([
            "bench",
            "-n",
            "3000",
            "--apps",
            "2",
            "--source",
            "beanstalkd",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().next().unwrap()).unwrap();
    assert_eq!(
        (r["source"].as_str(), r["exactly_once"].as_bool()),
        (Some("beanstalkd"), Some(true)),
        "{r}"
    );
    assert_eq!(r["simulator"]["unique_ids"], 3000);
    assert!(r["accepted_per_s"].as_f64().is_some_and(|v| v > 0.0), "{r}");
}

fn bench_json(args: &[&str]) -> (std::process::Output, Vec<serde_json::Value>) {
    let out = Command::new(env!("CARGO_BIN_EXE_pushgate"))
        .arg("bench")
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    (out, lines)
}

/// `--cancel`: the apps paused, everything cancelled, the simulator saw none; `--active` and
/// `--shared-key` reach the report, and an `--active` above `--apps` is a usage error.
#[test]
fn bench_cancel_active_and_shared_key() {
    let (out, lines) = bench_json(&["--cancel", "-n", "2000", "--batch", "500", "--apps", "2"]);
    assert!(
        out.status.success(),
        "{lines:?}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = &lines[0];
    assert_eq!(
        (
            &r["mode"],
            &r["cancelled"],
            &r["simulator_accepted"],
            &r["exactly_once"]
        ),
        (
            &serde_json::json!("cancel"),
            &serde_json::json!(2000),
            &serde_json::json!(0),
            &serde_json::json!(true)
        ),
        "{r}"
    );
    assert!(r["cancel_seconds"].as_f64().is_some_and(|s| s > 0.0), "{r}");
    let (out, lines) = bench_json(&[
        "-n",
        "2000",
        "--batch",
        "250",
        "--apps",
        "4",
        "--active",
        "2",
        "--shared-key",
    ]);
    assert!(
        out.status.success(),
        "{lines:?}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = &lines[0];
    assert_eq!(
        (&r["active_apps"], &r["shared_key"]),
        (&serde_json::json!(2), &serde_json::json!(true)),
        "{r}"
    );
    assert_eq!(r["exactly_once"], true, "{r}");
    let (out, _) = bench_json(&["-n", "10", "--apps", "4", "--active", "5"]);
    assert_eq!(out.status.code(), Some(2));
}
