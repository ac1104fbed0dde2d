//! The delivery log (`[log]`, Momentum's apn_logger): one JSON line per final outcome (and per
//! attempt with `per_attempt`), a heartbeat line every `heartbeat_s`, rotation by size and at
//! each UTC day, the file created with `mode`.
//!
//! A dedicated thread owns the file; events reach it through a bounded channel with
//! `try_send`, so a full disk or a stalled file costs lines (counted in
//! `pushgate_delivery_log_dropped_total` and in the heartbeat), never delivery time.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant, SystemTime};

use apns::clock::{Clock, SystemClock};
use tracing::warn;

use super::Event;
use crate::config::Log;
use crate::rfc3339;

/// Tunables.
#[derive(Debug, Clone)]
pub struct Options {
    /// Lines waiting for the writer; beyond this they are dropped.
    pub queue: usize,
    /// The clock that dates lines and decides daily rotation.
    pub clock: Arc<dyn Clock>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            queue: 65_536,
            clock: Arc::new(SystemClock),
        }
    }
}

/// Counters shared with the writer thread.
#[derive(Debug, Default)]
pub struct Counts {
    pub written: AtomicU64,
    pub dropped: AtomicU64,
}

/// A running delivery log.
#[derive(Debug)]
pub struct DeliveryLog {
    tx: std::sync::Mutex<Option<SyncSender<Event>>>,
    per_attempt: bool,
    counts: Arc<Counts>,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl DeliveryLog {
    /// Starts the writer thread for `config` (whose `file` is set).
    pub fn start(config: &Log, options: Options) -> DeliveryLog {
        let (tx, rx) = sync_channel(options.queue);
        let counts = Arc::new(Counts::default());
        let writer = Writer {
            path: config.file.clone().unwrap_or_default(),
            mode: config.mode,
            max_bytes: config.max_bytes,
            clock: options.clock,
            counts: Arc::clone(&counts),
            out: None,
            failing_since: None,
        };
        let heartbeat = config.heartbeat;
        let thread = std::thread::Builder::new()
            .name("pushgate-delivery-log".into())
            .spawn(move || writer.run(&rx, heartbeat))
            .ok();
        DeliveryLog {
            tx: std::sync::Mutex::new(Some(tx)),
            per_attempt: config.per_attempt,
            counts,
            thread: std::sync::Mutex::new(thread),
        }
    }

    pub fn per_attempt(&self) -> bool {
        self.per_attempt
    }

    pub fn counts(&self) -> &Counts {
        &self.counts
    }

    /// Queues a line for `event`; never waits.
    pub fn offer(&self, event: &Event) {
        let sent = match &*self.tx.lock().expect("log sender lock") {
            Some(tx) => match tx.try_send(event.clone()) {
                Ok(()) => true,
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
            },
            None => false,
        };
        if !sent {
            self.counts.dropped.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("pushgate_delivery_log_dropped_total").increment(1);
        }
    }

    /// Stops taking lines, and waits up to `within` for the writer to write what it holds.
    pub async fn close(&self, within: Duration) {
        self.tx.lock().expect("log sender lock").take();
        let thread = self.thread.lock().expect("log thread lock").take();
        if let Some(t) = thread {
            let joined = tokio::task::spawn_blocking(move || t.join());
            if tokio::time::timeout(within, joined).await.is_err() {
                warn!("the delivery log is still writing at shutdown; its last lines may be lost");
            }
        }
    }
}

impl Drop for DeliveryLog {
    fn drop(&mut self) {
        // The writer drains what it holds and ends on its own; nothing waits for it here.
        self.tx.lock().map(|mut t| t.take()).ok();
    }
}

/// The open file.
struct Output {
    file: BufWriter<File>,
    size: u64,
    /// The UTC day it was opened on.
    day: time::Date,
}

struct Writer {
    path: PathBuf,
    mode: u32,
    max_bytes: u64,
    clock: Arc<dyn Clock>,
    counts: Arc<Counts>,
    out: Option<Output>,
    /// Set while the file cannot be written; reopening is tried at most once a second.
    failing_since: Option<Instant>,
}

fn day_of(t: SystemTime) -> time::Date {
    time::OffsetDateTime::from(t).date()
}

impl Writer {
    fn run(mut self, rx: &Receiver<Event>, heartbeat: Duration) {
        let mut next_beat = Instant::now() + heartbeat;
        loop {
            let wait = next_beat.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok(event) => {
                    self.line(&event);
                    // Whatever else is waiting goes out before one flush.
                    for event in rx.try_iter().take(4096) {
                        self.line(&event);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.heartbeat();
                    next_beat = Instant::now() + heartbeat;
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.flush();
                    return;
                }
            }
            self.flush();
        }
    }

