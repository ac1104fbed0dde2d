//! The gateway end to end on the PostgreSQL spool: accepted, delivered, looked up, and kept —
//! what one gateway committed is there for the next one started on the same database, the
//! dead-token registry included — and what a crash of the database does (nothing acknowledged
//! is lost).

use std::time::Duration;

use gateway::config::{Config, Postgres};
use gateway::dispatch::DispatchOptions;
use gateway::ingest::Submission;
use gateway::local_postgres::Server;
use gateway::spool::{Spool, SpoolOptions, State, Store, SubmitError};

use crate::api::{T1, T2};
use crate::api_harness::{SHOP_KEY, TestApi};
use crate::harness::token;
use crate::live::{Live, app_section, mock, shop, until, write_config_on};

const MINUTE: Duration = Duration::from_secs(60);

/// The configuration of one app `shop` sending to `sim`, on the database `pg` (its URL in a
/// file beside the configuration, as an operator would keep it).
fn config_on(dir: &std::path::Path, sim: &apns_mock::RunningMock, pg: &Postgres) -> Config {
    std::fs::write(dir.join("pg-url"), pg.url.expose()).unwrap();
    let apps = app_section(dir, sim, "shop", "");
    write_config_on(dir, "postgres_url_file = \"pg-url\"\npool_size = 8", &apps)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_on_postgres_delivers_and_the_next_one_finds_it_all() {
    let Some(pg) = gateway::local_postgres::database().await else {
        return;
    };
    let dead = token(1_000_000);
    let sim = mock()
        .unregistered([(dead.as_str(), 1_700_000_000_000)])
        .spawn()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = config_on(dir.path(), &sim, &pg);
    let first = Live::start_in(dir, config, DispatchOptions::default()).await;
    assert_eq!(first.spool().backend(), "postgres");
    let batch = shop(0, 1_000);
    let ids: Vec<_> = batch.notifications.iter().map(|(id, _)| *id).collect();
    let mut to_dead = shop(0, 1);
    to_dead.notifications[0].1 = dead.clone();
    first.submit(vec![batch, to_dead]).await;
    until(
        "a thousand delivered and the dead token failed",
        MINUTE,
        || async {
            first.count(State::Delivered).await == 1_000 && first.count(State::Failed).await == 1
        },
    )
    .await;
    let (status, doc) = first.get(&format!("/v1/notifications/{}", ids[0])).await;
    assert_eq!(
        (status, doc["state"].as_str()),
        (200, Some("delivered")),
        "{doc}"
    );
    first.stop().await;

    // A second gateway on the same database: the first one's outcomes and its dead token.
    let dir = tempfile::tempdir().unwrap();
    let config = config_on(dir.path(), &sim, &pg);
    let second = Live::start_in(dir, config, DispatchOptions::default()).await;
    let records = second.spool().get_many(ids.clone()).await.unwrap();
    assert_eq!(records.len(), 1_000);
    assert!(
        records
            .iter()
            .all(|r| r.state == State::Delivered && r.attempts == 1)
    );
    let (status, feedback) = second.get("/v1/apps/shop/feedback").await;
    assert_eq!(status, 200, "{feedback}");
    assert_eq!(
        feedback[0]["token"].as_str(),
        Some(dead.as_str()),
        "{feedback}"
    );
    // A send to the dead token is suppressed by the registry the second gateway read.
    let mut again = shop(0, 1);
    again.notifications[0].1 = dead.clone();
    let suppressed = again.notifications[0].0;
    second.submit(vec![again, shop(2_000, 500)]).await;
    until("five hundred more delivered", MINUTE, || async {
        second.count(State::Delivered).await == 1_500
    })
    .await;
    let record = second.spool().get(suppressed).await.unwrap().unwrap();
    assert_eq!(
        (record.state, record.attempts),
        (State::Failed, 0),
        "suppressed, never sent: {record:?}"
    );
    let s = sim.stats().snapshot();
    // 1,500 delivered once each, and one send to the dead token (before it was known dead).
    assert_eq!(
        (s.requests, s.unique_ids, s.duplicate_ids),
        (1_501, 1_500, 0),
        "{s:?}"
    );
    second.stop().await;
}

/// Until gateways can share a database (PostgreSQL 2/2), a second one on the same database is
/// refused — it would send what the first is sending — and comes up once the first has closed.
#[tokio::test]
async fn a_second_gateway_on_the_same_database_waits_for_the_first_to_close() {
    let Some(pg) = gateway::local_postgres::database().await else {
        return;
    };
    let first = Store::postgres(&pg, SpoolOptions::default()).await.unwrap();
    let err = Store::postgres(&pg, SpoolOptions::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("another gateway uses the PostgreSQL spool"),
        "{err}"
    );
    assert!(
        err.contains(&pg.target) && !err.contains("postgres://"),
        "{err}"
    );
    first.close().await.unwrap();
    let second = Store::postgres(&pg, SpoolOptions::default()).await.unwrap();
    second.close().await.unwrap();
}

/// PostgreSQL stops as if it crashed while deliveries are under way: intake refuses with the
/// spool unavailable (the API's `503 spool_unavailable`), `/readyz` says why, dispatch keeps
/// the outcomes it could not record; when the server is back, everything resumes without a
/// restart of the gateway and every acknowledged notification is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_crash_under_load_loses_nothing_acknowledged() {
    let Some(server) = tokio::task::spawn_blocking(Server::private).await.unwrap() else {
        return;
    };
    let server = std::sync::Arc::new(server);
    let pg = server.database().await;
    let sim = mock()
        .latency(Duration::from_millis(20))
        .max_streams(50)
        .spawn()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = config_on(dir.path(), &sim, &pg);
    let live = Live::start_in(dir, config, DispatchOptions::default()).await;
    live.submit(vec![shop(0, 5_000)]).await;
    until("deliveries under way", MINUTE, || async {
        sim.stats().snapshot().accepted > 100
    })
    .await;
    let s = std::sync::Arc::clone(&server);
    tokio::task::spawn_blocking(move || s.stop_immediately())
        .await
        .unwrap();
    let refused = live
        .state
        .intake
        .submit(Submission::new(None, vec![shop(10_000, 10)]))
        .await;
    assert!(
        matches!(refused, Err(SubmitError::Unavailable(_))),
        "{refused:?}"
    );
    let (status, body) = live.readyz().await;
    assert_eq!(status, 503, "{body}");
    assert!(body.to_string().contains("spool unavailable"), "{body}");

    let s = std::sync::Arc::clone(&server);
    tokio::task::spawn_blocking(move || s.start_again())
        .await
        .unwrap();
    until("ready again", MINUTE, || async {
        live.readyz().await.0 == 200
    })
    .await;
    // The gateway lock went with the crash; the gateway takes it again, and a second gateway
    // is still refused.
    let name = pg.target.rsplit('/').next().unwrap().to_owned();
    let (admin, conn) = tokio_postgres::connect(pg.url.expose(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    until("the gateway lock taken again", MINUTE, || async {
        admin
            .query_one(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted \
                 AND database = (SELECT oid FROM pg_database WHERE datname = $1)",
                &[&name],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
            == 1
    })
    .await;
    let second = Store::postgres(&pg, SpoolOptions::default()).await;
    assert!(
        second
            .as_ref()
            .is_err_and(|e| e.to_string().contains("another gateway uses")),
        "{second:?}"
    );
    live.submit(vec![shop(20_000, 1_000)]).await;
    until(
        "every acknowledged notification delivered",
        MINUTE,
        || async { live.count(State::Delivered).await == 6_000 },
    )
    .await;
    let s = sim.stats().snapshot();
    assert_eq!(
        s.unique_ids, 6_000,
        "nothing but what was acknowledged: {s:?}"
    );
    live.stop().await;
}

/// Turns a database read-only and back, as a failover does to a demoted primary.
struct ReadOnly {
    admin: tokio_postgres::Client,
    name: String,
}

impl ReadOnly {
    async fn of(pg: &Postgres) -> ReadOnly {
        let name = pg.target.rsplit('/').next().unwrap().to_owned();
        let admin_url = pg.url.expose().replace(&format!("/{name}?"), "/postgres?");
        let (admin, conn) = tokio_postgres::connect(&admin_url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        ReadOnly { admin, name }
    }

    /// Every connection opened from now on is read-only (or not); those open are closed.
    async fn set(&self, on: bool) {
        let name = &self.name;
        let mode = if on { "on" } else { "off" };
        self.admin
            .batch_execute(&format!(
                "ALTER DATABASE {name} SET default_transaction_read_only = {mode}; \
                 SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = '{name}' AND pid <> pg_backend_pid()"
            ))
            .await
            .unwrap();
    }
}

/// A database that takes no writes — a replica promoted late, a primary demoted by a failover
/// (SQLSTATE 25006) — refuses submits as the spool unavailable and `/readyz` says so; once it
/// takes writes again, the gateway resumes without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_database_refuses_submits_until_it_takes_writes_again() {
    let Some(pg) = gateway::local_postgres::database().await else {
        return;
    };
    let sim = mock().spawn().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = config_on(dir.path(), &sim, &pg);
    let live = Live::start_in(dir, config, DispatchOptions::default()).await;
    let switch = ReadOnly::of(&pg).await;
    switch.set(true).await;
    until("a submit refused as the spool unavailable, read-only", MINUTE, || async {
        let r = live
            .state
            .intake
            .submit(Submission::new(None, vec![shop(0, 10)]))
            .await;
        matches!(&r, Err(SubmitError::Unavailable(e)) if gateway::error_chain(e).contains("read-only"))
    })
    .await;
    let (status, body) = live.readyz().await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        live.held().await,
        0,
        "nothing of a refused submit is stored"
    );

    switch.set(false).await;
    until("ready again", MINUTE, || async {
        live.readyz().await.0 == 200
    })
    .await;
    // A client retries a refused submit; once one is accepted, it is delivered.
    until("a submit accepted", MINUTE, || async {
        live.state
            .intake
            .submit(Submission::new(None, vec![shop(100, 10)]))
            .await
            .is_ok()
    })
    .await;
    until("delivered", MINUTE, || async {
        live.count(State::Delivered).await == 10
    })
    .await;
    live.stop().await;
}

/// While the database takes no writes, every way in says "later" in its own protocol and
/// stores nothing: the API `503 spool_unavailable` with Retry-After, SMTP `451 4.3.0`, the
/// injector 503 with a `451` reason per recipient. Once it takes writes, all three accept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_way_in_answers_try_again_later_while_the_database_takes_no_writes() {
    let Some(pg) = gateway::local_postgres::database().await else {
        return;
    };
    let backend = crate::live::Backend::Postgres(pg.clone());
    let api = TestApi::start_sections_on(&backend, "", "", crate::smtp::SMTP, |_| ()).await;
    let smtp = api.smtp.unwrap();
    let submit = serde_json::json!({"app": "shop", "tokens": [T1], "alert": "hi"}).to_string();
    let inject = serde_json::json!({
        "template": crate::inject::PER_RECIPIENT,
        "recipients": [{"to": format!("{T1}@push.shop.example")}, {"to": format!("{T2}@shop")}],
    })
    .to_string();
    let switch = ReadOnly::of(&pg).await;
    switch.set(true).await;

    let call = || api.call("POST", "/v1/notifications", Some(SHOP_KEY), Some(&submit));
    let (status, headers, body) = answer_when(call, |status| status == 503).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("spool_unavailable")),
        "{body}"
    );
    assert_eq!(headers.get("retry-after").unwrap(), "5");
    let (status, headers, body) = api
        .call("POST", "/v1.0/inject", Some(SHOP_KEY), Some(&inject))
        .await;
    assert_eq!(status, 503, "{body}");
    assert!(headers.contains_key("retry-after"));
    for r in body["results"].as_array().unwrap() {
        assert_eq!(r["status"], "failure", "{body}");
        assert!(
            r["reason"].as_str().unwrap().starts_with("451 4.3.0"),
            "{body}"
        );
    }
    let refused = crate::smtp::lettre(smtp, &["devices@shop"], crate::smtp::seed_message(true, T1))
        .await
        .unwrap_err();
    assert!(
        refused.contains("451") || refused.contains("transient"),
        "{refused}"
    );
    assert!(refused.contains("spool is unavailable"), "{refused}");
    assert_eq!(
        api.stored().await,
        0,
        "nothing of a refused submit is stored"
    );

    switch.set(false).await;
    let (status, _, body) = answer_when(call, |status| status != 503).await;
    assert_eq!(status, 202, "{body}");
    let (status, _, body) = api
        .call("POST", "/v1.0/inject", Some(SHOP_KEY), Some(&inject))
        .await;
    assert_eq!(status, 200, "{body}");
    let ok = crate::smtp::lettre(smtp, &["devices@shop"], crate::smtp::seed_message(true, T1))
        .await
        .unwrap();
    assert!(ok.starts_with("250 2.0.0 1 notification queued"), "{ok}");
    assert_eq!(api.stored().await, 4);
}

type Answer = (u16, http::HeaderMap, serde_json::Value);

/// Calls until the answer's status is `done` (the first calls after a switch may still take a
/// connection opened before it), within a minute.
async fn answer_when<F: std::future::Future<Output = Answer>>(
    call: impl Fn() -> F,
    done: impl Fn(u16) -> bool,
) -> Answer {
    let deadline = tokio::time::Instant::now() + MINUTE;
    loop {
        let answer = call().await;
        if done(answer.0) {
            return answer;
        }
        assert!(tokio::time::Instant::now() < deadline, "still {answer:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
