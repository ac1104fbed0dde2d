//! `pushgate send`: submission and exit codes against an API in this process (port-0 listener,
//! real spool); `--wait`, outcomes and the terminal's progress bars against a real gateway
//! process delivering to the simulator.

use std::process::Output;
use std::sync::Arc;

use gateway::auth::key_sha256_hex;
use gateway::config::Config;
use gateway::spool::{Spool, SpoolOptions, Store};
use tokio::process::Command;

use crate::harness::fixtures;

const KEY: &str = "send-test-key-0123456789";
const T1: &str = "6a3c8f0e9d1b2a4c5e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5";
const DEAD: &str = "000000000000000000000000000000000000000000000000000000000000dead";
/// Hex, but of a size no device issues (the seed's 35-character token, "fixed").
const SHORT: &str = "0123456789abcdef0123456789abcdef01";

struct Gateway {
    url: String,
    spool: Store,
    dir: tempfile::TempDir,
}

async fn gateway() -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixtures().join("AuthKey_ABC123DEFG.p8"),
        dir.path().join("k.p8"),
    )
    .unwrap();
    let file = dir.path().join("pushgate.toml");
    std::fs::write(
        &file,
        format!(
            r#"
[storage]
sqlite = "spool.db"

[[api_keys]]
name = "cli"
key_sha256 = "{}"
apps = ["shop"]

[[apps]]
name = "shop"
topic = "com.example.shop"
environment = "sandbox"
key_file = "k.p8"
key_id = "ABC123DEFG"
team_id = "TEAM123456"

[[apps]]
name = "news"
topic = "com.example.news"
environment = "sandbox"
key_file = "k.p8"
key_id = "ABC123DEFG"
team_id = "TEAM123456"
"#,
            key_sha256_hex(KEY)
        ),
    )
    .unwrap();
    let config = Arc::new(Config::load(&file).unwrap());
    let spool = Store::sqlite(&config.storage.sqlite, SpoolOptions::default()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let intake = gateway::ingest::Intake::standalone(config, spool.clone());
    let state = Arc::new(gateway::http::ApiState::new(Arc::new(intake)));
    tokio::spawn(gateway::server::run(
        listener,
        state,
        std::future::pending(),
    ));
    Gateway { url, spool, dir }
}

