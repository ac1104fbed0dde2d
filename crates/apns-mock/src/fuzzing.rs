//! The entry point of the simulator's fuzz target (`fuzz/`, and the corpus replayed by
//! `tests/it/fuzz_corpus.rs` in the gateway): arbitrary bytes as one request to the checks
//! every stream goes through. Not part of the simulator's API.

use crate::auth::ConnTokens;
use crate::checks::{ConnAuth, check};

/// `data` as `METHOD PATH\n`, header lines `name: value\n` up to an empty line, then the body;
/// whatever does not make a request is dropped. Must never panic.
pub fn request(data: &[u8]) {
    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&data[..i], &data[i + 2..]),
        None => (data, &[][..]),
    };
    let head = String::from_utf8_lossy(head);
    let mut lines = head.lines();
    let (method, path) = lines
        .next()
        .and_then(|l| l.split_once(' '))
        .unwrap_or(("POST", "/3/device/00"));
    let mut builder = http::Request::builder().method(method).uri(path);
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            builder = builder.header(name.trim(), value.trim());
        }
    }
    let Ok(request) = builder.body(()) else {
        return;
    };
    let (parts, ()) = request.into_parts();
    // The simulator's defaults, without JWT or client-certificate checks.
    let behaviour = crate::MockApns::builder().behaviour(None, None);
    let conn = ConnAuth {
        certificate: None,
        tokens: ConnTokens::default(),
        stats: None,
    };
    let _ = check(&behaviour, &conn, &parts, body, 1_800_000_000);
}
