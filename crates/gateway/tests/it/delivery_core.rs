//! After "accepted": what becomes of committed work when something around it fails — the
//! spool refusing outcomes, a wrong environment, many dead tokens at once.

use std::time::Duration;

use gateway::dispatch::DispatchOptions;
use gateway::spool::{Spool, State};

use crate::harness::token;
use crate::live::{Backend, Live, counter, mock, shop, until};

const MINUTE: Duration = Duration::from_secs(60);

/// Outcomes the spool cannot commit (a full disk) pause dispatch instead of being forgotten:
/// `/readyz` says why, nothing new is sent, the held outcomes are committed once the spool
/// takes them again — and no notification reaches Apple twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_the_spool_refuses_pause_dispatch_and_nothing_is_sent_twice() {
    // Answers wait 200 ms, so the fault is in place before the first outcome arrives and a
    // backlog is still waiting when it strikes.
    let sim = mock()
        .latency(Duration::from_millis(200))
        .record_limit(0)
        .spawn()
        .await
        .unwrap();
    let live = Live::start(&sim, "", DispatchOptions::default()).await;
    live.submit(vec![shop(0, 30_000)]).await;
    live.spool().inject_write_failures(true);
    until("dispatch to pause", MINUTE, || async {
        live.dispatch.paused().is_some()
    })
    .await;
    let (status, body) = live.readyz().await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["reasons"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("dispatch_paused")),
        "{body}"
    );
    let reasons: Vec<&str> = body["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["message"].as_str().unwrap())
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("dispatch paused") && r.contains("disk is full")),
        "{body}"
    );
    // While the commit is tried again (five more failed tries: 0.1 + 0.2 + 0.4 + 0.8 + 1.6 s
    // of backoff), what the worker had taken before the pause may still go out — at most
    // max_connections × 1000 streams — and nothing more.
    let from = counter("pushgate_outcome_commit_failures_total");
    until("five more tries to commit", MINUTE, || async {
        counter("pushgate_outcome_commit_failures_total") >= from + 5.0
    })
    .await;
    let sent = sim.stats().snapshot().requests;
    assert!(
        sent <= 4_000,
        "{sent} sent: more than was in flight when dispatch paused"
    );
    live.spool().inject_write_failures(false);
    until("every notification delivered", MINUTE, || async {
        live.count(State::Delivered).await == 30_000
    })
    .await;
    let s = sim.stats().snapshot();
    assert_eq!((s.unique_ids, s.duplicate_ids), (30_000, 0), "{s:?}");
    assert_eq!(live.dispatch.paused(), None);
    assert_eq!(live.readyz().await.0, 200);
    live.stop().await;
}

/// Dead tokens are registered in the same commit as their notifications' outcomes: 5,000
/// Unregistered answers take a handful of transactions, not one each, and the registry holds
/// every token.
async fn dead_tokens_are_committed_with_their_outcomes(backend: Backend) {
    let tokens: Vec<String> = (0..5_000).map(|i| token(i).as_str().to_owned()).collect();
    // Answers wait 50 ms, so they come back many at a time, as they do from Apple.
    let sim = mock()
        .unregistered(tokens.iter().map(|t| (t.as_str(), 1_700_000_000_000)))
        .latency(Duration::from_millis(50))
        .record_limit(0)
        .spawn()
        .await
        .unwrap();
    let live = Live::start_on(&backend, &sim, "", DispatchOptions::default()).await;
    // A token connection carries one stream until its first 200: one good token first.
    live.submit(vec![shop(10_000, 1)]).await;
    until("the first delivery", MINUTE, || async {
        live.count(State::Delivered).await == 1
    })
    .await;
    let before = live.spool().commits();
    live.submit(vec![shop(0, 5_000)]).await;
    until("every notification failed", MINUTE, || async {
        live.count(State::Failed).await == 5_000
    })
    .await;
    // The submit is one; each group of outcomes one more.
    let commits = live.spool().commits() - before;
    assert!(commits < 500, "{commits} commits for 5,000 outcomes");
    let dead = live.spool().all_dead_tokens().await.unwrap();
    assert_eq!(dead.len(), 5_000);
    live.stop().await;
}

