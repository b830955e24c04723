//! A migration job from start to end: `run` starts one, `resume` continues
//! it from the journal's cursors, `retry` copies chosen keys again.
//!
//! This module decides *what* to copy (which databases and nodes, from
//! which cursor), checks the servers before anything is written (not the
//! same server, not a read-only replica, versions that support the chosen
//! options), runs the [`pipeline`](crate::pipeline) and turns how it ended
//! into the job's state and the exit code.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use crate::clock::{now_ms, short_duration};
use crate::endpoint::{Endpoint, Role};
use crate::exit::Exit;
use crate::interrupt::Shutdown;
use crate::journal::{CursorRecord, JobRecord, JobState, Journal, JournalReader};
use crate::options::{CopyOptions, JournalKeys};
use crate::outcome::Outcome;
use crate::pipeline::{self, Reader, Stop, WriterSettings};
use crate::progress::{Progress, ProgressMode};
use crate::rate::RateLimiter;
use crate::scan::{ReadBatch, ScanTask, scan_task};
use crate::side::{STANDALONE_NODE, Side};

/// Settings of this invocation (not stored in the journal).
#[derive(Debug, Clone)]
pub struct Launch {
    pub journal: PathBuf,
    pub progress: ProgressMode,
    pub shutdown: Shutdown,
}

impl Launch {
    fn journal_shown(&self) -> String {
        self.journal.display().to_string()
    }
}

/// `redis-ferry run`: starts a new job and runs it to the end.
pub fn start(
    source: Endpoint,
    target: Endpoint,
    options: CopyOptions,
    launch: &Launch,
) -> Result<Exit> {
    Journal::precheck_new(&launch.journal)?;
    let (mut source_side, target_side) =
        connect_sides(&source, &target, &options, &launch.shutdown)?;
    let cursors = plan_cursors(&mut source_side, &options)?;
    note_journal_keys(&options);
    let mut journal = Journal::create(&launch.journal)?;
    let job = JobRecord {
        source_tls_ca: source.tls_ca.clone(),
        target_tls_ca: target.tls_ca.clone(),
        source_nodes: cluster_nodes_json(&source_side)?,
        ..JobRecord::new(
            JobState::Running,
            &source.redacted(),
            &target.redacted(),
            options.clone(),
        )
    };
    journal.insert_job(&job, &cursors)?;
    execute_scan(
        &mut journal,
        source_side,
        target_side,
        &options,
        launch,
        "run",
    )
}

/// `--journal-keys failures` stays accepted for scripts written for older
/// versions; the journal now keeps a row per key at any size (and needs it
/// to count every key once), so say the flag changes nothing.
fn note_journal_keys(options: &CopyOptions) {
    if options.journal_keys == JournalKeys::Failures {
        crate::log::info(
            "note: --journal-keys failures is no longer needed and changes nothing: the journal keeps a row for every key, at any size, without slowing the copy down (see the README, Performance)",
        );
    }
}

/// `redis-ferry resume`: continues the journal's job from its cursors.
pub fn resume(
    launch: &Launch,
    source_override: Option<Endpoint>,
    target_override: Option<Endpoint>,
) -> Result<Exit> {
    let mut journal = Journal::open_to_drive(&launch.journal)?;
    let job = journal.job()?.context("the journal holds no job")?;
    if job.state == JobState::Completed {
        println!(
            "redis-ferry: the job in {} already completed at {}; nothing to resume (`redis-ferry report` shows the result)",
            launch.journal_shown(),
            job.finished_at
                .map(crate::clock::rfc3339)
                .unwrap_or_default()
        );
        return Ok(Exit::Success);
    }
    let (source, target) = job_endpoints(&journal, &job, source_override, target_override)?;
    let (mut source_side, target_side) =
        connect_sides(&source, &target, &job.options, &launch.shutdown)?;
    revalidate_cursors(&mut journal, &mut source_side, &job.options)?;
    execute_scan(
        &mut journal,
        source_side,
        target_side,
        &job.options,
        launch,
        "resume",
    )
}

