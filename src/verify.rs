//! `redis-ferry verify`: shows that the target holds what the source holds,
//! key by key, without writing to either server.
//!
//! Two ways in: with a job's journal ([`with_journal`]), which compares the
//! job's source and target over the job's databases, `--db-map`, `--match`
//! and `--type`, and records every differing key as outcome `mismatch` (so
//! `retry --outcome mismatch` repairs exactly those); or with two URLs
//! ([`compare_servers`]), same database numbers, nothing recorded.
//!
//! How the work is laid out:
//! - [`walk`]: which keys (SCAN of every primary and database in scope, or
//!   a RANDOMKEY sample for `--sample`).
//! - [`work`]: one thread per source primary (and per target primary for
//!   `--extra`), comparing batch by batch, rechecking differing keys once.
//! - [`compare`]: one batch: TYPE/PTTL/MEMORY USAGE, then DUMP, then
//!   [`whole`] values or [`chunked`] reads for big ones.
//! - [`report`]: counts per kind of difference, the first differing keys.
//! - this file: the plan, the collector (journal, progress) and the exit.
//!
//! Read-only on both servers: only SCAN, RANDOMKEY, TYPE, PTTL, MEMORY
//! USAGE, DUMP, EXISTS and the read commands of each type are sent.

pub mod chunked;
pub mod compare;
pub mod glob;
pub mod reply;
pub mod report;
pub mod walk;
pub mod whole;
pub mod work;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::endpoint::{Endpoint, Role};
use crate::exit::{Exit, usage_error};
use crate::interrupt::Shutdown;
use crate::journal::{JobState, Journal};
use crate::options::{CopyOptions, JournalKeys};
use crate::outcome::{KeyResult, Outcome};
use crate::progress::{ProgressSettings, StartLine};
use crate::rate::RateLimiter;
use crate::side::Side;

use compare::{CompareSettings, Verdict};
use glob::Glob;
use reply::{Dbs, Sides};
use report::{JournalNote, Report, VerifyProgress};
use walk::{KeyFilter, quotas};
use work::{Batch, COMPARERS_PER_NODE, Checked, Direction, Place, WorkContext};

/// How long a lost connection may take to come back without a journal
/// (with one, the job's `--reconnect-timeout` applies).
const RECONNECT_BUDGET: Duration = Duration::from_secs(60);

/// The settings of one verify, from its command line.
#[derive(Debug, Clone)]
pub struct VerifySettings {
    /// `--sample N`: a random sample of about N keys instead of every key.
    pub sample: Option<u64>,
    /// `--ttl-tolerance MS`.
    pub ttl_tolerance_ms: u64,
    /// `--match PATTERN` (narrows a job's own pattern).
    pub match_pattern: Option<String>,
    /// `--extra`: also look for keys that only the target has.
    pub extra: bool,
    /// How many differing keys the summary lists.
    pub show: usize,
    /// SCAN COUNT (default: the job's, or 1000).
    pub scan_count: Option<u32>,
    pub progress: ProgressSettings,
    /// `--rate N`: at most N keys compared per second.
    pub rate: Option<u64>,
    /// Compare only the target's keys (with `extra`): a following job's
    /// catch-up after a flush on the source.
    pub target_only: bool,
    /// No start line (a following job's catch-up says what it does).
    pub quiet: bool,
}

impl Default for VerifySettings {
    fn default() -> Self {
        VerifySettings {
            sample: None,
            ttl_tolerance_ms: 5000,
            match_pattern: None,
            extra: false,
            show: 20,
            scan_count: None,
            progress: ProgressSettings::off(),
            rate: None,
            target_only: false,
            quiet: false,
        }
    }
}

/// What is compared: database pairs and the keys in them.
#[derive(Debug, Clone)]
pub struct Scope {
    pub dbs: Vec<Dbs>,
    pub filter: KeyFilter,
}

