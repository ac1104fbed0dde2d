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

/// Two gateways on one database share it: each claims only what no other holds, an outcome
/// is fenced by owner (one for a row another gateway holds is not applied), a dead token one
/// registers reaches the other at the commit, and a graceful close hands the rows back at once
/// for the other to claim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_share_one_database_claim_fence_and_hand_back() {
    let Some(pg) = gateway::local_postgres::database().await else {
        return;
    };
    let a = Store::postgres(&pg, SpoolOptions::default()).await.unwrap();
    let b = Store::postgres(&pg, SpoolOptions::default()).await.unwrap();
    let mut b_news = b
        .cluster_events()
        .expect("a PostgreSQL spool has cluster news");
    let gateways = a.gateways().await.unwrap();
    assert_eq!(gateways.len(), 2, "{gateways:?}");
    assert_eq!(gateways.iter().filter(|g| g.this).count(), 1);
    assert!(gateways[0].host.contains("(pid "), "{gateways:?}");

    // What `a` takes in is `a`'s: `b` does not see it.
    let request = shop(0, 10);
    let ids: Vec<_> = request.notifications.iter().map(|(id, _)| *id).collect();
    a.enqueue(vec![request]).await.unwrap();
    let now = std::time::SystemTime::now();
    let page = |s: &Store| {
        let s = s.clone();
        async move {
            s.ready_page("shop", Default::default(), now, 100)
                .await
                .unwrap()
                .rows
                .len()
        }
    };
    assert_eq!(page(&a).await, 10);
    assert_eq!(page(&b).await, 0, "another gateway's rows are not claimed");
    assert_eq!(
        a.gateways()
            .await
            .unwrap()
            .iter()
            .find(|g| g.this)
            .unwrap()
            .holds,
        10
    );

    // An outcome from `b` for `a`'s row is not applied; `a`'s is.
    let done = crate::harness::delivered;
    b.complete(vec![done(ids[0])], Vec::new()).await.unwrap();
    assert_eq!(a.get(ids[0]).await.unwrap().unwrap().state, State::Queued);
    a.complete(vec![done(ids[0])], Vec::new()).await.unwrap();
    assert_eq!(
        a.get(ids[0]).await.unwrap().unwrap().state,
        State::Delivered
    );

    // A dead token `a` registers reaches `b` at the commit.
    let dead = gateway::spool::DeadToken {
        app: "shop".to_owned(),
        token: crate::harness::token(7),
        reason: apns::Reason::Unregistered,
        since: now,
    };
    a.register_dead_token(dead.clone()).await.unwrap();
    let news = tokio::time::timeout(MINUTE, async {
        loop {
            match b_news.recv().await.unwrap() {
                gateway::spool::ClusterEvent::DeadToken { app, token } => break (app, token),
                _ => continue,
            }
        }
    })
    .await
    .expect("the dead token's news");
    assert_eq!(news, (dead.app.clone(), dead.token.clone()));
    assert!(a.clear_dead_token("shop", &dead.token).await.unwrap());
    let cleared = tokio::time::timeout(MINUTE, b_news.recv()).await.unwrap();
    assert_eq!(
        cleared,
        Some(gateway::spool::ClusterEvent::TokenCleared {
            app: dead.app,
            token: dead.token
        })
    );

    // `a` stops cleanly: its nine rows are handed back, and `b` is woken to claim them.
    a.close().await.unwrap();
    let woken = tokio::time::timeout(MINUTE, b_news.recv()).await.unwrap();
    assert_eq!(woken, Some(gateway::spool::ClusterEvent::Work));
    assert_eq!(page(&b).await, 9);
    let gateways = b.gateways().await.unwrap();
    assert_eq!(gateways.len(), 1, "a's registration is gone: {gateways:?}");
    assert_eq!(gateways[0].holds, 9);
    b.close().await.unwrap();
}

