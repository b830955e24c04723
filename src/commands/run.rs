//! `redis-ferry run --source URL --target URL [options]`: the flags of a new
//! job, checked and turned into [`CopyOptions`].

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::cli::JournalArg;
use crate::endpoint::{Endpoint, Role};
use crate::exit::{Exit, usage_error};
use crate::interrupt::Shutdown;
use crate::job::{self, Launch};
use crate::options::{CopyOptions, Existing, JournalKeys, TtlMode};
use crate::progress::ProgressMode;

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub journal: JournalArg,
    /// The server to copy from: redis://[[user]:password@]host[:port][/db], rediss://..., unix:///path.
    ///
    /// Any node of a cluster will do. A password in REDIS_FERRY_SOURCE_PASSWORD
    /// wins over the URL's. A /db in the URL copies only that database.
    #[arg(long, value_name = "URL")]
    pub source: String,
    /// The server to copy into (same forms as --source).
    ///
    /// A password in REDIS_FERRY_TARGET_PASSWORD wins over the URL's. A /db in
    /// the URL receives the one source database being copied.
    #[arg(long, value_name = "URL")]
    pub target: String,
    /// A CA certificate (PEM) that signs the rediss:// source's certificate.
    #[arg(long, value_name = "FILE")]
    pub source_tls_ca: Option<PathBuf>,
    /// A CA certificate (PEM) that signs the rediss:// target's certificate.
    #[arg(long, value_name = "FILE")]
    pub target_tls_ca: Option<PathBuf>,
    /// Copy only keys matching this SCAN MATCH glob.
    #[arg(long = "match", value_name = "PATTERN")]
    pub match_pattern: Option<String>,
    /// Copy only keys of this type (string, list, set, zset, hash, stream, or a module type name).
    #[arg(long = "type", value_name = "TYPE")]
    pub key_type: Option<String>,
    /// A source database to copy (repeatable). Default: every database INFO keyspace lists.
    #[arg(long = "db", value_name = "N", value_parser = clap::value_parser!(i64).range(0..))]
    pub dbs: Vec<i64>,
    /// Copy source database SRC into target database DST (repeatable).
    #[arg(long = "db-map", value_name = "SRC:DST", value_parser = parse_db_map)]
    pub db_map: Vec<(i64, i64)>,
    /// SCAN COUNT hint: keys asked for per SCAN, and so per batch.
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub scan_count: u32,
    /// A key that already exists on the target: replace it atomically, or skip it.
    #[arg(long, value_enum, default_value_t = Existing::Replace)]
    pub existing: Existing,
    /// relative: remaining PTTL in ms to RESTORE; absolute: PEXPIRETIME with ABSTTL (Redis 7 both sides).
    #[arg(long, value_enum, default_value_t = TtlMode::Relative)]
    pub ttl: TtlMode,
    /// At most N keys per second (default: unlimited).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub rate: Option<u64>,
    /// Scan and read the source, count what would be copied; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Progress display on stderr.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
    /// Accepted for older scripts; every key gets a journal row either way.
    ///
    /// The journal keeps a row per key at any size without slowing the copy
    /// down (it needs the row to count every key once), so `failures` no
    /// longer changes anything; redis-ferry says so when it is given.
    #[arg(long, value_enum, default_value_t = JournalKeys::All)]
    pub journal_keys: JournalKeys,
    /// Read a cluster source's replicas (READONLY) to spare its primaries.
    #[arg(long)]
    pub source_replicas: bool,
    /// Seconds a lost connection may take to come back before the job stops (resumable).
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub reconnect_timeout: u64,
}

fn parse_db_map(text: &str) -> Result<(i64, i64), String> {
    let (source, target) = text
        .split_once(':')
        .ok_or_else(|| "expected SRC:DST, for example 0:5".to_string())?;
    let parse = |part: &str| {
        part.trim()
            .parse::<i64>()
            .ok()
            .filter(|db| *db >= 0)
            .ok_or_else(|| format!("{part:?} is not a database number"))
    };
    Ok((parse(source)?, parse(target)?))
}

pub fn run(args: RunArgs, shutdown: &Shutdown) -> Result<Exit> {
    let source = Endpoint::parse(Role::Source, &args.source)?
        .with_tls_ca(args.source_tls_ca.clone())
        .with_env_password();
    let target = Endpoint::parse(Role::Target, &args.target)?
        .with_tls_ca(args.target_tls_ca.clone())
        .with_env_password();
    let options = copy_options(&args, &source, &target)?;
    let launch = Launch {
        journal: args.journal.journal.clone(),
        progress: args.progress,
        shutdown: shutdown.clone(),
    };
    if args.dry_run {
        let (mut source_side, _target) = job::connect_sides(&source, &target, &options, shutdown)?;
        return crate::dry_run::run(&mut source_side, &options, shutdown);
    }
    job::start(source, target, options, &launch)
}

/// Checks the flags against each other and builds the job's options.
fn copy_options(args: &RunArgs, source: &Endpoint, target: &Endpoint) -> Result<CopyOptions> {
    let mut dbs = args.dbs.clone();
    dbs.sort_unstable();
    dbs.dedup();
    if let Some(db) = source.db {
        if !dbs.is_empty() && dbs != [db] {
            return Err(usage_error(format!(
                "the --source URL names db {db} but --db selects {dbs:?}; use one or the other"
            )));
        }
        dbs = vec![db];
    }
    let mut db_map = BTreeMap::new();
    for &(from, to) in &args.db_map {
        if let Some(previous) = db_map.insert(from, to)
            && previous != to
        {
            return Err(usage_error(format!(
                "--db-map gives source db {from} two targets ({previous} and {to})"
            )));
        }
        if !dbs.is_empty() && !dbs.contains(&from) {
            return Err(usage_error(format!(
                "--db-map {from}:{to} names source db {from}, which --db does not select"
            )));
        }
    }
    if let Some(target_db) = target.db {
        match dbs.as_slice() {
            [only] => {
                db_map.entry(*only).or_insert(target_db);
            }
            _ => {
                return Err(usage_error(format!(
                    "the --target URL names db {target_db}, which only works when one source database is copied (--db N); use --db-map SRC:DST instead"
                )));
            }
        }
    }
    let options = CopyOptions {
        match_pattern: args.match_pattern.clone(),
        key_type: args.key_type.clone(),
        dbs,
        db_map,
        scan_count: args.scan_count,
        existing: args.existing,
        ttl: args.ttl,
        rate: args.rate,
        journal_keys: args.journal_keys,
        source_replicas: args.source_replicas,
        reconnect_timeout_secs: args.reconnect_timeout,
    };
    warn_about_merged_databases(&options);
    Ok(options)
}

/// Two source databases landing in one target database overwrite each
/// other's keys of the same name; allowed (a move into a cluster needs it),
/// but said out loud.
fn warn_about_merged_databases(options: &CopyOptions) {
    if options.dbs.is_empty() {
        return;
    }
    let mut by_target: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for &db in &options.dbs {
        by_target.entry(options.target_db(db)).or_default().push(db);
    }
    for (target, sources) in by_target.iter().filter(|(_, s)| s.len() > 1) {
        eprintln!(
            "redis-ferry: warning: source databases {sources:?} all go to target db {target}; keys with the same name overwrite each other"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn db_maps_parse() {
        assert_eq!(parse_db_map("0:5"), Ok((0, 5)));
        assert!(parse_db_map("0").is_err());
        assert!(parse_db_map("a:1").is_err());
        assert!(parse_db_map("-1:1").is_err());
    }
}