/// `verify --journal PATH`: compares the job's source and target and
/// records differences as `mismatch`. Prints the summary; returns the exit.
pub fn with_journal(
    path: &Path,
    source_override: Option<Endpoint>,
    target_override: Option<Endpoint>,
    settings: &VerifySettings,
    shutdown: &Shutdown,
) -> Result<Exit> {
    let mut journal = Journal::open_to_drive(path)?;
    let job = journal.job()?.context("the journal holds no job")?;
    if job.state != JobState::Completed {
        crate::log::info(format!(
            "note: the job in {} is {}, not completed: keys it has not copied yet show as missing on the target",
            path.display(),
            job.state.as_str()
        ));
    }
    let (source, target) = crate::job::endpoints_of(&job, source_override, target_override)?;
    let mut sides = connect(&source, &target, job.options.reconnect_budget(), shutdown)?;
    let scope = job_scope(&job.options, &mut sides, settings)?;
    journal.begin_run("verify")?;
    let mut recorder = Recorder::new(&mut journal, job.options.journal_keys)?;
    let result = verify(sides, &scope, settings, Some(&mut recorder), shutdown);
    let note = recorder.note(path);
    let exit = match result {
        Ok(mut report) => {
            report.journal = Some(note);
            // The runs table counts keys compared, not differences recorded.
            journal.set_run_keys(report.checked + report.target_checked)?;
            crate::output::print(&report.to_text())?;
            finish_message(&report);
            report.exit()
        }
        Err(error) => {
            journal.end_run(Exit::CouldNotRun.code())?;
            return Err(error);
        }
    };
    journal.end_run(exit.code())?;
    Ok(exit)
}

/// What a following job's catch-up compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatchUpScope {
    /// Every key, both ways: changes may have been missed.
    Everything,
    /// The target's keys only: a flush left keys the source lost.
    TargetOnly,
}

/// A following job's catch-up: compares the job's source and target
/// (read-only, as `verify --extra` does) and records every difference as
/// `mismatch` in `journal`, for the copy to repair. Returns how many keys
/// differ, or `None` when interrupted.
pub fn catch_up(
    journal: &mut Journal,
    source: &Side,
    target: &Side,
    options: &CopyOptions,
    scope: CatchUpScope,
    shutdown: &Shutdown,
) -> Result<Option<u64>> {
    let settings = VerifySettings {
        extra: true,
        target_only: scope == CatchUpScope::TargetOnly,
        quiet: true,
        progress: crate::progress::ProgressSettings::off(),
        ..VerifySettings::default()
    };
    let mut sides = Sides {
        source: source.fork(),
        target: target.fork(),
    };
    let scope = job_scope(options, &mut sides, &settings)?;
    let mut recorder = Recorder::new(journal, options.journal_keys)?;
    let report = verify(sides, &scope, &settings, Some(&mut recorder), shutdown)?;
    Ok((!report.interrupted).then_some(recorder.recorded))
}

/// `verify --source URL --target URL`: compares two servers, records
/// nothing. Prints the summary; returns the exit.
pub fn without_journal(
    source: &Endpoint,
    target: &Endpoint,
    settings: &VerifySettings,
    shutdown: &Shutdown,
) -> Result<Exit> {
    let report = compare_servers(source, target, settings, shutdown)?;
    crate::output::print(&report.to_text())?;
    finish_message(&report);
    Ok(report.exit())
}

/// Compares two servers without a journal and returns what was found
/// (the library entry point; prints nothing on stdout).
pub fn compare_servers(
    source: &Endpoint,
    target: &Endpoint,
    settings: &VerifySettings,
    shutdown: &Shutdown,
) -> Result<Report> {
    let mut sides = connect(source, target, RECONNECT_BUDGET, shutdown)?;
    let scope = url_scope(source, target, &mut sides, settings)?;
    verify(sides, &scope, settings, None, shutdown)
}

fn finish_message(report: &Report) {
    if report.interrupted {
        crate::log::info(format!(
            "verify interrupted after {} keys; the summary covers only those",
            report.checked
        ));
    }
}

fn connect(
    source: &Endpoint,
    target: &Endpoint,
    budget: Duration,
    shutdown: &Shutdown,
) -> Result<Sides> {
    let source_side = Side::connect(source, budget, shutdown)?;
    let target_side = Side::connect(target, budget, shutdown)?;
    if source_side.is_same_deployment(&target_side) {
        bail!(
            "source {} and target {} are the same server (same run_id); nothing to compare",
            source.redacted(),
            target.redacted()
        );
    }
    Ok(Sides {
        source: source_side,
        target: target_side,
    })
}

