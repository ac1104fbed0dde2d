//! `pushgate send` against a running gateway API (in this process, on a port-0 listener, with a
//! real spool). Until dispatch exists, a task here plays the dispatcher for `--wait`: it marks
//! notifications delivered, or failed for the token ending in `dead`.

use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use gateway::config::Config;
use gateway::http::auth::key_sha256_hex;
use gateway::spool::{Completion, Spool, SpoolOptions, SqliteSpool, State};
use tokio::process::Command;

use crate::harness::fixtures;

const KEY: &str = "send-test-key-0123456789";
const T1: &str = "6a3c8f0e9d1b2a4c5e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5";
const DEAD: &str = "00000000000000000000000000000000000000000000000000000000000000dead";

struct Gateway {
    url: String,
    spool: SqliteSpool,
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
    let spool = SqliteSpool::open(&config.storage.sqlite, SpoolOptions::default()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let state = Arc::new(gateway::http::ApiState::new(config, spool.clone(), None));
    tokio::spawn(gateway::server::run(
        listener,
        state,
        std::future::pending(),
    ));
    Gateway { url, spool, dir }
}

/// Plays the dispatcher: finishes every pending notification.
fn fake_dispatch(spool: SqliteSpool) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let page = spool.pending_page(None, 1000).await.unwrap();
            let done = page
                .iter()
                .map(|p| {
                    let dead = p.token.as_str().ends_with("dead");
                    Completion {
                        id: p.id,
                        state: if dead {
                            State::Failed
                        } else {
                            State::Delivered
                        },
                        attempts: 1,
                        status: Some(if dead { 410 } else { 200 }),
                        reason: dead.then_some(apns::Reason::Unregistered),
                        due_at: None,
                    }
                })
                .collect::<Vec<_>>();
            if !done.is_empty() {
                spool.complete(done).await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_wait_reports_outcomes_and_sets_the_exit_code() {
    let gw = gateway().await;
    let dispatcher = fake_dispatch(gw.spool.clone());
    let out = send(
        &gw,
        &[
            "--app",
            "shop",
            "--token",
            T1,
            "--body",
            "x",
            "--wait",
            "--wait-timeout-s",
            "20",
        ],
        Some(KEY),
    )
    .await;
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
    let out = send(
        &gw,
        &[
            "--app", "shop", "--token", T1, "--token", DEAD, "--body", "x", "--wait", "--output",
            "json",
        ],
        Some(KEY),
    )
    .await;
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
    dispatcher.abort();
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
