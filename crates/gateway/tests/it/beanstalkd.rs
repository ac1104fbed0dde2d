//! beanstalkd as a way in, against a real beanstalkd (Debian's) and a producer we did not
//! write (greenstalk, doing what propeller-apns' server.py does): jobs of two tubes to two
//! apps, malformed jobs buried once, a delay scheduled, a server out of reach on `/readyz`, a
//! restart of beanstalkd mid-stream (nothing lost, nothing twice), a full spool (released,
//! then delivered), a commit slower than the TTR (touched, not lost).

use std::path::PathBuf;
use std::time::Duration;

use gateway::dispatch::DispatchOptions;
use gateway::local_beanstalkd::Server;
use gateway::spool::State;
use serde_json::{Value, json};

use crate::harness::token;
use crate::live::{Backend, Live, app_section_with, counter_where, mock, until};

const MINUTE: Duration = Duration::from_secs(60);

fn producer() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/it/propeller_producer.py")
}

/// Runs the producer (`put`, `stats`, `buried`) with `stdin`; its output lines.
async fn python(args: Vec<String>, stdin: String) -> Vec<String> {
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = std::process::Command::new("python3")
            .arg(producer())
            .args(&args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("python3 with greenstalk (scripts/test installs it)");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "producer {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    })
    .await
    .unwrap()
}

/// Puts `jobs` (objects as json.dumps writes them, strings as their text) into `tube`.
async fn put(bs: &Server, tube: &str, jobs: &[Value], delay: u32, ttr: u32) -> Vec<u64> {
    let (host, port) = bs.addr.split_once(':').unwrap();
    let stdin: String = jobs.iter().map(|j| format!("{j}\n")).collect();
    let args = [
        "put",
        host,
        port,
        tube,
        &delay.to_string(),
        &ttr.to_string(),
    ]
    .map(str::to_owned)
    .to_vec();
    python(args, stdin)
        .await
        .iter()
        .map(|l| l.parse().unwrap())
        .collect()
}

async fn tube_stats(bs: &Server, tube: &str) -> Value {
    let (host, port) = bs.addr.split_once(':').unwrap();
    let args = ["stats", host, port, tube].map(str::to_owned).to_vec();
    serde_json::from_str(&python(args, String::new()).await[0]).unwrap()
}

/// A gateway with apps `(name, topic)` on `backend`, consuming `bs` with `extra` lines in its
/// `[[beanstalkd]]`, and `storage_extra` in its `[storage]`.
async fn gateway(
    backend: &Backend,
    sim: &apns_mock::RunningMock,
    bs: &Server,
    apps: &[(&str, &str)],
    extra: &str,
    storage_extra: &str,
) -> Live {
    let dir = tempfile::tempdir().unwrap();
    let mut text: String = apps
        .iter()
        .map(|(name, topic)| app_section_with(dir.path(), sim, name, topic, ""))
        .collect();
    text.push_str(&format!(
        "\n[[beanstalkd]]\nserver = \"{}\"\n{extra}\n",
        bs.addr
    ));
    let storage = format!("{}\n{storage_extra}", backend.storage(dir.path()));
    let config = crate::live::write_config_on(dir.path(), &storage, &text);
    Live::start_in(dir, config, DispatchOptions::default()).await
}

fn job(i: u64, title: &str) -> Value {
    json!({"title": title, "body": format!("message {i}"), "badge": i % 3, "token": token(i).as_str()})
}

/// Jobs of two tubes — named after the apps' topics, as propeller's producers `use` them — go
/// to their apps with their topics and propeller's payload, each once, and each job is
/// deleted after its commit.
async fn jobs_from_two_tubes_reach_two_apps(backend: Backend) {
    let Some(bs) = Server::start() else { return };
    let sim = mock().spawn().await.unwrap();
    let topics = [
        format!("com.example.bs1.{}", backend.name()),
        format!("com.example.bs2.{}", backend.name()),
    ];
    let live = gateway(
        &backend,
        &sim,
        &bs,
        &[("shop", &topics[0]), ("news", &topics[1])],
        "",
        "",
    )
    .await;
    let shop_jobs: Vec<Value> = (0..30).map(|i| job(i, "Shop")).collect();
    let news_jobs: Vec<Value> = (100..120).map(|i| job(i, "News")).collect();
    put(&bs, &topics[0], &shop_jobs, 0, 120).await;
    put(&bs, &topics[1], &news_jobs, 0, 120).await;
    until("fifty delivered", MINUTE, || async {
        live.count(State::Delivered).await == 50
    })
    .await;
    let seen = sim.stats().notifications();
    assert_eq!(seen.len(), 50);
    for n in &seen {
        let i: u64 = (0..120)
            .find(|i| token(*i).as_str() == n.token)
            .expect("a token that was put");
        let (topic, title) = if i < 100 {
            (&topics[0], "Shop")
        } else {
            (&topics[1], "News")
        };
        assert_eq!(n.headers.get("apns-topic"), Some(topic), "{n:?}");
        let mut aps = json!({"alert": {"title": title, "body": format!("message {i}")}});
        if !i.is_multiple_of(3) {
            aps["badge"] = json!(i % 3);
        }
        assert_eq!(
            n.payload,
            json!({"aps": aps}),
            "propeller's payload, badge 0 left out"
        );
    }
    for t in &topics {
        let stats = tube_stats(&bs, t).await;
        assert_eq!(
            (
                stats["current-jobs-ready"].as_u64(),
                stats["current-jobs-reserved"].as_u64()
            ),
            (Some(0), Some(0)),
            "every job deleted: {stats}"
        );
    }
    assert_eq!(
        counter_where(
            "pushgate_beanstalkd_jobs_total",
            &format!("tube=\"{}\"", topics[0])
        ),
        30.0
    );
    live.stop().await;
}

/// Jobs that are not notifications are buried once each — reserved once, never looped — with
/// the good ones beside them delivered; a job's `delay` schedules it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_jobs_are_buried_once_and_a_delay_is_scheduled() {
    let Some(bs) = Server::start() else { return };
    let sim = mock().spawn().await.unwrap();
    let tube = "com.example.bs3";
    let live = gateway(&Backend::Sqlite, &sim, &bs, &[("shop", tube)], "", "").await;
    let bad = vec![
        json!("{not json"),
        json!({"title": "no token"}),
        json!({"token": "xyz", "title": "not hex"}),
        json!({"token": token(1).as_str(), "title": 7}),
        json!({"token": token(2).as_str(), "title": "Hi", "colour": "red"}),
    ];
    put(&bs, tube, &bad, 0, 120).await;
    let scheduled = json!({"token": token(3).as_str(), "title": "Later", "delay": 3600});
    put(&bs, tube, &[job(4, "Now"), scheduled], 0, 120).await;
    until("five buried", MINUTE, || async {
        tube_stats(&bs, tube).await["current-jobs-buried"].as_u64() == Some(5)
    })
    .await;
    until("one delivered, one scheduled", MINUTE, || async {
        live.count(State::Delivered).await == 1 && live.count(State::Scheduled).await == 1
    })
    .await;
    let (host, port) = bs.addr.split_once(':').unwrap();
    let buried = python(
        ["buried", host, port, tube].map(str::to_owned).to_vec(),
        String::new(),
    )
    .await;
    assert_eq!(buried.len(), 5);
    for b in buried {
        let b: Value = serde_json::from_str(&b).unwrap();
        assert_eq!(
            b["stats"]["reserves"], 1,
            "reserved once, never looped: {b}"
        );
    }
    assert_eq!(
        counter_where(
            "pushgate_beanstalkd_jobs_total",
            &format!("tube=\"{tube}\",outcome=\"buried\"")
        ),
        5.0
    );
    live.stop().await;
}

