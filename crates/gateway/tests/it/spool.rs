use std::time::{Duration, SystemTime};

use apns::{Priority, Reason, Topic};
use gateway::spool::{
    Completion, DeadToken, ReadyCursor, Spool, SpoolOptions, State, Store, SubmitError,
};

use crate::harness::*;

fn open(dir: &tempfile::TempDir) -> Store {
    Store::sqlite(&dir.path().join("spool.db"), SpoolOptions::default()).unwrap()
}

each_backend!(
    an_enqueued_request_reads_back_field_by_field,
    SpoolOptions::default(),
    |spool| {
        let mut r = request("shop", 1, 3);
        r.priority = Some(Priority::Conserve);
        r.topic = Some(Topic::parse("com.example.shop").unwrap());
        let ids: Vec<_> = r.notifications.iter().map(|(id, _)| *id).collect();
        let before = SystemTime::now() - Duration::from_secs(1);
        spool.enqueue(vec![r.clone()]).await.unwrap();
        assert_eq!(spool.pending(), 3);
        for (i, id) in ids.iter().enumerate() {
            let rec = spool.get(*id).await.unwrap().expect("stored");
            assert_eq!(rec.app, "shop");
            assert_eq!(rec.token, token(1 + i as u64));
            assert_eq!(rec.state, State::Queued);
            assert_eq!(
                (rec.attempts, rec.status, rec.reason.clone()),
                (0, None, None)
            );
            assert!(rec.created_at >= before && rec.created_at <= SystemTime::now());
            assert_eq!(rec.send_at, None);
            let ttl = rec
                .expires_at
                .duration_since(r.expires_at)
                .unwrap_or_else(|e| e.duration());
            assert!(
                ttl < Duration::from_millis(2),
                "expires_at kept to the millisecond"
            );
        }
        assert_eq!(spool.get(apns::ApnsId::new()).await.unwrap(), None);
        assert_eq!(spool.counts().await.unwrap(), vec![(State::Queued, 3)]);
    }
);

// Two requests in the same commit group: the one with a repeated id is refused alone and
// leaves nothing behind; the other is stored.
each_backend!(
    a_request_is_stored_whole_or_not_at_all,
    SpoolOptions::default(),
    |spool| {
        let good = request("shop", 1, 50);
        let mut bad = request("shop", 100, 50);
        let dup = bad.notifications[0].0;
        bad.notifications[49].0 = dup;
        let first_of_bad = bad.notifications[1].0;
        let (a, b) = tokio::join!(spool.enqueue(vec![good.clone()]), spool.enqueue(vec![bad]));
        a.unwrap();
        assert!(matches!(b, Err(SubmitError::Unavailable(_))), "{b:?}");
        assert_eq!(
            spool.get(first_of_bad).await.unwrap(),
            None,
            "nothing of the refused batch"
        );
        assert_eq!(spool.get(dup).await.unwrap(), None);
        assert!(spool.get(good.notifications[49].0).await.unwrap().is_some());
        assert_eq!(spool.pending(), 50);
    }
);

each_backend!(
    beyond_max_pending_submits_are_refused_as_full,
    SpoolOptions {
        max_pending: 100,
        ..SpoolOptions::default()
    },
    |spool| {
        spool.enqueue(vec![request("shop", 0, 90)]).await.unwrap();
        let over = request("shop", 90, 11);
        let id = over.notifications[0].0;
        match spool.enqueue(vec![over]).await {
            Err(SubmitError::Full { pending, limit }) => assert_eq!((pending, limit), (90, 100)),
            other => panic!("expected Full, got {other:?}"),
        }
        assert_eq!(spool.get(id).await.unwrap(), None);
        spool.enqueue(vec![request("shop", 90, 10)]).await.unwrap();
        assert_eq!(spool.pending(), 100);
        // Finishing notifications makes room again.
        let page = spool.pending_page(None, 5).await.unwrap();
        let done = page
            .iter()
            .map(|p| Completion {
                id: p.id,
                state: State::Delivered,
                attempts: 1,
                status: Some(200),
                reason: None,
                due_at: None,
                conn: None,
            })
            .collect();
        spool.complete(done, Vec::new()).await.unwrap();
        assert_eq!(spool.pending(), 95);
        spool.enqueue(vec![request("shop", 200, 5)]).await.unwrap();
    }
);

