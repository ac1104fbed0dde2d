//! Idempotency through the ways in: `Idempotency-Key` on the API and the injector (replayed
//! answers, another body refused, scoped per API key, a key still committing), and SMTP's
//! `Message-ID`.

use serde_json::{Value, json};

use crate::api::{T1, T2};
use crate::api_harness::*;
use crate::live::Backend;

const SUBMIT: &str = "/v1/notifications";

async fn post(api: &TestApi, key: &str, idem: &str, body: &str) -> (u16, http::HeaderMap, Value) {
    api.call_with(
        "POST",
        SUBMIT,
        Some(key),
        Some(body),
        &[("idempotency-key", idem)],
    )
    .await
}

fn replayed(h: &http::HeaderMap) -> bool {
    h.get("idempotent-replayed").is_some_and(|v| v == "true")
}

async fn an_idempotency_key_replays_the_first_answer_and_refuses_another_body(backend: Backend) {
    let api = TestApi::start_on(&backend).await;
    let body = json!({"app": "shop", "tokens": [T1, T2], "alert": "order shipped"}).to_string();
    let (status, headers, first) = post(&api, SHOP_KEY, "order-1", &body).await;
    assert_eq!(status, 202, "{first}");
    assert!(!replayed(&headers));
    assert_eq!(api.stored().await, 2);

    // The client lost the answer and sends it again, bare or as the draft's quoted string.
    for idem in ["order-1", "\"order-1\""] {
        let (status, headers, again) = post(&api, SHOP_KEY, idem, &body).await;
        assert_eq!((status, &again), (202, &first), "the first answer's ids");
        assert!(replayed(&headers), "Idempotent-Replayed: true");
    }
    assert_eq!(api.stored().await, 2, "nothing stored again");

    let other_body = json!({"app": "shop", "tokens": [T1], "alert": "another"}).to_string();
    let (status, _, refused) = post(&api, SHOP_KEY, "order-1", &other_body).await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (422, Some("idempotency_key_reused")),
        "{refused}"
    );

    // Keys are per API key: another caller's "order-1" is its own.
    let (status, headers, theirs) = post(&api, ALL_KEY, "order-1", &body).await;
    assert_eq!(status, 202, "{theirs}");
    assert!(!replayed(&headers));
    assert_ne!(theirs, first);
    assert_eq!(api.stored().await, 4);

    for bad in ["", &"k".repeat(256), "two words"] {
        let (status, _, e) = post(&api, SHOP_KEY, bad, &body).await;
        assert_eq!(
            (status, e["error"]["code"].as_str()),
            (400, Some("invalid_field")),
            "{bad:?}: {e}"
        );
        assert!(
            e["error"]["message"]
                .as_str()
                .unwrap()
                .contains("Idempotency-Key"),
            "{e}"
        );
    }
    assert_eq!(api.stored().await, 4, "nothing of a refused key stored");
}

/// Replayed per recipient as first answered — here with a part made once per app (listed
/// under each of that app's recipients) and apps interleaved, so that the spool's order (by
/// request) and the answer's (by recipient) differ.
async fn the_injector_replays_an_injection_sent_twice(backend: Backend) {
    let api = TestApi::start_on(&backend).await;
    let body = |badge: u32| {
        let template = format!(
            "Content-Type: multipart/mixed; boundary=x\r\n\r\n\
             --x\r\nContent-Type: message/vnd.msys.apn\r\n\r\n\
             X-Device-Token: {T1}\r\n\r\n{{\"aps\":{{\"badge\":1}}}}\r\n\
             --x\r\nContent-Type: message/vnd.msys.apn\r\n\r\n{{\"aps\":{{\"badge\":{badge}}}}}\r\n\
             --x--\r\n"
        );
        json!({
            "template": template,
            "recipients": [{"to": format!("{T1}@shop")}, {"to": format!("{T2}@news")}, {"to": format!("{T2}@shop")}],
        })
        .to_string()
    };
    let api = &api;
    let send = |body: String| async move {
        api.call_with(
            "POST",
            "/v1.0/inject",
            Some(ALL_KEY),
            Some(&body),
            &[("idempotency-key", "campaign-7")],
        )
        .await
    };
    let (status, headers, first) = send(body(2)).await;
    assert_eq!(status, 200, "{first}");
    assert!(!replayed(&headers));
    // The first part once per app (shop's listed under both shop recipients), the second
    // once per recipient.
    assert_eq!(api.stored().await, 5);
    assert_eq!(first["results"][0]["ids"][0], first["results"][2]["ids"][0]);
    let (status, headers, again) = send(body(2)).await;
    assert_eq!(
        (status, &again),
        (200, &first),
        "per recipient, as answered first"
    );
    assert!(replayed(&headers));
    assert_eq!(api.stored().await, 5);
    let (status, _, refused) = send(body(3)).await;
    assert_eq!(status, 422, "{refused}");
    assert!(
        refused["results"][0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("554 5.6.0"),
        "{refused}"
    );
}

/// While a request is being committed (here: the spool's file is locked by another writer), a
/// second one under its key is told so at once — `409 idempotency_in_progress` with
/// Retry-After — instead of waiting to become a duplicate; once the first is committed, the
/// same request is a replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_still_committing_answers_409() {
    let api = TestApi::start().await;
    let body = json!({"app": "shop", "tokens": [T1], "alert": "once"}).to_string();
    let lock = rusqlite::Connection::open(api.dir.path().join("spool.db")).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    // Two at once: one takes the key and cannot commit until the lock goes; the other is
    // answered at once, and is the first to finish.
    let api = std::sync::Arc::new(api);
    let send = || {
        let (api, body) = (std::sync::Arc::clone(&api), body.clone());
        tokio::spawn(async move { post(&api, SHOP_KEY, "slow", &body).await })
    };
    let (mut a, mut b) = (send(), send());
    let (first, other) = tokio::select! {
        r = &mut a => (r.unwrap(), b),
        r = &mut b => (r.unwrap(), a),
    };
    lock.execute_batch("ROLLBACK").unwrap();
    let (conflict, committed) = (first, other.await.unwrap());
    assert_eq!(committed.0, 202, "{committed:?}");
    assert_eq!(
        (conflict.0, conflict.2["error"]["code"].as_str()),
        (409, Some("idempotency_in_progress")),
        "{conflict:?}"
    );
    assert!(conflict.1.contains_key("retry-after"));
    let (status, headers, replay) = post(&api, SHOP_KEY, "slow", &body).await;
    assert_eq!((status, &replay), (202, &committed.2));
    assert!(replayed(&headers));
    assert_eq!(api.stored().await, 1);
}

