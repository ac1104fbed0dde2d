use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use apns::clock::ManualClock;
use apns::{ApnsId, DeviceToken};
use apns_mock::testing::wait_for;
use gateway::config::{Log, Secret, Webhook, WebhookEvent};
use gateway::events::hooks::{self, Hook};
use gateway::events::log::{self, DeliveryLog};
use gateway::events::{Event, OutcomeEvent};
use gateway::spool::State;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn outcome(i: u64, state: State) -> Event {
    Event::Outcome(OutcomeEvent {
        time: SystemTime::now(),
        id: ApnsId::new(),
        app: "shop".into(),
        token: DeviceToken::parse(&format!("{i:064x}")).unwrap(),
        state,
        status: Some(if state == State::Delivered { 200 } else { 410 }),
        reason: (state != State::Delivered).then(|| "Unregistered".to_owned()),
        attempts: 1,
    })
}

fn log_config(file: &Path, max_bytes: u64, heartbeat: Duration) -> Log {
    Log {
        file: Some(file.to_owned()),
        mode: 0o640,
        max_bytes,
        heartbeat,
        per_attempt: false,
    }
}

/// Every line of every file in `dir` whose name starts with `deliveries.jsonl`.
fn all_lines(dir: &Path) -> Vec<(PathBuf, Value)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("deliveries.jsonl")
        })
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        for l in std::fs::read_to_string(&f).unwrap().lines() {
            out.push((f.clone(), serde_json::from_str(l).unwrap()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_rotates_by_size_keeps_every_line_and_sets_the_mode() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("deliveries.jsonl");
    let log = DeliveryLog::start(
        &log_config(&file, 4096, Duration::from_secs(3600)),
        log::Options::default(),
    );
    for i in 0..100 {
        log.offer(&outcome(i, State::Delivered));
    }
    log.close(Duration::from_secs(10)).await;
    let lines = all_lines(dir.path());
    assert_eq!(lines.len(), 100);
    let files: std::collections::BTreeSet<&PathBuf> = lines.iter().map(|(f, _)| f).collect();
    assert!(
        files.len() >= 5,
        "100 lines of ~250 bytes in 4 KiB files: {files:?}"
    );
    for f in &files {
        let len = std::fs::metadata(f).unwrap().len();
        assert!(len < 4096 + 400, "{f:?} is {len} bytes");
    }
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);
    let first = &lines[0].1;
    for key in [
        "time", "id", "app", "token", "status", "reason", "attempts", "ms",
    ] {
        assert!(first.get(key).is_some(), "{key} in {first}");
    }
    assert_eq!(first["status"], "delivered");
    assert_eq!(log.counts().written.load(Ordering::Relaxed), 100);
}

/// An operator's chmod of the log is theirs: the gateway gives its mode to files it creates,
/// and leaves an existing one as it finds it (it used to reset it at every open).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_s_mode_on_an_existing_log_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("deliveries.jsonl");
    std::fs::write(&file, "").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let log = DeliveryLog::start(
        &log_config(&file, 1 << 20, Duration::from_secs(3600)),
        log::Options::default(),
    );
    log.offer(&outcome(1, State::Delivered));
    log.close(Duration::from_secs(10)).await;
    assert_eq!(all_lines(dir.path()).len(), 1, "written");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the configured 0640 would have widened it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_rotates_at_a_new_utc_day_and_beats() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("deliveries.jsonl");
    let clock = Arc::new(ManualClock::new(SystemTime::now()));
    let log = DeliveryLog::start(
        &log_config(&file, 1 << 30, Duration::from_secs(1)),
        log::Options {
            clock: Arc::clone(&clock) as _,
            ..log::Options::default()
        },
    );
    log.offer(&outcome(1, State::Failed));
    let heartbeat = |lines: &[(PathBuf, Value)]| lines.iter().any(|(_, l)| l["heartbeat"] == true);
    wait_for("a line and a heartbeat", Duration::from_secs(10), || {
        let lines = all_lines(dir.path());
        lines.len() >= 2 && heartbeat(&lines)
    })
    .await;
    clock.advance(Duration::from_secs(86_400));
    log.offer(&outcome(2, State::Expired));
    log.close(Duration::from_secs(10)).await;
    let lines = all_lines(dir.path());
    let rotated: Vec<&Value> = lines
        .iter()
        .filter(|(f, _)| f != &file)
        .map(|(_, l)| l)
        .collect();
    // (A heartbeat may land in either file.)
    let current: Vec<&Value> = lines
        .iter()
        .filter(|(f, l)| f == &file && l["heartbeat"] != true)
        .map(|(_, l)| l)
        .collect();
    assert!(
        rotated.iter().any(|l| l["status"] == "failed"),
        "{rotated:?}"
    );
    assert_eq!(current.len(), 1, "the new day's file: {current:?}");
    assert_eq!(current[0]["status"], "expired");
    assert!(
        rotated
            .iter()
            .any(|l| l["heartbeat"] == true && l["written"] == 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_log_file_drops_counted_lines_and_never_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("deliveries.jsonl");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    // Opening a FIFO for writing blocks until a reader comes: the writer thread is stuck.
    let log = DeliveryLog::start(
        &log_config(&fifo, 1 << 30, Duration::from_secs(3600)),
        log::Options {
            queue: 10,
            ..log::Options::default()
        },
    );
    for i in 0..100 {
        log.offer(&outcome(i, State::Delivered));
    }
    let dropped = log.counts().dropped.load(Ordering::Relaxed);
    assert!(
        (89..=90).contains(&dropped),
        "a queue of 10 (+1 in the writer's hands) keeps 10 or 11 of 100: {dropped} dropped"
    );
    // Now a reader: the writer gets through what it kept.
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        std::fs::File::open(&fifo)
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        text
    });
    log.close(Duration::from_secs(10)).await;
    let text = reader.join().unwrap();
    let lines = BufReader::new(text.as_bytes()).lines().count() as u64;
    assert_eq!(
        lines + dropped,
        100,
        "every line is written or counted as dropped"
    );
}

