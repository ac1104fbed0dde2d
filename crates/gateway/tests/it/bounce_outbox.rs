//! The bounce outbox on each spool: failures of bounced requests queue with their outcomes,
//! wait out the window, are read once per origin, leave when settled (and only those read),
//! and retention takes the links and, once nothing refers to it, the origin.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use apns::{ApnsId, Reason};
use gateway::reason::GatewayReason;
use gateway::spool::{
    BounceOrigin, BounceSettle, Completion, NewRequest, Spool, SpoolOptions, State,
};

use crate::harness::*;

fn done(id: ApnsId, state: State, status: Option<u16>, reason: Option<&str>) -> Completion {
    let reason = reason.map(|r| match r {
        "Expired" => GatewayReason::Expired.into(),
        r => Reason::parse(r).into(),
    });
    Completion {
        id,
        state,
        attempts: 1,
        status,
        reason,
        due_at: None,
        conn: Some(1),
    }
}

fn first(r: &NewRequest, i: usize) -> ApnsId {
    r.notifications[i].0
}

each_backend!(
    failures_wait_in_the_outbox_until_their_dsn_is_settled,
    SpoolOptions::default(),
    |spool, backing| {
        let origin = Arc::new(BounceOrigin {
            return_path: "bounces@shop.example".into(),
            headers: b"Subject: shipped\r\n".to_vec(),
            way: "smtp".into(),
            received_from: "[127.0.0.1]".into(),
            // (Kept to the millisecond, as the spool keeps times.)
            received_at: SystemTime::UNIX_EPOCH
                + Duration::from_millis(
                    SystemTime::now()
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .unwrap()
                        .as_millis() as u64,
                ),
        });
        let mut a = request("shop", 1, 3);
        a.bounce = Some(Arc::clone(&origin));
        let mut b = request("shop", 10, 1);
        b.bounce = Some(Arc::clone(&origin));
        let plain = request("shop", 20, 1);
        spool
            .enqueue(vec![a.clone(), b.clone(), plain.clone()])
            .await
            .unwrap();
        assert_eq!(
            backing.count("SELECT count(*) FROM bounce_origins").await,
            1,
            "one origin for the requests that share it"
        );
        spool
            .complete(
                vec![
                    done(first(&a, 0), State::Failed, Some(410), Some("Unregistered")),
                    done(first(&a, 1), State::Delivered, Some(200), None),
                    done(first(&a, 2), State::Expired, None, Some("Expired")),
                    done(
                        first(&plain, 0),
                        State::Failed,
                        Some(400),
                        Some("BadDeviceToken"),
                    ),
                ],
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(
            spool.bounces_waiting().await.unwrap(),
            2,
            "the bounced requests' failures, not a delivery, not an unbounced request's"
        );
        // Within the batching window (the failures are newer than the cutoff) nothing is due.
        let now = SystemTime::now();
        let past = now - Duration::from_secs(60);
        assert!(spool.bounces_due(now, past, 10).await.unwrap().is_empty());
        let later = now + Duration::from_secs(60);
        let due = spool.bounces_due(now, later, 10).await.unwrap();
        assert_eq!(due.len(), 1);
        let d = &due[0];
        assert_eq!(d.from, *origin);
        assert_eq!(d.attempts, 0);
        let got: Vec<_> = d
            .entries
            .iter()
            .map(|e| (e.id, e.state, e.status, e.reason.clone(), e.app.clone()))
            .collect();
        let want = [
            (
                first(&a, 0),
                State::Failed,
                Some(410),
                Some("Unregistered".to_owned()),
                "shop".to_owned(),
            ),
            (
                first(&a, 2),
                State::Expired,
                None,
                Some("Expired".to_owned()),
                "shop".to_owned(),
            ),
        ];
        assert_eq!(
            got.iter().collect::<HashSet<_>>(),
            want.iter().collect::<HashSet<_>>()
        );
        assert_eq!(d.entries[0].token, a.notifications[0].1);
        if matches!(backing, Backing::Postgres(_)) {
            // Leased: another look does not take it while the lease runs...
            assert!(spool.bounces_due(now, later, 10).await.unwrap().is_empty());
            // ...and a settle under another lease (one that ran out and was taken over)
            // changes nothing.
            let ids: Vec<_> = d.entries.iter().map(|e| e.id).collect();
            assert!(
                !spool
                    .settle_bounce(d.origin, d.lease - 1, ids, BounceSettle::Done)
                    .await
                    .unwrap()
            );
            assert_eq!(spool.bounces_waiting().await.unwrap(), 2);
        }
        // A failure recorded after the DSN was read waits for the next one.
        spool
            .complete(
                vec![done(
                    first(&b, 0),
                    State::Failed,
                    Some(410),
                    Some("Unregistered"),
                )],
                vec![],
            )
            .await
            .unwrap();
        let ids: Vec<_> = d.entries.iter().map(|e| e.id).collect();
        assert!(
            spool
                .settle_bounce(d.origin, d.lease, ids, BounceSettle::Done)
                .await
                .unwrap()
        );
        assert_eq!(spool.bounces_waiting().await.unwrap(), 1);
        let due = spool.bounces_due(now, later, 10).await.unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(
            due[0].entries.iter().map(|e| e.id).collect::<Vec<_>>(),
            [first(&b, 0)]
        );
        // Refused for now: not due before its time.
        let d = &due[0];
        let ids: Vec<_> = d.entries.iter().map(|e| e.id).collect();
        let retry_at = SystemTime::now() + Duration::from_secs(3600);
        assert!(
            spool
                .settle_bounce(
                    d.origin,
                    d.lease,
                    ids.clone(),
                    BounceSettle::RetryAt(retry_at)
                )
                .await
                .unwrap()
        );
        assert!(
            spool
                .bounces_due(SystemTime::now(), later, 10)
                .await
                .unwrap()
                .is_empty()
        );

        // Retention takes every finished notification, their requests and the links; the
        // origin stays while a failure of it waits.
        let pruned = spool
            .prune(SystemTime::now() + Duration::from_secs(86_400), 100)
            .await
            .unwrap();
        assert!(pruned >= 5, "{pruned}");
        assert_eq!(
            backing.count("SELECT count(*) FROM bounce_requests").await,
            0
        );
        assert_eq!(
            backing.count("SELECT count(*) FROM bounce_origins").await,
            1
        );
        assert_eq!(spool.bounces_waiting().await.unwrap(), 1);
        // Due again (its retry time set back), sent: nothing refers to the origin any more.
        backing
            .execute(
                "UPDATE bounce_origins SET next_at = 0",
                "UPDATE bounce_origins SET next_at = 0",
            )
            .await;
        let due = spool
            .bounces_due(SystemTime::now(), later, 10)
            .await
            .unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].attempts, 1, "one try failed");
        assert!(
            spool
                .settle_bounce(due[0].origin, due[0].lease, ids, BounceSettle::Done)
                .await
                .unwrap()
        );
        assert_eq!(spool.bounces_waiting().await.unwrap(), 0);
        assert_eq!(
            backing.count("SELECT count(*) FROM bounce_origins").await,
            0
        );
    }
);
