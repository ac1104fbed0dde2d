//! `pushgate mock-apns` driven from outside, with curl and h2load, as an operator would.
//!
//! Over 500 lines, on purpose: its first test walks every check Apple makes (headers, tokens,
//! payloads, provider tokens) against the running simulator in one table, which reads better
//! whole than cut in two.

use std::process::Command;

use apns::auth::{SigningKey, TokenSigner};
use apns::clock::SystemClock;

use crate::harness::*;

const TOKEN: &str = "6a3c8f0e9d1b2a4c5e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5";
const DEAD: &str = "dead000000000000000000000000000000000000000000000000000000000001";
const BAD: &str = "bad0000000000000000000000000000000000000000000000000000000000002";
const FORCED: &str = "f000000000000000000000000000000000000000000000000000000000000003";
/// The seed's 35-character token "fixed" to an even length: hex, but of no device.
const SHORT: &str = "0123456789abcdef0123456789abcdef01";

fn bearer() -> String {
    let key = SigningKey::from_file(
        &fixtures().join("AuthKey_ABC123DEFG.p8"),
        "ABC123DEFG",
        "TEAM123456",
    )
    .unwrap();
    let signer = TokenSigner::new(key, std::sync::Arc::new(SystemClock));
    let t = signer.token().unwrap();
    format!("authorization: {}", t.header().to_str().unwrap())
}

fn lists() -> (tempfile::TempDir, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let args = vec![
        "--unregistered".to_owned(),
        p(
            "unregistered",
            &format!("# dead devices\n{DEAD} 1700000000123\n"),
        ),
        "--bad-tokens".to_owned(),
        p("bad", &format!("{BAD}\n")),
        "--reasons".to_owned(),
        p("reasons", &format!("\n{FORCED} 403 TopicDisallowed\n")),
        "--jwt-key".to_owned(),
        fixtures()
            .join("AuthKey_ABC123DEFG.pub.pem")
            .display()
            .to_string(),
    ];
    (dir, args)
}

