use std::time::Duration;

use apns::{Consequence, Outcome, Pool};

use crate::harness::*;
use crate::scripted::{Script, Scripted};

/// A certificate-auth pool (no one-stream rule) for a scripted server.
fn scripted_pool(server: &Scripted) -> Pool {
    use rustls_pki_types::pem::PemObject;
    let id = apns::auth::ClientIdentity::from_pem(
        &std::fs::read(format!("{FIXTURES}/client.pem")).unwrap(),
        &std::fs::read(format!("{FIXTURES}/client-key.pem")).unwrap(),
        "client.pem",
    )
    .unwrap();
    let mut c = apns::PoolConfig::new(
        apns::Endpoint::parse(&server.endpoint()).unwrap(),
        apns::auth::Auth::Certificate(std::sync::Arc::new(id)),
    );
    c.extra_roots =
        vec![rustls_pki_types::CertificateDer::from_pem_slice(server.ca_pem.as_bytes()).unwrap()];
    c.min_backoff = Duration::from_millis(50);
    Pool::new(c)
}

/// A GOAWAY below streams the server already received, with any error code: the streams
/// above its last-stream-id were never processed (RFC 9113 §6.8) and are re-sent, once each,
/// without an attempt; those it answered are not sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_above_a_goaways_last_stream_id_are_re_sent_whatever_its_code() {
    for (code, name) in [
        (0x0, "NO_ERROR"),
        (0xb, "ENHANCE_YOUR_CALM"),
        (0x2, "INTERNAL_ERROR"),
    ] {
        let server = Scripted::start(Script {
            requests: 10,
            answered: 4,
            last_processed: 4,
            code,
        })
        .await;
        let outcomes = burst(&scripted_pool(&server), 10, 10).await;
        let failed: Vec<_> = outcomes.iter().filter(|(_, o)| !o.is_delivered()).collect();
        assert!(
            failed.is_empty(),
            "{name}: {failed:?} {:?}",
            server.requests()
        );
        assert_eq!(
            server.requests(),
            [10, 6],
            "{name}: the six above the last-stream-id, re-sent on a second connection"
        );
    }
}

/// A stream at or below the last-stream-id that is left unanswered when the connection closes
/// may have been delivered: it is reported lost (the gateway retries it as an attempt), not
/// re-sent as if it had never been processed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_stream_at_or_below_the_last_stream_id_is_reported_lost() {
    let server = Scripted::start(Script {
        requests: 10,
        answered: 3,
        last_processed: 4,
        code: 0xb,
    })
    .await;
    let outcomes = burst(&scripted_pool(&server), 10, 10).await;
    let lost: Vec<_> = outcomes
        .iter()
        .filter(|(_, o)| !o.is_delivered())
        .map(|(_, o)| o)
        .collect();
    assert_eq!(lost, [&Outcome::ConnectionLost { reason: None }]);
    assert_eq!(server.requests(), [10, 6]);
}

/// GOAWAY every 100 streams while 2,000 notifications are in flight: each one is delivered
/// exactly once; streams above the last-stream-id are re-sent, never lost or duplicated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goaway_in_the_middle_of_a_burst_loses_nothing() {
    let sim = mock().goaway_every(100).spawn().await.unwrap();
    let pool = pool(&sim);
    let outcomes = burst(&pool, 2000, 200).await;
    let failed: Vec<_> = outcomes.iter().filter(|(_, o)| !o.is_delivered()).collect();
    assert!(
        failed.is_empty(),
        "{} not delivered: {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );
    let s = sim.stats().snapshot();
    // A connection also takes the streams that arrive while its GOAWAY is in flight, so there
    // are fewer GOAWAYs than 2000 / 100; several must have cut through the burst.
    assert!(s.goaways >= 5, "{s:?}");
    assert_eq!(s.accepted, 2000);
    assert_eq!(s.unique_ids, 2000);
    assert_eq!(s.duplicate_ids, 0);
    let ids = sim.stats().id_counts();
    for (n, _) in &outcomes {
        assert_eq!(ids.get(n.id.as_uuid()), Some(&1), "{}", n.id);
    }
}

/// The simulator's GOAWAY with an error code (an abrupt close, as a server in trouble does):
/// every notification ends delivered or lost (never unreachable, never a halt), none is
/// accepted twice, none is reported delivered without the simulator's 200. Which streams end
/// lost is up to the race `abrupt_shutdown` makes; the scripted tests above pin the exact
/// split at the last-stream-id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abrupt_goaway_with_an_error_code_duplicates_nothing() {
    let sim = mock()
        .goaway_every(100)
        .goaway_code(apns_mock::H2Reason::ENHANCE_YOUR_CALM)
        .spawn()
        .await
        .unwrap();
    let outcomes = burst(&pool(&sim), 1000, 100).await;
    let ids = sim.stats().id_counts();
    for (n, o) in &outcomes {
        match o {
            o if o.is_delivered() => assert_eq!(ids.get(n.id.as_uuid()), Some(&1), "{}", n.id),
            Outcome::ConnectionLost { .. } => {}
            other => panic!("{} ended {other:?}", n.id),
        }
    }
    let s = sim.stats().snapshot();
    assert!(s.goaways >= 1, "{s:?}");
    assert_eq!(s.duplicate_ids, 0, "{s:?}");
}