/// beanstalkd frozen mid-stream (jobs reserved go on to their commits, but their deletes get
/// no answer), then killed and started again on its binlog: `/readyz` says it is out of reach
/// meanwhile; the gateway connects again by itself; the jobs committed but not deleted come
/// back and are recognised (replayed, not sent again); every job is delivered once.
async fn a_beanstalkd_restart_mid_stream_loses_nothing_and_sends_nothing_twice(backend: Backend) {
    let binlog = tempfile::tempdir().unwrap();
    let Some(bs) = Server::with_binlog(binlog.path()) else {
        return;
    };
    let sim = mock()
        .record_limit(0)
        .latency(Duration::from_millis(2))
        .spawn()
        .await
        .unwrap();
    let tube = format!("com.example.bs4.{}", backend.name());
    let live = gateway(&backend, &sim, &bs, &[("shop", &tube)], "", "").await;
    let jobs: Vec<Value> = (0..3_000).map(|i| job(i, "Restart")).collect();
    put(&bs, &tube, &jobs, 0, 120).await;
    until("deliveries under way", MINUTE, || async {
        live.held().await >= 300
    })
    .await;
    // Commits held back while beanstalkd freezes, so that jobs are surely reserved and not yet
    // committed at that moment; once let go, they commit, and their deletes get no answer.
    let blocker = Blocker::hold(&backend, live.dir.path()).await;
    // More jobs once the commits are held: on a fast run the first 3,000 may all be committed
    // already, and these surely wait.
    let more: Vec<Value> = (3_000..4_000).map(|i| job(i, "Restart")).collect();
    put(&bs, &tube, &more, 0, 120).await;
    until(
        "jobs reserved, waiting for their commits",
        MINUTE,
        || async { tube_stats(&bs, &tube).await["current-jobs-reserved"].as_u64() > Some(0) },
    )
    .await;
    bs.freeze();
    // Counted through the blocker's own connection: the gateway's are all waiting.
    let frozen_at = blocker.held().await;
    blocker.release().await;
    until("commits after the freeze", MINUTE, || async {
        live.held().await > frozen_at
    })
    .await;
    bs.kill();
    until("readyz says beanstalkd is out of reach", MINUTE, || async {
        let (status, body) = live.readyz().await;
        status == 503
            && body["reasons"] == serde_json::json!(["beanstalkd_unreachable"])
            && body["details"][0]["message"]
                .as_str()
                .is_some_and(|m| m.contains(&format!("beanstalkd {}: unreachable", bs.addr)))
    })
    .await;
    bs.start_again();
    until("ready again", MINUTE, || async {
        live.readyz().await.0 == 200
    })
    .await;
    until("all 4,000 delivered", MINUTE, || async {
        live.count(State::Delivered).await == 4_000
    })
    .await;
    // The jobs committed before the kill are delivered already; they come back to the queue
    // and are settled (as replays) after that: the tube is empty once they are.
    until("the tube drained", MINUTE, || async {
        let stats = tube_stats(&bs, &tube).await;
        stats["current-jobs-ready"] == 0 && stats["current-jobs-reserved"] == 0
    })
    .await;
    let s = sim.stats().snapshot();
    assert_eq!((s.unique_ids, s.duplicate_ids), (4_000, 0), "{s:?}");
    assert_eq!(live.held().await, 4_000, "one notification a job");
    let replayed = counter_where(
        "pushgate_beanstalkd_jobs_total",
        &format!("tube=\"{tube}\",outcome=\"replayed\""),
    );
    assert!(
        replayed > 0.0,
        "jobs committed before the kill came back and were recognised"
    );
    let stats = tube_stats(&bs, &tube).await;
    assert_eq!(stats["current-jobs-ready"], 0, "{stats}");
    live.stop().await;
}

