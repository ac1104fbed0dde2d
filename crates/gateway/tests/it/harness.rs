use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use apns::payload::Payload;
use apns::{ApnsId, PushType};
use gateway::spool::NewRequest;

pub use apns_mock::testing::token;

/// The folder of test credentials (`apns_mock::testing`).
pub fn apns_fixtures() -> PathBuf {
    PathBuf::from(apns_mock::testing::FIXTURES)
}

/// A request for `app` with `n` tokens starting at `first`.
pub fn request(app: &str, first: u64, n: u64) -> NewRequest {
    NewRequest {
        submitted: None,
        app: app.to_owned(),
        payload: Payload::alert("Hello", "World").encode().unwrap(),
        push_type: PushType::Alert,
        priority: None,
        topic: None,
        collapse_id: None,
        apns_expiration: None,
        send_at: None,
        expires_at: SystemTime::now() + Duration::from_secs(86_400),
        notifications: (first..first + n)
            .map(|i| (ApnsId::new(), token(i)))
            .collect(),
        bounce: None,
        supersede: None,
    }
}

/// Outcomes that put `ids` back in the queue as retries after one attempt (status 503), each
/// due when `due` says (given its index).
pub fn retries(
    ids: &[ApnsId],
    due: impl Fn(usize) -> SystemTime,
) -> Vec<gateway::spool::Completion> {
    ids.iter()
        .enumerate()
        .map(|(i, id)| gateway::spool::Completion {
            id: *id,
            state: gateway::spool::State::Queued,
            attempts: 1,
            status: Some(503),
            reason: None,
            due_at: Some(due(i)),
            conn: None,
        })
        .collect()
}

/// Each request's id and the notifications it has left, read from the file itself.
pub fn requests_remaining(c: &rusqlite::Connection) -> Vec<(i64, i64)> {
    c.prepare("SELECT id, remaining FROM requests ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// Where a test's spool lives, so that it can be opened again and looked at from outside.
pub enum Backing {
    Sqlite(std::path::PathBuf),
    Postgres(gateway::config::Postgres),
}

impl Backing {
    pub async fn open(&self, options: gateway::spool::SpoolOptions) -> gateway::spool::Store {
        match self {
            Backing::Sqlite(path) => gateway::spool::Store::sqlite(path, options).unwrap(),
            Backing::Postgres(pg) => gateway::spool::Store::postgres(pg, options).await.unwrap(),
        }
    }

    /// Runs `sql` on the spool's store directly (`$1`/`?1` is each of `ids` in turn).
    pub async fn execute_for_each(&self, sqlite: &str, postgres: &str, ids: &[apns::ApnsId]) {
        match self {
            Backing::Sqlite(path) => {
                let c = rusqlite::Connection::open(path).unwrap();
                for id in ids {
                    c.execute(sqlite, [&id.as_uuid().as_bytes()[..]]).unwrap();
                }
            }
            Backing::Postgres(pg) => {
                let c = Self::pg_client(pg).await;
                for id in ids {
                    c.execute(postgres, &[id.as_uuid()]).await.unwrap();
                }
            }
        }
    }

    /// The count a `SELECT count(*) …` answers, read from the store directly.
    pub async fn count(&self, query: &str) -> i64 {
        match self {
            Backing::Sqlite(path) => rusqlite::Connection::open(path)
                .unwrap()
                .query_row(query, [], |r| r.get(0))
                .unwrap(),
            Backing::Postgres(pg) => Self::pg_client(pg)
                .await
                .query_one(query, &[])
                .await
                .unwrap()
                .get(0),
        }
    }

    /// Runs a statement on the spool's store directly.
    pub async fn execute(&self, sqlite: &str, postgres: &str) {
        match self {
            Backing::Sqlite(path) => {
                rusqlite::Connection::open(path)
                    .unwrap()
                    .execute_batch(sqlite)
                    .unwrap();
            }
            Backing::Postgres(pg) => Self::pg_client(pg)
                .await
                .batch_execute(postgres)
                .await
                .unwrap(),
        }
    }

    /// Each request's id and the notifications it has left, read from the store itself.
    pub async fn requests_remaining(&self) -> Vec<(i64, i64)> {
        match self {
            Backing::Sqlite(path) => requests_remaining(&rusqlite::Connection::open(path).unwrap()),
            Backing::Postgres(pg) => Self::pg_client(pg)
                .await
                .query("SELECT id, remaining FROM requests ORDER BY id", &[])
                .await
                .unwrap()
                .iter()
                .map(|r| (r.get::<_, i64>(0), i64::from(r.get::<_, i32>(1))))
                .collect(),
        }
    }

    async fn pg_client(pg: &gateway::config::Postgres) -> tokio_postgres::Client {
        let (c, conn) = tokio_postgres::connect(pg.url.expose(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        c
    }
}

/// The outcome "delivered at the first attempt" for `id`.
pub fn delivered(id: ApnsId) -> gateway::spool::Completion {
    gateway::spool::Completion {
        id,
        state: gateway::spool::State::Delivered,
        attempts: 1,
        status: Some(200),
        reason: None,
        due_at: None,
        conn: None,
    }
}
