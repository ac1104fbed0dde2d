//! Connections that go silent: a network between the gateway and APNs black-holes them
//! without a reset, so TCP sees nothing wrong while streams wait for answers that never come.

use std::time::Duration;

use apns::{Endpoint, Outcome, Pool};

use crate::blackhole::Proxy;
use crate::harness::{burst, config, mock, note, token_auth, wait_for};

/// A pool that reaches `sim` through `proxy`, with short timeouts.
fn pool_via(proxy: &Proxy, sim: &apns_mock::RunningMock) -> Pool {
    let mut c = config(sim, token_auth());
    c.endpoint = Endpoint::parse(&proxy.endpoint(sim)).unwrap();
    c.max_connections = 2;
    c.response_timeout = Duration::from_millis(500);
    c.ping_timeout = Duration::from_millis(500);
    Pool::new(c)
}

/// Streams on a connection gone silent time out; the PING that follows goes unanswered, so
/// the connection is closed and every stream on it is sent again on another — each delivered,
/// none reported lost or timed out, no attempt used, and the silent connection is not taken
/// for a refusal of our credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_on_a_silent_connection_are_sent_again_elsewhere() {
    let sim = mock().spawn().await.unwrap();
    let proxy = Proxy::start(sim.addr()).await;
    let pool = pool_via(&proxy, &sim);
    // One connection, proven (it carries many streams from now on).
    assert!(pool.send(&note(1_000)).await.is_delivered());
    assert_eq!(proxy.connections(), 1);
    proxy.silence(0);
    let sent = burst(&pool, 200, 200).await;
    for (n, o) in &sent {
        assert!(o.is_delivered(), "{:?}: {o:?}", n.id);
    }
    let s = sim.stats().snapshot();
    assert_eq!((s.unique_ids, s.duplicate_ids), (201, 0), "{s:?}");
    assert!(proxy.connections() >= 2);
    assert_eq!(pool.stats().rejected_in_a_row, 0, "{:?}", pool.stats());
}

/// A slow answer is not a silent connection: the PING after the response timeout is answered,
/// so the stream ends as a timeout and the connection stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_answer_on_a_live_connection_is_a_timeout() {
    let sim = mock()
        .latency(Duration::from_millis(1_500))
        .spawn()
        .await
        .unwrap();
    let proxy = Proxy::start(sim.addr()).await;
    let pool = pool_via(&proxy, &sim);
    assert_eq!(pool.send(&note(1)).await, Outcome::Timeout);
    assert_eq!(proxy.connections(), 1);
    assert_eq!(pool.stats().connections, 1, "the connection stays");
}

/// A notification whose every connection goes silent still ends: after three silent
/// connections it is reported lost (which uses an attempt), not sent again forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_that_silences_every_connection_still_ends() {
    let sim = mock()
        .latency(Duration::from_secs(3))
        .spawn()
        .await
        .unwrap();
    let proxy = Proxy::start(sim.addr()).await;
    // Each connection carries its handshake and the request (well within the second, even on a
    // busy machine) and goes silent before the answer comes back.
    proxy.silence_every_connection_after(Duration::from_secs(1));
    let mut c = config(&sim, token_auth());
    c.endpoint = Endpoint::parse(&proxy.endpoint(&sim)).unwrap();
    // The stream times out after the connection went silent, not before.
    c.response_timeout = Duration::from_millis(1_500);
    c.ping_timeout = Duration::from_millis(500);
    let pool = Pool::new(c);
    let outcome = pool.send(&note(1)).await;
    assert_eq!(outcome, Outcome::ConnectionLost { reason: None });
    assert_eq!(proxy.connections(), 3, "one per send, three in all");
    wait_for(
        "the silent connections closed",
        Duration::from_secs(5),
        || pool.stats().connections == 0,
    )
    .await;
    assert_eq!(pool.stats().rejected_in_a_row, 0, "{:?}", pool.stats());
}
