use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use apns::ApnsId;
use gateway::spool::{Spool, State};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::api_harness::*;
use crate::live::Backend;

const T1: &str = "6a3c8f0e9d1b2a4c5e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5";
const T2: &str = "aabbccddeeff00112233445566778899aabbccddeeff00112233445566778899";

/// The seed's example (momentum-using-apns.txt) as a whole message: its JSON keeps the trailing
/// comma unless `fixed`, its token is the seed's (35 hex digits, not a token) unless given.
pub(crate) fn seed_message(fixed: bool, token: &str) -> String {
    let comma = if fixed { "" } else { "," };
    format!(
        "From: app@example.com\r\n\
         To: devices@shop\r\n\
         Subject: push\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"MCMT_BOUNDARY\"\r\n\
         \r\n\
         --MCMT_BOUNDARY\r\n\
         Content-Type: message/vnd.msys.apn\r\n\
         \r\n\
         X-Device-Token: {token}\r\n\
         \r\n\
         {{\r\n\
         \x20 \"aps\" : {{\r\n\
         \x20   \"alert\" : \"You have mail\",\r\n\
         \x20   \"badge\" : 9,\r\n\
         \x20   \"sound\" : \"dingdong.aiff\"\r\n\
         \x20  }},\r\n\
         \x20  \"app-key\" : \"bar\"{comma}\r\n\
         }}\r\n\
         --MCMT_BOUNDARY--\r\n"
    )
}

pub(crate) const SMTP: &str = "[smtp]\nlisten = \"127.0.0.1:0\"\nmax_message_bytes = 65536\n";

async fn smtp_api(backend: &Backend) -> TestApi {
    TestApi::start_sections_on(backend, "", "", SMTP, |_| ()).await
}

fn lettre_send(addr: SocketAddr, to: &[&str], message: String) -> Result<String, String> {
    use lettre::Transport;
    let transport = lettre::SmtpTransport::builder_dangerous(addr.ip().to_string())
        .port(addr.port())
        .build();
    let envelope = lettre::address::Envelope::new(
        Some("app@example.com".parse().unwrap()),
        to.iter().map(|t| t.parse().unwrap()).collect(),
    )
    .unwrap();
    transport
        .send_raw(&envelope, message.as_bytes())
        .map(|r| format!("{} {}", r.code(), r.message().collect::<Vec<_>>().join(" ")))
        .map_err(|e| e.to_string())
}

/// Sends with lettre (blocking, so on a blocking thread).
pub(crate) async fn lettre(
    addr: SocketAddr,
    to: &[&str],
    message: String,
) -> Result<String, String> {
    let to: Vec<String> = to.iter().map(|s| (*s).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let to: Vec<&str> = to.iter().map(String::as_str).collect();
        lettre_send(addr, &to, message)
    })
    .await
    .unwrap()
}

/// The first id in a `250 2.0.0 N notifications queued; first id <id>` reply.
fn first_id(reply: &str) -> ApnsId {
    let id = reply.rsplit(' ').next().unwrap();
    ApnsId::parse(id).unwrap_or_else(|_| panic!("no id in {reply:?}"))
}

async fn the_seed_example_is_refused_for_its_comma_and_its_token_then_taken_when_fixed(
    backend: Backend,
) {
    let api = smtp_api(&backend).await;
    let addr = api.smtp.unwrap();
    let seed_token = "123acb90ffa0978cbade354ddffee76665a";

    let e = lettre(addr, &["devices@shop"], seed_message(false, seed_token))
        .await
        .unwrap_err();
    assert!(e.contains("554") || e.contains("permanent"), "{e}");
    assert!(
        e.contains("push part 1") && e.contains("not valid JSON"),
        "{e}"
    );
    let e = lettre(addr, &["devices@shop"], seed_message(true, seed_token))
        .await
        .unwrap_err();
    assert!(
        e.contains("push part 1") && e.contains("X-Device-Token"),
        "{e}"
    );
    assert_eq!(
        api.stored().await,
        0,
        "nothing of a refused message is stored"
    );

    let ok = lettre(addr, &["devices@shop"], seed_message(true, T1))
        .await
        .unwrap();
    assert!(ok.starts_with("250 2.0.0 1 notification queued"), "{ok}");
    let id = first_id(&ok);
    let record = api.spool.get(id).await.unwrap().expect("stored before 250");
    assert_eq!((record.app.as_str(), record.token.as_str()), ("shop", T1));
    assert_eq!(record.state, State::Queued);
    let request = api.spool.request_of(id).await.unwrap().unwrap();
    let payload: Value = serde_json::from_slice(&request.payload).unwrap();
    assert_eq!(
        payload,
        serde_json::json!({"aps": {"alert": "You have mail", "badge": 9, "sound": "dingdong.aiff"}, "app-key": "bar"})
    );
    assert_eq!(request.topic.as_ref().unwrap().as_str(), "com.example.shop");
    assert_eq!(request.push_type, apns::PushType::Alert);
}

