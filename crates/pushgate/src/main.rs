//! `pushgate`: the command line. Each subcommand lives in `cmd/`; this file parses, sets up
//! logging and the runtime, and maps errors to exit codes.

mod cmd;

use std::process::ExitCode;

use clap::Parser;

/// pushgate — an Apple Push Notification gateway.
#[derive(Debug, Parser)]
#[command(name = "pushgate", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: cmd::Command,
}

/// Usage or configuration problem (docs/configuration.md; `send`'s codes in docs/api.md).
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
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
