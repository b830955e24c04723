//! `redis-ferry report [--journal PATH] [--format text|markdown|json|csv] [--output FILE]`.

use std::path::PathBuf;

use clap::Args;

use crate::cli::JournalArg;
use crate::endpoint::Role;
use crate::exit::Exit;
use crate::interrupt::Shutdown;
use crate::report::{self, Format, ReportSettings};

#[derive(Debug, Args)]
pub struct ReportArgs {
    #[command(flatten)]
    pub journal: JournalArg,
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
    /// The source again, when its password is needed or its address changed.
    ///
    /// The journal stores URLs without passwords; give the URL with its
    /// password here, or set REDIS_FERRY_SOURCE_PASSWORD.
    #[arg(long, value_name = "URL")]
    pub source: Option<String>,
    /// The target again, when its password is needed or its address changed.
    #[arg(long, value_name = "URL")]
    pub target: Option<String>,
    /// A CA certificate (PEM) for a rediss:// source, replacing the stored one.
    #[arg(long, value_name = "FILE")]
    pub source_tls_ca: Option<PathBuf>,
    /// A CA certificate (PEM) for a rediss:// target, replacing the stored one.
    #[arg(long, value_name = "FILE")]
    pub target_tls_ca: Option<PathBuf>,
}

pub fn run(args: ReportArgs, shutdown: &Shutdown) -> anyhow::Result<Exit> {
    let settings = ReportSettings {
        journal: args.journal.journal,
        format: args.format,
        output: args.output,
        source: super::optional_endpoint(Role::Source, args.source.as_deref(), args.source_tls_ca)?,
        target: super::optional_endpoint(Role::Target, args.target.as_deref(), args.target_tls_ca)?,
    };
    report::run(settings, shutdown)
}