/// `redis-ferry retry`: copies again every key whose latest outcome is one
/// of `outcomes`, reading the source as it is now.
pub fn retry(
    launch: &Launch,
    outcomes: Vec<Outcome>,
    source_override: Option<Endpoint>,
    target_override: Option<Endpoint>,
) -> Result<Exit> {
    let mut journal = Journal::open_to_drive(&launch.journal)?;
    let job = journal.job()?.context("the journal holds no job")?;
    let (source, target) = job_endpoints(&journal, &job, source_override, target_override)?;
    let (source_side, target_side) =
        connect_sides(&source, &target, &job.options, &launch.shutdown)?;
    let counts = journal.counts()?;
    let total: u64 = counts
        .values()
        .map(|c| outcomes.iter().map(|o| c.get(*o)).sum::<u64>())
        .sum();
    journal.begin_run("retry")?;
    let mut progress = Progress::new(launch.progress, Some(total), 0);
    let reader = retry_reader(
        launch.journal.clone(),
        outcomes.clone(),
        source_side,
        job.options.clone(),
        launch.shutdown.clone(),
    );
    let mut target_side = target_side;
    let stop = pipeline::run(
        vec![reader],
        &mut target_side,
        WriterSettings {
            existing: job.options.existing,
            journal_keys: job.options.journal_keys,
        },
        &mut journal,
        &launch.shutdown,
        &mut progress,
    );
    progress.finish();
    let names: Vec<&str> = outcomes.iter().map(|o| o.as_str()).collect();
    finish(
        &mut journal,
        stop,
        &progress,
        launch,
        Ending::Retry(names.join(",")),
    )
}

/// Where the job's servers are: the stored (redacted) URLs, with passwords
/// from the environment, or URLs given again on the command line.
fn job_endpoints(
    journal: &Journal,
    job: &JobRecord,
    source_override: Option<Endpoint>,
    target_override: Option<Endpoint>,
) -> Result<(Endpoint, Endpoint)> {
    let (source, target) = endpoints_of(job, source_override, target_override)?;
    if source.redacted() != job.source_url || target.redacted() != job.target_url {
        journal.set_job_urls(&source.redacted(), &target.redacted())?;
    }
    Ok((source, target))
}

/// The job's source and target as a later command reaches them: see
/// [`stored_endpoint`].
pub fn endpoints_of(
    job: &JobRecord,
    source_override: Option<Endpoint>,
    target_override: Option<Endpoint>,
) -> Result<(Endpoint, Endpoint)> {
    let source = stored_endpoint(
        Role::Source,
        &job.source_url,
        job.source_tls_ca.clone(),
        source_override,
    )?;
    let target = stored_endpoint(
        Role::Target,
        &job.target_url,
        job.target_tls_ca.clone(),
        target_override,
    )?;
    Ok((source, target))
}

/// The endpoint a later command uses for `role`.
pub fn stored_endpoint(
    role: Role,
    stored_url: &str,
    stored_ca: Option<PathBuf>,
    given: Option<Endpoint>,
) -> Result<Endpoint> {
    let stored = Endpoint::parse(role, stored_url)
        .with_context(|| format!("the journal's {role} URL cannot be read"))?
        .with_tls_ca(stored_ca);
    let endpoint = match given {
        Some(given) if given.address == stored.address => {
            let mut endpoint = stored;
            endpoint.take_password_from(&given);
            endpoint.db = given.db.or(endpoint.db);
            endpoint.with_tls_ca(given.tls_ca)
        }
        Some(given) => {
            eprintln!(
                "redis-ferry: using {role} {} instead of {} recorded in the journal",
                given.redacted(),
                stored.redacted()
            );
            let ca = given.tls_ca.clone().or(stored.tls_ca);
            given.with_tls_ca(ca)
        }
        None => stored,
    };
    Ok(endpoint.with_env_password())
}

