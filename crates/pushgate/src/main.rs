//! `pushgate`: the command line. Each subcommand lives in `cmd/`; this file parses, sets up
//! logging and the runtime, and maps errors to exit codes.

mod cmd;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

/// `pushgate --version`: the version, the commit it was built from, and what is built in.
const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("PUSHGATE_COMMIT"),
    ")\nspools: sqlite, postgres\nways in: http api, momentum inject, smtp (mcmt), beanstalkd \
     (propeller-apns), propeller /post\ntls: rustls with aws-lc-rs"
);

/// pushgate — an Apple Push Notification gateway.
#[derive(Debug, Parser)]
#[command(
    name = "pushgate",
    version,
    long_version = LONG_VERSION,
    about,
    propagate_version = true
)]
struct Cli {
    /// The log's format on stderr: `text` (coloured only on a terminal) or `json` (one object
    /// a line, for journald, files and collectors).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: cmd::Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Usage or configuration problem (docs/configuration.md; `send`'s codes in docs/api.md).
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let generated = match &cli.command {
        cmd::Command::Completions(a) => Some(cmd::generate::completions(a, Cli::command())),
        cmd::Command::Man(a) => Some(cmd::generate::man(a, Cli::command())),
        _ => None,
    };
    if let Some(result) = generated {
        return result.unwrap_or_else(|e| {
            eprintln!("pushgate: {e:#}");
            ExitCode::from(EXIT_USAGE)
        });
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let log = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        // Colour codes only where a person reads them: not in a file, a pipe or journald.
        LogFormat::Text => log
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => log.json().with_current_span(false).init(),
    }
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pushgate: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match runtime.block_on(cli.command.run()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pushgate: {e:#}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}