each_backend!(
    recovery_requeues_rows_left_in_flight_and_keeps_scheduled_rows,
    SpoolOptions::default(),
    |spool, backing| {
        let now = request("shop", 0, 4);
        let mut later = request("shop", 10, 2);
        later.send_at = Some(SystemTime::now() + Duration::from_secs(3600));
        let in_flight: Vec<_> = now.notifications[..2].iter().map(|(id, _)| *id).collect();
        let scheduled: Vec<_> = later.notifications.iter().map(|(id, _)| *id).collect();
        spool.enqueue(vec![now, later]).await.unwrap();
        spool.close().await.unwrap();
        assert!(spool.flush().await.is_err(), "a closed spool refuses work");
        // Earlier versions wrote "in flight" (state 2) to the spool; such a file must recover too.
        // (Dispatch now keeps being in flight in memory.)
        backing
            .execute_for_each(
                "UPDATE notifications SET state = 2 WHERE id = ?1",
                "UPDATE notifications SET state = 2 WHERE id = $1",
                &in_flight,
            )
            .await;

        let spool = backing.open(SpoolOptions::default()).await;
        assert_eq!(spool.pending(), 6);
        let report = spool.recover().await.unwrap();
        assert_eq!((report.requeued, report.pending), (2, 6));
        for id in &in_flight {
            assert_eq!(spool.get(*id).await.unwrap().unwrap().state, State::Queued);
        }
        let page = spool.pending_page(None, 100).await.unwrap();
        assert_eq!(page.len(), 6);
        let sched: Vec<_> = page
            .iter()
            .filter(|p| p.state == State::Scheduled)
            .collect();
        assert_eq!(sched.len(), 2);
        assert!(
            sched
                .iter()
                .all(|p| p.due_at.is_some() && scheduled.contains(&p.id))
        );
        // Paging by key returns the rest after a given id.
        let rest = spool.pending_page(Some(page[3].id), 100).await.unwrap();
        assert_eq!(rest.len(), 2);
        // Not due yet, then due.
        assert!(
            spool
                .claim_due(SystemTime::now(), 10)
                .await
                .unwrap()
                .is_empty()
        );
        let claimed = spool
            .claim_due(SystemTime::now() + Duration::from_secs(3601), 10)
            .await
            .unwrap();
        assert_eq!(claimed.len(), 2);
        assert_eq!(
            spool.get(scheduled[0]).await.unwrap().unwrap().state,
            State::Queued
        );
    }
);

each_backend!(
    finished_rows_are_pruned_after_retention_and_pending_ones_stay,
    SpoolOptions::default(),
    |spool, backing| {
        let done_req = request("shop", 0, 10);
        let keep_req = request("shop", 100, 5);
        let done_ids: Vec<_> = done_req.notifications.iter().map(|(id, _)| *id).collect();
        let keep_id = keep_req.notifications[0].0;
        spool.enqueue(vec![done_req, keep_req]).await.unwrap();
        // One attempt each that a retry followed, kept in their histories.
        let retried = |id| Completion {
            id,
            state: State::Queued,
            attempts: 1,
            status: Some(500),
            reason: Some(Reason::InternalServerError.into()),
            due_at: Some(SystemTime::now()),
            conn: Some(1),
        };
        spool
            .complete(vec![retried(done_ids[0]), retried(keep_id)], Vec::new())
            .await
            .unwrap();
        spool
            .complete(vec![retried(done_ids[0])], Vec::new())
            .await
            .unwrap();
        assert_eq!(spool.attempts(done_ids[0]).await.unwrap().len(), 2);
        let completions = done_ids
            .iter()
            .map(|id| Completion {
                id: *id,
                state: State::Failed,
                attempts: 1,
                status: Some(400),
                reason: Some(Reason::BadTopic.into()),
                due_at: None,
                conn: None,
            })
            .collect();
        spool.complete(completions, Vec::new()).await.unwrap();
        let failed = spool.get(done_ids[0]).await.unwrap().unwrap();
        assert_eq!(
            (failed.state, failed.status, failed.reason),
            (State::Failed, Some(400), Some(Reason::BadTopic.into()))
        );
        // Not yet past retention: nothing goes.
        assert_eq!(
            spool
                .prune(SystemTime::now() - Duration::from_secs(60), 100)
                .await
                .unwrap(),
            0
        );
        // Past it: finished rows go, in chunks.
        let later = SystemTime::now() + Duration::from_secs(1);
        assert_eq!(spool.prune(later, 4).await.unwrap(), 4);
        assert_eq!(spool.prune(later, 100).await.unwrap(), 6);
        assert_eq!(spool.get(done_ids[9]).await.unwrap(), None);
        let kept = spool
            .get(keep_id)
            .await
            .unwrap()
            .expect("pending rows stay, with their request");
        assert_eq!(kept.state, State::Queued);
        assert_eq!(spool.counts().await.unwrap(), vec![(State::Queued, 5)]);
        assert_eq!(
            spool.attempts(done_ids[0]).await.unwrap(),
            vec![],
            "a pruned notification's history goes with it"
        );
        assert_eq!(spool.attempts(keep_id).await.unwrap().len(), 1);
        spool.close().await.unwrap();
        let requests = backing.requests_remaining().await;
        assert_eq!(
            requests,
            vec![(2, 5)],
            "the finished request went with its last notification; the other counts its 5"
        );
    }
);

