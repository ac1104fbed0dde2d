use std::path::Path;
use std::process::{Command, Output};

use crate::harness::run;

fn pushgate(args: &[&str], config: &Path) -> Output {
    run(Command::new(env!("CARGO_BIN_EXE_pushgate"))
        .args(args)
        .arg("--config")
        .arg(config))
}

/// A connection to the test database, driven on the current runtime.
async fn client(pg: &gateway::config::Postgres) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(pg.url.expose(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

use crate::harness::output_text as text;

#[test]
fn db_status_and_migrate_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pushgate.toml");
    std::fs::write(&config, "[storage]\nsqlite = \"spool.db\"\n").unwrap();
    let before = pushgate(&["db", "status"], &config);
    assert!(before.status.success(), "{}", text(&before));
    assert!(
        text(&before).contains("schema version: none yet"),
        "{}",
        text(&before)
    );
    assert!(
        !dir.path().join("spool.db").exists(),
        "status creates nothing"
    );
    let created = pushgate(&["db", "migrate"], &config);
    assert!(created.status.success(), "{}", text(&created));
    assert!(
        text(&created).contains("schema: created at version 6"),
        "{}",
        text(&created)
    );
    let again = pushgate(&["db", "migrate"], &config);
    assert!(
        text(&again).contains("schema: already at version 6"),
        "{}",
        text(&again)
    );
}

/// On PostgreSQL: the server's version and the schema's, created once, a newer schema
/// refused with its own exit code — and the URL's password never in the output.
#[test]
fn db_status_and_migrate_on_postgres() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Some(pg) = rt.block_on(gateway::local_postgres::database()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // The test server trusts loopback connections, so any password is accepted: one that
    // must never be printed.
    let url = pg
        .url
        .expose()
        .replace("postgres://pushgate@", "postgres://pushgate:hunter2@");
    std::fs::write(dir.path().join("pg-url"), &url).unwrap();
    let config = dir.path().join("pushgate.toml");
    std::fs::write(&config, "[storage]\npostgres_url_file = \"pg-url\"\n").unwrap();

    let before = pushgate(&["db", "status"], &config);
    let out = text(&before);
    assert!(before.status.success(), "{out}");
    assert!(
        out.contains(&format!("spool: postgres at {}", pg.target)),
        "{out}"
    );
    assert!(out.contains("server: PostgreSQL "), "{out}");
    assert!(out.contains("schema version: none yet"), "{out}");
    let created = pushgate(&["db", "migrate"], &config);
    assert!(
        text(&created).contains("schema: created at version 7"),
        "{}",
        text(&created)
    );
    let again = pushgate(&["db", "migrate"], &config);
    assert!(
        text(&again).contains("schema: already at version 7"),
        "{}",
        text(&again)
    );
    let check = run(Command::new(env!("CARGO_BIN_EXE_pushgate"))
        .args(["config", "check"])
        .arg(&config));
    assert!(
        text(&check).contains(&format!("spool: PostgreSQL at {}", pg.target)),
        "{}",
        text(&check)
    );
    assert!(
        text(&check).contains("    server 15")
            && text(&check).contains("schema version 7 (this pushgate: 7)"),
        "config check reaches the database: {}",
        text(&check)
    );

    // A version 3 database (no attempts kept, no connection per notification) is migrated to 7.
    rt.block_on(async {
        let client = client(&pg).await;
        client
            .batch_execute(
                "ALTER TABLE notifications DROP COLUMN conn; DROP TABLE attempts; \
                 UPDATE pushgate_schema SET version = 3",
            )
            .await
            .unwrap();
    });
    let migrated = pushgate(&["db", "migrate"], &config);
    assert!(
        text(&migrated).contains("schema: migrated from version 3 to 7"),
        "{}",
        text(&migrated)
    );
    rt.block_on(async {
        client(&pg)
            .await
            .query(
                "SELECT seq, id, at, status, reason, conn FROM attempts",
                &[],
            )
            .await
            .expect("version 4's attempts");
    });

    // A version 1 database (its placeholder table of idempotency keys, gateways without their
    // locks, no attempts) is migrated to 7.
    rt.block_on(async {
        let client = client(&pg).await;
        client
            .batch_execute(
                "ALTER TABLE notifications DROP COLUMN conn; DROP TABLE attempts; \
                 DROP TABLE idempotency_keys; CREATE TABLE idempotency_keys (app text NOT NULL, \
                 key text NOT NULL, request_id bigint NOT NULL, created_at bigint NOT NULL, \
                 PRIMARY KEY (app, key)); ALTER TABLE gateways DROP COLUMN lock_key, \
                 DROP COLUMN apps; ALTER TABLE provider_tokens DROP COLUMN team_id; \
                 UPDATE pushgate_schema SET version = 1",
            )
            .await
            .unwrap();
    });
    let migrated = pushgate(&["db", "migrate"], &config);
    assert!(
        text(&migrated).contains("schema: migrated from version 1 to 7"),
        "{}",
        text(&migrated)
    );
    rt.block_on(async {
        let client = client(&pg).await;
        client
            .query("SELECT fingerprint, ids, scope FROM idempotency_keys", &[])
            .await
            .expect("version 2's idempotency keys");
        client
            .query("SELECT lock_key, apps FROM gateways", &[])
            .await
            .expect("version 3's gateways");
    });

    // A database a newer pushgate migrated is refused, by status and by migrate.
    rt.block_on(async {
        let client = client(&pg).await;
        client
            .execute("UPDATE pushgate_schema SET version = 99", &[])
            .await
            .unwrap();
    });
    let newer = pushgate(&["db", "status"], &config);
    assert_eq!(newer.status.code(), Some(3), "{}", text(&newer));
    assert!(
        text(&newer).contains("upgrade pushgate"),
        "{}",
        text(&newer)
    );
    let refused = pushgate(&["db", "migrate"], &config);
    assert!(!refused.status.success());
    let check_newer = run(Command::new(env!("CARGO_BIN_EXE_pushgate"))
        .args(["config", "check"])
        .arg(&config));
    assert_eq!(check_newer.status.code(), Some(2), "{}", text(&check_newer));
    assert!(
        text(&check_newer).contains("upgrade pushgate"),
        "{}",
        text(&check_newer)
    );
    assert!(
        text(&refused).contains("schema version 99"),
        "{}",
        text(&refused)
    );
    for o in [&before, &created, &again, &check, &newer, &refused] {
        assert!(!text(o).contains("hunter2"), "{}", text(o));
    }
}

/// Four `db migrate` and a gateway's start, all at once on an empty database: every one comes
/// up, the schema is created once (by whichever took the migration lock first), and the rest
/// find it done; `db migrate` runs beside a gateway that is up.
#[test]
fn concurrent_start_up_migrates_once() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Some(pg) = rt.block_on(gateway::local_postgres::database()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pg-url"), pg.url.expose()).unwrap();
    let config = dir.path().join("pushgate.toml");
    std::fs::write(&config, "[storage]\npostgres_url_file = \"pg-url\"\n").unwrap();
    let children: Vec<_> = (0..4)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_pushgate"))
                .args(["db", "migrate", "--config"])
                .arg(&config)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let gateway = rt.block_on(gateway::spool::Store::postgres(
        &pg,
        gateway::spool::SpoolOptions::default(),
    ));
    let outputs: Vec<String> = children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            assert!(out.status.success(), "{}", text(&out));
            text(&out)
        })
        .collect();
    let gateway = gateway.expect("the gateway came up beside the migrations");
    let created = outputs
        .iter()
        .filter(|o| o.contains("schema: created at version 7"))
        .count();
    let found = outputs
        .iter()
        .filter(|o| o.contains("schema: already at version 7"))
        .count();
    assert!(
        created <= 1 && created + found == 4,
        "one creates at most (or the gateway did), the rest find it: {outputs:?}"
    );
    assert!(
        outputs.iter().all(|o| !o.contains("NOTICE")),
        "quiet: {outputs:?}"
    );
    // Beside the running gateway (its lock is the gateway's, not the migration's).
    let beside = pushgate(&["db", "migrate"], &config);
    assert!(
        beside.status.success() && text(&beside).contains("schema: already at version 7"),
        "{}",
        text(&beside)
    );
    rt.block_on(async {
        let client = client(&pg).await;
        let rows = client
            .query("SELECT version FROM pushgate_schema", &[])
            .await
            .unwrap();
        assert_eq!(
            rows.iter().map(|r| r.get::<_, i32>(0)).collect::<Vec<_>>(),
            [7],
            "one schema row"
        );
        gateway::spool::Spool::close(&gateway).await.unwrap();
    });
}

