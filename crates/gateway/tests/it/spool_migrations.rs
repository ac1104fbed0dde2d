//! Spools written by earlier versions open, migrated in place: every pending notification is
//! still sent and every finished one still pruned.

use std::time::{Duration, SystemTime};

use gateway::spool::{Completion, ReadyCursor, Spool, SpoolOptions, State, Store};

use crate::harness::requests_remaining;

/// The first schema, as pushgate 0.1 wrote it.
const SCHEMA_1: &str = "
CREATE TABLE requests (id INTEGER PRIMARY KEY, app TEXT NOT NULL, payload BLOB NOT NULL,
    push_type TEXT NOT NULL, priority INTEGER, topic TEXT, collapse_id TEXT,
    apns_expiration INTEGER, send_at INTEGER, expires_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL);
CREATE TABLE notifications (id BLOB PRIMARY KEY, request_id INTEGER NOT NULL,
    token BLOB NOT NULL, state INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    due_at INTEGER, status INTEGER, reason TEXT, updated_at INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX notifications_pending ON notifications (state, due_at) WHERE state < 3;
CREATE INDEX notifications_finished ON notifications (updated_at) WHERE state >= 3;
CREATE INDEX notifications_request ON notifications (request_id);
CREATE TABLE dead_tokens (app TEXT NOT NULL, token BLOB NOT NULL, reason TEXT NOT NULL,
    since INTEGER NOT NULL, PRIMARY KEY (app, token)) WITHOUT ROWID;
PRAGMA user_version = 1;";

/// A spool written by the first schema opens: each request counts its notifications, the
/// indexes later versions do without are gone, pending rows are sent and finished ones pruned.
#[tokio::test]
async fn a_version_1_spool_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spool.db");
    let (queued, finished) = (apns::ApnsId::new(), apns::ApnsId::new());
    let other = apns::ApnsId::new();
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(SCHEMA_1).unwrap();
        c.execute_batch(
            "INSERT INTO requests VALUES (1, 'shop', X'7B7D', 'alert', NULL, NULL, NULL, NULL, \
             NULL, 99999999999999, 1000), (2, 'shop', X'7B7D', 'alert', NULL, NULL, NULL, NULL, \
             NULL, 99999999999999, 1000);",
        )
        .unwrap();
        let mut st = c
            .prepare("INSERT INTO notifications (id, request_id, token, state, updated_at) VALUES (?1, ?2, X'AABB', ?3, 1000)")
            .unwrap();
        for (id, request, state) in [(queued, 1, 1), (finished, 1, 3), (other, 2, 4)] {
            st.execute(rusqlite::params![
                &id.as_uuid().as_bytes()[..],
                request,
                state
            ])
            .unwrap();
        }
    }
    let spool = Store::sqlite(&path, SpoolOptions::default()).unwrap();
    assert_eq!(spool.pending(), 1);
    let page = spool
        .ready_page("shop", ReadyCursor::Start, SystemTime::now(), 10)
        .await
        .unwrap();
    assert_eq!(
        page.rows.iter().map(|r| r.item.id).collect::<Vec<_>>(),
        vec![queued]
    );
    let later = SystemTime::now() + Duration::from_secs(1);
    assert_eq!(spool.prune(later, 100).await.unwrap(), 2);
    assert!(spool.get(queued).await.unwrap().is_some());
    spool.close().await.unwrap();
    let c = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = c
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    let indexes: Vec<String> = c
        .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'notifications' AND sql IS NOT NULL")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let requests = requests_remaining(&c);
    assert_eq!(version, 6);
    assert_eq!(
        indexes,
        vec![
            "notifications_pending".to_owned(),
            "notifications_superseding".to_owned()
        ]
    );
    assert_eq!(
        requests,
        vec![(1, 1)],
        "request 2 went with its one notification"
    );
}

/// The schema of version 2 (pending index by state and due time only).
const SCHEMA_2: &str = "
CREATE TABLE requests (id INTEGER PRIMARY KEY, app TEXT NOT NULL, payload BLOB NOT NULL,
    push_type TEXT NOT NULL, priority INTEGER, topic TEXT, collapse_id TEXT,
    apns_expiration INTEGER, send_at INTEGER, expires_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL, remaining INTEGER NOT NULL DEFAULT 0);
