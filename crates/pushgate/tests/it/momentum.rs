//! Momentum's ways in and out, end to end through the binaries: SMTP and `/v1.0/inject` to the
//! simulator, outcomes in the delivery log and at a failure hook, and live reload on SIGHUP.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::gateway_harness::*;
use crate::harness::*;

const MINUTE: Duration = Duration::from_secs(60);

/// Each request's head and body, in arrival order.
type Requests = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A failure hook receiver on a thread: answers 200 to every POST and keeps it.
fn hook_receiver() -> (String, Requests) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/pushgate-hook", listener.local_addr().unwrap());
    let got: Requests = Arc::default();
    let keep = Arc::clone(&got);
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { return };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut head = String::new();
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                head.push_str(&line);
            }
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            let mut body = vec![0; len];
            r.read_exact(&mut body).unwrap();
            keep.lock().unwrap().push((head, body));
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (url, got)
}

/// One SMTP transaction, a command at a time; returns the reply to the message.
fn smtp_send(addr: &str, rcpts: &[String], message: &str) -> String {
    smtp_send_from(addr, "app@example.com", rcpts, message)
}

/// As [`smtp_send`], from envelope sender `from` (`""`: the null sender, `MAIL FROM:<>`).
pub(crate) fn smtp_send_from(addr: &str, from: &str, rcpts: &[String], message: &str) -> String {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(MINUTE)).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    // Reads one (possibly multi-line) reply; returns its last line.
    let mut reply = || loop {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert!(!line.is_empty(), "the server closed the connection");
        if line.as_bytes().get(3) == Some(&b' ') {
            return line.trim_end().to_owned();
        }
    };
    assert!(reply().starts_with("220"));
    let mut say = |w: &mut TcpStream, cmd: &str, want: &str| {
        w.write_all(format!("{cmd}\r\n").as_bytes()).unwrap();
        let got = reply();
        assert!(got.starts_with(want), "{cmd} → {got}");
        got
    };
    say(&mut w, "EHLO test", "250");
    say(&mut w, &format!("MAIL FROM:<{from}>"), "250");
    for rc in rcpts {
        say(&mut w, &format!("RCPT TO:<{rc}>"), "250");
    }
    say(&mut w, "DATA", "354");
    let stuffed: String = message
        .split("\r\n")
        .map(|l| {
            if l.starts_with('.') {
                format!(".{l}\r\n")
            } else {
                format!("{l}\r\n")
            }
        })
        .collect();
    let done = say(&mut w, &format!("{stuffed}."), "250");
    say(&mut w, "QUIT", "221");
    done
}

/// The final lines of the delivery log, once there are `n` of them.
fn final_lines(gw: &Gw, n: usize) -> Vec<Value> {
    let file = gw.dir.path().join("deliveries.jsonl");
    let mut lines = Vec::new();
    wait_until("the delivery log's final lines", MINUTE, || {
        lines = std::fs::read_to_string(&file)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|l| l["final"] == true)
            .collect();
        lines.len() >= n
    });
    lines
}

