//! A private PostgreSQL server for the tests of every crate, from Debian's `postgresql` package: one server
//! per test binary (started on first use, on a free loopback port, in a temporary folder), one
//! database per test. Never a stand-in: the PostgreSQL spool is tested against PostgreSQL.
//!
//! As root (CI), the server runs as the `postgres` user (initdb refuses root) through
//! setpriv(1), which also asks the kernel to stop it when this process ends. Without the
//! package the tests that need it are skipped, except under `CI=true`, where they fail.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use crate::config::{Postgres, Secret};

struct Server {
    port: u16,
    _dir: tempfile::TempDir,
    _child: Mutex<Child>,
}

static SERVER: OnceLock<Option<Server>> = OnceLock::new();
static NEXT_DB: AtomicU32 = AtomicU32::new(0);

/// The folder of the newest installed PostgreSQL's programs.
fn bin_dir() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| Some(e.ok()?.path().join("bin")))
        .filter(|d| d.join("initdb").exists())
        .collect();
    dirs.sort_by_key(|d| {
        d.parent()
            .and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok())
            .unwrap_or(0)
    });
    dirs.pop()
}

/// Runs `program` as the server's user (`postgres` when we are root, ourselves otherwise),
/// through setpriv(1), which also has the kernel stop it when the thread that started it ends.
fn as_server_user(program: &Path, root: bool) -> Command {
    let mut c = Command::new("setpriv");
    c.args(["--pdeathsig", "TERM"]);
    if root {
        c.args([
            "--reuid",
            "postgres",
            "--regid",
            "postgres",
            "--init-groups",
        ]);
    }
    c.arg(program);
    c
}

/// The folders of servers of earlier runs (stopped with their test process) are removed.
const DIR_PREFIX: &str = "pushgate-pg-";

fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let ours = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(DIR_PREFIX));
        // A server still running keeps its pid file; its test process is alive.
        if ours && !path.join("data/postmaster.pid").exists() {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

fn start() -> Option<Server> {
    let Some(bin) = bin_dir() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "PostgreSQL is not installed (apt-get install postgresql): under CI=true its tests fail"
        );
        eprintln!("skipped: PostgreSQL is not installed (apt-get install postgresql)");
        return None;
    };
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    remove_stale_dirs();
    let dir = tempfile::Builder::new()
        .prefix(DIR_PREFIX)
        .tempdir()
        .unwrap();
    let (data, sock) = (dir.path().join("data"), dir.path().join("sock"));
    std::fs::create_dir(&sock).unwrap();
    if root {
        let id = |flag| {
            let out = Command::new("id")
                .args([flag, "postgres"])
                .output()
                .unwrap();
            String::from_utf8(out.stdout)
                .unwrap()
                .trim()
                .parse::<u32>()
                .unwrap_or_else(|_| {
                    panic!("as root the server runs as the user postgres, which does not exist (Debian's postgresql package makes it)")
                })
        };
        let (uid, gid) = (id("-u"), id("-g"));
        for p in [dir.path(), &sock] {
            std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap();
        }
    }
    let init = as_server_user(&bin.join("initdb"), root)
        .args(["-D"])
        .arg(&data)
        .args(["-A", "trust", "-U", "pushgate", "-E", "UTF8", "--no-sync"])
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "initdb: {}",
        String::from_utf8_lossy(&init.stderr)
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // The server is the child of a thread that lives as long as this process: the kernel
    // stops it (setpriv's pdeathsig) when the thread that started it ends, which must not be a
    // pool thread that idles out.
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let postgres = bin.join("postgres");
    let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
    let log_path = dir.path().join("server.log");
    std::thread::Builder::new()
        .name("postgres-parent".into())
        .spawn(move || {
            // fsync off: what a test writes reaches the OS, which is all an immediate shutdown
            // of the server (not of the machine) needs; commits stay synchronous.
            let child = as_server_user(&postgres, root)
                .arg("-D")
                .arg(&data)
                .args(["-p", &port.to_string(), "-k"])
                .arg(&sock)
                .args([
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "fsync=off",
                    "-c",
                    "max_connections=300",
                ])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap();
            tx.send(child).unwrap();
            loop {
                std::thread::park();
            }
        })
        .unwrap();
    let mut child = rx.recv().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
        if let Ok(Some(status)) = child.try_wait() {
            panic!("PostgreSQL exited ({status}) at start-up:\n{}", log());
        }
        assert!(
            std::time::Instant::now() < deadline,
            "PostgreSQL did not listen within 30 s:\n{}",
            log()
        );
        // A poll interval on a plain thread (no runtime here), not a synchronisation.
        #[allow(clippy::disallowed_methods, reason = "a poll interval")]
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(Server {
        port,
        _dir: dir,
        _child: Mutex::new(child),
    })
}

/// A fresh, empty database on the test server, as the gateway's configuration names it; `None`
/// when PostgreSQL is not installed (outside CI).
pub async fn database() -> Option<Postgres> {
    let port = tokio::task::spawn_blocking(|| SERVER.get_or_init(start).as_ref().map(|s| s.port))
        .await
        .unwrap()?;
    let name = format!(
        "t{}_{}",
        std::process::id(),
        NEXT_DB.fetch_add(1, Ordering::Relaxed)
    );
    let admin = format!("postgres://pushgate@127.0.0.1:{port}/postgres");
    // The server may still be finishing its start-up: try for a while.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let (client, conn) = loop {
        match tokio_postgres::connect(&admin, tokio_postgres::NoTls).await {
            Ok(c) => break c,
            Err(e) => {
                assert!(tokio::time::Instant::now() < deadline, "connecting: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    tokio::spawn(conn);
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let url = format!("postgres://pushgate@127.0.0.1:{port}/{name}?sslmode=disable");
    Some(Postgres {
        url: Secret::new(url),
        target: format!("127.0.0.1:{port}/{name}"),
        pool_size: 8,
        statement_timeout: Duration::from_secs(30),
        ca_file: None,
    })
}
