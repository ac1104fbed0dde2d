//! Limits per caller (#25, item 5): a key's rate limit is one bucket for every way in — the
//! API, the injector, SMTP AUTH (a beanstalkd tube's `as_key` is in `beanstalkd`) — and
//! refused credentials are counted and, from an address that keeps failing, refused slowly.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::api::{T1, alert};
use crate::api_harness::*;
use crate::live::counter_where as counter;
use crate::smtp::SMTP;

const LIMITED_KEY: &str = "limited-key-0123456789";

/// A key that may send 100 notifications at once and then one a second: whatever follows the
/// first 100 waits tens of seconds for its tokens, so nothing here races the refill.
fn limited() -> String {
    format!(
        "[[api_keys]]\nname = \"limited\"\nkey_sha256 = \"{}\"\napps = [\"*\"]\nrate_per_s = 1\nburst = 100\n",
        gateway::auth::key_sha256_hex(LIMITED_KEY)
    )
}

fn tokens(from: u64, n: u64) -> Vec<String> {
    (from..from + n)
        .map(|i| crate::harness::token(i).as_str().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_s_rate_is_one_bucket_for_the_api_the_injector_and_smtp() {
    gateway::metrics::handle();
    let sections = format!(
        "{SMTP}tls_cert = \"smtp.pem\"\ntls_key = \"smtp-key.pem\"\nrequire_auth = true\n\n{}",
        limited()
    );
    let api = TestApi::start_sections("", "", &sections, |d| {
        crate::api_harness::write_tls(d, "smtp")
    })
    .await;
    let body =
        |from, n| json!({"app": "shop", "tokens": tokens(from, n), "alert": "x"}).to_string();
    // The burst, at once.
    let (status, _, json) = api
        .call(
            "POST",
            "/v1/notifications",
            Some(LIMITED_KEY),
            Some(&body(0, 100)),
        )
        .await;
    assert_eq!(status, 202, "{json}");
    // Then 50 more would need 50 s of refill: 429, with how long to wait.
    let (status, headers, json) = api
        .call(
            "POST",
            "/v1/notifications",
            Some(LIMITED_KEY),
            Some(&body(100, 50)),
        )
        .await;
    assert_eq!(
        (status, json["error"]["code"].as_str()),
        (429, Some("rate_limited")),
        "{json}"
    );
    let wait: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((30..=50).contains(&wait), "about 50 s: {wait}");
    assert!(
        json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("1 notifications a second")
    );
    // The injector, with the same key: Momentum's failure document, 451 4.7.1 per recipient.
    let inject = json!({
        "template": crate::inject::PER_RECIPIENT,
        "recipients": tokens(200, 20).iter().map(|t| json!({"to": format!("{t}@shop")})).collect::<Vec<_>>(),
    });
    let (status, headers, json) = api
        .call(
            "POST",
            "/v1.0/inject",
            Some(LIMITED_KEY),
            Some(&inject.to_string()),
        )
        .await;
    assert_eq!(status, 429, "{json}");
    assert!(headers.contains_key("retry-after"));
    assert!(
        json["results"][0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("451 4.7.1"),
        "{json}"
    );
    // SMTP AUTH as the same key: 30 recipients, 451 4.7.1 at the end of DATA.
    let ca = api.dir.path().join("smtp.pem");
    let rcpts: Vec<String> = tokens(300, 30)
        .iter()
        .map(|t| format!("{t}@shop"))
        .collect();
    let message = format!(
        "From: app@example.com\r\nTo: devices@shop\r\nSubject: push\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\n{}--b--\r\n",
        crate::inject::PER_RECIPIENT
    );
    let steps = crate::smtp::smtplib(
        &api,
        message.as_bytes(),
        &rcpts.join(","),
        &[
            "--starttls",
            ca.to_str().unwrap(),
            "--login",
            "limited",
            "KEY",
        ],
        &[("KEY", LIMITED_KEY)],
    )
    .await;
    let data = crate::smtp::step(&steps, "data");
    assert_eq!(data["code"], 451, "{steps:?}");
    assert!(
        data["text"].as_str().unwrap().starts_with("4.7.1"),
        "{data}"
    );
    // Nothing of the refused is stored; another key is not limited.
    assert_eq!(api.stored().await, 100);
    let ids = api.submit(SHOP_KEY, &alert(json!({"tokens": [T1]}))).await;
    assert_eq!(ids.len(), 1);
    assert!(counter("pushgate_rate_limited_total", "key=\"limited\"") >= 3.0);
}

/// Slowing this host's own address down is what `slow_failed_logins = "all"` asks for (the
/// default spares it: a reverse proxy here would slow every client behind it).
const SLOW_ALL: &str = "slow_failed_logins = \"all\"";

/// How long `call` took.
async fn timed<F: Future<Output = (u16, http::HeaderMap, serde_json::Value)>>(
    call: F,
) -> (u16, Duration) {
    let started = Instant::now();
    let (status, _, _) = call.await;
    (status, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_keys_are_counted_and_an_address_that_keeps_failing_waits() {
    gateway::metrics::handle();
    let api = TestApi::start_with_on(&crate::live::Backend::Sqlite, SLOW_ALL, "").await;
    let before = counter("pushgate_auth_failures_total", "listener=\"http\"");
    // A request without a key is no failure; six refused keys are (the dashboard's login
    // form counts too). The first five went at once.
    for _ in 0..10 {
        assert_eq!(api.call("GET", "/v1/stats", None, None).await.0, 401);
    }
    let (status, _, _) = api
        .call_with(
            "POST",
            "/login",
            None,
            Some("key=not-a-key"),
            &[("content-type", "application/x-www-form-urlencoded")],
        )
        .await;
    assert_eq!(status, 401);
    for _ in 0..5 {
        let (status, _, _) = api.call("GET", "/v1/stats", Some("not-a-key"), None).await;
        assert_eq!(status, 401);
    }
    // Past five, whatever a credential from this address is, it waits first: 250 ms, then
    // 500 ms (each refusal doubles it) — a good key too, though it is then served.
    let (status, took) = timed(api.call("GET", "/v1/stats", Some("still-not"), None)).await;
    assert!(
        status == 401 && took >= Duration::from_millis(250),
        "{status} {took:?}"
    );
    let (status, took) = timed(api.call("GET", "/v1/stats", Some(SHOP_KEY), None)).await;
    assert!(
        status == 200 && took >= Duration::from_millis(500),
        "{status} {took:?}"
    );
    let after = counter("pushgate_auth_failures_total", "listener=\"http\"");
    assert!(after - before >= 7.0, "{before} -> {after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_on_readyz_reads_the_codes_and_counts_as_a_failure() {
    let api = TestApi::start_with_on(&crate::live::Backend::Sqlite, SLOW_ALL, "").await;
    for _ in 0..6 {
        let (status, _, json) = api.call("GET", "/readyz", Some("not-a-key"), None).await;
        assert_eq!(
            (status, &json),
            (200, &json!({"status": "ready", "reasons": []}))
        );
    }
    // They count: the address's next credential waits (probes themselves are never held).
    let (status, took) = timed(api.call("GET", "/v1/stats", Some(ADMIN_KEY), None)).await;
    assert_eq!(status, 200);
    assert!(
        took >= Duration::from_millis(250),
        "six failures slow the address: {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_refused_auths_end_an_smtp_session() {
    gateway::metrics::handle();
    let sections =
        format!("{SMTP}tls_cert = \"smtp.pem\"\ntls_key = \"smtp-key.pem\"\nrequire_auth = true\n");
    let api = TestApi::start_sections(SLOW_ALL, "", &sections, |d| {
        crate::api_harness::write_tls(d, "smtp")
    })
    .await;
    let before = counter("pushgate_auth_failures_total", "listener=\"smtp\"");
    let ca = api.dir.path().join("smtp.pem");
    let steps = crate::smtp::smtplib(
        &api,
        b"Subject: x\r\n\r\nx\r\n",
        "d@shop",
        &[
            "--starttls",
            ca.to_str().unwrap(),
            "--login",
            "shop",
            "KEY",
            // One mechanism: smtplib's login() tries each one offered, an AUTH each.
            "--mechanism",
            "PLAIN",
            "--tries",
            "5",
        ],
        &[("KEY", "not-the-key")],
    )
    .await;
    let codes: Vec<u64> = ["auth", "auth 2", "auth 3"]
        .iter()
        .map(|s| crate::smtp::step(&steps, s)["code"].as_u64().unwrap())
        .collect();
    assert_eq!(codes, [535, 535, 421], "{steps:?}");
    assert!(
        !steps.iter().any(|s| s["step"] == "auth 4"),
        "the session ended at the third: {steps:?}"
    );
    let after = counter("pushgate_auth_failures_total", "listener=\"smtp\"");
    assert!(after - before >= 3.0, "{before} -> {after}");
}