fn smtp_and_inject_reach_apple_and_outcomes_reach_the_log_and_the_hook(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let reasons = dir.path().join("reasons");
    std::fs::write(
        &reasons,
        format!(
            "{} 410 Unregistered\n{} 503 ServiceUnavailable\n",
            token(2),
            token(4)
        ),
    )
    .unwrap();
    let sim = sim(&["--reasons", reasons.to_str().unwrap()]);
    let (hook_url, hooked) = hook_receiver();
    let sections = format!(
        r#"
[smtp]
listen = "127.0.0.1:0"

[log]
file = "deliveries.jsonl"
per_attempt = true

[[webhooks]]
url = "{hook_url}"
events = ["failed", "token_invalidated"]
secret_env = "PUSHGATE_TEST_HOOK_SECRET"
"#
    );
    let gw = Gw::start_with_on(
        &backend,
        &sim,
        "smtp_domains = [\"push.example.com\"]\nmax_attempts = 2",
        &sections,
    );

    // SMTP: the part has no X-Device-Token, so each recipient's local part is its token.
    let message = "Subject: hello\r\nContent-Type: message/vnd.msys.apn\r\n\r\n\
                   {\"aps\":{\"alert\":\"over SMTP\"}}";
    let reply = smtp_send(
        gw.smtp.as_deref().unwrap(),
        &[
            format!("{}@shop", token(1)),
            format!("{}@push.example.com", token(2)),
            format!("{}@shop", token(4)),
        ],
        message,
    );
    assert!(
        reply.starts_with("250 2.0.0 3 notifications queued"),
        "{reply}"
    );
    // The REST injector, with the token in vctx.
    let (status, injected) = gw.api(
        "POST",
        "/v1.0/inject",
        Some(&json!({
            "template": "Content-Type: message/vnd.msys.apn\r\n\r\n{\"aps\":{\"alert\":\"over REST\"}}",
            "recipients": [{"to": "anyone@shop", "vctx": {"DLV_Dest_ID": token(3)}}],
        })),
    );
    assert_eq!(status, 200, "{injected}");
    let injected_id = injected["results"][0]["mid"].as_str().unwrap().to_owned();

    let lines = final_lines(&gw, 4);
    let by_token: HashMap<&str, &Value> = lines
        .iter()
        .map(|l| (l["token"].as_str().unwrap(), l))
        .collect();
    let (t1, t2, t3) = (token(1), token(2), token(3));
    assert_eq!(by_token[t1.as_str()]["status"], "delivered");
    assert_eq!(by_token[t1.as_str()]["code"], 200);
    assert_eq!(by_token[t2.as_str()]["status"], "failed");
    assert_eq!(by_token[t2.as_str()]["reason"], "Unregistered");
    assert_eq!(by_token[t3.as_str()]["id"], injected_id.as_str());
    assert_eq!(by_token[t3.as_str()]["status"], "delivered");
    // Token 4: an attempt that is retried (a line with per_attempt), then the last one.
    let t4 = token(4);
    assert_eq!(by_token[t4.as_str()]["status"], "failed");
    assert_eq!(by_token[t4.as_str()]["reason"], "MaxAttempts");
    assert_eq!(by_token[t4.as_str()]["code"], 503);
    assert_eq!(by_token[t4.as_str()]["attempts"], 2);
    let all = std::fs::read_to_string(gw.dir.path().join("deliveries.jsonl")).unwrap();
    let retried: Vec<Value> = all
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l["final"] == false)
        .collect();
    assert_eq!(retried.len(), 1, "{retried:?}");
    assert_eq!(retried[0]["token"], t4.as_str());
    assert_eq!(retried[0]["status"], "queued");
    assert_eq!(retried[0]["code"], 503);
    assert_eq!(retried[0]["attempts"], 1);
    for l in &lines {
        assert_eq!(l["app"], "shop");
        assert!(l["ms"].as_u64().unwrap() < 60_000, "{l}");
    }
    let sent: Vec<Value> = stats_notifications(&sim);
    let alerts: Vec<&str> = sent
        .iter()
        .map(|n| n["payload"]["aps"]["alert"].as_str().unwrap())
        .collect();
    assert_eq!(alerts.iter().filter(|a| **a == "over SMTP").count(), 1);
    assert_eq!(alerts.iter().filter(|a| **a == "over REST").count(), 1);

    // The hook: token 2's failure and its invalidation, signed.
    let mut events = Vec::new();
    wait_until("the hook's three events", MINUTE, || {
        events = hooked
            .lock()
            .unwrap()
            .iter()
            .flat_map(|(head, body)| {
                let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, b"hook-secret");
                let tag: String = aws_lc_rs::hmac::sign(&key, body)
                    .as_ref()
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                assert!(
                    head.contains(&format!("x-pushgate-signature: sha256={tag}")),
                    "{head}"
                );
                serde_json::from_slice::<Value>(body).unwrap()["events"]
                    .as_array()
                    .unwrap()
                    .clone()
            })
            .collect();
        events.len() >= 3
    });
    let mut kinds: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e["event"].as_str().unwrap(), e["token"].as_str().unwrap()))
        .collect();
    kinds.sort_unstable();
    assert_eq!(
        kinds,
        [
            ("failed", t2.as_str()),
            ("failed", t4.as_str()),
            ("token_invalidated", t2.as_str()),
        ]
    );
    assert!(events.iter().all(|e| e["app"] == "shop"));
}

