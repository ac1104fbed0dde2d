//! `pushgate cancel ID…` and `pushgate cancel --request RID`: takes back notifications a
//! running gateway has not sent (`DELETE /v1/notifications/{id}`,
//! `POST /v1/requests/{request_id}/cancel`).
//!
//! Exit codes: 0 every one named was cancelled, 1 some were not (being sent, or sent), 2
//! usage, 3 the gateway refused or could not be reached.

use std::process::ExitCode;

use serde_json::Value;

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["ids", "request"])))]
pub struct Args {
    #[command(flatten)]
    connect: super::client::Connect,
    /// The notifications' ids.
    ids: Vec<String>,
    /// Everything of this request (the `request_id` of its `202` answer) still waiting.
    #[arg(long, value_name = "REQUEST_ID", conflicts_with = "ids")]
    request: Option<String>,
}

#[allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "what was cancelled is this command's output"
)]
pub async fn run(a: Args) -> anyhow::Result<ExitCode> {
    let api = match a.connect.key().and_then(|key| a.connect.api(key)) {
        Ok(api) => api,
        Err(msg) => {
            eprintln!("pushgate cancel: {msg}");
            return Ok(ExitCode::from(2));
        }
    };
    if let Some(rid) = &a.request {
        let path = format!("/v1/requests/{}/cancel", super::path_segment(rid));
        let (status, answer) = match api.post(&path, &Value::Null).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("pushgate cancel: {e:#}");
                return Ok(ExitCode::from(3));
            }
        };
        if status != 200 {
            eprintln!(
                "pushgate cancel: request {rid}: {}",
                refusal(status, &answer)
            );
            return Ok(ExitCode::from(3));
        }
        let (cancelled, gone) = (&answer["cancelled"], &answer["already_gone"]);
        println!("request {rid}: {cancelled} cancelled, {gone} already gone");
        return Ok(ExitCode::from(if gone == 0 { 0 } else { 1 }));
    }
    let mut all = true;
    for id in &a.ids {
        let path = format!("/v1/notifications/{}", super::path_segment(id));
        let (status, answer) = match api.delete(&path).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("pushgate cancel: {e:#}");
                return Ok(ExitCode::from(3));
            }
        };
        match status {
            204 => println!("{id}: cancelled"),
            409 => {
                all = false;
                let state = answer["error"]["state"].as_str().unwrap_or("unknown");
                println!("{id}: not cancelled, {state}");
            }
            _ => {
                eprintln!("pushgate cancel: {id}: {}", refusal(status, &answer));
                return Ok(ExitCode::from(3));
            }
        }
    }
    Ok(ExitCode::from(if all { 0 } else { 1 }))
}

/// A refusal's status, code and message.
pub(super) fn refusal(status: u16, answer: &Value) -> String {
    let e = &answer["error"];
    format!(
        "the gateway answered {status} {}: {}",
        e["code"].as_str().unwrap_or("(no code)"),
        e["message"].as_str().unwrap_or("no message")
    )
}
