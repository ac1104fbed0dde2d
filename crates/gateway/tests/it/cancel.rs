//! Taking work back, on each spool, over real sockets: a cancel by id of a queued, a scheduled
//! and an in-flight notification; a request cancelled while it is being sent; an app-wide
//! cancel with its filters; a pause that holds an app's sends, refuses with `reject`, and
//! survives a restart.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use gateway::dispatch::DispatchOptions;
use gateway::spool::{Spool, State};

use crate::live::{Backend, Live, mock, shop, until};

const MINUTE: Duration = Duration::from_secs(60);

fn path_of(id: &apns::ApnsId) -> String {
    format!("/v1/notifications/{id}")
}

/// `POST /v1/apps/shop/cancel` with `body`: status and answer.
async fn cancel_shop(live: &Live, body: &str) -> (u16, serde_json::Value) {
    live.call("POST", "/v1/apps/shop/cancel", body).await
}

/// A queued notification (its app paused, so that nothing takes it) and a scheduled one are
/// cancelled (`204`, then `cancelled` with reason `Cancelled`); one in flight (the simulator
/// holds its answer) answers `409` with its state and is delivered. The simulator sees only
/// that one, before and after a restart.
async fn a_cancel_takes_back_what_waits_and_never_what_is_in_flight(backend: Backend) {
    let sim = mock()
        .latency(Duration::from_millis(1_500))
        .spawn()
        .await
        .unwrap();
    let live = Live::start_on(&backend, &sim, "", DispatchOptions::default()).await;
    let flying = shop(0, 1);
    let flying_id = flying.notifications[0].0;
    live.submit(vec![flying]).await;
    until("the first notification in flight", MINUTE, || async {
        live.dispatch.is_in_flight("shop", &flying_id)
    })
    .await;
    let (status, body) = live.call("DELETE", &path_of(&flying_id), "").await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "not_waiting", "{body}");
    assert_eq!(body["error"]["state"], "in_flight", "{body}");

    let mut later = shop(1, 1);
    later.send_at = Some(SystemTime::now() + Duration::from_secs(3_600));
    let later_id = later.notifications[0].0;
    live.submit(vec![later]).await;
    let (status, body) = live.call("DELETE", &path_of(&later_id), "").await;
    assert_eq!(status, 204, "{body}");

    let (status, body) = live.call("POST", "/v1/apps/shop/pause", "").await;
    assert_eq!(
        (status, &body["paused"]),
        (200, &serde_json::json!(true)),
        "{body}"
    );
    let queued = shop(2, 1);
    let queued_id = queued.notifications[0].0;
    live.submit(vec![queued]).await;
    let (status, body) = live.call("DELETE", &path_of(&queued_id), "").await;
    assert_eq!(status, 204, "{body}");
    let (status, body) = live.call("DELETE", &path_of(&queued_id), "").await;
    assert_eq!(
        (status, &body["error"]["state"]),
        (409, &serde_json::json!("cancelled")),
        "{body}"
    );

    let (_, doc) = live.get(&path_of(&queued_id)).await;
    assert_eq!(
        (&doc["state"], &doc["reason"]),
        (
            &serde_json::json!("cancelled"),
            &serde_json::json!("Cancelled")
        ),
        "{doc}"
    );
    assert!(doc["request_id"].is_string(), "{doc}");
    let (status, _) = live.call("POST", "/v1/apps/shop/resume", "").await;
    assert_eq!(status, 200);
    until("the one in flight delivered", MINUTE, || async {
        live.count(State::Delivered).await == 1
    })
    .await;
    assert_eq!(live.count(State::Cancelled).await, 2);

    // After a restart, what was cancelled stays cancelled and is never sent.
    let live = live.restart(DispatchOptions::default()).await;
    let sent = || {
        sim.stats()
            .id_counts()
            .into_keys()
            .collect::<HashSet<uuid::Uuid>>()
    };
    assert_eq!(sent(), HashSet::from([*flying_id.as_uuid()]));
    assert_eq!(live.count(State::Cancelled).await, 2);
    assert_eq!(live.spool().pending(), 0);
    live.stop().await;
}

