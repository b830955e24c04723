//! A migration job from start to end: `run` starts one, `resume` continues
//! it from the journal's cursors, `retry` copies chosen keys again.
//!
//! This module decides *what* to copy (which databases and nodes, from
//! which cursor), checks the servers before anything is written (not the
//! same server, not a read-only replica, versions that support the chosen
//! options), runs the [`pipeline`](crate::pipeline) and turns how it ended
//! into the job's state and the exit code.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result, bail};

use crate::capabilities::{Capabilities, restore_plan};
use crate::clock::{now_ms, short_duration};
use crate::copy::{CopySettings, KeyBatch};
use crate::endpoint::{Endpoint, Role};
use crate::exit::Exit;
use crate::hint;
use crate::interrupt::Shutdown;
use crate::journal::{CursorRecord, JobRecord, JobState, Journal, JournalReader};
use crate::log;
use crate::options::{CopyOptions, JournalKeys};
use crate::outcome::{Outcome, OutcomeCounts};
use crate::output;
use crate::pipeline::{self, Lister, PipelineSettings, Stop};
use crate::progress::{Progress, ProgressSettings, StartLine};
use crate::rate::RateLimiter;
use crate::scan::{Listed, ScanTask, scan_task};
use crate::side::{NodeIdentity, STANDALONE_NODE, Side};

/// Settings of this invocation (not stored in the journal).
#[derive(Debug, Clone)]
pub struct Launch {
    pub journal: PathBuf,
    pub progress: ProgressSettings,
    pub shutdown: Shutdown,
    /// `--rate` given to `resume` or `retry`: replaces the job's own rate
    /// for this run only (`Some(None)`: no limit). Not stored, so a later
    /// command without `--rate` runs at the job's own rate again.
    pub rate: Option<Option<u64>>,
    /// `run --existing` was given explicitly: a target that already holds
    /// keys is accepted (see [`crate::preflight::check_target_holds_keys`]).
    pub existing_explicit: bool,
}

impl Launch {
    /// A launch with nothing shown and no overrides (library callers).
    pub fn new(journal: PathBuf, shutdown: Shutdown) -> Launch {
        Launch {
            journal,
            progress: ProgressSettings::off(),
            shutdown,
            rate: None,
            existing_explicit: false,
        }
    }

    fn journal_shown(&self) -> String {
        self.journal.display().to_string()
    }

