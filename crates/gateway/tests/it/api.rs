use std::time::{SystemTime, UNIX_EPOCH};

use apns::{Expiration, Priority, PushType};
use gateway::spool::{Spool, State};
use serde_json::json;

use crate::api_harness::*;
use crate::live::Backend;

pub(crate) const T1: &str = "6a3c8f0e9d1b2a4c5e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5";
pub(crate) const T2: &str = "AABBCCDDEEFF00112233445566778899aabbccddeeff00112233445566778899";

pub(crate) fn alert(extra: serde_json::Value) -> String {
    let mut n = json!({"app": "shop", "tokens": [T1], "alert": {"title": "Hi", "body": "There"}});
    for (k, v) in extra.as_object().unwrap() {
        n[k] = v.clone();
    }
    n.to_string()
}

async fn a_submit_answers_one_id_per_token_in_order_after_commit(backend: Backend) {
    let api = TestApi::start_on(&backend).await;
    let body = json!({"notifications": [
        {"app": "shop", "tokens": [T1, T2], "alert": "one"},
        {"app": "shop", "tokens": [T2], "badge": 2},
    ]})
    .to_string();
    let ids = api.submit(SHOP_KEY, &body).await;
    assert_eq!(ids.len(), 3);
    // Committed before the answer: each id is in the spool, in request and token order.
    let tokens: Vec<String> = [T1, T2, T2].iter().map(|t| t.to_lowercase()).collect();
    for (id, t) in ids.iter().zip(&tokens) {
        let r = api
            .spool
            .get(*id)
            .await
            .unwrap()
            .expect("stored before 202");
        assert_eq!(r.token.as_str(), t);
        assert_eq!(r.state, State::Queued);
    }
    let req = api.spool.request_of(ids[0]).await.unwrap().unwrap();
    assert_eq!(&req.payload[..], br#"{"aps":{"alert":"one"}}"#);
    assert_eq!(req.push_type, PushType::Alert);
    assert_eq!(req.priority, Some(Priority::Immediate));
    assert_eq!(req.topic.unwrap().as_str(), "com.example.shop");
    assert_eq!(req.apns_expiration, None);
}

/// Every error code of the contract, with the index of the first bad notification.
async fn every_error_code_with_its_status_and_index(backend: Backend) {
    let api = TestApi::start_on(&backend).await;
    let long_id = "x".repeat(65);
    let big = "x".repeat(4100);
    let many: Vec<String> = (0..10_001).map(|i| format!("{i:064x}")).collect();
    let second_bad = |n: serde_json::Value| {
        json!({"notifications": [{"app": "shop", "tokens": [T1], "alert": "ok"}, n]}).to_string()
    };
    /// What, key, body, then the expected status, code and index.
    type Case<'a> = (&'a str, Option<&'a str>, String, u16, &'a str, Option<u64>);
    let cases: Vec<Case> = vec![
        ("no key", None, alert(json!({})), 401, "unauthorized", None),
        (
            "wrong key",
            Some("nope"),
            alert(json!({})),
            401,
            "unauthorized",
            None,
        ),
        (
            "app outside the key",
            Some(SHOP_KEY),
            second_bad(json!({"app": "news", "tokens": [T1], "alert": "x"})),
            403,
            "forbidden_app",
            Some(1),
        ),
        (
            "unknown app, all-apps key",
            Some(ALL_KEY),
            second_bad(json!({"app": "nope", "tokens": [T1], "alert": "x"})),
            400,
            "unknown_app",
            Some(1),
        ),
        (
            "not JSON",
            Some(SHOP_KEY),
            "{nope".into(),
            400,
            "invalid_json",
            None,
        ),
        (
            "too many tokens",
            Some(SHOP_KEY),
            json!({"app": "shop", "tokens": many, "alert": "x"}).to_string(),
            413,
            "too_many_tokens",
            None,
        ),
        (
            "payload too large",
            Some(SHOP_KEY),
            second_bad(json!({"app": "shop", "tokens": [T1], "alert": big})),
            400,
            "payload_too_large",
            Some(1),
        ),
        (
            "bad token",
            Some(SHOP_KEY),
            second_bad(json!({"app": "shop", "tokens": [T1, "xyz"], "alert": "x"})),
            400,
            "invalid_token",
            Some(1),
        ),
        (
            "unknown push type",
            Some(SHOP_KEY),
            alert(json!({"push_type": "telepathy"})),
            400,
            "invalid_push_type",
            Some(0),
        ),
        (
            "no push type to infer",
            Some(SHOP_KEY),
            json!({"app": "shop", "tokens": [T1], "data": {"k": 1}}).to_string(),
            400,
            "invalid_push_type",
            Some(0),
        ),
        (
            "priority 7",
            Some(SHOP_KEY),
            alert(json!({"priority": 7})),
            400,
            "invalid_priority",
            Some(0),
        ),
        (
            "background at 10",
            Some(SHOP_KEY),
            json!({"app": "shop", "tokens": [T1], "aps": {"content-available": 1}, "priority": 10})
                .to_string(),
            400,
            "invalid_priority",
            Some(0),
        ),
        (
            "another app's topic",
            Some(SHOP_KEY),
            alert(json!({"topic": "com.example.news"})),
            400,
            "invalid_topic",
            Some(0),
        ),
        (
            "long collapse id",
            Some(SHOP_KEY),
            alert(json!({"collapse_id": long_id})),
            400,
            "collapse_id_too_long",
            Some(0),
        ),
        (
            "expiration and ttl",
            Some(SHOP_KEY),
            alert(json!({"expiration": 2_000_000_000u64, "ttl": 60})),
            400,
            "conflicting_fields",
            Some(0),
        ),
        (
            "send_at and delay",
            Some(SHOP_KEY),
            alert(json!({"send_at": "2030-01-01T00:00:00Z", "delay": 5})),
            400,
            "conflicting_fields",
            Some(0),
        ),
        (
            "expired",
            Some(SHOP_KEY),
            alert(json!({"expiration": 1_000_000_000u64})),
            400,
            "already_expired",
            Some(0),
        ),
        (
            "unknown field",
            Some(SHOP_KEY),
            alert(json!({"colour": "red"})),
            400,
            "invalid_field",
            Some(0),
        ),
        (
            "wrong type",
            Some(SHOP_KEY),
            alert(json!({"badge": "three"})),
            400,
            "invalid_field",
            Some(0),
        ),
        (
            "aps inside data",
            Some(SHOP_KEY),
            alert(json!({"data": {"aps": {}}})),
            400,
            "invalid_field",
            Some(0),
        ),
        (
            "bad send_at",
            Some(SHOP_KEY),
            alert(json!({"send_at": "tomorrow"})),
            400,
            "invalid_field",
            Some(0),
        ),
        (
            "missing tokens",
            Some(SHOP_KEY),
            json!({"app": "shop", "alert": "x"}).to_string(),
            400,
            "invalid_field",
            Some(0),
        ),
    ];
    for (what, key, body, status, code, index) in cases {
        let (got, _, json) = api
            .call("POST", "/v1/notifications", key, Some(&body))
            .await;
        assert_eq!(got, status, "{what}: {json}");
        assert_eq!(json["error"]["code"], code, "{what}: {json}");
        assert!(
            json["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{what}"
        );
        assert_eq!(json["error"]["index"].as_u64(), index, "{what}: {json}");
    }
    let (status, _, json) = api
        .call_typed(
            "POST",
            "/v1/notifications",
            Some(SHOP_KEY),
            Some(&alert(json!({}))),
            "text/plain",
        )
        .await;
    assert_eq!(
        (status, json["error"]["code"].as_str()),
        (415, Some("unsupported_media_type"))
    );
    // Nothing of any refused request was stored.
    assert_eq!(api.spool.counts().await.unwrap(), vec![]);
}

async fn a_request_is_refused_whole_when_one_notification_is_bad(backend: Backend) {
    let api = TestApi::start_on(&backend).await;
    let body = json!({"notifications": [
        {"app": "shop", "tokens": [T1, T2], "alert": "fine"},
        {"app": "shop", "tokens": [T1], "alert": "fine too"},
        {"app": "shop", "tokens": [T1], "priority": 3, "alert": "bad"},
    ]})
    .to_string();
    let (status, _, json) = api
        .call("POST", "/v1/notifications", Some(SHOP_KEY), Some(&body))
        .await;
    assert_eq!(
        (status, json["error"]["index"].as_u64()),
        (400, Some(2)),
        "{json}"
    );
    assert_eq!(api.spool.counts().await.unwrap(), vec![], "nothing stored");
    assert_eq!(api.spool.pending(), 0);
}

async fn body_and_spool_limits_answer_413_and_503(backend: Backend) {
    let api = TestApi::start_with_on(&backend, "max_body_bytes = 1024", "max_pending = 2").await;
    let big = alert(json!({"data": {"pad": "x".repeat(2000)}}));
    let (status, _, json) = api
        .call("POST", "/v1/notifications", Some(SHOP_KEY), Some(&big))
        .await;
    assert_eq!(
        (status, json["error"]["code"].as_str()),
        (413, Some("body_too_large"))
    );
    api.submit(SHOP_KEY, &alert(json!({"tokens": [T1, T2]})))
        .await;
    let (status, headers, json) = api
        .call(
            "POST",
            "/v1/notifications",
            Some(SHOP_KEY),
            Some(&alert(json!({}))),
        )
        .await;
    assert_eq!(
        (status, json["error"]["code"].as_str()),
        (503, Some("spool_full")),
        "{json}"
    );
    assert_eq!(headers["retry-after"], "5");
    let (status, _, json) = api.call("GET", "/readyz", None, None).await;
    assert_eq!(
        (status, &json),
        (
            503,
            &json!({"status": "not_ready", "reasons": ["spool_full"]})
        ),
        "codes only, without a key"
    );
    let (_, _, json) = api.call("GET", "/readyz", Some(ADMIN_KEY), None).await;
    assert!(
        json["details"][0]["message"]
            .as_str()
            .unwrap()
            .contains("spool full"),
        "{json}"
    );
}

async fn defaults_for_push_type_priority_topic_and_expiry(backend: Backend) {
    let api = TestApi::start_on(&backend).await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Background is inferred from content-available alone, with priority 5.
    let ids = api
        .submit(
            SHOP_KEY,
            &json!({"app": "shop", "tokens": [T1], "aps": {"content-available": 1}}).to_string(),
        )
        .await;
    let r = api.spool.request_of(ids[0]).await.unwrap().unwrap();
    assert_eq!(
        (r.push_type, r.priority),
        (PushType::Background, Some(Priority::Conserve))
    );
    // A VoIP push gets the suffix; the bare bundle id is accepted and suffixed.
    let ids = api
        .submit(
            SHOP_KEY,
            &alert(json!({"push_type": "voip", "topic": "com.example.shop"})),
        )
        .await;
    let r = api.spool.request_of(ids[0]).await.unwrap().unwrap();
    assert_eq!(r.topic.unwrap().as_str(), "com.example.shop.voip");
    let ids = api.submit(SHOP_KEY, &alert(json!({"push_type": "liveactivity", "topic": "com.example.shop.push-type.liveactivity"}))).await;
    assert_eq!(
        api.spool
            .request_of(ids[0])
            .await
            .unwrap()
            .unwrap()
            .topic
            .unwrap()
            .as_str(),
        "com.example.shop.push-type.liveactivity"
    );
    // data goes beside aps; a raw aps is the base and alert replaces its key.
    let ids = api.submit(SHOP_KEY, &alert(json!({"aps": {"alert": "old", "category": "C"}, "alert": "new", "data": {"order": 7}}))).await;
    let r = api.spool.request_of(ids[0]).await.unwrap().unwrap();
    let payload: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
    assert_eq!(
        payload,
        json!({"aps": {"alert": "new", "category": "C"}, "order": 7})
    );
    // No expiration: no header, and the gateway gives up after default_ttl_s (3600 here).
    let ids = api.submit(SHOP_KEY, &alert(json!({}))).await;
    let rec = api.spool.get(ids[0]).await.unwrap().unwrap();
    assert_eq!(
        api.spool
            .request_of(ids[0])
            .await
            .unwrap()
            .unwrap()
            .apns_expiration,
        None
    );
    let exp = rec.expires_at.duration_since(UNIX_EPOCH).unwrap().as_secs();
    assert!((now + 3599..=now + 3602).contains(&exp), "{exp} vs {now}");
    // ttl counts from send_at; the notification waits as scheduled.
    let ids = api
        .submit(
            SHOP_KEY,
            &alert(json!({"send_at": "2099-01-01T01:00:00+01:00", "ttl": 60})),
        )
        .await;
    let rec = api.spool.get(ids[0]).await.unwrap().unwrap();
    assert_eq!(rec.state, State::Scheduled);
    let send_at = rec
        .send_at
        .unwrap()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert_eq!(send_at, 4_070_908_800, "2099-01-01T00:00:00Z");
    assert_eq!(
        api.spool
            .request_of(ids[0])
            .await
            .unwrap()
            .unwrap()
            .apns_expiration,
        Some(Expiration::At(4_070_908_860))
    );
    // delay schedules too; expiration 0 means one attempt.
    let ids = api
        .submit(SHOP_KEY, &alert(json!({"delay": 600, "expiration": 0})))
        .await;
    let rec = api.spool.get(ids[0]).await.unwrap().unwrap();
    assert_eq!(rec.state, State::Scheduled);
    assert_eq!(
        api.spool
            .request_of(ids[0])
            .await
            .unwrap()
            .unwrap()
            .apns_expiration,
        Some(Expiration::Immediately)
    );
}

on_each_backend!(
    a_submit_answers_one_id_per_token_in_order_after_commit,
    every_error_code_with_its_status_and_index,
    a_request_is_refused_whole_when_one_notification_is_bad,
    defaults_for_push_type_priority_topic_and_expiry,
    body_and_spool_limits_answer_413_and_503,
);
