//! `redis-ferry report`: what the job did, beside what the servers hold now.
//!
//! This module owns the report's model ([`Report`]) and the command's flow.
//! The model is the journal-only [`JobSummary`] that `status` shows (so the
//! two never disagree on a count), plus each database's key count read from
//! the servers now, a [`verdict`] that explains any difference, the most
//! frequent errors, and every run with its time and rate.
//!
//! A server that cannot be reached does not stop the report: its counts
//! are `null` ("unknown") with the reason, and the rest still comes out.
//! The CSV audit log needs no server at all and is streamed row by row
//! ([`audit_log`]); every format goes to stdout or, atomically, to
//! `--output FILE` ([`output`]).
//!
//! The journals of a sharded job's workers make one report: the union of
//! their summaries ([`crate::shard::workers`]), the servers' counts over
//! the slots of the workers given, every worker's runs, and a CSV that is
//! their audit logs one after the other with a `shard` column. A single
//! worker's journal is reported over its own slots.

mod audit_log;
mod output;
mod render;
mod verdict;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::clock::{now_ms, rfc3339};
use crate::endpoint::{Endpoint, Role};
use crate::exit::Exit;
use crate::interrupt::Shutdown;
use crate::job::stored_endpoint;
use crate::journal::{Contents, JobRecord, JournalReader, RunRecord};
use crate::outcome::OutcomeCounts;
use crate::shard::SlotSet;
use crate::shard::workers::{WorkerView, Workers};
use crate::side::Side;
use crate::status::{DbView, JobSummary, JobView, StartingSummary};

pub use audit_log::{CSV_HEADER, MERGED_CSV_HEADER, write_csv, write_merged_csv};
pub use output::Interrupted;
pub use verdict::{Verdict, VerdictStatus};

/// How long a report waits for a server that drops mid-way: a report is
/// read-only and an operator is waiting for it, so it gives up sooner than
/// a job would.
const COUNT_BUDGET: Duration = Duration::from_secs(10);

/// How many distinct error texts the report lists.
const TOP_ERRORS: usize = 10;

/// `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// Aligned plain text for a terminal.
    #[default]
    Text,
    /// Markdown, for a change ticket or a wiki page.
    Markdown,
    /// The contract's JSON object, with the verdict and more.
    Json,
    /// The per-key audit log: one row per key.
    Csv,
}

/// What `report` was asked for, as plain settings.
#[derive(Debug, Clone)]
pub struct ReportSettings {
    /// One journal, or the journals of a sharded job's workers.
    pub journals: Vec<PathBuf>,
    pub format: Format,
    /// Write here (atomically) instead of standard output.
    pub output: Option<PathBuf>,
    /// `--source` / `--target` given again (for a password, or a new address).
    pub source: Option<Endpoint>,
    pub target: Option<Endpoint>,
}

/// The whole report; serialized as `report --format json`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub job: JobView,
    pub outcomes: OutcomeCounts,
    /// Per source database, with `source_keys`/`target_keys` read now
    /// (`null` when that server could not be asked).
    pub dbs: Vec<DbView>,
    pub totals: Totals,
    pub verdict: Verdict,
    pub servers: Servers,
    /// The most frequent errors of failed keys, most frequent first.
    pub top_errors: Vec<ErrorCount>,
    pub runs: Vec<RunView>,
    /// Time spent copying (the runs' time, not the pauses between them).
    pub copy_seconds: f64,
    /// Keys handled per second of copy time, over every run.
    pub rate_keys_per_second: Option<f64>,
    /// Things that make counts legitimately differ, or limit the audit log.
    pub notes: Vec<String>,
    pub generated_at: String,
    /// A sharded job's workers, when their journals are reported together.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub workers: Vec<WorkerView>,
}

/// Sums over every database of the job.
#[derive(Debug, Clone, Serialize)]
pub struct Totals {
    pub source_keys: Option<u64>,
    /// Over the distinct target databases (several source databases may be
    /// mapped into one).
    pub target_keys: Option<u64>,
    #[serde(flatten)]
    pub outcomes: OutcomeCounts,
}