/// Connects to both sides and refuses what must not run.
pub fn connect_sides(
    source: &Endpoint,
    target: &Endpoint,
    options: &CopyOptions,
    shutdown: &Shutdown,
) -> Result<(Side, Side)> {
    let budget = options.reconnect_budget();
    let mut source_side = Side::connect(source, budget, shutdown)?;
    let mut target_side = Side::connect(target, budget, shutdown)?;
    crate::preflight::check(&mut source_side, &mut target_side, options)?;
    if options.source_replicas {
        use_source_replicas(&mut source_side)?;
    }
    Ok((source_side, target_side))
}

/// `--source-replicas`: scan and read each primary's replica instead.
fn use_source_replicas(source: &mut Side) -> Result<()> {
    let Some(topology) = source.topology().cloned() else {
        eprintln!(
            "redis-ferry: note: --source-replicas only applies to a cluster source; reading the server given"
        );
        return Ok(());
    };
    for primary in topology.primaries() {
        let replica = topology.replica_of(&primary.id).with_context(|| {
            format!(
                "--source-replicas: primary {} has no healthy replica to read from",
                primary.address()
            )
        })?;
        source.read_from_replica(&primary.id, &replica.address());
    }
    Ok(())
}

/// The source databases a job copies: `--db`, or every database INFO
/// keyspace lists now; a cluster has only db 0.
pub fn source_databases(source: &Side, options: &CopyOptions) -> Vec<i64> {
    if source.is_cluster() {
        vec![0]
    } else if options.dbs.is_empty() {
        source.info.keyspace.keys().copied().collect()
    } else {
        options.dbs.clone()
    }
}

/// The cursors of a new job: one per source database (standalone) or per
/// primary (cluster), each starting at 0.
fn plan_cursors(source: &mut Side, options: &CopyOptions) -> Result<Vec<CursorRecord>> {
    let now = now_ms();
    if source.is_cluster() {
        return crate::coverage::plan(source, options);
    }
    Ok(source_databases(source, options)
        .into_iter()
        .map(|db| CursorRecord {
            node: STANDALONE_NODE.to_string(),
            db,
            target_db: options.target_db(db),
            cursor: 0,
            done: false,
            run_id: Some(source.info.run_id.clone()),
            keys_scanned: 0,
            keys_expected: Some(source.info.keyspace.get(&db).copied().unwrap_or(0)),
            updated_at: now,
            node_layout: None,
        })
        .collect())
}

fn cluster_nodes_json(source: &Side) -> Result<Option<String>> {
    Ok(match source.topology() {
        Some(topology) => Some(serde_json::to_string(&topology.primaries())?),
        None => None,
    })
}

/// Before resuming: a cursor is only worth continuing on the very server
/// process that produced it, and for a cluster only on a node that gained
/// no slots since (see [`crate::coverage`]).
fn revalidate_cursors(
    journal: &mut Journal,
    source: &mut Side,
    options: &CopyOptions,
) -> Result<()> {
    for reason in crate::coverage::reconcile(journal, source, options)? {
        eprintln!("redis-ferry: scanning again: {reason}");
    }
    Ok(())
}

/// Runs the scan of every unfinished cursor, pass after pass until the
/// source is provably covered (a cluster whose slots moved during a pass
/// has some nodes scanned again; see [`crate::coverage`]).
fn execute_scan(
    journal: &mut Journal,
    mut source: Side,
    mut target: Side,
    options: &CopyOptions,
    launch: &Launch,
    command: &str,
) -> Result<Exit> {
    journal.begin_run(command)?;
    journal.set_job_state(JobState::Running, None)?;
    let cursors = journal.cursors()?;
    let total: u64 = cursors.iter().filter_map(|c| c.keys_expected).sum();
    let done_before: u64 = cursors.iter().map(|c| c.keys_scanned).sum();
    let mut progress = Progress::new(launch.progress, Some(total.max(done_before)), done_before);
    let limiter = RateLimiter::new(options.rate);
    let settings = WriterSettings {
        existing: options.existing,
        journal_keys: options.journal_keys,
    };
    let stop = loop {
        let readers = scan_readers(journal, &source, options, &limiter, &launch.shutdown)?;
        let stop = pipeline::run(
            readers,
            &mut target,
            settings,
            journal,
            &launch.shutdown,
            &mut progress,
        );
        if !matches!(stop, Stop::Finished) {
            break stop;
        }
        match crate::coverage::reconcile(journal, &mut source, options) {
            Err(error) => break Stop::Failed(error),
            Ok(_) if launch.shutdown.requested() => break Stop::Interrupted,
            Ok(reasons) if reasons.is_empty() => break Stop::Finished,
            Ok(reasons) => {
                for reason in reasons {
                    eprintln!("redis-ferry: scanning again: {reason}");
                }
            }
        }
    };
    progress.finish();
    finish(journal, stop, &progress, launch, Ending::Job)
}