/// Each request's head and body, in arrival order.
type Requests = Arc<std::sync::Mutex<Vec<(String, Vec<u8>)>>>;

/// A hook receiver: answers the first `failures` POSTs with 500, then 200; keeps what it got
/// and counts the connections it accepted (it keeps each open for as many requests as the
/// client sends on it).
struct Receiver {
    url: String,
    got: Requests,
    connections: Arc<AtomicUsize>,
}

async fn receiver(failures: usize) -> Receiver {
    receiver_on("127.0.0.1:0", failures).await
}

async fn receiver_on(addr: &str, failures: usize) -> Receiver {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .unwrap_or_else(|e| panic!("binding {addr}: {e}"));
    let local = listener.local_addr().unwrap();
    let url = format!("http://{local}/hook?k=v");
    let got: Requests = Arc::default();
    let connections = Arc::new(AtomicUsize::new(0));
    let (seen, accepted) = (Arc::clone(&got), Arc::clone(&connections));
    let answered = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        loop {
            let (s, _) = listener.accept().await.unwrap();
            accepted.fetch_add(1, Ordering::SeqCst);
            let (seen, answered) = (Arc::clone(&seen), Arc::clone(&answered));
            tokio::spawn(async move {
                let mut s = s;
                let mut buf = Vec::new();
                while let Some((head, body)) = read_request(&mut s, &mut buf).await {
                    let n = answered.fetch_add(1, Ordering::SeqCst) + 1;
                    let status = if n <= failures { "500 Oops" } else { "200 OK" };
                    seen.lock().unwrap().push((head, body));
                    let answer = format!("HTTP/1.1 {status}\r\ncontent-length: 2\r\n\r\nok");
                    if s.write_all(answer.as_bytes()).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    Receiver {
        url,
        got,
        connections,
    }
}

/// One request's head and body (by Content-Length); `None` when the client closed.
async fn read_request(
    s: &mut tokio::net::TcpStream,
    buf: &mut Vec<u8>,
) -> Option<(String, Vec<u8>)> {
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..p]).into_owned();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap();
            while buf.len() < p + 4 + len {
                let k = s.read(&mut chunk).await.ok().filter(|&k| k > 0)?;
                buf.extend_from_slice(&chunk[..k]);
            }
            let body = buf[p + 4..p + 4 + len].to_vec();
            buf.drain(..p + 4 + len);
            return Some((head, body));
        }
        let k = s.read(&mut chunk).await.ok().filter(|&k| k > 0)?;
        buf.extend_from_slice(&chunk[..k]);
    }
}

