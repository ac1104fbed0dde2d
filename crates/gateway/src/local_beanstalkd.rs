//! A private beanstalkd on a free loopback port, from Debian's `beanstalkd` package, for the
//! tests and `pushgate bench --beanstalkd`: started in milliseconds, optionally with a binlog
//! (`-b`) so that a restart keeps its jobs, killed when dropped (and, through setpriv's
//! pdeathsig, when the thread that started it ends). Without the package its tests are
//! skipped, except under `CI=true`, where they fail.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test and bench support: a failure here is the caller's, and says so"
)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A running beanstalkd. Start it on the thread that uses it (a test's own thread): the
/// kernel stops it when that thread ends.
#[derive(Debug)]
pub struct Server {
    /// `127.0.0.1:<port>`.
    pub addr: String,
    port: u16,
    binlog: Option<PathBuf>,
    child: Mutex<Option<Child>>,
}

/// The installed `beanstalkd`, or `None` (a skip) without it; under `CI=true`, a failure.
fn installed() -> Option<PathBuf> {
    let found = ["/usr/bin/beanstalkd", "/usr/local/bin/beanstalkd"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    if found.is_none() {
        crate::local_postgres::not_installed("beanstalkd", "beanstalkd");
    }
    found
}

impl Server {
    /// A server without a binlog (its jobs go with it).
    pub fn start() -> Option<Server> {
        Server::launch(None)
    }

    /// A server that keeps its jobs in `dir` across a restart.
    pub fn with_binlog(dir: &Path) -> Option<Server> {
        Server::launch(Some(dir.to_owned()))
    }

    fn launch(binlog: Option<PathBuf>) -> Option<Server> {
        installed()?;
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let server = Server {
                addr: format!("127.0.0.1:{port}"),
                port,
                binlog: binlog.clone(),
                child: Mutex::new(None),
            };
            if server.run() {
                return Some(server);
            }
        }
        panic!("beanstalkd did not start on a free port in five tries");
    }

    /// Starts the process and waits until it takes connections; `false` if it exited (its
    /// port was taken meanwhile).
    fn run(&self) -> bool {
        let bin = installed().unwrap();
        let mut c = Command::new("setpriv");
        c.args(["--pdeathsig", "KILL"]).arg(bin);
        c.args(["-l", "127.0.0.1", "-p", &self.port.to_string()]);
        if let Some(dir) = &self.binlog {
            std::fs::create_dir_all(dir).unwrap();
            c.arg("-b").arg(dir);
        }
        let mut child = c
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("setpriv (util-linux) runs beanstalkd");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if std::net::TcpStream::connect(&self.addr).is_ok() {
                *self.child.lock().unwrap() = Some(child);
                return true;
            }
            if child.try_wait().unwrap().is_some() {
                return false;
            }
            assert!(
                Instant::now() < deadline,
                "beanstalkd did not take connections within 10 s"
            );
            // A poll interval while a process starts, not a synchronisation.
            #[allow(clippy::disallowed_methods, reason = "a poll interval")]
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Freezes it (SIGSTOP): connections stay open, nothing is answered — a server that hangs.
    pub fn freeze(&self) {
        if let Some(c) = self.child.lock().unwrap().as_ref() {
            let ok = Command::new("kill")
                .args(["-STOP", &c.id().to_string()])
                .status()
                .unwrap();
            assert!(ok.success(), "kill -STOP beanstalkd");
        }
    }

    /// Kills it (SIGKILL) and waits until it is gone.
    pub fn kill(&self) {
        if let Some(mut c) = self.child.lock().unwrap().take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port (and binlog, if it has one).
    pub fn start_again(&self) {
        assert!(
            self.run(),
            "beanstalkd did not start again on port {}",
            self.port
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}
