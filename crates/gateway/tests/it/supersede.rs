//! Supersede on each spool, over real sockets: a thousand updates with one collapse id queued
//! behind a halted app leave only the newest for Apple; what is in flight is never taken back;
//! `supersede = "off"` sends everything; `"live_activity"` keeps the newest update of an
//! activity (and its end).

use std::time::{Duration, SystemTime};

use apns::{ApnsId, CollapseId, PushType, Topic};
use gateway::dispatch::DispatchOptions;
use gateway::spool::{NewRequest, State};

use crate::live::{Backend, Live, TOPIC, app_section, counter_where, mock, shop, until};

const MINUTE: Duration = Duration::from_secs(60);

/// One notification to token 0 of `shop` with collapse id `score` and alert `text`.
fn score(text: &str) -> NewRequest {
    let mut r = shop(0, 1);
    r.collapse_id = Some(CollapseId::parse("score").unwrap());
    r.payload = apns::payload::Payload::alert("Score", text)
        .encode()
        .unwrap();
    r
}

/// A Live Activity `event` to the activity token 7, with content state `n`.
fn activity(event: &str, n: u32) -> NewRequest {
    let mut r = shop(7, 1);
    r.push_type = PushType::LiveActivity;
    r.topic = Some(Topic::parse(&format!("{TOPIC}.push-type.liveactivity")).unwrap());
    r.payload = bytes::Bytes::from(
        serde_json::json!({"aps": {
            "event": event,
            "timestamp": 1_700_000_000 + n,
            "content-state": {"n": n},
        }})
        .to_string(),
    );
    r
}

fn id_of(r: &NewRequest) -> ApnsId {
    r.notifications[0].0
}

/// 1,000 updates with one collapse id to one token, submitted one by one while the app is
/// halted ([`refusing_mock`](crate::live::refusing_mock)): 999 end `superseded` — in the spool, the
/// metrics and the delivery log — and once the app is pointed at a simulator that takes it,
/// Apple sees the newest only.
async fn a_thousand_updates_behind_a_halted_app_leave_the_newest(backend: Backend) {
    let refusing = crate::live::refusing_mock().await;
    // Named per backend: the metrics read below are the process's, shared by both runs.
    let app = format!("supersede-{}", backend.name());
    let dir = tempfile::tempdir().unwrap();
    let sections = |sim: &apns_mock::RunningMock| {
        app_section(dir.path(), sim, &app, "") + "\n[log]\nfile = \"delivery.log\"\n"
    };
    let config = backend.write_config(dir.path(), &sections(&refusing));
    // No probe while the test watches: nothing of the backlog is in flight.
    let options = DispatchOptions {
        probe_interval: Duration::from_secs(3_600),
        ..DispatchOptions::default()
    };
    let sim = mock().spawn().await.unwrap();
    let good = sections(&sim);
    let live = Live::start_in(dir, config, options).await;
    let request = |first, n| {
        let mut r = crate::harness::request(&app, first, n);
        r.topic = Some(Topic::parse(TOPIC).unwrap());
        r
    };
    live.submit(vec![request(1, 1)]).await;
    until("the app to halt", MINUTE, || async {
        live.dispatch.status(&app).unwrap().halted.is_some()
    })
    .await;
    let mut ids = Vec::new();
    for i in 0..1_000 {
        let mut r = request(0, 1);
        r.collapse_id = Some(CollapseId::parse("score").unwrap());
        r.payload = apns::payload::Payload::alert("Score", i.to_string())
            .encode()
            .unwrap();
        ids.push(id_of(&r));
        live.submit(vec![r]).await;
    }
    assert_eq!(live.count(State::Superseded).await, 999);
    assert_eq!(
        live.count(State::Queued).await,
        2,
        "the newest and the first"
    );
    let label = format!("app=\"{app}\",outcome=\"superseded\"");
    assert_eq!(counter_where("pushgate_notifications_total", &label), 999.0);
    let log = live.dir.path().join("delivery.log");
    until(
        "999 superseded lines in the delivery log",
        MINUTE,
        || async {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            text.lines()
                .filter(|l| l.contains("\"status\":\"superseded\""))
                .count()
                == 999
        },
    )
    .await;
    let (_, doc) = live.get(&format!("/v1/notifications/{}", ids[500])).await;
    assert_eq!(
        (&doc["state"], &doc["reason"]),
        (
            &serde_json::json!("superseded"),
            &serde_json::json!("Superseded")
        ),
        "{doc}"
    );

    let config = backend.write_config(live.dir.path(), &good);
    live.apply(config);
    until("both delivered", MINUTE, || async {
        live.count(State::Delivered).await == 2
    })
    .await;
    let seen = sim.stats().notifications();
    let newest = ids.last().unwrap().to_string();
    let scores: Vec<_> = seen
        .iter()
        .filter(|n| n.headers.get("apns-collapse-id").map(String::as_str) == Some("score"))
        .collect();
    assert_eq!(scores.len(), 1, "{seen:?}");
    assert_eq!(scores[0].apns_id.to_lowercase(), newest);
    assert_eq!(scores[0].payload["aps"]["alert"]["body"], "999");
    assert_eq!(live.count(State::Superseded).await, 999);
    live.stop().await;
}