/// The pool opens at most `max_connections` and never exceeds the advertised stream limit;
/// with token auth each new connection carries one stream until its first 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_keeps_to_max_connections_and_the_stream_limit() {
    let sim = mock()
        .max_streams(10)
        .latency(Duration::from_millis(5))
        .spawn()
        .await
        .unwrap();
    let mut c = config(&sim, token_auth());
    c.max_connections = 3;
    let pool = Pool::new(c);
    let outcomes = burst(&pool, 1000, 100).await;
    assert!(outcomes.iter().all(|(_, o)| o.is_delivered()));
    let s = sim.stats().snapshot();
    assert_eq!(s.connections_total, 3, "{s:?}");
    assert!(s.max_streams_in_flight <= 10, "{s:?}");
    assert_eq!(
        s.max_streams_in_flight, 10,
        "the pool fills the limit: {s:?}"
    );
    assert_eq!(
        s.refused_streams, 0,
        "never a second stream before the first 200: {s:?}"
    );
    let p = pool.stats();
    assert_eq!(
        (p.connections, p.connections_opened, p.streams_in_flight),
        (3, 3, 0)
    );
    assert_eq!(p.peak_streams_per_connection, 10);
}

/// A connection is opened only when the open ones are full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_sends_share_one_connection() {
    let sim = mock().spawn().await.unwrap();
    let pool = pool(&sim);
    for i in 0..20 {
        assert!(pool.send(&note(i)).await.is_delivered());
    }
    assert_eq!(sim.stats().snapshot().connections_total, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_request_times_out_and_the_stream_is_cancelled() {
    let sim = mock()
        .latency(Duration::from_secs(5))
        .spawn()
        .await
        .unwrap();
    let mut c = config(&sim, token_auth());
    c.response_timeout = Duration::from_millis(200);
    let pool = Pool::new(c);
    let started = tokio::time::Instant::now();
    let o = pool.send(&note(1)).await;
    assert_eq!(o, Outcome::Timeout);
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(matches!(
        o.consequence(),
        Consequence::Retry {
            counts_as_attempt: true,
            ..
        }
    ));
    wait_for(
        "the stream slot to be released",
        Duration::from_secs(2),
        || pool.stats().streams_in_flight == 0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_endpoint_backs_off_instead_of_reconnecting_per_send() {
    // Bind and drop a listener to find a port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let sim = mock().spawn().await.unwrap();
    let mut c = config(&sim, token_auth());
    c.endpoint = apns::Endpoint::parse(&format!("https://127.0.0.1:{port}")).unwrap();
    c.min_backoff = Duration::from_secs(30);
    let pool = Pool::new(c);
    assert_eq!(pool.send(&note(1)).await, Outcome::Unreachable);
    for i in 2..50 {
        assert_eq!(pool.send(&note(i)).await, Outcome::Unreachable);
    }
    assert_eq!(pool.stats().connections_opened, 0);
    assert_eq!(
        Outcome::Unreachable.consequence(),
        Consequence::Retry {
            after: None,
            counts_as_attempt: false
        }
    );
}

/// Three connections in a row closed before any answer: APNs refuses our credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_closed_before_any_answer_halt_the_app_after_three() {
    let sim = mock().reject_connections(true).spawn().await.unwrap();
    let mut c = config(&sim, token_auth());
    c.min_backoff = Duration::from_millis(10);
    c.max_backoff = Duration::from_millis(40);
    let pool = Pool::new(c);
    // Keep sending (as a dispatcher retrying would) until the pool gives its verdict.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut i = 0;
    let o = loop {
        i += 1;
        let o = pool.send(&note(i)).await;
        if o == Outcome::ConnectionRejected {
            break o;
        }
        assert!(
            matches!(o.consequence(), Consequence::Retry { .. }),
            "{o:?}"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "no ConnectionRejected within 10 s"
        );
        // Let the reconnect back-off (10-40 ms) pass before the next try.
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(o.consequence(), Consequence::AppHalted);
    assert!(pool.stats().rejected_in_a_row >= 3);
    assert!(sim.stats().snapshot().connections_total >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_closed() {
    let sim = mock().spawn().await.unwrap();
    let mut c = config(&sim, token_auth());
    c.idle_timeout = Duration::from_millis(300);
    c.ping_interval = Duration::from_millis(100);
    let pool = Pool::new(c);
    assert!(pool.send(&note(1)).await.is_delivered());
    assert_eq!(pool.stats().connections, 1);
    wait_for(
        "the idle connection to close",
        Duration::from_secs(5),
        || sim.stats().snapshot().connections_open == 0,
    )
    .await;
    assert_eq!(pool.stats().connections, 0);
    // The next send opens a new one.
    assert!(pool.send(&note(2)).await.is_delivered());
    assert_eq!(sim.stats().snapshot().connections_total, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_pool_refuses_new_sends() {
    let sim = mock().spawn().await.unwrap();
    let pool = pool(&sim);
    assert!(pool.send(&note(1)).await.is_delivered());
    pool.close();
    assert_eq!(pool.send(&note(2)).await, Outcome::Unreachable);
    wait_for("the connection to close", Duration::from_secs(5), || {
        sim.stats().snapshot().connections_open == 0
    })
    .await;
}

/// The simulator's latency is applied to every answer, also when many streams wait at once on
/// one connection (answers queued per connection, not a timer each).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_waits_the_simulated_latency() {
    let latency = Duration::from_millis(100);
    let sim = mock().latency(latency).spawn().await.unwrap();
    let pool = pool(&sim);
    // A token connection carries one stream until its first 200; then 50 at once.
    assert!(pool.send(&note(0)).await.is_delivered());
    let mut sends = tokio::task::JoinSet::new();
    for i in 1..=50 {
        let pool = pool.clone();
        sends.spawn(async move {
            let started = tokio::time::Instant::now();
            let o = pool.send(&note(i)).await;
            (o, started.elapsed())
        });
    }
    let mut n = 0;
    while let Some(r) = sends.join_next().await {
        let (o, took) = r.unwrap();
        assert!(o.is_delivered(), "{o:?}");
        assert!(took >= latency, "answered after {took:?}");
        n += 1;
    }
    assert_eq!(n, 50);
    let s = sim.stats().snapshot();
    assert_eq!((s.accepted, s.connections_total), (51, 1), "{s:?}");
}

/// A pool of one connection whose one stream (token auth, before its first 200) carries
/// `first`, answered after 1.5 s: the next send waits for a slot.
async fn one_slot_taken() -> (
    apns_mock::RunningMock,
    Pool,
    apns::Notification,
    tokio::task::JoinHandle<Outcome>,
) {
    let sim = mock()
        .latency(Duration::from_millis(1500))
        .spawn()
        .await
        .unwrap();
    let mut c = config(&sim, token_auth());
    c.max_connections = 1;
    let pool = Pool::new(c);
    let first = note(1);
    let sending = {
        let pool = pool.clone();
        let first = first.clone();
        tokio::spawn(async move { pool.send(&first).await })
    };
    wait_for("the first stream open", Duration::from_secs(5), || {
        pool.stats().streams_in_flight == 1
    })
    .await;
    (sim, pool, first, sending)
}

/// A send still waiting for a stream when its deadline (the notification's expiry) passes is
/// never sent: `NotSentInTime`, and the server never sees it; one already sent is waited for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_that_waits_past_its_deadline_is_never_sent() {
    let (sim, pool, first, sending) = one_slot_taken().await;
    let late = note(2);
    let deadline = tokio::time::Instant::now() + Duration::from_millis(200);
    assert_eq!(
        pool.send_by(&late, Some(deadline)).await,
        Outcome::NotSentInTime
    );
    assert!(sending.await.unwrap().is_delivered());
    let ids = sim.stats().id_counts();
    assert_eq!(ids.get(first.id.as_uuid()), Some(&1));
    assert_eq!(ids.get(late.id.as_uuid()), None, "sent after its deadline");
    assert_eq!(sim.stats().snapshot().requests, 1);
}

/// A send still waiting for a stream when its caller withdraws it is never sent:
/// `Withdrawn`, and the server never sees it; one already sent is waited for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawn_send_is_never_sent() {
    let (sim, pool, first, sending) = one_slot_taken().await;
    let withdrawn = note(2);
    let (withdraw, withdrawal) = tokio::sync::oneshot::channel::<()>();
    let (waits, waiting_for_slot) = tokio::sync::oneshot::channel::<()>();
    let waiting = {
        let pool = pool.clone();
        let n = withdrawn.clone();
        tokio::spawn(async move {
            // First polled beside the wait for a stream slot: the send is waiting then.
            let withdrawal = async {
                let _ = waits.send(());
                let _ = withdrawal.await;
            };
            pool.send_until(&n, None, withdrawal).await
        })
    };
    waiting_for_slot.await.unwrap();
    withdraw.send(()).unwrap();
    assert_eq!(waiting.await.unwrap(), Outcome::Withdrawn);
    assert!(sending.await.unwrap().is_delivered());
    let ids = sim.stats().id_counts();
    assert_eq!(ids.get(first.id.as_uuid()), Some(&1));
    assert_eq!(
        ids.get(withdrawn.id.as_uuid()),
        None,
        "sent after it was withdrawn"
    );
    assert_eq!(sim.stats().snapshot().requests, 1);
}