/// Reads replies until one starts with `code ` (a final line), returning all text read.
async fn read_until(s: &mut tokio::net::TcpStream, buf: &mut String, code: &str) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !buf.lines().any(|l| l.starts_with(&format!("{code} "))) {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline, s.read(&mut chunk))
            .await
            .unwrap_or_else(|_| panic!("no {code} reply in {buf:?}"))
            .unwrap();
        assert!(n > 0, "closed before {code}: {buf:?}");
        buf.push_str(&String::from_utf8_lossy(&chunk[..n]));
    }
}

async fn pipelined_commands_and_dot_stuffed_lines_over_a_raw_socket(backend: Backend) {
    let api = smtp_api(&backend).await;
    let mut s = tokio::net::TcpStream::connect(api.smtp.unwrap())
        .await
        .unwrap();
    let mut got = String::new();
    read_until(&mut s, &mut got, "220").await;
    // One write: every command up to DATA (RFC 2920), two recipients of two apps, the token
    // in each local part (no X-Device-Token).
    s.write_all(
        format!(
            "EHLO raw\r\nMAIL FROM:<app@example.com>\r\nRCPT TO:<{T1}@shop>\r\n\
             RCPT TO:<{T2}@push.shop.example>\r\nRCPT TO:<{T2}@news>\r\nDATA\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    read_until(&mut s, &mut got, "354").await;
    let lines: Vec<&str> = got.lines().collect();
    assert!(lines.contains(&"250-PIPELINING"), "{got}");
    assert!(lines.contains(&"250-SIZE 65536"), "{got}");
    assert!(lines.contains(&"250-8BITMIME"), "{got}");
    assert!(
        !got.contains("STARTTLS") && !got.contains("AUTH"),
        "not configured: {got}"
    );
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("250 2.1.5")).count(),
        3,
        "{got}"
    );
    // Quoted-printable whose soft line break leaves a line starting with '.', which the
    // client dot-stuffs; the receiver must unstuff it before decoding.
    s.write_all(
        b"Subject: dots\r\nContent-Type: message/vnd.msys.apn\r\n\
          Content-Transfer-Encoding: quoted-printable\r\n\r\n\
          {\"aps\":{\"alert\":\"hi=\r\n\
          ..there\"}}\r\n.\r\nQUIT\r\n",
    )
    .await
    .unwrap();
    let mut rest = String::new();
    s.read_to_string(&mut rest).await.unwrap();
    let done = rest.lines().next().unwrap();
    assert!(
        done.starts_with("250 2.0.0 3 notifications queued"),
        "{rest}"
    );
    assert!(rest.contains("221 2.0.0"), "{rest}");
    let id = first_id(done);
    let request = api.spool.request_of(id).await.unwrap().unwrap();
    let payload: Value = serde_json::from_slice(&request.payload).unwrap();
    assert_eq!(payload["aps"]["alert"], "hi.there");
    assert_eq!(api.stored().await, 3);
}

fn python_client() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/smtp_client.py")
}

/// Runs the smtplib client; returns its steps.
pub(crate) async fn smtplib(
    api: &TestApi,
    message: &[u8],
    rcpts: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> Vec<Value> {
    let file = api.dir.path().join("message.eml");
    std::fs::write(&file, message).unwrap();
    let addr = api.smtp.unwrap();
    let mut cmd = std::process::Command::new("python3");
    cmd.arg(python_client())
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string())
        .arg(&file)
        .arg("app@example.com")
        .arg(rcpts)
        .args(args)
        .envs(env.iter().copied());
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .expect("python3 runs (.ci/run installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Vec<Value>>(&out.stdout).unwrap()
}

pub(crate) fn step<'a>(steps: &'a [Value], name: &str) -> &'a Value {
    steps
        .iter()
        .find(|s| s["step"] == name)
        .unwrap_or_else(|| panic!("no step {name}: {steps:?}"))
}