// Due retries are paged like the rest: 2,500 of them, ten at a time, each read once a pass,
// and the earliest still to come is what `next_due` answers.
each_backend!(
    due_retries_are_paged_past_the_first_page,
    SpoolOptions::default(),
    |spool| {
        let r = request("shop", 0, 2_500);
        let ids: Vec<_> = r.notifications.iter().map(|(id, _)| *id).collect();
        spool.enqueue(vec![r]).await.unwrap();
        let now = SystemTime::now();
        // Every row a retry: due a millisecond apart in the past, but the last one in the future.
        let completions = retries(&ids, |i| {
            if i == ids.len() - 1 {
                now + Duration::from_secs(60)
            } else {
                now - Duration::from_secs(10) + Duration::from_millis(i as u64)
            }
        });
        spool.complete(completions, vec![]).await.unwrap();
        let mut seen = Vec::new();
        let mut cursor = ReadyCursor::Start;
        loop {
            let page = spool.ready_page("shop", cursor, now, 100).await.unwrap();
            assert!(page.rows.len() <= 100);
            seen.extend(page.rows.iter().map(|r| r.item.id));
            match page.cursor {
                Some(c) => cursor = c,
                None => break,
            }
        }
        assert_eq!(
            seen,
            ids[..ids.len() - 1],
            "every due retry once, in due order"
        );
        let next = spool.next_due("shop", now).await.unwrap().unwrap();
        assert!(next > now + Duration::from_secs(59), "{next:?}");
    }
);

each_backend!(
    dead_tokens_are_registered_and_refreshed,
    SpoolOptions::default(),
    |spool| {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        spool
            .register_dead_token(DeadToken {
                app: "shop".into(),
                token: token(7),
                reason: Reason::Unregistered,
                since: t0,
            })
            .await
            .unwrap();
        assert_eq!(
            spool.dead_token("shop", &token(7)).await.unwrap(),
            Some((Reason::Unregistered, t0))
        );
        assert_eq!(spool.dead_token("other", &token(7)).await.unwrap(), None);
        let t1 = t0 + Duration::from_secs(60);
        spool
            .register_dead_token(DeadToken {
                app: "shop".into(),
                token: token(7),
                reason: Reason::ExpiredToken,
                since: t1,
            })
            .await
            .unwrap();
        assert_eq!(
            spool.dead_token("shop", &token(7)).await.unwrap(),
            Some((Reason::ExpiredToken, t1))
        );
    }
);