/// The job's databases, mapping, pattern and type; `--match` narrows the
/// pattern (SCAN takes one, the other is matched here).
fn job_scope(options: &CopyOptions, sides: &mut Sides, settings: &VerifySettings) -> Result<Scope> {
    // The databases as they are now, not as the sides found them when they
    // connected: a following job's sides are hours old, and a key the
    // application moved into a database empty at the start (MOVE, SELECT)
    // is compared too.
    for side in [&mut sides.source, &mut sides.target] {
        if !side.is_cluster() {
            side.info.keyspace = side.key_counts()?;
        }
    }
    let mut source_dbs: BTreeSet<i64> = crate::job::source_databases(&sides.source, options)
        .into_iter()
        .collect();
    if settings.extra && !sides.source.is_cluster() && options.dbs.is_empty() {
        // A database empty on the source still holds extra keys on the
        // target when the job copied every database.
        for &target_db in sides.target.info.keyspace.keys() {
            source_dbs.extend(sources_of(&options.db_map, target_db));
        }
    }
    let dbs: Vec<Dbs> = source_dbs
        .into_iter()
        .map(|db| Dbs {
            source: db,
            target: options.target_db(db),
        })
        .collect();
    let patterns = [
        settings.match_pattern.clone(),
        options.match_pattern.clone(),
    ];
    let filter = KeyFilter {
        scan_match: patterns.iter().flatten().next().cloned(),
        globs: patterns.iter().flatten().map(|p| Glob::new(p)).collect(),
        key_type: options.key_type.clone(),
        scan_count: settings.scan_count.unwrap_or(options.scan_count),
        slots: options
            .shard
            .as_ref()
            .map(|shard| std::sync::Arc::new(shard.slot_set())),
    };
    check_cluster_target(sides, &dbs)?;
    Ok(Scope { dbs, filter })
}

/// Source databases whose keys a job copied into `target_db`.
fn sources_of(db_map: &BTreeMap<i64, i64>, target_db: i64) -> Vec<i64> {
    let mut sources: Vec<i64> = db_map
        .iter()
        .filter(|(_, to)| **to == target_db)
        .map(|(from, _)| *from)
        .collect();
    if !db_map.contains_key(&target_db) {
        sources.push(target_db);
    }
    sources
}

/// Without a journal: the same database numbers on both sides (a `/db` in
/// a URL picks one; a cluster target has only db 0).
fn url_scope(
    source: &Endpoint,
    target: &Endpoint,
    sides: &mut Sides,
    settings: &VerifySettings,
) -> Result<Scope> {
    let source_dbs: BTreeSet<i64> = match source.db {
        Some(db) if sides.source.is_cluster() && db != 0 => {
            return Err(usage_error(
                "the source is a cluster, which has only db 0; drop the /db from --source",
            ));
        }
        Some(db) => BTreeSet::from([db]),
        None if sides.source.is_cluster() => BTreeSet::from([0]),
        None => {
            let mut dbs: BTreeSet<i64> = sides.source.info.keyspace.keys().copied().collect();
            if settings.extra && !sides.target.is_cluster() && target.db.is_none() {
                dbs.extend(sides.target.info.keyspace.keys().copied());
            }
            dbs
        }
    };
    if let Some(target_db) = target.db
        && source_dbs.len() > 1
    {
        return Err(usage_error(format!(
            "the --target URL names db {target_db}, which only works when one source database is compared; add /N to the --source URL too"
        )));
    }
    let dbs: Vec<Dbs> = source_dbs
        .into_iter()
        .map(|db| Dbs {
            source: db,
            target: if sides.target.is_cluster() {
                0
            } else {
                target.db.unwrap_or(db)
            },
        })
        .collect();
    let filter = KeyFilter {
        scan_match: settings.match_pattern.clone(),
        globs: settings
            .match_pattern
            .iter()
            .map(|p| Glob::new(p))
            .collect(),
        key_type: None,
        scan_count: settings.scan_count.unwrap_or(1000),
        slots: None,
    };
    check_cluster_target(sides, &dbs)?;
    Ok(Scope { dbs, filter })
}

