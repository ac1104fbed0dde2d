//! An APNs simulator: TLS + HTTP/2 on the `h2` crate, Apple's request checks and reasons,
//! provider-token and client-certificate auth, and fault injection.
//!
//! # Map
//!
//! [`MockApns::builder`] collects the behaviour and [`MockApnsBuilder::spawn`] starts it on a
//! port; `server` accepts connections and streams, `checks` runs Apple's checks in the order of
//! the reference (§9), `auth` verifies provider tokens per connection, `tls` makes or loads
//! certificates, and `stats` counts what was seen and serves `/stats`, `/notifications` and
//! `/reset`. `pushgate mock-apns` is a thin CLI over this, and the tests, demo and benchmark all
//! run against it.
//!
//! ```text
//! TcpListener ─▶ TLS (ALPN h2, optional client cert) ─▶ h2 connection ─▶ stream ─▶ checks ─▶ answer
//!                                                        │ GOAWAY every N, one-stream rule     │
//!                                                        └──────────────── stats ◀─────────────┘
//! ```

mod auth;
mod checks;
#[doc(hidden)]
pub mod fuzzing;
mod server;
mod stats;
#[cfg(feature = "testing")]
pub mod testing;
mod tls;

pub use checks::Rejection;
pub use stats::{AcceptedJson, Stats, StatsSnapshot, router as stats_router};

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use apns::{DeviceToken, Reason};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::auth::JwtVerifier;
use crate::tls::ClientCheck;

/// Why the simulator could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MockError {
    #[error("certificate setup: {0}")]
    Certificate(String),
    #[error("reading {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {problem}")]
    List {
        path: String,
        line: usize,
        problem: String,
    },
    #[error("binding {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// How the simulator answers. Immutable once started.
#[derive(Debug)]
pub(crate) struct Behaviour {
    pub jwt: Option<JwtVerifier>,
    pub client_ca: Option<ClientCheck>,
    /// Token → Apple's 410 timestamp (ms).
    pub unregistered: HashMap<String, u64>,
    pub bad_tokens: HashSet<String>,
    /// Token → forced status and reason.
    pub reasons: HashMap<String, (u16, Reason)>,
    /// The sizes, in bytes, of the tokens devices issue; any other is a BadDeviceToken.
    pub token_bytes: Vec<usize>,
    pub latency: Duration,
    pub fail_rate: f64,
    pub goaway_every: Option<u64>,
    /// The error code of those GOAWAYs: `None` (or NO_ERROR) closes gracefully, any other
    /// closes at once with that code.
    pub goaway_code: Option<h2::Reason>,
    pub max_streams: u32,
    pub clock_offset_s: i64,
    /// Close every connection right after the h2 handshake with GOAWAY, before answering
    /// anything: what APNs does to a revoked or wrong-environment certificate.
    pub reject_connections: bool,
}

/// Entry point: `MockApns::builder()...spawn().await`.
#[derive(Debug)]
pub struct MockApns;

impl MockApns {
    pub fn builder() -> MockApnsBuilder {
        MockApnsBuilder::default()
    }
}

/// The simulator's knobs; every one has the CLI's default.
#[derive(Debug)]
pub struct MockApnsBuilder {
    listen: SocketAddr,
    tls_files: Option<(Vec<u8>, Vec<u8>)>,
    jwt_key: Option<Vec<u8>>,
    client_ca: Option<Vec<u8>>,
    unregistered: HashMap<String, u64>,
    bad_tokens: HashSet<String>,
    reasons: HashMap<String, (u16, Reason)>,
    token_bytes: Vec<usize>,
    latency: Duration,
    fail_rate: f64,
    goaway_every: Option<u64>,
    goaway_code: Option<h2::Reason>,
    max_streams: u32,
    clock_offset_s: i64,
    record_limit: usize,
    reject_connections: bool,
}

impl Default for MockApnsBuilder {
    fn default() -> Self {
        MockApnsBuilder {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls_files: None,
            jwt_key: None,
            client_ca: None,
            unregistered: HashMap::new(),
            bad_tokens: HashSet::new(),
            reasons: HashMap::new(),
            token_bytes: vec![DEVICE_TOKEN_BYTES],
            latency: Duration::ZERO,
            fail_rate: 0.0,
            goaway_every: None,
            goaway_code: None,
            max_streams: 1000,
            clock_offset_s: 0,
            record_limit: 100_000,
            reject_connections: false,
        }
    }
}

/// The size of the tokens Apple's devices issue today: 32 bytes, 64 hex characters.
pub const DEVICE_TOKEN_BYTES: usize = 32;

fn normalise(token: &str) -> String {
    token.to_ascii_lowercase()
}

