//! `pushgate send`: submit notifications to a gateway through its HTTP API, optionally wait for
//! their outcomes.
//!
//! Exit codes (docs/api.md): 0 all accepted (with `--wait`: all delivered), 1 some failed or did
//! not finish in time, 2 usage or configuration, 3 the server refused a request or could not be
//! reached.
//!
//! On a terminal (and with text output) an indicatif bar shows the submission, and with
//! `--wait` a second one counts outcomes as they arrive; piped or with `--output json`, nothing
//! but the report is printed.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use std::io::IsTerminal;

use anyhow::bail;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};

use super::client::Api;

/// Tokens per request (the API's limit).
const BATCH: usize = 10_000;
const EXIT_FAILED: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_REFUSED: u8 = 3;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The app to send for.
    #[arg(long)]
    app: String,
    /// A device token (hex); repeat for several.
    #[arg(long = "token", required_unless_present = "tokens_file")]
    tokens: Vec<String>,
    /// A file of tokens, one per line (`#` comments and blank lines skipped); `-` reads stdin.
    #[arg(long, conflicts_with = "tokens")]
    tokens_file: Option<String>,
    #[arg(long)]
    title: Option<String>,
    #[arg(long)]
    body: Option<String>,
    #[arg(long)]
    badge: Option<u32>,
    #[arg(long)]
    sound: Option<String>,
    /// Custom keys beside aps, as a JSON object.
    #[arg(long)]
    data: Option<String>,
    #[arg(long)]
    push_type: Option<String>,
    #[arg(long)]
    priority: Option<u8>,
    /// UNIX seconds; 0 means one attempt.
    #[arg(long)]
    expiration: Option<u64>,
    #[arg(long)]
    collapse_id: Option<String>,
    #[command(flatten)]
    connect: super::client::Connect,
    /// Wait until every notification is delivered, failed or expired.
    #[arg(long)]
    wait: bool,
    /// Give up waiting after this many seconds.
    #[arg(long, default_value_t = 60, requires = "wait")]
    wait_timeout_s: u64,
    /// `json` prints one JSON document for scripts.
    #[arg(long, value_parser = ["text", "json"], default_value = "text")]
    output: String,
}

/// A usage or configuration problem: exit 2 with the message.
struct Usage(String);

fn api_key(a: &Args) -> Result<String, Usage> {
    a.connect.key().map_err(Usage)
}

fn tokens(a: &Args) -> Result<Vec<String>, Usage> {
    let check = |t: &str, place: &str| {
        apns::DeviceToken::parse(t)
            .map(|t| t.as_str().to_owned())
            .map_err(|e| Usage(format!("{place}: {e}")))
    };
    let Some(file) = &a.tokens_file else {
        return a
            .tokens
            .iter()
            .map(|t| check(t, &format!("--token {t:?}")))
            .collect();
    };
    let reader: Box<dyn BufRead> = if file == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(file).map_err(|e| Usage(format!("cannot open {file}: {e}")))?,
        ))
    };
    let name = if file == "-" {
        "<stdin>"
    } else {
        file.as_str()
    };
    let mut out = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| Usage(format!("{name}:{}: {e}", i + 1)))?;
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        out.push(check(t, &format!("{name}:{}", i + 1))?);
    }
    if out.is_empty() {
        return Err(Usage(format!("{name} holds no tokens")));
    }
    Ok(out)
}

fn notification(a: &Args, tokens: &[String]) -> Result<Value, Usage> {
    let mut n = json!({ "app": a.app, "tokens": tokens });
    if a.title.is_some() || a.body.is_some() {
        let mut alert = serde_json::Map::new();
        if let Some(t) = &a.title {
            alert.insert("title".into(), t.clone().into());
        }
        if let Some(b) = &a.body {
            alert.insert("body".into(), b.clone().into());
        }
        n["alert"] = Value::Object(alert);
    }
    if let Some(d) = &a.data {
        let v: Value =
            serde_json::from_str(d).map_err(|e| Usage(format!("--data is not JSON: {e}")))?;
        if !v.is_object() {
            return Err(Usage("--data must be a JSON object".into()));
        }
        n["data"] = v;
    }
    let mut set = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            n[k] = v;
        }
    };
    set("badge", a.badge.map(Value::from));
    set("sound", a.sound.clone().map(Value::from));
    set("push_type", a.push_type.clone().map(Value::from));
    set("priority", a.priority.map(Value::from));
    set("expiration", a.expiration.map(Value::from));
    set("collapse_id", a.collapse_id.clone().map(Value::from));
    Ok(n)
}