/// A request of 10,000 tokens cancelled while it is being sent: what was cancelled plus what
/// had gone is the whole request, the simulator saw exactly the ones that had gone, and each
/// of those was delivered.
async fn a_request_cancelled_while_it_is_sent(backend: Backend) {
    let sim = mock()
        .latency(Duration::from_millis(20))
        .record_limit(0)
        .spawn()
        .await
        .unwrap();
    // Twenty streams at 20 ms each: about 1,000 a second, so the cancel comes mid-way.
    let options = DispatchOptions {
        streams_per_connection: 20,
        ..DispatchOptions::default()
    };
    let live = Live::start_on(&backend, &sim, "max_connections = 1", options).await;
    let request = live.submit(vec![shop(0, 10_000)]).await;
    until("a thousand sent", MINUTE, || async {
        sim.stats().snapshot().accepted >= 1_000
    })
    .await;
    let (status, body) = live
        .call("POST", &format!("/v1/requests/{request}/cancel"), "")
        .await;
    assert_eq!(status, 200, "{body}");
    let cancelled = body["cancelled"].as_u64().unwrap();
    let gone = body["already_gone"].as_u64().unwrap();
    assert_eq!(cancelled + gone, 10_000, "{body}");
    assert!(cancelled > 0 && gone >= 1_000, "{body}");
    until("nothing pending", MINUTE, || async {
        live.spool().pending() == 0
    })
    .await;
    assert_eq!(live.count(State::Cancelled).await, cancelled);
    assert_eq!(live.count(State::Delivered).await, gone);
    let s = sim.stats().snapshot();
    assert_eq!((s.unique_ids, s.duplicate_ids), (gone, 0), "{s:?}");
    // A second cancel finds nothing left.
    let (_, body) = live
        .call("POST", &format!("/v1/requests/{request}/cancel"), "")
        .await;
    assert_eq!(
        (body["cancelled"].as_u64(), body["already_gone"].as_u64()),
        (Some(0), Some(10_000)),
        "{body}"
    );
    live.stop().await;
}

