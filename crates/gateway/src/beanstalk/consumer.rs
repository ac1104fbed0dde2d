//! The reserving connections of one `[[beanstalkd]]` and what happens to each job.
//!
//! A connection reserves jobs and hands each to a task of its own, which turns it into a
//! notification and submits it; many are in flight at once, so the spool commits them in
//! groups. Only the connection that reserved a job may delete, release, bury or touch it, so
//! the tasks send their verdicts back, and the connection sends them between reserves, several
//! in one write. The job is deleted only after the commit ("ack after commit"); a crash before
//! the delete gives the job back to the queue at once, and its idempotency key — the server,
//! the job's id and its body's SHA-256 — makes its second reservation a replay, deleted without
//! a second notification.
//!
//! A reserve waits at most a second while nothing is held (so a shutdown is noticed), and not
//! at all while jobs are held: then the connection waits for their verdicts instead, touching
//! any held past half its TTR, and on `DEADLINE_SOON` touches them all.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::client::{ClientError, Conn};
use super::job;
use super::proto::{Command, Reply, stat};
use crate::auth::Caller;
use crate::config::{Beanstalkd, Config, Scope, Tube};
use crate::ingest::{Accepted, Intake, Submission};
use crate::spool::{IdempotencyKey, SubmitError};

/// Jobs one connection holds at most (reserved, not yet settled).
const MAX_HELD: usize = 512;
/// How long an idle reserve waits for a job.
const RESERVE_WAIT_S: u32 = 1;
/// How often held jobs are looked at for a touch while their verdicts are awaited.
const TOUCH_CHECK: Duration = Duration::from_millis(250);
/// The longest release delay while the spool cannot take a job (its delays double from 1 s with
/// each release: 1, 2, 4 ... 60).
const RELEASE_MAX_S: u32 = 60;
/// How long a stop waits for the verdicts of jobs held.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// The test-only failpoint (`PUSHGATE_FAILPOINT=beanstalkd-after-commit`): the process aborts
/// after a job's commit, before its delete — the crash the idempotency key is for.
const FAILPOINT: &str = "beanstalkd-after-commit";

/// What becomes of a reserved job.
#[derive(Debug)]
enum Verdict {
    /// Committed (or committed before: a replay): deleted.
    Delete { replayed: bool },
    /// The spool cannot take it now: back in the queue after `delay` seconds.
    Release { delay: u32 },
    /// Not a notification, or a poison job: buried, with why.
    Bury(String),
}

/// A job held by a connection.
#[derive(Debug)]
struct Held {
    tube: String,
    pri: u32,
    ttr: Duration,
    since: Instant,
}

/// What the connections of one server share.
struct Shared {
    server: String,
    tubes: HashMap<String, Tube>,
    max_reserves: u32,
    intake: Arc<Intake>,
    /// Connections that are down now; the server is reported while any is.
    down: AtomicUsize,
    failpoint: bool,
}

/// Starts `config.connections` reserving connections to `config.server`; they stop when `stop`
/// is cancelled (the tasks end once their held jobs are settled).
pub fn spawn(
    config: &Beanstalkd,
    intake: Arc<Intake>,
    stop: CancellationToken,
) -> Vec<JoinHandle<()>> {
    let shared = Arc::new(Shared {
        server: config.server.clone(),
        tubes: config
            .tubes
            .iter()
            .map(|t| (t.tube.clone(), t.clone()))
            .collect(),
        max_reserves: config.max_reserves,
        intake,
        down: AtomicUsize::new(0),
        failpoint: std::env::var("PUSHGATE_FAILPOINT").as_deref() == Ok(FAILPOINT),
    });
    info!(
        server = %config.server,
        tubes = ?config.tubes.iter().map(|t| t.tube.as_str()).collect::<Vec<_>>(),
        connections = config.connections,
        "consuming beanstalkd tubes"
    );
    (0..config.connections)
        .map(|_| tokio::spawn(connection(Arc::clone(&shared), stop.clone())))
        .collect()
}

