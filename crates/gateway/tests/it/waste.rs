//! Requests that need not reach Apple: sends already taken when an app halts, and provider
//! tokens signed anew by a reload.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use apns::clock::ManualClock;
use gateway::dispatch::DispatchOptions;
use gateway::spool::State;

use crate::live::{Backend, Live, mock, shop, until};

const MINUTE: Duration = Duration::from_secs(60);

/// A reload keeps the signer of a key that did not change: the connections it opens show
/// Apple the token already in use, not a new one (which Apple refuses sooner than 20 minutes
/// after the last: TooManyProviderTokenUpdates). The token is still renewed at 50 minutes.
async fn a_reload_keeps_the_provider_token_of_an_unchanged_key(backend: Backend) {
    let sim = mock().spawn().await.unwrap();
    let clock = Arc::new(ManualClock::new(SystemTime::now()));
    let options = DispatchOptions {
        clock: clock.clone(),
        ..DispatchOptions::default()
    };
    let live = Live::start_on(&backend, &sim, "", options).await;
    let mut sent = 0;
    let mut send_one = async || {
        live.submit(vec![shop(sent, 1)]).await;
        sent += 1;
        until("the notification delivered", MINUTE, || async {
            live.count(State::Delivered).await == sent
        })
        .await;
        sim.stats().snapshot()
    };
    let first = send_one().await;
    assert_eq!(first.provider_tokens, 1, "{first:?}");
    for _ in 0..3 {
        live.reload();
        let s = send_one().await;
        assert!(
            s.connections_total > first.connections_total,
            "a reload opens new connections: {s:?}"
        );
        assert_eq!(s.provider_tokens, 1, "a reload signed a new token: {s:?}");
    }
    clock.advance(51 * MINUTE);
    let renewed = send_one().await;
    assert_eq!(
        renewed.provider_tokens, 2,
        "renewed after 50 minutes: {renewed:?}"
    );
    live.reload();
    let s = send_one().await;
    assert_eq!(s.provider_tokens, 2, "{s:?}");
    assert_eq!(s.by_status.get("200"), Some(&sent), "{s:?}");
    live.stop().await;
}

/// After the first halting answer, what the worker had taken but not yet written goes back to
/// the queue: an app whose provider token Apple refuses costs about one request per connection,
/// not one per stream it had in flight. Nothing is lost or used up meanwhile.
async fn a_halt_withdraws_the_sends_not_yet_written(backend: Backend) {
    // A simulator that trusts another key: every token the gateway signs is invalid.
    let sim = crate::live::refusing_mock().await;
    let live = Live::start_on(
        &backend,
        &sim,
        "max_connections = 4",
        DispatchOptions::default(),
    )
    .await;
    live.submit(vec![shop(0, 5_000)]).await;
    until("the app to halt", MINUTE, || async {
        !live.dispatch.halted().is_empty()
    })
    .await;
    until("no send left in flight", MINUTE, || async {
        live.dispatch.in_flight_count("shop") == 0
    })
    .await;
    let s = sim.stats().snapshot();
    let refused = s
        .by_reason
        .get("InvalidProviderToken")
        .copied()
        .unwrap_or(0);
    assert!(refused >= 1, "{s:?}");
    // A connection carries one stream until its first 200, so one request per connection
    // may be on its way when the first 403 arrives; nothing is written after it.
    assert!(
        s.requests <= 4,
        "{} requests reached APNs: {s:?}",
        s.requests
    );
    assert_eq!(live.dispatch.halted()[0].1, "InvalidProviderToken");
    assert_eq!(
        live.count(State::Queued).await,
        5_000,
        "all kept, none used up"
    );
    live.stop().await;
}

on_each_backend!(
    a_reload_keeps_the_provider_token_of_an_unchanged_key,
    a_halt_withdraws_the_sends_not_yet_written,
);
