//! The API after a submit: status documents, lookup, dead tokens and feedback, stats, health,
//! readiness, and the OpenAPI document (the submit side is in `api`).

use std::time::{Duration, UNIX_EPOCH};

use apns::Reason;
use gateway::spool::{Completion, DeadToken, Spool, State};
use serde_json::json;

use crate::api::{T1, T2, alert};
use crate::api_harness::*;
use crate::harness::token;
use crate::live::Backend;

async fn the_status_document_follows_a_notification_through_its_states(backend: Backend) {
    let api = TestApi::start_on(&backend).await;
    let ids = api
        .submit(SHOP_KEY, &alert(json!({"tokens": [T1, T2]})))
        .await;
    let path = format!("/v1/notifications/{}", ids[0]);
    let (status, _, doc) = api.call("GET", &path, Some(SHOP_KEY), None).await;
    assert_eq!(status, 200);
    assert_eq!(doc["id"], ids[0].to_string());
    assert_eq!(
        (doc["app"].as_str(), doc["token"].as_str()),
        (Some("shop"), Some(T1))
    );
    assert_eq!(
        (doc["state"].as_str(), doc["attempts"].as_u64()),
        (Some("queued"), Some(0))
    );
    assert!(doc["status_code"].is_null() && doc["reason"].is_null() && doc["send_at"].is_null());
    assert!(doc["created_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(doc.as_object().unwrap().len(), 14);
    assert!(doc["request_id"].is_string(), "{doc}");
    assert!(doc["connection"].is_null(), "not attempted yet");
    assert_eq!(doc["history"], json!([]), "no attempt yet");
    api.spool
        .complete(
            vec![
                Completion {
                    id: ids[0],
                    state: State::Delivered,
                    attempts: 1,
                    status: Some(200),
                    reason: None,
                    due_at: None,
                    conn: None,
                },
                Completion {
                    id: ids[1],
                    state: State::Failed,
                    attempts: 2,
                    status: Some(410),
                    reason: Some(Reason::Unregistered.into()),
                    due_at: None,
                    conn: None,
                },
            ],
            Vec::new(),
        )
        .await
        .unwrap();
    let (_, _, doc) = api.call("GET", &path, Some(SHOP_KEY), None).await;
    assert_eq!(
        (
            doc["state"].as_str(),
            doc["status_code"].as_u64(),
            doc["attempts"].as_u64()
        ),
        (Some("delivered"), Some(200), Some(1))
    );
    // Lookup answers many at once; unknown ids are left out.
    let body =
        json!({"ids": [ids[0].to_string(), ids[1].to_string(), apns::ApnsId::new().to_string()]})
            .to_string();
    let (status, _, json) = api
        .call(
            "POST",
            "/v1/notifications/lookup",
            Some(SHOP_KEY),
            Some(&body),
        )
        .await;
    assert_eq!(status, 200);
    let docs = json["notifications"].as_array().unwrap();
    assert_eq!(docs.len(), 2);
    assert_eq!(
        (docs[1]["state"].as_str(), docs[1]["reason"].as_str()),
        (Some("failed"), Some("Unregistered"))
    );
    // Unknown, malformed and foreign ids are all 404.
    for (p, key) in [
        (
            format!("/v1/notifications/{}", apns::ApnsId::new()),
            SHOP_KEY,
        ),
        ("/v1/notifications/not-a-uuid".to_owned(), SHOP_KEY),
    ] {
        let (status, _, json) = api.call("GET", &p, Some(key), None).await;
        assert_eq!(
            (status, json["error"]["code"].as_str()),
            (404, Some("not_found"))
        );
    }
    let news = api
        .submit(
            ALL_KEY,
            &json!({"app": "news", "tokens": [T1], "alert": "x"}).to_string(),
        )
        .await;
    let (status, _, _) = api
        .call(
            "GET",
            &format!("/v1/notifications/{}", news[0]),
            Some(SHOP_KEY),
            None,
        )
        .await;
    assert_eq!(status, 404, "another app's notification is not visible");
    let (status, _, _) = api
        .call(
            "GET",
            &format!("/v1/notifications/{}", news[0]),
            Some(ADMIN_KEY),
            None,
        )
        .await;
    assert_eq!(status, 200);
}

/// A notification's history: each attempt a retry followed, then the last (the record itself),
/// with the connection each went out on; lookups of many carry no history.
async fn the_status_document_lists_every_attempt_with_its_connection(backend: Backend) {
    let api = TestApi::start_on(&backend).await;
    let ids = api.submit(SHOP_KEY, &alert(json!({"tokens": [T1]}))).await;
    let attempt = |state, attempts, status: u16, reason: Option<Reason>, conn| Completion {
        id: ids[0],
        state,
        attempts,
        status: Some(status),
        reason: reason.map(Into::into),
        due_at: (state == State::Queued).then(std::time::SystemTime::now),
        conn: Some(conn),
    };
    let path = format!("/v1/notifications/{}", ids[0]);
    for (n, c) in [
        attempt(State::Queued, 1, 500, Some(Reason::InternalServerError), 7),
        attempt(State::Queued, 2, 429, Some(Reason::TooManyRequests), 7),
    ]
    .into_iter()
    .enumerate()
    {
        api.spool.complete(vec![c], Vec::new()).await.unwrap();
        let (_, _, doc) = api.call("GET", &path, Some(SHOP_KEY), None).await;
        assert_eq!(
            doc["history"].as_array().unwrap().len(),
            n + 1,
            "a retried attempt is in the history at once: {doc}"
        );
    }
    // Put back unsent (a reload closed its pool): not an attempt.
    api.spool
        .complete(
            vec![Completion {
                id: ids[0],
                state: State::Queued,
                attempts: 2,
                status: None,
                reason: None,
                due_at: None,
                conn: None,
            }],
            Vec::new(),
        )
        .await
        .unwrap();
    api.spool
        .complete(vec![attempt(State::Delivered, 3, 200, None, 9)], Vec::new())
        .await
        .unwrap();
    let (status, _, doc) = api.call("GET", &path, Some(SHOP_KEY), None).await;
    assert_eq!(status, 200);
    assert_eq!(
        (doc["state"].as_str(), doc["connection"].as_u64()),
        (Some("delivered"), Some(9))
    );
    let history: Vec<_> = doc["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["status_code"].as_u64(),
                a["reason"].as_str(),
                a["connection"].as_u64(),
            )
        })
        .collect();
    assert_eq!(
        history,
        [
            (Some(500), Some("InternalServerError"), Some(7)),
            (Some(429), Some("TooManyRequests"), Some(7)),
            (Some(200), None, Some(9)),
        ]
    );
    assert!(
        doc["history"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["at"].as_str().unwrap().ends_with('Z'))
    );
    let body = json!({"ids": [ids[0].to_string()]}).to_string();
    let (_, _, json) = api
        .call(
            "POST",
            "/v1/notifications/lookup",
            Some(SHOP_KEY),
            Some(&body),
        )
        .await;
    let doc = &json["notifications"][0];
    assert_eq!(doc["connection"], 9);
    assert!(doc.get("history").is_none(), "{doc}");
}

