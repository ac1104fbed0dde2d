//! `pushgate cert inspect FILE [--key KEY]`: what an APNs certificate says about itself —
//! subject, topics, environment, validity — and the format it was found in (a .p12, a PEM with
//! its key, an encrypted PKCS#8 key), read as the gateway reads it. A password comes from an
//! environment variable or a file (never the command line); a wrong one fails without echoing
//! it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use apns::auth::{CertificateInfo, ClientIdentity, inspect_certificate};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

#[derive(Debug, clap::Subcommand)]
pub enum CertCommand {
    /// Show subject, topics, environment, expiry and format of a .p12 or PEM certificate.
    Inspect {
        file: PathBuf,
        /// The private key, when it is a file of its own (PEM, encrypted PKCS#8 or not).
        #[arg(long)]
        key: Option<PathBuf>,
        /// The environment variable holding the .p12's (or the encrypted key's) password.
        #[arg(long, conflicts_with = "password_file")]
        password_env: Option<String>,
        /// A file holding the .p12's (or the encrypted key's) password.
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
}

fn load(
    file: &PathBuf,
    key: Option<&PathBuf>,
    env: Option<&str>,
    pw_file: Option<&PathBuf>,
) -> Result<(CertificateInfo, &'static str), String> {
    let what = file.display().to_string();
    let bytes = std::fs::read(file).map_err(|e| format!("cannot read {what}: {e}"))?;
    let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    if key.is_none() && has(b"-----BEGIN ") && !has(b"PRIVATE KEY-----") {
        // A certificate alone: what it says, without a key to check it against.
        let cert = CertificateDer::pem_slice_iter(&bytes)
            .find_map(Result::ok)
            .ok_or_else(|| format!("{what} holds no PEM certificate"))?;
        let info = inspect_certificate(&cert, &what).map_err(|e| e.to_string())?;
        return Ok((info, "PEM certificate, without its key"));
    }
    let key_bytes = match key {
        Some(k) => Some((
            std::fs::read(k).map_err(|e| format!("cannot read {}: {e}", k.display()))?,
            k.display().to_string(),
        )),
        None => None,
    };
    let password = match (env, pw_file) {
        (Some(var), _) => {
            std::env::var(var).map_err(|_| format!("environment variable {var} is not set"))?
        }
        (None, Some(f)) => std::fs::read_to_string(f)
            .map_err(|e| format!("cannot read {}: {e}", f.display()))?
            .trim_end_matches(['\r', '\n'])
            .to_owned(),
        (None, None) => String::new(),
    };
    let key_file = key_bytes.as_ref().map(|(b, n)| (b.as_slice(), n.as_str()));
    let (id, format) = ClientIdentity::load(&bytes, key_file, &password, &what)
        .map_err(|e| gateway::error_chain(&e))?;
    Ok((id.info().clone(), format.describe()))
}

#[allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the report is this command's output"
)]
pub fn run(c: CertCommand) -> anyhow::Result<ExitCode> {
    let CertCommand::Inspect {
        file,
        key,
        password_env,
        password_file,
    } = c;
    match load(
        &file,
        key.as_ref(),
        password_env.as_deref(),
        password_file.as_ref(),
    ) {
        Ok((info, format)) => {
            println!("format: {format}");
            let days = info
                .not_after
                .duration_since(SystemTime::now())
                .map_or(-1, |d| (d.as_secs() / 86_400) as i64);
            println!("subject: {}", info.subject);
            println!(
                "topics: {}",
                if info.topics.is_empty() {
                    "(none)".to_owned()
                } else {
                    info.topics.join(", ")
                }
            );
            println!("environment: {}", info.environment);
            println!("not before: {}", gateway::rfc3339::format(info.not_before));
            if days < 0 {
                println!(
                    "not after: {} (EXPIRED)",
                    gateway::rfc3339::format(info.not_after)
                );
            } else {
                println!(
                    "not after: {} (in {days} days)",
                    gateway::rfc3339::format(info.not_after)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(msg) => {
            eprintln!("pushgate cert inspect: {msg}");
            Ok(ExitCode::from(2))
        }
    }
}