/// A gateway the others declared dead (its registration deleted and its rows freed, as a rescue
/// does) finds out at its next heartbeat: dispatch is told to drop what it holds, it registers
/// again under a new id, its late outcome for a freed row is not applied, and it claims the
/// rows again like any other gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_declared_dead_is_fenced_and_registers_again() {
    let Some(mut pg) = gateway::local_postgres::database().await else {
        return;
    };
    pg.heartbeat = Duration::from_secs(1);
    pg.lease = Duration::from_secs(3);
    let a = Store::postgres(&pg, SpoolOptions::default()).await.unwrap();
    let mut news = a.cluster_events().unwrap();
    let request = shop(0, 5);
    let ids: Vec<_> = request.notifications.iter().map(|(id, _)| *id).collect();
    a.enqueue(vec![request]).await.unwrap();
    let old = a.gateways().await.unwrap()[0].id.clone();
    let (admin, conn) = tokio_postgres::connect(pg.url.expose(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    admin
        .batch_execute(&format!(
            "DELETE FROM gateways WHERE id = '{old}'; \
             UPDATE notifications SET owner = NULL WHERE owner = '{old}'"
        ))
        .await
        .unwrap();
    let fenced = tokio::time::timeout(MINUTE, async {
        loop {
            if news.recv().await.unwrap() == gateway::spool::ClusterEvent::Fenced {
                break;
            }
        }
    })
    .await;
    assert!(fenced.is_ok(), "dispatch told to drop what it holds");
    until("registered again", MINUTE, || async {
        a.gateways()
            .await
            .is_ok_and(|g| g.len() == 1 && g[0].id != old && g[0].this)
    })
    .await;
    let done = crate::harness::delivered(ids[0]);
    a.complete(vec![done.clone()], Vec::new()).await.unwrap();
    assert_eq!(
        a.get(ids[0]).await.unwrap().unwrap().state,
        State::Queued,
        "an outcome from before is not applied"
    );
    let now = std::time::SystemTime::now();
    let page = a
        .ready_page("shop", Default::default(), now, 100)
        .await
        .unwrap();
    assert_eq!(
        page.rows.len(),
        5,
        "claimed again under the new registration"
    );
    a.complete(vec![done], Vec::new()).await.unwrap();
    assert_eq!(
        a.get(ids[0]).await.unwrap().unwrap().state,
        State::Delivered
    );
    a.close().await.unwrap();
}

/// One provider token per key for every gateway on the database: the first to ask signs and
/// stores it, the others read it; a token older than asked for is renewed once, under a lock.
#[tokio::test]
async fn the_gateways_share_one_provider_token_per_key() {
    let Some(pg) = gateway::local_postgres::database().await else {
        return;
    };
    let a = Store::postgres(&pg, SpoolOptions::default()).await.unwrap();
    let b = Store::postgres(&pg, SpoolOptions::default()).await.unwrap();
    let key = apns::auth::SigningKey::from_file(
        &crate::harness::apns_fixtures().join("AuthKey_ABC123DEFG.p8"),
        "ABC123DEFG",
        "TEAM123456",
    )
    .unwrap();
    let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    let (first, iat) = a
        .shared_provider_token(&key, hour_ago)
        .await
        .unwrap()
        .unwrap();
    let (same, same_iat) = b
        .shared_provider_token(&key, hour_ago)
        .await
        .unwrap()
        .unwrap();
    // (Compared, not printed: even a test key's token is kept out of the output.)
    assert!(first == same && iat == same_iat, "read, not signed again");
    // Asked for one newer than it: renewed, and then the same for both.
    let newer_than = iat + Duration::from_millis(1);
    // A token signed now is newer than asked for once the clock has passed that instant.
    while std::time::SystemTime::now() <= newer_than {
        std::hint::spin_loop();
    }
    let (renewed, _) = b
        .shared_provider_token(&key, newer_than)
        .await
        .unwrap()
        .unwrap();
    assert!(renewed != first, "renewed");
    let (again, _) = a
        .shared_provider_token(&key, newer_than)
        .await
        .unwrap()
        .unwrap();
    assert!(again == renewed, "the renewed one, for both");
    a.close().await.unwrap();
    b.close().await.unwrap();
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
    assert_eq!(body["reasons"][0], "spool_unavailable", "{body}");
    assert!(body.to_string().contains("spool unavailable"), "{body}");

    let s = std::sync::Arc::clone(&server);
    tokio::task::spawn_blocking(move || s.start_again())
        .await
        .unwrap();
    until("ready again", MINUTE, || async {
        live.readyz().await.0 == 200
    })
    .await;
    // The gateway's session came back with the server: its registration is there, and a
    // second gateway may join beside it.
    let second = Store::postgres(&pg, SpoolOptions::default()).await.unwrap();
    until("both gateways registered", MINUTE, || async {
        second.gateways().await.is_ok_and(|g| g.len() == 2)
    })
    .await;
    second.close().await.unwrap();
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

/// Two gateways on one database: a pause through one holds the app on both; what the other
/// took in (its rows, in its memory) is cancelled through the first, by id and app-wide — the
/// first asks the second, which cancels what it holds — and after the resume the simulator
/// sees only what came after the cancel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_pause_and_cancel_together() {
    let Some(pg) = gateway::local_postgres::database().await else {
        return;
    };
    let sim = mock().record_limit(0).spawn().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = config_on(dir.path(), &sim, &pg);
    let a = Live::start_in(dir, config, DispatchOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_on(dir.path(), &sim, &pg);
    let b = Live::start_in(dir, config, DispatchOptions::default()).await;
    let (status, body) = a.call("POST", "/v1/apps/shop/pause", "").await;
    assert_eq!(status, 200, "{body}");
    until("the other gateway to pause the app", MINUTE, || async {
        b.dispatch.pause_of("shop").is_some()
    })
    .await;
    b.submit(vec![shop(0, 1_000)]).await;
    let one = shop(1_000, 1);
    let one_id = one.notifications[0].0;
    b.submit(vec![one]).await;
    let (status, body) = a
        .call("DELETE", &format!("/v1/notifications/{one_id}"), "")
        .await;
    assert_eq!(status, 204, "the gateway holding it cancelled it: {body}");
    let (status, body) = a.call("POST", "/v1/apps/shop/cancel", "").await;
    assert_eq!(
        (status, body["cancelled"].as_u64()),
        (200, Some(1_000)),
        "{body}"
    );
    let keep = shop(2_000, 10);
    let kept: std::collections::HashSet<uuid::Uuid> = keep
        .notifications
        .iter()
        .map(|(id, _)| *id.as_uuid())
        .collect();
    b.submit(vec![keep]).await;
    let (status, _) = a.call("POST", "/v1/apps/shop/resume", "").await;
    assert_eq!(status, 200);
    until("the later ones delivered", MINUTE, || async {
        a.count(State::Delivered).await == 10
    })
    .await;
    assert_eq!(a.count(State::Cancelled).await, 1_001);
    let seen: std::collections::HashSet<uuid::Uuid> = sim.stats().id_counts().into_keys().collect();
    assert_eq!(seen, kept);
    b.stop().await;
    a.stop().await;
}
