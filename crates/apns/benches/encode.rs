//! Micro-benchmarks of the per-notification hot path: encoding a payload, building the request
//! head, parsing an answer and deciding its consequence.
//!
//! `cargo bench -p apns --bench encode`; figures in BENCHMARKS.md.

use std::hint::black_box;

use apns::payload::Payload;
use apns::request::{build_request, parse_response};
use apns::{DeviceToken, Expiration, Notification, Priority, PushType, Topic};
use criterion::{Criterion, criterion_group, criterion_main};
use http::HeaderValue;
use http::uri::Authority;

fn notification() -> Notification {
    let mut n = Notification::new(
        DeviceToken::parse("6a3c8f0e9d1b2a4c5e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5")
            .expect("valid token"),
        PushType::Alert,
        Payload::alert("Hello", "World").encode().expect("encodes"),
    );
    n.topic = Some(Topic::parse("com.example.demo").expect("valid topic"));
    n.priority = Some(Priority::Immediate);
    n.expiration = Some(Expiration::At(1_900_000_000));
    n
}

fn benches(c: &mut Criterion) {
    let mut p = Payload::alert(
        "Your order shipped",
        "Order 1234 is on its way and arrives Tuesday.",
    );
    p.aps.badge = Some(3);
    p = p.custom("order", serde_json::json!({"id": 1234, "carrier": "UPS"}));
    c.bench_function("payload_encode", |b| b.iter(|| black_box(&p).encode()));

    let n = notification();
    let authority = Authority::from_static("api.push.apple.com");
    let mut bearer = HeaderValue::from_static(
        "bearer eyJhbGciOiJFUzI1NiIsImtpZCI6IkFCQzEyM0RFRkcifQ.eyJpc3MiOiJURUFNMTIzNDU2IiwiaWF0IjoxNzAwMDAwMDAwfQ.c2lnbmF0dXJl",
    );
    bearer.set_sensitive(true);
    c.bench_function("request_head_build", |b| {
        b.iter(|| build_request(black_box(&n), &authority, Some(&bearer)))
    });

    c.bench_function("notification_validate", |b| {
        b.iter(|| black_box(&n).validate())
    });

    let (mut head, ()) = http::Response::new(()).into_parts();
    head.status = http::StatusCode::GONE;
    let body = br#"{"reason":"Unregistered","timestamp":1700000000123}"#;
    c.bench_function("response_parse_and_classify", |b| {
        b.iter(|| {
            let r = parse_response(black_box(&head), black_box(body));
            apns::Outcome::Response(r).consequence()
        })
    });
}

criterion_group!(encode, benches);
criterion_main!(encode);
