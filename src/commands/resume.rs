//! `redis-ferry resume [--journal PATH] [--source URL] [--target URL]`.

use std::path::PathBuf;

use clap::Args;

use crate::cli::JournalArg;
use crate::endpoint::Role;
use crate::exit::Exit;
use crate::interrupt::Shutdown;
use crate::job::{self, Launch};
use crate::progress::ProgressMode;

#[derive(Debug, Args)]
pub struct ResumeArgs {
    #[command(flatten)]
    pub journal: JournalArg,
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
    /// Progress display on stderr.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
}

pub fn run(args: ResumeArgs, shutdown: &Shutdown) -> anyhow::Result<Exit> {
    let source =
        super::optional_endpoint(Role::Source, args.source.as_deref(), args.source_tls_ca)?;
    let target =
        super::optional_endpoint(Role::Target, args.target.as_deref(), args.target_tls_ca)?;
    let launch = Launch {
        journal: args.journal.journal,
        progress: args.progress,
        shutdown: shutdown.clone(),
    };
    job::resume(&launch, source, target)
}
