use std::process::Command;

use crate::harness::*;

fn folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in ["AuthKey_ABC123DEFG.p8", "client-legacy.p12"] {
        std::fs::copy(fixtures().join(f), dir.path().join(f)).unwrap();
    }
    dir
}

#[test]
fn config_check_accepts_a_good_file_with_a_password_from_the_environment() {
    let dir = folder();
    let file = dir.path().join("pushgate.toml");
    std::fs::write(
        &file,
        r#"
[[apps]]
name = "shop"
topic = "com.example.shop"
environment = "sandbox"
key_file = "AuthKey_ABC123DEFG.p8"
key_id = "ABC123DEFG"
team_id = "TEAM123456"

[[apps]]
name = "legacy"
topic = "com.example.demo"
environment = "production"
certificate = "client-legacy.p12"
certificate_password_env = "PUSHGATE_TEST_P12_PASSWORD"
"#,
    )
    .unwrap();
    let out = run(Command::new(env!("CARGO_BIN_EXE_pushgate"))
        .args(["config", "check"])
        .arg(&file)
        .env("PUSHGATE_TEST_P12_PASSWORD", "secret"));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(": ok"), "{stdout}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("warning: no [[api_keys]]"),
        "a file without API keys is valid, and said to be unusable"
    );
    assert!(
        stdout.contains("token key ABC123DEFG (team TEAM123456)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("topics: com.example.demo, com.example.demo.voip"),
        "{stdout}"
    );
    assert!(!stdout.contains("secret"), "{stdout}");

    // Without the variable: exit 2, the file and line, and what is missing.
    let out = run(Command::new(env!("CARGO_BIN_EXE_pushgate"))
        .args(["config", "check"])
        .arg(&file)
        .env_remove("PUSHGATE_TEST_P12_PASSWORD"));
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains(&format!("{}:15: apps[1].certificate_password_env: environment variable PUSHGATE_TEST_P12_PASSWORD is not set", file.display())),
        "{stderr}"
    );
}

#[test]
fn config_check_reports_every_problem_and_exits_2() {
    let dir = folder();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "[server]\nlisten = \"nowhere\"\n\n[[apps]]\nname = \"x\"\nflavour = \"mint\"\n",
    )
    .unwrap();
    let out = run(Command::new(env!("CARGO_BIN_EXE_pushgate"))
        .args(["config", "check"])
        .arg(&file));
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    for want in [
        ":2: server.listen:",
        ":6: apps[0].flavour: unknown key",
        ":4: apps[0].topic: required",
        ":4: apps[0].environment: required",
        ":4: apps[0].key_file: no credential",
    ] {
        assert!(stderr.contains(want), "missing {want:?} in:\n{stderr}");
    }
}

/// The log on stderr: plain text without colour codes when stderr is not a terminal (a file,
/// journald), and one JSON object a line with `--log-format json`.
#[test]
fn serve_logs_plain_text_off_a_terminal_and_json_on_request() {
    let sim = crate::gateway_harness::sim(&[]);
    for format in ["text", "json"] {
        let dir = tempfile::tempdir().unwrap();
        let config =
            crate::gateway_harness::write_config(dir.path(), &sim, "AuthKey_ABC123DEFG.p8", "");
        let mut child = Command::new(env!("CARGO_BIN_EXE_pushgate"))
            .args(["--log-format", format, "serve", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut out =
            std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
        let first = out.next().unwrap().unwrap();
        assert!(first.starts_with("pushgate listening on "), "{first}");
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let output = child.wait_with_output().unwrap();
        let log = String::from_utf8(output.stderr).unwrap();
        assert!(!log.trim().is_empty(), "something was logged");
        assert!(
            !log.contains('\u{1b}'),
            "no colour codes off a terminal: {log:?}"
        );
        if format == "json" {
            for line in log.lines() {
                let v: serde_json::Value =
                    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
                assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
            }
        }
    }
}

/// `--version` names the commit the binary was built from and what is built in; `-V` is the
/// version alone.
#[test]
fn version_names_the_commit_and_what_is_built_in() {
    let long = run(Command::new(env!("CARGO_BIN_EXE_pushgate")).arg("--version"));
    let text = String::from_utf8(long.stdout).unwrap();
    let first = text.lines().next().unwrap();
    let commit = first
        .strip_prefix(&format!("pushgate {} (commit ", env!("CARGO_PKG_VERSION")))
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{text}"));
    // Built in a git checkout (as here and in CI): that checkout's commit.
    let checkout = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success());
    match checkout {
        Some(o) => assert_eq!(commit, String::from_utf8(o.stdout).unwrap().trim()),
        None => assert_eq!(commit, "unknown"),
    }
    assert!(text.contains("spools: sqlite, postgres"), "{text}");
    let short = run(Command::new(env!("CARGO_BIN_EXE_pushgate")).arg("-V"));
    assert_eq!(
        String::from_utf8(short.stdout).unwrap().trim(),
        format!("pushgate {}", env!("CARGO_PKG_VERSION"))
    );
}
