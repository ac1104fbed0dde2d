//! The dashboard in a real headless Chromium, through Selenium: log in, send through the form,
//! see "delivered", see failures and an expiring credential, and keep a screenshot.

use std::path::Path;
use std::process::Command;

use serde_json::json;

use crate::gateway_harness::*;

/// A self-signed certificate that expires in 12 days, as rollover.pem / rollover-key.pem.
fn expiring_certificate(dir: &Path) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["push.example".to_owned()]).unwrap();
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(350);
    params.not_after = now + time::Duration::days(12);
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.join("rollover.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("rollover-key.pem"), key.serialize_pem()).unwrap();
}

#[test]
fn in_chromium_an_admin_logs_in_sends_and_sees_delivered() {
    let sim_dir = tempfile::tempdir().unwrap();
    let reasons = sim_dir.path().join("reasons");
    std::fs::write(
        &reasons,
        format!("{} 410 Unregistered\n{} 400 BadTopic\n", token(7), token(8)),
    )
    .unwrap();
    let sim = sim(&["--reasons", reasons.to_str().unwrap()]);
    let dir = tempfile::tempdir().unwrap();
    expiring_certificate(dir.path());
    let config = write_config(
        dir.path(),
        &sim,
        "AuthKey_ABC123DEFG.p8",
        "[[apps.credentials]]\ncertificate = \"rollover.pem\"\ncertificate_key = \"rollover-key.pem\"",
    );
    let mut gw = Gw::new(dir, config);
    gw.spawn();
    // Something to show under failures.
    let failing = gw.submit(json!({"app": "shop", "tokens": [token(7), token(8)], "alert": "x"}));
    gw.wait_final(&failing, std::time::Duration::from_secs(60));

    let out_dir = tempfile::tempdir().unwrap();
    let shot = out_dir.path().join("dashboard.png");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/dashboard.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(&gw.url)
        .arg("DASHBOARD_KEY")
        .arg(token(42))
        .arg(&shot)
        .env("DASHBOARD_KEY", KEY)
        .output()
        .expect("python3 with selenium, chromium and chromium-driver (.ci/run installs them)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert!(
        summary["result"].as_str().unwrap().ends_with(": delivered"),
        "{summary}"
    );
    assert!(
        summary["apps"].as_str().unwrap().contains("shop"),
        "{summary}"
    );
    assert!(
        summary["apps"]
            .as_str()
            .unwrap()
            .contains("up to 4 connections · response timeout 10000 ms"),
        "each app's settings in force, as the script renders them: {summary}"
    );
    assert!(
        summary["reasons"]
            .as_str()
            .unwrap()
            .contains("Unregistered"),
        "{summary}"
    );
    assert!(
        summary["reasons"].as_str().unwrap().contains("BadTopic"),
        "{summary}"
    );
    assert_eq!(
        summary["expiring"], 1,
        "the certificate is highlighted: {summary}"
    );
    assert!(
        summary["warnings"]
            .as_str()
            .unwrap()
            .contains("rollover.pem expires in"),
        "{summary}"
    );
    // The charts: the failures by their reasons, both latency quantiles, the app's strip with
    // a cell that shows its failures.
    let legend = summary["failed_legend"].as_str().unwrap();
    assert!(
        legend.contains("Unregistered") && legend.contains("BadTopic"),
        "{summary}"
    );
    assert_eq!(summary["latency_paths"], 2, "p50 and p99: {summary}");
    let cells = summary["cells"].as_array().unwrap();
    assert!(
        cells
            .iter()
            .any(|c| c.as_str().unwrap().contains("warn") || c.as_str().unwrap().contains("bad")),
        "{summary}"
    );
    let png = std::fs::read(&shot).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG screenshot");
    // Kept for the README when asked: PUSHGATE_SCREENSHOT=docs/screenshots/dashboard.png
    if let Ok(to) = std::env::var("PUSHGATE_SCREENSHOT") {
        std::fs::copy(&shot, to).unwrap();
    }
}
