//! Committed work that must not wait for a trigger that never comes: a request whose client
//! went away before the answer, retries due by the thousand at start-up, and one app's backlog
//! that must not cost the others their reads.

use std::io::Write;
use std::time::Duration;

use gateway::dispatch::DispatchOptions;
use gateway::spool::State;

use crate::harness::token;
use crate::live::{KEY, Live, mock, until};

const MINUTE: Duration = Duration::from_secs(60);

/// A client that closes its connection right after sending its request never reads the
/// answer, and hyper drops the handler; whatever the spool committed for it is still
/// delivered, at once, with the gateway otherwise idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_client_went_away_is_still_delivered() {
    let sim = mock().record_limit(0).spawn().await.unwrap();
    let live = Live::start(&sim, "", DispatchOptions::default()).await;
    let tokens: Vec<String> = (0..1_000).map(|i| token(i).as_str().to_owned()).collect();
    let body = serde_json::json!({"app": "shop", "tokens": tokens, "alert": "hello"}).to_string();
    let addr = live.addr;
    // Several clients, so that some commit lands after its handler was dropped.
    for _ in 0..10 {
        let body = body.clone();
        tokio::task::spawn_blocking(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            write!(
                s,
                "POST /v1/notifications HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
            // Closed without reading a byte of the answer.
        })
        .await
        .unwrap();
    }
    // What was committed (some or all of the ten) is delivered within seconds; nothing else
    // happens in the gateway that could trigger a read of the spool.
    let committed = || async {
        let counts = live.spool().counts().await.unwrap();
        counts.iter().map(|(_, n)| n).sum::<u64>()
    };
    until("a commit", Duration::from_secs(10), || async {
        committed().await > 0
    })
    .await;
    until(
        "every committed notification delivered",
        Duration::from_secs(10),
        || async { live.count(State::Delivered).await == committed().await },
    )
    .await;
    live.stop().await;
}
