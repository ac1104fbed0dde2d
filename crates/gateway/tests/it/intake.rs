//! The intake, the one way in: a submission's on-commit hook runs once its requests are
//! committed, with them, and a hook that panics takes nothing committed with it.

use std::sync::{Arc, Mutex};

use gateway::ingest::{Intake, Submission};
use gateway::spool::{Spool, SpoolOptions, Store};

use crate::harness::request;

fn intake(dir: &tempfile::TempDir) -> Intake {
    let spool = Store::sqlite(&dir.path().join("spool.db"), SpoolOptions::default()).unwrap();
    let file = dir.path().join("pushgate.toml");
    let config = gateway::config::load_str("[storage]\nsqlite = \"spool.db\"\n", &file);
    Intake::standalone(Arc::new(config.unwrap()), spool)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_on_commit_hook_runs_after_the_commit_with_the_requests() {
    let dir = tempfile::tempdir().unwrap();
    let intake = intake(&dir);
    let seen = Arc::new(Mutex::new(None));
    let (spool, record) = (intake.spool().clone(), Arc::clone(&seen));
    let mut s = Submission::new(None, vec![request("shop", 0, 3), request("shop", 3, 2)]);
    s.on_commit = Some(Box::new(move |committed| {
        // Committed already: the spool counts them as pending.
        let sizes: Vec<usize> = committed.iter().map(|r| r.len()).collect();
        *record.lock().unwrap() = Some((sizes, spool.pending()));
    }));
    intake.submit(s).await.unwrap();
    assert_eq!(*seen.lock().unwrap(), Some((vec![3, 2], 5)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_that_panics_loses_nothing_committed() {
    let dir = tempfile::tempdir().unwrap();
    let intake = intake(&dir);
    let mut s = Submission::new(None, vec![request("shop", 0, 4)]);
    s.on_commit = Some(Box::new(|_| panic!("a hook that fails")));
    intake.submit(s).await.unwrap();
    assert_eq!(intake.spool().pending(), 4);
}
