//! `redis-ferry status [--journal PATH ...] [--json]`.

use clap::Args;

use crate::exit::Exit;

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub journals: super::JournalsArg,
    /// Print one JSON object (the contract's shape) instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: StatusArgs) -> anyhow::Result<Exit> {
    let journals = args.journals.journals()?;
    crate::status::run_merged(&journals, args.json)
}