    /// The job's options with this run's `--rate`, said out loud.
    fn options_for_this_run(&self, job_options: &CopyOptions) -> CopyOptions {
        let Some(rate) = self.rate else {
            return job_options.clone();
        };
        let shown = |rate: Option<u64>| match rate {
            Some(rate) => format!("{rate} keys/s"),
            None => "no limit".to_string(),
        };
        crate::log::info(format!(
            "--rate: {} for this run (the job's own: {}); a later command without --rate uses the job's own again",
            shown(rate),
            shown(job_options.rate)
        ));
        CopyOptions {
            rate,
            ..job_options.clone()
        }
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
    let (mut source_side, mut target_side) =
        connect_sides(&source, &target, &options, &launch.shutdown)?;
    crate::shard::check_source(&source_side, &options)?;
    let new_job = crate::preflight::NewJob {
        existing_explicit: launch.existing_explicit,
        dry_run: false,
    };
    let selection =
        crate::preflight::before_new_job(&mut source_side, &mut target_side, &options, new_job)?;
    let cursors = plan_cursors(&mut source_side, &options)?;
    let target_nodes = serde_json::to_string(&target_side.identity()?)?;
    note_journal_keys(&options);
    let mut journal = Journal::create(&launch.journal)?;
    let job = JobRecord {
        source_tls_ca: source.tls_ca.clone(),
        target_tls_ca: target.tls_ca.clone(),
        source_nodes: cluster_nodes_json(&source_side)?,
        target_nodes: Some(target_nodes),
        ..JobRecord::new(
            JobState::Running,
            &source.redacted(),
            &target.redacted(),
            options.clone(),
        )
    };
    journal.insert_job(&job, &cursors)?;
    let exit = execute_scan(
        &mut journal,
        source_side,
        target_side,
        &options,
        launch,
        "run",
    )?;
    let keys_seen: u64 = journal.counts()?.values().map(|c| c.total()).sum();
    selection.after_the_job(exit, keys_seen);
    Ok(exit)
}

/// `redis-ferry run --or-resume`: continues the journal's job when it is
/// the job this command line describes (as `resume` would, with its exit
/// codes), starts it when the journal holds none, and refuses a journal
/// whose job is another, leaving it unchanged.
pub fn start_or_resume(
    source: Endpoint,
    target: Endpoint,
    options: CopyOptions,
    launch: &Launch,
) -> Result<Exit> {
    let Some(job) = Journal::existing_job(&launch.journal)? else {
        return start(source, target, options, launch);
    };
    let differences = crate::or_resume::differences(&job, &source, &target, &options);
    if !differences.is_empty() {
        bail!(
            "journal {} holds another job than this command line asks for ({}); --or-resume only continues the same job: pass another --journal for a new job, or run `{}` to continue the journal's job with its own settings",
            launch.journal_shown(),
            differences.join("; "),
            hint::command("resume", &launch.journal, "")
        );
    }
    // As `status` shows it: a job recorded running that no process holds
    // was interrupted (killed).
    let state = match job.state {
        JobState::Running if !crate::journal::is_locked(&launch.journal) => JobState::Interrupted,
        state => state,
    };
    crate::log::info(format!(
        "journal {} already holds this job ({}, started {}): continuing it (--or-resume)",
        launch.journal_shown(),
        state.as_str(),
        crate::clock::rfc3339(job.started_at)
    ));
    // A --rate other than the job's applies to this run, as `resume --rate`.
    let launch = Launch {
        rate: launch
            .rate
            .or((options.rate != job.options.rate).then_some(options.rate)),
        ..launch.clone()
    };
    resume(&launch, Some(source), Some(target))
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
        say(&format!(
            "the job in {} already completed at {}; nothing to resume (`{}` shows the result)",
            launch.journal_shown(),
            job.finished_at
                .map(crate::clock::rfc3339)
                .unwrap_or_default(),
            hint::command("report", &launch.journal, "")
        ));
        return Ok(Exit::Success);
    }
    let (source, target) = job_endpoints(&journal, &job, source_override, target_override)?;
    let options = launch.options_for_this_run(&job.options);
    let (mut source_side, mut target_side) =
        connect_sides(&source, &target, &options, &launch.shutdown)?;
    if let Some(change) = target_changed(&journal, &mut target_side)? {
        log::warn(format!("{change}; so every key is copied again"));
        journal.restart_all_cursors()?;
    }
    revalidate_cursors(&mut journal, &mut source_side, &options)?;
    execute_scan(
        &mut journal,
        source_side,
        target_side,
        &options,
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
    let options = launch.options_for_this_run(&job.options);
    let (source_side, mut target_side) =
        connect_sides(&source, &target, &options, &launch.shutdown)?;
    if let Some(change) = target_changed(&journal, &mut target_side)? {
        journal.restart_all_cursors()?;
        journal.set_job_state(JobState::Interrupted, Some(&change))?;
        bail!(
            "{change}, so keys the journal records as copied may be gone; the job is reopened: run `{}` to copy every key again, then retry what still fails",
            hint::command("resume", &launch.journal, "")
        );
    }
    let mut source_side = source_side;
    let settings = pipeline_settings(&journal, &options, &mut source_side, &mut target_side)?;
    let counts = journal.counts()?;
    let total: u64 = counts
        .values()
        .map(|c| outcomes.iter().map(|o| c.get(*o)).sum::<u64>())
        .sum();
    journal.begin_run("retry")?;
    let names: Vec<&str> = outcomes.iter().map(|o| o.as_str()).collect();
    crate::progress::log_start(&StartLine {
        command: "retry".into(),
        source: source.redacted(),
        target: target.redacted(),
        dbs: counts
            .iter()
            .filter(|(_, c)| outcomes.iter().any(|o| c.get(*o) > 0))
            .map(|(db, _)| (*db, options.target_db(*db)))
            .collect(),
        keys_expected: Some(total),
        selection: Some(format!(
            "keys whose latest outcome is {}",
            names.join(" or ")
        )),
        journal: Some(launch.journal_shown()),
        ..StartLine::default()
    });
    let mut progress = Progress::new(launch.progress, Some(total), 0);
    let lister = retry_lister(
        launch.journal.clone(),
        outcomes.clone(),
        options.clone(),
        launch.shutdown.clone(),
    );
    let stop = pipeline::run(
        vec![lister],
        &source_side,
        &target_side,
        settings,
        &mut journal,
        &launch.shutdown,
        &mut progress,
    );
    progress.finish();
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
            crate::log::info(format!(
                "using {role} {} instead of {} recorded in the journal",
                given.redacted(),
                stored.redacted()
            ));
            let ca = given.tls_ca.clone().or(stored.tls_ca);
            given.with_tls_ca(ca)
        }
        None => stored,
    };
    Ok(endpoint.with_outside_password())
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
        crate::log::info(
            "note: --source-replicas only applies to a cluster source; reading the server given",
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
        crate::log::info(format!("scanning again: {reason}"));
    }
    Ok(())
}

