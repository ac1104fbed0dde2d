//! `pushgate completions SHELL` and `pushgate man DIR`: shell completions and man pages made
//! from the same clap definitions as the command line itself, so they cannot drift from it.
//! The Debian package installs both (`scripts/package`).

use std::path::{Path, PathBuf};
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

/// Writes the man pages into `args.dir`, and lists them.
#[allow(
    clippy::print_stdout,
    reason = "the list of pages written is this command's output"
)]
pub fn man(args: &ManArgs, cli: Command) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let written = pages(&args.dir, cli.bin_name("pushgate"), "pushgate")?;
    for page in written {
        println!("{}", page.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// The page of `cmd` as `name.1`, then one per subcommand (`name-sub.1`), recursively; each
/// page's synopsis names the whole command (`pushgate config check`).
fn pages(dir: &Path, cmd: Command, name: &str) -> anyhow::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let mut page = Vec::new();
    let bin = cmd.get_bin_name().unwrap_or(name).to_owned();
    clap_mangen::Man::new(cmd.clone())
        .title(name.to_owned())
        .render(&mut page)
        .context("rendering a man page")?;
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, page).with_context(|| format!("writing {}", path.display()))?;
    written.push(path);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let sub_name = format!("{name}-{}", sub.get_name());
        let sub = sub.clone().bin_name(format!("{bin} {}", sub.get_name()));
        written.extend(pages(dir, sub, &sub_name)?);
    }
    Ok(written)
}
