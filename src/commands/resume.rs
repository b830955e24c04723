//! `redis-ferry resume [--journal PATH] [--source URL] [--target URL] [--rate N]`.

use clap::Args;

use crate::cli::JournalArg;
use crate::exit::Exit;
use crate::interrupt::Shutdown;
use crate::job::{self, Launch};

#[derive(Debug, Args)]
pub struct ResumeArgs {
    #[command(flatten)]
    pub journal: JournalArg,
    #[command(flatten)]
    pub servers: super::ServersAgain,
    /// At most N keys per second for this run, or `unlimited`, instead of the job's own --rate.
    ///
    /// To slow a job that hurts production without starting over. Applies
    /// to this run only: the journal keeps the job's own rate, so a later
    /// `resume` without --rate goes back to it (a supervisor that restarts
    /// the job repeats the flag).
    #[arg(long, value_name = "N|unlimited", value_parser = super::parse_rate)]
    pub rate: Option<super::RateArg>,
    #[command(flatten)]
    pub progress: super::ProgressArgs,
    #[command(flatten)]
    pub metrics: super::MetricsArg,
}

pub fn run(args: ResumeArgs, shutdown: &Shutdown) -> anyhow::Result<Exit> {
    super::journal_place::check(
        &args.journal.journal,
        super::journal_place::JournalUse::Write,
    )?;
    let (source, target) = args.servers.endpoints()?;
    let launch = Launch {
        progress: args.progress.settings(),
        rate: args.rate.map(|rate| rate.0),
        ..Launch::new(args.journal.journal, shutdown.clone())
    };
    args.metrics.around(|| job::resume(&launch, source, target))
}
