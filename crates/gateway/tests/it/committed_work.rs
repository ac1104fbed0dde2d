//! Committed work that must not wait for a trigger that never comes: a request whose client
//! went away before the answer, retries due by the thousand at start-up, and one app's backlog
//! that must not cost the others their reads.

use std::io::{Read, Write};
use std::time::Duration;

use gateway::dispatch::DispatchOptions;
use gateway::spool::{Spool, State};

use crate::harness::{retries, token};
use crate::live::{
    Backend, KEY, Live, TOPIC, app_section, app_section_with, counter_where, mock, shop, until,
};

/// The topic of the app beside the halted one (two apps of one topic in one environment are
/// refused).
const BESIDE: &str = "com.example.beside";

const MINUTE: Duration = Duration::from_secs(60);

/// A client that goes away before its answer makes hyper drop the request's handler; what the
/// spool commits for it is still delivered, at once, with the gateway otherwise idle. The
/// spool's write lock is held meanwhile, so a commit can only happen after the handler is gone:
/// the client sees its connection closed without an answer first. (Hyper may also drop the
/// handler before it submits anything — nothing is accepted then, and the client tries again.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_client_went_away_is_still_delivered() {
    let sim = mock().record_limit(0).spawn().await.unwrap();
    let live = Live::start(&sim, "", DispatchOptions::default()).await;
    let tokens: Vec<String> = (0..1_000).map(|i| token(i).as_str().to_owned()).collect();
    let body = serde_json::json!({"app": "shop", "tokens": tokens, "alert": "hello"}).to_string();
    let mut committed = 0;
    // Each attempt races the server seeing the client's end of input (which drops the
    // handler) against the handler handing the request to the spool writer; on two busy
    // cores the first can win many times in a row. The loop ends at the first hand-off.
    for _ in 0..200 {
        let lock = rusqlite::Connection::open(live.dir.path().join("spool.db")).unwrap();
        lock.busy_timeout(Duration::from_secs(10)).unwrap();
        lock.execute_batch("BEGIN IMMEDIATE").unwrap();
        let (addr, body) = (live.addr, body.clone());
        let answer = tokio::task::spawn_blocking(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            write!(
                s,
                "POST /v1/notifications HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
            // Gone: nothing more is sent, and the answer is never waited for.
            s.shutdown(std::net::Shutdown::Write).unwrap();
            let mut answer = Vec::new();
            let _ = s.read_to_end(&mut answer);
            answer
        })
        .await
        .unwrap();
        assert!(
            answer.is_empty(),
            "the server answered before the commit: {}",
            String::from_utf8_lossy(&answer)
        );
        lock.execute_batch("ROLLBACK").unwrap();
        drop(lock);
        // Whatever reached the writer is applied once this answers.
        live.spool().flush().await.unwrap();
        committed = live.held().await;
        if committed > 0 {
            break;
        }
    }
    assert!(committed > 0, "no attempt reached the spool");
    // An earlier attempt's submission may land after its flush, so count again: everything
    // the spool holds is delivered.
    until(
        "every committed request delivered",
        Duration::from_secs(10),
        || async { live.count(State::Delivered).await == live.held().await },
    )
    .await;
    live.stop().await;
}

/// Retries due by the thousand when the gateway starts (it was killed during an outage and
/// restarted after it) are all read at once, not a page of them and the rest never: 3,000
/// are delivered within seconds.
async fn thousands_of_retries_due_at_start_up_are_all_delivered(backend: Backend) {
    let sim = mock().record_limit(0).spawn().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = backend.write_config(dir.path(), &app_section(dir.path(), &sim, "shop", ""));
    let spool = backend.spool_in(&dir).await;
    let request = shop(0, 3_000);
    let ids: Vec<_> = request.notifications.iter().map(|(id, _)| *id).collect();
    spool.enqueue(vec![request]).await.unwrap();
    let past = std::time::SystemTime::now() - Duration::from_secs(30);
    let retries = retries(&ids, |i| past + Duration::from_millis(i as u64));
    spool.complete(retries, vec![]).await.unwrap();
    spool.close().await.unwrap();
    drop(spool);
    let live = Live::start_in(dir, config, DispatchOptions::default()).await;
    until(
        "all 3,000 retries delivered",
        Duration::from_secs(10),
        || async { live.count(State::Delivered).await == 3_000 },
    )
    .await;
    let s = sim.stats().snapshot();
    assert_eq!((s.unique_ids, s.duplicate_ids), (3_000, 0), "{s:?}");
    live.stop().await;
}

