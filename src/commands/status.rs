//! `redis-ferry status [--journal PATH] [--json]`.

use clap::Args;

use crate::cli::JournalArg;
use crate::exit::Exit;

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub journal: JournalArg,
    /// Print one JSON object (the contract's shape) instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: StatusArgs) -> anyhow::Result<Exit> {
    super::journal_place::check(
        &args.journal.journal,
        super::journal_place::JournalUse::Read,
    )?;
    crate::status::run(&args.journal.journal, args.json)
}
