//! Kill -9 at the spool level: a child process submits batches and prints each id only after
//! its submit was acknowledged; the parent SIGKILLs it mid-stream, reopens the spool, and finds
//! every acknowledged id.

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

use gateway::spool::{Spool, SpoolOptions, Store};

use crate::harness::request;

const CHILD_ENV: &str = "PUSHGATE_CRASH_CHILD_SPOOL";

/// Not a test on its own: the child half of the crash test, run by it in a separate process.
#[tokio::test]
#[ignore = "run by acknowledged_submits_survive_sigkill in a child process"]
async fn crash_child_submits_until_killed() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        panic!("{CHILD_ENV} must name the spool file");
    };
    let spool = Store::sqlite(std::path::Path::new(&path), SpoolOptions::default()).unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    // Four submitters so that commits overlap and group.
    for worker in 0..4u64 {
        let spool = spool.clone();
        tasks.spawn(async move {
            let mut n = 0u64;
            loop {
                let r = request("crash", worker * 1_000_000_000 + n * 100, 100);
                let ids: Vec<String> = r
                    .notifications
                    .iter()
                    .map(|(id, _)| id.to_string())
                    .collect();
                println!("submitting {}", ids[0]);
                spool.enqueue(vec![r]).await.unwrap();
                println!("acked {}", ids.join(" "));
                n += 1;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

#[tokio::test]
async fn acknowledged_submits_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.db");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "crash::crash_child_submits_until_killed",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acked: Vec<String> = Vec::new();
    let mut batches = 0;
    // Read until 200 batches are acknowledged, then kill at once, while submits continue.
    while batches < 200 {
        let line = lines.next().expect("child exited early").unwrap();
        if let Some(ids) = line.strip_prefix("acked ") {
            acked.extend(ids.split(' ').map(str::to_owned));
            batches += 1;
        }
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(
        status.signal(),
        Some(9),
        "the child died by SIGKILL, not by finishing"
    );
    // Lines already printed before the kill are acknowledged too.
    let mut submitting_after = 0;
    for line in lines.map_while(Result::ok) {
        if let Some(ids) = line.strip_prefix("acked ") {
            acked.extend(ids.split(' ').map(str::to_owned));
        } else if line.starts_with("submitting ") {
            submitting_after += 1;
        }
    }
    assert!(
        submitting_after > 0 || batches >= 200,
        "the kill landed while submits were under way"
    );

    let spool = Store::sqlite(&path, SpoolOptions::default()).unwrap();
    let mut missing = Vec::new();
    for id in &acked {
        let id = apns::ApnsId::parse(id).unwrap();
        if spool.get(id).await.unwrap().is_none() {
            missing.push(id);
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged ids lost: {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );
    // Whole requests only: every stored request has all of its 100 notifications.
    let pending = spool.pending();
    assert_eq!(
        pending % 100,
        0,
        "a request was half-stored ({pending} rows)"
    );
    assert!(pending >= acked.len() as u64);
}
