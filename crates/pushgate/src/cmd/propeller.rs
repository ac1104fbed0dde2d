//! `pushgate propeller --cert PEM --topic BUNDLE --server sandbox|production|mock`: the drop-in
//! for propeller-apns' `worker.py` and `server.py` under Supervisor, with the same flags. One
//! app from the flags, an embedded SQLite spool in `--data`, the tube named after the topic
//! (and `default`, as propeller's worker consumed it, unless `--ignore-default`) on
//! `--beanstalkd`, and `POST /post` on `--listen` with the auth token from
//! `PUSHGATE_AUTH_TOKEN`. `--server mock` runs the built-in APNs simulator in this process.
//! The configuration it runs is written to `--data`/propeller.toml, to read or to start from.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use gateway::auth::key_sha256_hex;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The certificate: propeller's .pem (certificate and key together), a .p12, or a PEM
    /// with an encrypted PKCS#8 key (its password in PUSHGATE_CERT_PASSWORD).
    #[arg(long)]
    cert: PathBuf,
    /// The app's bundle id: its topic, and the tube its jobs are put in.
    #[arg(long)]
    topic: String,
    /// Apple's production or sandbox servers, or the built-in simulator.
    #[arg(long, value_enum)]
    server: Server,
    /// The beanstalkd server.
    #[arg(long, default_value = "127.0.0.1:11300")]
    beanstalkd: String,
    /// Where the spool and the configuration are kept.
    #[arg(long, default_value = "pushgate-data")]
    data: PathBuf,
    /// The API's address (`POST /post`, `/v1/...`, the dashboard).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Leave the `default` tube alone (propeller's worker consumed it too).
    #[arg(long)]
    ignore_default: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Server {
    Production,
    Sandbox,
    Mock,
}

/// The variable holding the API key that `/post`'s `auth_token` (and the API) take.
const TOKEN_ENV: &str = "PUSHGATE_AUTH_TOKEN";
/// The variable holding the .p12's or encrypted key's password, if it has one.
const PASSWORD_ENV: &str = "PUSHGATE_CERT_PASSWORD";

#[allow(clippy::print_stderr, reason = "a refusal is this command's output")]
pub async fn run(a: Args) -> anyhow::Result<ExitCode> {
    let Some(token) = std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty()) else {
        eprintln!(
            "pushgate propeller: set {TOKEN_ENV} to the auth token your producers send to /post \
             (propeller's server.py kept it in the code)"
        );
        return Ok(ExitCode::from(2));
    };
    if let Err(e) = apns::Topic::parse(&a.topic) {
        eprintln!("pushgate propeller: --topic {:?}: {e}", a.topic);
        return Ok(ExitCode::from(2));
    }
    let cert = std::fs::canonicalize(&a.cert)
        .with_context(|| format!("reading the certificate {}", a.cert.display()))?;
    std::fs::create_dir_all(&a.data).with_context(|| format!("creating {}", a.data.display()))?;
    let sim = match a.server {
        Server::Mock => Some(apns_mock::MockApns::builder().spawn().await?),
        Server::Production | Server::Sandbox => None,
    };
    let file = write_config(&a, &cert, &token, sim.as_ref())?;
    let mut banner = vec![format!(
        "app {} (topic {}): tube {}{} on beanstalkd {}; POST {{url}}/post with auth_token from {TOKEN_ENV}",
        app_name(&a.topic),
        a.topic,
        a.topic,
        if a.ignore_default { "" } else { " and default" },
        a.beanstalkd
    )];
    if let Some(s) = &sim {
        banner.push(format!("APNs simulator on {}", s.endpoint()));
    }
    banner.push(format!("configuration: {}", file.display()));
    let code = super::serve::serve_file(&file, Some(a.listen), &banner).await?;
    if let Some(s) = sim {
        s.shutdown().await;
    }
    Ok(code)
}

/// An app name from a bundle id (app names are lowercase, and are SMTP domains too).
fn app_name(topic: &str) -> String {
    topic
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// Writes the configuration the flags mean into `--data`/propeller.toml.
fn write_config(
    a: &Args,
    cert: &Path,
    token: &str,
    sim: Option<&apns_mock::RunningMock>,
) -> anyhow::Result<PathBuf> {
    let app = app_name(&a.topic);
    let (environment, endpoint) = match (a.server, sim) {
        (Server::Production, _) => ("production", String::new()),
        (Server::Sandbox, _) | (Server::Mock, None) => ("sandbox", String::new()),
        (Server::Mock, Some(s)) => {
            std::fs::write(
                a.data.join("propeller-sim-ca.pem"),
                s.ca_pem().unwrap_or_default(),
            )?;
            (
                "sandbox",
                format!(
                    "endpoint = \"{}\"\nca_file = \"propeller-sim-ca.pem\"\n",
                    s.endpoint()
                ),
            )
        }
    };
    let password = if std::env::var_os(PASSWORD_ENV).is_some() {
        format!("certificate_password_env = \"{PASSWORD_ENV}\"\n")
    } else {
        String::new()
    };
    // Every value a TOML string, quoted and escaped as TOML writes it: a path or a server
    // with a quote or a newline in it stays one value.
    let quoted = |s: &str| toml::Value::String(s.to_owned()).to_string();
    let text = format!(
        r#"# Written by `pushgate propeller` from its flags; rewritten at every start.
[server]
listen = "{listen}"

[storage]
sqlite = "spool.db"

# The auth token from {TOKEN_ENV} (its SHA-256): /post's auth_token and the API's Bearer
# key, for this app only.
[[api_keys]]
name = "propeller"
key_sha256 = "{hash}"
apps = [{app}]

[[apps]]
name = {app}
topic = {topic}
environment = "{environment}"
certificate = {cert}
{password}{endpoint}
[[beanstalkd]]
server = {beanstalkd}
tubes = [{{ tube = {topic}, app = {app} }}]
watch_default = {watch_default}
"#,
        listen = a.listen,
        hash = key_sha256_hex(token),
        app = quoted(&app),
        topic = quoted(&a.topic),
        cert = quoted(&cert.display().to_string()),
        beanstalkd = quoted(&a.beanstalkd),
        watch_default = !a.ignore_default,
    );
    let file = a.data.join("propeller.toml");
    // Readable by its owner only: it holds the token's hash.
    super::serve::write_private(&file, &text)?;
    Ok(file)
}
