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
    assert_eq!(doc.as_object().unwrap().len(), 11);
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
                },
                Completion {
                    id: ids[1],
                    state: State::Failed,
                    attempts: 2,
                    status: Some(410),
                    reason: Some(Reason::Unregistered.into()),
                    due_at: None,
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
    assert_eq!((status, json["ready"].as_bool()), (200, Some(true)));
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
            "/v1/apps/{app}/feedback",
            "/v1/apps/{app}/feedback/{token}",
            "/v1/notifications",
            "/v1/notifications/lookup",
            "/v1/notifications/{id}",
            "/v1/stats",
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
    feedback_lists_dead_tokens_and_delete_clears_them,
    stats_health_and_readiness,
);