/// Holds the spool's commits back: SQLite's file locked, PostgreSQL's requests table locked.
enum Blocker {
    Sqlite(rusqlite::Connection),
    Postgres(tokio_postgres::Client),
}

impl Blocker {
    async fn hold(backend: &Backend, dir: &std::path::Path) -> Blocker {
        match backend {
            Backend::Sqlite => {
                let c = rusqlite::Connection::open(dir.join("spool.db")).unwrap();
                c.execute_batch("BEGIN IMMEDIATE").unwrap();
                Blocker::Sqlite(c)
            }
            Backend::Postgres(pg) => {
                let (c, conn) = tokio_postgres::connect(pg.url.expose(), tokio_postgres::NoTls)
                    .await
                    .unwrap();
                tokio::spawn(conn);
                c.batch_execute("BEGIN; LOCK TABLE requests IN EXCLUSIVE MODE")
                    .await
                    .unwrap();
                Blocker::Postgres(c)
            }
        }
    }

    /// Notifications the spool holds, read past the lock.
    async fn held(&self) -> u64 {
        let query = "SELECT count(*) FROM notifications";
        match self {
            Blocker::Sqlite(c) => c.query_row(query, [], |r| r.get::<_, i64>(0)).unwrap() as u64,
            Blocker::Postgres(c) => c.query_one(query, &[]).await.unwrap().get::<_, i64>(0) as u64,
        }
    }

