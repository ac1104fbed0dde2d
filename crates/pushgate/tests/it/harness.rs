use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

/// The folder of test credentials (`apns_mock::testing`).
pub fn fixtures() -> PathBuf {
    PathBuf::from(apns_mock::testing::FIXTURES)
}

/// A running `pushgate mock-apns`; killed on drop.
pub struct Sim {
    child: Child,
    pub endpoint: String,
    pub stats: String,
    pub ca: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the simulator on free ports with `args` added, and waits for its two address lines.
pub fn start_sim(args: &[&str]) -> Sim {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    let mut child = Command::new(env!("CARGO_BIN_EXE_pushgate"))
        .args([
            "mock-apns",
            "--listen",
            "127.0.0.1:0",
            "--stats",
            "127.0.0.1:0",
            "--ca-out",
        ])
        .arg(&ca)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = |prefix: &str| {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("mock-apns exited before printing {prefix:?}"))
            .unwrap();
        line.strip_prefix(prefix)
            .unwrap_or_else(|| panic!("expected {prefix:?}, got {line:?}"))
            .to_owned()
    };
    let endpoint = next("mock-apns listening on ");
    let stats = next("mock-apns stats on ");
    Sim {
        child,
        endpoint,
        stats,
        ca,
        _dir: dir,
    }
}

/// Runs a command, panicking with its stderr if it cannot start.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| {
        panic!("cannot run {cmd:?}: {e} (is it installed? .ci/run installs it)")
    })
}

/// An HTTP/2 request with curl: returns status, body and response headers.
pub fn curl(sim: &Sim, path: &str, args: &[&str]) -> (u16, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let headers = dir.path().join("headers");
    let out = run(Command::new("curl")
        .args(["-s", "--http2", "--cacert"])
        .arg(&sim.ca)
        .arg("-D")
        .arg(&headers)
        .args(["-w", "\n%{http_code}"])
        .args(args)
        .arg(format!("{}{path}", sim.endpoint)));
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, status) = text.rsplit_once('\n').unwrap();
    let headers = std::fs::read_to_string(headers).unwrap_or_default();
    (status.trim().parse().unwrap(), body.to_owned(), headers)
}

/// `GET /stats` of the simulator, through curl over plain HTTP.
pub fn stats(sim: &Sim) -> serde_json::Value {
    let out = run(Command::new("curl").args(["-sf", &format!("{}/stats", sim.stats)]));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A process's stdout and stderr, as one text (for assertions' messages and matching).
pub fn output_text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
