//! The journals of several workers of one sharded job, read as one job
//! (`status` and `report` with `--journal` given several times, or a
//! directory).
//!
//! The journals are opened read-only and checked to be the workers of one
//! job: each started with `--shard I/N`, the same N, no index twice. What
//! may differ without making them another job (another seed node of the
//! same cluster in a URL, another `--scan-count`) is said in a note; a
//! worker whose journal is missing is named, and the job as a whole is
//! not `completed` until every worker's journal says so.
//!
//! The merged view ([`merge`]) is the contract's object for the union:
//! counts summed per database, one state, the cursors of every worker
//! (each with its shard), plus `workers`: each worker's state and
//! progress.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use super::{ShardSpec, SlotSet};
use crate::journal::{Contents, JobRecord, JournalReader};
use crate::outcome::OutcomeCounts;
use crate::status::{DbView, ErrorView, JobSummary, JobView, ProgressView};

/// One worker's journal, open read-only.
pub struct WorkerJournal {
    pub path: PathBuf,
    pub reader: JournalReader,
    /// `None` while a process is creating the journal (no job yet).
    pub job: Option<JobRecord>,
}

impl WorkerJournal {
    pub fn shard(&self) -> Option<&ShardSpec> {
        self.job.as_ref().and_then(|job| job.options.shard.as_ref())
    }

    /// `1/3`, or `?` while the journal is being created.
    pub fn label(&self) -> String {
        self.shard()
            .map(ShardSpec::label)
            .unwrap_or_else(|| "?".to_string())
    }
}

/// The workers given, in shard order (journals being created last).
pub struct Workers {
    pub journals: Vec<WorkerJournal>,
    /// How many workers the job has (the N of `--shard I/N`).
    pub count: u32,
    /// What differs between the workers without making them another job,
    /// and which workers are missing.
    pub notes: Vec<String>,
}

/// The journals `--journal` names: each file as given, and for a
/// directory the `.db` files directly in it, sorted by name.
pub fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut journals = Vec::new();
    for path in paths {
        if path.is_dir() {
            journals.extend(journals_in(path)?);
        } else {
            journals.push(path.clone());
        }
    }
    Ok(journals)
}

fn journals_in(directory: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(directory)
        .with_context(|| format!("cannot list journals in {}", directory.display()))?;
    let mut found = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if path.is_file() && path.extension().is_some_and(|ext| ext == "db") {
            found.push(path);
        }
    }
    if found.is_empty() {
        return Err(crate::exit::usage_error(format!(
            "--journal {} is a directory that holds no journal (no .db file): name a journal file, or the directory that holds a sharded job's journals",
            directory.display()
        )));
    }
    found.sort();
    Ok(found)
}

impl Workers {
    /// Opens every journal and checks that they are workers of one job.
    pub fn open(paths: &[PathBuf]) -> Result<Workers> {
        let mut journals = Vec::new();
        for path in paths {
            let reader = JournalReader::open(path)?;
            let job = match reader.contents()? {
                Contents::Job(job) => Some(*job),
                Contents::Starting => None,
            };
            journals.push(WorkerJournal {
                path: path.clone(),
                reader,
                job,
            });
        }
        let count = check_one_job(&journals)?;
        journals.sort_by_key(|worker| worker.shard().map_or(u32::MAX, |shard| shard.index));
        let notes = notes(&journals, count);
        Ok(Workers {
            journals,
            count,
            notes,
        })
    }

    /// The first worker with a job: whose source, target and options the
    /// union shows.
    pub fn first_job(&self) -> Option<&JobRecord> {
        self.journals.iter().find_map(|worker| worker.job.as_ref())
    }

    /// The slots of the workers given.
    pub fn slots(&self) -> SlotSet {
        let mut slots = SlotSet::empty();
        for shard in self.journals.iter().filter_map(WorkerJournal::shard) {
            slots.add(&shard.slot_set());
        }
        slots
    }

    /// Shard indices with no journal among those given.
    pub fn missing(&self) -> Vec<u32> {
        (0..self.count)
            .filter(|index| {
                !self
                    .journals
                    .iter()
                    .any(|worker| worker.shard().is_some_and(|shard| shard.index == *index))
            })
            .collect()
    }
}

/// Refuses journals that are not the workers of one sharded job; returns
/// the job's number of workers.
fn check_one_job(journals: &[WorkerJournal]) -> Result<u32> {
    let mut count: Option<(u32, &Path)> = None;
    let mut seen: BTreeMap<u32, &Path> = BTreeMap::new();
    for worker in journals {
        let Some(job) = &worker.job else { continue };
        let Some(shard) = &job.options.shard else {
            bail!(
                "journal {} holds a job that was not started with --shard: status and report merge the journals of one sharded job's workers (run --shard I/N); read other journals one at a time",
                worker.path.display()
            );
        };
        match count {
            Some((n, other)) if n != shard.count => bail!(
                "journal {} is shard {} but journal {} is a shard of {n} workers: these are not the workers of one job",
                worker.path.display(),
                shard.label(),
                other.display()
            ),
            _ => count = Some((shard.count, &worker.path)),
        }
        if let Some(other) = seen.insert(shard.index, &worker.path) {
            bail!(
                "journals {} and {} are both shard {}: give each worker's journal once",
                other.display(),
                worker.path.display(),
                shard.label()
            );
        }
    }
    count.map(|(n, _)| n).context(
        "none of the journals holds a job yet (their workers are starting); try again in a moment",
    )
}

