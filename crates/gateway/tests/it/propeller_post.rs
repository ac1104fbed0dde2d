//! propeller-apns' `POST /post` form, posted with curl as its callers post it (urlencoded and
//! multipart), answered as propeller answered it; and its test form at `GET /post`, for a
//! logged-in admin only.

use gateway::spool::{Spool, State};
use serde_json::Value;

use crate::api::{T1, T2};
use crate::api_harness::*;
use crate::dashboard::{curl, log_in};
use crate::live::Backend;

fn post(api: &TestApi, args: &[&str]) -> (u16, String, Value) {
    let (status, headers, body) = curl(&format!("http://{}/post", api.addr), args);
    (
        status,
        headers,
        serde_json::from_str(&body).unwrap_or(Value::Null),
    )
}

fn form(fields: &[(&str, &str)]) -> Vec<String> {
    fields
        .iter()
        .flat_map(|(k, v)| ["--data-urlencode".to_owned(), format!("{k}={v}")])
        .collect()
}

async fn propellers_form_is_taken_urlencoded_and_multipart(backend: Backend) {
    let api = TestApi::start_on(&backend).await;
    // As server.py's callers post it: every field a string.
    let args = form(&[
        ("auth_token", SHOP_KEY),
        ("title", "Hi"),
        ("body", "Café open"),
        ("badge", "3"),
        ("token", T1),
        ("topic", "com.example.shop"),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (status, _, answer) = post(&api, &args);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (
            &answer["title"],
            &answer["body"],
            &answer["badge"],
            &answer["token"]
        ),
        (
            &Value::from("Hi"),
            &Value::from("Café open"),
            &Value::from(3),
            &Value::from(T1)
        ),
        "the job's JSON echoed"
    );
    let id = apns::ApnsId::parse(answer["id"].as_str().unwrap()).unwrap();
    let record = api
        .spool
        .get(id)
        .await
        .unwrap()
        .expect("committed before 200");
    assert_eq!((record.app.as_str(), record.state), ("shop", State::Queued));
    let request = api.spool.request_of(id).await.unwrap().unwrap();
    let payload: Value = serde_json::from_slice(&request.payload).unwrap();
    assert_eq!(
        payload,
        serde_json::json!({"aps": {"alert": {"title": "Hi", "body": "Café open"}, "badge": 3}})
    );

    // multipart/form-data, with a delay (scheduled) and an expiration (propeller's TODO).
    let expiration = (std::time::SystemTime::now() + std::time::Duration::from_secs(7_200))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let fields = [
        ("auth_token", ALL_KEY),
        ("body", "Later"),
        ("token", T2),
        ("topic", "com.example.news"),
        ("delay", "3600"),
        ("expiration", expiration.as_str()),
    ];
    let args: Vec<String> = fields
        .iter()
        .flat_map(|(k, v)| ["-F".to_owned(), format!("{k}={v}")])
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (status, _, answer) = post(&api, &args);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["title"], Value::Null);
    let id = apns::ApnsId::parse(answer["id"].as_str().unwrap()).unwrap();
    let record = api.spool.get(id).await.unwrap().unwrap();
    assert_eq!(
        (record.app.as_str(), record.state),
        ("news", State::Scheduled)
    );
    let request = api.spool.request_of(id).await.unwrap().unwrap();
    assert_eq!(
        request.apns_expiration.map(|e| e.as_unix().to_string()),
        Some(expiration)
    );
    assert_eq!(api.stored().await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_form_is_refused_with_its_code_and_stores_nothing() {
    let api = TestApi::start().await;
    let base = [("token", T1), ("topic", "com.example.shop"), ("title", "x")];
    let with = |extra: &[(&str, &str)]| {
        let mut f: Vec<(&str, &str)> = base.to_vec();
        f.extend_from_slice(extra);
        form(&f)
    };
    for (extra, status, code) in [
        (vec![("auth_token", "not-a-key")], 401, "unauthorized"),
        (vec![], 401, "unauthorized"),
        (
            vec![("auth_token", SHOP_KEY), ("badge", "three")],
            400,
            "invalid_field",
        ),
        (
            vec![("auth_token", SHOP_KEY), ("colour", "red")],
            400,
            "invalid_field",
        ),
        (
            vec![("auth_token", SHOP_KEY), ("delay", "-5")],
            400,
            "invalid_field",
        ),
        (
            vec![("auth_token", SHOP_KEY), ("expiration", "1")],
            400,
            "already_expired",
        ),
        (
            vec![("auth_token", SHOP_KEY), ("delay", "18446744073709551615")],
            400,
            "invalid_field",
        ),
        (
            vec![("auth_token", SHOP_KEY), ("title", "again")],
            400,
            "invalid_field",
        ),
        (
            vec![("auth_token", SHOP_KEY), ("environment", "staging")],
            400,
            "invalid_field",
        ),
        // The key is checked first: a stray field with a wrong key is a 401.
        (
            vec![("auth_token", "nope"), ("colour", "red")],
            401,
            "unauthorized",
        ),
    ] {
        let args = with(&extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (got, _, e) = post(&api, &args);
        assert_eq!(
            (got, e["error"]["code"].as_str()),
            (status, Some(code)),
            "{extra:?}: {e}"
        );
    }
    // A topic no app has; a shop-only key on news's topic; a bad token.
    for (fields, status, code) in [
        (
            vec![
                ("auth_token", SHOP_KEY),
                ("token", T1),
                ("topic", "com.example.nobody"),
            ],
            400,
            "unknown_app",
        ),
        (
            vec![
                ("auth_token", SHOP_KEY),
                ("token", T1),
                ("topic", "com.example.news"),
                ("title", "x"),
            ],
            403,
            "forbidden_app",
        ),
        (
            vec![
                ("auth_token", SHOP_KEY),
                ("token", "xyz"),
                ("topic", "com.example.shop"),
                ("title", "x"),
            ],
            400,
            "invalid_token",
        ),
    ] {
        let args = form(&fields);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (got, _, e) = post(&api, &args);
        assert_eq!(
            (got, e["error"]["code"].as_str()),
            (status, Some(code)),
            "{fields:?}: {e}"
        );
    }
    let (status, _, e) = post(&api, &["-H", "content-type: text/plain", "--data", "x"]);
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (415, Some("unsupported_media_type"))
    );
    assert_eq!(api.stored().await, 0, "nothing of a refused form is stored");
}

/// propeller's form page was open to anyone; pushgate's is for a logged-in admin only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_form_page_is_for_a_logged_in_admin_only() {
    let api = TestApi::start().await;
    let base = format!("http://{}", api.addr);
    let (status, _, page) = curl(&format!("{base}/post"), &[]);
    assert_eq!(status, 401);
    assert!(page.contains("log in as an admin"), "{page}");
    assert!(!page.contains("auth_token"), "{page}");
    let (_, cookie) = log_in(&base, ADMIN_KEY);
    let (cookie, _) = cookie.expect("a session");
    let (status, _, page) = curl(
        &format!("{base}/post"),
        &["-H", &format!("Cookie: {cookie}")],
    );
    assert_eq!(status, 200);
    assert!(
        page.contains("action=\"/post\"")
            && page.contains("name=\"auth_token\"")
            && page.contains("com.example.shop"),
        "{page}"
    );
}

on_each_backend!(propellers_form_is_taken_urlencoded_and_multipart);

/// Two apps of one topic (a sandbox and a production build): the form's `environment` picks
/// one; without it the answer says which it could be.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_of_two_environments_needs_the_environment() {
    let prod = "\n[[apps]]\nname = \"shop-prod\"\ntopic = \"com.example.shop\"\nenvironment = \"production\"\n\
                key_file = \"AuthKey_ABC123DEFG.p8\"\nkey_id = \"ABC123DEFG\"\nteam_id = \"TEAM123456\"\n";
    let api = TestApi::start_sections("", "", prod, |_| ()).await;
    let fields = [
        ("auth_token", ALL_KEY),
        ("token", T1),
        ("topic", "com.example.shop"),
        ("title", "x"),
    ];
    let args = form(&fields);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (status, _, e) = post(&api, &args);
    assert_eq!(status, 400, "{e}");
    let message = e["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("shop (sandbox) and shop-prod (production)"),
        "{message}"
    );
    let mut with_env = fields.to_vec();
    with_env.push(("environment", "production"));
    let args = form(&with_env);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (status, _, answer) = post(&api, &args);
    assert_eq!(status, 200, "{answer}");
    let id = apns::ApnsId::parse(answer["id"].as_str().unwrap()).unwrap();
    assert_eq!(api.spool.get(id).await.unwrap().unwrap().app, "shop-prod");
}

/// `Idempotency-Key` on the form: the same form again is a replay; the same job for another
/// topic under the same key is refused (keys are compared with the app the form names).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_on_the_form_replays_per_topic() {
    let api = TestApi::start().await;
    let send = |topic: &str| {
        let args = form(&[
            ("auth_token", ALL_KEY),
            ("token", T1),
            ("topic", topic),
            ("title", "once"),
        ]);
        let mut args: Vec<String> = args;
        args.extend(["-H".to_owned(), "Idempotency-Key: form-1".to_owned()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        post(&api, &args)
    };
    let (status, _, first) = send("com.example.shop");
    assert_eq!(status, 200, "{first}");
    let (status, headers, again) = send("com.example.shop");
    assert_eq!((status, &again["id"]), (200, &first["id"]));
    assert!(
        headers
            .to_ascii_lowercase()
            .contains("idempotent-replayed: true"),
        "{headers}"
    );
    // The same key for the same job to another topic is another request under a used key:
    // refused as /v1/notifications refuses it, nothing stored.
    let (status, _, other) = send("com.example.news");
    assert_eq!(
        (status, other["error"]["code"].as_str()),
        (422, Some("idempotency_key_reused")),
        "{other}"
    );
    assert_eq!(api.stored().await, 1);
}
