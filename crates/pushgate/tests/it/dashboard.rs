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
    // Something to cancel: waiting an hour for its time.
    let scheduled =
        gw.submit(json!({"app": "shop", "tokens": [token(9)], "alert": "later", "delay": 3600}));

    let out_dir = tempfile::tempdir().unwrap();
    let shot = out_dir.path().join("dashboard.png");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/dashboard.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(&gw.url)
        .arg("DASHBOARD_KEY")
        .arg(token(42))
        .arg(&shot)
        .arg(&failing[0])
        .arg(token(7))
        .arg(&scheduled[0])
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
    // The lookup box: the delivered id with its one attempt (200, on a connection), the failed
    // one with Apple's answer, and the dead token with its notification, then cleared.
    let attempts = |doc: &serde_json::Value| -> Vec<Vec<String>> {
        serde_json::from_value(doc["attempts"].clone()).unwrap()
    };
    let delivered = attempts(&summary["delivered"]);
    assert_eq!(delivered.len(), 1, "{summary}");
    assert_eq!(delivered[0][2], "200", "{summary}");
    assert!(
        delivered[0][4].parse::<u64>().is_ok(),
        "a connection: {summary}"
    );
    assert_eq!(summary["delivered"]["fields"]["state"], "delivered");
    let failed = attempts(&summary["failed"]);
    assert_eq!(
        (failed.len(), failed[0][2].as_str(), failed[0][3].as_str()),
        (1, "410", "Unregistered"),
        "{summary}"
    );
    assert_eq!(summary["failed"]["fields"]["state"], "failed");
    assert!(summary["dead"]["clear"].as_bool().unwrap(), "{summary}");
    assert!(
        summary["dead"]["text"]
            .as_str()
            .unwrap()
            .contains("Unregistered"),
        "{summary}"
    );
    assert_eq!(
        summary["dead"]["notifications"][0][0], failing[0],
        "the token's notification: {summary}"
    );
    assert!(!summary["cleared"]["clear"].as_bool().unwrap(), "{summary}");
    let (_, feedback) = gw.api("GET", "/v1/apps/shop/feedback", None);
    assert!(
        !feedback.to_string().contains(&token(7)),
        "cleared in the spool: {feedback}"
    );
    // The lookup's Cancel on a waiting notification (and its request's), then the app's
    // pause and resume from its row.
    assert!(
        summary["scheduled"]["cancel"].as_bool().unwrap()
            && summary["scheduled"]["cancel_request"].as_bool().unwrap(),
        "{summary}"
    );
    assert_eq!(summary["scheduled"]["fields"]["state"], "scheduled");
    assert!(
        !summary["cancelled"]["cancel"].as_bool().unwrap(),
        "{summary}"
    );
    let (_, doc) = gw.api("GET", &format!("/v1/notifications/{}", scheduled[0]), None);
    assert_eq!(
        (&doc["state"], &doc["reason"]),
        (&json!("cancelled"), &json!("Cancelled")),
        "{doc}"
    );
    assert!(
        summary["paused"].as_str().unwrap().contains("paused since"),
        "{summary}"
    );
    assert!(
        summary["resumed"].as_str().unwrap().contains("sending"),
        "{summary}"
    );
    let (_, stats) = gw.api("GET", "/v1/stats", None);
    assert!(
        stats["apps"]["shop"]["paused"].is_null(),
        "resumed: {stats}"
    );
    let png = std::fs::read(&shot).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG screenshot");
    // Kept for the README when asked: PUSHGATE_SCREENSHOT=docs/screenshots/dashboard.png
    // (and the lookup box beside it, as dashboard-lookup.png).
    if let Ok(to) = std::env::var("PUSHGATE_SCREENSHOT") {
        std::fs::copy(&shot, &to).unwrap();
        let lookup = out_dir.path().join("dashboard-lookup.png");
        std::fs::copy(&lookup, to.replace(".png", "-lookup.png")).unwrap();
    }
}

/// Logs in with `key` through the form (curl); the session cookie's `name=value`, if any.
fn log_in(url: &str, key: &str) -> Option<String> {
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-D", "-", "--max-time", "10"])
        .args(["--data-urlencode", &format!("key={key}")])
        .arg(format!("{url}/login"))
        .output()
        .expect("curl (.ci/run installs it)");
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
        let l = l.to_ascii_lowercase();
        let v = l.strip_prefix("set-cookie: ")?;
        Some(v.split(';').next()?.trim().to_owned())
    })
}

/// Whether `cookie` opens the dashboard (the login form otherwise).
fn opens_dashboard(url: &str, cookie: &str) -> bool {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10", "-H", &format!("cookie: {cookie}")])
        .arg(format!("{url}/"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).contains("id=\"send-form\"")
}

/// A dashboard session is bound to the key that opened it, not to the key's name: a key
/// replaced under the same name ends its sessions. While a key is rotated, two entries share a
/// name and both work, each session lasting as long as its own key.
#[test]
fn a_dashboard_session_lasts_as_long_as_its_own_key_through_a_rotation() {
    let sim = sim(&[]);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &sim, "AuthKey_ABC123DEFG.p8", "");
    let mut gw = Gw::new(dir, config.clone());
    gw.spawn_with(&[("RUST_LOG", "warn,gateway::server=info")]);
    let reloads = |gw: &Gw| gw.log().matches("configuration reloaded").count();
    let old = log_in(&gw.url, KEY).expect("the configured admin key logs in");
    assert!(opens_dashboard(&gw.url, &old));

    // The new key is added under the same name: both keys work.
    let new_key = "rotated-admin-key-0123456789";
    let original = std::fs::read_to_string(&config).unwrap();
    let both = format!(
        "{original}\n[[api_keys]]\nname = \"e2e\"\nkey_sha256 = \"{}\"\nadmin = true\n",
        gateway::auth::key_sha256_hex(new_key)
    );
    std::fs::write(&config, &both).unwrap();
    gw.signal("HUP");
    wait_until(
        "the first reload",
        std::time::Duration::from_secs(60),
        || reloads(&gw) == 1,
    );
    let new = log_in(&gw.url, new_key).expect("the new key logs in beside the old one");
    assert!(opens_dashboard(&gw.url, &old) && opens_dashboard(&gw.url, &new));

    // The old key is replaced by a third under the same name: its session ends, the new one's
    // stays (it used to be kept by the name alone, for the rest of its 12 hours).
    let replaced = both.replacen(
        &gateway::auth::key_sha256_hex(KEY),
        &gateway::auth::key_sha256_hex("a-third-admin-key-0123456789"),
        1,
    );
    std::fs::write(&config, replaced).unwrap();
    gw.signal("HUP");
    wait_until(
        "the second reload",
        std::time::Duration::from_secs(60),
        || reloads(&gw) == 2,
    );
    assert!(
        !opens_dashboard(&gw.url, &old),
        "the replaced key's session ended"
    );
    assert!(opens_dashboard(&gw.url, &new));
}