/// What the operator should know about the workers given.
fn notes(journals: &[WorkerJournal], count: u32) -> Vec<String> {
    let mut notes = Vec::new();
    let jobs: Vec<(&WorkerJournal, &JobRecord)> = journals
        .iter()
        .filter_map(|worker| worker.job.as_ref().map(|job| (worker, job)))
        .collect();
    if let Some((first, first_job)) = jobs.first() {
        for (worker, job) in &jobs[1..] {
            let mut differs = Vec::new();
            for (role, mine, theirs) in [
                ("source", &job.source_url, &first_job.source_url),
                ("target", &job.target_url, &first_job.target_url),
            ] {
                if mine != theirs {
                    differs.push(format!("{role} {mine}"));
                }
            }
            differs.extend(crate::or_resume::option_differences(
                &first_job.options,
                &job.options,
                &["shard", "rate"],
            ));
            if !differs.is_empty() {
                notes.push(format!(
                    "shard {} was started with other settings than shard {} ({}): check that both copy the same cluster into the same target",
                    worker.label(),
                    first.label(),
                    differs.join("; ")
                ));
            }
        }
    }
    let given: Vec<u32> = jobs
        .iter()
        .filter_map(|(worker, _)| worker.shard().map(|s| s.index))
        .collect();
    let missing: Vec<String> = (0..count)
        .filter(|index| !given.contains(index))
        .map(|index| format!("{index}/{count}"))
        .collect();
    if !missing.is_empty() {
        notes.push(format!(
            "no journal of shard {} among those given (not started yet, or not given): the keys of its slots are not in these counts, and the job is not complete without it",
            missing.join(", ")
        ));
    }
    notes
}

/// One worker, as the merged view lists it.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerView {
    pub journal: String,
    /// `1/3`; `null` while the journal is being created.
    pub shard: Option<String>,
    pub index: Option<u32>,
    /// How many workers the job has.
    pub count: Option<u32>,
    /// This worker's slots, `5461-10922`.
    pub slots: Option<String>,
    pub state: String,
    /// A process holds this worker's journal right now.
    pub active: bool,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub outcomes: OutcomeCounts,
    pub progress: Option<ProgressView>,
    pub last_error: Option<String>,
}

/// Every worker's summary, and the union of them as one job.
pub fn merge(workers: &Workers) -> Result<JobSummary> {
    let mut summaries = Vec::new();
    let mut views = Vec::new();
    for worker in &workers.journals {
        match &worker.job {
            Some(_) => {
                let summary = JobSummary::read(&worker.reader)?;
                views.push(worker_view(worker, Some(&summary)));
                summaries.push((worker.label(), summary));
            }
            None => views.push(worker_view(worker, None)),
        }
    }
    let mut union = union_of(&summaries, &views, !workers.missing().is_empty())?;
    union.workers = views;
    union.notes = workers.notes.clone();
    Ok(union)
}

/// The shards (`2/3`) of which no worker is in `views`.
pub fn missing_shards(views: &[WorkerView]) -> Vec<String> {
    let Some(count) = views.iter().find_map(|view| view.count) else {
        return Vec::new();
    };
    (0..count)
        .filter(|index| !views.iter().any(|view| view.index == Some(*index)))
        .map(|index| format!("{index}/{count}"))
        .collect()
}

fn worker_view(worker: &WorkerJournal, summary: Option<&JobSummary>) -> WorkerView {
    let shard = worker.shard();
    WorkerView {
        journal: worker.path.display().to_string(),
        shard: shard.map(ShardSpec::label),
        index: shard.map(|shard| shard.index),
        count: shard.map(|shard| shard.count),
        slots: shard.map(ShardSpec::slots_text),
        state: summary.map_or_else(|| "starting".to_string(), |s| s.job.state.clone()),
        active: summary.is_none_or(|s| s.job.active),
        started_at: summary.map(|s| s.job.started_at.clone()),
        finished_at: summary.and_then(|s| s.job.finished_at.clone()),
        outcomes: summary.map(|s| s.outcomes).unwrap_or_default(),
        progress: summary.map(|s| s.progress.clone()),
        last_error: summary.and_then(|s| s.job.last_error.clone()),
    }
}