    async fn release(self) {
        match self {
            Blocker::Sqlite(c) => c.execute_batch("ROLLBACK").unwrap(),
            Blocker::Postgres(c) => c.batch_execute("ROLLBACK").await.unwrap(),
        }
    }
}

/// A job reserved five times by workers that died holding it (here: a client that reserves it
/// and hangs up), more than `max_reserves = 5` with the gateway's own, is buried, with the
/// reason; the job beside it is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_reserved_max_reserves_times_is_buried() {
    let Some(bs) = Server::start() else { return };
    let sim = mock().spawn().await.unwrap();
    let tube = "com.example.bs7";
    put(&bs, tube, &[job(1, "Poison")], 0, 120).await;
    let (host, port) = bs.addr.split_once(':').unwrap();
    let drop5 = ["reserve-and-drop", host, port, tube, "5"]
        .map(str::to_owned)
        .to_vec();
    python(drop5, String::new()).await;
    put(&bs, tube, &[job(2, "Fine")], 0, 120).await;
    let live = gateway(
        &Backend::Sqlite,
        &sim,
        &bs,
        &[("shop", tube)],
        "max_reserves = 5",
        "",
    )
    .await;
    until("one buried, one delivered", MINUTE, || async {
        tube_stats(&bs, tube).await["current-jobs-buried"] == 1
            && live.count(State::Delivered).await == 1
    })
    .await;
    let buried = python(
        ["buried", host, port, tube].map(str::to_owned).to_vec(),
        String::new(),
    )
    .await;
    let b: Value = serde_json::from_str(&buried[0]).unwrap();
    assert_eq!(
        b["stats"]["reserves"], 6,
        "five crashes, then the gateway's: {b}"
    );
    assert!(b["body"].as_str().unwrap().contains("Poison"), "{b}");
    live.stop().await;
}

/// A spool that is full refuses jobs: they are released (with a delay) and delivered later;
/// none is buried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_refused_by_a_full_spool_are_released_and_delivered_later() {
    let Some(bs) = Server::start() else { return };
    // Slow answers keep the spool full for a while.
    let sim = mock()
        .latency(Duration::from_millis(100))
        .max_streams(2)
        .spawn()
        .await
        .unwrap();
    let tube = "com.example.bs5";
    let live = gateway(
        &Backend::Sqlite,
        &sim,
        &bs,
        &[("shop", tube)],
        "connections = 1",
        "max_pending = 4",
    )
    .await;
    let jobs: Vec<Value> = (0..12).map(|i| job(i, "Full")).collect();
    put(&bs, tube, &jobs, 0, 120).await;
    let released = || {
        counter_where(
            "pushgate_beanstalkd_jobs_total",
            &format!("tube=\"{tube}\",outcome=\"released\""),
        )
    };
    until("some jobs released", MINUTE, || async { released() > 0.0 }).await;
    until("all twelve delivered", MINUTE, || async {
        live.count(State::Delivered).await == 12
    })
    .await;
    assert_eq!(sim.stats().snapshot().duplicate_ids, 0);
    assert_eq!(tube_stats(&bs, tube).await["current-jobs-buried"], 0);
    live.stop().await;
}

