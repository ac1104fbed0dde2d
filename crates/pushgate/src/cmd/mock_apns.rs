//! `pushgate mock-apns`: the APNs simulator as a process (docs/mock-apns.md).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use apns_mock::{ListKind, MockApns};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address of the TLS + HTTP/2 listener.
    #[arg(long, default_value = "127.0.0.1:2197")]
    listen: SocketAddr,
    /// Address of the stats listener (plain HTTP: GET /stats, GET /notifications, POST /reset).
    #[arg(long)]
    stats: Option<SocketAddr>,
    /// Server certificate chain (PEM); without it a CA and certificate are generated.
    #[arg(long, requires = "tls_key", conflicts_with = "ca_out")]
    tls_cert: Option<PathBuf>,
    /// Server private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Where to write the generated CA certificate (PEM), for clients to trust.
    #[arg(long)]
    ca_out: Option<PathBuf>,
    /// Require provider tokens (ES256 JWT) verifiable with this public key (PEM).
    #[arg(long, conflicts_with = "jwt_key_out")]
    jwt_key: Option<PathBuf>,
    /// Make a signing key for a trial: writes DIR/AuthKey_SIMULATED.p8 (the `key_file` a
    /// gateway signs with) and its public half, and requires tokens signed by it.
    #[arg(long)]
    jwt_key_out: Option<PathBuf>,
    /// Ask for client certificates; requests without one from this CA get 403 BadCertificate.
    #[arg(long)]
    client_ca: Option<PathBuf>,
    /// Tokens answered 410 Unregistered: `token [timestamp-ms]` per line.
    #[arg(long)]
    unregistered: Option<PathBuf>,
    /// Tokens answered 400 BadDeviceToken: one per line.
    #[arg(long)]
    bad_tokens: Option<PathBuf>,
    /// Forced answers: `token status reason` per line.
    #[arg(long)]
    reasons: Option<PathBuf>,
    /// The token sizes, in bytes, that devices issue; any other is answered 400
    /// BadDeviceToken. Apple's are 32 today; add a size to try a longer one (`32,100`).
    #[arg(long, value_delimiter = ',', default_value = "32")]
    token_bytes: Vec<usize>,
    /// Delay before every answer, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Fraction (0..1) of valid requests answered with 500, 503 or 429.
    #[arg(long, default_value_t = 0.0)]
    fail_rate: f64,
    /// Send GOAWAY after this many streams on each connection.
    #[arg(long)]
    goaway_every: Option<u64>,
    /// The error code of those GOAWAYs (`NO_ERROR`: graceful; `ENHANCE_YOUR_CALM`,
    /// `INTERNAL_ERROR`, ... or a number: closed at once with that code).
    #[arg(long, value_parser = goaway_code, default_value = "NO_ERROR")]
    goaway_code: apns_mock::H2Reason,
    /// SETTINGS_MAX_CONCURRENT_STREAMS to advertise.
    #[arg(long, default_value_t = 1000)]
    max_streams: u32,
    /// Shift the simulator's clock by this many seconds (provider-token age rules).
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    clock_offset_s: i64,
    /// Close every connection with GOAWAY right after the handshake (a refused certificate).
    #[arg(long)]
    reject_connections: bool,
    /// Keep full detail (for GET /notifications) of at most this many accepted notifications.
    #[arg(long, default_value_t = 100_000)]
    record_limit: usize,
}

fn goaway_code(s: &str) -> Result<apns_mock::H2Reason, String> {
    apns_mock::parse_h2_reason(s).ok_or_else(|| {
        format!("{s:?} is not an HTTP/2 error code (a name such as ENHANCE_YOUR_CALM, or a number)")
    })
}

fn read(path: &PathBuf) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

#[allow(
    clippy::print_stdout,
    reason = "the listen addresses are this command's output"
)]
pub async fn run(a: Args) -> anyhow::Result<ExitCode> {
    if !(0.0..=1.0).contains(&a.fail_rate) {
        anyhow::bail!("--fail-rate must be between 0 and 1 (got {})", a.fail_rate);
    }
    let most = apns::notification::MAX_TOKEN_HEX / 2;
    if let Some(n) = a.token_bytes.iter().find(|n| !(1..=most).contains(*n)) {
        anyhow::bail!("--token-bytes must list sizes from 1 to {most} bytes (got {n})");
    }
    let mut b = MockApns::builder()
        .listen(a.listen)
        .latency(Duration::from_millis(a.latency_ms))
        .fail_rate(a.fail_rate)
        .max_streams(a.max_streams)
        .clock_offset(a.clock_offset_s)
        .reject_connections(a.reject_connections)
        .record_limit(a.record_limit)
        .token_bytes(&a.token_bytes);
    if let Some(n) = a.goaway_every {
        b = b.goaway_every(n).goaway_code(a.goaway_code);
    }
    if let (Some(cert), Some(key)) = (&a.tls_cert, &a.tls_key) {
        b = b.tls_files(read(cert)?, read(key)?);
    }
    if let Some(p) = &a.jwt_key {
        b = b.jwt_key(read(p)?);
    }
    if let Some(dir) = &a.jwt_key_out {
        std::fs::create_dir_all(dir)?;
        let key = rcgen::KeyPair::generate()?;
        let p8 = dir.join("AuthKey_SIMULATED.p8");
        super::serve::write_private(&p8, &key.serialize_pem())?;
        std::fs::write(dir.join("AuthKey_SIMULATED.pub.pem"), key.public_key_pem())?;
        b = b.jwt_key(key.public_key_pem().into_bytes());
        // Before the addresses, so that a reader of the first lines finds the key too.
        eprintln!(
            "signing key: {} (key_id and team_id: any 10 letters or digits)",
            p8.display()
        );
    }
    if let Some(p) = &a.client_ca {
        b = b.client_ca(read(p)?);
    }
    for (kind, path) in [
        (ListKind::Unregistered, &a.unregistered),
        (ListKind::BadTokens, &a.bad_tokens),
        (ListKind::Reasons, &a.reasons),
    ] {
        if let Some(p) = path {
            b = b.load_list(kind, p)?;
        }
    }
    let mock = b.spawn().await?;
    if let (Some(out), Some(ca)) = (&a.ca_out, mock.ca_pem()) {
        std::fs::write(out, ca).with_context(|| format!("writing {}", out.display()))?;
    }
    println!("mock-apns listening on {}", mock.endpoint());
    if let Some(addr) = a.stats {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the stats listener {addr}"))?;
        println!("mock-apns stats on http://{}", listener.local_addr()?);
        let router = apns_mock::stats_router(mock.stats().clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::error!(error = %e, "stats listener failed");
            }
        });
    }
    super::shutdown_signal().await;
    mock.shutdown().await;
    Ok(ExitCode::SUCCESS)
}