/// `GET /v1/tokens/{app}/{token}`: whether the token is registered dead, and its last
/// notifications of that app, newest first, within the key's scopes.
async fn a_token_lookup_shows_its_last_notifications_and_whether_it_is_dead(backend: Backend) {
    let api = TestApi::start_on(&backend).await;
    let mut shop = Vec::new();
    for _ in 0..3 {
        shop.extend(
            api.submit(SHOP_KEY, &alert(json!({"tokens": [T1, T2]})))
                .await,
        );
    }
    // The same token in another app is another app's business.
    api.submit(
        ALL_KEY,
        &json!({"app": "news", "tokens": [T1], "alert": "x"}).to_string(),
    )
    .await;
    api.spool
        .register_dead_token(DeadToken {
            app: "shop".into(),
            token: apns::DeviceToken::parse(T1).unwrap(),
            reason: Reason::Unregistered,
            since: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        })
        .await
        .unwrap();
    let path = format!("/v1/tokens/shop/{T1}");
    let (status, _, doc) = api.call("GET", &path, Some(SHOP_KEY), None).await;
    assert_eq!(status, 200, "{doc}");
    assert_eq!(
        (doc["app"].as_str(), doc["token"].as_str()),
        (Some("shop"), Some(T1))
    );
    assert_eq!(
        doc["dead"],
        json!({"reason": "Unregistered", "since": "2023-11-14T22:13:20.000Z"})
    );
    assert_eq!(doc["truncated"], false);
    let found: Vec<&str> = doc["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    // Newest first is the ids' order (UUIDv7): within one millisecond, not submission order.
    let mut t1: Vec<apns::ApnsId> = shop.iter().step_by(2).copied().collect();
    t1.sort_unstable_by(|a, b| b.as_uuid().cmp(a.as_uuid()));
    let wanted: Vec<String> = t1.iter().map(ToString::to_string).collect();
    assert_eq!(found, wanted, "T1's shop notifications, newest first");
    let (_, _, doc) = api
        .call("GET", &format!("{path}?limit=1"), Some(SHOP_KEY), None)
        .await;
    assert_eq!(doc["notifications"].as_array().unwrap().len(), 1);
    assert_eq!(doc["notifications"][0]["id"], wanted[0]);
    // Cleared, the token is no longer dead.
    let (status, _, _) = api
        .call(
            "DELETE",
            &format!("/v1/apps/shop/feedback/{T1}"),
            Some(SHOP_KEY),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (_, _, doc) = api.call("GET", &path, Some(SHOP_KEY), None).await;
    assert!(doc["dead"].is_null(), "{doc}");
    // A token never sent to: known to nobody, and not an error.
    let (status, _, doc) = api
        .call(
            "GET",
            &format!("/v1/tokens/shop/{}", "ab".repeat(32)),
            Some(SHOP_KEY),
            None,
        )
        .await;
    assert_eq!(
        (status, doc["notifications"].as_array().map(Vec::len)),
        (200, Some(0))
    );
    for (path, key, status, code) in [
        (
            format!("/v1/tokens/news/{T1}"),
            SHOP_KEY,
            403,
            "forbidden_app",
        ),
        (format!("/v1/tokens/nope/{T1}"), ALL_KEY, 404, "unknown_app"),
        (
            "/v1/tokens/shop/xyz".to_owned(),
            SHOP_KEY,
            400,
            "invalid_token",
        ),
        (format!("{path}?limit=0"), SHOP_KEY, 400, "invalid_field"),
        (format!("{path}?limit=101"), SHOP_KEY, 400, "invalid_field"),
    ] {
        let (got, _, json) = api.call("GET", &path, Some(key), None).await;
        assert_eq!(
            (got, json["error"]["code"].as_str()),
            (status, Some(code)),
            "{path}"
        );
    }
    let (status, _, _) = api.call("GET", &path, None, None).await;
    assert_eq!(status, 401);
}

async fn feedback_lists_dead_tokens_and_delete_clears_them(backend: Backend) {
    let api = TestApi::start_on(&backend).await;
    for (i, secs) in [
        (1u64, 1_700_000_300u64),
        (2, 1_700_000_100),
        (3, 1_700_000_200),
    ] {
        api.spool
            .register_dead_token(DeadToken {
                app: "shop".into(),
                token: token(i),
                reason: Reason::Unregistered,
                since: UNIX_EPOCH + Duration::from_secs(secs),
            })
            .await
            .unwrap();
    }
    let (status, _, json) = api
        .call("GET", "/v1/apps/shop/feedback", Some(SHOP_KEY), None)
        .await;
    assert_eq!(status, 200);
    let ts: Vec<u64> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["timestamp"].as_u64().unwrap())
        .collect();
    assert_eq!(
        ts,
        [1_700_000_100, 1_700_000_200, 1_700_000_300],
        "ascending by time"
    );
    assert_eq!(json[0]["token"], token(2).as_str());
    assert_eq!(json[0]["reason"], "Unregistered");
    let (_, _, json) = api
        .call(
            "GET",
            "/v1/apps/shop/feedback?since=1700000150&limit=1",
            Some(SHOP_KEY),
            None,
        )
        .await;
    assert_eq!(json.as_array().unwrap().len(), 1);
    assert_eq!(json[0]["timestamp"], 1_700_000_200);
    let (status, _, json) = api
        .call(
            "GET",
            "/v1/apps/shop/feedback?limit=20000",
            Some(SHOP_KEY),
            None,
        )
        .await;
    assert_eq!(
        (status, json["error"]["code"].as_str()),
        (400, Some("invalid_field"))
    );
    let del = format!("/v1/apps/shop/feedback/{}", token(2).as_str());
    let (status, _, _) = api.call("DELETE", &del, Some(SHOP_KEY), None).await;
    assert_eq!(status, 204);
    let (status, _, json) = api.call("DELETE", &del, Some(SHOP_KEY), None).await;
    assert_eq!(
        (status, json["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    assert_eq!(api.spool.dead_token("shop", &token(2)).await.unwrap(), None);
    // Scope and existence in the path.
    let (status, _, json) = api
        .call("GET", "/v1/apps/news/feedback", Some(SHOP_KEY), None)
        .await;
    assert_eq!(
        (status, json["error"]["code"].as_str()),
        (403, Some("forbidden_app"))
    );
    let (status, _, json) = api
        .call("GET", "/v1/apps/nope/feedback", Some(ALL_KEY), None)
        .await;
    assert_eq!(
        (status, json["error"]["code"].as_str()),
        (404, Some("unknown_app"))
    );
}

async fn stats_health_and_readiness(backend: Backend) {
    let api = TestApi::start_on(&backend).await;
    api.submit(SHOP_KEY, &alert(json!({"tokens": [T1, T2]})))
        .await;
    api.submit(
        ALL_KEY,
        &json!({"app": "news", "tokens": [T1], "alert": "x"}).to_string(),
    )
    .await;
    let (status, _, json) = api.call("GET", "/v1/stats", Some(SHOP_KEY), None).await;
    assert_eq!(status, 200);
    assert_eq!(
        json["totals"]["queued"], 2,
        "limited to the key's apps: {json}"
    );
    assert_eq!(json["totals"]["delivered"], 0);
    assert!(json["apps"].get("news").is_none());
    assert_eq!(json["apps"]["shop"]["queued"], 2);
    assert_eq!(json["apps"]["shop"]["healthy"], true);
    // The settings in force, defaults filled in, the credential named but not shown.
    let settings = &json["apps"]["shop"]["settings"];
    assert_eq!(
        settings,
        &json!({
            "environment": "sandbox",
            "endpoint": "https://api.sandbox.push.apple.com",
            "topic": "com.example.shop",
            "max_connections": 4,
            "delivery_response_timeout_ms": 10000,
            "idle_timeout_s": 300,
            "max_attempts": 8,
            "default_ttl_s": 3600,
            "suppress_dead_tokens": true,
            "credential": {
                "kind": "token",
                "file": "AuthKey_ABC123DEFG.p8",
                "key_id": "ABC123DEFG",
                "team_id": "TEAM123456",
            },
            "credentials_configured": 1,
        })
    );
    assert!(!json.to_string().contains("PRIVATE KEY"));
    let (_, _, json) = api.call("GET", "/v1/stats", Some(ADMIN_KEY), None).await;
    assert_eq!(
        (
            json["totals"]["queued"].as_u64(),
            json["apps"]["news"]["queued"].as_u64()
        ),
        (Some(3), Some(1))
    );
    let (status, _, _) = api.call("GET", "/v1/stats", None, None).await;
    assert_eq!(status, 401);
    let (status, _, json) = api.call("GET", "/healthz", None, None).await;
    assert_eq!((status, json["status"].as_str()), (200, Some("ok")));
    let (status, _, json) = api.call("GET", "/readyz", None, None).await;
    assert_eq!(
        (status, json),
        (200, json!({"status": "ready", "reasons": []}))
    );
    let (_, _, json) = api.call("GET", "/readyz", Some(ADMIN_KEY), None).await;
    assert_eq!(json["details"], json!([]), "an admin key reads the details");
    let (_, _, json) = api.call("GET", "/readyz", Some(SHOP_KEY), None).await;
    assert!(
        json.get("details").is_none(),
        "another key does not: {json}"
    );
    let (status, _, json) = api.call("GET", "/v2/nothing", None, None).await;
    assert_eq!(
        (status, json["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_covers_every_route_and_error_code() {
    let api = TestApi::start().await;
    let (status, _, doc) = api.call("GET", "/openapi.json", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    let mut paths: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    paths.sort_unstable();
    assert_eq!(
        paths,
        [
            "/healthz",
            "/metrics",
            "/openapi.json",
            "/post",
            "/readyz",
            "/v1.0/inject",
            "/v1/apps/{app}/cancel",
            "/v1/apps/{app}/feedback",
            "/v1/apps/{app}/feedback/{token}",
            "/v1/apps/{app}/pause",
            "/v1/apps/{app}/resume",
            "/v1/notifications",
            "/v1/notifications/lookup",
            "/v1/notifications/{id}",
            "/v1/requests/{request_id}/cancel",
            "/v1/stats",
            "/v1/tokens/{app}/{token}",
        ]
    );
    let codes: Vec<&str> = doc["components"]["schemas"]["ErrorCode"]["enum"]
        .as_array()
        .map(|a| a.iter().map(|v| v.as_str().unwrap()).collect())
        .unwrap_or_else(|| {
            // utoipa may describe a documented enum as oneOf of single values.
            doc["components"]["schemas"]["ErrorCode"]["oneOf"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v["enum"][0].as_str().unwrap())
                .collect()
        });
    for code in [
        "unauthorized",
        "forbidden_app",
        "unknown_app",
        "not_found",
        "unsupported_media_type",
        "invalid_json",
        "body_too_large",
        "too_many_tokens",
        "payload_too_large",
        "invalid_token",
        "invalid_push_type",
        "invalid_priority",
        "invalid_topic",
        "collapse_id_too_long",
        "conflicting_fields",
        "already_expired",
        "invalid_field",
        "spool_full",
        "spool_unavailable",
        "internal",
        "csrf_failed",
        "app_paused",
        "not_waiting",
        "admin_required",
    ] {
        assert!(codes.contains(&code), "{code} in {codes:?}");
    }
    // Each submit error's status is documented for the route.
    let submit = &doc["paths"]["/v1/notifications"]["post"]["responses"];
    for status in ["202", "400", "401", "403", "413", "415", "500", "503"] {
        assert!(
            submit.get(status).is_some(),
            "{status} for POST /v1/notifications"
        );
    }
}

on_each_backend!(
    the_status_document_follows_a_notification_through_its_states,
    the_status_document_lists_every_attempt_with_its_connection,
    a_token_lookup_shows_its_last_notifications_and_whether_it_is_dead,
    feedback_lists_dead_tokens_and_delete_clears_them,
    stats_health_and_readiness,
);
