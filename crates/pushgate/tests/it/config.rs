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
