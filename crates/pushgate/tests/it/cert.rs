use std::process::Command;

use crate::harness::*;

fn inspect(args: &[&str]) -> (Option<i32>, String, String) {
    let out = run(Command::new(env!("CARGO_BIN_EXE_pushgate"))
        .args(["cert", "inspect"])
        .args(args));
    (
        out.status.code(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn cert_inspect_reads_a_legacy_p12_and_a_pem_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "secret\n").unwrap();
    let p12 = fixtures().join("client-legacy.p12");
    let (code, out, err) = inspect(&[
        p12.to_str().unwrap(),
        "--password-file",
        pw.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("subject: ") && out.contains("Apple Push Services: com.example.demo"),
        "{out}"
    );
    assert!(
        out.contains(
            "topics: com.example.demo, com.example.demo.voip, com.example.demo.complication"
        ),
        "{out}"
    );
    assert!(out.contains("environment: sandbox and production"), "{out}");
    assert!(out.contains("not after: 21"), "{out}");
    let pem = fixtures().join("client.pem");
    let (code, pem_out, _) = inspect(&[pem.to_str().unwrap()]);
    assert_eq!(code, Some(0));
    assert_eq!(pem_out, out, "the same certificate either way");
}

#[test]
fn cert_inspect_refuses_a_wrong_password_without_echoing_it() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "hunter2-wrong\n").unwrap();
    let p12 = fixtures().join("client-legacy.p12");
    let (code, out, err) = inspect(&[
        p12.to_str().unwrap(),
        "--password-file",
        pw.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(2));
    assert!(out.is_empty());
    assert!(
        err.contains("client-legacy.p12") && err.contains("wrong password"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
    let (code, _, err) = inspect(&[
        p12.to_str().unwrap(),
        "--password-env",
        "PUSHGATE_TEST_UNSET_VAR",
    ]);
    assert_eq!(code, Some(2));
    assert!(err.contains("PUSHGATE_TEST_UNSET_VAR is not set"), "{err}");
}
