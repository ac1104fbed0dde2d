//! Every listener bounded, over real sockets: slow headers, silent TLS clients, idle
//! keep-alives, slow bodies, the connection cap, trickling SMTP peers, the session cap, a
//! message that multiplies, and numbers at the edge of the clock. Each test also checks that
//! the gateway keeps serving others meanwhile.

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::api_harness::{SHOP_KEY, TestApi};
use crate::smtp::SMTP;

const T1: &str = "1111111111111111111111111111111111111111111111111111111111111111";

/// Reads until the peer closes (EOF or reset); returns what it sent first. Fails if it is still
/// open after `within`.
async fn closed_within(s: &mut TcpStream, within: Duration) -> String {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    loop {
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Err(_) => panic!(
                "still open after {within:?}; read {:?}",
                String::from_utf8_lossy(&got)
            ),
            Ok(Ok(0) | Err(_)) => return String::from_utf8_lossy(&got).into_owned(),
            Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Writes `text` over and over, a byte every 200 ms (each read sees data, none completes
/// anything), until the peer closes.
async fn trickle(s: &mut TcpStream, text: &[u8]) {
    for b in text.iter().cycle() {
        if s.write_all(&[*b]).await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `GET /healthz` on a connection of its own: the gateway still serves others.
async fn still_serving(api: &TestApi) {
    let (status, _, _) = tokio::time::timeout(
        Duration::from_secs(5),
        api.call("GET", "/healthz", None, None),
    )
    .await
    .expect("a request while the others hold their connections");
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_request_head_is_cut_at_header_read_timeout() {
    let api = TestApi::start_with_on(
        &crate::live::Backend::Sqlite,
        "header_read_timeout_s = 1\nkeepalive_idle_s = 30",
        "",
    )
    .await;
    let mut slow = TcpStream::connect(api.addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
    let started = Instant::now();
    // One header byte every 200 ms: each read sees data, none completes the head.
    let trickle = trickle(&mut slow, b"X-Slow: ");
    tokio::select! {
        () = trickle => {}
        () = tokio::time::sleep(Duration::from_secs(6)) => panic!("the trickle was never cut"),
    }
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "cut before its deadline: {:?}",
        started.elapsed()
    );
    still_serving(&api).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_lasts_keepalive_idle_s_not_header_read_timeout() {
    let api = TestApi::start_with_on(
        &crate::live::Backend::Sqlite,
        "header_read_timeout_s = 1\nkeepalive_idle_s = 3",
        "",
    )
    .await;
    let mut conn = TcpStream::connect(api.addr).await.unwrap();
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut chunk = [0u8; 4096];
    let n = conn.read(&mut chunk).await.unwrap();
    assert!(chunk[..n].starts_with(b"HTTP/1.1 200"));
    // Past the header deadline, an idle keep-alive is still open...
    let mut byte = [0u8; 1];
    assert!(
        tokio::time::timeout(Duration::from_millis(1800), conn.read(&mut byte))
            .await
            .is_err(),
        "closed before keepalive_idle_s"
    );
    // ...and still serves a request.
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let n = conn.read(&mut chunk).await.unwrap();
    assert!(chunk[..n].starts_with(b"HTTP/1.1 200"));
    // Then silent: closed once keepalive_idle_s has passed.
    let started = Instant::now();
    closed_within(&mut conn, Duration::from_secs(6)).await;
    assert!(started.elapsed() >= Duration::from_millis(2500));
    still_serving(&api).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stops_arriving_is_answered_408_and_nothing_is_stored() {
    let api =
        TestApi::start_with_on(&crate::live::Backend::Sqlite, "body_read_timeout_s = 1", "").await;
    let mut conn = TcpStream::connect(api.addr).await.unwrap();
    let head = format!(
        "POST /v1/notifications HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {SHOP_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"app\": \"shop\","
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let answer = closed_within(&mut conn, Duration::from_secs(6)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"request_timeout\""), "{answer}");
    assert_eq!(api.stored().await, 0);
    still_serving(&api).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_open_connections_a_client_is_told_503_until_one_closes() {
    let api = TestApi::start_with_on(
        &crate::live::Backend::Sqlite,
        "max_open_connections = 2\nheader_read_timeout_s = 60",
        "",
    )
    .await;
    let first = TcpStream::connect(api.addr).await.unwrap();
    let _second = TcpStream::connect(api.addr).await.unwrap();
    // Both are counted once accepted; until then a request may still find a free slot.
    let deadline = Instant::now() + Duration::from_secs(5);
    let (status, headers, json) = loop {
        let answer = api.call("GET", "/healthz", None, None).await;
        if answer.0 == 503 || Instant::now() > deadline {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status, 503, "{json}");
    assert_eq!(json["error"]["code"], "too_many_connections");
    assert!(headers.contains_key("retry-after"));
    assert_eq!(headers["connection"], "close");
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, _, _) = api.call("GET", "/healthz", None, None).await;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "a freed slot is never served");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_clients_of_the_https_api_hold_up_no_one_and_are_closed() {
    let api = TestApi::start_sections(
        "tls_cert = \"api.pem\"\ntls_key = \"api-key.pem\"\nheader_read_timeout_s = 3",
        "",
        "",
        crate::dashboard::write_tls,
    )
    .await;
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(TcpStream::connect(api.addr).await.unwrap());
    }
    let url = format!("https://{}/healthz", api.addr);
    // Handshakes in the accept loop made this wait 3 s per silent client: 9 s.
    let (status, _, _) =
        tokio::task::spawn_blocking(move || crate::dashboard::curl(&url, &["--max-time", "7"]))
            .await
            .unwrap();
    assert_eq!(status, 200, "served while three clients stay silent");
    for s in &mut silent {
        closed_within(s, Duration::from_secs(8)).await;
    }
}

/// An SMTP listener with `extra` lines in `[smtp]`.
async fn smtp_with(extra: &str) -> (TestApi, std::net::SocketAddr) {
    let api = TestApi::start_sections("", "", &format!("{SMTP}{extra}\n"), |_| ()).await;
    let at = api.smtp.unwrap();
    (api, at)
}

/// Connects and reads the greeting.
async fn greeted(at: std::net::SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(at).await.unwrap();
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"220 "), "{:?}", &buf[..n]);
    s
}

/// A whole SMTP transaction of one message to `to`, through lettre: the listener still
/// serves others.
async fn smtp_still_serving(at: std::net::SocketAddr) {
    let message = crate::smtp::seed_message(true, T1);
    let reply = crate::smtp::lettre(at, &["d@shop"], message).await;
    assert!(reply.unwrap().contains("queued"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_smtp_command_is_cut_at_command_timeout() {
    let (_api, at) = smtp_with("command_timeout_s = 1").await;
    let mut slow = greeted(at).await;
    let started = Instant::now();
    let trickle = trickle(&mut slow, b"EHLO trickle.example");
    let _ = tokio::time::timeout(Duration::from_secs(3), trickle).await;
    let bye = closed_within(&mut slow, Duration::from_secs(3)).await;
    assert!(bye.starts_with("421 4.4.2 no complete command"), "{bye}");
    assert!(started.elapsed() >= Duration::from_millis(900));
    smtp_still_serving(at).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_message_is_cut_at_data_timeout() {
    let (api, at) = smtp_with("data_timeout_s = 1").await;
    let mut slow = greeted(at).await;
    slow.write_all(b"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<d@shop>\r\nDATA\r\n")
        .await
        .unwrap();
    let mut got = String::new();
    while !got.contains("354 ") {
        let mut chunk = [0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(5), slow.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "{got}");
        got.push_str(&String::from_utf8_lossy(&chunk[..n]));
    }
    let trickle = trickle(&mut slow, b"Subject: slow\r\n");
    let _ = tokio::time::timeout(Duration::from_secs(3), trickle).await;
    let bye = closed_within(&mut slow, Duration::from_secs(3)).await;
    assert!(bye.starts_with("421 4.4.2 no complete message"), "{bye}");
    assert_eq!(api.stored().await, 0);
    smtp_still_serving(at).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_then_silence_is_closed() {
    let sections =
        format!("{SMTP}tls_cert = \"api.pem\"\ntls_key = \"api-key.pem\"\ncommand_timeout_s = 1\n");
    let api = TestApi::start_sections("", "", &sections, crate::dashboard::write_tls).await;
    let at = api.smtp.unwrap();
    let mut s = greeted(at).await;
    s.write_all(b"EHLO x\r\nSTARTTLS\r\n").await.unwrap();
    let said = closed_within(&mut s, Duration::from_secs(5)).await;
    assert!(said.contains("220 2.0.0 ready to start TLS"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_sessions_a_client_gets_421_until_one_ends() {
    let (_api, at) = smtp_with("max_sessions = 1").await;
    let mut first = greeted(at).await;
    let mut second = TcpStream::connect(at).await.unwrap();
    let said = closed_within(&mut second, Duration::from_secs(5)).await;
    assert_eq!(said, "421 4.3.2 too many sessions; try again later\r\n");
    first.write_all(b"QUIT\r\n").await.unwrap();
    closed_within(&mut first, Duration::from_secs(5)).await;
    // The slot is freed when the session's task ends, just after the close.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut s = TcpStream::connect(at).await.unwrap();
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).await.unwrap_or(0);
        if buf[..n].starts_with(b"220 ") {
            break;
        }
        assert!(Instant::now() < deadline, "{:?}", &buf[..n]);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Writes `text` while reading the replies (so neither side waits on a full socket buffer)
/// until they contain `until` and end a line; returns them.
async fn exchange(s: &mut TcpStream, text: &str, until: &str) -> String {
    let (mut read, mut write) = s.split();
    let reading = async {
        let mut got = String::new();
        while !(got.contains(until) && got.ends_with("\r\n")) {
            let mut chunk = vec![0u8; 65536];
            let n = read.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed: {got}");
            got.push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
        got
    };
    let writing = async { write.write_all(text.as_bytes()).await.unwrap() };
    let ((), got) = tokio::time::timeout(Duration::from_secs(30), async {
        tokio::join!(writing, reading)
    })
    .await
    .unwrap_or_else(|_| panic!("no {until:?} in time"));
    got
}

/// `MAIL`, a `RCPT` for each of `n` tokens of app shop, and `DATA`.
fn envelope(n: u32) -> String {
    let mut e = String::from("MAIL FROM:<a@b>\r\n");
    for i in 0..n {
        e.push_str(&format!("RCPT TO:<{i:064x}@shop>\r\n"));
    }
    e.push_str("DATA\r\n");
    e
}

/// A multipart message of `parts`, then the end of DATA.
fn multipart(parts: &str) -> String {
    format!(
        "Subject: many\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n\
         {parts}--b--\r\n.\r\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_multiplies_past_ten_thousand_is_refused_whole() {
    let smtp = "[smtp]\nlisten = \"127.0.0.1:0\"\nmax_message_bytes = 1048576\n";
    let api = TestApi::start_sections("", "", smtp, |_| ()).await;
    let at = api.smtp.unwrap();
    let mut s = greeted(at).await;
    exchange(&mut s, "EHLO x\r\n", "250 ").await;
    let part = "--b\r\nContent-Type: message/vnd.msys.apn\r\n\r\n{\"aps\": {\"alert\": \"x\"}}\r\n";
    // 5,001 recipients × two push parts without a token: 10,002 notifications.
    exchange(&mut s, &envelope(5_001), "354 ").await;
    let reply = exchange(&mut s, &multipart(&part.repeat(2)), "").await;
    assert!(
        reply.starts_with("554 5.6.0 push part 2: the message makes more than 10000 notifications"),
        "{reply}"
    );
    assert_eq!(api.stored().await, 0);
    // Many tiny parts are refused before the message is parsed: each would cost the parser a
    // few hundred bytes.
    exchange(&mut s, &envelope(1), "354 ").await;
    let reply = exchange(&mut s, &multipart(&part.repeat(12_000)), "").await;
    assert!(
        reply.starts_with("554 5.6.0 the message has more than 10100 MIME parts"),
        "{reply}"
    );
    assert_eq!(api.stored().await, 0);
    // Nor may tiny parts hide in a nested message sent in base64, where no dash shows.
    exchange(&mut s, &envelope(1), "354 ").await;
    let nested = "--b\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n\
                  U3ViamVjdDogeA0KDQp4DQo=\r\n";
    let reply = exchange(&mut s, &multipart(&format!("{part}{nested}")), "").await;
    assert!(
        reply.starts_with("554 5.6.0 the message carries a message/rfc822 part"),
        "{reply}"
    );
    // One part for the same recipients is within the limit.
    exchange(&mut s, &envelope(5_001), "354 ").await;
    let reply = exchange(&mut s, &multipart(part), "").await;
    assert!(
        reply.starts_with("250 2.0.0 5001 notifications queued"),
        "{reply}"
    );
    assert_eq!(api.stored().await, 5_001);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_at_the_edge_of_the_clock_are_refused_by_name() {
    let (api, at) = smtp_with("").await;
    let max = u64::MAX;
    let alert = |extra: serde_json::Value| {
        let mut doc = json!({"app": "shop", "tokens": [T1], "alert": "x"});
        doc.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        doc.to_string()
    };
    for (extra, field) in [
        (json!({"delay": max}), "delay"),
        (json!({"ttl": max}), "ttl"),
        (json!({"expiration": max}), "expiration"),
        (
            json!({"ttl": max - 1, "send_at": "2030-01-01T00:00:00Z"}),
            "ttl",
        ),
        (json!({"collapse_id": "scöre"}), "collapse"),
    ] {
        let (status, _, body) = api
            .call(
                "POST",
                "/v1/notifications",
                Some(SHOP_KEY),
                Some(&alert(extra.clone())),
            )
            .await;
        assert_eq!(status, 400, "{extra}: {body}");
        assert_eq!(body["error"]["code"], "invalid_field", "{extra}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "{extra}: {message}");
    }
    let (status, _, body) = api
        .call(
            "GET",
            &format!("/v1/apps/shop/feedback?since={max}"),
            Some(SHOP_KEY),
            None,
        )
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &json!("invalid_field"))
    );
    // The scheme of Authorization is case-insensitive.
    let (status, _, body) = api
        .call_with(
            "POST",
            "/v1/notifications",
            None,
            Some(&alert(json!({}))),
            &[("authorization", &format!("BEARER {SHOP_KEY}"))],
        )
        .await;
    assert_eq!(status, 202, "{body}");
    // Over unauthenticated SMTP, as a header.
    let message = format!(
        "Subject: far\r\nMIME-Version: 1.0\r\nContent-Type: message/vnd.msys.apn\r\n\
         X-Device-Token: {T1}\r\nX-APNs-Expiration: {max}\r\n\r\n{{\"aps\": {{\"alert\": \"x\"}}}}\r\n"
    );
    let refused = crate::smtp::lettre(at, &["d@shop"], message)
        .await
        .unwrap_err();
    assert!(
        refused.contains("554") && refused.contains("expiration"),
        "{refused}"
    );
    assert_eq!(api.stored().await, 1, "only the BEARER one");
}

/// The API's accept loop with `router` and `limits`, until the returned sender fires.
async fn serve_router(
    router: axum::Router,
    limits: gateway::listen::Limits,
) -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(gateway::listen::serve(
        "http",
        listener,
        None,
        router,
        move || limits,
        async {
            let _ = stopped.await;
        },
    ));
    (addr, stop, server)
}

const GENEROUS: gateway::listen::Limits = gateway::listen::Limits {
    header_read: Duration::from_secs(10),
    keepalive_idle: Duration::from_secs(60),
    body_read: Duration::from_secs(60),
    max_open: 100,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_shutdown_a_request_in_progress_is_answered_and_idle_connections_close() {
    use std::sync::Arc;
    let entered = Arc::new(tokio::sync::Notify::new());
    let release = Arc::new(tokio::sync::Notify::new());
    let (e, r) = (Arc::clone(&entered), Arc::clone(&release));
    let router = axum::Router::new()
        .route("/fast", axum::routing::get(|| async { "fast" }))
        .route(
            "/slow",
            axum::routing::get(move || async move {
                e.notify_one();
                r.notified().await;
                "finished"
            }),
        );
    let (addr, stop, server) = serve_router(router, GENEROUS).await;
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /fast HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut chunk = [0u8; 1024];
    let n = idle.read(&mut chunk).await.unwrap();
    assert!(chunk[..n].starts_with(b"HTTP/1.1 200"));
    let mut busy = TcpStream::connect(addr).await.unwrap();
    busy.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), entered.notified())
        .await
        .expect("the slow handler runs");
    stop.send(()).unwrap();
    // The idle keep-alive closes at once; new connections are refused.
    assert_eq!(closed_within(&mut idle, Duration::from_secs(5)).await, "");
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < deadline, "still accepting after shutdown");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The request in progress finishes, is answered, and then the loop returns.
    release.notify_one();
    let answer = closed_within(&mut busy, Duration::from_secs(5)).await;
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("finished"),
        "{answer}"
    );
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("serve returns once every connection is done")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_its_answer_is_given_up_one_reading_slowly_is_not() {
    const STEADY: usize = 48 << 20;
    let metrics = gateway::metrics::handle().expect("the recorder");
    let big = "x".repeat(32 << 20);
    let steady = "y".repeat(STEADY);
    let router = axum::Router::new()
        .route("/big", axum::routing::get(move || async move { big }))
        .route("/steady", axum::routing::get(move || async move { steady }));
    let limits = gateway::listen::Limits {
        keepalive_idle: Duration::from_secs(1),
        ..GENEROUS
    };
    let (addr, _stop, _server) = serve_router(router, limits).await;
    // Read at a steady pace for longer than keepalive_idle_s, more than the socket buffers
    // hold: the writes wait on the reader again and again but make progress, so the answer
    // arrives whole.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /steady HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut body = 0usize;
    let mut chunk = vec![0u8; 64 << 10];
    while body < STEADY {
        let n = tokio::time::timeout(Duration::from_secs(5), slow.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed after {body} bytes of the body");
        body += chunk[..n].iter().filter(|b| **b == b'y').count();
        // Pacing, not waiting on anything: 768 reads of 64 KiB take 3.8 s or more.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(started.elapsed() > Duration::from_secs(3));
    // Then silent: the idle deadline, counted from the answer's last byte, closes it.
    closed_within(&mut slow, Duration::from_secs(4)).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut reader = socket.connect(addr).await.unwrap();
    reader
        .write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // Nothing is read: the answer's writes stall until the gateway gives up on them.
    let stalled = "pushgate_connections_timed_out_total{listener=\"http\",phase=\"write\"}";
    let deadline = Instant::now() + Duration::from_secs(10);
    while !metrics.render().contains(stalled) {
        assert!(
            Instant::now() < deadline,
            "the stalled write was never given up: {}",
            metrics.render()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut got = 0usize;
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), reader.read(&mut chunk)).await {
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => got += n,
            Err(_) => panic!("still open after the write deadline"),
        }
    }
    assert!(got < 32 << 20, "the whole answer arrived: {got} bytes");
}
