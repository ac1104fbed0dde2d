//! `pushgate apps pause APP [--reject]` and `pushgate apps resume APP`: an operator's pause of
//! an app on a running gateway (admin key; `POST /v1/apps/{app}/pause` and `/resume`).
//!
//! Exit codes: 0 done, 2 usage, 3 the gateway refused or could not be reached.

use std::process::ExitCode;

use serde_json::Value;

#[derive(Debug, clap::Subcommand)]
pub enum AppsCommand {
    /// Stop sending an app's notifications (they stay queued; what is in flight finishes).
    /// Kept across restarts and reloads, until resumed.
    Pause {
        #[command(flatten)]
        connect: super::client::Connect,
        /// The app's name.
        app: String,
        /// Refuse new notifications for it meanwhile (`503 app_paused`) instead of queuing
        /// them.
        #[arg(long)]
        reject: bool,
    },
    /// Send a paused app's notifications again.
    Resume {
        #[command(flatten)]
        connect: super::client::Connect,
        /// The app's name.
        app: String,
    },
}

#[allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "what was done is this command's output"
)]
pub async fn run(c: AppsCommand) -> anyhow::Result<ExitCode> {
    let (connect, app, path) = match &c {
        AppsCommand::Pause {
            connect,
            app,
            reject,
        } => (
            connect,
            app,
            format!(
                "/v1/apps/{}/pause{}",
                super::path_segment(app),
                if *reject { "?reject=true" } else { "" }
            ),
        ),
        AppsCommand::Resume { connect, app } => (
            connect,
            app,
            format!("/v1/apps/{}/resume", super::path_segment(app)),
        ),
    };
    let api = match connect.key().and_then(|key| connect.api(key)) {
        Ok(api) => api,
        Err(msg) => {
            eprintln!("pushgate apps: {msg}");
            return Ok(ExitCode::from(2));
        }
    };
    let (status, answer) = match api.post(&path, &Value::Null).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pushgate apps: {e:#}");
            return Ok(ExitCode::from(3));
        }
    };
    if status != 200 {
        eprintln!(
            "pushgate apps: {app}: {}",
            super::cancel::refusal(status, &answer)
        );
        return Ok(ExitCode::from(3));
    }
    match (answer["paused"].as_bool(), answer["reject"].as_bool()) {
        (Some(true), Some(true)) => println!(
            "{app}: paused since {}; new notifications are refused",
            answer["since"].as_str().unwrap_or("?")
        ),
        (Some(true), _) => println!(
            "{app}: paused since {}; new notifications are queued",
            answer["since"].as_str().unwrap_or("?")
        ),
        _ => println!("{app}: sending"),
    }
    Ok(ExitCode::SUCCESS)
}