#[allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the report is this command's output"
)]
pub async fn run(a: Args) -> anyhow::Result<ExitCode> {
    let prepared = (|| {
        let key = api_key(&a)?;
        let tokens = tokens(&a)?;
        let api = a.connect.api(key).map_err(Usage)?;
        Ok((api, tokens))
    })();
    let (api, tokens) = match prepared {
        Ok(p) => p,
        Err(Usage(msg)) => {
            eprintln!("pushgate send: {msg}");
            return Ok(ExitCode::from(EXIT_USAGE));
        }
    };
    let usual = gateway::ingest::USUAL_TOKEN_HEX;
    let unusual = tokens.iter().filter(|t| t.len() != usual).count();
    if let Some(first) = tokens.iter().find(|t| t.len() != usual) {
        eprintln!(
            "pushgate send: warning: {unusual} token(s) are not {usual} hex characters (the first: \
             {} characters); Apple's device tokens are 32 bytes, and Apple answers BadDeviceToken \
             to a token no device issued",
            first.len()
        );
    }
    let json_out = a.output == "json";
    let interactive = !json_out && std::io::stderr().is_terminal();
    let bar = progress(interactive, tokens.len(), "submitting");
    let mut ids: Vec<String> = Vec::with_capacity(tokens.len());
    for chunk in tokens.chunks(BATCH) {
        let body = match notification(&a, chunk) {
            Ok(b) => b,
            Err(Usage(msg)) => {
                eprintln!("pushgate send: {msg}");
                return Ok(ExitCode::from(EXIT_USAGE));
            }
        };
        let (status, answer) = match api.post("/v1/notifications", &body).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("pushgate send: {e:#}");
                return Ok(ExitCode::from(EXIT_REFUSED));
            }
        };
        if status != 202 {
            let code = answer["error"]["code"].as_str().unwrap_or("unknown");
            let msg = answer["error"]["message"].as_str().unwrap_or("");
            eprintln!("pushgate send: the server refused the request ({status} {code}): {msg}");
            if !ids.is_empty() {
                eprintln!(
                    "pushgate send: {} notifications were accepted before that",
                    ids.len()
                );
            }
            return Ok(ExitCode::from(EXIT_REFUSED));
        }
        ids.extend(
            answer["ids"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_owned)),
        );
        bar.set_position(ids.len() as u64);
    }
    bar.finish_and_clear();
    if !a.wait {
        if json_out {
            println!("{}", json!({ "accepted": ids.len(), "ids": ids }));
        } else {
            println!(
                "accepted {} notification{}",
                ids.len(),
                if ids.len() == 1 { "" } else { "s" }
            );
            for id in &ids {
                println!("{id}");
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let bar = progress(interactive, ids.len(), "outcomes");
    let outcome = wait(&api, &ids, Duration::from_secs(a.wait_timeout_s), &bar).await;
    bar.finish_and_clear();
    let (states, reasons) = match outcome {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pushgate send: {e:#}");
            return Ok(ExitCode::from(EXIT_REFUSED));
        }
    };
    let delivered = states.get("delivered").copied().unwrap_or(0);
    if json_out {
        println!(
            "{}",
            json!({ "accepted": ids.len(), "ids": ids, "states": states, "reasons": reasons })
        );
    } else {
        println!("accepted {}, delivered {delivered}", ids.len());
        for (state, n) in states.iter().filter(|(s, _)| *s != "delivered") {
            println!("{state}: {n}");
        }
        for (reason, n) in &reasons {
            println!("  {reason}: {n}");
        }
    }
    Ok(if delivered == ids.len() as u64 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILED)
    })
}

/// A bar on stderr when `shown`, else one that draws nothing.
fn progress(shown: bool, len: usize, what: &'static str) -> ProgressBar {
    if !shown {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len as u64), ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(what);
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

type Tally = (BTreeMap<String, u64>, BTreeMap<String, u64>);

/// Polls `lookup` until every notification is final or `timeout` passes; counts states and
/// the reasons of the failed ones.
async fn wait(
    api: &Api,
    ids: &[String],
    timeout: Duration,
    bar: &ProgressBar,
) -> anyhow::Result<Tally> {
    let start = Instant::now();
    loop {
        let mut states = BTreeMap::new();
        let mut reasons = BTreeMap::new();
        let mut pending = 0;
        for chunk in ids.chunks(BATCH) {
            let (status, answer) = api
                .post("/v1/notifications/lookup", &json!({ "ids": chunk }))
                .await?;
            if status != 200 {
                bail!("lookup refused ({status}): {}", answer["error"]["message"]);
            }
            for doc in answer["notifications"].as_array().into_iter().flatten() {
                let state = doc["state"].as_str().unwrap_or("unknown").to_owned();
                if !matches!(state.as_str(), "delivered" | "failed" | "expired") {
                    pending += 1;
                } else if state != "delivered" {
                    let reason = doc["reason"].as_str().unwrap_or("none").to_owned();
                    *reasons.entry(reason).or_insert(0) += 1;
                }
                *states.entry(state).or_insert(0) += 1;
            }
        }
        bar.set_position(ids.len() as u64 - pending);
        bar.set_message(
            states
                .iter()
                .map(|(s, n)| format!("{s} {n}"))
                .collect::<Vec<_>>()
                .join(", "),
        );
        if pending == 0 || start.elapsed() >= timeout {
            return Ok((states, reasons));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
