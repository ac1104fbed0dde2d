//! Two `pushgate serve` processes on one PostgreSQL database, delivering to one simulator: a
//! kill -9 of one mid-load (the other rescues its work; nothing acknowledged is lost), a
//! SIGTERM of one (its work handed back at once), one provider token for both, a dead token
//! found by one suppressing it on the other, a scheduled send run once, and the cluster view.
//! PostgreSQL only: these tests skip where it is not installed, and fail under CI without it.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::gateway_harness::*;
use crate::harness::*;

const MINUTE: Duration = Duration::from_secs(60);

fn sim_stat(sim: &Sim, key: &str) -> u64 {
    stats(sim)[key].as_u64().unwrap()
}

/// Two gateways on one fresh database (the second with `extra` in its app), or `None` without
/// PostgreSQL.
fn pair(sim: &Sim, app: &str) -> Option<(Gw, Gw)> {
    let backend = Backend::postgres()?;
    let a = Gw::start_on(&backend, sim, app);
    let b = Gw::start_on(&backend, sim, app);
    Some((a, b))
}

/// The cluster as `gw` shows it in `/v1/stats`.
fn cluster(gw: &Gw) -> Vec<serde_json::Value> {
    let (status, stats) = gw.api("GET", "/v1/stats", None);
    assert_eq!(status, 200, "{stats}");
    stats["cluster"].as_array().cloned().unwrap_or_default()
}

#[test]
#[allow(clippy::print_stdout)] // the figures, for BENCHMARKS.md
fn kill_9_of_one_gateway_loses_nothing_and_the_other_rescues_its_work() {
    let sim = sim(&["--latency-ms", "50", "--max-streams", "50"]);
    let Some((mut a, b)) = pair(&sim, "max_connections = 1") else {
        return;
    };
    let both = cluster(&a);
    assert_eq!(both.len(), 2, "{both:?}");
    assert_eq!(both.iter().filter(|g| g["this"] == true).count(), 1);
    let mut to_a = Vec::new();
    let mut to_b = Vec::new();
    for batch in 0..3u64 {
        let tokens: Vec<String> = (batch * 1_000..(batch + 1) * 1_000).map(token).collect();
        to_a.extend(a.submit(json!({"app": "shop", "tokens": tokens, "alert": "a"})));
        let tokens: Vec<String> = (10_000 + batch * 1_000..10_000 + (batch + 1) * 1_000)
            .map(token)
            .collect();
        to_b.extend(b.submit(json!({"app": "shop", "tokens": tokens, "alert": "b"})));
    }
    wait_until("both under way", MINUTE, || {
        sim_stat(&sim, "unique_ids") > 300
    });
    a.kill9();
    let killed = Instant::now();
    let at_kill = sim_stat(&sim, "unique_ids");
    assert!(
        at_kill < 5_000,
        "the kill landed with {at_kill} of 6,000 sent"
    );
    // The survivor answers for the ids the dead one accepted, and delivers them.
    let all: Vec<String> = to_a.iter().chain(&to_b).cloned().collect();
    let docs = b.wait_final(&all, 2 * MINUTE);
    let rescued_in = killed.elapsed();
    assert!(
        docs.iter().all(|d| d["state"] == "delivered"),
        "{:?}",
        &docs[0]
    );
    assert_eq!(sim_stat(&sim, "unique_ids"), 6_000);
    // At most what the dead one had in flight (50 streams) and answered but not yet recorded
    // comes twice.
    let duplicates = sim_stat(&sim, "duplicate_ids");
    assert!(duplicates <= 100, "{duplicates} duplicates");
    let left = cluster(&b);
    assert_eq!(
        left.len(),
        1,
        "the dead one's registration is gone: {left:?}"
    );
    println!(
        "kill -9 of one of two gateways: {at_kill} of 6000 at the simulator when killed; all \
         6000 delivered {:.1} s after the kill, 0 lost, {duplicates} duplicates",
        rescued_in.as_secs_f64()
    );
}

