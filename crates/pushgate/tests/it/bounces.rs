//! Momentum bounces end to end: notifications injected over SMTP and `/v1.0/inject` fail at
//! the simulator, and the DSN arrives at a relay nobody here wrote (aiosmtpd, from PyPI),
//! which reads it with Python's email package (`smarthost.py`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::gateway_harness::*;
use crate::harness::*;
use crate::momentum::smtp_send_from;

const MINUTE: Duration = Duration::from_secs(60);

/// aiosmtpd on a port of 127.0.0.1, keeping what it receives as JSON files.
struct Relay {
    child: Child,
    out: tempfile::TempDir,
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Relay {
    fn start(port: u16) -> Relay {
        Relay::start_with(port, &[])
    }

    /// With `args` for smarthost.py (`--starttls CERT KEY`, `--auth USER:PASSWORD`).
    fn start_with(port: u16, args: &[&str]) -> Relay {
        let out = tempfile::tempdir().unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/smarthost.py");
        // scripts/test puts aiosmtpd in the virtualenv first on PATH.
        let mut child = Command::new("python3")
            .arg(script)
            .arg(port.to_string())
            .arg(out.path())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 with aiosmtpd (scripts/test installs it)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(
            line.trim(),
            format!("listening {port}"),
            "the relay did not start"
        );
        Relay { child, out }
    }

    /// What it received, in order.
    fn received(&self) -> Vec<Value> {
        let mut files: Vec<(u64, PathBuf)> = std::fs::read_dir(self.out.path())
            .unwrap()
            .filter_map(|e| {
                let p = e.unwrap().path();
                let n = p.file_stem()?.to_str()?.parse().ok()?;
                (p.extension()? == "json").then_some((n, p))
            })
            .collect();
        files.sort();
        files
            .iter()
            .map(|(_, p)| serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap())
            .collect()
    }

    /// Waits for the `n`-th message.
    fn wait_for(&self, n: usize) -> Vec<Value> {
        poll_until(&format!("{n} message(s) at the relay"), MINUTE, || {
            let got = self.received();
            if got.len() >= n {
                Ok(got)
            } else {
                Err(format!("{} so far", got.len()))
            }
        })
    }
}

/// A port nothing listens on (yet).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The simulator, answering tokens 2 and 4 Unregistered and token 3 BadDeviceToken.
fn failing_sim(dir: &Path) -> Sim {
    let reasons = dir.join("reasons");
    std::fs::write(
        &reasons,
        format!(
            "{} 410 Unregistered\n{} 400 BadDeviceToken\n{} 410 Unregistered\n",
            token(2),
            token(3),
            token(4)
        ),
    )
    .unwrap();
    sim(&["--reasons", reasons.to_str().unwrap()])
}

/// A gateway with `[smtp]` and `[bounces]` sending to the relay at `port`.
fn gateway(backend: &Backend, sim: &Sim, port: u16) -> Gw {
    let sections = format!(
        r#"
[smtp]
listen = "127.0.0.1:0"

[bounces]
smarthost = "127.0.0.1:{port}"
from = "MAILER-DAEMON@push.example.com"
window_s = 2
retry_s = 1
retry_max_s = 2
"#
    );
    Gw::start_with_on(backend, sim, "", &sections)
}

/// The failing simulator, a relay on a free port, and a gateway bouncing to it (the folder
/// holds the simulator's reasons).
fn setup(backend: &Backend) -> (tempfile::TempDir, Sim, Relay, Gw) {
    let dir = tempfile::tempdir().unwrap();
    let sim = failing_sim(dir.path());
    let port = free_port();
    let relay = Relay::start(port);
    let gw = gateway(backend, &sim, port);
    (dir, sim, relay, gw)
}

/// A metric's value in the gateway's `/metrics` (0 when absent).
fn metric(gw: &Gw, series: &str) -> f64 {
    let out = run(Command::new("curl").args(["-s", &format!("{}/metrics", gw.url)]));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Waits until the outbox is empty and `sent` DSNs were sent in all.
fn wait_settled(gw: &Gw, sent: f64) {
    wait_until("the bounce outbox settled", MINUTE, || {
        metric(gw, "pushgate_bounces_waiting ") == 0.0
            && metric(gw, "pushgate_bounces_total{outcome=\"sent\"} ") == sent
    });
}

/// A message of the shop's with its own Return-Path (`return_path`) and Message-ID.
fn message(return_path: &str, message_id: &str) -> String {
    format!(
        "Return-Path: <{return_path}>\r\nFrom: Shop <app@shop.example>\r\nTo: devices@shop\r\n\
         Subject: your order shipped\r\nMessage-ID: <{message_id}>\r\n\
         Content-Type: message/vnd.msys.apn\r\n\r\n{{\"aps\":{{\"alert\":\"Shipped!\"}}}}"
    )
}

/// Tokens 1 (delivered), 2 (Unregistered) and 3 (BadDeviceToken), each as a recipient.
fn three_recipients() -> Vec<String> {
    (1..=3).map(|i| format!("{}@shop", token(i))).collect()
}

fn one_dsn_reports_the_failed_tokens_of_a_message(backend: Backend) {
    let (_dir, _sim, relay, gw) = setup(&backend);
    let reply = smtp_send_from(
        gw.smtp.as_deref().unwrap(),
        "app@shop.example",
        &three_recipients(),
        &message("bounces@shop.example", "order-7@shop.example"),
    );
    assert!(reply.starts_with("250 2.0.0 3 notifications"), "{reply}");

    let got = relay.wait_for(1);
    wait_settled(&gw, 1.0);
    assert_eq!(relay.received().len(), 1, "exactly one DSN for the message");
    let dsn = &got[0];
    // A DSN has the null sender, and goes to the message's Return-Path (not MAIL FROM).
    assert_eq!(dsn["mail_from"], "<>");
    assert_eq!(dsn["rcpt_tos"], json!(["bounces@shop.example"]));
    let r = &dsn["report"];
    assert_eq!(r["content_type"], "multipart/report");
    assert_eq!(r["report_type"], "delivery-status");
    assert_eq!(
        r["parts"],
        json!([
            "text/plain",
            "message/delivery-status",
            "text/rfc822-headers"
        ])
    );
    assert_eq!(
        r["from"],
        "\"Mail Delivery System\" <MAILER-DAEMON@push.example.com>"
    );
    assert_eq!(r["auto_submitted"], "auto-replied");
    assert_eq!(r["per_message"]["Reporting-MTA"], "dns; push.example.com");
    assert!(
        r["per_message"]["Received-From-MTA"]
            .as_str()
            .unwrap()
            .contains("127.0.0.1")
    );
    let blocks = r["recipients"].as_array().unwrap();
    assert_eq!(
        blocks.len(),
        2,
        "the delivered token is not reported: {blocks:?}"
    );
    let block = |t: &str| {
        blocks
            .iter()
            .find(|b| b["Final-Recipient"] == format!("rfc822; {t}@shop"))
            .unwrap_or_else(|| panic!("no block for {t}: {blocks:?}"))
    };
    let unregistered = block(&token(2));
    assert_eq!(unregistered["Action"], "failed");
    assert_eq!(unregistered["Status"], "5.1.1");
    assert_eq!(unregistered["Diagnostic-Code"], "apns; 410 Unregistered");
    let bad = block(&token(3));
    assert_eq!(bad["Status"], "5.1.3");
    assert_eq!(bad["Diagnostic-Code"], "apns; 400 BadDeviceToken");
    // The original headers, and a human-readable account naming the tokens.
    let headers = r["headers"].as_str().unwrap();
    assert!(headers.contains("Subject: your order shipped"), "{headers}");
    assert!(
        headers.contains("Message-ID: <order-7@shop.example>"),
        "{headers}"
    );
    let text = r["text"].as_str().unwrap();
    assert!(
        text.contains(&token(2)) && text.contains("410 Unregistered"),
        "{text}"
    );
    assert!(!text.contains(&token(1)), "{text}");
}

fn a_null_sender_gets_no_dsn_and_an_injection_bounces_to_its_from(backend: Backend) {
    let (_dir, _sim, relay, gw) = setup(&backend);
    // MAIL FROM:<> (itself a bounce or a report): never bounced, whatever its headers say.
    let reply = smtp_send_from(
        gw.smtp.as_deref().unwrap(),
        "",
        &three_recipients(),
        &message("bounces@shop.example", "null-sender@shop.example"),
    );
    assert!(reply.starts_with("250"), "{reply}");
    // Then an injection whose recipient names a `from`: its failure is bounced there. It is
    // committed after the message above, and its DSN is the only one.
    let (status, answer) = gw.api(
        "POST",
        "/v1.0/inject",
        Some(&json!({
            "template": "Subject: injected\r\nContent-Type: message/vnd.msys.apn\r\n\r\n{\"aps\":{\"alert\":\"hi\"}}",
            // (Token 4: tokens 2 and 3 are known dead by now, and a notification the gateway
            // suppresses for a dead token is bounced only with `suppressed = true`.)
            "recipients": [{"to": format!("{}@shop", token(4)), "from": "Ops <ops@shop.example>"}],
        })),
    );
    assert_eq!(status, 200, "{answer}");
    let got = relay.wait_for(1);
    wait_settled(&gw, 1.0);
    let all = relay.received();
    assert_eq!(all.len(), 1, "only the injection's DSN: {all:?}");
    assert_eq!(got[0]["rcpt_tos"], json!(["ops@shop.example"]));
    let r = &got[0]["report"];
    assert!(r["headers"].as_str().unwrap().contains("Subject: injected"));
    assert!(r["text"].as_str().unwrap().contains("/v1.0/inject"));
    assert_eq!(r["recipients"].as_array().unwrap().len(), 1);
    // Both messages' failures were recorded; only one had somewhere to go.
    let (_, stats) = gw.api("GET", "/v1/stats", None);
    assert_eq!(stats["totals"]["failed"], 3, "{stats}");
}

#[test]
fn the_relay_down_for_a_while_gets_the_dsn_once_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let sim = failing_sim(dir.path());
    let port = free_port();
    let gw = gateway(&Backend::Sqlite, &sim, port);
    let reply = smtp_send_from(
        gw.smtp.as_deref().unwrap(),
        "app@shop.example",
        &[format!("{}@shop", token(2))],
        &message("bounces@shop.example", "relay-down@shop.example"),
    );
    assert!(reply.starts_with("250"), "{reply}");
    // Nothing listens: the DSN is tried, deferred, and tried again.
    wait_until(
        "two tries of the DSN while the relay is down",
        MINUTE,
        || metric(&gw, "pushgate_bounces_total{outcome=\"deferred\"} ") >= 2.0,
    );
    wait_until("the DSN counted as waiting", MINUTE, || {
        metric(&gw, "pushgate_bounces_waiting ") == 1.0
    });
    let relay = Relay::start(port);
    let got = relay.wait_for(1);
    wait_settled(&gw, 1.0);
    assert_eq!(relay.received().len(), 1, "sent once");
    assert_eq!(got[0]["report"]["recipients"][0]["Status"], "5.1.1");
    assert!(
        gw.log()
            .contains("sending a bounce failed; it is tried again")
    );
}

fn kill_9_with_a_dsn_queued_sends_it_once_after_restart(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let sim = failing_sim(dir.path());
    let port = free_port();
    let mut gw = gateway(&backend, &sim, port);
    let reply = smtp_send_from(
        gw.smtp.as_deref().unwrap(),
        "app@shop.example",
        &three_recipients(),
        &message("bounces@shop.example", "crash@shop.example"),
    );
    assert!(reply.starts_with("250"), "{reply}");
    // The failures are final and their DSN queued (and refused once: the relay is not up).
    wait_until("the DSN deferred", MINUTE, || {
        metric(&gw, "pushgate_bounces_total{outcome=\"deferred\"} ") >= 1.0
    });
    gw.kill9();
    let relay = Relay::start(port);
    gw.spawn();
    let got = relay.wait_for(1);
    wait_settled(&gw, 1.0);
    assert_eq!(relay.received().len(), 1, "sent once after the restart");
    assert_eq!(
        got[0]["report"]["recipients"].as_array().unwrap().len(),
        2,
        "both failures, from before the crash"
    );
    // The simulator saw each notification once: the restart re-sent nothing already final.
    let s = stats(&sim);
    assert_eq!(s["requests"], 3, "{s}");
}

/// The DSNs `relay` received, by recipient: each one's Final-Recipient lines.
fn by_recipient(got: &[Value]) -> std::collections::BTreeMap<String, Vec<String>> {
    got.iter()
        .map(|d| {
            let to = d["rcpt_tos"][0].as_str().unwrap().to_owned();
            let finals = d["report"]["recipients"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b["Final-Recipient"].as_str().unwrap().to_owned())
                .collect();
            (to, finals)
        })
        .collect()
}

/// Waits for one DSN per `(return path, token)`, each reporting only its token, and no more.
fn expect_one_dsn_each(relay: &Relay, gw: &Gw, want: &[(&str, &str)]) {
    let got = relay.wait_for(want.len());
    wait_settled(gw, want.len() as f64);
    assert_eq!(relay.received().len(), want.len());
    assert_eq!(
        by_recipient(&got),
        want.iter()
            .map(|(to, t)| ((*to).to_owned(), vec![format!("rfc822; {t}@shop")]))
            .collect()
    );
}

#[test]
fn a_push_part_s_return_path_comes_first_and_each_return_path_gets_its_own_dsn() {
    let (_dir, _sim, relay, gw) = setup(&Backend::Sqlite);
    let (t2, t3) = (token(2), token(3));
    let message = format!(
        "Return-Path: <message@shop.example>\r\nSubject: two parts\r\n\
         Content-Type: multipart/mixed; boundary=b\r\n\r\n\
         --b\r\nContent-Type: message/vnd.msys.apn\r\nReturn-Path: <part@shop.example>\r\n\
         X-Device-Token: {t2}\r\n\r\n{{\"aps\":{{\"alert\":\"one\"}}}}\r\n\
         --b\r\nContent-Type: message/vnd.msys.apn\r\nX-Device-Token: {t3}\r\n\r\n\
         {{\"aps\":{{\"alert\":\"two\"}}}}\r\n--b--"
    );
    let reply = smtp_send_from(
        gw.smtp.as_deref().unwrap(),
        "envelope@shop.example",
        &["devices@shop".to_owned()],
        &message,
    );
    assert!(reply.starts_with("250 2.0.0 2 notifications"), "{reply}");
    expect_one_dsn_each(
        &relay,
        &gw,
        &[("message@shop.example", &t3), ("part@shop.example", &t2)],
    );
}

#[test]
fn each_injecting_sender_hears_only_of_its_own_tokens() {
    let (_dir, _sim, relay, gw) = setup(&Backend::Sqlite);
    let (t2, t3) = (token(2), token(3));
    // One request for the app from two senders; its headers end lines with bare LFs and hold
    // a lone dot, which must not end the DSN's DATA at the relay.
    let (status, answer) = gw.api(
        "POST",
        "/v1.0/inject",
        Some(&json!({
            "template": "Subject: two senders\nX-Before: 1\n.\nX-After-Dot: yes\nContent-Type: message/vnd.msys.apn\n\n{\"aps\":{\"alert\":\"hi\"}}",
            "recipients": [
                {"to": format!("{t2}@shop"), "from": "a@one.example"},
                {"to": format!("{t3}@shop"), "from": "b@two.example"},
            ],
        })),
    );
    assert_eq!(status, 200, "{answer}");
    expect_one_dsn_each(
        &relay,
        &gw,
        &[("a@one.example", &t2), ("b@two.example", &t3)],
    );
    for d in &relay.received() {
        let headers = d["report"]["headers"].as_str().unwrap();
        // Re-lined with CRLF, the dot line kept (dot-stuffed on the wire): the DATA went on
        // past it, and nothing after it was read as a command.
        assert!(
            headers.contains("X-Before: 1\r\n.\r\nX-After-Dot: yes\r\n"),
            "{headers:?}"
        );
    }
}

/// A CA and a certificate it signed for 127.0.0.1: `ca.pem`, `relay.pem`, `relay-key.pem`.
fn relay_certificate(dir: &Path) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(dir.join("relay.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("relay-key.pem"), key.serialize_pem()).unwrap();
}

#[test]
fn starttls_and_auth_reach_a_relay_that_requires_them() {
    let dir = tempfile::tempdir().unwrap();
    relay_certificate(dir.path());
    std::fs::write(dir.path().join("relay-password"), "s3cret-relay\n").unwrap();
    let sim = failing_sim(dir.path());
    let port = free_port();
    let at = |f: &str| dir.path().join(f).display().to_string();
    let relay = Relay::start_with(
        port,
        &[
            "--starttls",
            &at("relay.pem"),
            &at("relay-key.pem"),
            "--auth",
            "pushgate:s3cret-relay",
        ],
    );
    let sections = format!(
        r#"
[smtp]
listen = "127.0.0.1:0"

[bounces]
smarthost = "127.0.0.1:{port}"
starttls = true
ca_file = "{ca}"
username = "pushgate"
password_file = "{password}"
from = "MAILER-DAEMON@push.example.com"
window_s = 0
"#,
        ca = at("ca.pem"),
        password = at("relay-password"),
    );
    let gw = Gw::start_with_on(&Backend::Sqlite, &sim, "", &sections);
    let reply = smtp_send_from(
        gw.smtp.as_deref().unwrap(),
        "app@shop.example",
        &[format!("{}@shop", token(2))],
        &message("bounces@shop.example", "tls@shop.example"),
    );
    assert!(reply.starts_with("250"), "{reply}");
    let got = relay.wait_for(1);
    assert_eq!(got[0]["tls"], true, "sent after STARTTLS");
    assert_eq!(got[0]["auth_user"], "pushgate");
    assert_eq!(got[0]["report"]["recipients"][0]["Status"], "5.1.1");
    wait_settled(&gw, 1.0);
    assert!(
        !gw.log().contains("s3cret-relay"),
        "the password is never logged"
    );
}

on_each_backend!(
    one_dsn_reports_the_failed_tokens_of_a_message,
    a_null_sender_gets_no_dsn_and_an_injection_bounces_to_its_from,
    kill_9_with_a_dsn_queued_sends_it_once_after_restart,
);