#[derive(Debug, Clone, Serialize)]
pub struct Servers {
    pub source: ServerView,
    pub target: ServerView,
}

/// Whether a server answered, and why not.
#[derive(Debug, Clone, Serialize)]
pub struct ServerView {
    /// The URL asked, password shown as `***`.
    pub url: String,
    pub reachable: bool,
    /// Why its counts are unknown.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ErrorCount {
    pub error: String,
    pub keys: u64,
}

/// One invocation that worked on the job.
#[derive(Debug, Clone, Serialize)]
pub struct RunView {
    pub command: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub seconds: f64,
    pub keys_processed: u64,
    /// `null` when the process was killed before it could record one.
    pub exit_code: Option<i64>,
    /// The worker that ran it, when several workers' journals are reported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<String>,
}

/// Keys per database on one server now, or why they are unknown.
#[derive(Debug, Clone)]
pub struct LiveCounts {
    pub url: String,
    pub counts: std::result::Result<BTreeMap<i64, u64>, String>,
}

impl LiveCounts {
    fn get(&self, db: i64) -> Option<u64> {
        self.counts
            .as_ref()
            .ok()
            .map(|counts| counts.get(&db).copied().unwrap_or(0))
    }

    fn view(&self) -> ServerView {
        ServerView {
            url: self.url.clone(),
            reachable: self.counts.is_ok(),
            error: self.counts.as_ref().err().cloned(),
        }
    }
}

/// `redis-ferry report`.
pub fn run(settings: ReportSettings, shutdown: &Shutdown) -> Result<Exit> {
    let (destination, result) = match settings.journals.as_slice() {
        [only] => one_journal(only, &settings, shutdown)?,
        several => several_journals(several, &settings, shutdown)?,
    };
    match result {
        Ok(()) => Ok(Exit::Success),
        Err(error) if error.is::<Interrupted>() => {
            crate::log::info(format!("interrupted; {}", destination.left_behind()));
            Ok(Exit::Interrupted)
        }
        Err(error) => Err(error),
    }
}

/// The report of one journal; the outer error stops before anything is
/// written, the inner one comes from writing.
fn one_journal(
    path: &std::path::Path,
    settings: &ReportSettings,
    shutdown: &Shutdown,
) -> Result<(output::Destination, Result<()>)> {
    let journal = JournalReader::open(path)?;
    let destination = output::Destination::new(settings.output.as_deref(), journal.path())?;
    let starting = matches!(journal.contents()?, Contents::Starting);
    let result = match settings.format {
        Format::Csv => destination.write(|out| write_csv(&journal, out, shutdown).map(|_| ())),
        format if starting => destination
            .write(|out| render::starting(&StartingSummary::new(), journal.path(), format, out)),
        format => {
            let (source, target) = (settings.source.clone(), settings.target.clone());
            let report = Report::read(&journal, source, target, shutdown)?;
            destination.write(|out| render::render(&report, format, out))
        }
    };
    Ok((destination, result))
}

/// The report of a sharded job's workers, from their journals.
fn several_journals(
    paths: &[PathBuf],
    settings: &ReportSettings,
    shutdown: &Shutdown,
) -> Result<(output::Destination, Result<()>)> {
    let workers = Workers::open(paths)?;
    let mut destination = None;
    for worker in &workers.journals {
        destination = Some(output::Destination::new(
            settings.output.as_deref(),
            &worker.path,
        )?);
    }
    let destination = destination.expect("Workers::open refuses an empty list");
    let result = match settings.format {
        Format::Csv => {
            destination.write(|out| write_merged_csv(&workers, out, shutdown).map(|_| ()))
        }
        format => {
            let (source, target) = (settings.source.clone(), settings.target.clone());
            let report = Report::read_workers(&workers, source, target, shutdown)?;
            destination.write(|out| render::render(&report, format, out))
        }
    };
    Ok((destination, result))
}

