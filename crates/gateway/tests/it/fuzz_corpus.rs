//! The fuzz targets' inputs as ordinary tests (docs/fuzzing.md): every input in
//! `fuzz/seeds/<target>/` — the seeds from the tests and a sample of what the fuzzer kept —
//! and every crash it found, kept under `fuzz/artifacts/<target>/` once fixed, runs through the
//! same entry point as under libFuzzer, so a fixed crash cannot come back unnoticed.

use std::path::Path;

/// Runs `entry` on every input kept for `target`; answers how many there were.
fn replay(target: &str, entry: fn(&[u8])) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut n = 0;
    for kind in ["seeds", "artifacts"] {
        let Ok(entries) = std::fs::read_dir(root.join(kind).join(target)) else {
            continue;
        };
        let mut paths: Vec<_> = entries.map(|e| e.unwrap().path()).collect();
        paths.sort();
        for path in paths {
            let data = std::fs::read(&path).unwrap();
            // A panic names the input, for `cargo fuzz run <target> <file>`.
            let run = std::panic::catch_unwind(|| entry(&data));
            assert!(run.is_ok(), "{} panics", path.display());
            n += 1;
        }
    }
    assert!(n >= 3, "the seeds of {target} are in fuzz/seeds/{target}");
    n
}

#[test]
fn mcmt_messages() {
    replay("mcmt", gateway::fuzzing::mcmt_message);
}

#[test]
fn notification_documents() {
    replay("notification_json", gateway::fuzzing::notification_json);
}

#[test]
fn configuration_files() {
    replay("config_file", gateway::fuzzing::config_file);
}

#[test]
fn smtp_sessions() {
    replay("smtp_session", gateway::fuzzing::smtp_session);
}

#[test]
fn simulator_requests() {
    replay("simulator_request", apns_mock::fuzzing::request);
}