#[test]
fn sigterm_of_one_gateway_hands_its_work_back_at_once() {
    // Slow enough that the first gateway still holds most of its work when it stops.
    let sim = sim(&["--latency-ms", "200", "--max-streams", "10"]);
    let Some((mut a, b)) = pair(&sim, "max_connections = 1") else {
        return;
    };
    let tokens: Vec<String> = (0..500).map(token).collect();
    let ids = a.submit(json!({"app": "shop", "tokens": tokens, "alert": "x"}));
    wait_until("under way", MINUTE, || sim_stat(&sim, "unique_ids") > 10);
    a.signal("TERM");
    assert_eq!(a.wait_exit(MINUTE), Some(0));
    let stopped = Instant::now();
    // Handed back and claimed by the other long before a lease (30 s) could have expired.
    wait_until("the other holds the rest", Duration::from_secs(20), || {
        cluster(&b).iter().any(|g| g["holds"].as_u64() > Some(0))
            || b.lookup(&ids).iter().all(|d| d["state"] == "delivered")
    });
    let docs = b.wait_final(&ids, 2 * MINUTE);
    assert!(docs.iter().all(|d| d["state"] == "delivered"));
    assert_eq!(
        sim_stat(&sim, "duplicate_ids"),
        0,
        "a clean stop re-sends nothing"
    );
    // Handed back, not rescued: the survivor never saw the other one stop answering.
    assert!(
        !b.log().contains("stopped answering"),
        "rescued rather than handed back ({:.1} s): {}",
        stopped.elapsed().as_secs_f64(),
        b.log()
    );
}

/// One provider token for both gateways (the simulator counts the distinct tokens it was
/// shown); a token found dead by one is suppressed by the other; a scheduled send is sent once.
#[test]
fn the_gateways_agree_on_the_token_the_dead_tokens_and_the_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let reasons = dir.path().join("reasons");
    let dead = token(999);
    std::fs::write(&reasons, format!("{dead} 410 Unregistered\n")).unwrap();
    let sim = sim(&["--reasons", reasons.to_str().unwrap()]);
    let Some((a, b)) = pair(&sim, "") else {
        return;
    };
    let first = a.submit(json!({"app": "shop", "tokens": [token(1)], "alert": "a"}));
    let second = b.submit(json!({"app": "shop", "tokens": [token(2)], "alert": "b"}));
    a.wait_final(&[first, second].concat(), MINUTE);
    assert_eq!(
        sim_stat(&sim, "provider_tokens"),
        1,
        "both gateways present the cluster's one token"
    );

    // Dead at `a`'s send...
    let died = a.submit(json!({"app": "shop", "tokens": [dead], "alert": "x"}));
    assert_eq!(a.wait_final(&died, MINUTE)[0]["reason"], "Unregistered");
    let sent = sim_stat(&sim, "requests");
    // ... and suppressed at `b` without a send, once `b` has heard (at `a`'s commit).
    wait_until("b hears of the dead token", MINUTE, || {
        let out =
            run(std::process::Command::new("curl").args(["-sf", &format!("{}/metrics", b.url)]));
        String::from_utf8_lossy(&out.stdout)
            .contains("pushgate_cluster_events_total{kind=\"dead_token\"}")
    });
    let ids = b.submit(json!({"app": "shop", "tokens": [token(999)], "alert": "y"}));
    let doc = &b.wait_final(&ids, MINUTE)[0];
    assert_eq!(
        (doc["attempts"].as_u64(), doc["reason"].as_str()),
        (Some(0), Some("Unregistered")),
        "{doc}"
    );
    assert_eq!(sim_stat(&sim, "requests"), sent, "not sent again");

    // Scheduled on `a`, due in a second: sent once between the two of them.
    let due = b.submit(json!({"app": "shop", "tokens": [token(3)], "alert": "later", "delay": 1}));
    let doc = &a.wait_final(&due, MINUTE)[0];
    assert_eq!(
        (doc["state"].as_str(), doc["attempts"].as_u64()),
        (Some("delivered"), Some(1))
    );
    assert_eq!(sim_stat(&sim, "duplicate_ids"), 0);
}
