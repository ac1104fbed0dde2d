//! `pushgate serve [--config FILE | --demo]`: run the gateway until SIGINT/SIGTERM; SIGHUP
//! reloads the configuration.
//!
//! `--demo` needs no file: it keeps everything in `./pushgate-data/`, runs the APNs simulator
//! (TLS + HTTP/2) on a loopback port in this process, configures one app `demo` (topic
//! `com.example.demo`) and an admin API key kept in `./pushgate-data/demo-api-key`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use gateway::auth::key_sha256_hex;
use gateway::config::Config;
use gateway::dispatch::DispatchOptions;
use gateway::server::Gateway;
use tracing::{error, info};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The configuration file.
    #[arg(long, required_unless_present = "demo", conflicts_with = "demo")]
    config: Option<PathBuf>,
    /// Run the demo: the simulator in-process, one app `demo`, data in ./pushgate-data/.
    #[arg(long)]
    demo: bool,
    /// Listen here instead of `[server] listen` (127.0.0.1:8080 in the demo).
    #[arg(long)]
    listen: Option<SocketAddr>,
}

const DEMO_DIR: &str = "pushgate-data";

#[allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "addresses and the demo key are this command's output"
)]
pub async fn run(a: Args) -> anyhow::Result<ExitCode> {
    let (file, demo) = match (&a.config, a.demo) {
        (Some(f), _) => (f.clone(), None),
        (None, _) => {
            let demo = Demo::prepare(Path::new(DEMO_DIR)).await?;
            (demo.config_file.clone(), Some(demo))
        }
    };
    let banner = match &demo {
        Some(d) => vec![
            format!("demo APNs simulator on {}", d.sim.endpoint()),
            format!("API key: {} (kept in {}/demo-api-key)", d.api_key, DEMO_DIR),
            "app: demo (topic com.example.demo)".to_owned(),
            "dashboard: {url}/ (log in with the API key)".to_owned(),
        ],
        None => Vec::new(),
    };
    let code = serve_file(&file, a.listen, &banner).await?;
    if let Some(d) = demo {
        d.sim.shutdown().await;
    }
    Ok(code)
}

/// Serves the configuration in `file` (on `listen` instead of `[server] listen`, if given)
/// until SIGINT/SIGTERM, reloading it on SIGHUP; prints the addresses, then `banner` (where
/// `{url}` is the API's).
#[allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "addresses and the banner are this command's output"
)]
pub(super) async fn serve_file(
    file: &Path,
    listen: Option<SocketAddr>,
    banner: &[String],
) -> anyhow::Result<ExitCode> {
    let file = file.to_owned();
    // Taken before anything else: a SIGHUP (a reload) that comes while the gateway is still
    // starting must not end it, as SIGHUP's default action would.
    let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("listening for SIGHUP")?;
    let config = match Config::load(&file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(2));
        }
    };
    let addr = listen.unwrap_or(config.server.listen);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the API listener {addr}"))?;
    let local = listener.local_addr()?;
    let smtp = match &config.smtp {
        Some(s) => Some(
            tokio::net::TcpListener::bind(s.listen)
                .await
                .with_context(|| format!("binding the SMTP listener {}", s.listen))?,
        ),
        None => None,
    };
    let metrics = match config.server.metrics_listen {
        Some(a) => Some(
            tokio::net::TcpListener::bind(a)
                .await
                .with_context(|| format!("binding the metrics listener {a}"))?,
        ),
        None => None,
    };
    let metrics_addr = metrics
        .as_ref()
        .map(tokio::net::TcpListener::local_addr)
        .transpose()?;
    let smtp_addr = smtp
        .as_ref()
        .map(tokio::net::TcpListener::local_addr)
        .transpose()?;
    let scheme = if config.server.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let gateway = Gateway::start(config, DispatchOptions::default()).await?;
    println!("pushgate listening on {scheme}://{local}");
    if let Some(a) = smtp_addr {
        println!("pushgate smtp on {a}");
    }
    if let Some(a) = metrics_addr {
        println!("pushgate metrics on http://{a}/metrics");
    }
    for line in banner {
        println!("{}", line.replace("{url}", &format!("{scheme}://{local}")));
    }
    let reloader = gateway.reloader();
    let reload_file = file.clone();
    let mut hup = hup;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            // Reading the files (configuration, keys, certificates) is blocking I/O: off the
            // runtime's threads.
            let file = reload_file.clone();
            match tokio::task::spawn_blocking(move || Config::load(&file)).await {
                Ok(Ok(c)) => reloader.reload(c),
                Ok(Err(e)) => error!("reload refused; the running configuration stays:\n{e}"),
                Err(e) => error!(error = %e, "reload failed; the running configuration stays"),
            }
        }
    });
    gateway
        .serve(listener, smtp, metrics, super::shutdown_signal())
        .await?;
    info!("bye");
    Ok(ExitCode::SUCCESS)
}

/// The demo's files and its simulator.
struct Demo {
    config_file: PathBuf,
    api_key: String,
    sim: apns_mock::RunningMock,
}

impl Demo {
    async fn prepare(dir: &Path) -> anyhow::Result<Demo> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let key_file = dir.join("demo-AuthKey.p8");
        let pub_file = dir.join("demo-AuthKey.pub.pem");
        if !key_file.exists() || !pub_file.exists() {
            let key = rcgen::KeyPair::generate().context("generating the demo signing key")?;
            write_private(&key_file, &key.serialize_pem())?;
            std::fs::write(&pub_file, key.public_key_pem())?;
        }
        let key_path = dir.join("demo-api-key");
        let api_key = match std::fs::read_to_string(&key_path) {
            Ok(k) if !k.trim().is_empty() => k.trim().to_owned(),
            _ => {
                let mut bytes = [0u8; 24];
                aws_lc_rs::rand::fill(&mut bytes).map_err(|_| anyhow::anyhow!("no randomness"))?;
                let k = hex::encode(bytes);
                write_private(&key_path, &format!("{k}\n"))?;
                k
            }
        };
        let sim = apns_mock::MockApns::builder()
            .jwt_key(std::fs::read(&pub_file)?)
            .spawn()
            .await?;
        std::fs::write(
            dir.join("demo-sim-ca.pem"),
            sim.ca_pem().unwrap_or_default(),
        )?;
        let config_file = dir.join("demo.toml");
        std::fs::write(
            &config_file,
            format!(
                r#"# Written by `pushgate serve --demo`; rewritten at every demo start.
[server]
listen = "127.0.0.1:8080"

[storage]
sqlite = "spool.db"

[[api_keys]]
name = "demo-admin"
key_sha256 = "{hash}"
admin = true

[[apps]]
name = "demo"
topic = "com.example.demo"
environment = "sandbox"
endpoint = "{endpoint}"
ca_file = "demo-sim-ca.pem"
key_file = "demo-AuthKey.p8"
key_id = "DEMOKEY123"
team_id = "DEMOTEAM12"
"#,
                hash = key_sha256_hex(&api_key),
                endpoint = sim.endpoint(),
            ),
        )?;
        Ok(Demo {
            config_file,
            api_key,
            sim,
        })
    }
}

/// Writes a secret readable by its owner only.
pub(super) fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}