/// One reserving connection, connected again (with backoff) whenever it fails.
async fn connection(shared: Arc<Shared>, stop: CancellationToken) {
    let mut retry = Duration::from_millis(200);
    let mut is_down = false;
    loop {
        let failed = match open(&shared).await {
            Ok(conn) => {
                if is_down {
                    is_down = false;
                    shared.up();
                }
                retry = Duration::from_millis(200);
                match serve(&shared, conn, &stop).await {
                    Ok(()) => return,
                    Err(e) => e,
                }
            }
            Err(e) => e,
        };
        if stop.is_cancelled() {
            return;
        }
        let why = crate::error_chain(&failed);
        warn!(server = %shared.server, error = %why, retry_in = ?retry, "beanstalkd connection failed");
        if !is_down {
            is_down = true;
            shared.down(&why);
        } else {
            shared.report(&why);
        }
        tokio::select! {
            () = tokio::time::sleep(retry) => {}
            () = stop.cancelled() => return,
        }
        retry = (retry * 2).min(Duration::from_secs(10));
    }
}

impl Shared {
    fn name(&self) -> String {
        format!("beanstalkd {}", self.server)
    }

    fn report(&self, why: &str) {
        self.intake
            .trouble(&self.name(), Some(format!("unreachable: {why}")));
    }

    fn down(&self, why: &str) {
        self.down.fetch_add(1, Ordering::AcqRel);
        self.report(why);
    }

    fn up(&self) {
        if self.down.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.intake.trouble(&self.name(), None);
            info!(server = %self.server, "beanstalkd reachable again");
        }
    }

    /// The caller a tube's jobs are submitted as: its `as_key`, or one that may use only its
    /// app.
    fn caller(&self, tube: &Tube, config: &Config) -> Caller {
        let key = tube
            .as_key
            .as_ref()
            .and_then(|k| config.api_keys.iter().find(|a| &a.name == k));
        match key {
            Some(k) => Caller {
                name: k.name.clone(),
                scope: k.scope.clone(),
                admin: k.admin,
            },
            None => Caller {
                name: format!("beanstalkd:{}", tube.tube),
                scope: Scope::Apps(vec![tube.app.clone()]),
                admin: false,
            },
        }
    }
}

/// The delay of a job's release when it was released `releases` times before.
fn release_delay(releases: u64) -> u32 {
    1u32.checked_shl(u32::try_from(releases).unwrap_or(u32::MAX))
        .unwrap_or(RELEASE_MAX_S)
        .min(RELEASE_MAX_S)
}

/// Connects, watches the tubes and ignores `default` unless it is one of them.
async fn open(shared: &Shared) -> Result<Conn, ClientError> {
    let mut conn = Conn::connect(&shared.server).await?;
    for tube in shared.tubes.keys() {
        conn.expect(Command::Watch(tube), "watch", "WATCHING")
            .await?;
    }
    if !shared.tubes.contains_key("default") {
        conn.expect(Command::Ignore("default"), "ignore default", "WATCHING")
            .await?;
    }
    Ok(conn)
}

/// Reserves and settles jobs until `stop`, then settles what it holds (within the grace).
async fn serve(
    shared: &Arc<Shared>,
    mut conn: Conn,
    stop: &CancellationToken,
) -> Result<(), ClientError> {
    let (verdicts, mut done) = mpsc::channel::<(u64, Verdict)>(MAX_HELD);
    let mut held: HashMap<u64, Held> = HashMap::new();
    // The last reserve found nothing: wait for verdicts before asking again.
    let mut idle = false;
    loop {
        let mut ready = Vec::new();
        while let Ok(v) = done.try_recv() {
            ready.push(v);
        }
        if !ready.is_empty() {
            settle(shared, &mut conn, &mut held, ready).await?;
            idle = false;
        }
        if stop.is_cancelled() {
            return finish(shared, &mut conn, &mut held, &mut done).await;
        }
        if held.len() >= MAX_HELD || (idle && !held.is_empty()) {
            tokio::select! {
                v = done.recv() => {
                    if let Some(v) = v {
                        settle(shared, &mut conn, &mut held, vec![v]).await?;
                    }
                    idle = false;
                }
                () = tokio::time::sleep(TOUCH_CHECK) => touch(&mut conn, &mut held, false).await?,
                () = stop.cancelled() => {}
            }
            continue;
        }
        let wait = if held.is_empty() { RESERVE_WAIT_S } else { 0 };
        match conn.call(Command::ReserveWithTimeout(wait)).await? {
            Reply::Reserved { id, body } => {
                idle = false;
                reserved(shared, &mut conn, &mut held, &verdicts, id, body).await?;
            }
            r if r.is("TIMED_OUT") => idle = true,
            r if r.is("DEADLINE_SOON") => {
                touch(&mut conn, &mut held, true).await?;
                idle = true;
            }
            other => {
                return Err(ClientError::Unexpected {
                    what: "reserve-with-timeout",
                    got: format!("{other:?}"),
                });
            }
        }
    }
}