CREATE TABLE notifications (id BLOB PRIMARY KEY, request_id INTEGER NOT NULL,
    token BLOB NOT NULL, state INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    due_at INTEGER, status INTEGER, reason TEXT, updated_at INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX notifications_pending ON notifications (state, due_at) WHERE state < 3;
CREATE TABLE dead_tokens (app TEXT NOT NULL, token BLOB NOT NULL, reason TEXT NOT NULL,
    since INTEGER NOT NULL, PRIMARY KEY (app, token)) WITHOUT ROWID;
PRAGMA user_version = 2;";

/// A version 2 spool opens as version 3 (and on to 4): its pending notifications are numbered by app, so
/// each app's page holds its own rows (waiting, due and scheduled) and nothing of the other's.
#[tokio::test]
async fn a_version_2_spool_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spool.db");
    let ids: Vec<apns::ApnsId> = (0..5).map(|_| apns::ApnsId::new()).collect();
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(SCHEMA_2).unwrap();
        c.execute_batch(
            "INSERT INTO requests VALUES (1, 'shop', X'7B7D', 'alert', NULL, NULL, NULL, NULL, \
             NULL, 99999999999999, 1000, 3), (2, 'news', X'7B7D', 'alert', NULL, NULL, NULL, \
             NULL, NULL, 99999999999999, 1000, 2);",
        )
        .unwrap();
        let mut st = c
            .prepare("INSERT INTO notifications (id, request_id, token, state, due_at, updated_at) VALUES (?1, ?2, X'AABB', ?3, ?4, 1000)")
            .unwrap();
        // shop: waiting, due retry, scheduled (past); news: waiting, finished.
        let rows = [
            (1, 1, None),
            (1, 1, Some(2000)),
            (1, 0, Some(3000)),
            (2, 1, None),
            (2, 4, None),
        ];
        for (id, (request, state, due)) in ids.iter().zip(rows) {
            st.execute(rusqlite::params![
                &id.as_uuid().as_bytes()[..],
                request,
                state,
                due
            ])
            .unwrap();
        }
    }
    let spool = Store::sqlite(&path, SpoolOptions::default()).unwrap();
    assert_eq!(spool.pending(), 4);
    assert_eq!(
        spool.claim_due(SystemTime::now(), 10).await.unwrap(),
        vec![ids[2]]
    );
    let page = |app: &'static str| {
        let spool = spool.clone();
        async move {
            let p = spool
                .ready_page(app, ReadyCursor::Start, SystemTime::now(), 10)
                .await
                .unwrap();
            let mut got: Vec<_> = p.rows.iter().map(|r| r.item.id).collect();
            got.sort();
            got
        }
    };
    let mut shop = vec![ids[0], ids[1], ids[2]];
    shop.sort();
    assert_eq!(page("shop").await, shop);
    assert_eq!(page("news").await, vec![ids[3]]);
    assert_eq!(page("none").await, vec![]);
    spool.close().await.unwrap();
    let c = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = c
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 6);
    let index: String = c
        .query_row(
            "SELECT sql FROM sqlite_master WHERE name = 'notifications_pending'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(index.contains("(state, app, due_at)"), "{index}");
}

/// The schema of version 3 (apps numbered, no attempt history).
const SCHEMA_3: &str = "
CREATE TABLE apps (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE requests (id INTEGER PRIMARY KEY, app TEXT NOT NULL, payload BLOB NOT NULL,
    push_type TEXT NOT NULL, priority INTEGER, topic TEXT, collapse_id TEXT,
    apns_expiration INTEGER, send_at INTEGER, expires_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL, remaining INTEGER NOT NULL DEFAULT 0);
CREATE TABLE notifications (id BLOB PRIMARY KEY, request_id INTEGER NOT NULL,
    app INTEGER NOT NULL DEFAULT 0, token BLOB NOT NULL, state INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, due_at INTEGER, status INTEGER, reason TEXT,
    updated_at INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX notifications_pending ON notifications (state, app, due_at) WHERE state < 3;
CREATE TABLE dead_tokens (app TEXT NOT NULL, token BLOB NOT NULL, reason TEXT NOT NULL,
    since INTEGER NOT NULL, PRIMARY KEY (app, token)) WITHOUT ROWID;
PRAGMA user_version = 3;";

/// A version 3 spool opens as version 4: its rows read with no connection and no earlier
/// attempts, and a retry from now on is kept in the history.
#[tokio::test]
async fn a_version_3_spool_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spool.db");
    let (done, waiting) = (apns::ApnsId::new(), apns::ApnsId::new());
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(SCHEMA_3).unwrap();
        c.execute_batch(
            "INSERT INTO apps VALUES (1, 'shop'); INSERT INTO requests VALUES (1, 'shop', X'7B7D', \
             'alert', NULL, NULL, NULL, NULL, NULL, 99999999999999, 1000, 2);",
        )
        .unwrap();
        let mut st = c
            .prepare("INSERT INTO notifications (id, request_id, app, token, state, attempts, status, updated_at) VALUES (?1, 1, ?2, X'AABB', ?3, ?4, ?5, 1000)")
            .unwrap();
        st.execute(rusqlite::params![
            &done.as_uuid().as_bytes()[..],
            0,
            3,
            1,
            200
        ])
        .unwrap();
        st.execute(rusqlite::params![
            &waiting.as_uuid().as_bytes()[..],
            1,
            1,
            0,
            None::<i64>
        ])
        .unwrap();
    }
    let spool = Store::sqlite(&path, SpoolOptions::default()).unwrap();
    let r = spool.get(done).await.unwrap().unwrap();
    assert_eq!(
        (r.state, r.status, r.conn),
        (State::Delivered, Some(200), None)
    );
    assert_eq!(spool.attempts(done).await.unwrap(), vec![]);
    spool
        .complete(
            vec![Completion {
                id: waiting,
                state: State::Queued,
                attempts: 1,
                status: Some(503),
                reason: Some(apns::Reason::ServiceUnavailable.into()),
                due_at: Some(SystemTime::now()),
                conn: Some(3),
            }],
            Vec::new(),
        )
        .await
        .unwrap();
    let kept = spool.attempts(waiting).await.unwrap();
    assert_eq!(
        kept.iter().map(|a| (a.status, a.conn)).collect::<Vec<_>>(),
        vec![(Some(503), Some(3))]
    );
    spool.close().await.unwrap();
    let c = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = c
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 6);
}