/// A message with several push parts: base64 (inner headers and all), 8-bit UTF-8, the headers
/// among the MIME headers, and a text part that is ignored.
fn mixed_message() -> Vec<u8> {
    use base64::Engine;
    let inner = format!(
        "X-Device-Token: {T1}\r\nX-APNs-Priority: 5\r\nX-APNs-Collapse-Id: news-1\r\n\r\n{{\"aps\":{{\"alert\":\"b64\"}}}}"
    );
    let b64 = base64::engine::general_purpose::STANDARD.encode(inner);
    let mut m = format!(
        "Subject: several\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
         --b\r\nContent-Type: text/plain\r\n\r\nnot a push\r\n\
         --b\r\nContent-Type: message/vnd.msys.apn\r\nContent-Transfer-Encoding: base64\r\n\r\n{b64}\r\n\
         --b\r\nContent-Type: message/vnd.msys.apn\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    )
    .into_bytes();
    m.extend_from_slice("{\"aps\":{\"alert\":\"Grüße aus Köln\"}}\r\n".as_bytes());
    m.extend_from_slice(
        format!(
            "--b\r\nContent-Type: message/vnd.msys.apn\r\nX-Device-Token: {T2}\r\n\
             X-APNs-Push-Type: background\r\nX-APNs-Expiration: 0\r\n\r\n\
             {{\"aps\":{{\"content-available\":1}},\"k\":\"v\"}}\r\n--b--\r\n"
        )
        .as_bytes(),
    );
    m
}

