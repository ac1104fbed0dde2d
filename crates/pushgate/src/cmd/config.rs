//! `pushgate config check FILE`: parse the file, load every credential, report every problem
//! with file:line (the same code `serve` runs before binding anything).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use gateway::config::{Config, Credential};

#[derive(Debug, clap::Subcommand)]
pub enum ConfigCommand {
    /// Check a configuration file and every credential it names.
    Check {
        /// The TOML file.
        file: PathBuf,
    },
}

#[allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the report is this command's output"
)]
pub async fn run(c: ConfigCommand) -> anyhow::Result<ExitCode> {
    let ConfigCommand::Check { file } = c;
    match Config::load(&file) {
        Ok(config) => {
            println!("{}: ok", file.display());
            match &config.storage.postgres {
                // The target, never the URL: it may hold a password.
                Some(pg) => {
                    println!("  spool: PostgreSQL at {}", pg.target);
                    // Reached as the gateway would reach it; nothing is changed.
                    match gateway::spool::status(&config.storage).await {
                        Ok(st) if st.schema.is_some_and(|v| v > st.known) => {
                            eprintln!(
                                "{}: storage: the database has schema version {}; this pushgate knows {}: upgrade pushgate",
                                file.display(),
                                st.schema.unwrap_or_default(),
                                st.known
                            );
                            return Ok(ExitCode::from(2));
                        }
                        Ok(st) => println!(
                            "    server {}, schema version {} (this pushgate: {})",
                            st.server_version.as_deref().unwrap_or("?"),
                            st.schema
                                .map_or_else(|| "none yet".to_owned(), |v| v.to_string()),
                            st.known
                        ),
                        Err(e) => {
                            eprintln!(
                                "{}: storage: cannot reach the database: {}",
                                file.display(),
                                gateway::error_chain(&e)
                            );
                            return Ok(ExitCode::from(2));
                        }
                    }
                }
                None => println!("  spool: {}", config.storage.sqlite.display()),
            }
            println!("  api keys: {}", config.api_keys.len());
            if config.api_keys.is_empty() {
                // Valid, but nothing could call it: every API request would be a 401.
                eprintln!(
                    "warning: no [[api_keys]]: every API call (and the dashboard's login) will answer 401 unauthorized; add one with key_sha256 = the SHA-256 of a key (`printf %s \"$KEY\" | sha256sum`)"
                );
            }
            for app in &config.apps {
                println!("  app {} ({}, {})", app.name, app.topic, app.endpoint);
                for cred in &app.credentials {
                    match cred {
                        Credential::Token { key, file } => println!(
                            "    token key {} (team {}) from {}",
                            key.key_id(),
                            key.team_id(),
                            file.display()
                        ),
                        Credential::Certificate { identity, file } => {
                            let info = identity.info();
                            let days = info
                                .not_after
                                .duration_since(SystemTime::now())
                                .map_or(0, |d| d.as_secs() / 86_400);
                            let until = info
                                .not_after
                                .duration_since(UNIX_EPOCH)
                                .map_or(0, |d| d.as_secs());
                            println!(
                                "    certificate {} from {} (topics: {}; expires in {days} days, at unix {until})",
                                info.subject,
                                file.display(),
                                info.topics.join(", ")
                            );
                        }
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{e}");
            Ok(ExitCode::from(2))
        }
    }
}
