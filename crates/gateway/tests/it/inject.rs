use apns::ApnsId;
use base64::Engine;
use gateway::spool::Spool;
use serde_json::{Value, json};

use crate::api_harness::*;
use crate::live::Backend;

const T1: &str = "6a3c8f0e9d1b2a4c5e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5";
const T2: &str = "aabbccddeeff00112233445566778899aabbccddeeff00112233445566778899";

/// A template whose push part has no X-Device-Token: each recipient brings its token.
pub(crate) const PER_RECIPIENT: &str =
    "Content-Type: message/vnd.msys.apn\r\n\r\n{\"aps\":{\"alert\":\"hi\"}}\r\n";

/// POSTs `body` to the injector with the shop's key: status, headers, JSON answer.
async fn inject(api: &TestApi, body: &Value) -> (u16, http::HeaderMap, Value) {
    api.call(
        "POST",
        "/v1.0/inject",
        Some(SHOP_KEY),
        Some(&body.to_string()),
    )
    .await
}

fn ids(result: &Value) -> Vec<ApnsId> {
    result["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| ApnsId::parse(i.as_str().unwrap()).unwrap())
        .collect()
}

async fn an_injection_answers_momentum_results_per_recipient(backend: Backend) {
    let api = TestApi::start_on(&backend).await;
    let body = json!({
        "template": PER_RECIPIENT,
        "recipients": [
            // The token in vctx.DLV_Dest_ID wins over the local part.
            {"to": "someone@shop", "from": "app@example.com", "vctx": {"DLV_Dest_ID": T1}},
            {"to": format!("Device <{T2}@push.shop.example>")},
        ],
    });
    for path in ["/v1.0/inject", "/v1.0/inject/"] {
        let (status, _, answer) = api
            .call("POST", path, Some(SHOP_KEY), Some(&body.to_string()))
            .await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["status"], "success");
        let results = answer["results"].as_array().unwrap();
        assert_eq!(results.len(), 2);
        for (r, token) in results.iter().zip([T1, T2]) {
            assert_eq!(r["status"], "success");
            let ids = ids(r);
            assert_eq!(ids.len(), 1);
            assert_eq!(r["mid"], ids[0].to_string());
            assert_eq!(r["reason"], format!("250 {}", ids[0]));
            let record = api
                .spool
                .get(ids[0])
                .await
                .unwrap()
                .expect("committed before 200");
            assert_eq!(
                (record.app.as_str(), record.token.as_str()),
                ("shop", token)
            );
        }
    }
    assert_eq!(api.stored().await, 4);
}

async fn a_token_header_fans_out_once_per_app_and_basic_auth_works(backend: Backend) {
    let api = TestApi::start_on(&backend).await;
    let template = format!(
        "Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Type: message/vnd.msys.apn\r\n\r\n\
         X-Device-Token: {T1}\r\n\r\n{{\"aps\":{{\"badge\":1}}}}\r\n--x--\r\n"
    );
    let body = json!({"template": template, "recipients": [
        {"to": "a@shop"}, {"to": "b@shop"}, {"to": "c@news"},
    ]});
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("any:{ALL_KEY}"));
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let req = http::Request::post(format!("http://{}/v1.0/inject", api.addr))
        .header("content-type", "application/json")
        .header("authorization", format!("Basic {basic}"))
        .body(http_body_util::Full::new(bytes::Bytes::from(
            body.to_string(),
        )))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let answer: Value = serde_json::from_slice(
        &http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes(),
    )
    .unwrap();
    let r = answer["results"].as_array().unwrap();
    // One notification for shop (listed under both shop recipients), one for news.
    assert_eq!(ids(&r[0]), ids(&r[1]));
    assert_ne!(ids(&r[0]), ids(&r[2]));
    assert_eq!(api.stored().await, 2);
}

async fn an_injection_is_all_or_nothing_with_smtp_reasons(backend: Backend) {
    let api = TestApi::start_on(&backend).await;
    // One recipient outside the key's apps, one unknown domain: 400, each with its reason.
    let body = json!({"template": PER_RECIPIENT, "recipients": [
        {"to": format!("{T1}@shop")}, {"to": format!("{T1}@news")}, {"to": format!("{T1}@nowhere")},
    ]});
    let (status, _, answer) = inject(&api, &body).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["status"], "failure");
    let reasons: Vec<&str> = answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["reason"].as_str().unwrap())
        .collect();
    assert!(reasons[0].starts_with("250 2.1.5"), "{reasons:?}");
    assert!(reasons[1].starts_with("550 5.7.1"), "{reasons:?}");
    assert!(reasons[2].starts_with("550 5.1.2"), "{reasons:?}");
    // A bad token in the second recipient refuses the first as well.
    let body = json!({"template": PER_RECIPIENT, "recipients": [
        {"to": format!("{T1}@shop")}, {"to": "xyz@shop"},
    ]});
    let (status, _, answer) = inject(&api, &body).await;
    assert_eq!(status, 400, "{answer}");
    for r in answer["results"].as_array().unwrap() {
        assert_eq!(r["status"], "failure");
        let reason = r["reason"].as_str().unwrap();
        assert!(
            reason.starts_with("554 5.6.0 push part 1: ") && reason.contains("recipient 2"),
            "{reason}"
        );
    }
    // The seed's trailing comma.
    let body = json!({"template": "Content-Type: message/vnd.msys.apn\r\n\r\n{\"aps\":{\"alert\":\"x\"},}", "recipients": [{"to": format!("{T1}@shop")}]});
    let (status, _, answer) = inject(&api, &body).await;
    assert_eq!(status, 400);
    assert!(
        answer["results"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("push part 1: the payload is not valid JSON"),
        "{answer}"
    );
    // No key; not JSON; a field that is not Momentum's.
    let (status, _, answer) = api
        .call("POST", "/v1.0/inject", None, Some(&body.to_string()))
        .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let (status, _, answer) = api
        .call("POST", "/v1.0/inject", Some(SHOP_KEY), Some("{"))
        .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (400, Some("invalid_json"))
    );
    let (status, _, answer) = api
        .call(
            "POST",
            "/v1.0/inject",
            Some(SHOP_KEY),
            Some(&json!({"template": "x", "recipients": [], "extra": 1}).to_string()),
        )
        .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (400, Some("invalid_field"))
    );
    assert_eq!(
        api.stored().await,
        0,
        "nothing of a refused injection is stored"
    );
}

on_each_backend!(
    an_injection_answers_momentum_results_per_recipient,
    a_token_header_fans_out_once_per_app_and_basic_auth_works,
    an_injection_is_all_or_nothing_with_smtp_reasons,
);
