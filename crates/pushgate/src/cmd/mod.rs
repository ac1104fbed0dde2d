//! Subcommands, one file each.

mod apps;
mod bench;
mod cancel;
mod cert;
mod client;
mod config;
mod db;
pub mod generate;
mod mock_apns;
mod propeller;
mod send;
mod serve;
mod status;

use std::process::ExitCode;

/// Every subcommand.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Work with APNs certificates.
    #[command(subcommand)]
    Cert(cert::CertCommand),
    /// Work with configuration files.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Inspect or migrate the spool the configuration names (SQLite or PostgreSQL).
    #[command(subcommand)]
    Db(db::DbCommand),
    /// Run the gateway (`--demo`: no configuration needed, against the built-in simulator).
    Serve(serve::Args),
    /// Submit notifications to a running gateway (API key from PUSHGATE_API_KEY or --api-key-file).
    Send(Box<send::Args>),
    /// A running gateway at a glance: readiness, notifications by state, apps, the cluster
    /// (`--watch` redraws; exit 1 when not ready).
    Status(status::Args),
    /// Take back notifications not yet sent: by id, or everything of a request
    /// (`--request`) still waiting.
    Cancel(cancel::Args),
    /// Operate a running gateway's apps: pause, resume.
    #[command(subcommand)]
    Apps(apps::AppsCommand),
    /// Measure end to end: a simulator here, a real gateway process, N notifications.
    Bench(Box<bench::Args>),
    /// Run the APNs simulator (TLS + HTTP/2, Apple's checks and reasons, fault injection).
    MockApns(Box<mock_apns::Args>),
    /// propeller-apns' worker.py and server.py in one: the same flags, a beanstalkd tube in,
    /// POST /post (auth token from PUSHGATE_AUTH_TOKEN), a durable spool.
    Propeller(Box<propeller::Args>),
    /// Print the shell completion script for bash, zsh, fish, elvish or powershell.
    Completions(generate::CompletionsArgs),
    /// Write the man pages (pushgate.1 and one per subcommand) into a folder.
    Man(generate::ManArgs),
}

impl Command {
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        match self {
            Command::Apps(c) => apps::run(c).await,
            Command::Bench(args) => bench::run(*args).await,
            Command::Cancel(args) => cancel::run(args).await,
            Command::Cert(c) => cert::run(c),
            Command::Config(c) => config::run(c).await,
            Command::Db(c) => db::run(c).await,
            Command::MockApns(args) => mock_apns::run(*args).await,
            Command::Propeller(args) => propeller::run(*args).await,
            Command::Send(args) => send::run(*args).await,
            Command::Serve(args) => serve::run(args).await,
            Command::Status(args) => status::run(args).await,
            // Handled before the runtime starts (they need the whole command line's
            // definition): see main.rs.
            Command::Completions(_) | Command::Man(_) => {
                anyhow::bail!("completions and man are run by main")
            }
        }
    }
}

/// Resolves when the process gets SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// `s` as one segment of a URL path: everything but RFC 3986's unreserved characters
/// percent-encoded, so that an id or app name cannot reach another route.
pub(crate) fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