async fn send(gw: &Gateway, args: &[&str], key: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pushgate"));
    cmd.arg("send")
        .args(["--server", &gw.url])
        .args(args)
        .env_remove("PUSHGATE_API_KEY");
    if let Some(k) = key {
        cmd.env("PUSHGATE_API_KEY", k);
    }
    cmd.output().await.unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_from_a_tokens_file_prints_one_id_per_token() {
    let gw = gateway().await;
    let file = gw.dir.path().join("tokens.txt");
    let many: Vec<String> = (0..25).map(|i| format!("{i:064x}")).collect();
    std::fs::write(&file, format!("# our devices\n\n{}\n", many.join("\n"))).unwrap();
    let out = send(
        &gw,
        &[
            "--app",
            "shop",
            "--tokens-file",
            file.to_str().unwrap(),
            "--title",
            "Hi",
            "--body",
            "There",
            "--badge",
            "1",
        ],
        Some(KEY),
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "accepted 25 notifications");
    assert_eq!(lines.len(), 26);
    let id = apns::ApnsId::parse(lines[1]).unwrap();
    let rec = gw.spool.get(id).await.unwrap().unwrap();
    assert_eq!(rec.token.as_str(), many[0]);
    let req = gw.spool.request_of(id).await.unwrap().unwrap();
    assert_eq!(
        &req.payload[..],
        br#"{"aps":{"alert":{"body":"There","title":"Hi"},"badge":1}}"#
    );
    assert_eq!(gw.spool.pending(), 25);
}

/// `send --wait` against a real gateway process delivering to the simulator, which answers
/// 410 for the dead token.
fn real_gateway() -> (crate::harness::Sim, crate::gateway_harness::Gw) {
    let dir = tempfile::tempdir().unwrap();
    let reasons = dir.path().join("reasons");
    std::fs::write(&reasons, format!("{DEAD} 410 Unregistered\n")).unwrap();
    let sim = crate::gateway_harness::sim(&["--reasons", reasons.to_str().unwrap()]);
    let gw = crate::gateway_harness::Gw::start(&sim, "");
    (sim, gw)
}

fn send_to(gw: &crate::gateway_harness::Gw, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_pushgate"))
        .arg("send")
        .args(["--server", &gw.url, "--app", "shop", "--body", "x"])
        .args(args)
        .env("PUSHGATE_API_KEY", crate::gateway_harness::KEY)
        .output()
        .unwrap()
}

#[test]
fn send_wait_reports_outcomes_and_sets_the_exit_code() {
    let (_sim, gw) = real_gateway();
    let out = send_to(&gw, &["--token", T1, "--wait", "--wait-timeout-s", "30"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("accepted 1, delivered 1"),
        "{}",
        text(&out.stdout)
    );
    // Not a terminal: no progress bar, only the report.
    assert!(text(&out.stderr).is_empty(), "{}", text(&out.stderr));
    let out = send_to(
        &gw,
        &["--token", T1, "--token", DEAD, "--wait", "--output", "json"],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "one failed: {}",
        text(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["accepted"], 2);
    assert_eq!(doc["ids"].as_array().unwrap().len(), 2);
    assert_eq!(doc["states"]["delivered"], 1);
    assert_eq!(doc["states"]["failed"], 1);
    assert_eq!(doc["reasons"]["Unregistered"], 1);

    // A token of an unusual size is sent (Apple says not to count on the size), warned about
    // by send and by the gateway, and refused by the simulator as Apple refuses it.
    let out = send_to(&gw, &["--token", SHORT, "--wait", "--output", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("1 token(s) are not 64 hex characters (the first: 34"),
        "{}",
        text(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["reasons"]["BadDeviceToken"], 1, "{doc}");
    let log = gw.log();
    let warning = log
        .lines()
        .find(|l| l.contains("device tokens of an unusual size"))
        .unwrap_or_else(|| panic!("no warning in the log:\n{log}"));
    assert!(
        warning.contains("app=shop") && warning.contains("hex_characters=34"),
        "{warning}"
    );
    assert!(
        !log.contains(SHORT),
        "the warning names the id, not the token: {warning}"
    );
    let metrics = std::process::Command::new("curl")
        .args(["-sf", &format!("{}/metrics", gw.url)])
        .output()
        .unwrap();
    assert!(
        text(&metrics.stdout).contains("pushgate_unusual_tokens_total{app=\"shop\"} 1"),
        "{}",
        text(&metrics.stdout)
    );
}

/// On a terminal (a pseudo-terminal from script(1)) the bars are drawn, with live outcome
/// counts, and the summary by reason follows.
#[test]
fn on_a_terminal_send_draws_progress_and_a_summary_by_reason() {
    let (_sim, gw) = real_gateway();
    let file = gw.dir.path().join("tokens.txt");
    let mut tokens: Vec<String> = (1..=300).map(|i| format!("{i:064x}")).collect();
    tokens.push(DEAD.to_owned());
    std::fs::write(&file, tokens.join("\n")).unwrap();
    let command = format!(
        "{} send --server {} --app shop --body x --tokens-file {} --wait --wait-timeout-s 60",
        env!("CARGO_BIN_EXE_pushgate"),
        gw.url,
        file.display()
    );
    let out = std::process::Command::new("script")
        .args(["-qfec", &command, "/dev/null"])
        .env("PUSHGATE_API_KEY", crate::gateway_harness::KEY)
        .env("COLUMNS", "120")
        .output()
        .expect("script(1) from util-linux");
    let screen = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "one failed: {screen}");
    assert!(screen.contains("submitting ["), "{screen}");
    assert!(screen.contains("outcomes ["), "{screen}");
    assert!(screen.contains("accepted 301, delivered 300"), "{screen}");
    assert!(
        screen.contains("failed: 1") && screen.contains("Unregistered: 1"),
        "{screen}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_refusal_and_unreachable_exit_codes() {
    let gw = gateway().await;
    // 2: no key; a bad token in a file names file and line; bad --data.
    let out = send(&gw, &["--app", "shop", "--token", T1, "--body", "x"], None).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("PUSHGATE_API_KEY"),
        "{}",
        text(&out.stderr)
    );
    let file = gw.dir.path().join("bad.txt");
    std::fs::write(&file, format!("{T1}\n# fine\nnot-hex\n")).unwrap();
    let out = send(
        &gw,
        &[
            "--app",
            "shop",
            "--tokens-file",
            file.to_str().unwrap(),
            "--body",
            "x",
        ],
        Some(KEY),
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains(&format!("{}:3: ", file.display())),
        "{}",
        text(&out.stderr)
    );
    let out = send(
        &gw,
        &["--app", "shop", "--token", T1, "--data", "[1]"],
        Some(KEY),
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    let keyfile = gw.dir.path().join("key");
    std::fs::write(&keyfile, format!("{KEY}\n")).unwrap();
    let out = send(
        &gw,
        &[
            "--app",
            "shop",
            "--token",
            T1,
            "--body",
            "x",
            "--api-key-file",
            keyfile.to_str().unwrap(),
        ],
        None,
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "key from a file: {}",
        text(&out.stderr)
    );
    // 3: refused by the server (an app outside the key), and nothing listening.
    let out = send(
        &gw,
        &["--app", "news", "--token", T1, "--body", "x"],
        Some(KEY),
    )
    .await;
    assert_eq!(out.status.code(), Some(3));
    assert!(
        text(&out.stderr).contains("403 forbidden_app"),
        "{}",
        text(&out.stderr)
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new(env!("CARGO_BIN_EXE_pushgate"))
        .args([
            "send",
            "--server",
            &format!("http://127.0.0.1:{port}"),
            "--app",
            "shop",
            "--token",
            T1,
            "--body",
            "x",
        ])
        .env("PUSHGATE_API_KEY", KEY)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(
        text(&out.stderr).contains("cannot reach"),
        "{}",
        text(&out.stderr)
    );
}

/// `pushgate status` against a running gateway: ready, the counts and each app's health (exit
/// 0); a refused key is exit 3, no key exit 2.
#[test]
fn status_shows_a_running_gateway_at_a_glance() {
    let (_sim, gw) = real_gateway();
    let sent = send_to(&gw, &["--token", T1, "--wait"]);
    assert_eq!(sent.status.code(), Some(0), "{}", text(&sent.stderr));
    let status = |key: Option<&str>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_pushgate"));
        cmd.args(["status", "--server", &gw.url]);
        match key {
            Some(k) => cmd.env("PUSHGATE_API_KEY", k),
            None => cmd.env_remove("PUSHGATE_API_KEY"),
        };
        cmd.output().unwrap()
    };
    let out = status(Some(crate::gateway_harness::KEY));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(shown.starts_with("ready\n"), "{shown}");
    assert!(shown.contains(" 1 delivered, 0 failed"), "{shown}");
    assert!(shown.contains("app shop: healthy;"), "{shown}");
    let refused = status(Some("not-a-key"));
    assert_eq!(refused.status.code(), Some(3));
    assert!(
        text(&refused.stderr).contains("answered 401"),
        "{}",
        text(&refused.stderr)
    );
    assert_eq!(status(None).status.code(), Some(2));
}

/// `send` and `status` over HTTPS: a gateway with a self-signed certificate is refused until
/// `--ca-file` names it, then both work.
#[test]
fn send_and_status_reach_an_https_gateway_through_its_ca_file() {
    let sim = crate::gateway_harness::sim(&[]);
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let ca = dir.path().join("api.pem");
    std::fs::write(&ca, cert.pem()).unwrap();
    std::fs::write(dir.path().join("api-key.pem"), key.serialize_pem()).unwrap();
    let config =
        crate::gateway_harness::write_config(dir.path(), &sim, "AuthKey_ABC123DEFG.p8", "");
    let toml = std::fs::read_to_string(&config).unwrap().replace(
        "shutdown_grace_s = 10",
        "shutdown_grace_s = 10\ntls_cert = \"api.pem\"\ntls_key = \"api-key.pem\"",
    );
    std::fs::write(&config, toml).unwrap();
    let mut gw = crate::gateway_harness::Gw::new(dir, config);
    gw.spawn();
    assert!(gw.url.starts_with("https://"), "{}", gw.url);

    let refused = send_to(&gw, &["--token", T1]);
    assert!(!refused.status.success());
    let why = text(&refused.stderr);
    assert!(
        why.contains("cannot reach") && why.contains("certificate"),
        "{why}"
    );

    let ca = ca.to_str().unwrap();
    let sent = send_to(&gw, &["--token", T1, "--ca-file", ca, "--wait"]);
    assert!(
        sent.status.success(),
        "{}{}",
        text(&sent.stdout),
        text(&sent.stderr)
    );
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_pushgate"))
        .args(["status", "--server", &gw.url, "--ca-file", ca])
        .env("PUSHGATE_API_KEY", crate::gateway_harness::KEY)
        .output()
        .unwrap();
    assert_eq!(
        status.status.code(),
        Some(0),
        "{}{}",
        text(&status.stdout),
        text(&status.stderr)
    );
    assert!(
        text(&status.stdout).starts_with("ready"),
        "{}",
        text(&status.stdout)
    );

    let missing = send_to(&gw, &["--token", T1, "--ca-file", "/nonexistent/ca.pem"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        text(&missing.stderr).contains("--ca-file /nonexistent/ca.pem"),
        "{}",
        text(&missing.stderr)
    );
}