fn check_cluster_target(sides: &Sides, dbs: &[Dbs]) -> Result<()> {
    if let Some(pair) = dbs.iter().find(|pair| pair.target != 0)
        && sides.target.is_cluster()
    {
        return Err(usage_error(format!(
            "the target is a cluster, which has only db 0, and source db {} maps to db {}",
            pair.source, pair.target
        )));
    }
    Ok(())
}

/// The work, per node.
struct Plan {
    /// The places of each source primary.
    source: Vec<Vec<Place>>,
    /// The places of each target primary (`--extra`).
    target: Vec<Vec<Place>>,
    /// Keys expected to be checked (for progress), when known.
    expected: Option<u64>,
    /// The sample is smaller than the data.
    sampled: bool,
}

fn plan(sides: &mut Sides, scope: &Scope, settings: &VerifySettings) -> Result<Plan> {
    let mut places = Vec::new();
    for (address, info) in sides.source.primaries_info()? {
        for &dbs in &scope.dbs {
            let keys = info.keyspace.get(&dbs.source).copied().unwrap_or(0);
            places.push((address.clone(), Direction::SourceToTarget(dbs), keys));
        }
    }
    if settings.target_only {
        places.clear();
    }
    let counts: Vec<u64> = places.iter().map(|place| place.2).collect();
    let (source, sampled) = by_node(places, settings.sample);
    let expected = match settings.sample {
        Some(size) if sampled => Some(size),
        _ => Some(counts.iter().sum()),
    };
    let target = if settings.extra {
        target_places(sides, scope, settings)?
    } else {
        Vec::new()
    };
    Ok(Plan {
        source,
        target,
        expected,
        sampled,
    })
}

/// Places grouped per node, each with its share of a sample; and whether
/// any share is smaller than its place.
fn by_node(places: Vec<(String, Direction, u64)>, sample: Option<u64>) -> (Vec<Vec<Place>>, bool) {
    let counts: Vec<u64> = places.iter().map(|place| place.2).collect();
    let shares = match sample {
        Some(size) => quotas(&counts, size),
        None => vec![None; counts.len()],
    };
    let sampled = shares.iter().any(Option::is_some);
    let mut nodes: BTreeMap<String, Vec<Place>> = BTreeMap::new();
    for ((address, direction, _), quota) in places.into_iter().zip(shares) {
        nodes.entry(address.clone()).or_default().push(Place {
            address,
            direction,
            quota,
        });
    }
    (nodes.into_values().collect(), sampled)
}

fn target_places(
    sides: &mut Sides,
    scope: &Scope,
    settings: &VerifySettings,
) -> Result<Vec<Vec<Place>>> {
    let mut feeds: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for dbs in &scope.dbs {
        feeds.entry(dbs.target).or_default().push(dbs.source);
    }
    let mut places = Vec::new();
    for (address, info) in sides.target.primaries_info()? {
        for (&target_db, source_dbs) in &feeds {
            let keys = info.keyspace.get(&target_db).copied().unwrap_or(0);
            let direction = Direction::TargetOnly {
                target_db,
                source_dbs: source_dbs.clone(),
            };
            places.push((address.clone(), direction, keys));
        }
    }
    Ok(by_node(places, settings.sample).0)
}