impl MockApnsBuilder {
    /// Where to listen (default 127.0.0.1:0, a free port).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }
    /// Serve this PEM certificate chain and key instead of generating a CA.
    pub fn tls_files(mut self, cert_pem: Vec<u8>, key_pem: Vec<u8>) -> Self {
        self.tls_files = Some((cert_pem, key_pem));
        self
    }
    /// Require provider tokens signed by this key (PEM public key).
    pub fn jwt_key(mut self, public_pem: Vec<u8>) -> Self {
        self.jwt_key = Some(public_pem);
        self
    }
    /// Ask for client certificates; requests without one from this CA get 403 BadCertificate.
    pub fn client_ca(mut self, ca_pem: Vec<u8>) -> Self {
        self.client_ca = Some(ca_pem);
        self
    }
    /// Answer 410 Unregistered with this timestamp (ms) for these tokens.
    pub fn unregistered<'a>(mut self, tokens: impl IntoIterator<Item = (&'a str, u64)>) -> Self {
        self.unregistered
            .extend(tokens.into_iter().map(|(t, ts)| (normalise(t), ts)));
        self
    }
    /// Answer 400 BadDeviceToken for these tokens.
    pub fn bad_tokens<'a>(mut self, tokens: impl IntoIterator<Item = &'a str>) -> Self {
        self.bad_tokens.extend(tokens.into_iter().map(normalise));
        self
    }
    /// Answer this status and reason for this token.
    pub fn reason(mut self, token: &str, status: u16, reason: Reason) -> Self {
        self.reasons.insert(normalise(token), (status, reason));
        self
    }
    /// Accept tokens of these sizes in bytes (default 32, Apple's today; Apple says not to
    /// count on it, so a test can add a longer size); any other is answered 400
    /// BadDeviceToken, as Apple answers a token no device issued. An empty list keeps 32.
    pub fn token_bytes(mut self, sizes: &[usize]) -> Self {
        if !sizes.is_empty() {
            self.token_bytes = sizes.to_vec();
        }
        self
    }
    /// Wait this long before each answer.
    pub fn latency(mut self, d: Duration) -> Self {
        self.latency = d;
        self
    }
    /// Answer this fraction (0..1) of valid requests with 500, 503 or 429.
    pub fn fail_rate(mut self, rate: f64) -> Self {
        self.fail_rate = rate.clamp(0.0, 1.0);
        self
    }
    /// Send GOAWAY after this many streams on each connection.
    pub fn goaway_every(mut self, n: u64) -> Self {
        self.goaway_every = (n > 0).then_some(n);
        self
    }
    /// The error code of `goaway_every`'s GOAWAY. NO_ERROR (the default) closes gracefully:
    /// streams already accepted are answered. Any other code closes at once, as a server in
    /// trouble does: the GOAWAY's last-stream-id is the last stream accepted, those streams
    /// are never answered (the client sees the connection break under them), and streams
    /// above it must be re-sent.
    pub fn goaway_code(mut self, code: h2::Reason) -> Self {
        self.goaway_code = (code != h2::Reason::NO_ERROR).then_some(code);
        self
    }
    /// Advertise this SETTINGS_MAX_CONCURRENT_STREAMS (default 1000).
    pub fn max_streams(mut self, n: u32) -> Self {
        self.max_streams = n.max(1);
        self
    }
    /// Shift the simulator's clock (for the provider-token age rules).
    pub fn clock_offset(mut self, secs: i64) -> Self {
        self.clock_offset_s = secs;
        self
    }
    /// Close each connection with GOAWAY right after the handshake, answering nothing.
    pub fn reject_connections(mut self, yes: bool) -> Self {
        self.reject_connections = yes;
        self
    }
    /// Keep full detail of at most this many accepted notifications (ids are always kept).
    pub fn record_limit(mut self, n: usize) -> Self {
        self.record_limit = n;
        self
    }

    /// Loads `--unregistered`, `--bad-tokens` or `--reasons` files. Lines: a token (and for
    /// unregistered an optional timestamp in ms; for reasons `token status reason`); `#` and
    /// blank lines are skipped. Problems name the file and line.
    pub fn load_list(mut self, kind: ListKind, path: &Path) -> Result<Self, MockError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| MockError::Read {
            path: name.clone(),
            source,
        })?;
        let now_ms = server::shifted_now(0) * 1000;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |problem: String| MockError::List {
                path: name.clone(),
                line: i + 1,
                problem,
            };
            let mut words = line.split_whitespace();
            let token = words.next().unwrap_or_default();
            let token = DeviceToken::parse(token)
                .map_err(|e| err(e.to_string()))?
                .as_str()
                .to_owned();
            // The size check comes first: such an entry could never be answered as listed.
            if !self.token_bytes.contains(&(token.len() / 2)) {
                return Err(err(format!(
                    "a {}-byte token, which the simulator answers BadDeviceToken whatever the \
                     list says (token sizes accepted: {:?} bytes; see --token-bytes)",
                    token.len() / 2,
                    self.token_bytes
                )));
            }
            match kind {
                ListKind::Unregistered => {
                    let ts = match words.next() {
                        Some(w) => w
                            .parse()
                            .map_err(|_| err(format!("timestamp {w:?} is not a number")))?,
                        None => now_ms,
                    };
                    self.unregistered.insert(token, ts);
                }
                ListKind::BadTokens => {
                    self.bad_tokens.insert(token);
                }
                ListKind::Reasons => {
                    let status = words
                        .next()
                        .and_then(|w| w.parse::<u16>().ok())
                        .filter(|s| (200..600).contains(s))
                        .ok_or_else(|| err("expected `token status reason`".to_owned()))?;
                    let reason = words
                        .next()
                        .ok_or_else(|| err("expected `token status reason`".to_owned()))?;
                    self.reasons.insert(token, (status, Reason::parse(reason)));
                }
            }
        }
        Ok(self)
    }

    /// How the simulator built so far answers, with its JWT verifier and client check
    /// (also what the fuzz target checks requests against).
    pub(crate) fn behaviour(
        self,
        jwt: Option<JwtVerifier>,
        client_ca: Option<ClientCheck>,
    ) -> Behaviour {
        Behaviour {
            jwt,
            client_ca,
            unregistered: self.unregistered,
            bad_tokens: self.bad_tokens,
            reasons: self.reasons,
            token_bytes: self.token_bytes,
            latency: self.latency,
            fail_rate: self.fail_rate,
            goaway_every: self.goaway_every,
            goaway_code: self.goaway_code,
            max_streams: self.max_streams,
            clock_offset_s: self.clock_offset_s,
            reject_connections: self.reject_connections,
        }
    }

    /// Binds and starts serving.
    pub async fn spawn(self) -> Result<RunningMock, MockError> {
        let listener = TcpListener::bind(self.listen)
            .await
            .map_err(|source| MockError::Bind {
                addr: self.listen,
                source,
            })?;
        self.serve_on(listener)
    }

    /// Starts serving on a bound listener.
    pub fn serve_on(self, listener: TcpListener) -> Result<RunningMock, MockError> {
        let addr = listener.local_addr().map_err(|source| MockError::Bind {
            addr: self.listen,
            source,
        })?;
        let identity = match &self.tls_files {
            Some((cert, key)) => tls::load(cert, key)?,
            None => tls::generate()?,
        };
        let client_ca = self
            .client_ca
            .as_deref()
            .map(ClientCheck::new)
            .transpose()?;
        let config = tls::server_config(&identity, client_ca.as_ref())?;
        let jwt = self.jwt_key.as_deref().map(JwtVerifier::new).transpose()?;
        let stats = Arc::new(Stats::new(self.record_limit));
        let shared = Arc::new(server::Shared {
            behaviour: self.behaviour(jwt, client_ca),
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            stats: Arc::clone(&stats),
        });
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server::accept_loop(listener, shared, shutdown.clone()));
        Ok(RunningMock {
            addr,
            ca_pem: identity.ca_pem,
            stats,
            shutdown,
            task: Some(task),
        })
    }
}