/// Apple calls every token bad (the app's `environment` is wrong): nothing fails, no token is
/// registered dead, the app halts with `LikelyWrongEnvironment`; once the configuration points
/// at the right environment, every notification is delivered.
async fn a_wrong_environment_halts_the_app_and_kills_no_token(backend: Backend) {
    // Not a multiple of the guard's window of 100: the last answers close no window.
    let tokens: Vec<String> = (0..250).map(|i| token(i).as_str().to_owned()).collect();
    let wrong = mock()
        .bad_tokens(tokens.iter().map(String::as_str))
        .spawn()
        .await
        .unwrap();
    let live = Live::start_on(&backend, &wrong, "", DispatchOptions::default()).await;
    let r = shop(0, 250);
    let ids: Vec<_> = r.notifications.iter().map(|(id, _)| *id).collect();
    live.submit(vec![r]).await;
    until("the app to halt", MINUTE, || async {
        live.dispatch.status("shop").unwrap().halted.is_some()
    })
    .await;
    assert_eq!(
        live.dispatch.status("shop").unwrap().halted.as_deref(),
        Some("LikelyWrongEnvironment")
    );
    until(
        "the held notifications back in the queue",
        MINUTE,
        || async { live.dispatch.in_flight_count("shop") == 0 },
    )
    .await;
    assert_eq!(live.count(State::Failed).await, 0);
    assert_eq!(live.count(State::Queued).await, 250);
    assert!(live.spool().all_dead_tokens().await.unwrap().is_empty());
    let (status, body) = live.readyz().await;
    assert_eq!(status, 503, "{body}");
    // The right environment: a simulator that knows these tokens.
    let right = mock().spawn().await.unwrap();
    let config = live.config(&right, "");
    live.apply(config);
    until("every notification delivered", MINUTE, || async {
        live.count(State::Delivered).await == 250
    })
    .await;
    assert_eq!(live.count(State::Failed).await, 0);
    // The answers held and put back used no attempt: one each, the one delivered.
    let records = live.spool().get_many(ids).await.unwrap();
    assert!(records.iter().all(|r| r.attempts == 1), "{:?}", records[0]);
    live.stop().await;
}

/// A few bad tokens among good ones are not a wrong environment: they fail and are registered.
async fn a_few_bad_tokens_among_good_ones_are_registered_dead(backend: Backend) {
    // The first three are bad: held until the first 200 proves the credential, then failed.
    let bad: Vec<String> = (0..300)
        .filter(|i| *i < 3 || i % 50 == 7)
        .map(|i| token(i).as_str().to_owned())
        .collect();
    let sim = mock()
        .bad_tokens(bad.iter().map(String::as_str))
        .spawn()
        .await
        .unwrap();
    let live = Live::start_on(&backend, &sim, "", DispatchOptions::default()).await;
    live.submit(vec![shop(0, 300)]).await;
    until("every notification final", MINUTE, || async {
        live.count(State::Delivered).await + live.count(State::Failed).await == 300
    })
    .await;
    assert_eq!(live.count(State::Failed).await, bad.len() as u64);
    assert_eq!(
        live.spool().all_dead_tokens().await.unwrap().len(),
        bad.len()
    );
    assert_eq!(live.dispatch.status("shop").unwrap().halted, None);
    live.stop().await;
}

/// `/readyz` writes to find out whether the spool takes writes: on a full disk an empty
/// transaction still commits, so a flush alone answered "ready" while every submit failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_answers_503_when_the_spool_cannot_write() {
    use crate::api_harness::TestApi;
    let api = TestApi::start().await;
    assert_eq!(api.call("GET", "/readyz", None, None).await.0, 200);
    api.spool.inject_write_failures(true);
    let (status, _, body) = api.call("GET", "/readyz", None, None).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["reasons"], serde_json::json!(["spool_unavailable"]));
    assert!(
        !body.to_string().contains("disk"),
        "no error text without a key: {body}"
    );
    let (_, _, body) = api
        .call("GET", "/readyz", Some(crate::api_harness::ADMIN_KEY), None)
        .await;
    assert!(
        body["details"][0]["message"]
            .as_str()
            .unwrap()
            .contains("disk is full"),
        "{body}"
    );
    api.spool.inject_write_failures(false);
    assert_eq!(api.call("GET", "/readyz", None, None).await.0, 200);
}