/// Runs the scan of every unfinished cursor, pass after pass until the
/// source is provably covered (a cluster whose slots moved during a pass
/// has some nodes scanned again; see [`crate::coverage`]). A job that
/// follows the source afterwards goes on in [`crate::follow::session`].
fn execute_scan(
    journal: &mut Journal,
    mut source: Side,
    mut target: Side,
    options: &CopyOptions,
    launch: &Launch,
    command: &str,
) -> Result<Exit> {
    if options.follow {
        return crate::follow::session::run(journal, source, target, options, launch, command);
    }
    if let Some(shard) = &options.shard {
        crate::metrics::registry().set_shard(shard.index, shard.count);
    }
    let mut progress = begin_scan(journal, &source, &target, launch, command)?;
    let settings = pipeline_settings(journal, options, &mut source, &mut target)?;
    let stop = scan_passes(
        journal,
        &mut source,
        &mut target,
        options,
        launch,
        &settings,
        &mut progress,
        None,
    );
    progress.finish();
    if let Some(shard) = &options.shard {
        crate::shard::log_scan_overhead(shard, progress.counts().total());
    }
    let finished = matches!(stop, Stop::Finished);
    let exit = finish(journal, stop, &progress, launch, Ending::Job)?;
    if let Some(shard) = options.shard.as_ref().filter(|_| finished) {
        say(&crate::shard::whole_job_hint(shard, &launch.journal));
    }
    Ok(exit)
}

/// Marks the run's start in the journal and the log; returns its progress.
pub(crate) fn begin_scan(
    journal: &mut Journal,
    source: &Side,
    target: &Side,
    launch: &Launch,
    command: &str,
) -> Result<Progress> {
    journal.begin_run(command)?;
    journal.set_job_state(JobState::Running, None)?;
    let cursors = journal.cursors()?;
    let total: u64 = cursors.iter().filter_map(|c| c.keys_expected).sum();
    let done_before: u64 = cursors.iter().map(|c| c.keys_scanned).sum();
    let shard = journal.job()?.and_then(|job| job.options.shard);
    crate::progress::log_start(&StartLine {
        selection: shard.as_ref().map(crate::shard::selection_text),
        ..scan_start_line(
            command,
            source,
            target,
            &cursors,
            total.max(done_before),
            done_before,
            launch,
        )
    });
    Ok(Progress::new(
        launch.progress,
        Some(total.max(done_before)),
        done_before,
    ))
}

/// A lister that works while the scan does (following's changes); it is
/// told through the count when the scan's listers are done.
pub(crate) type Alongside<'a> = &'a dyn Fn(Arc<AtomicUsize>) -> Lister;