impl Report {
    /// Reads the journal and asks both servers for their key counts now
    /// (over the worker's own slots, for a worker of a sharded job).
    pub fn read(
        journal: &JournalReader,
        source: Option<Endpoint>,
        target: Option<Endpoint>,
        shutdown: &Shutdown,
    ) -> Result<Report> {
        let job = journal.job()?;
        let slots = job.options.shard.as_ref().map(|shard| shard.slot_set());
        let source = live_counts(Role::Source, &job, source, slots.as_ref(), shutdown);
        let target = live_counts(Role::Target, &job, target, slots.as_ref(), shutdown);
        Report::assemble(journal, &job, source, target)
    }

    /// Builds the report from the journal and counts already taken.
    pub fn assemble(
        journal: &JournalReader,
        job: &JobRecord,
        source: LiveCounts,
        target: LiveCounts,
    ) -> Result<Report> {
        let active = crate::journal::is_locked(journal.path());
        let (summary, runs, top_errors) = journal.consistently(|journal| {
            Ok((
                JobSummary::read_now(journal, active)?,
                journal.runs()?,
                journal.top_errors(TOP_ERRORS)?,
            ))
        })?;
        let runs: Vec<RunView> = runs.iter().map(run_view).collect();
        let copy_seconds = runs.iter().map(|run| run.seconds).sum();
        let parts = Parts {
            summary,
            runs,
            top_errors,
            copy_seconds,
        };
        Ok(parts.into_report(job, source, target))
    }

    /// The report of a sharded job's workers: their union, the servers'
    /// counts over the workers' slots, every worker's runs.
    pub fn read_workers(
        workers: &Workers,
        source: Option<Endpoint>,
        target: Option<Endpoint>,
        shutdown: &Shutdown,
    ) -> Result<Report> {
        let job = workers
            .first_job()
            .context("none of the journals holds a job yet")?;
        let slots = workers.slots();
        let partial = (!slots.is_full()).then_some(&slots);
        let source = live_counts(Role::Source, job, source, partial, shutdown);
        let target = live_counts(Role::Target, job, target, partial, shutdown);
        let summary = crate::shard::workers::merge(workers)?;
        let mut runs: Vec<(RunRecord, String)> = Vec::new();
        let mut errors: BTreeMap<String, u64> = BTreeMap::new();
        for worker in workers.journals.iter().filter(|w| w.job.is_some()) {
            let label = worker.label();
            runs.extend(
                worker
                    .reader
                    .runs()?
                    .into_iter()
                    .map(|run| (run, label.clone())),
            );
            for (error, keys) in worker.reader.top_errors(TOP_ERRORS)? {
                *errors.entry(error).or_default() += keys;
            }
        }
        runs.sort_by_key(|(run, _)| run.started_at);
        let mut top_errors: Vec<(String, u64)> = errors.into_iter().collect();
        top_errors.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        top_errors.truncate(TOP_ERRORS);
        let parts = Parts {
            summary,
            copy_seconds: busy_seconds(runs.iter().map(|(run, _)| run)),
            runs: runs
                .iter()
                .map(|(run, label)| RunView {
                    shard: Some(label.clone()),
                    ..run_view(run)
                })
                .collect(),
            top_errors,
        };
        Ok(parts.into_report(job, source, target))
    }
}

/// What a report is made of besides the servers' counts.
struct Parts {
    summary: JobSummary,
    runs: Vec<RunView>,
    top_errors: Vec<(String, u64)>,
    copy_seconds: f64,
}