/// The union of the workers' summaries: one job.
fn union_of(
    summaries: &[(String, JobSummary)],
    views: &[WorkerView],
    incomplete: bool,
) -> Result<JobSummary> {
    let (_, first) = summaries
        .first()
        .context("none of the journals holds a job yet")?;
    let mut outcomes = OutcomeCounts::default();
    let mut dbs: BTreeMap<i64, DbView> = BTreeMap::new();
    let mut cursors = Vec::new();
    let mut last_errors: Vec<ErrorView> = Vec::new();
    for (label, summary) in summaries {
        outcomes.merge(&summary.outcomes);
        for db in &summary.dbs {
            add_db(dbs.entry(db.db).or_insert_with(|| empty_db(db)), db);
        }
        cursors.extend(
            summary
                .cursors
                .iter()
                .map(|cursor| crate::status::CursorView {
                    shard: Some(label.clone()),
                    ..cursor.clone()
                }),
        );
        last_errors.extend(summary.last_errors.iter().cloned());
    }
    last_errors.sort_by(|a, b| b.at.cmp(&a.at));
    last_errors.truncate(5);
    let states: Vec<&str> = views.iter().map(|view| view.state.as_str()).collect();
    Ok(JobSummary {
        job: union_job(first, summaries, union_state(&states, incomplete)),
        outcomes,
        dbs: dbs.into_values().collect(),
        cursors,
        progress: union_progress(summaries),
        last_errors,
        follow: None,
        follow_gaps: Vec::new(),
        workers: Vec::new(),
        notes: Vec::new(),
    })
}

fn empty_db(like: &DbView) -> DbView {
    DbView {
        db: like.db,
        target_db: like.target_db,
        source_keys: None,
        target_keys: None,
        restored: 0,
        expired: 0,
        skipped: 0,
        failed: 0,
        mismatch: 0,
    }
}

fn add_db(sum: &mut DbView, db: &DbView) {
    sum.restored += db.restored;
    sum.expired += db.expired;
    sum.skipped += db.skipped;
    sum.failed += db.failed;
    sum.mismatch += db.mismatch;
}

/// The job's state from its workers': completed once every worker is
/// (and none is missing), running while any works, else failed or
/// interrupted (a worker to continue).
fn union_state(states: &[&str], incomplete: bool) -> String {
    let any = |wanted: &[&str]| states.iter().any(|state| wanted.contains(state));
    let state = if states.iter().all(|state| *state == "completed") && !incomplete {
        "completed"
    } else if !incomplete && states.iter().all(|state| *state == "starting") {
        "starting"
    } else if any(&["running", "following", "starting"]) {
        "running"
    } else if any(&["failed"]) {
        "failed"
    } else {
        "interrupted"
    };
    state.to_string()
}

fn union_job(first: &JobSummary, summaries: &[(String, JobSummary)], state: String) -> JobView {
    let jobs = || summaries.iter().map(|(_, summary)| &summary.job);
    let finished_at = if state == "completed" {
        jobs().filter_map(|job| job.finished_at.clone()).max()
    } else {
        None
    };
    let errors: Vec<String> = summaries
        .iter()
        .filter_map(|(label, summary)| {
            let error = summary.job.last_error.as_ref()?;
            Some(format!("shard {label}: {error}"))
        })
        .collect();
    JobView {
        state,
        source: first.job.source.clone(),
        target: first.job.target.clone(),
        started_at: jobs()
            .map(|job| job.started_at.clone())
            .min()
            .unwrap_or_default(),
        finished_at,
        updated_at: jobs()
            .map(|job| job.updated_at.clone())
            .max()
            .unwrap_or_default(),
        active: jobs().any(|job| job.active),
        last_error: (!errors.is_empty()).then(|| errors.join("; ")),
        // The union is no one shard: each worker's is in `workers`.
        options: crate::options::CopyOptions {
            shard: None,
            ..first.job.options.clone()
        },
    }
}

/// Keys scanned and expected summed; the rate of the workers working now,
/// and the ETA of the last of them to finish.
fn union_progress(summaries: &[(String, JobSummary)]) -> ProgressView {
    let active = || {
        summaries
            .iter()
            .map(|(_, summary)| summary)
            .filter(|summary| summary.job.active)
    };
    let rates: Vec<f64> = active()
        .filter_map(|summary| summary.progress.rate_keys_per_second)
        .collect();
    ProgressView {
        keys_scanned: summaries.iter().map(|(_, s)| s.progress.keys_scanned).sum(),
        keys_expected: summaries
            .iter()
            .map(|(_, s)| s.progress.keys_expected)
            .sum(),
        rate_keys_per_second: (!rates.is_empty()).then(|| rates.iter().sum()),
        eta_seconds: active().filter_map(|s| s.progress.eta_seconds).max(),
        latest_command: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_job_is_completed_only_when_every_worker_is() {
        assert_eq!(union_state(&["completed", "completed"], false), "completed");
        assert_eq!(
            union_state(&["completed", "completed"], true),
            "interrupted"
        );
        assert_eq!(union_state(&["completed", "running"], false), "running");
        assert_eq!(union_state(&["completed", "starting"], false), "running");
        assert_eq!(union_state(&["starting", "starting"], false), "starting");
        assert_eq!(union_state(&["failed", "running"], false), "running");
        assert_eq!(union_state(&["failed", "interrupted"], false), "failed");
        assert_eq!(
            union_state(&["completed", "interrupted"], false),
            "interrupted"
        );
    }
}