/// Which token list a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    Unregistered,
    BadTokens,
    Reasons,
}

/// A running simulator. Dropping it stops accepting; [`RunningMock::shutdown`] also sends
/// GOAWAY on open connections.
#[derive(Debug)]
pub struct RunningMock {
    addr: SocketAddr,
    ca_pem: Option<String>,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
    /// The accept loop; taken by [`RunningMock::shutdown`] to wait for it.
    task: Option<JoinHandle<()>>,
}

impl RunningMock {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    /// `https://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("https://{}", self.addr)
    }
    /// The generated CA to trust, in PEM (`None` when serving given files).
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }
    /// Live counters.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }
    /// Stops accepting and sends GOAWAY on every connection.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for RunningMock {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A TLS server configuration (ALPN h2) with a fresh CA, and that CA in PEM for clients to
/// trust: for test servers that write HTTP/2 frames themselves, to produce what no h2 server
/// API can (a GOAWAY below streams already received, say).
pub fn generated_server_tls() -> Result<(rustls::ServerConfig, String), MockError> {
    let id = tls::generate()?;
    let config = tls::server_config(&id, None)?;
    Ok((config, id.ca_pem.unwrap_or_default()))
}

/// HTTP/2 error codes, for [`MockApnsBuilder::goaway_code`].
pub use h2::Reason as H2Reason;

/// An HTTP/2 error code by its RFC 9113 name (`ENHANCE_YOUR_CALM`) or number.
pub fn parse_h2_reason(name: &str) -> Option<h2::Reason> {
    const NAMES: [&str; 14] = [
        "NO_ERROR",
        "PROTOCOL_ERROR",
        "INTERNAL_ERROR",
        "FLOW_CONTROL_ERROR",
        "SETTINGS_TIMEOUT",
        "STREAM_CLOSED",
        "FRAME_SIZE_ERROR",
        "REFUSED_STREAM",
        "CANCEL",
        "COMPRESSION_ERROR",
        "CONNECT_ERROR",
        "ENHANCE_YOUR_CALM",
        "INADEQUATE_SECURITY",
        "HTTP_1_1_REQUIRED",
    ];
    let code = match NAMES.iter().position(|n| n.eq_ignore_ascii_case(name)) {
        Some(i) => i as u32,
        None => name.parse().ok()?,
    };
    Some(h2::Reason::from(code))
}
