use std::time::{Duration, UNIX_EPOCH};

use apns::{Consequence, Outcome, Reason};

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_arrives_with_every_header_as_sent() {
    let sim = mock().spawn().await.unwrap();
    let pool = pool(&sim);
    let mut n = note(1);
    n.priority = Some(apns::Priority::Conserve);
    n.expiration = Some(apns::Expiration::At(1_900_000_000));
    n.collapse_id = Some(apns::CollapseId::parse("score").unwrap());
    let outcome = pool.send(&n).await;
    let Outcome::Response(r) = &outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(r.status, 200);
    assert_eq!(r.apns_id, Some(n.id), "APNs echoes our apns-id");
    assert_eq!(outcome.consequence(), Consequence::Delivered);
    let seen = sim.stats().notifications();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert_eq!(s.token, n.token.as_str());
    assert_eq!(s.apns_id, n.id.to_string());
    assert_eq!(s.headers["apns-topic"], "com.example.demo");
    assert_eq!(s.headers["apns-push-type"], "alert");
    assert_eq!(s.headers["apns-priority"], "5");
    assert_eq!(s.headers["apns-expiration"], "1900000000");
    assert_eq!(s.headers["apns-collapse-id"], "score");
    assert_eq!(s.payload["aps"]["alert"]["body"], "number 1");
}

/// Every consequence class (docs/dispatch.md), produced by the simulator's token lists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_consequence_class_end_to_end() {
    let since_ms = 1_700_000_000_123;
    let sim = mock()
        .unregistered([(token(2).as_str(), since_ms)])
        .bad_tokens([token(3).as_str()])
        .reason(token(4).as_str(), 503, Reason::ServiceUnavailable)
        .reason(token(5).as_str(), 400, Reason::BadCollapseId)
        .reason(token(6).as_str(), 403, Reason::TopicDisallowed)
        .reason(token(7).as_str(), 429, Reason::TooManyRequests)
        .spawn()
        .await
        .unwrap();
    let pool = pool(&sim);
    let c = |o: Outcome| o.consequence();
    assert_eq!(c(pool.send(&note(1)).await), Consequence::Delivered);
    let unregistered = pool.send(&note(2)).await;
    assert_eq!(unregistered.reason(), Some(&Reason::Unregistered));
    assert_eq!(
        c(unregistered),
        Consequence::DeadToken {
            since: Some(UNIX_EPOCH + Duration::from_millis(since_ms))
        }
    );
    assert_eq!(
        c(pool.send(&note(3)).await),
        Consequence::DeadToken { since: None }
    );
    let retry = Consequence::Retry {
        after: None,
        counts_as_attempt: true,
    };
    assert_eq!(c(pool.send(&note(4)).await), retry);
    assert_eq!(c(pool.send(&note(7)).await), retry);
    assert_eq!(c(pool.send(&note(5)).await), Consequence::Rejected);
    assert_eq!(c(pool.send(&note(6)).await), Consequence::AppHalted);
    let s = sim.stats().snapshot();
    assert_eq!(s.requests, 7);
    assert_eq!(s.accepted, 1);
    assert_eq!(s.by_reason["Unregistered"], 1);
}

/// With a fail rate, every notification ends delivered or with one of the injected answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_failures_are_retryable_answers() {
    let sim = mock().fail_rate(0.3).spawn().await.unwrap();
    let pool = pool(&sim);
    let outcomes = burst(&pool, 300, 50).await;
    let mut failed = 0;
    for (_, o) in &outcomes {
        match o.consequence() {
            Consequence::Delivered => {}
            Consequence::Retry { .. } => {
                failed += 1;
                assert!(
                    matches!(
                        o.reason(),
                        Some(
                            Reason::InternalServerError
                                | Reason::ServiceUnavailable
                                | Reason::TooManyRequests
                        )
                    ),
                    "{o:?}"
                );
            }
            other => panic!("unexpected {other:?} for {o:?}"),
        }
    }
    let s = sim.stats().snapshot();
    assert!(
        failed > 30 && failed < 180,
        "{failed} of 300 failed at rate 0.3"
    );
    assert_eq!(s.accepted, 300 - failed);
}