/// An app-wide cancel behind a pause: by collapse id, then everything accepted before a time —
/// what came after it stays, and is what the simulator sees after the resume.
async fn an_app_wide_cancel_takes_back_what_waits(backend: Backend) {
    let sim = mock().record_limit(0).spawn().await.unwrap();
    let live = Live::start_on(&backend, &sim, "", DispatchOptions::default()).await;
    let (status, _) = live.call("POST", "/v1/apps/shop/pause", "").await;
    assert_eq!(status, 200);
    let mut badge = shop(0, 3_000);
    badge.collapse_id = Some(apns::CollapseId::parse("badge").unwrap());
    let rest = shop(3_000, 20_000);
    let probe = rest.notifications[0].0;
    live.submit(vec![badge, rest]).await;
    let (status, body) = cancel_shop(&live, r#"{"collapse_id": "badge"}"#).await;
    assert_eq!(
        (status, body["cancelled"].as_u64()),
        (200, Some(3_000)),
        "{body}"
    );
    // The cut is the first submission's own time, to the millisecond, as its documents show
    // it: `created_before` names it whole, in memory as in the spool.
    let (_, doc) = live.get(&path_of(&probe)).await;
    let cut = doc["created_at"].as_str().unwrap().to_owned();
    let cut_time = gateway::rfc3339::parse(&cut).unwrap();
    until("the clock past the cut", MINUTE, || async {
        SystemTime::now()
            .duration_since(cut_time)
            .is_ok_and(|d| d >= Duration::from_millis(1))
    })
    .await;
    let after = shop(23_000, 500);
    let after_ids: HashSet<uuid::Uuid> = after
        .notifications
        .iter()
        .map(|(id, _)| *id.as_uuid())
        .collect();
    live.submit(vec![after]).await;
    let body = format!(r#"{{"created_before": "{cut}"}}"#);
    let (status, answer) = cancel_shop(&live, &body).await;
    assert_eq!(
        (status, answer["cancelled"].as_u64()),
        (200, Some(20_000)),
        "{answer}"
    );
    let (status, answer) = cancel_shop(&live, r#"{"created_before": "yesterday"}"#).await;
    assert_eq!(
        (status, &answer["error"]["code"]),
        (400, &serde_json::json!("invalid_field")),
        "{answer}"
    );
    live.call("POST", "/v1/apps/shop/resume", "").await;
    until("the later ones delivered", MINUTE, || async {
        live.count(State::Delivered).await == 500
    })
    .await;
    assert_eq!(live.count(State::Cancelled).await, 23_000);
    let seen: HashSet<uuid::Uuid> = sim.stats().id_counts().into_keys().collect();
    assert_eq!(seen, after_ids);
    live.stop().await;
}

/// A paused app sends nothing (its notifications stay queued), `?reject=true` refuses new
/// ones with `503 app_paused`, `/readyz` stays ready and lists it for an admin, the stats show
/// it, only admin keys may pause, and the pause survives a restart until resumed.
async fn a_pause_holds_an_app_across_a_restart(backend: Backend) {
    let sim = mock().spawn().await.unwrap();
    let live = Live::start_on(&backend, &sim, "", DispatchOptions::default()).await;
    let (status, body) = live
        .call("POST", "/v1/apps/shop/pause?reject=maybe", "")
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &serde_json::json!("invalid_field")),
        "{body}"
    );
    let (status, body) = live.call("POST", "/v1/apps/nope/pause", "").await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (404, &serde_json::json!("unknown_app")),
        "{body}"
    );
    let (status, _) = live.call("POST", "/v1/apps/shop/pause", "").await;
    assert_eq!(status, 200);
    live.submit(vec![shop(0, 100)]).await;
    let (status, body) = live.readyz().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["paused_apps"][0]["app"], "shop", "{body}");
    let (_, stats) = live.get("/v1/stats").await;
    assert_eq!(stats["apps"]["shop"]["paused"]["reject"], false, "{stats}");
    // With reject: nothing more is taken in.
    let (status, body) = live
        .call("POST", "/v1/apps/shop/pause?reject=true", "")
        .await;
    assert_eq!(
        (status, &body["reject"]),
        (200, &serde_json::json!(true)),
        "{body}"
    );
    let submit = r#"{"app": "shop", "tokens": ["aabbccdd"], "aps": {"alert": "hi"}}"#;
    let (status, body) = live.call("POST", "/v1/notifications", submit).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (503, &serde_json::json!("app_paused")),
        "{body}"
    );
    assert_eq!(
        live.held().await,
        100,
        "nothing of the refused request is stored"
    );

    // A restart keeps the pause.
    let live = live.restart(DispatchOptions::default()).await;
    assert!(live.dispatch.pause_of("shop").is_some_and(|p| p.reject));
    let (status, _) = live.call("POST", "/v1/notifications", submit).await;
    assert_eq!(status, 503);
    assert_eq!(live.count(State::Queued).await, 100);
    assert_eq!(sim.stats().snapshot().accepted, 0);
    let (status, _) = live.call("POST", "/v1/apps/shop/resume", "").await;
    assert_eq!(status, 200);
    until("everything delivered", MINUTE, || async {
        live.count(State::Delivered).await == 100
    })
    .await;
    let (status, _) = live.call("POST", "/v1/notifications", submit).await;
    assert_eq!(status, 202);
    live.stop().await;
}

on_each_backend!(
    a_cancel_takes_back_what_waits_and_never_what_is_in_flight,
    a_request_cancelled_while_it_is_sent,
    an_app_wide_cancel_takes_back_what_waits,
    a_pause_holds_an_app_across_a_restart,
);

/// Scopes: a key of another app cannot cancel (or learn of) a notification, and only admin
/// keys pause or resume.
#[tokio::test]
async fn cancels_and_pauses_keep_to_the_keys_scopes() {
    use crate::api_harness::{ADMIN_KEY, ALL_KEY, SHOP_KEY, TestApi};
    let api = TestApi::start().await;
    let ids = api
        .submit(
            ALL_KEY,
            r#"{"app": "news", "tokens": ["aabbccdd"], "aps": {"alert": "hi"}}"#,
        )
        .await;
    let (status, _, body) = api
        .call("DELETE", &path_of(&ids[0]), Some(SHOP_KEY), None)
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (404, &serde_json::json!("not_found")),
        "{body}"
    );
    let (status, _, body) = api
        .call("POST", "/v1/apps/shop/pause", Some(SHOP_KEY), None)
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (403, &serde_json::json!("admin_required")),
        "{body}"
    );
    let (status, _, body) = api
        .call(
            "POST",
            "/v1/requests/not-a-request/cancel",
            Some(ADMIN_KEY),
            None,
        )
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (404, &serde_json::json!("not_found")),
        "{body}"
    );
    let (status, _, body) = api
        .call("POST", "/v1/apps/news/cancel", Some(SHOP_KEY), Some(""))
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (403, &serde_json::json!("forbidden_app")),
        "{body}"
    );
}