impl Parts {
    fn into_report(self, job: &JobRecord, source: LiveCounts, target: LiveCounts) -> Report {
        let Parts {
            summary,
            runs,
            top_errors,
            copy_seconds,
        } = self;
        let dbs: Vec<DbView> = summary
            .dbs
            .iter()
            .map(|db| DbView {
                source_keys: source.get(db.db),
                target_keys: target.get(db.target_db),
                ..db.clone()
            })
            .collect();
        let verdict = judge(&summary, &dbs, job);
        let processed: u64 = runs.iter().map(|run| run.keys_processed).sum();
        let rate = (copy_seconds > 0.5 && processed > 0)
            .then(|| (processed as f64 / copy_seconds).round());
        let top_errors = top_errors
            .into_iter()
            .map(|(error, keys)| ErrorCount { error, keys })
            .collect();
        let mut notes = notes(job, &dbs, &source);
        notes.extend(slot_notes(job, &summary));
        notes.extend(summary.notes.iter().cloned());
        Report {
            totals: totals(&dbs, &summary.outcomes),
            notes,
            job: summary.job,
            outcomes: summary.outcomes,
            dbs,
            verdict,
            servers: Servers {
                source: source.view(),
                target: target.view(),
            },
            top_errors,
            runs,
            copy_seconds: (copy_seconds * 10.0).round() / 10.0,
            rate_keys_per_second: rate,
            generated_at: rfc3339(now_ms()),
            workers: summary.workers,
        }
    }
}

/// The verdict; with workers missing, said first, and the rest judged
/// over the slots of the workers given.
fn judge(summary: &JobSummary, dbs: &[DbView], job: &JobRecord) -> Verdict {
    let missing = crate::shard::workers::missing_shards(&summary.workers);
    if missing.is_empty() {
        return Verdict::judge(&summary.job.state, dbs, &job.options);
    }
    let given_done = summary.workers.iter().all(|w| w.state == "completed");
    let state = if given_done {
        "completed"
    } else {
        &summary.job.state
    };
    let mut verdict = Verdict::judge(state, dbs, &job.options);
    verdict.text = format!(
        "the job is not complete: no journal of shard {} among those given (start that worker, or give its journal too); over the other shards' slots, {}",
        missing.join(", "),
        verdict.text
    );
    verdict
}

/// Seconds during which at least one of `runs` was working (the workers
/// of a sharded job run side by side: their time is not added up).
fn busy_seconds<'r>(runs: impl Iterator<Item = &'r RunRecord>) -> f64 {
    let mut spans: Vec<(i64, i64)> = runs
        .map(|run| (run.started_at, run.finished_at.unwrap_or(run.updated_at)))
        .filter(|(start, end)| end > start)
        .collect();
    spans.sort_unstable();
    let mut busy_ms = 0;
    let mut covered_until = i64::MIN;
    for (start, end) in spans {
        let from = start.max(covered_until);
        if end > from {
            busy_ms += end - from;
            covered_until = end;
        }
    }
    busy_ms as f64 / 1000.0
}

/// Whose slots the servers' counts cover, when not every slot's.
fn slot_notes(job: &JobRecord, summary: &JobSummary) -> Vec<String> {
    if !summary.workers.is_empty() {
        return Vec::new(); // the workers' own notes say which are missing
    }
    match &job.options.shard {
        Some(shard) => vec![format!(
            "shard {} of a sharded job: \"source now\" and \"target now\" count the keys of its slots ({}); the other workers' keys are in their own journals (report them together: --journal once per worker, or their directory)",
            shard.label(),
            shard.slots_text()
        )],
        None => Vec::new(),
    }
}

/// Asks one side for its keys per database; never fails: an unreachable
/// server becomes unknown counts with the reason.
fn live_counts(
    role: Role,
    job: &JobRecord,
    given: Option<Endpoint>,
    slots: Option<&SlotSet>,
    shutdown: &Shutdown,
) -> LiveCounts {
    let (stored_url, stored_ca) = match role {
        Role::Source => (&job.source_url, job.source_tls_ca.clone()),
        Role::Target => (&job.target_url, job.target_tls_ca.clone()),
    };
    let endpoint = match stored_endpoint(role, stored_url, stored_ca, given) {
        Ok(endpoint) => endpoint,
        Err(error) => {
            return LiveCounts {
                url: stored_url.clone(),
                counts: Err(format!("{error:#}")),
            };
        }
    };
    let counts = Side::connect(&endpoint, COUNT_BUDGET, shutdown)
        .and_then(|mut side| match slots {
            None => side.key_counts(),
            Some(slots) => {
                let dbs = job_databases(role, job, &side);
                crate::shard::keys::counts_in_slots(&mut side, &dbs, slots)
            }
        })
        .map_err(|error| format!("{error:#}"));
    LiveCounts {
        url: endpoint.redacted(),
        counts,
    }
}