async fn an_smtp_message_sent_twice_is_stored_once_by_its_message_id(backend: Backend) {
    let api = TestApi::start_sections_on(&backend, "", "", crate::smtp::SMTP, |_| ()).await;
    let smtp = api.smtp.unwrap();
    let message = |text: &str| {
        format!(
            "Message-ID: <m1@app.example>\r\n{}",
            crate::smtp::seed_message(true, T1)
        )
        .replace("You have mail", text)
    };
    let send =
        |to: &'static [&'static str], text: &str| crate::smtp::lettre(smtp, to, message(text));
    let first = send(&["devices@shop"], "You have mail").await.unwrap();
    let again = send(&["devices@shop"], "You have mail").await.unwrap();
    assert!(
        first.starts_with("250 2.0.0 1 notification queued"),
        "{first}"
    );
    assert_eq!(again, first, "the same answer, the same first id");
    assert_eq!(api.stored().await, 1);

    let refused = send(&["devices@shop"], "Other text").await.unwrap_err();
    assert!(refused.contains("Message-ID was sent before"), "{refused}");

    // The same message to other recipients (a client splitting its recipients over several
    // transactions) is another part of it, stored.
    let split = send(&["devices@shop", "more@shop"], "You have mail")
        .await
        .unwrap();
    assert!(split.starts_with("250"), "{split}");
    assert_eq!(api.stored().await, 2);
    // The same recipients in another order, in another case: the same set, a replay.
    let reordered = send(&["More@shop", "devices@shop"], "You have mail")
        .await
        .unwrap();
    assert_eq!(reordered, split);
    assert_eq!(api.stored().await, 2);
}

/// A retry whose absolute expiration has passed since the first was stored no longer parses
/// (`already_expired`); it is answered as the first one was, all the same.
async fn a_retry_past_its_expiration_is_still_a_replay(backend: Backend) {
    let api = TestApi::start_on(&backend).await;
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    let expiration = now() + 1;
    let body = json!({"app": "shop", "tokens": [T1], "alert": "soon", "expiration": expiration})
        .to_string();
    let (status, _, first) = post(&api, SHOP_KEY, "short-lived", &body).await;
    assert_eq!(status, 202, "{first}");
    crate::live::until(
        "the expiration passed",
        std::time::Duration::from_secs(5),
        || async { now() > expiration },
    )
    .await;
    let (status, _, e) = api.call("POST", SUBMIT, Some(SHOP_KEY), Some(&body)).await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (400, Some("already_expired")),
        "without the key, it is refused: {e}"
    );
    let (status, headers, again) = post(&api, SHOP_KEY, "short-lived", &body).await;
    assert_eq!((status, &again), (202, &first));
    assert!(replayed(&headers));
    assert_eq!(api.stored().await, 1);
}

on_each_backend!(
    a_retry_past_its_expiration_is_still_a_replay,
    an_idempotency_key_replays_the_first_answer_and_refuses_another_body,
    the_injector_replays_an_injection_sent_twice,
    an_smtp_message_sent_twice_is_stored_once_by_its_message_id,
);
