//! Requests that need not reach Apple: sends already taken when an app halts, and provider
//! tokens signed anew by a reload.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use apns::clock::ManualClock;
use gateway::dispatch::DispatchOptions;
use gateway::spool::State;

use crate::live::{Live, mock, shop, until};

const MINUTE: Duration = Duration::from_secs(60);

/// A reload keeps the signer of a key that did not change: the connections it opens show
/// Apple the token already in use, not a new one (which Apple refuses sooner than 20 minutes
/// after the last: TooManyProviderTokenUpdates). The token is still renewed at 50 minutes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_the_provider_token_of_an_unchanged_key() {
    let sim = mock().spawn().await.unwrap();
    let clock = Arc::new(ManualClock::new(SystemTime::now()));
    let options = DispatchOptions {
        clock: clock.clone(),
        ..DispatchOptions::default()
    };
    let live = Live::start(&sim, "", options).await;
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