/// The scan's passes, until the source is covered or the job stops.
#[allow(clippy::too_many_arguments)]
pub(crate) fn scan_passes(
    journal: &mut Journal,
    source: &mut Side,
    target: &mut Side,
    options: &CopyOptions,
    launch: &Launch,
    settings: &PipelineSettings,
    progress: &mut Progress,
    alongside: Option<Alongside<'_>>,
) -> Stop {
    let limiter = RateLimiter::new(options.rate);
    loop {
        let listers = match scan_listers(journal, source, options, &limiter, &launch.shutdown) {
            Ok(listers) => listers,
            Err(error) => return Stop::Failed(error),
        };
        let listers = match alongside {
            None => listers,
            Some(make) => {
                let scanning = Arc::new(AtomicUsize::new(listers.len()));
                let mut all: Vec<Lister> = listers
                    .into_iter()
                    .map(|lister| counted(lister, Arc::clone(&scanning)))
                    .collect();
                all.push(make(scanning));
                all
            }
        };
        let stop = pipeline::run(
            listers,
            source,
            target,
            settings.clone(),
            journal,
            &launch.shutdown,
            progress,
        );
        if !matches!(stop, Stop::Finished) {
            return stop;
        }
        match target_changed(journal, target) {
            Err(error) => return Stop::Failed(error),
            Ok(Some(change)) => {
                log::warn(format!("{change}; so every key is copied again"));
                if let Err(error) = journal.restart_all_cursors() {
                    return Stop::Failed(error);
                }
                continue;
            }
            Ok(None) => {}
        }
        match crate::coverage::reconcile(journal, source, options) {
            Err(error) => return Stop::Failed(error),
            Ok(_) if launch.shutdown.requested() => return Stop::Interrupted,
            Ok(reasons) if reasons.is_empty() => return Stop::Finished,
            Ok(reasons) => {
                for reason in reasons {
                    crate::log::info(format!("scanning again: {reason}"));
                }
            }
        }
    }
}

/// `lister`, counting itself out of `remaining` however it ends.
pub(crate) fn counted(lister: Lister, remaining: Arc<AtomicUsize>) -> Lister {
    Box::new(move |emit: &mut dyn FnMut(Listed) -> bool| {
        let ended = lister(emit);
        remaining.fetch_sub(1, Ordering::SeqCst);
        ended
    })
}

/// Whether the target's primaries are still the server processes the job
/// recorded (by run_id). If not, the target restarted or failed over and
/// may have lost keys the journal records as copied: the new identity is
/// recorded and the change described.
pub(crate) fn target_changed(journal: &Journal, target: &mut Side) -> Result<Option<String>> {
    // A failover moves primaries; read where they are now.
    let _ = target.refresh_topology();
    let now = target.identity()?;
    let now_text = serde_json::to_string(&now)?;
    let recorded = journal.job()?.and_then(|job| job.target_nodes);
    let Some(recorded) = recorded else {
        // A journal from before identities were recorded: start now.
        journal.set_target_nodes(&now_text)?;
        return Ok(None);
    };
    let then: Vec<NodeIdentity> = serde_json::from_str(&recorded).unwrap_or_default();
    let run_ids = |nodes: &[NodeIdentity]| {
        let mut ids: Vec<String> = nodes.iter().map(|n| n.run_id.clone()).collect();
        ids.sort();
        ids
    };
    if run_ids(&then) == run_ids(&now) {
        return Ok(None);
    }
    journal.set_target_nodes(&now_text)?;
    let change = if target.is_cluster() {
        "the target cluster's primaries changed since the job recorded them (a restart or a failover)".to_string()
    } else {
        format!(
            "target {} restarted since the job recorded it (its run_id changed)",
            target.endpoint.redacted()
        )
    };
    Ok(Some(change))
}

