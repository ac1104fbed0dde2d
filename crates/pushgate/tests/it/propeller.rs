//! propeller-apns' ways in through the built binary: a beanstalkd job committed, then the
//! process killed before the job's delete (the failpoint makes the moment exact), and a
//! restart that sends it once.

use std::process::Command;
use std::time::Duration;

use gateway::local_beanstalkd::Server;
use serde_json::Value;

use crate::gateway_harness::*;
use crate::harness::*;

const MINUTE: Duration = Duration::from_secs(60);

/// The producer the gateway crate's tests use (greenstalk, as propeller's server.py).
fn producer(args: &[&str], stdin: &str) -> Vec<String> {
    use std::io::Write;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../gateway/tests/it/propeller_producer.py"
    );
    let mut child = Command::new("python3")
        .arg(script)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 with greenstalk (scripts/test installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "producer {args:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn tube_stats(bs: &Server, tube: &str) -> Value {
    let (host, port) = bs.addr.split_once(':').unwrap();
    serde_json::from_str(&producer(&["stats", host, port, tube], "")[0]).unwrap()
}

/// Killed between the commit and the delete: beanstalkd gives the job back, the restarted
/// gateway recognises it (its idempotency key) and deletes it, and the one notification that
/// was committed is delivered once.
#[test]
fn a_crash_between_commit_and_delete_sends_the_job_once() {
    let Some(bs) = Server::start() else { return };
    let sim = sim(&[]);
    let dir = tempfile::tempdir().unwrap();
    let sections = format!(
        "[[beanstalkd]]\nserver = \"{}\"\nconnections = 1\n",
        bs.addr
    );
    let config = write_config_with(dir.path(), &sim, "AuthKey_ABC123DEFG.p8", "", &sections);
    let mut gw = Gw::new(dir, config);
    let (host, port) = bs.addr.split_once(':').unwrap();
    let job = format!(
        r#"{{"token": "{}", "title": "Once", "body": "only once", "badge": 1}}"#,
        token(7)
    );
    producer(
        &["put", host, port, "com.example.demo"],
        &format!("{job}\n"),
    );

    gw.spawn_with(&[("PUSHGATE_FAILPOINT", "beanstalkd-after-commit")]);
    let code = gw.wait_exit(MINUTE);
    assert_eq!(
        code, None,
        "ended by a signal (the failpoint's abort), not an exit code"
    );
    let tube = tube_stats(&bs, "com.example.demo");
    assert_eq!(
        (
            tube["current-jobs-ready"].as_u64(),
            tube["total-jobs"].as_u64()
        ),
        (Some(1), Some(1)),
        "the job is back in the queue: {tube}"
    );

    gw.spawn();
    wait_until("the job deleted", MINUTE, || {
        let s = tube_stats(&bs, "com.example.demo");
        s["current-jobs-ready"] == 0 && s["current-jobs-reserved"] == 0
    });
    wait_until("the notification delivered", MINUTE, || {
        stats(&sim)["accepted"].as_u64() >= Some(1)
    });
    let (_, metrics_text) = {
        let out = run(Command::new("curl").args(["-s", &format!("{}/metrics", gw.url)]));
        (out.status, String::from_utf8(out.stdout).unwrap())
    };
    assert!(
        metrics_text
            .lines()
            .any(|l| l.starts_with("pushgate_beanstalkd_jobs_total")
                && l.contains("outcome=\"replayed\"")
                && l.ends_with(" 1")),
        "the second reservation was a replay:\n{metrics_text}"
    );
    // One notification: every send Apple saw carries its one id (a send cut by the crash may
    // be sent again — at least once — but never as a second notification).
    let s = stats(&sim);
    assert_eq!(s["unique_ids"].as_u64(), Some(1), "{s}");
}