/// What the simulator accepted, with payloads as JSON.
fn stats_notifications(sim: &Sim) -> Vec<Value> {
    let out =
        run(std::process::Command::new("curl")
            .args(["-sf", &format!("{}/notifications", sim.stats)]));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// How many times each id reached `sim`.
fn ids_at(sim: &Sim) -> HashMap<String, u32> {
    let mut seen = HashMap::new();
    for n in stats_notifications(sim) {
        *seen
            .entry(n["apns_id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    seen
}

fn sighup_reloads_apps_while_streams_in_flight_finish_on_the_old_connections(backend: Backend) {
    // The old endpoint answers slowly, so the first batch is still in flight at the reload.
    let old = sim(&["--latency-ms", "4000"]);
    let new = sim(&[]);
    let dir = tempfile::tempdir().unwrap();
    backend.prepare(dir.path());
    let config = write_config_with(dir.path(), &old, "AuthKey_ABC123DEFG.p8", "", "");
    let mut gw = Gw::new(dir, config);
    // The reload's summary is an info line.
    gw.spawn_with(&[("RUST_LOG", "warn,gateway::server=info")]);
    let tokens: Vec<String> = (0..200).map(token).collect();
    let first = gw.submit(json!({"app": "shop", "tokens": tokens, "alert": "before"}));
    wait_until(
        "the first batch in flight at the old endpoint",
        MINUTE,
        || stats(&old)["max_streams_in_flight"].as_u64().unwrap() >= 100,
    );
    // (The first stream of each connection was answered first: tokens are proven one at a time.)
    let answered = stats(&old)["accepted"].as_u64().unwrap();
    assert!(
        answered <= 4,
        "most of the batch is still in flight: {answered} answered"
    );

    // The app moves to the new endpoint and an app is added.
    let news = "\n[[apps]]\nname = \"news\"\ntopic = \"com.example.news\"\nenvironment = \"sandbox\"\n\
                endpoint = \"{endpoint}\"\nca_file = \"{ca}\"\nkey_file = \"AuthKey_ABC123DEFG.p8\"\n\
                key_id = \"ABC123DEFG\"\nteam_id = \"TEAM123456\"\n";
    let news = news
        .replace("{endpoint}", &new.endpoint)
        .replace("{ca}", &new.ca.display().to_string());
    write_config_with(gw.dir.path(), &new, "AuthKey_ABC123DEFG.p8", "", &news);
    gw.signal("HUP");
    // The new app is known once the reload has been applied.
    let mut news_ids = Vec::new();
    wait_until("the reload", MINUTE, || {
        let (status, body) = gw.api(
            "POST",
            "/v1/notifications",
            Some(&json!({"app": "news", "tokens": [token(900)], "alert": "added"})),
        );
        if status == 202 {
            news_ids.push(body["ids"][0].as_str().unwrap().to_owned());
        }
        status == 202
    });
    // The log says what changed, and the stats show the settings now in force.
    wait_until("the reload's log line", MINUTE, || {
        gw.log().contains("configuration reloaded")
    });
    let log = gw.log();
    let line = log
        .lines()
        .find(|l| l.contains("configuration reloaded"))
        .unwrap();
    assert!(
        line.contains(&format!(
            "apps added: news; app shop: endpoint {} → {}, ca_file",
            old.endpoint, new.endpoint
        )),
        "{line}"
    );
    let settings = &gw.api("GET", "/v1/stats", None).1["apps"]["shop"]["settings"];
    assert_eq!(settings["endpoint"], new.endpoint.as_str(), "{settings}");
    assert_eq!(settings["credential"]["key_id"], "ABC123DEFG", "{settings}");
    let tokens: Vec<String> = (200..300).map(token).collect();
    let second = gw.submit(json!({"app": "shop", "tokens": tokens, "alert": "after"}));

    let docs = gw.wait_final(
        &[first.clone(), second.clone(), news_ids.clone()].concat(),
        MINUTE,
    );
    assert!(
        docs.iter()
            .all(|d| d["state"] == "delivered" && d["attempts"] == 1),
        "{docs:?}"
    );
    let (at_old, at_new) = (ids_at(&old), ids_at(&new));
    // In flight at the reload: finished on the old connections, each exactly once, none re-sent.
    assert_eq!(at_old.len(), 200);
    assert!(first.iter().all(|id| at_old.get(id) == Some(&1)));
    assert!(first.iter().all(|id| !at_new.contains_key(id)));
    // After it: the new settings.
    assert!(
        second
            .iter()
            .chain(&news_ids)
            .all(|id| at_new.get(id) == Some(&1))
    );
    assert_eq!(stats(&old)["duplicate_ids"], 0);

    // An invalid file is refused with a clear log line; the running configuration stays.
    std::fs::write(&gw.config, "[[apps]]\nname = \"broken\"\n").unwrap();
    gw.signal("HUP");
    wait_until("the refusal in the log", MINUTE, || {
        gw.log()
            .contains("reload refused; the running configuration stays")
    });
    assert!(gw.log().contains("apps[0].topic"), "{}", gw.log());
    let still = gw.submit(json!({"app": "news", "tokens": [token(901)], "alert": "still"}));
    assert_eq!(gw.wait_final(&still, MINUTE)[0]["state"], "delivered");

    // Removed: the app is unknown again.
    write_config_with(gw.dir.path(), &new, "AuthKey_ABC123DEFG.p8", "", "");
    gw.signal("HUP");
    wait_until("news removed", MINUTE, || {
        gw.api(
            "POST",
            "/v1/notifications",
            Some(&json!({"app": "news", "tokens": [token(902)], "alert": "gone"})),
        )
        .0 == 400
    });
    wait_until("the removal's log line", MINUTE, || {
        gw.log()
            .contains("configuration reloaded changes=apps removed: news")
    });
    let exit = {
        gw.signal("TERM");
        gw.wait_exit(MINUTE)
    };
    assert_eq!(exit, Some(0));
}

on_each_backend!(
    smtp_and_inject_reach_apple_and_outcomes_reach_the_log_and_the_hook,
    sighup_reloads_apps_while_streams_in_flight_finish_on_the_old_connections,
);