/// Runs the comparison: per primary a lister thread and comparer threads;
/// their batches are collected here (journal, progress, counts).
pub fn verify(
    sides: Sides,
    scope: &Scope,
    settings: &VerifySettings,
    recorder: Option<&mut Recorder<'_>>,
    shutdown: &Shutdown,
) -> Result<Report> {
    let started = Instant::now();
    let mut sides = sides;
    let plan = plan(&mut sides, scope, settings)?;
    let compare = CompareSettings {
        ttl_tolerance_ms: i64::try_from(settings.ttl_tolerance_ms).unwrap_or(i64::MAX),
        key_type: scope.filter.key_type.clone(),
    };
    let mut report = Report {
        source: sides.source.endpoint.redacted(),
        target: sides.target.endpoint.redacted(),
        scope: describe_scope(&scope.dbs),
        show: settings.show,
        sample: settings.sample.filter(|_| plan.sampled),
        extra: settings.extra,
        ..Report::default()
    };
    // A following job's catch-up says what it does itself.
    if !settings.quiet {
        crate::progress::log_start(&StartLine {
            command: "verify".into(),
            source: report.source.clone(),
            target: report.target.clone(),
            dbs: scope
                .dbs
                .iter()
                .map(|dbs| (dbs.source, dbs.target))
                .collect(),
            keys_expected: plan.expected,
            selection: settings
                .sample
                .map(|size| format!("a sample of about {size} keys")),
            ..StartLine::default()
        });
    }
    let mut progress = VerifyProgress::new(settings.progress, plan.expected);
    // Workers stop on this flag: set on Ctrl-C and when the collector fails.
    let stop = Shutdown::new();
    let limiter = RateLimiter::new(settings.rate);
    let context = WorkContext {
        filter: &scope.filter,
        compare: &compare,
        stop: &stop,
        limiter: &limiter,
    };
    let (sender, receiver) = sync_channel::<Message>(4);
    let collected = std::thread::scope(|scope| {
        let nodes = plan.source.iter().map(|places| (places, Role::Source));
        let nodes = nodes.chain(plan.target.iter().map(|places| (places, Role::Target)));
        for (places, role) in nodes {
            let (batch_sender, batches) = sync_channel::<Batch>(COMPARERS_PER_NODE * 2);
            let batches = std::sync::Arc::new(Mutex::new(batches));
            let mut side = match role {
                Role::Source => sides.source.fork(),
                Role::Target => sides.target.fork(),
            };
            let (lister_sender, context) = (sender.clone(), &context);
            scope.spawn(move || {
                let mut hand_out = |batch| batch_sender.send(batch).is_ok();
                let listed = work::list(&mut side, places, context, &mut hand_out);
                report_failure(&lister_sender, listed);
            });
            for _ in 0..COMPARERS_PER_NODE {
                let (sender, batches, mut sides) = (sender.clone(), batches.clone(), sides.fork());
                scope.spawn(move || {
                    let mut emit = |checked| sender.send(Message::Checked(checked)).is_ok();
                    let checked = work::check(&mut sides, &batches, context, &mut emit);
                    report_failure(&sender, checked);
                });
            }
        }
        drop(sender);
        let collector = Collector {
            report: &mut report,
            recorder,
            progress: &mut progress,
            shutdown,
            stop: &stop,
            started,
        };
        collector.run(receiver)
    });
    progress.finish();
    report.elapsed = started.elapsed();
    collected?;
    report.interrupted = shutdown.requested();
    Ok(report)
}

fn describe_scope(dbs: &[Dbs]) -> String {
    let names: Vec<String> = dbs
        .iter()
        .map(|pair| {
            if pair.source == pair.target {
                pair.source.to_string()
            } else {
                format!("{}->{}", pair.source, pair.target)
            }
        })
        .collect();
    match names.len() {
        0 => "no databases hold keys".to_string(),
        1 => format!("db {}", names[0]),
        _ => format!("dbs {}", names.join(", ")),
    }
}

enum Message {
    Checked(Checked),
    Failed(anyhow::Error),
}

/// Passes a thread's error to the collector, which stops everything.
fn report_failure(sender: &SyncSender<Message>, result: Result<()>) {
    if let Err(error) = result {
        let _ = sender.send(Message::Failed(error));
    }
}

/// The caller's side of the workers' channel.
struct Collector<'a, 'j> {
    report: &'a mut Report,
    recorder: Option<&'a mut Recorder<'j>>,
    progress: &'a mut VerifyProgress,
    shutdown: &'a Shutdown,
    stop: &'a Shutdown,
    started: Instant,
}

