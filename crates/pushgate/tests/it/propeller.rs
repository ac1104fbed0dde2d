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

/// `pushgate propeller` as Supervisor would run propeller's worker: its flags, a combined
/// `.pem`, the built-in simulator. A job in the topic's tube, one in `default` (propeller's
/// worker consumed it too) and a `/post` form are all delivered, with the auth token from the
/// environment.
#[test]
fn the_drop_in_command_takes_propellers_flags_tubes_and_form() {
    let Some(bs) = Server::start() else { return };
    let data = tempfile::tempdir().unwrap();
    let cert = fixtures().join("client-combined.pem");
    let mut child = Command::new(env!("CARGO_BIN_EXE_pushgate"))
        .args(["propeller", "--cert"])
        .arg(&cert)
        .args([
            "--topic",
            "com.example.demo",
            "--server",
            "mock",
            "--beanstalkd",
            &bs.addr,
        ])
        .arg("--data")
        .arg(data.path())
        .args(["--listen", "127.0.0.1:0"])
        .env("PUSHGATE_AUTH_TOKEN", "propeller-secret-token")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    let first = lines.next().unwrap().unwrap();
    let url = first
        .strip_prefix("pushgate listening on ")
        .unwrap_or_else(|| panic!("{first}"))
        .to_owned();
    let rest: Vec<String> = lines.by_ref().take(3).map(Result::unwrap).collect();
    assert!(
        rest[0].contains("tube com.example.demo and default"),
        "{rest:?}"
    );
    let (host, port) = bs.addr.split_once(':').unwrap();
    let job = |i: u64| {
        format!(
            r#"{{"token": "{}", "title": "Job", "body": "{i}", "badge": null}}"#,
            token(i)
        )
    };
    producer(
        &["put", host, port, "com.example.demo"],
        &format!("{}\n", job(1)),
    );
    producer(&["put", host, port, "default"], &format!("{}\n", job(2)));
    let out = run(Command::new("curl").args([
        "-s",
        &format!("{url}/post"),
        "-d",
        "auth_token=propeller-secret-token",
        "-d",
        "title=Form",
        "-d",
        &format!("token={}", token(3)),
        "-d",
        "topic=com.example.demo",
    ]));
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(answer["id"].is_string(), "{answer}");
    wait_until("three delivered", MINUTE, || {
        let out = run(Command::new("curl").args([
            "-s",
            "-H",
            "Authorization: Bearer propeller-secret-token",
            &format!("{url}/v1/stats"),
        ]));
        let stats: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        stats["apps"]["com.example.demo"]["delivered"] == 3
    });
    let config = std::fs::read_to_string(data.path().join("propeller.toml")).unwrap();
    assert!(
        !config.contains("propeller-secret-token"),
        "only its hash is written"
    );
    assert!(data.path().join("spool.db").exists());
    let _ = child.kill();
    let _ = child.wait();
}

/// Without the auth token in the environment, it says what to set (exit 2).
#[test]
fn the_drop_in_command_needs_its_auth_token() {
    let out = Command::new(env!("CARGO_BIN_EXE_pushgate"))
        .args([
            "propeller",
            "--cert",
            "x.pem",
            "--topic",
            "com.example.demo",
            "--server",
            "mock",
        ])
        .env_remove("PUSHGATE_AUTH_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("set PUSHGATE_AUTH_TOKEN"));
}
