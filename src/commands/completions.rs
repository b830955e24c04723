//! `redis-ferry completions bash|zsh|fish|elvish|powershell`: a completion
//! script generated from the same clap definitions the binary parses with
//! (clap_complete), so it always knows every subcommand and flag.
//!
//! Install, for example:
//! `redis-ferry completions bash > /etc/bash_completion.d/redis-ferry`,
//! `redis-ferry completions zsh > "${fpath[1]}/_redis-ferry"`,
//! `redis-ferry completions fish > ~/.config/fish/completions/redis-ferry.fish`.

use std::io::Write;

use anyhow::{Context, Result};
use clap::Args;
use clap_complete::Shell;

use crate::exit::Exit;

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to write the script for.
    #[arg(value_enum)]
    pub shell: Shell,
}

pub fn run(args: CompletionsArgs) -> Result<Exit> {
    let mut script = Vec::new();
    write_script(args.shell, &mut script);
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(&script)
        .and_then(|()| stdout.flush())
        .context("cannot write the completion script to stdout")?;
    Ok(Exit::Success)
}

/// The completion script for `shell`.
pub fn write_script(shell: Shell, out: &mut dyn Write) {
    let mut command = crate::cli::command();
    clap_complete::generate(shell, &mut command, "redis-ferry", out);
}
