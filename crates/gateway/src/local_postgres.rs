//! A private PostgreSQL server on this machine, from Debian's `postgresql` package, for the
//! tests of every crate and for `pushgate bench --storage postgres`: one shared server per
//! process (started on first use, in a temporary folder, reached through a Unix socket there)
//! with one database per test, or a server of the caller's own that it may stop and start
//! again. Never a stand-in: the PostgreSQL spool is tested against PostgreSQL. Not for
//! production: its data lives in a temporary folder and `fsync` is off.
//!
//! As root (CI), the server runs as the `postgres` user (initdb refuses root) through
//! setpriv(1), which also has the kernel stop it when this process ends. Without the package
//! the tests that need it are skipped, except under `CI=true`, where they fail.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test and bench support: a failure here is the caller's, and says so"
)]

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::Duration;

use crate::config::{Postgres, Secret};

/// A running PostgreSQL of these tests; stopped when dropped.
#[derive(Debug)]
pub struct Server {
    /// Names the socket (`.s.PGSQL.<port>`); the server listens on no TCP port, so nothing
    /// else can take its address while it is stopped.
    port: u16,
    sock: PathBuf,
    dir: tempfile::TempDir,
    /// Asks the thread that owns the server's process to start it (again).
    start: mpsc::SyncSender<mpsc::SyncSender<Child>>,
    child: Mutex<Option<Child>>,
}

static SHARED: OnceLock<Option<Server>> = OnceLock::new();
static NEXT_DB: AtomicU32 = AtomicU32::new(0);
static NEXT_SERVER: AtomicU32 = AtomicU32::new(0);

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
        // Each folder names the process it belongs to; only a dead one's is removed (a folder
        // being set up by a live process, this one included, is never touched).
        let owner = std::fs::read_to_string(path.join(OWNER_FILE))
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok());
        let alive = owner.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
        if ours && owner.is_some() && !alive {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

/// In each server's folder: the id of the process it belongs to.
const OWNER_FILE: &str = "owner";

impl Server {
    /// A server of the caller's own (initialised, started, listening); `None` when PostgreSQL
    /// is not installed (outside CI).
    pub fn private() -> Option<Server> {
        let bin = installed()?;
        Some(Server::launch(&bin))
    }

    fn launch(bin: &Path) -> Server {
        let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
        remove_stale_dirs();
        let dir = tempfile::Builder::new()
            .prefix(DIR_PREFIX)
            .tempdir()
            .unwrap();
        std::fs::write(dir.path().join(OWNER_FILE), std::process::id().to_string()).unwrap();
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
        // Only names the socket file: any number will do, one per server in this process.
        let port = 50_000 + (NEXT_SERVER.fetch_add(1, Ordering::Relaxed) % 10_000) as u16;
        // The server is the child of a thread that lives as long as this process: the kernel
        // stops it (setpriv's pdeathsig) when the thread that started it ends, which must not
        // be a pool thread that idles out. The thread starts it again when asked.
        let (start, starts) = mpsc::sync_channel::<mpsc::SyncSender<Child>>(1);
        let postgres = bin.join("postgres");
        let log = dir.path().join("server.log");
        std::thread::Builder::new()
            .name("postgres-parent".into())
            .spawn(move || {
                while let Ok(reply) = starts.recv() {
                    // fsync off: what a test writes reaches the OS, which is all an immediate
                    // shutdown of the server (not of the machine) needs; commits stay
                    // synchronous.
                    let child = as_server_user(&postgres, root)
                        .arg("-D")
                        .arg(&data)
                        .args(["-p", &port.to_string(), "-k"])
                        .arg(&sock)
                        .args([
                            "-c",
                            "listen_addresses=",
                            "-c",
                            "fsync=off",
                            "-c",
                            "max_connections=300",
                        ])
                        .stdout(Stdio::null())
                        .stderr(
                            std::fs::OpenOptions::new()
                                .create(true)
                                .append(true)
                                .open(&log)
                                .unwrap(),
                        )
                        .spawn()
                        .unwrap();
                    let _ = reply.send(child);
                }
                // Every sender gone: nothing will ask again, but the server must outlive us.
                loop {
                    std::thread::park();
                }
            })
            .unwrap();
        let server = Server {
            port,
            sock: dir.path().join("sock"),
            dir,
            start,
            child: Mutex::new(None),
        };
        server.start_again();
        server
    }

    /// The server's process (the postmaster; its backends are its children).
    pub fn pid(&self) -> Option<u32> {
        self.child.lock().ok()?.as_ref().map(Child::id)
    }

    /// Starts the server (after [`Server::stop_immediately`]) and waits until it listens.
    pub fn start_again(&self) {
        let (reply, child) = mpsc::sync_channel(1);
        self.start.send(reply).unwrap();
        let mut child = child.recv().unwrap();
        let log =
            || std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let socket = self.sock.join(format!(".s.PGSQL.{}", self.port));
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
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
        *self.child.lock().unwrap() = Some(child);
    }

    /// Stops the server as a crash would (`SIGQUIT`: an immediate shutdown, recovery from the
    /// WAL at the next start) and waits until it is gone.
    pub fn stop_immediately(&self) {
        let mut child = self.child.lock().unwrap().take().expect("running");
        let killed = Command::new("kill")
            .args(["-QUIT", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        child.wait().unwrap();
    }

    /// A fresh, empty database on this server, as the gateway's configuration names it.
    pub async fn database(&self) -> Postgres {
        let (port, sock) = (self.port, self.sock.display());
        let name = format!(
            "t{}_{}",
            std::process::id(),
            NEXT_DB.fetch_add(1, Ordering::Relaxed)
        );
        let admin = format!("postgres://pushgate@/postgres?host={sock}&port={port}");
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
        let url = format!("postgres://pushgate@/{name}?host={sock}&port={port}&sslmode=disable");
        Postgres {
            url: Secret::new(url),
            target: format!("{sock}:{port}/{name}"),
            pool_size: 8,
            statement_timeout: Duration::from_secs(30),
            heartbeat: Duration::from_secs(5),
            lease: Duration::from_secs(30),
            ca_file: None,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.lock().map(|mut c| c.take()).ok().flatten() {
            let _ = Command::new("kill")
                .args(["-QUIT", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}

/// The installed PostgreSQL's programs; `None` (a skip) without them, a failure under CI.
fn installed() -> Option<PathBuf> {
    let bin = bin_dir();
    if bin.is_none() {
        not_installed("PostgreSQL", "postgresql");
    }
    bin
}

/// A test server's programs are missing: a failure under `CI=true` (a missing install step must
/// not pass unseen), a skip elsewhere, said on stderr.
pub(crate) fn not_installed(what: &str, package: &str) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{what} is not installed (apt-get install {package}): under CI=true its tests fail"
    );
    eprintln!("skipped: {what} is not installed (apt-get install {package})");
}

/// A fresh, empty database on the shared test server; `None` when PostgreSQL is not installed
/// (outside CI).
pub async fn database() -> Option<Postgres> {
    let server = tokio::task::spawn_blocking(|| {
        SHARED
            .get_or_init(|| installed().map(|bin| Server::launch(&bin)))
            .is_some()
    })
    .await
    .unwrap();
    match (server, SHARED.get()) {
        (true, Some(Some(s))) => Some(s.database().await),
        _ => None,
    }
}
