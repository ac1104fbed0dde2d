//! `pushgate db status|migrate --config FILE`, `pushgate db copy --from-sqlite FILE --config
//! FILE`: the spool the configuration names — its backend,
//! where it is (a file, or `host:port/database`: never a URL), the server's version and the
//! schema version found against the one this pushgate writes; `migrate` creates or brings it
//! up to date as `serve` would at start (on PostgreSQL under the advisory lock that lets
//! gateways start side by side).

use std::path::PathBuf;
use std::process::ExitCode;

use gateway::config::Config;
use gateway::spool::SpoolStatus;

#[derive(Debug, clap::Subcommand)]
pub enum DbCommand {
    /// Show the spool's backend, location, server version and schema version; change nothing.
    Status {
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Create the spool, or migrate it to this version's schema.
    Migrate {
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Copy a SQLite spool's pending and scheduled notifications, their requests and its
    /// dead-token registry into the PostgreSQL spool the configuration names (safe to run
    /// again; refused while a gateway uses either).
    Copy {
        /// The SQLite spool file to copy from.
        #[arg(long)]
        from_sqlite: PathBuf,
        /// The configuration file naming the PostgreSQL spool.
        #[arg(long)]
        config: PathBuf,
    },
}

/// A spool newer than this pushgate knows.
const EXIT_NEWER: u8 = 3;

#[allow(clippy::print_stdout, reason = "the report is this command's output")]
pub async fn run(c: DbCommand) -> anyhow::Result<ExitCode> {
    let (file, migrate) = match c {
        DbCommand::Status { config } => (config, false),
        DbCommand::Migrate { config } => (config, true),
        DbCommand::Copy {
            from_sqlite,
            config,
        } => {
            let config = Config::load(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
            let r = gateway::spool::copy_from_sqlite(&from_sqlite, &config.storage).await?;
            if let Some(to) = &r.copied_before {
                println!(
                    "{} was copied before, to {to}: nothing to do",
                    from_sqlite.display()
                );
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "copied {} requests ({} notifications) and {} dead tokens from {}; {} requests were there already",
                r.requests,
                r.notifications,
                r.dead_tokens,
                from_sqlite.display(),
                r.already_there
            );
            return Ok(ExitCode::SUCCESS);
        }
    };
    let config = Config::load(&file).map_err(|e| anyhow::anyhow!("{e}"))?;
    if migrate {
        let (before, after) = gateway::spool::migrate(&config.storage).await?;
        print!("{}", describe(&after));
        match before.schema {
            Some(v) if v == after.known => println!("schema: already at version {v}"),
            Some(v) => println!("schema: migrated from version {v} to {}", after.known),
            None => println!("schema: created at version {}", after.known),
        }
        return Ok(ExitCode::SUCCESS);
    }
    let status = gateway::spool::status(&config.storage).await?;
    print!("{}", describe(&status));
    Ok(match status.schema {
        Some(v) if v > status.known => {
            println!(
                "this pushgate knows schema version {}: upgrade pushgate",
                status.known
            );
            ExitCode::from(EXIT_NEWER)
        }
        _ => ExitCode::SUCCESS,
    })
}

fn describe(s: &SpoolStatus) -> String {
    let mut out = format!("spool: {} at {}\n", s.backend, s.target);
    if let Some(v) = &s.server_version {
        out.push_str(&format!("server: PostgreSQL {v}\n"));
    }
    match s.schema {
        Some(v) => out.push_str(&format!(
            "schema version: {v} (this pushgate: {})\n",
            s.known
        )),
        None => out.push_str(&format!(
            "schema version: none yet (this pushgate creates version {})\n",
            s.known
        )),
    }
    out
}