/// One reader per source node, walking that node's unfinished databases in
/// order (so a node's batches are journaled in scan order).
fn scan_readers(
    journal: &Journal,
    source: &Side,
    options: &CopyOptions,
    limiter: &RateLimiter,
    shutdown: &Shutdown,
) -> Result<Vec<Reader>> {
    let mut by_node: BTreeMap<String, Vec<ScanTask>> = BTreeMap::new();
    for cursor in journal.cursors()?.into_iter().filter(|c| !c.done) {
        let address = scan_address(source, &cursor.node)?;
        by_node
            .entry(cursor.node.clone())
            .or_default()
            .push(ScanTask {
                node: cursor.node,
                address,
                db: cursor.db,
                target_db: cursor.target_db,
                cursor: cursor.cursor,
                run_id: cursor.run_id.unwrap_or_default(),
            });
    }
    Ok(by_node
        .into_values()
        .map(|tasks| {
            scan_reader(
                source.fork(),
                tasks,
                options.clone(),
                limiter.clone(),
                shutdown.clone(),
            )
        })
        .collect())
}

/// Where to send SCAN for a cursor's node.
fn scan_address(source: &Side, node: &str) -> Result<String> {
    let Some(topology) = source.topology() else {
        return Ok(source.seed_address().to_string());
    };
    let primary = topology.node(node).with_context(|| {
        format!("source cluster node {node} is gone; run `redis-ferry resume` to scan the primaries that hold its keys now")
    })?;
    Ok(crate::coverage::scan_address(source, primary))
}

fn scan_reader(
    mut source: Side,
    tasks: Vec<ScanTask>,
    options: CopyOptions,
    limiter: RateLimiter,
    shutdown: Shutdown,
) -> Reader {
    Box::new(move |emit: &mut dyn FnMut(ReadBatch) -> bool| {
        for task in &tasks {
            let mut task = task.clone();
            if let Some(replica) = source.replica_address_for(&task.node) {
                task.address = replica;
            }
            if !scan_task(
                &mut source,
                &task,
                &options,
                &limiter,
                &shutdown,
                &mut *emit,
            )? {
                return Ok(false);
            }
        }
        Ok(true)
    })
}

/// Pages through the journal's keys with the chosen outcomes and reads
/// them from the source; `retry`'s reader.
fn retry_reader(
    journal_path: PathBuf,
    outcomes: Vec<Outcome>,
    mut source: Side,
    options: CopyOptions,
    shutdown: Shutdown,
) -> Reader {
    Box::new(move |emit: &mut dyn FnMut(ReadBatch) -> bool| {
        let journal = JournalReader::open(&journal_path)?;
        let limiter = RateLimiter::new(options.rate);
        let page_size = options.scan_count.max(1) as usize;
        let mut after = None;
        loop {
            if shutdown.requested() {
                return Ok(false);
            }
            let page = journal.keys_with_outcomes(&outcomes, after, page_size)?;
            let Some(last) = page.last() else {
                return Ok(true);
            };
            after = Some(last.position);
            // A batch holds keys of one database.
            let mut by_db: BTreeMap<i64, Vec<Vec<u8>>> = BTreeMap::new();
            for paged in page {
                by_db.entry(paged.db).or_default().push(paged.key);
            }
            for (db, keys) in by_db {
                limiter.acquire(keys.len());
                let reads = crate::copy::read_keys(&mut source, db, keys, options.ttl)?;
                let batch = ReadBatch {
                    db,
                    target_db: options.target_db(db),
                    checkpoint: None,
                    reads,
                };
                if !emit(batch) {
                    return Ok(false);
                }
            }
        }
    })
}

