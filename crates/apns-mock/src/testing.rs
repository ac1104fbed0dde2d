//! Test support shared by pushgate's crates (feature `testing`): the test credentials, test
//! device tokens, and the one way a test waits for a condition — polling it against a
//! deadline, never sleeping in its place.
//!
//! The credentials are throwaway keys for 127.0.0.1, never for Apple (`fixtures/make.sh`
//! regenerates them). They live beside the simulator that checks them, and every crate reaches
//! them through here instead of through another crate's folder.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use apns::DeviceToken;

/// The folder of test credentials.
pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures");

/// The path of one test credential.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(FIXTURES).join(name)
}

/// The token key (EC P-256), key id `ABC123DEFG`, team `TEAM123456` in the tests.
pub const P8: &[u8] = include_bytes!("../fixtures/AuthKey_ABC123DEFG.p8");
/// Its public half, which the simulator checks provider tokens with.
pub const P8_PUBLIC: &[u8] = include_bytes!("../fixtures/AuthKey_ABC123DEFG.pub.pem");

/// The `i`-th test device token: `i` in hex, 64 digits.
pub fn token(i: u64) -> DeviceToken {
    DeviceToken::parse(&token_hex(i)).expect("64 hex digits are a token")
}

/// [`token`] as the text a client sends.
pub fn token_hex(i: u64) -> String {
    format!("{i:064x}")
}

/// Polls `cond` every 10 ms until it holds; panics naming `what` after `within`.
pub async fn wait_for(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < within,
            "{what} did not happen within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls the asynchronous `cond` every 20 ms until it holds (a spool read, an HTTP call);
/// panics naming `what` after `within`.
pub async fn until<F, Fut>(what: &str, within: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !cond().await {
        assert!(
            start.elapsed() < within,
            "{what} did not happen within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// For synchronous tests (those that drive the `pushgate` binary): polls `cond` until it holds,
/// panicking with `what` after `within`.
pub fn wait_until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    poll_until(what, within, || {
        if cond() {
            Ok(())
        } else {
            Err("not yet".to_owned())
        }
    });
}

/// For synchronous tests: polls `f` until it gives `Ok`, panicking after `within` with `what`
/// and the last `Err` (what was still missing), so a failure shows why and not only that it
/// timed out.
pub fn poll_until<T>(what: &str, within: Duration, mut f: impl FnMut() -> Result<T, String>) -> T {
    let start = Instant::now();
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) => assert!(
                start.elapsed() < within,
                "{what} did not happen within {within:?}: {e}"
            ),
        }
        // The pause between two polls, never a synchronisation on its own. These callers are
        // synchronous, so a thread sleep blocks no runtime.
        #[allow(
            clippy::disallowed_methods,
            reason = "a poll interval in a synchronous test"
        )]
        std::thread::sleep(Duration::from_millis(50));
    }
}
