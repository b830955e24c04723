//! `redis-ferry retry [--journal PATH] [--outcome failed|mismatch|expired ...]`.

use clap::{Args, ValueEnum};

use crate::cli::JournalArg;
use crate::exit::Exit;
use crate::interrupt::Shutdown;
use crate::job::{self, Launch};
use crate::outcome::Outcome;
use crate::progress::ProgressMode;

/// The outcomes `retry` can select.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RetryOutcome {
    Failed,
    Mismatch,
    Expired,
}

impl From<RetryOutcome> for Outcome {
    fn from(outcome: RetryOutcome) -> Outcome {
        match outcome {
            RetryOutcome::Failed => Outcome::Failed,
            RetryOutcome::Mismatch => Outcome::Mismatch,
            RetryOutcome::Expired => Outcome::Expired,
        }
    }
}

#[derive(Debug, Args)]
pub struct RetryArgs {
    #[command(flatten)]
    pub journal: JournalArg,
    /// Copy again the keys whose latest outcome is one of these (repeatable,
    /// or comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [RetryOutcome::Failed])]
    pub outcome: Vec<RetryOutcome>,
    #[command(flatten)]
    pub servers: super::ServersAgain,
    /// Progress display on stderr.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
}

pub fn run(args: RetryArgs, shutdown: &Shutdown) -> anyhow::Result<Exit> {
    super::journal_place::check(
        &args.journal.journal,
        super::journal_place::JournalUse::Write,
    )?;
    let (source, target) = args.servers.endpoints()?;
    let mut outcomes: Vec<Outcome> = args.outcome.into_iter().map(Outcome::from).collect();
    outcomes.sort();
    outcomes.dedup();
    let launch = Launch {
        journal: args.journal.journal,
        progress: args.progress,
        shutdown: shutdown.clone(),
    };
    job::retry(&launch, outcomes, source, target)
}