/// One being sent (the simulator holds its answer) is not superseded: it is delivered, and so
/// is the newer one. A scheduled one is not superseded either (it takes part once due).
async fn what_is_in_flight_or_scheduled_is_never_superseded(backend: Backend) {
    let sim = mock()
        .latency(Duration::from_millis(1_500))
        .spawn()
        .await
        .unwrap();
    let live = Live::start_on(&backend, &sim, "", DispatchOptions::default()).await;
    let flying = score("first");
    let flying_id = id_of(&flying);
    live.submit(vec![flying]).await;
    until("the first in flight", MINUTE, || async {
        live.dispatch.is_in_flight("shop", &flying_id)
    })
    .await;
    let mut later = score("tomorrow");
    later.send_at = Some(SystemTime::now() + Duration::from_secs(3_600));
    live.submit(vec![later]).await;
    let newer = score("second");
    let newer_id = id_of(&newer);
    live.submit(vec![newer]).await;
    until("both delivered", MINUTE, || async {
        live.count(State::Delivered).await == 2
    })
    .await;
    assert_eq!(live.count(State::Superseded).await, 0);
    assert_eq!(live.count(State::Scheduled).await, 1);
    let counts = sim.stats().id_counts();
    for id in [flying_id, newer_id] {
        assert_eq!(counts.get(id.as_uuid()), Some(&1), "{id}");
    }
    live.stop().await;
}

/// `supersede = "off"`: ten with one collapse id behind a pause are all sent.
async fn supersede_off_sends_everything(backend: Backend) {
    let sim = mock().spawn().await.unwrap();
    let live = Live::start_on(
        &backend,
        &sim,
        "supersede = \"off\"",
        DispatchOptions::default(),
    )
    .await;
    let (status, body) = live.call("POST", "/v1/apps/shop/pause", "").await;
    assert_eq!(status, 200, "{body}");
    for i in 0..10 {
        live.submit(vec![score(&i.to_string())]).await;
    }
    assert_eq!(live.count(State::Superseded).await, 0);
    let (status, body) = live.call("POST", "/v1/apps/shop/resume", "").await;
    assert_eq!(status, 200, "{body}");
    until("all ten delivered", MINUTE, || async {
        live.count(State::Delivered).await == 10
    })
    .await;
    assert_eq!(sim.stats().notifications().len(), 10);
    live.stop().await;
}

/// `supersede = "live_activity"`: of twenty updates to one activity behind a pause, Apple sees
/// the newest content state; the activity's end, after them, is sent too.
async fn live_activity_updates_keep_the_newest_when_opted_in(backend: Backend) {
    let sim = mock().spawn().await.unwrap();
    let live = Live::start_on(
        &backend,
        &sim,
        "supersede = \"live_activity\"",
        DispatchOptions::default(),
    )
    .await;
    let (status, body) = live.call("POST", "/v1/apps/shop/pause", "").await;
    assert_eq!(status, 200, "{body}");
    for n in 0..20 {
        live.submit(vec![activity("update", n)]).await;
    }
    live.submit(vec![activity("end", 20)]).await;
    // One submission of two updates: the second replaces the first, which is never offered.
    live.submit(vec![activity("update", 21), activity("update", 22)])
        .await;
    assert_eq!(live.count(State::Superseded).await, 21);
    live.call("POST", "/v1/apps/shop/resume", "").await;
    until(
        "the newest update and the end delivered",
        MINUTE,
        || async { live.count(State::Delivered).await == 2 },
    )
    .await;
    let seen: Vec<serde_json::Value> = sim
        .stats()
        .notifications()
        .into_iter()
        .map(|n| n.payload["aps"].clone())
        .collect();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(
        seen.iter().any(|a| a["event"] == "end"),
        "the end is sent: {seen:?}"
    );
    assert!(
        seen.iter()
            .any(|a| a["event"] == "update" && a["content-state"]["n"] == 22),
        "the newest update is sent: {seen:?}"
    );
    live.stop().await;
}

/// Under the default (`collapse_id`), Live Activity updates without a collapse id are all sent.
async fn live_activity_updates_are_all_sent_unless_opted_in(backend: Backend) {
    let sim = mock().spawn().await.unwrap();
    let live = Live::start_on(&backend, &sim, "", DispatchOptions::default()).await;
    live.call("POST", "/v1/apps/shop/pause", "").await;
    for n in 0..5 {
        live.submit(vec![activity("update", n)]).await;
    }
    assert_eq!(live.count(State::Superseded).await, 0);
    live.call("POST", "/v1/apps/shop/resume", "").await;
    until("all five delivered", MINUTE, || async {
        live.count(State::Delivered).await == 5
    })
    .await;
    live.stop().await;
}

on_each_backend!(
    a_thousand_updates_behind_a_halted_app_leave_the_newest,
    what_is_in_flight_or_scheduled_is_never_superseded,
    supersede_off_sends_everything,
    live_activity_updates_keep_the_newest_when_opted_in,
    live_activity_updates_are_all_sent_unless_opted_in,
);