each_backend!(
    a_retry_keeps_the_row_pending_with_its_due_time,
    SpoolOptions::default(),
    |spool| {
        let r = request("shop", 0, 1);
        let id = r.notifications[0].0;
        spool.enqueue(vec![r]).await.unwrap();
        let due = SystemTime::now() + Duration::from_secs(30);
        spool
            .complete(
                vec![Completion {
                    id,
                    state: State::Queued,
                    attempts: 1,
                    status: Some(503),
                    reason: Some(Reason::ServiceUnavailable.into()),
                    due_at: Some(due),
                    conn: None,
                }],
                Vec::new(),
            )
            .await
            .unwrap();
        assert_eq!(spool.pending(), 1);
        let page = spool.pending_page(None, 10).await.unwrap();
        assert_eq!(page[0].attempts, 1);
        assert!(page[0].due_at.is_some());
    }
);

// The background pruner removes finished rows once they are older than the retention.
each_backend!(
    the_pruner_runs_in_the_background,
    SpoolOptions::default(),
    |spool| {
        let r = request("shop", 0, 3);
        let ids: Vec<_> = r.notifications.iter().map(|(id, _)| *id).collect();
        spool.enqueue(vec![r]).await.unwrap();
        spool
            .complete(
                vec![Completion {
                    id: ids[0],
                    state: State::Delivered,
                    attempts: 1,
                    status: Some(200),
                    reason: None,
                    due_at: None,
                    conn: None,
                }],
                Vec::new(),
            )
            .await
            .unwrap();
        let pruner =
            gateway::spool::spawn_pruner(spool.clone(), Duration::ZERO, Duration::from_millis(20));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while spool.get(ids[0]).await.unwrap().is_some() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the delivered row was not pruned within 5 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        pruner.abort();
        assert!(
            spool.get(ids[1]).await.unwrap().is_some(),
            "pending rows stay"
        );
        assert_eq!(spool.pending(), 2);
    }
);

/// A queued notification whose request is missing, or whose row does not decode, cannot be
/// sent; paging goes on past it instead of ending the page there (which hid every later row
/// from the scheduler) or failing every page.
#[tokio::test]
async fn paging_goes_on_past_rows_that_cannot_be_sent() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(&dir);
    let orphan = request("shop", 0, 1);
    let orphan_id = orphan.notifications[0].0;
    let rest = request("shop", 1, 29);
    let corrupt = rest.notifications[3].0;
    spool.enqueue(vec![orphan, rest]).await.unwrap();
    spool.flush().await.unwrap();
    // Damage the file the way a bug or a bad restore could, through a connection of our own.
    let c = rusqlite::Connection::open(dir.path().join("spool.db")).unwrap();
    c.execute(
        "DELETE FROM requests WHERE id = (SELECT request_id FROM notifications WHERE id = ?1)",
        [&orphan_id.as_uuid().as_bytes()[..]],
    )
    .unwrap();
    c.execute(
        "UPDATE notifications SET token = x'' WHERE id = ?1",
        [&corrupt.as_uuid().as_bytes()[..]],
    )
    .unwrap();
    drop(c);
    let mut seen = Vec::new();
    let mut cursor = ReadyCursor::Start;
    loop {
        let page = spool
            .ready_page("shop", cursor, SystemTime::now(), 10)
            .await
            .unwrap();
        seen.extend(page.rows.iter().map(|r| r.item.id));
        match page.cursor {
            Some(c) => cursor = c,
            None => break,
        }
    }
    assert_eq!(seen.len(), 28, "every row that can be sent, and only those");
    assert!(!seen.contains(&orphan_id) && !seen.contains(&corrupt));
}

// Concurrent submits cannot pass the limit together: twenty batches of ten at once against a
// limit of 100 admit exactly ten of them, and the count says 100.
each_backend!(
    concurrent_submits_never_pass_max_pending_together,
    SpoolOptions {
        max_pending: 100,
        ..SpoolOptions::default()
    },
    |spool| {
        let results = futures_util::future::join_all(
            (0..20).map(|i| spool.enqueue(vec![request("shop", i * 10, 10)])),
        )
        .await;
        let admitted = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(admitted, 10, "{results:?}");
        assert!(
            results
                .iter()
                .all(|r| matches!(r, Ok(_) | Err(SubmitError::Full { .. }))),
            "{results:?}"
        );
        assert_eq!(spool.pending(), 100);
        assert_eq!(spool.counts().await.unwrap(), vec![(State::Queued, 100)]);
    }
);

