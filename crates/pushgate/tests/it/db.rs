use std::path::Path;
use std::process::{Command, Output};

use crate::harness::run;

fn pushgate(args: &[&str], config: &Path) -> Output {
    run(Command::new(env!("CARGO_BIN_EXE_pushgate"))
        .args(args)
        .arg("--config")
        .arg(config))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

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
        text(&created).contains("schema: created at version 3"),
        "{}",
        text(&created)
    );
    let again = pushgate(&["db", "migrate"], &config);
    assert!(
        text(&again).contains("schema: already at version 3"),
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
        text(&created).contains("schema: created at version 1"),
        "{}",
        text(&created)
    );
    let again = pushgate(&["db", "migrate"], &config);
    assert!(
        text(&again).contains("schema: already at version 1"),
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
            && text(&check).contains("schema version 1 (this pushgate: 1)"),
        "config check reaches the database: {}",
        text(&check)
    );

    // A database a newer pushgate migrated is refused, by status and by migrate.
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(pg.url.expose(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
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
    assert!(
        text(&refused).contains("schema version 99"),
        "{}",
        text(&refused)
    );
    for o in [&before, &created, &again, &check, &newer, &refused] {
        assert!(!text(o).contains("hunter2"), "{}", text(o));
    }
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
