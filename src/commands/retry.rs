//! `redis-ferry retry [--journal PATH] [--outcome failed|mismatch|expired ...]`.

use clap::{Args, ValueEnum};

use crate::cli::JournalArg;
use crate::exit::Exit;
use crate::interrupt::Shutdown;
use crate::job::{self, Launch};
use crate::outcome::Outcome;

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
    /// At most N keys per second for this retry, or `unlimited`, instead of the job's own --rate.
    #[arg(long, value_name = "N|unlimited", value_parser = super::parse_rate)]
    pub rate: Option<super::RateArg>,
    #[command(flatten)]
    pub progress: super::ProgressArgs,
    #[command(flatten)]
    pub metrics: super::MetricsArg,
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
        progress: args.progress.settings(),
        rate: args.rate.map(|rate| rate.0),
        ..Launch::new(args.journal.journal, shutdown.clone())
    };
    args.metrics
        .around(|| job::retry(&launch, outcomes, source, target))
}