/// `config check` reaches the database as the gateway would: one that cannot be reached is a
/// problem of the file (exit 2), named without the URL.
#[test]
fn config_check_names_a_database_it_cannot_reach() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pg-url"),
        "postgres://gw:hunter2@/push?host=/nonexistent-socket-dir&port=1&sslmode=disable",
    )
    .unwrap();
    let config = dir.path().join("pushgate.toml");
    std::fs::write(&config, "[storage]\npostgres_url_file = \"pg-url\"\n").unwrap();
    let check = run(Command::new(env!("CARGO_BIN_EXE_pushgate"))
        .args(["config", "check"])
        .arg(&config));
    let out = text(&check);
    assert_eq!(check.status.code(), Some(2), "{out}");
    assert!(out.contains("storage: cannot reach the database"), "{out}");
    assert!(
        out.contains("/nonexistent-socket-dir:1/push") && !out.contains("hunter2"),
        "{out}"
    );
}

/// `db copy --from-sqlite`: what a SQLite spool holds not yet final — queued, scheduled and
/// retrying notifications with their requests — and its dead tokens arrive in PostgreSQL as
/// they stood; finished ones stay behind; a second run copies nothing twice; a file a gateway
/// holds is refused.
#[test]
fn db_copy_from_sqlite_moves_what_is_pending_once() {
    use gateway::spool::{Completion, DeadToken, Spool, SpoolOptions, State, Store};
    use std::time::{Duration, SystemTime};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Some(pg) = rt.block_on(gateway::local_postgres::database()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("old.db");
    let request = |first: u64, n: u64| gateway::spool::NewRequest {
        submitted: None,
        app: "shop".to_owned(),
        payload: bytes::Bytes::from_static(br#"{"aps":{"alert":"hi"}}"#),
        push_type: apns::PushType::Alert,
        priority: None,
        topic: Some(apns::Topic::parse("com.example.shop").unwrap()),
        collapse_id: None,
        apns_expiration: None,
        send_at: None,
        expires_at: SystemTime::now() + Duration::from_secs(86_400),
        notifications: (first..first + n)
            .map(|i| (apns::ApnsId::new(), apns_mock::testing::token(i)))
            .collect(),
        bounce: None,
        supersede: None,
    };
    let queued = request(0, 10);
    let mut scheduled = request(100, 3);
    scheduled.send_at = Some(SystemTime::now() + Duration::from_secs(3_600));
    let ids: Vec<_> = queued.notifications.iter().map(|(id, _)| *id).collect();
    let later = scheduled.notifications[0].0;
    let dead = apns_mock::testing::token(999);
    rt.block_on(async {
        let spool = Store::sqlite(&file, SpoolOptions::default()).unwrap();
        spool.enqueue(vec![queued, scheduled]).await.unwrap();
        // Four delivered (they stay behind), one retrying (it comes along, as it stands, with
        // the attempt it was retried after).
        let mut done: Vec<_> = ids[..4]
            .iter()
            .map(|id| Completion {
                id: *id,
                state: State::Delivered,
                attempts: 1,
                status: Some(200),
                reason: None,
                due_at: None,
                conn: None,
            })
            .collect();
        done.push(Completion {
            id: ids[4],
            state: State::Queued,
            attempts: 2,
            status: Some(503),
            reason: Some(apns::Reason::ServiceUnavailable.into()),
            due_at: Some(SystemTime::now() + Duration::from_secs(60)),
            conn: Some(5),
        });
        let gone = DeadToken {
            app: "shop".to_owned(),
            token: dead.clone(),
            reason: apns::Reason::Unregistered,
            since: SystemTime::now(),
        };
        spool.complete(done, vec![gone]).await.unwrap();
        // Held by a "gateway" while the first copy is tried: refused.
        std::fs::write(dir.path().join("pg-url"), pg.url.expose()).unwrap();
        let config = dir.path().join("pushgate.toml");
        std::fs::write(&config, "[storage]\npostgres_url_file = \"pg-url\"\n").unwrap();
        let refused = copy(&file, &config);
        assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
        assert!(
            text(&refused).contains("another gateway uses the spool"),
            "{}",
            text(&refused)
        );
        spool.close().await.unwrap();
    });
    let config = dir.path().join("pushgate.toml");
    let first = copy(&file, &config);
    assert!(first.status.success(), "{}", text(&first));
    assert!(
        text(&first).contains("copied 2 requests (9 notifications) and 1 dead tokens"),
        "{}",
        text(&first)
    );
    // The file is marked copied: a second run does nothing, and no gateway serves it again
    // (its notifications would be sent twice).
    let again = copy(&file, &config);
    assert!(again.status.success(), "{}", text(&again));
    assert!(
        text(&again).contains("was copied before, to") && text(&again).contains("nothing to do"),
        "{}",
        text(&again)
    );
    let serve_again = Store::sqlite(&file, SpoolOptions::default()).map(drop);
    assert!(
        serve_again
            .as_ref()
            .is_err_and(|e| e.to_string().contains("was copied to PostgreSQL")),
        "{serve_again:?}"
    );
    rt.block_on(async {
        let spool = Store::postgres(&pg, SpoolOptions::default()).await.unwrap();
        assert_eq!(spool.pending(), 9);
        assert_eq!(
            spool.get(ids[0]).await.unwrap(),
            None,
            "delivered ones stay behind"
        );
        let retrying = spool.get(ids[4]).await.unwrap().unwrap();
        assert_eq!(
            (
                retrying.state,
                retrying.attempts,
                retrying.status,
                retrying.conn
            ),
            (State::Queued, 2, Some(503), Some(5))
        );
        let history = spool.attempts(ids[4]).await.unwrap();
        assert_eq!(
            history
                .iter()
                .map(|a| (a.status, a.conn))
                .collect::<Vec<_>>(),
            vec![(Some(503), Some(5))],
            "its history comes along"
        );
        assert_eq!(
            spool.get(ids[9]).await.unwrap().unwrap().state,
            State::Queued
        );
        let s = spool.get(later).await.unwrap().unwrap();
        assert_eq!(s.state, State::Scheduled);
        assert!(s.send_at.is_some());
        assert!(spool.dead_token("shop", &dead).await.unwrap().is_some());
        spool.close().await.unwrap();
    });
}

fn copy(file: &Path, config: &Path) -> Output {
    run(Command::new(env!("CARGO_BIN_EXE_pushgate"))
        .args(["db", "copy", "--from-sqlite"])
        .arg(file)
        .arg("--config")
        .arg(config))
}
