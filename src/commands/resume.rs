//! `redis-ferry resume [--journal PATH] [--source URL] [--target URL]`.

use clap::Args;

use crate::cli::JournalArg;
use crate::exit::Exit;
use crate::interrupt::Shutdown;
use crate::job::{self, Launch};
use crate::progress::ProgressMode;

#[derive(Debug, Args)]
pub struct ResumeArgs {
    #[command(flatten)]
    pub journal: JournalArg,
    #[command(flatten)]
    pub servers: super::ServersAgain,
    /// Progress display on stderr.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
}

pub fn run(args: ResumeArgs, shutdown: &Shutdown) -> anyhow::Result<Exit> {
    super::journal_place::check(
        &args.journal.journal,
        super::journal_place::JournalUse::Write,
    )?;
    let (source, target) = args.servers.endpoints()?;
    let launch = Launch {
        journal: args.journal.journal,
        progress: args.progress,
        shutdown: shutdown.clone(),
    };
    job::resume(&launch, source, target)
}