/// The databases a sharded job reads (a cluster: 0) or writes on `side`.
fn job_databases(role: Role, job: &JobRecord, side: &Side) -> std::collections::BTreeSet<i64> {
    match role {
        _ if side.is_cluster() => [0].into(),
        Role::Source => [0].into(),
        Role::Target => [job.options.target_db(0)].into(),
    }
}

fn run_view(run: &RunRecord) -> RunView {
    let end = run.finished_at.unwrap_or(run.updated_at);
    RunView {
        command: run.command.clone(),
        started_at: rfc3339(run.started_at),
        finished_at: run.finished_at.map(rfc3339),
        seconds: ((end - run.started_at).max(0) as f64 / 100.0).round() / 10.0,
        keys_processed: run.keys_processed,
        exit_code: run.exit_code,
        shard: None,
    }
}

fn totals(dbs: &[DbView], outcomes: &OutcomeCounts) -> Totals {
    let source_keys = dbs.iter().map(|db| db.source_keys).sum::<Option<u64>>();
    // One count per target database, even when several source databases
    // were mapped into it.
    let mut targets: BTreeMap<i64, Option<u64>> = BTreeMap::new();
    for db in dbs {
        targets.insert(db.target_db, db.target_keys);
    }
    Totals {
        source_keys,
        target_keys: targets.into_values().sum::<Option<u64>>(),
        outcomes: *outcomes,
    }
}

/// Why counts may legitimately differ, and what the audit log leaves out.
fn notes(job: &JobRecord, dbs: &[DbView], source: &LiveCounts) -> Vec<String> {
    let options = &job.options;
    let mut notes = Vec::new();
    if options.match_pattern.is_some() || options.key_type.is_some() {
        notes.push(
            "--match/--type copied only some keys: the source's other keys are counted in \"source now\" but were never meant for the target".to_string(),
        );
    }
    if let Ok(counts) = &source.counts {
        let left_out: Vec<String> = counts
            .iter()
            .filter(|(db, _)| !dbs.iter().any(|view| view.db == **db))
            .map(|(db, keys)| format!("db {db} ({keys} key{})", if *keys == 1 { "" } else { "s" }))
            .collect();
        if !left_out.is_empty() {
            notes.push(format!(
                "source {} not part of this job, so not compared",
                left_out.join(", ")
            ));
        }
    }
    let mut sources_of: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for db in dbs {
        sources_of
            .entry(db.target_db)
            .or_default()
            .push(db.db.to_string());
    }
    for (target_db, sources) in sources_of.iter().filter(|(_, s)| s.len() > 1) {
        notes.push(format!(
            "source dbs {} all go to target db {target_db}: its count is shown on each of their rows, counted once in the total, and compared with their sum",
            sources.join(", ")
        ));
    }
    if options.journal_keys == crate::options::JournalKeys::Failures {
        notes.push(
            "--journal-keys failures was given: this redis-ferry keeps a row for every key regardless; only a job that an older redis-ferry ran in that mode lacks rows (and CSV lines) for the keys it copied without trouble then, and may have counted such a key twice if it was scanned twice".to_string(),
        );
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(started_at: i64, finished_at: Option<i64>, updated_at: i64) -> RunRecord {
        RunRecord {
            id: 0,
            command: "run".into(),
            started_at,
            updated_at,
            finished_at,
            keys_processed: 0,
            exit_code: None,
        }
    }

    #[test]
    fn workers_side_by_side_count_their_time_once() {
        let runs = [
            run(0, Some(10_000), 10_000),
            run(2_000, Some(12_000), 12_000),  // overlaps the first
            run(20_000, None, 25_000),         // killed: its last write ends it
            run(21_000, Some(22_000), 22_000), // inside the third
        ];
        assert_eq!(busy_seconds(runs.iter()), 17.0);
        assert_eq!(busy_seconds([].iter()), 0.0);
    }
}