/// A backlog five times the queue's size, waiting in the spool at start-up, is paged in as the
/// queue drains to half — not at the next periodic scan, which here never comes.
async fn a_backlog_larger_than_the_queue_is_paged_in_as_it_drains(backend: Backend) {
    let sim = mock().record_limit(0).spawn().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = backend.write_config(dir.path(), &app_section(dir.path(), &sim, "shop", ""));
    let spool = backend.spool_in(&dir).await;
    spool.enqueue(vec![shop(0, 5_000)]).await.unwrap();
    spool.close().await.unwrap();
    drop(spool);
    let options = DispatchOptions {
        queue_capacity: 1_000,
        scan_interval: Duration::from_secs(3_600),
        ..DispatchOptions::default()
    };
    let live = Live::start_in(dir, config, options).await;
    until("the whole backlog delivered", MINUTE, || async {
        live.count(State::Delivered).await == 5_000
    })
    .await;
    live.stop().await;
}

/// An app halted with 200,000 notifications queued is not read again and again: the scheduler
/// leaves its backlog in the spool while its queue holds enough to probe with, and another
/// app's work goes on beside it.
async fn a_halted_backlog_is_not_read_again_and_again(backend: Backend) {
    // The halted app's simulator trusts another key: every token is refused.
    let refusing = crate::live::refusing_mock().await;
    let sim = mock().record_limit(0).spawn().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Named per backend: the metrics read below are the process's, shared by both runs.
    let halted = format!("halted-backlog-{}", backend.name());
    let apps = app_section(dir.path(), &refusing, &halted, "")
        + &app_section_with(dir.path(), &sim, "beside-it", BESIDE, "");
    let config = backend.write_config(dir.path(), &apps);
    // Frequent scans and probes, so that many of them happen while the test watches.
    let options = DispatchOptions {
        scan_interval: Duration::from_millis(50),
        probe_interval: Duration::from_millis(100),
        ..DispatchOptions::default()
    };
    let live = Live::start_in(dir, config, options).await;
    let request = |app: &str, first, n| {
        let mut r = crate::harness::request(app, first, n);
        let topic = if app == "beside-it" { BESIDE } else { TOPIC };
        r.topic = Some(apns::Topic::parse(topic).unwrap());
        r
    };
    live.submit(vec![request(&halted, 0, 200_000)]).await;
    until("the app to halt", MINUTE, || async {
        live.dispatch.halted().iter().any(|(app, _)| *app == halted)
    })
    .await;
    let label = format!("app=\"{halted}\"");
    let rows_read = || counter_where("pushgate_spool_rows_read_total", &label);
    // What was read before the halt (a pass may still be finishing) is not counted: the
    // window opens three probes later.
    let probes = refusing.stats().snapshot().requests;
    until("three probes of the halted app", MINUTE, || async {
        refusing.stats().snapshot().requests >= probes + 3
    })
    .await;
    let before = rows_read();
    let probes = refusing.stats().snapshot().requests;
    let beside = request("beside-it", 0, 1_000);
    let ids: Vec<_> = beside.notifications.iter().map(|(id, _)| *id).collect();
    live.submit(vec![beside]).await;
    until(
        "the other app's notifications delivered",
        MINUTE,
        || async { live.count(State::Delivered).await == 1_000 },
    )
    .await;
    // Its status lookups share the reader with the scheduler: each answers, delivered.
    for id in ids.iter().step_by(50) {
        let (status, doc) = live.get(&format!("/v1/notifications/{id}")).await;
        assert_eq!(
            (status, doc["state"].as_str()),
            (200, Some("delivered")),
            "{doc}"
        );
    }
    // Ten probes at 100 ms: about a second, twenty scans.
    until("ten more probes of the halted app", MINUTE, || async {
        refusing.stats().snapshot().requests >= probes + 10
    })
    .await;
    let read = rows_read() - before;
    assert!(
        read < 5_000.0,
        "{read} rows of the halted app read while it stayed halted"
    );
    assert_eq!(
        live.count(State::Queued).await,
        200_000,
        "the backlog kept whole"
    );
    live.stop().await;
}

on_each_backend!(
    thousands_of_retries_due_at_start_up_are_all_delivered,
    a_backlog_larger_than_the_queue_is_paged_in_as_it_drains,
    a_halted_backlog_is_not_read_again_and_again,
);
