//! End to end through the spawned binaries: `pushgate serve` delivering to `pushgate mock-apns`.

use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::gateway_harness::*;
use crate::harness::*;

const MINUTE: Duration = Duration::from_secs(60);

fn sim_stat(sim: &Sim, key: &str) -> u64 {
    stats(sim)[key].as_u64().unwrap()
}

fn a_notification_is_delivered_end_to_end(backend: Backend) {
    let sim = sim(&[]);
    let gw = Gw::start_on(&backend, &sim, "");
    let ids = gw.submit(json!({"app": "shop", "tokens": [token(1)], "alert": {"title": "Hi", "body": "there"}, "collapse_id": "c1"}));
    let docs = gw.wait_final(&ids, MINUTE);
    assert_eq!(docs[0]["state"], "delivered", "{}", docs[0]);
    assert_eq!(
        (
            docs[0]["attempts"].as_u64(),
            docs[0]["status_code"].as_u64()
        ),
        (Some(1), Some(200))
    );
    let out = run(Command::new("curl").args(["-sf", &format!("{}/notifications", sim.stats)]));
    let seen: serde_json::Value = serde_json::from_str(
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(seen["apns_id"], ids[0], "the id is the apns-id");
    assert_eq!(seen["headers"]["apns-topic"], "com.example.demo");
    assert_eq!(seen["headers"]["apns-push-type"], "alert");
    assert_eq!(seen["headers"]["apns-collapse-id"], "c1");
    assert_eq!(seen["payload"]["aps"]["alert"]["title"], "Hi");
    // And it is counted: accepted, the attempt, its answer time, the outcome, the connection.
    // The outcome is committed before the recorder counts it: wait for the counters.
    let wants = [
        "pushgate_notifications_accepted_total{app=\"shop\"} 1",
        "pushgate_attempts_total{app=\"shop\",result=\"2xx\"} 1",
        "pushgate_apns_response_seconds_count{app=\"shop\"} 1",
        "pushgate_accept_to_delivered_seconds_count{app=\"shop\"} 1",
        "pushgate_notifications_total{app=\"shop\",outcome=\"delivered\",reason=\"\"} 1",
        "pushgate_connections{app=\"shop\"} 1",
        "pushgate_app_halted{app=\"shop\"} 0",
        "pushgate_spool_notifications{state=\"queued\"} 0",
    ];
    let metrics = poll_until("the delivery counted in /metrics", MINUTE, || {
        let out = run(Command::new("curl").args(["-s", &format!("{}/metrics", gw.url)]));
        let metrics = String::from_utf8(out.stdout).unwrap();
        let missing: Vec<_> = wants.iter().filter(|w| !metrics.contains(*w)).collect();
        if missing.is_empty() {
            Ok(metrics)
        } else {
            Err(format!("missing {missing:?} in:\n{metrics}"))
        }
    });
    assert!(
        metrics.contains("pushgate_provider_token_age_seconds{app=\"shop\"}"),
        "{metrics}"
    );
}

fn a_batch_of_ten_thousand(backend: Backend) {
    let sim = sim(&[]);
    let gw = Gw::start_on(&backend, &sim, "");
    let tokens: Vec<String> = (0..10_000).map(token).collect();
    let ids = gw.submit(json!({"app": "shop", "tokens": tokens, "alert": "hello"}));
    assert_eq!(ids.len(), 10_000);
    let docs = gw.wait_final(&ids, MINUTE);
    assert!(docs.iter().all(|d| d["state"] == "delivered"));
    assert_eq!(sim_stat(&sim, "unique_ids"), 10_000);
}

/// Every consequence class (docs/architecture.md, `apns::outcome`), produced by the simulator's `--reasons`.
fn every_consequence_class_and_suppression(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let reasons = dir.path().join("reasons");
    std::fs::write(
        &reasons,
        format!(
            "{} 410 Unregistered\n{} 400 BadTopic\n{} 503 ServiceUnavailable\n",
            token(2),
            token(3),
            token(4)
        ),
    )
    .unwrap();
    let sim = sim(&["--reasons", reasons.to_str().unwrap()]);
    let gw = Gw::start_on(&backend, &sim, "max_attempts = 2");
    let ids = gw.submit(
        json!({"app": "shop", "tokens": [token(1), token(2), token(3), token(4)], "alert": "x"}),
    );
    let docs = gw.wait_final(&ids, MINUTE);
    let got: Vec<(&str, Option<&str>, u64)> = docs
        .iter()
        .map(|d| {
            (
                d["state"].as_str().unwrap(),
                d["reason"].as_str(),
                d["attempts"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got[0], ("delivered", None, 1));
    assert_eq!(got[1], ("failed", Some("Unregistered"), 1), "dead token");
    assert_eq!(got[2], ("failed", Some("BadTopic"), 1), "rejected");
    assert_eq!(
        got[3],
        ("failed", Some("MaxAttempts"), 2),
        "retried, then given up"
    );
    // The dead token is in the feedback list, and later sends to it are suppressed.
    let (status, feedback) = gw.api("GET", "/v1/apps/shop/feedback", None);
    assert_eq!(status, 200);
    assert_eq!(feedback[0]["token"], token(2));
    let again = gw.submit(json!({"app": "shop", "tokens": [token(2)], "alert": "x"}));
    let doc = &gw.wait_final(&again, MINUTE)[0];
    assert_eq!(
        (
            doc["state"].as_str(),
            doc["reason"].as_str(),
            doc["attempts"].as_u64()
        ),
        (Some("failed"), Some("Unregistered"), Some(0))
    );
    assert_eq!(
        stats(&sim)["by_reason"]["Unregistered"],
        1,
        "suppressed: not sent again"
    );
    // The device registers again: clearing it lets sends through (the simulator still answers 410).
    let (status, _) = gw.api(
        "DELETE",
        &format!("/v1/apps/shop/feedback/{}", token(2)),
        None,
    );
    assert_eq!(status, 204);
    let third = gw.submit(json!({"app": "shop", "tokens": [token(2)], "alert": "x"}));
    gw.wait_final(&third, MINUTE);
    assert_eq!(stats(&sim)["by_reason"]["Unregistered"], 2);
}

/// 500/503/429 and GOAWAY: everything is eventually delivered.
fn injected_failures_and_goaway_are_retried_until_delivered(backend: Backend) {
    let sim = sim(&["--fail-rate", "0.2", "--goaway-every", "20"]);
    let gw = Gw::start_on(&backend, &sim, "");
    let tokens: Vec<String> = (0..300).map(token).collect();
    let ids = gw.submit(json!({"app": "shop", "tokens": tokens, "alert": "x"}));
    let docs = gw.wait_final(&ids, Duration::from_secs(120));
    let not: Vec<_> = docs.iter().filter(|d| d["state"] != "delivered").collect();
    assert!(not.is_empty(), "{not:?}");
    let s = stats(&sim);
    assert_eq!(s["unique_ids"], 300);
    assert!(
        s["goaways"].as_u64().unwrap() >= 2,
        "GOAWAYs cut through the run: {s}"
    );
    let failures: u64 = ["429", "500", "503"]
        .iter()
        .map(|k| s["by_status"][k].as_u64().unwrap_or(0))
        .sum();
    assert!(failures > 20, "faults were injected: {s}");
    assert!(
        docs.iter().any(|d| d["attempts"].as_u64() > Some(1)),
        "some needed a retry"
    );
}

fn expiry_and_delay(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let reasons = dir.path().join("reasons");
    std::fs::write(&reasons, format!("{} 503 ServiceUnavailable\n", token(9))).unwrap();
    let sim = sim(&["--reasons", reasons.to_str().unwrap()]);
    let gw = Gw::start_on(&backend, &sim, "");
    // Never accepted, and only 2 s to live: it expires instead of being retried past that.
    let expiring = gw.submit(json!({"app": "shop", "tokens": [token(9)], "alert": "x", "ttl": 2}));
    // Delayed by 2 s: scheduled first, and not sent before its time.
    let delayed = gw.submit(json!({"app": "shop", "tokens": [token(1)], "alert": "x", "delay": 2}));
    let doc = &gw.lookup(&delayed)[0];
    assert_eq!(doc["state"], "scheduled");
    assert!(doc["send_at"].is_string());
    let docs = gw.wait_final(&delayed, MINUTE);
    assert_eq!(docs[0]["state"], "delivered");
    let created = docs[0]["created_at"].as_str().unwrap().to_owned();
    let updated = docs[0]["updated_at"].as_str().unwrap().to_owned();
    let ms = |s: &str| {
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap()
    };
    assert!(
        ms(&updated) - ms(&created) >= time::Duration::seconds(2) - time::Duration::milliseconds(5),
        "{created} → {updated}"
    );
    let docs = gw.wait_final(&expiring, MINUTE);
    assert_eq!(docs[0]["state"], "expired", "{}", docs[0]);
}

/// A key the simulator does not trust halts the app: nothing fails, /readyz says why, and a
/// fixed configuration loaded with SIGHUP resumes it.
fn a_bad_key_halts_the_app_until_a_fixed_config_is_reloaded(backend: Backend) {
    let sim = sim(&[]);
    let dir = tempfile::tempdir().unwrap();
    let bad = rcgen::KeyPair::generate().unwrap();
    std::fs::write(dir.path().join("bad.p8"), bad.serialize_pem()).unwrap();
    backend.prepare(dir.path());
    let config = write_config(dir.path(), &sim, "bad.p8", "");
    let mut gw = Gw::new(dir, config);
    gw.spawn();
    let ids =
        gw.submit(json!({"app": "shop", "tokens": [token(1), token(2), token(3)], "alert": "x"}));
    wait_until("the app to halt", MINUTE, || {
        gw.api("GET", "/readyz", None).0 == 503
    });
    let (_, ready) = gw.api("GET", "/readyz", None);
    assert_eq!(ready["reasons"], json!(["app_halted"]), "{ready}");
    assert_eq!(ready["details"][0]["app"], "shop", "{ready}");
    assert!(
        ready["details"][0]["message"]
            .as_str()
            .unwrap()
            .contains("InvalidProviderToken"),
        "{ready}"
    );
    let (_, stats) = gw.api("GET", "/v1/stats", None);
    assert_eq!(stats["apps"]["shop"]["healthy"], false);
    // `pushgate status` says so, and exits 1.
    let status = Command::new(env!("CARGO_BIN_EXE_pushgate"))
        .args(["status", "--server", &gw.url])
        .env("PUSHGATE_API_KEY", KEY)
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&status.stdout);
    assert_eq!(status.status.code(), Some(1), "{shown}");
    assert!(
        shown.starts_with("NOT READY\n")
            && shown.contains("InvalidProviderToken")
            && shown.contains("app shop: halted:"),
        "{shown}"
    );
    // Halted, not failed: every notification goes back to the queue (one the pool had in
    // flight when the halt came is put back a moment later).
    poll_until("every notification queued again", MINUTE, || {
        let docs = gw.lookup(&ids);
        assert!(
            docs.iter().all(|d| d["state"] != "failed"),
            "halted, not failed: {docs:?}"
        );
        if docs.iter().all(|d| d["state"] == "queued") {
            Ok(())
        } else {
            Err(format!("{docs:?}"))
        }
    });
    // Fix the key and reload.
    write_config(gw.dir.path(), &sim, "AuthKey_ABC123DEFG.p8", "");
    gw.signal("HUP");
    let docs = gw.wait_final(&ids, MINUTE);
    assert!(docs.iter().all(|d| d["state"] == "delivered"), "{docs:?}");
    assert_eq!(gw.api("GET", "/readyz", None).0, 200);
}

/// SIGKILL while 5,000 acknowledged notifications are in progress and fewer than half have
/// reached the simulator (50 streams of 50 ms: about 1,000 a second); after a restart on the
/// same spool every acknowledged id arrives.
#[allow(clippy::print_stdout)] // the figure for the test log, as in a #[test]
fn kill_9_loses_nothing_acknowledged(backend: Backend) {
    let sim = sim(&["--latency-ms", "50", "--max-streams", "50"]);
    let mut gw = Gw::start_on(&backend, &sim, "max_connections = 1");
    let mut ids = Vec::new();
    for batch in 0..5u64 {
        let tokens: Vec<String> = (batch * 1_000..(batch + 1) * 1_000).map(token).collect();
        ids.extend(gw.submit(json!({"app": "shop", "tokens": tokens, "alert": "x"})));
    }
    gw.kill9();
    let at_kill = sim_stat(&sim, "unique_ids");
    assert!(
        at_kill < 2_500,
        "the kill landed with {at_kill} of 5,000 at the simulator"
    );
    gw.spawn();
    wait_until(
        "every acknowledged notification at the simulator",
        Duration::from_secs(120),
        || sim_stat(&sim, "unique_ids") >= 5_000,
    );
    let out = run(Command::new("curl").args(["-sf", &format!("{}/notifications", sim.stats)]));
    let seen: std::collections::HashMap<String, u32> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["apns_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .fold(std::collections::HashMap::new(), |mut m, id| {
            *m.entry(id).or_default() += 1;
            m
        });
    let missing: Vec<_> = ids.iter().filter(|id| !seen.contains_key(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged ids never arrived",
        missing.len()
    );
    let duplicates = sim_stat(&sim, "duplicate_ids");
    println!(
        "kill -9: {at_kill} of 5000 at the simulator when killed; after restart all 5000 arrived, {duplicates} duplicates (at-least-once)"
    );
    let docs = gw.wait_final(&ids, MINUTE);
    assert!(docs.iter().all(|d| d["state"] == "delivered"));
}

/// An operator's pause and a cancelled request, then SIGKILL: after the restart the app is
/// still paused (nothing sent), the cancelled request stays cancelled, and once resumed only
/// the other request reaches the simulator.
fn a_pause_and_a_cancel_survive_kill_9(backend: Backend) {
    let sim = sim(&[]);
    let mut gw = Gw::start_on(&backend, &sim, "");
    let (status, body) = gw.api("POST", "/v1/apps/shop/pause", None);
    assert_eq!(status, 200, "{body}");
    let keep: Vec<String> = (0..100).map(token).collect();
    let drop: Vec<String> = (100..200).map(token).collect();
    let kept = gw.submit(json!({"app": "shop", "tokens": keep, "alert": "x"}));
    let (status, answer) = gw.api(
        "POST",
        "/v1/notifications",
        Some(&json!({"app": "shop", "tokens": drop, "alert": "wrong"})),
    );
    assert_eq!(status, 202, "{answer}");
    let rid = answer["request_id"].as_str().unwrap().to_owned();
    let (status, body) = gw.api("POST", &format!("/v1/requests/{rid}/cancel"), None);
    assert_eq!(
        (status, body["cancelled"].as_u64()),
        (200, Some(100)),
        "{body}"
    );
    gw.kill9();
    gw.spawn();
    let (_, ready) = gw.api("GET", "/readyz", None);
    assert_eq!(ready["paused_apps"][0]["app"], "shop", "{ready}");
    let (_, stats) = gw.api("GET", "/v1/stats", None);
    assert_eq!(stats["apps"]["shop"]["queued"], 100, "{stats}");
    assert_eq!(stats["apps"]["shop"]["cancelled"], 100, "{stats}");
    assert_eq!(sim_stat(&sim, "requests"), 0, "nothing sent while paused");
    let (status, _) = gw.api("POST", "/v1/apps/shop/resume", None);
    assert_eq!(status, 200);
    let docs = gw.wait_final(&kept, MINUTE);
    assert!(docs.iter().all(|d| d["state"] == "delivered"), "{docs:?}");
    assert_eq!(sim_stat(&sim, "unique_ids"), 100);
    let ids: Vec<String> = answer["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    let docs = gw.lookup(&ids);
    assert!(
        docs.iter()
            .all(|d| d["state"] == "cancelled" && d["request_id"] == rid.as_str()),
        "{docs:?}"
    );
}

/// SIGTERM with streams in flight: they finish (no duplicates later), the process exits 0 (a
/// SQLite spool leaves no `-wal`/`-shm` behind), and a restart finishes the rest.
fn sigterm_finishes_streams_in_flight_and_exits_0(backend: Backend) {
    let sim = sim(&["--latency-ms", "300", "--max-streams", "20"]);
    let mut gw = Gw::start_on(&backend, &sim, "max_connections = 1");
    let tokens: Vec<String> = (0..200).map(token).collect();
    let ids = gw.submit(json!({"app": "shop", "tokens": tokens, "alert": "x"}));
    wait_until("streams in flight", MINUTE, || {
        gw.api("GET", "/v1/stats", None).1["apps"]["shop"]["streams_in_flight"].as_u64() > Some(0)
    });
    gw.signal("TERM");
    assert_eq!(gw.wait_exit(Duration::from_secs(15)), Some(0));
    if matches!(backend, Backend::Sqlite) {
        // A clean stop leaves the spool's file alone: its WAL checkpointed and removed.
        for f in ["spool.db-wal", "spool.db-shm"] {
            assert!(
                !gw.dir.path().join(f).exists(),
                "{f} left after a clean stop"
            );
        }
        assert!(gw.dir.path().join("spool.db").exists());
    }
    let delivered_before = sim_stat(&sim, "accepted");
    assert!(
        delivered_before > 0 && delivered_before < 200,
        "{delivered_before}"
    );
    gw.spawn();
    let docs = gw.wait_final(&ids, MINUTE);
    assert!(docs.iter().all(|d| d["state"] == "delivered"));
    assert_eq!(
        sim_stat(&sim, "duplicate_ids"),
        0,
        "streams finished before exit were not re-sent"
    );
}

/// `pushgate serve --demo` needs no configuration, prints its key, and delivers.
#[test]
fn the_demo_runs_from_an_empty_folder() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pushgate"))
        .args(["serve", "--demo", "--listen", "127.0.0.1:0"])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::BufRead;
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let url = lines
        .next()
        .unwrap()
        .unwrap()
        .strip_prefix("pushgate listening on ")
        .unwrap()
        .to_owned();
    let _sim = lines.next().unwrap().unwrap();
    let key_line = lines.next().unwrap().unwrap();
    let key = std::fs::read_to_string(dir.path().join("pushgate-data/demo-api-key"))
        .unwrap()
        .trim()
        .to_owned();
    assert!(key_line.contains(&key), "{key_line}");
    let out = run(Command::new("curl").args([
        "-s",
        "-H",
        &format!("Authorization: Bearer {key}"),
        "-H",
        "content-type: application/json",
        "-d",
        &json!({"app": "demo", "tokens": [token(5)], "alert": "hi"}).to_string(),
        &format!("{url}/v1/notifications"),
    ]));
    let ids: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = ids["ids"][0].as_str().unwrap().to_owned();
    wait_until("the demo notification to be delivered", MINUTE, || {
        let out = run(Command::new("curl").args([
            "-s",
            "-H",
            &format!("Authorization: Bearer {key}"),
            &format!("{url}/v1/notifications/{id}"),
        ]));
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .is_ok_and(|d| d["state"] == "delivered")
    });
    let _ = child.kill();
    let _ = child.wait();
}

/// A notification Apple has not answered yet shows as `in_flight` (known to dispatch; the spool
/// keeps it queued), in its document and in the stats, then `delivered`.
fn a_notification_awaiting_apples_answer_is_in_flight(backend: Backend) {
    let sim = sim(&["--latency-ms", "1500"]);
    let gw = Gw::start_on(&backend, &sim, "");
    let ids = gw.submit(json!({"app": "shop", "tokens": [token(5)], "alert": "x"}));
    wait_until("the notification in flight", MINUTE, || {
        gw.lookup(&ids)[0]["state"] == "in_flight"
    });
    let (_, stats) = gw.api("GET", "/v1/stats", None);
    assert_eq!(stats["apps"]["shop"]["in_flight"], 1, "{stats}");
    assert_eq!(stats["apps"]["shop"]["queued"], 0, "{stats}");
    let (_, doc) = gw.api("GET", &format!("/v1/notifications/{}", ids[0]), None);
    assert_eq!(doc["state"], "in_flight");
    let docs = gw.wait_final(&ids, MINUTE);
    assert_eq!(docs[0]["state"], "delivered");
}

on_each_backend!(
    a_notification_is_delivered_end_to_end,
    a_batch_of_ten_thousand,
    every_consequence_class_and_suppression,
    injected_failures_and_goaway_are_retried_until_delivered,
    expiry_and_delay,
    kill_9_loses_nothing_acknowledged,
    a_pause_and_a_cancel_survive_kill_9,
    sigterm_finishes_streams_in_flight_and_exits_0,
    a_notification_awaiting_apples_answer_is_in_flight,
    a_bad_key_halts_the_app_until_a_fixed_config_is_reloaded,
);

/// `[server] metrics_listen`: `/metrics` moves to its own plain-HTTP listener (with the
/// probes), and the API's listener no longer serves it.
#[test]
fn metrics_move_to_their_own_listener() {
    let sim = sim(&[]);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &sim, "AuthKey_ABC123DEFG.p8", "");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replacen(
            "shutdown_grace_s = 10",
            "shutdown_grace_s = 10\nmetrics_listen = \"127.0.0.1:0\"",
            1,
        ),
    )
    .unwrap();
    let mut gw = Gw::new(dir, config);
    gw.spawn();
    let metrics = gw.metrics.clone().expect("the metrics listener's address");
    let ids = gw.submit(json!({"app": "shop", "tokens": [token(1)], "alert": "x"}));
    gw.wait_final(&ids, MINUTE);
    let get = |url: &str| {
        let out = run(Command::new("curl").args(["-s", "-w", "\n%{http_code}", url]));
        let text = String::from_utf8(out.stdout).unwrap();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (code.to_owned(), body.to_owned())
    };
    poll_until(
        "the delivery counted on the metrics listener",
        MINUTE,
        || {
            let (code, body) = get(&metrics);
            if code == "200"
                && body.contains("pushgate_notifications_accepted_total{app=\"shop\"} 1")
            {
                Ok(())
            } else {
                Err(format!("{code}: {body}"))
            }
        },
    );
    let base = metrics.trim_end_matches("/metrics");
    let (code, body) = get(&format!("{base}/readyz"));
    assert_eq!(
        (code.as_str(), body.as_str()),
        ("200", r#"{"status":"ready","reasons":[]}"#)
    );
    assert_eq!(get(&format!("{base}/healthz")).0, "200");
    let (code, body) = get(&format!("{base}/v1/stats"));
    assert_eq!(code, "404", "only metrics and probes there: {body}");
    let (code, body) = get(&format!("{}/metrics", gw.url));
    assert_eq!(code, "404", "not on the API's listener any more: {body}");
    assert_eq!(get(&format!("{}/readyz", gw.url)).0, "200");
}

/// A trial without Apple, as docs/momentum.md's recipe runs it: `mock-apns --jwt-key-out`
/// makes the signing key, and a gateway signing with it delivers.
#[test]
fn a_trial_key_from_the_simulator_delivers() {
    let keys = tempfile::tempdir().unwrap();
    let sim = start_sim(&["--jwt-key-out", keys.path().to_str().unwrap()]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        keys.path().join("AuthKey_SIMULATED.p8"),
        dir.path().join("AuthKey_SIMULATED.p8"),
    )
    .unwrap();
    let config = write_config(dir.path(), &sim, "AuthKey_SIMULATED.p8", "");
    let mut gw = Gw::new(dir, config);
    gw.spawn();
    let ids = gw.submit(json!({"app": "shop", "tokens": [token(5)], "alert": "trial"}));
    let docs = gw.wait_final(&ids, MINUTE);
    assert_eq!(docs[0]["state"], "delivered", "{}", docs[0]);
    assert!(keys.path().join("AuthKey_SIMULATED.pub.pem").exists());
    // The simulator checks tokens against that key: one signed with another is refused.
    let other = Gw::start(&sim, "");
    other.submit(json!({"app": "shop", "tokens": [token(6)], "alert": "x"}));
    wait_until("the other key refused", MINUTE, || {
        let (status, ready) = other.api("GET", "/readyz", None);
        status == 503 && ready.to_string().contains("InvalidProviderToken")
    });
}
