//! `redis-ferry report [--journal PATH ...] [--format text|markdown|json|csv] [--output FILE]`.

use std::path::PathBuf;

use clap::Args;

use crate::exit::Exit;
use crate::interrupt::Shutdown;
use crate::report::{self, Format, ReportSettings};

#[derive(Debug, Args)]
pub struct ReportArgs {
    #[command(flatten)]
    pub journals: super::JournalsArg,
    /// text, markdown or json: the summary; csv: one row per key (the audit log).
    ///
    /// text, markdown and json ask both servers for their key counts now;
    /// a server that cannot be reached shows as unknown, with the reason.
    /// csv reads only the journal and streams it (any number of keys).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Write the report to FILE (atomically: a temporary file, then rename) instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub servers: super::ServersAgain,
}

pub fn run(args: ReportArgs, shutdown: &Shutdown) -> anyhow::Result<Exit> {
    let journals = args.journals.journals()?;
    let (source, target) = args.servers.endpoints()?;
    let settings = ReportSettings {
        journals,
        format: args.format,
        output: args.output,
        source,
        target,
    };
    report::run(settings, shutdown)
}