/// During an outage (nothing listens at the endpoint) the retries of unreachable sends wait
/// for the pool's reconnect back-off (1 s doubling), instead of coming due every second and
/// rewriting every queued row as often; and they use no attempt.
async fn an_outage_spaces_the_retries_it_records(backend: Backend) {
    let sim = mock().spawn().await.unwrap();
    let live = Live::start_on(&backend, &sim, "", DispatchOptions::default()).await;
    sim.shutdown().await;
    live.submit(vec![shop(0, 20)]).await;
    until("a retry due more than 3 s ahead", MINUTE, || async {
        let now = std::time::SystemTime::now();
        let rows = live.spool().pending_page(None, 100).await.unwrap();
        rows.iter()
            .any(|r| r.due_at.is_some_and(|d| d > now + Duration::from_secs(3)))
    })
    .await;
    let rows = live.spool().pending_page(None, 100).await.unwrap();
    assert_eq!(rows.len(), 20);
    assert!(rows.iter().all(|r| r.attempts == 0), "{:?}", rows[0]);
    live.stop().await;
}

/// An app removed from the configuration and added back while its sends are in flight keeps
/// its worker and queue: what was in flight is not sent a second time by a new worker.
async fn an_app_removed_and_added_back_sends_nothing_twice(backend: Backend) {
    let sim = mock()
        .latency(Duration::from_millis(1000))
        .spawn()
        .await
        .unwrap();
    let live = Live::start_on(&backend, &sim, "", DispatchOptions::default()).await;
    // One delivery first: a token connection carries one stream until its first 200.
    live.submit(vec![shop(1_000, 1)]).await;
    until("the first delivery", MINUTE, || async {
        live.count(State::Delivered).await == 1
    })
    .await;
    live.submit(vec![shop(0, 50)]).await;
    until("fifty in flight", MINUTE, || async {
        live.dispatch.status("shop").unwrap().streams_in_flight == 50
    })
    .await;
    let without = live.config_for(&sim, "other", "");
    live.apply(without);
    let with = live.config(&sim, "");
    live.apply(with);
    until("every notification delivered", MINUTE, || async {
        live.count(State::Delivered).await == 51
    })
    .await;
    let s = sim.stats().snapshot();
    assert_eq!((s.unique_ids, s.duplicate_ids), (51, 0), "{s:?}");
    live.stop().await;
}

/// Answers APNs asks to be retried (500, 503, 429 at random) are retried until delivered, with
/// the backoff's base a dispatch option: 10 ms here, so the test waits on retries, not on real
/// seconds. Every notification ends delivered, some after more than one attempt, and none
/// reached the simulator's accepted count twice; each attempt is in its history.
async fn retryable_answers_are_retried_until_delivered(backend: Backend) {
    let sim = mock().fail_rate(0.3).spawn().await.unwrap();
    let options = DispatchOptions {
        retry_base: Duration::from_millis(10),
        ..DispatchOptions::default()
    };
    let live = Live::start_on(&backend, &sim, "max_attempts = 30", options).await;
    let request = shop(0, 200);
    let ids: Vec<_> = request.notifications.iter().map(|(id, _)| *id).collect();
    live.submit(vec![request]).await;
    until("every notification delivered", MINUTE, || async {
        live.count(State::Delivered).await == 200
    })
    .await;
    let records = live.spool().get_many(ids).await.unwrap();
    assert_eq!(records.len(), 200);
    assert!(
        records.iter().any(|r| r.attempts > 1),
        "with three answers in ten retryable, some took more than one attempt"
    );
    // Each attempt a retry followed is kept, with Apple's answer and the connection it went
    // out on; the last is the record's own.
    for r in &records {
        let earlier = live.spool().attempts(r.id).await.unwrap();
        assert_eq!(earlier.len() as u32, r.attempts - 1, "{r:?}: {earlier:?}");
        assert!(
            earlier
                .iter()
                .all(|a| matches!(a.status, Some(429 | 500 | 503))
                    && a.reason.is_some()
                    && a.conn.is_some()),
            "{earlier:?}"
        );
        assert!(r.conn.is_some() && r.status == Some(200), "{r:?}");
    }
    assert_eq!(sim.stats().snapshot().accepted, 200, "each delivered once");
    live.stop().await;
}

on_each_backend!(
    dead_tokens_are_committed_with_their_outcomes,
    a_wrong_environment_halts_the_app_and_kills_no_token,
    a_few_bad_tokens_among_good_ones_are_registered_dead,
    an_outage_spaces_the_retries_it_records,
    an_app_removed_and_added_back_sends_nothing_twice,
    retryable_answers_are_retried_until_delivered,
);
