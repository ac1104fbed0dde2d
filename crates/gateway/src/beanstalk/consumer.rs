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
//! While jobs are ready, a connection asks for many at once (reserves with no wait, sent
//! together, then their `stats-job`s together); while nothing is held, one reserve waits at
//! most a second, so a shutdown is noticed. Held jobs past half their TTR are touched (all of
//! them on `DEADLINE_SOON`); one held ten minutes without a verdict is released. When the
//! spool refuses, the connection stops reserving for the release delay instead of cycling
//! through the queue.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures_util::FutureExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::client::{ClientError, Conn};
use super::job;
use super::proto::{Command, Reply, stat};
use crate::auth::Caller;
use crate::config::{Beanstalkd, Config, Scope, Tube};
use crate::ingest::{Accepted, Intake, Problem, Submission, Trouble};
use crate::spool::{IdempotencyKey, SubmitError};

/// Jobs one connection holds at most (reserved, not yet settled).
const MAX_HELD: usize = 512;
/// Reserves sent together while jobs are ready.
const BURST: usize = 64;
/// How long an idle reserve waits for a job.
const RESERVE_WAIT_S: u32 = 1;
/// How often held jobs are looked at for a touch.
const TOUCH_CHECK: Duration = Duration::from_millis(250);
/// A job held this long without a verdict is released (its task is stuck).
const MAX_HOLD: Duration = Duration::from_secs(600);
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
    /// Back in the queue after `delay` seconds; `refused`: the spool (or the tube's key's rate
    /// limit) could not take it (the connection stops reserving for as long).
    Release { delay: u32, refused: bool },
    /// Not a notification, or a poison job: buried, with why.
    Bury(String),
}

/// A job held by a connection.
#[derive(Debug)]
struct Held {
    tube: String,
    pri: u32,
    ttr: Duration,
    /// Reserved (or last touched) then.
    since: Instant,
    reserved_at: Instant,
}

