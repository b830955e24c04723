//! `redis-ferry run --source URL --target URL [options]`: the flags of a new
//! job, checked and turned into [`CopyOptions`].

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use crate::cli::JournalArg;
use crate::endpoint::{Endpoint, Role};
use crate::exit::{Exit, usage_error};
use crate::interrupt::Shutdown;
use crate::job::{self, Launch};
use crate::options::{
    CopyOptions, DEFAULT_BIG_KEY_THRESHOLD, Existing, JournalKeys, RestoreMode, TtlMode,
    parse_byte_size,
};
use crate::preflight::NewJob;

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub journal: JournalArg,
    /// The server to copy from: redis://[[user]:password@]host[:port][/db], rediss://..., unix:///path.
    ///
    /// Any node of a cluster will do; host:port alone means redis://host:port.
    /// Give a password with --source-password-file or
    /// REDIS_FERRY_SOURCE_PASSWORD rather than in the URL (`ps` shows it).
    /// A /db in the URL copies only that database.
    #[arg(long, value_name = "URL")]
    pub source: String,
    /// The server to copy into (same forms as --source).
    ///
    /// Give a password with --target-password-file or
    /// REDIS_FERRY_TARGET_PASSWORD. A /db in the URL receives the one source
    /// database being copied.
    #[arg(long, value_name = "URL")]
    pub target: String,
    #[command(flatten)]
    pub password_files: super::PasswordFiles,
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
    /// A key that already exists on the target: replace it atomically (default), or skip it.
    ///
    /// A target that already holds keys where the job writes is refused
    /// unless this is given explicitly (dual writes, a second attempt).
    #[arg(long, value_enum, value_name = "replace|skip")]
    pub existing: Option<Existing>,
    /// relative: remaining PTTL in ms to RESTORE; absolute: PEXPIRETIME with ABSTTL (Redis 7 both sides).
    #[arg(long, value_enum, default_value_t = TtlMode::Relative)]
    pub ttl: TtlMode,
    /// At most N keys per second (default: unlimited).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub rate: Option<u64>,
    /// Scan and read the source, count what would be copied; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub progress: super::ProgressArgs,
    #[command(flatten)]
    pub metrics: super::MetricsArg,
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
    /// Skip the fence that keeps the application's own writes from being overwritten.
    ///
    /// By default every batch is fenced (WATCH ... MULTI/EXEC), so the
    /// application may keep writing to both servers (source first, then
    /// target) while the copy runs. Only when nothing writes to the source
    /// or the target until the job ends (a maintenance window) is the fence
    /// safe to skip, for a little speed.
    #[arg(long)]
    pub no_fence: bool,
    /// Milliseconds a fenced batch stays open after its read (default 5).
    ///
    /// With dual writes, an application write to the target that arrives
    /// later than this after its write to the source, and after
    /// redis-ferry copied the key, is applied on top of the copy: harmless
    /// for SET or HSET, counted twice for INCR or RPUSH. Raise it when the
    /// application's second write can lag the first by more (a slow link
    /// to the new server); a longer hold slows the copy down.
    #[arg(long, value_name = "MS", default_value_t = crate::options::DEFAULT_FENCE_HOLD_MS,
          value_parser = clap::value_parser!(u64).range(0..=1000))]
    pub fence_hold: u64,
    /// After the scan, keep copying every change made on the source until cutover.
    ///
    /// Subscribes to the source's keyspace notifications before the scan
    /// (setting notify-keyspace-events for the job when CONFIG allows it),
    /// then follows: `status` shows pending keys, lag and whether the target
    /// is in sync. At cutover stop the application's writes, wait for
    /// `status` to say in sync, switch, then Ctrl-C: the waiting changes
    /// are copied and the job ends completed (exit 0).
    #[arg(long)]
    pub follow: bool,
    /// The source already has notify-keyspace-events with E and A (KEA), and
    /// its CONFIG command is not available to check (a managed service). For
    /// --follow, and for the fence: without notifications it WATCHes each key
    /// on the source, which gets slow on a large source.
    #[arg(long)]
    pub notify_configured: bool,
    /// How keys are written: auto (RESTORE where the target loads the payload, else commands), dump, commands.
    ///
    /// `auto` decides from both servers' fork, version and RDB version, and
    /// rebuilds a key by commands when RESTORE refuses its payload; `dump`
    /// makes such a key `failed`; `commands` never uses RESTORE.
    #[arg(long, value_enum, default_value_t = RestoreMode::Auto)]
    pub restore_mode: RestoreMode,
    /// Keys larger than this (MEMORY USAGE) are copied in chunks (K/M/G suffixes; default 8M).
    ///
    /// A big key is read with HSCAN/SSCAN/ZRANGE/LRANGE/XRANGE/GETRANGE and
    /// built under a temporary name on the target, then renamed over the
    /// key, so neither server is blocked by one huge DUMP or RESTORE.
    #[arg(long, value_name = "BYTES", value_parser = parse_byte_size, default_value_t = DEFAULT_BIG_KEY_THRESHOLD)]
    pub big_key_threshold: u64,
    /// Carry each key's LRU idle time or LFU frequency (RESTORE IDLETIME/FREQ).
    ///
    /// Which one follows the source's maxmemory-policy. Keys rebuilt by
    /// commands or in chunks start fresh (no command sets them).
    #[arg(long)]
    pub keep_idle: bool,
    /// Cluster source: copy only worker I's share of the hash slots, of N workers (I from 0).
    ///
    /// Run N workers with I = 0 to N-1, each with its own --journal: together
    /// they copy every key once, also while slots move. Worker I owns the
    /// I-th of N contiguous ranges of the 16,384 slots (where `redis-cli
    /// --cluster create` cuts them for N primaries), which depends on I and
    /// N alone, so workers that start at different times still agree. A
    /// worker scans the nodes that serve its slots now and keeps the keys
    /// of its slots. `status` and `report` take the journals of all
    /// workers (several --journal, or their directory) and merge them.
    #[arg(long, value_name = "I/N", value_parser = crate::shard::split::parse_shard)]
    pub shard: Option<crate::shard::ShardSpec>,
    /// Continue the journal's job if it is this same job (as `resume`), otherwise start it.
    ///
    /// For a supervisor (Kubernetes, systemd) that repeats one command
    /// line after any crash: the first time it starts the job; later it
    /// continues it, with the exit codes of `resume` (a completed job: 0).
    /// A journal whose job has another source, target or options is
    /// refused (exit 1) and left unchanged. A different --rate applies to
    /// that run only, as `resume --rate` does.
    #[arg(long, conflicts_with = "dry_run")]
    pub or_resume: bool,
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
    args.password_files.apply()?;
    let source = Endpoint::parse(Role::Source, &args.source)?
        .with_tls_ca(args.source_tls_ca.clone())
        .with_outside_password();
    let target = Endpoint::parse(Role::Target, &args.target)?
        .with_tls_ca(args.target_tls_ca.clone())
        .with_outside_password();
    super::warn_about_url_passwords(&[Some(&source), Some(&target)]);
    let options = copy_options(&args, &source, &target)?;
    let launch = Launch {
        progress: args.progress.settings(),
        existing_explicit: args.existing.is_some(),
        ..Launch::new(args.journal.journal.clone(), shutdown.clone())
    };
    if !args.dry_run {
        super::journal_place::check(&launch.journal, super::journal_place::JournalUse::Create)?;
    }
    args.metrics.around(|| {
        if args.dry_run {
            let new_job = NewJob {
                existing_explicit: launch.existing_explicit,
                dry_run: true,
            };
            let (mut source_side, mut target_side) =
                job::connect_sides(&source, &target, &options, shutdown)?;
            crate::preflight::before_new_job(
                &mut source_side,
                &mut target_side,
                &options,
                new_job,
            )?;
            crate::shard::check_source(&source_side, &options)?;
            return crate::dry_run::run(&mut source_side, &options, shutdown);
        }
        if args.or_resume {
            return job::start_or_resume(source, target, options, &launch);
        }
        job::start(source, target, options, &launch)
    })
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
        if dbs.is_empty() {
            // The contract: a source that holds only db 0 counts as one
            // database, so `redis://new:6379/0` just works.
            dbs = databases_holding_keys(source)?;
            if dbs.is_empty() {
                dbs = vec![0];
            }
        }
        match dbs.as_slice() {
            [only] => {
                db_map.entry(*only).or_insert(target_db);
            }
            _ => {
                return Err(usage_error(format!(
                    "the --target URL names db {target_db}, but the source has databases {dbs:?}; copy one of them (--db N) or say where each goes (--db-map SRC:DST, without a /db on the --target URL)"
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
        existing: args.existing.unwrap_or_default(),
        ttl: args.ttl,
        rate: args.rate,
        journal_keys: args.journal_keys,
        source_replicas: args.source_replicas,
        reconnect_timeout_secs: args.reconnect_timeout,
        no_fence: args.no_fence,
        fence_hold_ms: args.fence_hold,
        follow: args.follow,
        notify_configured: args.notify_configured,
        restore_mode: args.restore_mode,
        big_key_threshold: args.big_key_threshold,
        keep_idle: args.keep_idle,
        shard: args.shard.clone(),
    };
    if options.follow && options.key_type.is_some() {
        return Err(usage_error(
            "--follow copies every key that changes and cannot tell its type before reading it; drop --type (use --match to narrow the keys)",
        ));
    }
    if options.follow && options.shard.is_some() {
        return Err(usage_error(
            "--follow cannot be combined with --shard yet (each worker would have to follow the changes of its own slots only): copy the shards without --follow while the application writes to both servers (dual writes; the fence holds per worker), or follow with one worker without --shard",
        ));
    }
    if options.follow && options.no_fence {
        return Err(usage_error(
            "--follow copies changes while they are made, which needs the fence; drop --no-fence",
        ));
    }
    Ok(options)
}

/// The databases INFO keyspace lists on the source now (a cluster: db 0).
fn databases_holding_keys(source: &Endpoint) -> Result<Vec<i64>> {
    let mut connection = source.connect(0)?;
    let text: String = redis::cmd("INFO")
        .arg("keyspace")
        .query(&mut connection)
        .with_context(|| format!("cannot read INFO keyspace of source {}", source.redacted()))?;
    Ok(crate::server::ServerInfo::parse(&text)
        .keyspace
        .into_keys()
        .collect())
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