    fn line(&mut self, event: &Event) {
        let Event::Outcome(o) = event else {
            return;
        };
        let ms =
            o.id.created_at()
                .and_then(|a| o.time.duration_since(a).ok())
                .map_or(0, |d| d.as_millis() as u64);
        let line = LogLine {
            time: rfc3339::format(o.time),
            id: o.id.to_string(),
            app: &o.app,
            token: o.token.as_str(),
            status: o.state.as_str(),
            is_final: o.state.is_final(),
            code: o.status,
            reason: o.reason.as_deref(),
            attempts: o.attempts,
            ms,
        };
        if self.write(&serde_json::to_string(&line).expect("a log line serialises")) {
            self.counts.written.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("pushgate_delivery_log_lines_total").increment(1);
        } else {
            self.counts.dropped.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("pushgate_delivery_log_dropped_total").increment(1);
        }
    }

    fn heartbeat(&mut self) {
        let line = Heartbeat {
            time: rfc3339::format(self.clock.now()),
            heartbeat: true,
            written: self.counts.written.load(Ordering::Relaxed),
            dropped: self.counts.dropped.load(Ordering::Relaxed),
        };
        self.write(&serde_json::to_string(&line).expect("a heartbeat serialises"));
    }

    /// Writes one line, rotating first if the file is full or from another day. False if the
    /// line could not be written.
    fn write(&mut self, line: &str) -> bool {
        let now = self.clock.now();
        let rotate = self
            .out
            .as_ref()
            .is_some_and(|o| o.size >= self.max_bytes || o.day != day_of(now));
        if rotate {
            self.rotate(now);
        }
        if self.out.is_none() && !self.reopen(now) {
            return false;
        }
        let Some(out) = self.out.as_mut() else {
            return false;
        };
        match out
            .file
            .write_all(line.as_bytes())
            .and_then(|()| out.file.write_all(b"\n"))
        {
            Ok(()) => {
                out.size += line.len() as u64 + 1;
                true
            }
            Err(e) => {
                self.fail(&e);
                false
            }
        }
    }

    fn flush(&mut self) {
        if let Some(out) = self.out.as_mut()
            && let Err(e) = out.file.flush()
        {
            self.fail(&e);
        }
    }

    fn fail(&mut self, e: &std::io::Error) {
        if self.failing_since.is_none() {
            warn!(file = %self.path.display(), error = %e, "the delivery log cannot be written; lines are dropped until it can");
        }
        self.failing_since = Some(Instant::now());
        self.out = None;
    }

    fn reopen(&mut self, now: SystemTime) -> bool {
        if self
            .failing_since
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return false;
        }
        match open(&self.path, self.mode) {
            Ok((file, size)) => {
                self.out = Some(Output {
                    file: BufWriter::with_capacity(64 * 1024, file),
                    size,
                    day: day_of(now),
                });
                self.failing_since = None;
                true
            }
            Err(e) => {
                self.fail(&e);
                false
            }
        }
    }

    /// Closes the file and renames it `<file>.<UTC time of rotation>`.
    fn rotate(&mut self, now: SystemTime) {
        self.flush();
        self.out = None;
        let t = time::OffsetDateTime::from(now);
        let stamp = format!(
            "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        );
        let mut target = PathBuf::from(format!("{}.{stamp}", self.path.display()));
        let mut n = 1;
        while target.exists() {
            target = PathBuf::from(format!("{}.{stamp}-{n}", self.path.display()));
            n += 1;
        }
        if let Err(e) = std::fs::rename(&self.path, &target) {
            warn!(file = %self.path.display(), error = %e, "rotating the delivery log failed; it keeps growing");
        }
    }
}

/// Opens (creating with `mode`) for appending; returns the file and its size. The mode is given
/// to a file this creates only: one that exists keeps whatever an operator gave it.
fn open(path: &Path, mode: u32) -> std::io::Result<(File, u64)> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let created = !path.exists();
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(mode)
        .open(path)?;
    let meta = file.metadata()?;
    // The umask may have narrowed the mode at creation.
    if created && meta.permissions().mode() & 0o7777 != mode {
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
    }
    Ok((file, meta.len()))
}

/// One line of the delivery log (docs/momentum.md documents it).
#[derive(serde::Serialize)]
struct LogLine<'a> {
    time: String,
    id: String,
    app: &'a str,
    token: &'a str,
    /// The notification's state after this attempt.
    status: &'static str,
    #[serde(rename = "final")]
    is_final: bool,
    /// Apple's HTTP status, when Apple answered.
    code: Option<u16>,
    reason: Option<&'a str>,
    attempts: u32,
    /// From acceptance to this outcome.
    ms: u64,
}

/// The line written every `heartbeat_s`, so a reader can tell a quiet gateway from a stuck one.
#[derive(serde::Serialize)]
struct Heartbeat {
    time: String,
    heartbeat: bool,
    written: u64,
    dropped: u64,
}