impl Collector<'_, '_> {
    /// Takes batches until every worker is done; the first error stops them.
    fn run(mut self, receiver: Receiver<Message>) -> Result<()> {
        loop {
            if self.shutdown.requested() {
                self.stop.request();
            }
            match receiver.recv_timeout(Duration::from_millis(250)) {
                Ok(Message::Checked(checked)) => {
                    if let Err(error) = self.take(checked) {
                        self.stop.request();
                        return Err(error);
                    }
                }
                Ok(Message::Failed(error)) => {
                    self.stop.request();
                    return Err(error);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            }
            self.report.elapsed = self.started.elapsed();
            self.progress.update(self.report);
        }
    }

    fn take(&mut self, checked: Checked) -> Result<()> {
        if let Some(recorder) = self.recorder.as_deref_mut() {
            recorder.record(&checked)?;
        }
        self.report.add(&checked);
        Ok(())
    }
}

/// Writes verify's findings into the job's journal.
pub struct Recorder<'j> {
    journal: &'j mut Journal,
    journal_keys: JournalKeys,
    /// Keys whose latest outcome was `mismatch` when verify started, per
    /// source database: if they now compare equal, they are `restored`.
    earlier: HashMap<i64, HashSet<Vec<u8>>>,
    recorded: u64,
    cleared: u64,
}

impl<'j> Recorder<'j> {
    pub fn new(journal: &'j mut Journal, journal_keys: JournalKeys) -> Result<Recorder<'j>> {
        let mut earlier: HashMap<i64, HashSet<Vec<u8>>> = HashMap::new();
        let mut after = None;
        loop {
            let page = journal.keys_with_outcomes(&[Outcome::Mismatch], after, 10_000)?;
            let Some(last) = page.last() else {
                break;
            };
            after = Some(last.position);
            for paged in page {
                earlier.entry(paged.db).or_default().insert(paged.key);
            }
        }
        Ok(Recorder {
            journal,
            journal_keys,
            earlier,
            recorded: 0,
            cleared: 0,
        })
    }

    /// Records a batch's differences as `mismatch` (the error text says
    /// what differs), and earlier mismatches that now compare equal as
    /// `restored`, in one transaction.
    pub fn record(&mut self, checked: &Checked) -> Result<()> {
        let db = checked.direction.journal_db();
        let mut results = Vec::new();
        for (key, verdict) in &checked.verdicts {
            match verdict {
                Verdict::Differs { detail, .. } => {
                    self.recorded += 1;
                    results.push(KeyResult {
                        key: key.clone(),
                        outcome: Outcome::Mismatch,
                        ttl_ms: None,
                        size_bytes: None,
                        error: Some(detail.clone()),
                        method: None,
                    });
                }
                Verdict::Equal if checked.direction.is_source() => {
                    let was_mismatch = self
                        .earlier
                        .get_mut(&db)
                        .is_some_and(|keys| keys.remove(key.as_slice()));
                    if was_mismatch {
                        self.cleared += 1;
                        results.push(KeyResult {
                            key: key.clone(),
                            outcome: Outcome::Restored,
                            ttl_ms: None,
                            size_bytes: None,
                            error: None,
                            method: None,
                        });
                    }
                }
                _ => {}
            }
        }
        if results.is_empty() {
            return Ok(());
        }
        self.journal
            .commit_batch(db, &results, None, self.journal_keys)
            .context("cannot record verify's findings in the journal")
    }

    fn note(&self, path: &Path) -> JournalNote {
        JournalNote {
            path: path.display().to_string(),
            recorded: self.recorded,
            cleared: self.cleared,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_keys_in_a_target_db_are_traced_to_the_source_dbs_that_feed_it() {
        let map = BTreeMap::from([(0, 5), (1, 5)]);
        assert_eq!(sources_of(&map, 5), vec![0, 1, 5]);
        assert_eq!(sources_of(&map, 0), Vec::<i64>::new());
        assert_eq!(sources_of(&BTreeMap::new(), 3), vec![3]);
    }

    #[test]
    fn scopes_read_like_the_databases_they_cover() {
        let pair = |source, target| Dbs { source, target };
        assert_eq!(describe_scope(&[pair(0, 0)]), "db 0");
        assert_eq!(describe_scope(&[pair(0, 0), pair(1, 5)]), "dbs 0, 1->5");
        assert_eq!(describe_scope(&[]), "no databases hold keys");
    }
}