async fn smtplib_sends_base64_8bit_and_header_placements_to_several_recipients(backend: Backend) {
    let api = smtp_api(&backend).await;
    // Two recipients of shop (the second part's tokens come from their local parts) and one of
    // news: the parts with X-Device-Token make one per app, the one without one per recipient.
    let rcpts = format!("{T2}@shop,{T1}@PUSH.shop.example,{T1}@news");
    let steps = smtplib(&api, &mixed_message(), &rcpts, &[], &[]).await;
    let data = step(&steps, "data");
    assert_eq!(data["code"], 250, "{steps:?}");
    // base64 part: 2 apps; 8-bit part: 3 recipients; header part: 2 apps.
    assert!(
        data["text"]
            .as_str()
            .unwrap()
            .starts_with("2.0.0 7 notifications queued"),
        "{data}"
    );
    let first = first_id(data["text"].as_str().unwrap());
    assert_eq!(api.stored().await, 7);
    let b64 = api.spool.request_of(first).await.unwrap().unwrap();
    assert_eq!(b64.priority, Some(apns::Priority::Conserve));
    assert_eq!(b64.collapse_id.as_ref().unwrap().as_str(), "news-1");
    assert_eq!(
        serde_json::from_slice::<Value>(&b64.payload).unwrap()["aps"]["alert"],
        "b64"
    );
    // Find the 8-bit and background requests among the stored ones.
    let mut ready = Vec::new();
    for app in ["shop", "news"] {
        let now = std::time::SystemTime::now();
        let start = gateway::spool::ReadyCursor::Start;
        ready.extend(
            api.spool
                .ready_page(app, start, now, 100)
                .await
                .unwrap()
                .rows,
        );
    }
    let payloads: Vec<Value> = ready
        .iter()
        .map(|r| &r.item)
        .map(|r| {
            serde_json::json!({
                "token": r.token.as_str(),
                "app": r.request.app,
                "push_type": r.request.push_type.as_str(),
                "payload": serde_json::from_slice::<Value>(&r.request.payload).unwrap(),
                "expiration": r.request.apns_expiration.map(apns::Expiration::as_unix),
            })
        })
        .collect();
    let utf8: Vec<&Value> = payloads
        .iter()
        .filter(|p| p["payload"]["aps"]["alert"] == "Grüße aus Köln")
        .collect();
    let mut got: Vec<(String, String)> = utf8
        .iter()
        .map(|p| {
            (
                p["app"].as_str().unwrap().to_owned(),
                p["token"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("news".to_owned(), T1.to_owned()),
            ("shop".to_owned(), T1.to_owned()),
            ("shop".to_owned(), T2.to_owned()),
        ]
    );
    let background: Vec<&Value> = payloads
        .iter()
        .filter(|p| p["push_type"] == "background")
        .collect();
    assert_eq!(background.len(), 2, "{payloads:?}");
    for b in background {
        assert_eq!(b["token"], T2);
        assert_eq!(b["payload"]["k"], "v");
        assert_eq!(b["expiration"], 0);
    }
}

async fn refusals_have_their_codes_and_store_nothing(backend: Backend) {
    let api = smtp_api(&backend).await;
    let good = seed_message(true, T1);
    // Unknown domain at RCPT.
    let steps = smtplib(&api, good.as_bytes(), "x@nowhere.example", &[], &[]).await;
    let r = step(&steps, "rcpt x@nowhere.example");
    assert_eq!(r["code"], 550, "{steps:?}");
    assert!(r["text"].as_str().unwrap().starts_with("5.1.2"), "{r}");
    // SIZE over the limit at MAIL.
    let steps = smtplib(&api, good.as_bytes(), "d@shop", &["--size", "70000"], &[]).await;
    let m = step(&steps, "mail");
    assert_eq!(m["code"], 552, "{steps:?}");
    assert!(m["text"].as_str().unwrap().starts_with("5.3.4"), "{m}");
    // A message over the limit without SIZE: refused after DATA.
    let mut big = good.clone().into_bytes();
    big.extend(std::iter::repeat_n(b'x', 70_000));
    let steps = smtplib(&api, &big, "d@shop", &[], &[]).await;
    assert_eq!(step(&steps, "data")["code"], 552, "{steps:?}");
    // No push part; a bad token in a local part; an unknown transfer encoding.
    let cases: [(String, &str); 3] = [
        (
            "Subject: plain\r\n\r\njust text\r\n".to_owned(),
            "no message/vnd.msys.apn part",
        ),
        (
            "Content-Type: message/vnd.msys.apn\r\n\r\n{\"aps\":{\"alert\":\"x\"}}\r\n".to_owned(),
            "push part 1: no X-Device-Token, and recipient 1 does not carry a device token",
        ),
        (
            "Content-Type: message/vnd.msys.apn\r\nContent-Transfer-Encoding: x-zip\r\n\r\n{}\r\n"
                .to_owned(),
            "push part 1: unknown Content-Transfer-Encoding",
        ),
    ];
    for (message, why) in cases {
        let steps = smtplib(&api, message.as_bytes(), "not-a-token@shop", &[], &[]).await;
        let d = step(&steps, "data");
        assert_eq!(d["code"], 554, "{steps:?}");
        let text = d["text"].as_str().unwrap();
        assert!(text.starts_with("5.6.0 ") && text.contains(why), "{text}");
    }
    // AUTH is not offered, and refused, over plain text.
    let steps = smtplib(
        &api,
        good.as_bytes(),
        "d@shop",
        &["--login", "shop", "KEY"],
        &[("KEY", SHOP_KEY)],
    )
    .await;
    assert_eq!(step(&steps, "auth")["code"], 0, "not offered: {steps:?}");
    assert_eq!(api.stored().await, 0);
}

/// A self-signed certificate for 127.0.0.1, written as smtp.pem / smtp-key.pem.
fn write_tls(dir: &Path) {
    crate::api_harness::write_tls(dir, "smtp");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_and_auth_scope_recipients_to_the_key_apps() {
    let sections =
        format!("{SMTP}tls_cert = \"smtp.pem\"\ntls_key = \"smtp-key.pem\"\nrequire_auth = true\n");
    let api = TestApi::start_sections("", "", &sections, write_tls).await;
    let ca = api.dir.path().join("smtp.pem");
    let ca = ca.to_str().unwrap();
    let good = seed_message(true, T1);

    // Without AUTH, MAIL is refused.
    let steps = smtplib(&api, good.as_bytes(), "d@shop", &["--starttls", ca], &[]).await;
    assert_eq!(step(&steps, "starttls")["code"], 220, "{steps:?}");
    assert_eq!(step(&steps, "mail")["code"], 530, "{steps:?}");
    // A wrong key, or the right key under another name: 535, and the key is not echoed.
    for (user, key) in [("shop", "not-the-key"), ("all", SHOP_KEY)] {
        let steps = smtplib(
            &api,
            good.as_bytes(),
            "d@shop",
            &["--starttls", ca, "--login", user, "KEY"],
            &[("KEY", key)],
        )
        .await;
        let auth = step(&steps, "auth");
        assert_eq!(auth["code"], 535, "{steps:?}");
        assert!(!auth["text"].as_str().unwrap().contains(key));
    }
    // The shop key over TLS (PLAIN, then LOGIN): shop's domains are taken, news is 5.7.1.
    for mechanism in ["PLAIN", "LOGIN"] {
        let steps = smtplib(
            &api,
            good.as_bytes(),
            "d@news,d@shop",
            &[
                "--starttls",
                ca,
                "--login",
                "shop",
                "KEY",
                "--mechanism",
                mechanism,
            ],
            &[("KEY", SHOP_KEY)],
        )
        .await;
        assert_eq!(step(&steps, "auth")["code"], 235, "{steps:?}");
        let news = step(&steps, "rcpt d@news");
        assert_eq!(news["code"], 550, "{steps:?}");
        assert!(
            news["text"].as_str().unwrap().starts_with("5.7.1"),
            "{news}"
        );
        assert_eq!(step(&steps, "rcpt d@shop")["code"], 250);
        assert_eq!(step(&steps, "data")["code"], 250, "{steps:?}");
    }
    assert_eq!(api.stored().await, 2);
}

on_each_backend!(
    the_seed_example_is_refused_for_its_comma_and_its_token_then_taken_when_fixed,
    pipelined_commands_and_dot_stuffed_lines_over_a_raw_socket,
    smtplib_sends_base64_8bit_and_header_placements_to_several_recipients,
    refusals_have_their_codes_and_store_nothing,
);
