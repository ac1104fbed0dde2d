//! Records the commit the binary is built from, for `pushgate --version`: `git rev-parse` of
//! the checkout, or `PUSHGATE_COMMIT` when set (a build from a source tarball, a package),
//! else "unknown".

fn main() {
    println!("cargo:rerun-if-env-changed=PUSHGATE_COMMIT");
    // A new commit moves the branch's ref (or HEAD itself, detached).
    for path in [
        "../../.git/HEAD",
        "../../.git/refs/heads",
        "../../.git/packed-refs",
    ] {
        println!("cargo:rerun-if-changed={path}");
    }
    let commit = std::env::var("PUSHGATE_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| {
            std::process::Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .output()
                .ok()
                .filter(|o| o.status.success())
                .and_then(|o| String::from_utf8(o.stdout).ok())
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=PUSHGATE_COMMIT={commit}");
}
