//! Idempotency keys in the spool, on both backends: a keyed batch is stored once; the same key
//! and fingerprint again is answered with the first batch's ids and stores nothing, even when
//! the spool is full; another fingerprint is refused; scopes keep callers apart; duplicates
//! that meet in one commit group (or in concurrent transactions) are caught; a key older than
//! the window is forgotten, and pruned.

use std::time::Duration;

use apns::ApnsId;
use gateway::spool::{Enqueued, IdempotencyKey, Spool, SpoolOptions, SubmitError};

use crate::harness::request;

fn ids_of(r: &gateway::spool::NewRequest) -> Vec<ApnsId> {
    r.notifications.iter().map(|(id, _)| *id).collect()
}

fn key(scope: &str, key: &str, body: &str) -> IdempotencyKey {
    IdempotencyKey::new(scope, key, body.as_bytes())
}

each_backend!(
    a_keyed_batch_is_stored_once_and_replayed_with_its_ids,
    SpoolOptions::default(),
    |spool| {
        let first = vec![request("shop", 0, 3), request("news", 10, 2)];
        let ids: Vec<ApnsId> = first.iter().flat_map(ids_of).collect();
        let stored = spool
            .enqueue_once(first, key("key:shop", "k1", "body"))
            .await
            .unwrap();
        assert!(
            matches!(stored, Enqueued::Stored(ref b) if b.len() == 2),
            "{stored:?}"
        );
        assert_eq!(spool.pending(), 5);

        // The client retries: new ids from its new parse, the same key and body.
        let again = spool
            .enqueue_once(
                vec![request("shop", 0, 3), request("news", 10, 2)],
                key("key:shop", "k1", "body"),
            )
            .await
            .unwrap();
        match again {
            Enqueued::Replayed(replayed) => {
                assert_eq!(replayed, ids, "the first answer's ids, in order")
            }
            other => panic!("expected a replay, got {other:?}"),
        }
        assert_eq!(spool.pending(), 5, "nothing stored again");

        let reused = spool
            .enqueue_once(
                vec![request("shop", 0, 1)],
                key("key:shop", "k1", "another body"),
            )
            .await;
        assert!(matches!(reused, Err(SubmitError::KeyReused)), "{reused:?}");
        assert_eq!(spool.pending(), 5);

        // The same key in another scope is another key.
        let other = spool
            .enqueue_once(vec![request("shop", 0, 1)], key("key:news", "k1", "body"))
            .await
            .unwrap();
        assert!(matches!(other, Enqueued::Stored(_)), "{other:?}");
        assert_eq!(spool.pending(), 6);
        let counted: u64 = spool.counts().await.unwrap().iter().map(|(_, n)| n).sum();
        assert_eq!(counted, 6);
    }
);

each_backend!(
    a_replay_is_answered_when_the_spool_is_full,
    SpoolOptions {
        max_pending: 10,
        ..SpoolOptions::default()
    },
    |spool| {
        let first = request("shop", 0, 10);
        let ids = ids_of(&first);
        spool
            .enqueue_once(vec![first], key("key:shop", "full", "b"))
            .await
            .unwrap();
        let again = spool
            .enqueue_once(vec![request("shop", 0, 10)], key("key:shop", "full", "b"))
            .await
            .unwrap();
        assert!(
            matches!(again, Enqueued::Replayed(ref r) if *r == ids),
            "{again:?}"
        );
        let new = spool
            .enqueue_once(vec![request("shop", 20, 1)], key("key:shop", "new", "b"))
            .await;
        assert!(matches!(new, Err(SubmitError::Full { .. })), "{new:?}");
    }
);

// Twelve submissions of one key at once: on SQLite they meet in the writer (the same group or
// the next; `sqlite::writer`'s own test puts two in one transaction), on PostgreSQL in
// concurrent transactions. One is stored; the others replay its ids.
each_backend!(
    duplicates_submitted_at_once_are_stored_once,
    SpoolOptions::default(),
    |spool| {
        let attempts = (0..12).map(|_| {
            let spool = spool.clone();
            tokio::spawn(async move {
                let r = request("shop", 0, 4);
                let ids = ids_of(&r);
                (
                    ids,
                    spool
                        .enqueue_once(vec![r], key("key:shop", "burst", "b"))
                        .await
                        .unwrap(),
                )
            })
        });
        let mut stored = Vec::new();
        let mut replays = Vec::new();
        for a in attempts.collect::<Vec<_>>() {
            match a.await.unwrap() {
                (ids, Enqueued::Stored(_)) => stored.push(ids),
                (_, Enqueued::Replayed(ids)) => replays.push(ids),
            }
        }
        assert_eq!(stored.len(), 1, "one stored, {} replays", replays.len());
        assert!(
            replays.iter().all(|r| *r == stored[0]),
            "every replay has the stored ids"
        );
        assert_eq!(spool.pending(), 4);
    }
);

each_backend!(
    a_key_older_than_the_window_is_forgotten_and_pruned,
    SpoolOptions {
        idempotency_window: Duration::from_secs(3_600),
        ..SpoolOptions::default()
    },
    |spool, backing| {
        spool
            .enqueue_once(vec![request("shop", 0, 1)], key("key:shop", "old", "b"))
            .await
            .unwrap();
        spool
            .enqueue_once(vec![request("shop", 1, 1)], key("key:shop", "older", "b"))
            .await
            .unwrap();
        spool.flush().await.unwrap();
        // Two hours ago.
        let age = "UPDATE idempotency_keys SET created_at = created_at - 7200000";
        backing.execute(age, age).await;
        let retaken = request("shop", 0, 1);
        let retaken_ids = ids_of(&retaken);
        let again = spool
            .enqueue_once(vec![retaken], key("key:shop", "old", "another body"))
            .await
            .unwrap();
        assert!(
            matches!(again, Enqueued::Stored(_)),
            "forgotten, so taken again: {again:?}"
        );
        // Retention forgets the other one; the one taken again stays.
        spool
            .prune(
                std::time::SystemTime::now() - Duration::from_secs(86_400),
                100,
            )
            .await
            .unwrap();
        let keys = "SELECT count(*) FROM idempotency_keys";
        assert_eq!(backing.count(keys).await, 1);
        let replay = spool
            .enqueue_once(
                vec![request("shop", 0, 1)],
                key("key:shop", "old", "another body"),
            )
            .await
            .unwrap();
        assert!(
            matches!(replay, Enqueued::Replayed(ref ids) if *ids == retaken_ids),
            "the ids of the submission that took the key again: {replay:?}"
        );
    }
);