/// The command that continues a retry: the same outcomes again (only the
/// keys not yet copied still have them).
fn retry_command(journal_shown: &str, outcomes: &str) -> String {
    if outcomes == "failed" {
        format!("redis-ferry retry --journal {journal_shown}")
    } else {
        format!("redis-ferry retry --journal {journal_shown} --outcome {outcomes}")
    }
}

enum Ending {
    Job,
    Retry(String),
}

/// Records how the pipeline ended and picks the exit code.
fn finish(
    journal: &mut Journal,
    stop: Stop,
    progress: &Progress,
    launch: &Launch,
    ending: Ending,
) -> Result<Exit> {
    let journal_shown = launch.journal_shown();
    let counts = progress.counts();
    let done = format!(
        "{} keys in {} (restored {}, expired {}, skipped {}, failed {}), {:.0} keys/s",
        counts.total(),
        short_duration(progress.elapsed()),
        counts.restored,
        counts.expired,
        counts.skipped,
        counts.failed,
        progress.rate()
    );
    let exit = match stop {
        Stop::Finished => {
            if matches!(ending, Ending::Job) {
                journal.set_job_state(JobState::Completed, None)?;
            }
            let failed_total: u64 = journal.counts()?.values().map(|c| c.failed).sum();
            let what = match &ending {
                Ending::Job => "job completed".to_string(),
                Ending::Retry(outcomes) => format!("retry of {outcomes} keys completed"),
            };
            println!("redis-ferry: {what}: {done}");
            // A retry only touches keys already journaled: on a job whose
            // scan has not finished, the keys not scanned yet still wait.
            if let Ending::Retry(_) = ending
                && let Some(job) = journal.job()?
                && job.state != JobState::Completed
            {
                println!(
                    "redis-ferry: note: the job itself is {}, not finished; run `redis-ferry resume --journal {journal_shown}` to copy the keys not scanned yet",
                    job.state.as_str()
                );
            }
            if failed_total > 0 {
                println!(
                    "redis-ferry: {failed_total} keys failed; see `redis-ferry report --journal {journal_shown} --format csv`, fix the cause, then run `redis-ferry retry --journal {journal_shown}`"
                );
                Exit::KeysFailed
            } else {
                println!(
                    "redis-ferry: see `redis-ferry report --journal {journal_shown}` for the audit"
                );
                Exit::Success
            }
        }
        Stop::Interrupted => {
            let again = match ending {
                Ending::Job => {
                    journal.set_job_state(JobState::Interrupted, None)?;
                    format!("redis-ferry resume --journal {journal_shown}")
                }
                Ending::Retry(outcomes) => retry_command(&journal_shown, &outcomes),
            };
            eprintln!(
                "redis-ferry: interrupted after {done}; everything done so far is in the journal; run `{again}` to continue"
            );
            Exit::Interrupted
        }
        Stop::Failed(error) => {
            let text = format!("{error:#}");
            if matches!(ending, Ending::Job) {
                journal.set_job_state(JobState::Failed, Some(&text))?;
            }
            journal.end_run(Exit::CouldNotRun.code())?;
            let again = match &ending {
                Ending::Job => format!("redis-ferry resume --journal {journal_shown}"),
                Ending::Retry(outcomes) => retry_command(&journal_shown, outcomes),
            };
            bail!(
                "{text}; the job stopped after {done}; fix the cause, then run `{again}` to continue"
            );
        }
    };
    journal.end_run(exit.code())?;
    Ok(exit)
}