/// Each of Apple's request checks, asked by curl, with Apple's status and JSON reason.
#[test]
fn the_simulator_answers_apples_checks_to_curl() {
    let (_dir, args) = lists();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let sim = start_sim(&args);
    let auth = bearer();
    let topic = "apns-topic: com.example.demo";
    let alert = r#"{"aps":{"alert":"hi"}}"#;
    let device = |t: &str| format!("/3/device/{t}");
    let big = format!(r#"{{"aps":{{"alert":"{}"}}}}"#, "x".repeat(4100));
    let voip = format!(r#"{{"aps":{{}},"x":"{}"}}"#, "x".repeat(5000));
    type Case<'a> = (&'a str, String, Vec<&'a str>, u16, Option<&'a str>);
    let cases: Vec<Case> = vec![
        (
            "valid",
            device(TOKEN),
            vec!["-H", topic, "-H", &auth, "-d", alert],
            200,
            None,
        ),
        (
            "bad apns-id",
            device(TOKEN),
            vec!["-H", "apns-id: nope", "-H", topic, "-H", &auth, "-d", alert],
            400,
            Some("BadMessageId"),
        ),
        (
            "GET",
            device(TOKEN),
            vec!["-X", "GET", "-H", topic, "-H", &auth],
            405,
            Some("MethodNotAllowed"),
        ),
        (
            "no topic",
            device(TOKEN),
            vec!["-H", &auth, "-d", alert],
            400,
            Some("MissingTopic"),
        ),
        (
            "long collapse id",
            device(TOKEN),
            vec![
                "-H",
                topic,
                "-H",
                &auth,
                "-H",
                "apns-collapse-id: 0123456789012345678901234567890123456789012345678901234567890123456789",
                "-d",
                alert,
            ],
            400,
            Some("BadCollapseId"),
        ),
        (
            "priority 7",
            device(TOKEN),
            vec![
                "-H",
                topic,
                "-H",
                &auth,
                "-H",
                "apns-priority: 7",
                "-d",
                alert,
            ],
            400,
            Some("BadPriority"),
        ),
        (
            "bad expiration",
            device(TOKEN),
            vec![
                "-H",
                topic,
                "-H",
                &auth,
                "-H",
                "apns-expiration: soon",
                "-d",
                alert,
            ],
            400,
            Some("BadExpirationDate"),
        ),
        (
            "unknown push type",
            device(TOKEN),
            vec![
                "-H",
                topic,
                "-H",
                &auth,
                "-H",
                "apns-push-type: telepathy",
                "-d",
                alert,
            ],
            400,
            Some("InvalidPushType"),
        ),
        (
            "background at 10",
            device(TOKEN),
            vec![
                "-H",
                topic,
                "-H",
                &auth,
                "-H",
                "apns-push-type: background",
                "-H",
                "apns-priority: 10",
                "-d",
                alert,
            ],
            400,
            Some("BadPriority"),
        ),
        (
            "voip without suffix",
            device(TOKEN),
            vec![
                "-H",
                topic,
                "-H",
                &auth,
                "-H",
                "apns-push-type: voip",
                "-d",
                alert,
            ],
            400,
            Some("BadTopic"),
        ),
        (
            "bad path",
            "/3/other/x".to_owned(),
            vec!["-H", topic, "-H", &auth, "-d", alert],
            404,
            Some("BadPath"),
        ),
        (
            "no token",
            device(""),
            vec!["-H", topic, "-H", &auth, "-d", alert],
            400,
            Some("MissingDeviceToken"),
        ),
        (
            "non-hex token",
            device("xyz1"),
            vec!["-H", topic, "-H", &auth, "-d", alert],
            400,
            Some("BadDeviceToken"),
        ),
        (
            "34-character token",
            device(SHORT),
            vec!["-H", topic, "-H", &auth, "-d", alert],
            400,
            Some("BadDeviceToken"),
        ),
        (
            "66-character token",
            device(&format!("{TOKEN}00")),
            vec!["-H", topic, "-H", &auth, "-d", alert],
            400,
            Some("BadDeviceToken"),
        ),
        (
            "unregistered",
            device(DEAD),
            vec!["-H", topic, "-H", &auth, "-d", alert],
            410,
            Some("Unregistered"),
        ),
        (
            "bad token list",
            device(BAD),
            vec!["-H", topic, "-H", &auth, "-d", alert],
            400,
            Some("BadDeviceToken"),
        ),
        (
            "forced reason",
            device(FORCED),
            vec!["-H", topic, "-H", &auth, "-d", alert],
            403,
            Some("TopicDisallowed"),
        ),
        (
            "no provider token",
            device(TOKEN),
            vec!["-H", topic, "-d", alert],
            403,
            Some("MissingProviderToken"),
        ),
        (
            "forged provider token",
            device(TOKEN),
            vec![
                "-H",
                topic,
                "-H",
                "authorization: bearer a.b.c",
                "-d",
                alert,
            ],
            403,
            Some("InvalidProviderToken"),
        ),
        (
            "empty body",
            device(TOKEN),
            vec!["-H", topic, "-H", &auth, "-X", "POST"],
            400,
            Some("PayloadEmpty"),
        ),
        (
            "4100-byte alert",
            device(TOKEN),
            vec!["-H", topic, "-H", &auth, "-d", &big],
            413,
            Some("PayloadTooLarge"),
        ),
        (
            "5000-byte voip",
            device(TOKEN),
            vec![
                "-H",
                "apns-topic: com.example.demo.voip",
                "-H",
                "apns-push-type: voip",
                "-H",
                &auth,
                "-d",
                &voip,
            ],
            200,
            None,
        ),
        (
            "duplicate header",
            device(TOKEN),
            vec![
                "-H",
                topic,
                "-H",
                "apns-priority: 5",
                "-H",
                "apns-priority: 10",
                "-H",
                &auth,
                "-d",
                alert,
            ],
            400,
            Some("DuplicateHeaders"),
        ),
    ];
    for (what, path, args, status, reason) in &cases {
        let (got, body, headers) = curl(&sim, path, args);
        assert_eq!(got, *status, "{what}: {body}");
        match reason {
            None => assert_eq!(body, "", "{what}"),
            Some(r) => {
                let json: serde_json::Value = serde_json::from_str(&body).unwrap();
                assert_eq!(json["reason"], *r, "{what}");
                assert!(
                    headers.contains("content-type: application/json"),
                    "{what}: {headers}"
                );
            }
        }
        assert!(
            headers.contains("apns-id: "),
            "{what}: an apns-id is always answered"
        );
    }
    let (_, body, _) = curl(
        &sim,
        &device(DEAD),
        &["-H", topic, "-H", &auth, "-d", alert],
    );
    assert_eq!(
        body,
        r#"{"reason":"Unregistered","timestamp":1700000000123}"#
    );
    let id = "0192f4a2-7c55-7d6b-8e9f-1a2b3c4d5e6f";
    let (_, _, headers) = curl(
        &sim,
        &device(TOKEN),
        &[
            "-H",
            topic,
            "-H",
            &auth,
            "-H",
            &format!("apns-id: {id}"),
            "-d",
            alert,
        ],
    );
    assert!(
        headers.contains(&format!("apns-id: {id}")),
        "echoed: {headers}"
    );
    let s = stats(&sim);
    assert_eq!(s["by_status"]["200"], 3);
    assert_eq!(s["by_reason"]["Unregistered"], 2);
    assert_eq!(s["requests"], cases.len() as u64 + 2);
}

/// `--token-bytes` lets a test try the longer tokens Apple says may come; 32 bytes stays
/// accepted only when listed.
#[test]
fn token_sizes_can_be_widened() {
    let pub_key = fixtures().join("AuthKey_ABC123DEFG.pub.pem");
    let sim = start_sim(&[
        "--token-bytes",
        "32,100",
        "--jwt-key",
        pub_key.to_str().unwrap(),
    ]);
    let auth = bearer();
    let post_to = |sim: &Sim, token: &str| {
        let (status, body, _) = curl(
            sim,
            &format!("/3/device/{token}"),
            &[
                "-H",
                "apns-topic: com.example.demo",
                "-H",
                &auth,
                "-d",
                "{}",
            ],
        );
        (status, body)
    };
    let post = |token: &str| post_to(&sim, token);
    assert_eq!(post(TOKEN).0, 200);
    assert_eq!(post(&"ab".repeat(100)).0, 200, "a 100-byte token is listed");
    let (status, body) = post(SHORT);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("BadDeviceToken"), "{body}");

    let only_long = start_sim(&[
        "--token-bytes",
        "100",
        "--jwt-key",
        pub_key.to_str().unwrap(),
    ]);
    let (status, body) = post_to(&only_long, TOKEN);
    assert_eq!(
        (status, body.contains("BadDeviceToken")),
        (400, true),
        "{body}"
    );
}

