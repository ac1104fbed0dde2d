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
    assert!(out.starts_with("format: PKCS#12 (.p12)\n"), "{out}");
    assert!(
        pem_out.starts_with("format: PEM certificate, without its key\n"),
        "{pem_out}"
    );
    let body = |s: &str| s.lines().skip(1).collect::<Vec<_>>().join("\n");
    assert_eq!(
        body(&pem_out),
        body(&out),
        "the same certificate either way"
    );
}

/// propeller-apns' users' shapes: certificate and key in one PEM; a key of its own, encrypted
/// as PKCS#8 (its password from a file); a legacy OpenSSL-encrypted key, refused with the
/// command that converts it.
#[test]
fn cert_inspect_tells_the_pem_shapes_apart() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "secret\n").unwrap();
    let f = |n: &str| fixtures().join(n).to_str().unwrap().to_owned();
    let (code, out, err) = inspect(&[&f("client-combined.pem")]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.starts_with("format: PEM, certificate and key in one file\n"),
        "{out}"
    );
    assert!(out.contains("topics: com.example.demo"), "{out}");
    let (code, out, err) = inspect(&[
        &f("client.pem"),
        "--key",
        &f("client-key-encrypted.pem"),
        "--password-file",
        pw.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.starts_with("format: PEM, an encrypted PKCS#8 key in its own file\n"),
        "{out}"
    );
    let (code, _, err) = inspect(&[&f("client.pem"), "--key", &f("client-key-encrypted.pem")]);
    assert_eq!(code, Some(2));
    assert!(err.contains("give its password"), "{err}");
    let (code, _, err) = inspect(&[&f("client.pem"), "--key", &f("client-key-legacy.pem")]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("Proc-Type: 4,ENCRYPTED") && err.contains("openssl pkcs8 -topk8"),
        "{err}"
    );
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