/// A job just reserved: its stats (tube, priority, TTR, how often it was reserved), then a
/// task that submits it — or, for a poison job, a bury at once.
async fn reserved(
    shared: &Arc<Shared>,
    conn: &mut Conn,
    held: &mut HashMap<u64, Held>,
    verdicts: &mpsc::Sender<(u64, Verdict)>,
    id: u64,
    body: Bytes,
) -> Result<(), ClientError> {
    let yaml = match conn.call(Command::StatsJob(id)).await? {
        Reply::Ok(yaml) => yaml,
        // Gone already (deleted by someone else): nothing to do.
        r if r.is("NOT_FOUND") => return Ok(()),
        other => {
            return Err(ClientError::Unexpected {
                what: "stats-job",
                got: format!("{other:?}"),
            });
        }
    };
    let number = |key| {
        stat(&yaml, key)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let tube = stat(&yaml, "tube").unwrap_or_default().to_owned();
    let pri = u32::try_from(number("pri")).unwrap_or(u32::MAX);
    let ttr = Duration::from_secs(number("ttr").max(1));
    let releases = number("releases");
    let unreleased = number("reserves").saturating_sub(releases);
    held.insert(
        id,
        Held {
            tube: tube.clone(),
            pri,
            ttr,
            since: Instant::now(),
        },
    );
    if shared.max_reserves > 0 && unreleased > u64::from(shared.max_reserves) {
        let why = format!(
            "reserved {unreleased} times without being released (a crash or a timeout each time); max_reserves is {}",
            shared.max_reserves
        );
        // The channel has room for every job held.
        let _ = verdicts.try_send((id, Verdict::Bury(why)));
        return Ok(());
    }
    let Some(t) = shared.tubes.get(&tube).cloned() else {
        let _ = verdicts.try_send((
            id,
            Verdict::Bury(format!("tube {tube:?} is not configured")),
        ));
        return Ok(());
    };
    let (shared, verdicts) = (Arc::clone(shared), verdicts.clone());
    tokio::spawn(async move {
        let verdict = submit(&shared, id, &body, &t, releases).await;
        let _ = verdicts.send((id, verdict)).await;
    });
    Ok(())
}

/// The job as a notification, committed: its verdict.
async fn submit(shared: &Shared, id: u64, body: &[u8], tube: &Tube, releases: u64) -> Verdict {
    let config = shared.intake.config();
    let caller = shared.caller(tube, &config);
    let doc = match job::document(body, &tube.app) {
        Ok(d) => d,
        Err(why) => return Verdict::Bury(why),
    };
    let requests = match crate::ingest::json::parse(&doc, &caller, &config, SystemTime::now()) {
        Ok((requests, _)) => requests,
        Err(r) => return Verdict::Bury(r.message),
    };
    let mut key = IdempotencyKey::new(format!("beanstalkd:{}", shared.server), "", body);
    key.key = format!("{id}:{}", hex::encode(&key.fingerprint[..8]));
    let submission = Submission::new(Some(caller), requests).once(Some(key));
    match shared.intake.submit(submission).await {
        Ok(accepted) => {
            if shared.failpoint {
                std::process::abort();
            }
            Verdict::Delete {
                replayed: matches!(accepted, Accepted::Replayed(_)),
            }
        }
        Err(SubmitError::Full { .. } | SubmitError::Unavailable(_)) => Verdict::Release {
            delay: release_delay(releases),
        },
        // Redelivered while its first reservation is still committing: soon a replay.
        Err(SubmitError::KeyInProgress) => Verdict::Release { delay: 1 },
        Err(e) => Verdict::Bury(e.to_string()),
    }
}

/// Sends the verdicts, all in one write, and reads their replies.
async fn settle(
    shared: &Shared,
    conn: &mut Conn,
    held: &mut HashMap<u64, Held>,
    verdicts: Vec<(u64, Verdict)>,
) -> Result<(), ClientError> {
    let mut sent = Vec::with_capacity(verdicts.len());
    for (id, verdict) in verdicts {
        let Some(h) = held.remove(&id) else { continue };
        match &verdict {
            Verdict::Delete { .. } => conn.queue(Command::Delete(id)),
            Verdict::Release { delay } => conn.queue(Command::Release {
                id,
                pri: h.pri,
                delay: *delay,
            }),
            Verdict::Bury(why) => {
                warn!(server = %shared.server, tube = %h.tube, job = id, reason = %why, "beanstalkd job buried");
                conn.queue(Command::Bury { id, pri: h.pri });
            }
        }
        sent.push((id, h.tube, verdict));
    }
    conn.flush().await?;
    for (id, tube, verdict) in sent {
        let reply = conn.recv(Duration::ZERO).await?;
        let outcome = match (&verdict, &reply) {
            // The reservation was lost (its TTR passed): the job is back in the queue, and
            // its key makes the next reservation a replay.
            (_, r) if r.is("NOT_FOUND") => {
                warn!(server = %shared.server, %tube, job = id, "a beanstalkd job's reservation was lost before its verdict");
                "lost"
            }
            (Verdict::Delete { replayed: false }, r) if r.is("DELETED") => "committed",
            (Verdict::Delete { replayed: true }, r) if r.is("DELETED") => "replayed",
            (Verdict::Release { .. }, r) if r.is("RELEASED") => "released",
            (Verdict::Bury(_), r) | (Verdict::Release { .. }, r) if r.is("BURIED") => "buried",
            (_, other) => {
                return Err(ClientError::Unexpected {
                    what: "a job's verdict",
                    got: format!("{other:?}"),
                });
            }
        };
        crate::metrics::beanstalkd_job(&tube, outcome);
    }
    Ok(())
}

/// Touches held jobs past half their TTR (`all`: every one, after `DEADLINE_SOON`).
async fn touch(
    conn: &mut Conn,
    held: &mut HashMap<u64, Held>,
    all: bool,
) -> Result<(), ClientError> {
    let now = Instant::now();
    let due: Vec<u64> = held
        .iter()
        .filter(|(_, h)| all || now.duration_since(h.since) >= h.ttr / 2)
        .map(|(id, _)| *id)
        .collect();
    if due.is_empty() {
        return Ok(());
    }
    for id in &due {
        conn.queue(Command::Touch(*id));
    }
    conn.flush().await?;
    for id in due {
        let reply = conn.recv(Duration::ZERO).await?;
        if reply.is("TOUCHED") {
            if let Some(h) = held.get_mut(&id) {
                h.since = now;
            }
        } else if !reply.is("NOT_FOUND") {
            return Err(ClientError::Unexpected {
                what: "touch",
                got: format!("{reply:?}"),
            });
        }
    }
    Ok(())
}

/// At a stop: the verdicts of held jobs, within the grace; what is still held then goes back
/// to the queue when the connection closes.
async fn finish(
    shared: &Shared,
    conn: &mut Conn,
    held: &mut HashMap<u64, Held>,
    done: &mut mpsc::Receiver<(u64, Verdict)>,
) -> Result<(), ClientError> {
    let deadline = tokio::time::Instant::now() + STOP_GRACE;
    while !held.is_empty() {
        match tokio::time::timeout_at(deadline, done.recv()).await {
            Ok(Some(v)) => settle(shared, conn, held, vec![v]).await?,
            Ok(None) | Err(_) => break,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn release_delays_double_to_a_minute() {
        let delays: Vec<u32> = (0..9).map(super::release_delay).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(super::release_delay(u64::MAX), 60);
    }
}