#[test]
fn client_certificates_are_judged_per_request() {
    let ca = fixtures().join("ca.pem");
    let sim = start_sim(&["--client-ca", ca.to_str().unwrap()]);
    let topic = "apns-topic: com.example.demo";
    let path = format!("/3/device/{TOKEN}");
    let cert = fixtures().join("client.pem");
    let key = fixtures().join("client-key.pem");
    let (status, body, _) = curl(
        &sim,
        &path,
        &[
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "-H",
            topic,
            "-d",
            "{}",
        ],
    );
    assert_eq!((status, body.as_str()), (200, ""));
    let (status, body, _) = curl(&sim, &path, &["-H", topic, "-d", "{}"]);
    assert_eq!(
        (status, body.as_str()),
        (403, r#"{"reason":"BadCertificate"}"#)
    );
    let untrusted = fixtures().join("untrusted.pem");
    let (status, _, _) = curl(
        &sim,
        &path,
        &[
            "--cert",
            untrusted.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "-H",
            topic,
            "-d",
            "{}",
        ],
    );
    assert_eq!(status, 403);
}

#[test]
fn a_shifted_clock_makes_fresh_tokens_expired() {
    let key = fixtures().join("AuthKey_ABC123DEFG.pub.pem");
    let sim = start_sim(&[
        "--jwt-key",
        key.to_str().unwrap(),
        "--clock-offset-s",
        "4000",
    ]);
    let (status, body, _) = curl(
        &sim,
        &format!("/3/device/{TOKEN}"),
        &[
            "-H",
            "apns-topic: com.example.demo",
            "-H",
            &bearer(),
            "-d",
            "{}",
        ],
    );
    assert_eq!(
        (status, body.as_str()),
        (403, r#"{"reason":"ExpiredProviderToken"}"#)
    );
}

#[test]
fn stats_notifications_ids_and_reset() {
    let sim = start_sim(&[]);
    let path = format!("/3/device/{}", TOKEN.to_uppercase());
    let (status, _, _) = curl(
        &sim,
        &path,
        &[
            "-H",
            "apns-topic: com.example.demo",
            "-H",
            "apns-push-type: alert",
            "-H",
            "apns-priority: 5",
            "-d",
            r#"{"aps":{"badge":1}}"#,
        ],
    );
    assert_eq!(status, 200);
    let out = run(Command::new("curl").args(["-sf", &format!("{}/notifications", sim.stats)]));
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["token"], TOKEN, "tokens are recorded lowercase");
    assert_eq!(lines[0]["headers"]["apns-priority"], "5");
    assert_eq!(lines[0]["payload"]["aps"]["badge"], 1);
    let s = stats(&sim);
    assert_eq!(
        (s["accepted"].as_u64(), s["unique_ids"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(s["connections_total"], 1);
    // The same notification again: `/ids` counts both acceptances of its id.
    let id = lines[0]["apns_id"].as_str().unwrap().to_owned();
    let (status, _, _) = curl(
        &sim,
        &path,
        &[
            "-H",
            "apns-topic: com.example.demo",
            "-H",
            &format!("apns-id: {id}"),
            "-d",
            r#"{"aps":{"badge":1}}"#,
        ],
    );
    assert_eq!(status, 200);
    let out = run(Command::new("curl").args(["-sf", &format!("{}/ids", sim.stats)]));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), format!("{id} 2\n"));
    let out = run(Command::new("curl").args([
        "-sf",
        "-X",
        "POST",
        "-w",
        "%{http_code}",
        &format!("{}/reset", sim.stats),
    ]));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "204");
    let s = stats(&sim);
    assert_eq!(
        (s["requests"].as_u64(), s["accepted"].as_u64()),
        (Some(0), Some(0))
    );
}

/// h2load, nghttp2's load generator, as the clients of the speed figures: 4 connections ×
/// 100 streams. Every request succeeds and no connection carries more than 100 streams.
#[test]
fn h2load_drives_the_simulator() {
    let sim = start_sim(&["--max-streams", "100"]);
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body.json");
    std::fs::write(&body, r#"{"aps":{"alert":{"title":"Hello","body":"A notification of about two hundred bytes, like most alerts: who sent it, what it is about, and a line of detail so the user knows why it matters."}}}"#).unwrap();
    let out = run(Command::new("h2load")
        .args(["-c", "4", "-m", "100", "-n", "20000"])
        .args([
            "-H",
            "apns-topic: com.example.demo",
            "-H",
            "apns-push-type: alert",
            "-d",
        ])
        .arg(&body)
        .arg(format!("{}/3/device/{TOKEN}", sim.endpoint)));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("20000 succeeded, 0 failed, 0 errored"),
        "{text}"
    );
    assert!(text.contains("status codes: 20000 2xx"), "{text}");
    let s = stats(&sim);
    assert_eq!(s["accepted"], 20000);
    assert!(s["max_streams_in_flight"].as_u64().unwrap() <= 100, "{s}");
    assert_eq!(s["connections_total"], 4);
}

#[test]
fn a_bad_list_file_is_refused_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let reasons = dir.path().join("reasons.txt");
    std::fs::write(
        &reasons,
        format!("# comment\n{TOKEN} 410 Unregistered\n{TOKEN} gone\n"),
    )
    .unwrap();
    let out = run(Command::new(env!("CARGO_BIN_EXE_pushgate"))
        .args(["mock-apns", "--listen", "127.0.0.1:0", "--reasons"])
        .arg(&reasons));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains(&format!(
            "{}:3: expected `token status reason`",
            reasons.display()
        )),
        "{err}"
    );
}

/// A list entry of a size the simulator refuses first could never get its listed answer: it is
/// refused at start, naming the line (the mistake that hid two test tokens of 62 and 66).
#[test]
fn a_list_token_of_a_refused_size_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.txt");
    std::fs::write(&bad, format!("{TOKEN}\n{SHORT}\n")).unwrap();
    let out = run(Command::new(env!("CARGO_BIN_EXE_pushgate"))
        .args(["mock-apns", "--listen", "127.0.0.1:0", "--bad-tokens"])
        .arg(&bad));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains(&format!("{}:2: a 17-byte token", bad.display()))
            && err.contains("see --token-bytes"),
        "{err}"
    );
}