/// How many copy workers a job runs: each keeps one batch in flight (its
/// fence, read and write take several round trips and the hold), so many
/// hide each other's waits; a large cluster source gets more (with
/// `--shard`, counted over the primaries that serve this worker's slots).
/// With the change feed fencing the source, batches in flight cost the
/// source nothing more, and more of them pay: 65,000 keys/s with 26
/// workers, 73,600 with 48, 71,300 with 64 (3,000,000 keys, one machine).
/// With `WATCH` on the source, each batch in flight makes every `WATCH`
/// there dearer (see [`crate::copy::feed`]), so fewer.
fn worker_count(source: &Side, options: &CopyOptions, source_fed: bool) -> usize {
    let own = options
        .shard
        .as_ref()
        .map(crate::shard::ShardSpec::slot_set);
    let primaries = source.topology().map_or(1, |t| {
        t.primaries()
            .iter()
            .filter(|node| own.as_ref().is_none_or(|own| own.overlaps(&node.slots)))
            .count()
    }) as u64;
    // A batch is held open for the fence's hold: more of them in flight.
    let holding = if options.no_fence {
        0
    } else {
        2 * options.fence_hold_ms
    };
    let base = if source_fed {
        (16 * primaries).clamp(40, 64)
    } else {
        (4 * primaries).clamp(16, 48)
    };
    std::env::var("REDIS_FERRY_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(base as usize + holding.min(48) as usize)
}

/// Keys per batch. A fenced batch is one transaction, and WATCH costs the
/// server more per key the more keys one connection watches (Redis 7.0
/// looks through the connection's watched keys on every WATCH: 1,000 keys
/// cost 3.5 times the copy itself, 128 keys a third): so fenced batches are
/// small and many.
fn batch_keys(options: &CopyOptions) -> usize {
    if options.no_fence {
        options.scan_count as usize
    } else {
        std::env::var("REDIS_FERRY_BATCH_KEYS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(crate::copy::FENCED_BATCH_KEYS)
    }
}

/// The copy stage's settings for a job.
///
/// What each server is decides how keys are written (RESTORE, or rebuilt
/// by commands where the target cannot load the source's payloads): said
/// once, as the run starts.
pub(crate) fn pipeline_settings(
    journal: &Journal,
    options: &CopyOptions,
    source: &mut Side,
    target: &mut Side,
) -> Result<PipelineSettings> {
    // No probe DUMP on the source when it would reset a key's idle time
    // (--keep-idle), or read a primary the job was asked to spare
    // (--source-replicas): the RDB version then comes from the version.
    let source_caps = capabilities_of(source, !options.keep_idle && !options.source_replicas)?;
    let target_caps = capabilities_of(target, true)?;
    let plan = restore_plan(&source_caps, &target_caps, options.restore_mode);
    log::info(&plan.reason);
    let job_label = journal
        .job()?
        .map(|job| job.started_at.to_string())
        .unwrap_or_default();
    let feed = change_feed(source, options);
    let workers = worker_count(source, options, feed.is_some());
    Ok(PipelineSettings {
        copy: CopySettings {
            existing: options.existing,
            ttl: options.ttl,
            fence: !options.no_fence,
            hold: std::time::Duration::from_millis(options.fence_hold_ms),
            method: plan.method,
            big_key_threshold: options.big_key_threshold,
            keep_idle: options.keep_idle.then_some(source_caps.eviction_clock),
            source: source_caps,
            target: target_caps,
            job_label,
            transient_budget: options.reconnect_budget(),
            feed,
        },
        journal_keys: options.journal_keys,
        workers,
        on_journal: None,
    })
}

/// The source fence's change feed (see [`crate::copy::feed`]): on the
/// nodes the job reads (the primaries; replicas with `--source-replicas`
/// are subscribed as they are first read). `REDIS_FERRY_WATCH_FENCE` (any
/// value) fences the source with `WATCH` instead, for the benchmark's
/// `ferry-watch` contender.
fn change_feed(
    source: &mut Side,
    options: &CopyOptions,
) -> Option<std::sync::Arc<crate::copy::feed::ChangeFeed>> {
    if options.no_fence || std::env::var_os("REDIS_FERRY_WATCH_FENCE").is_some() {
        return None;
    }
    let addresses = if options.source_replicas {
        Vec::new()
    } else {
        source.primary_addresses()
    };
    crate::copy::feed::ChangeFeed::start(source, &addresses, options.notify_configured)
}

/// What the server a side's URL names is (a cluster: its seed node; the
/// nodes of one cluster run one version).
fn capabilities_of(side: &mut Side, probe: bool) -> Result<Capabilities> {
    let address = side.seed_address().to_string();
    Capabilities::detect_with(side.connection(&address)?, probe).with_context(|| {
        format!(
            "cannot tell what {} {} is",
            side.role(),
            side.endpoint.redacted()
        )
    })
}

/// What a run or resume starts with: endpoints, databases, keys expected.
fn scan_start_line(
    command: &str,
    source: &Side,
    target: &Side,
    cursors: &[CursorRecord],
    keys_expected: u64,
    keys_done_before: u64,
    launch: &Launch,
) -> StartLine {
    let mut dbs: Vec<(i64, i64)> = cursors.iter().map(|c| (c.db, c.target_db)).collect();
    dbs.sort_unstable();
    dbs.dedup();
    StartLine {
        command: command.to_string(),
        source: source.endpoint.redacted(),
        target: target.endpoint.redacted(),
        dbs,
        keys_expected: Some(keys_expected),
        keys_done_before,
        selection: None,
        journal: Some(launch.journal_shown()),
    }
}

/// One lister per source node, walking that node's unfinished databases in
/// order (so a node's batches are journaled in scan order).
fn scan_listers(
    journal: &Journal,
    source: &Side,
    options: &CopyOptions,
    limiter: &RateLimiter,
    shutdown: &Shutdown,
) -> Result<Vec<Lister>> {
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
            scan_lister(
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

fn scan_lister(
    mut source: Side,
    tasks: Vec<ScanTask>,
    options: CopyOptions,
    limiter: RateLimiter,
    shutdown: Shutdown,
) -> Lister {
    Box::new(move |emit: &mut dyn FnMut(Listed) -> bool| {
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
                batch_keys(&options),
                &mut *emit,
            )? {
                return Ok(false);
            }
        }
        Ok(true)
    })
}

/// Why a mismatched key that `retry` finds gone from the source is deleted
/// from the target: verify found it only there (`--extra`), or the source
/// lost it since.
const MISMATCH_GONE: &str = "not on the source when retried (verify found it only on the target, or it was deleted or expired on the source since): deleted from the target";

/// Pages through the journal's keys with the chosen outcomes, a batch per
/// source database and outcome; `retry`'s lister.
pub(crate) fn retry_lister(
    journal_path: PathBuf,
    outcomes: Vec<Outcome>,
    options: CopyOptions,
    shutdown: Shutdown,
) -> Lister {
    Box::new(move |emit: &mut dyn FnMut(Listed) -> bool| {
        let journal = JournalReader::open(&journal_path)?;
        let limiter = RateLimiter::new(options.rate);
        let page_size = batch_keys(&options).min(options.scan_count.max(1) as usize);
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
            let mut by_db: BTreeMap<(i64, Outcome), Vec<Vec<u8>>> = BTreeMap::new();
            for paged in page {
                by_db
                    .entry((paged.db, paged.position.outcome()))
                    .or_default()
                    .push(paged.key);
            }
            for ((db, outcome), keys) in by_db {
                limiter.acquire(keys.len());
                let listed = Listed {
                    batch: KeyBatch {
                        db,
                        target_db: options.target_db(db),
                        keys,
                        source_address: None,
                        gone_note: (outcome == Outcome::Mismatch).then_some(MISMATCH_GONE),
                        sizes: None,
                    },
                    checkpoint: None,
                    journaled: None,
                };
                if !emit(listed) {
                    return Ok(false);
                }
            }
        }
    })
}

/// The command that continues a retry: the same outcomes again (only the
/// keys not yet copied still have them).
fn retry_command(journal: &Path, outcomes: &str) -> String {
    let extra = if outcomes == "failed" {
        String::new()
    } else {
        format!("--outcome {outcomes}")
    };
    hint::command("retry", journal, &extra)
}

pub(crate) enum Ending {
    Job,
    Retry(String),
}

/// Records how the pipeline ended, says so, and picks the exit code.
///
/// Key counts come from the journal (distinct keys by latest outcome, as
/// `status` shows them): a key copied twice in this run (a rescan) is one
/// key. The rate is this run's own work.
pub(crate) fn finish(
    journal: &mut Journal,
    stop: Stop,
    progress: &Progress,
    launch: &Launch,
    ending: Ending,
) -> Result<Exit> {
    let job = journal.job()?.context("the journal holds no job")?;
    let passwords = hint::passwords_again(&job.source_url, &job.target_url);
    let path = launch.journal.as_path();
    let continue_with = match &ending {
        Ending::Job => hint::command("resume", path, ""),
        Ending::Retry(outcomes) => retry_command(path, outcomes),
    };
    let exit = match stop {
        Stop::Finished => {
            if matches!(ending, Ending::Job) {
                journal.set_job_state(JobState::Completed, None)?;
            }
            let job_counts = journal_totals(journal)?;
            let line = match &ending {
                Ending::Job => format!(
                    "job completed: {}; this run {}",
                    counts_text(&job_counts),
                    run_text(progress)
                ),
                // A retry reads each chosen key once, so its own counts
                // are keys too.
                Ending::Retry(outcomes) => {
                    let counts = progress.counts();
                    format!(
                        "retry of {outcomes} keys completed: {} in {} (restored {}, expired {}, skipped {}, failed {}), {:.0} keys/s; the job now counts {}",
                        output::count(counts.total(), "key"),
                        short_duration(progress.elapsed()),
                        counts.restored,
                        counts.expired,
                        counts.skipped,
                        counts.failed,
                        progress.rate(),
                        counts_text(&job_counts)
                    )
                }
            };
            say(&line);
            // A retry only touches keys already journaled: on a job whose
            // scan has not finished, the keys not scanned yet still wait.
            if let Ending::Retry(_) = ending
                && job.state != JobState::Completed
            {
                say(&format!(
                    "note: the job itself is {}, not finished; run `{}` to copy the keys not scanned yet{passwords}",
                    job.state.as_str(),
                    hint::command("resume", path, "")
                ));
            }
            if job_counts.failed > 0 {
                say(&format!(
                    "{} failed; see `{}`, fix the cause, then run `{}`{passwords}",
                    output::count(job_counts.failed, "key"),
                    hint::command("report", path, "--format csv"),
                    hint::command("retry", path, "")
                ));
                Exit::KeysFailed
            } else {
                say(&format!(
                    "see `{}` for the audit",
                    hint::command("report", path, "")
                ));
                Exit::Success
            }
        }
        Stop::Interrupted => {
            if matches!(ending, Ending::Job) {
                journal.set_job_state(JobState::Interrupted, None)?;
            }
            crate::log::info(format!(
                "interrupted; this run {}; everything done so far is in the journal; run `{continue_with}` to continue{passwords}",
                run_text(progress)
            ));
            Exit::Interrupted
        }
        Stop::Failed(error) => {
            let text = format!("{error:#}");
            if matches!(ending, Ending::Job) {
                journal.set_job_state(JobState::Failed, Some(&text))?;
            }
            journal.end_run(Exit::CouldNotRun.code())?;
            bail!(
                "{text}; the job stopped (this run {}); fix the cause, then run `{continue_with}` to continue{passwords}",
                run_text(progress)
            );
        }
    };
    journal.end_run(exit.code())?;
    Ok(exit)
}

/// The journal's distinct keys per latest outcome, over every database.
fn journal_totals(journal: &Journal) -> Result<OutcomeCounts> {
    let mut totals = OutcomeCounts::default();
    for counts in journal.counts()?.values() {
        totals.merge(counts);
    }
    Ok(totals)
}

/// "300000 keys (restored 299990, expired 10, skipped 0, failed 0)".
fn counts_text(counts: &OutcomeCounts) -> String {
    let mismatch = if counts.mismatch > 0 {
        format!(", mismatch {}", counts.mismatch)
    } else {
        String::new()
    };
    format!(
        "{} (restored {}, expired {}, skipped {}, failed {}{mismatch})",
        output::count(counts.total(), "key"),
        counts.restored,
        counts.expired,
        counts.skipped,
        counts.failed
    )
}

/// "processed 600462 keys in 12s, 50038 keys/s": this process's own work
/// (a key scanned twice is processed twice).
fn run_text(progress: &Progress) -> String {
    format!(
        "processed {} in {}, {:.0} keys/s",
        output::count(progress.counts().total(), "key"),
        short_duration(progress.elapsed()),
        progress.rate()
    )
}

/// A line of the job's result on stdout. The job is over by now: a
/// stdout that cannot be written (a closed pipe is not even that) must not
/// turn a completed job into a failed one, so a failure is only a warning.
fn say(line: &str) {
    if let Err(error) = output::println(&format!("redis-ferry: {line}")) {
        crate::log::warn(format!("{error:#}"));
    }
}
