//! `redis-ferry verify [--journal PATH | --source URL --target URL] [--sample N]
//! [--ttl-tolerance MS] [--match PATTERN] [--extra]`.
//!
//! Which mode: `--journal` given, or neither URL pair complete, means the
//! job's journal (default `./redis-ferry.db`), with `--source`/`--target`
//! only supplying passwords or new addresses, as for `resume`. Both URLs
//! and no `--journal` compare those two servers and record nothing.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use clap::Args;

use crate::endpoint::{Endpoint, Role};
use crate::exit::Exit;
use crate::interrupt::Shutdown;
use crate::verify::{self, VerifySettings};

const DEFAULT_JOURNAL: &str = "./redis-ferry.db";

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The job's journal: compare its source and target, record differences as `mismatch`.
    ///
    /// Default ./redis-ferry.db, unless both --source and --target are given
    /// (then nothing is recorded).
    #[arg(long, value_name = "PATH")]
    pub journal: Option<PathBuf>,
    /// The source: with --target and no --journal, the server to compare; with a journal, its password or new address.
    #[arg(long, value_name = "URL")]
    pub source: Option<String>,
    /// The target: with --source and no --journal, the server to compare; with a journal, its password or new address.
    #[arg(long, value_name = "URL")]
    pub target: Option<String>,
    #[command(flatten)]
    pub password_files: super::PasswordFiles,
    /// A CA certificate (PEM) for a rediss:// source.
    #[arg(long, value_name = "FILE")]
    pub source_tls_ca: Option<PathBuf>,
    /// A CA certificate (PEM) for a rediss:// target.
    #[arg(long, value_name = "FILE")]
    pub target_tls_ca: Option<PathBuf>,
    /// Check a random sample of about N keys (RANDOMKEY) instead of every key.
    ///
    /// The sample is spread over databases and cluster primaries in
    /// proportion to their key counts. A quick look; only a full verify
    /// proves the whole target.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub sample: Option<u64>,
    /// TTLs further apart than this (milliseconds) count as different.
    #[arg(long, value_name = "MS", default_value_t = 5000)]
    pub ttl_tolerance: u64,
    /// Only keys matching this glob (with a journal: within the job's own --match).
    #[arg(long = "match", value_name = "PATTERN")]
    pub match_pattern: Option<String>,
    /// Also scan the target for keys the source does not have.
    ///
    /// With a journal they are recorded as `mismatch` too, and
    /// `retry --outcome mismatch` deletes them from the target.
    #[arg(long)]
    pub extra: bool,
    /// How many differing keys the summary lists.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub show: usize,
    /// SCAN COUNT hint (default: the job's, or 1000).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub scan_count: Option<u32>,
    /// At most N keys compared per second (default: unlimited), to spare servers in production.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub rate: Option<u64>,
    #[command(flatten)]
    pub progress: super::ProgressArgs,
    #[command(flatten)]
    pub metrics: super::MetricsArg,
}

pub fn run(args: VerifyArgs, shutdown: &Shutdown) -> Result<Exit> {
    let metrics = args.metrics.clone();
    metrics.around(|| verify(args, shutdown))
}

fn verify(args: VerifyArgs, shutdown: &Shutdown) -> Result<Exit> {
    args.password_files.apply()?;
    let settings = VerifySettings {
        sample: args.sample,
        ttl_tolerance_ms: args.ttl_tolerance,
        match_pattern: args.match_pattern.clone(),
        extra: args.extra,
        show: args.show,
        scan_count: args.scan_count,
        progress: args.progress.settings(),
        rate: args.rate,
    };
    if let (None, Some(source), Some(target)) = (&args.journal, &args.source, &args.target) {
        let source = Endpoint::parse(Role::Source, source)?
            .with_tls_ca(args.source_tls_ca.clone())
            .with_outside_password();
        let target = Endpoint::parse(Role::Target, target)?
            .with_tls_ca(args.target_tls_ca.clone())
            .with_outside_password();
        super::warn_about_url_passwords(&[Some(&source), Some(&target)]);
        return verify::without_journal(&source, &target, &settings, shutdown);
    }
    let explicit = args.journal.is_some();
    let journal = args
        .journal
        .unwrap_or_else(|| PathBuf::from(DEFAULT_JOURNAL));
    if !explicit && !Path::new(&journal).exists() {
        bail!(
            "journal {DEFAULT_JOURNAL} does not exist: pass --journal PATH of a job, or both --source URL and --target URL to compare two servers without a journal"
        );
    }
    super::journal_place::check(&journal, super::journal_place::JournalUse::Write)?;
    let source =
        super::optional_endpoint(Role::Source, args.source.as_deref(), args.source_tls_ca)?;
    let target =
        super::optional_endpoint(Role::Target, args.target.as_deref(), args.target_tls_ca)?;
    super::warn_about_url_passwords(&[source.as_ref(), target.as_ref()]);
    verify::with_journal(&journal, source, target, &settings, shutdown)
}