/// A second gateway on the same SQLite file is refused (it would send what the first is
/// sending) until the first closes it.
#[tokio::test]
async fn a_second_spool_on_the_same_sqlite_file_waits_for_the_first_to_close() {
    let dir = tempfile::tempdir().unwrap();
    let first = open(&dir);
    let err = Store::sqlite(&dir.path().join("spool.db"), SpoolOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("another gateway uses the spool"), "{err}");
    first.close().await.unwrap();
    let second = open(&dir);
    second.close().await.unwrap();
}

/// `(mode & 0o777)` of `path`.
fn mode_of(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// The spool's files hold tokens and payloads: private whatever the umask (this process's is
/// the usual 022, which made them 0644), a folder made for them 0700, `[storage] mode` widens,
/// and a spool an earlier version left readable is made private at its next open.
#[tokio::test]
async fn the_spool_files_are_private_whatever_the_umask() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data/spool.db");
    let spool = Store::sqlite(&path, SpoolOptions::default()).unwrap();
    spool.enqueue(vec![request("shop", 0, 3)]).await.unwrap();
    assert_eq!(mode_of(&dir.path().join("data")), 0o700);
    for name in ["spool.db", "spool.db-wal", "spool.db-shm", "spool.db.lock"] {
        assert_eq!(
            mode_of(&dir.path().join("data").join(name)),
            0o600,
            "{name}"
        );
    }
    spool.close().await.unwrap();

    // Widened by the configuration, for a backup group.
    let wide = SpoolOptions {
        mode: 0o640,
        ..SpoolOptions::default()
    };
    let other = dir.path().join("shared/spool.db");
    let spool = Store::sqlite(&other, wide).unwrap();
    spool.enqueue(vec![request("shop", 0, 1)]).await.unwrap();
    assert_eq!(mode_of(&dir.path().join("shared")), 0o750);
    assert_eq!(mode_of(&other), 0o640);
    assert_eq!(mode_of(&dir.path().join("shared/spool.db-wal")), 0o640);
    spool.close().await.unwrap();

    // An earlier version's world-readable spool is made private when opened.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let spool = Store::sqlite(&path, SpoolOptions::default()).unwrap();
    assert_eq!(mode_of(&path), 0o600);
    assert_eq!(spool.pending(), 3, "the same spool");
    spool.close().await.unwrap();
}

// A token's lookup reads the newest notifications only, and says when it stopped before the
// oldest: here the newest 5 of 15.
each_backend!(
    a_token_search_stops_at_its_limit_and_says_so,
    SpoolOptions {
        token_search_limit: 5,
        ..SpoolOptions::default()
    },
    |spool| {
        let old = request("shop", 1, 5);
        spool.enqueue(vec![old]).await.unwrap();
        // The next ids are of a later millisecond (ids are UUIDv7: ordered by it).
        let first = SystemTime::now();
        while SystemTime::now().duration_since(first).unwrap() < Duration::from_millis(2) {
            std::hint::spin_loop();
        }
        let new = request("shop", 100, 10);
        let newest = *new.notifications.iter().map(|(id, _)| id).max().unwrap();
        let newest_token = new
            .notifications
            .iter()
            .find(|(id, _)| *id == newest)
            .unwrap()
            .1
            .clone();
        spool.enqueue(vec![new]).await.unwrap();
        let far = spool.token_history("shop", &token(1), 20).await.unwrap();
        assert_eq!((far.notifications.len(), far.truncated), (0, true));
        let near = spool
            .token_history("shop", &newest_token, 20)
            .await
            .unwrap();
        assert_eq!(
            near.notifications.iter().map(|r| r.id).collect::<Vec<_>>(),
            vec![newest]
        );
        assert!(
            near.truncated,
            "fewer than asked for, and older ones unread"
        );
        let enough = spool.token_history("shop", &newest_token, 1).await.unwrap();
        assert!(
            !enough.truncated,
            "as many as asked for: nothing is missing"
        );
        assert!(
            spool
                .token_history("news", &newest_token, 20)
                .await
                .unwrap()
                .notifications
                .is_empty(),
            "another app's notifications to the same token are not its"
        );
    }
);
