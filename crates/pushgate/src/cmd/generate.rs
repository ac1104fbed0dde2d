//! `pushgate completions SHELL` and `pushgate man DIR`: shell completions and man pages made
//! from the same clap definitions as the command line itself, so they cannot drift from it.
//! The Debian package installs both (`scripts/package`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Command;

#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// The folder to write `pushgate.1` and a page per subcommand (`pushgate-serve.1`, ...)
    /// into; created if missing.
    pub dir: PathBuf,
}

/// Writes the completion script for `args.shell` to stdout.
pub fn completions(args: &CompletionsArgs, mut cli: Command) -> anyhow::Result<ExitCode> {
    clap_complete::generate(args.shell, &mut cli, "pushgate", &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}

/// Writes the man pages into `args.dir` (clap_mangen builds the command once, so each page's
/// name, synopsis and global options are the whole command's), and lists them.
#[allow(
    clippy::print_stdout,
    reason = "the list of pages written is this command's output"
)]
pub fn man(args: &ManArgs, cli: Command) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    clap_mangen::generate_to(cli, &args.dir)
        .with_context(|| format!("writing the man pages into {}", args.dir.display()))?;
    let mut pages: Vec<_> = std::fs::read_dir(&args.dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "1"))
        .collect();
    pages.sort();
    for page in pages {
        println!("{}", page.display());
    }
    Ok(ExitCode::SUCCESS)
}
