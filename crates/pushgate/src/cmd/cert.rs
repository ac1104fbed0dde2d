//! `pushgate cert inspect FILE`: what an APNs certificate says about itself — subject, topics,
//! environment, validity. A .p12 is opened with a password from an environment variable or a
//! file (never the command line); a wrong one fails without echoing it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use apns::auth::{CertificateInfo, ClientIdentity, inspect_certificate};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

#[derive(Debug, clap::Subcommand)]
pub enum CertCommand {
    /// Show subject, topics, environment and expiry of a .p12 or PEM certificate.
    Inspect {
        file: PathBuf,
        /// The environment variable holding the .p12 password.
        #[arg(long, conflicts_with = "password_file")]
        password_env: Option<String>,
        /// A file holding the .p12 password.
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
}

fn load(
    file: &PathBuf,
    env: Option<&str>,
    pw_file: Option<&PathBuf>,
) -> Result<CertificateInfo, String> {
    let what = file.display().to_string();
    let bytes = std::fs::read(file).map_err(|e| format!("cannot read {what}: {e}"))?;
    if bytes.starts_with(b"-----BEGIN") {
        let cert = CertificateDer::pem_slice_iter(&bytes)
            .find_map(Result::ok)
            .ok_or_else(|| format!("{what} holds no PEM certificate"))?;
        return inspect_certificate(&cert, &what).map_err(|e| e.to_string());
    }
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
    let id = ClientIdentity::from_pkcs12(&bytes, &password, &what).map_err(|e| e.to_string())?;
    Ok(id.info().clone())
}

#[allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the report is this command's output"
)]
pub fn run(c: CertCommand) -> anyhow::Result<ExitCode> {
    let CertCommand::Inspect {
        file,
        password_env,
        password_file,
    } = c;
    match load(&file, password_env.as_deref(), password_file.as_ref()) {
        Ok(info) => {
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