fn fast_retries() -> hooks::Options {
    hooks::Options {
        retry_delays: vec![Duration::from_millis(20); 3],
        ..hooks::Options::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_posts_signed_batches_and_retries_a_failed_post() {
    let r = receiver(1).await;
    let hook = Hook::start(
        &Webhook {
            url: r.url.clone(),
            name: None,
            basic: None,
            events: vec![WebhookEvent::Failed, WebhookEvent::AppHalted],
            secret: Some(Secret::new("hook-secret")),
        },
        fast_retries(),
    );
    let failed = outcome(7, State::Failed);
    hook.offer(WebhookEvent::Failed, &failed);
    // Not subscribed: never sent.
    hook.offer(WebhookEvent::Expired, &outcome(8, State::Expired));
    wait_for("the retried POST", Duration::from_secs(10), || {
        hook.counts().sent.load(Ordering::Relaxed) == 1
    })
    .await;
    let got = r.got.lock().unwrap().clone();
    assert_eq!(got.len(), 2, "one 500, then the same body again");
    assert_eq!(got[0].1, got[1].1);
    let (head, body) = &got[1];
    assert!(head.starts_with("POST /hook?k=v HTTP/1.1"), "{head}");
    let signature = head
        .lines()
        .find_map(|l| l.strip_prefix("x-pushgate-signature: "))
        .unwrap_or_else(|| panic!("signed: {head}"));
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, b"hook-secret");
    let expected: String = aws_lc_rs::hmac::sign(&key, body)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(signature, format!("sha256={expected}"));
    let doc: Value = serde_json::from_slice(body).unwrap();
    let events = doc["events"].as_array().unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["event"], "failed");
    assert_eq!(events[0]["token"], format!("{:064x}", 7));
    assert_eq!(events[0]["status_code"], 410);
    assert_eq!(events[0]["reason"], "Unregistered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_that_is_down_loses_counted_events_and_never_blocks() {
    // A port nothing listens on.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", closed.local_addr().unwrap());
    drop(closed);
    let hook = Hook::start(
        &Webhook {
            url,
            name: None,
            basic: None,
            events: vec![WebhookEvent::Failed],
            secret: None,
        },
        hooks::Options {
            queue: 10,
            batch: 5,
            ..fast_retries()
        },
    );
    for i in 0..100 {
        hook.offer(WebhookEvent::Failed, &outcome(i, State::Failed));
    }
    let full = hook.counts().dropped_queue_full.load(Ordering::Relaxed);
    assert!(full >= 80, "{full} found the queue full");
    wait_for("every kept event given up", Duration::from_secs(10), || {
        full + hook.counts().dropped_gave_up.load(Ordering::Relaxed) == 100
    })
    .await;
    assert_eq!(hook.counts().sent.load(Ordering::Relaxed), 0);
}

/// The hooks' client is built once and keeps its connection: batch after batch goes over one
/// TCP connection. And a hook at an IPv6 literal is reached (the host keeps its brackets in a
/// URL, not in the address connected to).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_at_an_ipv6_literal_gets_every_batch_over_one_connection() {
    let r = receiver_on("[::1]:0", 0).await;
    assert!(r.url.starts_with("http://[::1]:"), "{}", r.url);
    let hook = Hook::start(
        &Webhook {
            url: r.url.clone(),
            name: None,
            basic: None,
            events: vec![WebhookEvent::Failed],
            secret: None,
        },
        hooks::Options {
            batch: 1,
            ..fast_retries()
        },
    );
    for i in 0..5 {
        hook.offer(WebhookEvent::Failed, &outcome(i, State::Failed));
        wait_for("the batch POSTed", Duration::from_secs(10), || {
            hook.counts().sent.load(Ordering::Relaxed) == i + 1
        })
        .await;
    }
    assert_eq!(r.got.lock().unwrap().len(), 5);
    assert_eq!(
        r.connections.load(Ordering::SeqCst),
        1,
        "five batches, one connection"
    );
}

/// A Slack-style hook: credentials in the user information and a secret in the path. The
/// user information is sent as Basic auth (not in the Host header, not in the URL), and the
/// metrics label the hook by its host and port only, or by its configured name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_url_s_credentials_are_basic_auth_and_never_a_label() {
    // The recorder, before anything is counted.
    let metrics = gateway::metrics::handle().unwrap();
    let r = receiver(0).await;
    let authority = r
        .url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let secret_path = format!("http://bot:p%40ss@{authority}/services/T0/B0/s3cr3t");
    let (url, basic) = gateway::config::split_userinfo(&secret_path);
    assert_eq!(url, format!("http://{authority}/services/T0/B0/s3cr3t"));
    assert_eq!(basic.as_deref(), Some("bot:p@ss"));
    let config = Webhook {
        url,
        name: None,
        basic: basic.map(Secret::new),
        events: vec![WebhookEvent::Failed],
        secret: None,
    };
    assert_eq!(config.label(), authority);
    let named = Webhook {
        name: Some("slack-alerts".into()),
        ..config.clone()
    };
    assert_eq!(named.label(), "slack-alerts");
    let hook = Hook::start(&config, fast_retries());
    hook.offer(WebhookEvent::Failed, &outcome(9, State::Failed));
    wait_for("the POST", Duration::from_secs(10), || {
        hook.counts().sent.load(Ordering::Relaxed) == 1
    })
    .await;
    let (head, _) = r.got.lock().unwrap()[0].clone();
    let head_lower = head.to_ascii_lowercase();
    assert!(head.starts_with("POST /services/T0/B0/s3cr3t "), "{head}");
    // base64("bot:p@ss")
    assert!(
        head_lower.contains("authorization: basic ym90onbac3m="),
        "{head}"
    );
    assert!(head_lower.contains(&format!("host: {authority}")), "{head}");
    assert!(!head.contains("bot:"), "{head}");
    let metrics = metrics.render();
    assert!(
        metrics.contains(&format!(
            "pushgate_webhook_events_sent_total{{hook=\"{authority}\"}}"
        )),
        "{metrics}"
    );
    assert!(!metrics.contains("s3cr3t"), "the path is in a label");
}