/// What the connections of one server share.
struct Shared {
    server: String,
    /// The tubes watched (from the configuration at start; a reload's tube list takes a
    /// restart, its apps and keys do not).
    tubes: Vec<String>,
    max_reserves: u32,
    intake: Arc<Intake>,
    /// Connections that are down now, counted under this lock with the report it makes: the
    /// server is reported while any is.
    down: Mutex<usize>,
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
        tubes: config.tubes.iter().map(|t| t.tube.clone()).collect(),
        max_reserves: config.max_reserves,
        intake,
        down: Mutex::new(0),
        failpoint: std::env::var("PUSHGATE_FAILPOINT").as_deref() == Ok(FAILPOINT),
    });
    info!(
        server = %config.server,
        tubes = ?shared.tubes,
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
            Ok((conn, scope)) => {
                if is_down {
                    is_down = false;
                    shared.up();
                }
                retry = Duration::from_millis(200);
                match serve(&shared, conn, &scope, &stop).await {
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
        shared.failed(&why, !is_down);
        is_down = true;
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

    /// A connection failed (`newly`: it was up until now).
    fn failed(&self, why: &str, newly: bool) {
        let mut down = self.down.lock().expect("the down lock is never poisoned");
        if newly {
            *down += 1;
        }
        self.intake.trouble(
            &self.name(),
            Some((Trouble::Unreachable, format!("unreachable: {why}"))),
        );
    }

    /// A connection that was down is up again.
    fn up(&self) {
        let mut down = self.down.lock().expect("the down lock is never poisoned");
        *down = down.saturating_sub(1);
        if *down == 0 {
            self.intake.trouble(&self.name(), None);
            info!(server = %self.server, "beanstalkd reachable again");
        }
    }

    /// The tube as the configuration in force has it (a reload may have changed its app or
    /// key).
    fn tube(&self, config: &Config, tube: &str) -> Option<Tube> {
        config
            .beanstalkd
            .iter()
            .find(|b| b.server == self.server)
            .and_then(|b| b.tubes.iter().find(|t| t.tube == tube))
            .cloned()
    }

    /// The caller a tube's jobs are submitted as: its `as_key`, or one that may use only its
    /// app.
    fn caller(tube: &Tube, config: &Config) -> Caller {
        let key = tube
            .as_key
            .as_ref()
            .and_then(|k| config.api_keys.iter().find(|a| &a.name == k));
        match key {
            Some(k) => Caller::of(k),
            None => Caller {
                name: format!("beanstalkd:{}", tube.tube),
                scope: Scope::Apps(vec![tube.app.clone()]),
                admin: false,
            },
        }
    }

    /// Reports (or clears) a problem of the configuration with a tube.
    fn tube_trouble(&self, tube: &str, problem: Option<String>) {
        self.intake.trouble(
            &format!("beanstalkd {} tube {tube}", self.server),
            problem.map(|p| (Trouble::Misconfigured, p)),
        );
    }
}

/// The delay of a job's release when it was released `releases` times before.
fn release_delay(releases: u64) -> u32 {
    1u32.checked_shl(u32::try_from(releases).unwrap_or(u32::MAX))
        .unwrap_or(RELEASE_MAX_S)
        .min(RELEASE_MAX_S)
}

/// Connects, watches the tubes and ignores `default` unless it is one of them; answers the
/// connection and the scope of its jobs' idempotency keys. The scope is the configured server;
/// without a binlog it is also this server process's `id` (new at every start), since job ids
/// start again at 1 and no job survives a restart: a new job must not look like an old one.
async fn open(shared: &Shared) -> Result<(Conn, String), ClientError> {
    let mut conn = Conn::connect(&shared.server).await?;
    for tube in &shared.tubes {
        conn.expect(Command::Watch(tube), "watch", "WATCHING")
            .await?;
    }
    if !shared.tubes.iter().any(|t| t == "default") {
        conn.expect(Command::Ignore("default"), "ignore default", "WATCHING")
            .await?;
    }
    let mut scope = format!("beanstalkd:{}", shared.server);
    if let Reply::Ok(yaml) = conn.call(Command::Stats).await?
        && stat(&yaml, "binlog-current-index") == Some("0")
        && let Some(id) = stat(&yaml, "id")
    {
        scope = format!("{scope}#{id}");
    }
    Ok((conn, scope))
}

/// Reserves and settles jobs until `stop`, then settles what it holds (within the grace).
async fn serve(
    shared: &Arc<Shared>,
    mut conn: Conn,
    scope: &str,
    stop: &CancellationToken,
) -> Result<(), ClientError> {
    let (verdicts, mut done) = mpsc::channel::<(u64, Verdict)>(MAX_HELD);
    let mut held: HashMap<u64, Held> = HashMap::new();
    // The last reserve found nothing: wait for verdicts (or the next touch) before asking again.
    let mut idle = false;
    let mut next_touch = Instant::now() + TOUCH_CHECK;
    let mut paused_until = None;
    loop {
        let mut ready = Vec::new();
        while let Ok(v) = done.try_recv() {
            ready.push(v);
        }
        if !ready.is_empty() {
            if let Some(p) = settle(shared, &mut conn, &mut held, ready).await? {
                paused_until = Some(p);
            }
            idle = false;
        }
        let now = Instant::now();
        if now >= next_touch {
            touch(shared, &mut conn, &mut held, false).await?;
            next_touch = now + TOUCH_CHECK;
            idle = false;
        }
        if stop.is_cancelled() {
            return finish(shared, &mut conn, &mut held, &mut done).await;
        }
        let paused = paused_until.is_some_and(|p| now < p);
        if held.len() >= MAX_HELD || paused || (idle && !held.is_empty()) {
            let wake = match paused_until {
                Some(p) if paused => p.min(next_touch),
                _ => next_touch,
            };
            tokio::select! {
                v = done.recv() => {
                    if let Some(v) = v
                        && let Some(p) = settle(shared, &mut conn, &mut held, vec![v]).await?
                    {
                        paused_until = Some(p);
                    }
                    idle = false;
                }
                () = tokio::time::sleep_until(wake.into()) => {}
                () = stop.cancelled() => {}
            }
            continue;
        }
        // One reserve that waits while nothing is held; a burst that does not while jobs are.
        let (wait, n) = if held.is_empty() {
            (RESERVE_WAIT_S, 1)
        } else {
            (0, BURST.min(MAX_HELD - held.len()))
        };
        for _ in 0..n {
            conn.queue(Command::ReserveWithTimeout(wait));
        }
        conn.flush().await?;
        let mut got = Vec::new();
        let mut deadline_soon = false;
        for _ in 0..n {
            match conn
                .recv(std::time::Duration::from_secs(u64::from(wait)))
                .await?
            {
                Reply::Reserved { id, body } => got.push((id, Some(body))),
                Reply::TooBig { id, .. } => got.push((id, None)),
                r if r.is("TIMED_OUT") => idle = true,
                r if r.is("DEADLINE_SOON") => deadline_soon = true,
                other => {
                    return Err(ClientError::Unexpected {
                        what: "reserve-with-timeout",
                        got: format!("{other:?}"),
                    });
                }
            }
        }
        if deadline_soon {
            touch(shared, &mut conn, &mut held, true).await?;
            idle = true;
        }
        if !got.is_empty() {
            let now_verdicts =
                reserved(shared, &mut conn, &mut held, &verdicts, scope, got).await?;
            if !now_verdicts.is_empty() {
                settle(shared, &mut conn, &mut held, now_verdicts).await?;
            }
        }
    }
}

/// Jobs just reserved: their stats (tube, priority, TTR, how often each was reserved), sent
/// together; then a task each that submits it — or, for a poison job, one too big, or a tube
/// the configuration no longer has, a verdict at once (answered).
async fn reserved(
    shared: &Arc<Shared>,
    conn: &mut Conn,
    held: &mut HashMap<u64, Held>,
    verdicts: &mpsc::Sender<(u64, Verdict)>,
    scope: &str,
    jobs: Vec<(u64, Option<Bytes>)>,
) -> Result<Vec<(u64, Verdict)>, ClientError> {
    for (id, _) in &jobs {
        conn.queue(Command::StatsJob(*id));
    }
    conn.flush().await?;
    let mut stats = Vec::with_capacity(jobs.len());
    for _ in &jobs {
        stats.push(conn.recv(Duration::ZERO).await?);
    }
    let config = shared.intake.config();
    let mut now_verdicts = Vec::new();
    for ((id, body), reply) in jobs.into_iter().zip(stats) {
        let yaml = match reply {
            Reply::Ok(yaml) => yaml,
            // Gone already (deleted by someone else): nothing to do.
            r if r.is("NOT_FOUND") => continue,
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
        let releases = number("releases");
        // Reservations that ended without pushgate's release or bury — a crash or a timeout
        // each — this one included. A job an operator kicked back after a bury is theirs to
        // retry: not buried again for its count.
        let unsettled =
            number("reserves").saturating_sub(releases.saturating_add(number("buries")));
        let kicked = number("kicks") > 0;
        let now = Instant::now();
        held.insert(
            id,
            Held {
                tube: tube.clone(),
                pri: u32::try_from(number("pri")).unwrap_or(u32::MAX),
                ttr: Duration::from_secs(number("ttr").max(1)),
                since: now,
                reserved_at: now,
            },
        );
        let Some(body) = body else {
            now_verdicts.push((
                id,
                Verdict::Bury(format!("the job is over {} bytes", super::client::MAX_BODY)),
            ));
            continue;
        };
        if shared.max_reserves > 0 && !kicked && unsettled > u64::from(shared.max_reserves) {
            let why = format!(
                "reserved {unsettled} times without being released (a crash or a timeout each time but this one); max_reserves is {}",
                shared.max_reserves
            );
            now_verdicts.push((id, Verdict::Bury(why)));
            continue;
        }
        let Some(t) = shared.tube(&config, &tube) else {
            shared.tube_trouble(
                &tube,
                Some("watched, but no longer in [[beanstalkd]]: its jobs are released until a restart".to_owned()),
            );
            now_verdicts.push((
                id,
                Verdict::Release {
                    delay: release_delay(releases),
                    refused: false,
                },
            ));
            continue;
        };
        let (shared, verdicts, scope) = (Arc::clone(shared), verdicts.clone(), scope.to_owned());
        tokio::spawn(async move {
            let run =
                std::panic::AssertUnwindSafe(submit(&shared, &scope, id, &body, &t, releases));
            // A job that makes the gateway panic would do it again: buried, not looped.
            let verdict = run.catch_unwind().await.unwrap_or_else(|_| {
                Verdict::Bury(
                    "its submit panicked (a bug in pushgate; please report it)".to_owned(),
                )
            });
            let _ = verdicts.send((id, verdict)).await;
        });
    }
    Ok(now_verdicts)
}

/// The job as a notification, committed: its verdict.
async fn submit(
    shared: &Shared,
    scope: &str,
    id: u64,
    body: &[u8],
    tube: &Tube,
    releases: u64,
) -> Verdict {
    let config = shared.intake.config();
    let caller = Shared::caller(tube, &config);
    let doc = match job::document(body, &tube.app) {
        Ok(d) => d,
        Err(why) => return Verdict::Bury(why),
    };
    let requests = match crate::ingest::json::parse_value(&doc, &caller, &config, SystemTime::now())
    {
        Ok((requests, _)) => requests,
        // The configuration's doing (an app renamed by a reload, a key's apps narrowed), not
        // the job's: kept in the queue, and said on /readyz.
        Err(r) if matches!(r.kind, Problem::UnknownApp | Problem::ForbiddenApp) => {
            shared.tube_trouble(
                &tube.tube,
                Some(format!("{}; its jobs are released", r.message)),
            );
            return Verdict::Release {
                delay: release_delay(releases),
                refused: false,
            };
        }
        Err(r) => return Verdict::Bury(r.message),
    };
    let mut key = IdempotencyKey::new(scope, "", body);
    key.key = format!("{id}:{}", hex::encode(&key.fingerprint[..8]));
    let submission = Submission::new(Some(caller), requests).once(Some(key));
    match shared.intake.submit(submission).await {
        Ok(accepted) => {
            if shared.failpoint {
                std::process::abort();
            }
            shared.tube_trouble(&tube.tube, None);
            Verdict::Delete {
                replayed: matches!(accepted, Accepted::Replayed(_)),
            }
        }
        Err(
            SubmitError::Full { .. } | SubmitError::Unavailable(_) | SubmitError::AppPaused { .. },
        ) => Verdict::Release {
            delay: release_delay(releases),
            refused: true,
        },
        // Redelivered while its first reservation is still committing: soon a replay.
        Err(SubmitError::KeyInProgress) => Verdict::Release {
            delay: 1,
            refused: false,
        },
        // Its tube's key is over its rate: back when the bucket would let it through, and the
        // connection reserves nothing meanwhile (else it would cycle through the backlog).
        Err(e @ SubmitError::RateLimited { .. }) => Verdict::Release {
            delay: u32::try_from(e.retry_after_s().unwrap_or(1)).unwrap_or(u32::MAX),
            refused: true,
        },
        Err(e) => Verdict::Bury(e.to_string()),
    }
}

/// Sends the verdicts, all in one write, and reads their replies; answers until when to stop
/// reserving, when the spool refused one.
async fn settle(
    shared: &Shared,
    conn: &mut Conn,
    held: &mut HashMap<u64, Held>,
    verdicts: Vec<(u64, Verdict)>,
) -> Result<Option<Instant>, ClientError> {
    let mut sent = Vec::with_capacity(verdicts.len());
    let mut pause = None;
    for (id, verdict) in verdicts {
        let Some(h) = held.remove(&id) else { continue };
        match &verdict {
            Verdict::Delete { .. } => conn.queue(Command::Delete(id)),
            Verdict::Release { delay, refused } => {
                if *refused {
                    let until = Instant::now() + Duration::from_secs(u64::from(*delay));
                    pause = Some(pause.map_or(until, |p: Instant| p.min(until)));
                }
                conn.queue(Command::Release {
                    id,
                    pri: h.pri,
                    delay: *delay,
                });
            }
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
    Ok(pause)
}

/// Touches held jobs past half their TTR (`all`: every one, after `DEADLINE_SOON`), and
/// releases any held past [`MAX_HOLD`] without a verdict.
async fn touch(
    shared: &Shared,
    conn: &mut Conn,
    held: &mut HashMap<u64, Held>,
    all: bool,
) -> Result<(), ClientError> {
    let now = Instant::now();
    let stuck: Vec<(u64, Verdict)> = held
        .iter()
        .filter(|(_, h)| now.duration_since(h.reserved_at) >= MAX_HOLD)
        .map(|(id, _)| {
            warn!(server = %shared.server, job = *id, "a beanstalkd job held ten minutes without a verdict; released");
            (*id, Verdict::Release { delay: 1, refused: false })
        })
        .collect();
    if !stuck.is_empty() {
        settle(shared, conn, held, stuck).await?;
    }
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
            Ok(Some(v)) => {
                settle(shared, conn, held, vec![v]).await?;
            }
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