/// A tube's `as_key` brings its key's rate limit: jobs over it are released with the delay the
/// bucket names (not buried, not refused for good) and all of them are delivered, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tube_s_key_over_its_rate_has_its_jobs_released_and_delivered_later() {
    let Some(bs) = Server::start() else { return };
    let sim = mock().spawn().await.unwrap();
    let tube = "com.example.bs7";
    let extra = format!(
        "tubes = [{{ tube = \"{tube}\", app = \"shop\", as_key = \"slow\" }}]\n\n\
         [[api_keys]]\nname = \"slow\"\nkey_sha256 = \"{}\"\napps = [\"shop\"]\n\
         rate_per_s = 2\nburst = 1\n",
        gateway::auth::key_sha256_hex("slow-key-0123456789")
    );
    let live = gateway(&Backend::Sqlite, &sim, &bs, &[("shop", tube)], &extra, "").await;
    let jobs: Vec<Value> = (0..4).map(|i| job(i, "Rate")).collect();
    put(&bs, tube, &jobs, 0, 120).await;
    let released = || {
        counter_where(
            "pushgate_beanstalkd_jobs_total",
            &format!("tube=\"{tube}\",outcome=\"released\""),
        )
    };
    until("all four delivered", MINUTE, || async {
        live.count(State::Delivered).await == 4
    })
    .await;
    assert!(
        released() > 0.0,
        "four at once, one at a time: some were released"
    );
    assert_eq!(sim.stats().snapshot().duplicate_ids, 0);
    let stats = tube_stats(&bs, tube).await;
    assert_eq!(
        (
            stats["current-jobs-buried"].as_u64(),
            stats["current-jobs-ready"].as_u64()
        ),
        (Some(0), Some(0)),
        "{stats}"
    );
    live.stop().await;
}

/// A commit slower than the job's TTR (the spool's file locked for two seconds, TTR 1): the
/// held job is touched, so its reservation never times out, and it is sent once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_slower_than_the_ttr_keeps_its_reservation() {
    let Some(bs) = Server::start() else { return };
    let sim = mock().spawn().await.unwrap();
    let tube = "com.example.bs6";
    let live = gateway(
        &Backend::Sqlite,
        &sim,
        &bs,
        &[("shop", tube)],
        "connections = 1",
        "",
    )
    .await;
    let lock = rusqlite::Connection::open(live.dir.path().join("spool.db")).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    put(&bs, tube, &[job(1, "Slow")], 0, 1).await;
    until("the job reserved", MINUTE, || async {
        tube_stats(&bs, tube).await["current-jobs-reserved"] == 1
    })
    .await;
    // Twice its TTR: without a touch, beanstalkd would take it back.
    let reserved_at = std::time::Instant::now();
    until("two TTRs held", Duration::from_secs(10), || async {
        reserved_at.elapsed() > Duration::from_secs(2)
    })
    .await;
    lock.execute_batch("ROLLBACK").unwrap();
    until("delivered", MINUTE, || async {
        live.count(State::Delivered).await == 1
    })
    .await;
    let (host, port) = bs.addr.split_once(':').unwrap();
    let server: Value = serde_json::from_str(
        &python(
            ["server-stats", host, port, tube]
                .map(str::to_owned)
                .to_vec(),
            String::new(),
        )
        .await[0],
    )
    .unwrap();
    assert_eq!(server["job-timeouts"], 0, "never timed out: {server}");
    assert!(server["cmd-touch"].as_u64() >= Some(1), "touched: {server}");
    assert_eq!(sim.stats().snapshot().requests, 1);
    live.stop().await;
}

on_each_backend!(
    jobs_from_two_tubes_reach_two_apps,
    a_beanstalkd_restart_mid_stream_loses_nothing_and_sends_nothing_twice,
);
