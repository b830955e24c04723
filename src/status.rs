//! `redis-ferry status`: where the job stands, read from the journal alone
//! (no server is contacted), so it works from a second terminal while a
//! run is writing. [`JobSummary`] is also the base of `report`, which is why
//! the two always agree on every count.
//!
//! Given the journals of a sharded job's workers (several `--journal`, or
//! their directory), it shows their union as one job, with each worker's
//! state and progress ([`crate::shard::workers`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use crate::clock::{rfc3339, short_duration};
use crate::escape::escape_key;
use crate::exit::Exit;
use crate::hint;
use crate::journal::{self, Contents, JobState, JournalReader};
use crate::options::CopyOptions;
use crate::outcome::OutcomeCounts;

/// Everything `status` shows; serialized as the contract's JSON object.
#[derive(Debug, Clone, Serialize)]
pub struct JobSummary {
    pub job: JobView,
    pub outcomes: OutcomeCounts,
    pub dbs: Vec<DbView>,
    pub cursors: Vec<CursorView>,
    pub progress: ProgressView,
    pub last_errors: Vec<ErrorView>,
    /// A job started with `--follow`: where following stands (the
    /// contract's `follow` object), and every gap with its catch-up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub follow: Option<crate::follow::FollowView>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub follow_gaps: Vec<GapView>,
    /// The union of a sharded job's workers: each worker (empty for one
    /// journal).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub workers: Vec<crate::shard::workers::WorkerView>,
    /// What to know about the workers given (missing ones, differences).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// One gap of a following job.
#[derive(Debug, Clone, Serialize)]
pub struct GapView {
    pub kind: String,
    pub reason: String,
    pub at: String,
    /// When its catch-up pass finished (`null`: not caught up yet).
    pub caught_up_at: Option<String>,
    pub keys_differing: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct JobView {
    /// running | interrupted | completed | failed. A job recorded as running
    /// whose process is gone (killed) shows as interrupted.
    pub state: String,
    pub source: String,
    pub target: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub updated_at: String,
    /// A process holds the journal right now.
    pub active: bool,
    pub last_error: Option<String>,
    pub options: CopyOptions,
}

#[derive(Debug, Clone, Serialize)]
pub struct DbView {
    pub db: i64,
    pub target_db: i64,
    /// Keys in the source database now (`report` fills it; `status` leaves null).
    pub source_keys: Option<u64>,
    /// Keys in the target database now.
    pub target_keys: Option<u64>,
    pub restored: u64,
    pub expired: u64,
    pub skipped: u64,
    pub failed: u64,
    pub mismatch: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CursorView {
    pub node: String,
    pub db: i64,
    pub target_db: i64,
    /// SCAN cursor as text (an unsigned 64-bit value).
    pub cursor: String,
    pub done: bool,
    pub keys_scanned: u64,
    pub keys_expected: Option<u64>,
    pub updated_at: String,
    /// In the union of a sharded job: the worker whose cursor this is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProgressView {
    pub keys_scanned: u64,
    pub keys_expected: u64,
    /// Keys per second of the latest run (run, resume or retry).
    pub rate_keys_per_second: Option<f64>,
    pub eta_seconds: Option<u64>,
    pub latest_command: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ErrorView {
    pub db: i64,
    /// Escaped as the contract says.
    pub key: String,
    pub error: String,
    pub at: String,
}

impl JobSummary {
    /// Reads the summary from a journal that holds a job, all as of one
    /// moment (the writer may commit between two of the reads).
    pub fn read(journal: &JournalReader) -> Result<JobSummary> {
        let active = journal::is_locked(journal.path());
        journal.consistently(|journal| JobSummary::read_now(journal, active))
    }

    /// The summary from inside a read transaction. `active`: whether a
    /// process held the journal's lock just *before* the transaction's
    /// snapshot. Looked at after it, a job that completed and whose process
    /// exited in between would read as running without a process:
    /// interrupted. Looked at before, a lock already released means the
    /// snapshot holds the job's last state.
    pub(crate) fn read_now(journal: &JournalReader, active: bool) -> Result<JobSummary> {
        let job = journal.job()?;
        let state = if job.state == JobState::Running && !active {
            JobState::Interrupted
        } else {
            job.state
        };
        let follow_row = if job.options.follow {
            journal.follow()?
        } else {
            None
        };
        let following = active
            && state == JobState::Running
            && follow_row
                .as_ref()
                .is_some_and(|row| row.phase == "following" || row.phase == "catching_up");
        let follow = follow_row.as_ref().map(|row| crate::follow::FollowView {
            pending_keys: row.pending_keys,
            lag_ms: row.lag_ms,
            changes_applied: row.changes_applied,
            gaps: row.gaps,
            in_sync: row.in_sync && following,
        });
        let follow_gaps = if job.options.follow {
            journal
                .follow_gaps()?
                .into_iter()
                .map(|gap| GapView {
                    kind: gap.kind,
                    reason: gap.reason,
                    at: rfc3339(gap.at),
                    caught_up_at: gap.caught_up_at.map(rfc3339),
                    keys_differing: gap.keys_differing,
                })
                .collect()
        } else {
            Vec::new()
        };
        let counts = journal.counts()?;
        let cursors = journal.cursors()?;
        let mut outcomes = OutcomeCounts::default();
        for db_counts in counts.values() {
            outcomes.merge(db_counts);
        }
        let mut dbs: BTreeMap<i64, DbView> = BTreeMap::new();
        let view_for = |db: i64| DbView {
            db,
            target_db: job.options.target_db(db),
            source_keys: None,
            target_keys: None,
            restored: 0,
            expired: 0,
            skipped: 0,
            failed: 0,
            mismatch: 0,
        };
        for cursor in &cursors {
            dbs.entry(cursor.db).or_insert_with(|| view_for(cursor.db));
        }
        for (db, c) in &counts {
            let view = dbs.entry(*db).or_insert_with(|| view_for(*db));
            view.restored = c.restored;
            view.expired = c.expired;
            view.skipped = c.skipped;
            view.failed = c.failed;
            view.mismatch = c.mismatch;
        }
        let keys_scanned: u64 = cursors.iter().map(|c| c.keys_scanned).sum();
        let keys_expected: u64 = cursors
            .iter()
            .filter_map(|c| c.keys_expected)
            .sum::<u64>()
            .max(keys_scanned);
        let latest = journal.runs()?.pop();
        let rate = latest.as_ref().and_then(|run| {
            let seconds = (run.updated_at - run.started_at) as f64 / 1000.0;
            (seconds > 0.5 && run.keys_processed > 0).then(|| run.keys_processed as f64 / seconds)
        });
        let all_done = cursors.iter().all(|c| c.done);
        let eta_seconds = match rate {
            Some(rate) if active && !all_done => {
                Some(((keys_expected - keys_scanned) as f64 / rate) as u64)
            }
            _ => None,
        };
        let last_errors = journal
            .last_errors(5)?
            .into_iter()
            .map(|row| ErrorView {
                db: row.db,
                key: escape_key(&row.key),
                error: row.error.unwrap_or_default(),
                at: rfc3339(row.updated_at),
            })
            .collect();
        Ok(JobSummary {
            job: JobView {
                state: if following {
                    "following".to_string()
                } else {
                    state.as_str().to_string()
                },
                source: job.source_url,
                target: job.target_url,
                started_at: rfc3339(job.started_at),
                finished_at: job.finished_at.map(rfc3339),
                updated_at: rfc3339(job.updated_at),
                active,
                last_error: job.last_error,
                options: job.options,
            },
            outcomes,
            dbs: dbs.into_values().collect(),
            cursors: cursors
                .into_iter()
                .map(|c| CursorView {
                    node: c.node,
                    db: c.db,
                    target_db: c.target_db,
                    cursor: c.cursor.to_string(),
                    done: c.done,
                    keys_scanned: c.keys_scanned,
                    keys_expected: c.keys_expected,
                    updated_at: rfc3339(c.updated_at),
                    shard: None,
                })
                .collect(),
            progress: ProgressView {
                keys_scanned,
                keys_expected,
                rate_keys_per_second: rate.map(|r| r.round()),
                eta_seconds,
                latest_command: latest.map(|run| run.command),
            },
            last_errors,
            follow,
            follow_gaps,
            workers: Vec::new(),
            notes: Vec::new(),
        })
    }

    /// The plain-text view `status` prints; its hints name `journal`.
    pub fn to_text(&self, journal: &Path) -> String {
        let mut out = String::new();
        let job = &self.job;
        let working = self.workers.iter().filter(|w| w.active).count();
        let activity = if !self.workers.is_empty() {
            format!(" ({} workers, {working} working now)", self.workers.len())
        } else if job.active {
            " (a process is working on it)".to_string()
        } else {
            String::new()
        };
        let _ = writeln!(out, "job:      {}{activity}", job.state);
        let _ = writeln!(out, "source:   {}", job.source);
        let _ = writeln!(out, "target:   {}", job.target);
        let _ = writeln!(out, "started:  {}", job.started_at);
        if let Some(finished) = &job.finished_at {
            let _ = writeln!(out, "finished: {finished}");
        }
        if let Some(shard) = &job.options.shard {
            let _ = writeln!(
                out,
                "shard:    {} (slots {}, {} of 16384)",
                shard.label(),
                shard.slots_text(),
                shard.slot_set().len()
            );
        }
        let o = &self.outcomes;
        let _ = writeln!(
            out,
            "keys:     {} restored, {} expired, {} skipped, {} failed, {} mismatch",
            o.restored, o.expired, o.skipped, o.failed, o.mismatch
        );
        let p = &self.progress;
        let mut line = format!(
            "progress: {} of ~{} keys scanned",
            p.keys_scanned, p.keys_expected
        );
        match p.rate_keys_per_second {
            Some(rate) if !self.workers.is_empty() => {
                let _ = write!(line, ", {rate:.0} keys/s (the workers working now)");
            }
            Some(rate) => {
                let _ = write!(
                    line,
                    ", {rate:.0} keys/s in the latest {}",
                    p.latest_command.as_deref().unwrap_or("run")
                );
            }
            None => {}
        }
        if let Some(eta) = p.eta_seconds {
            let _ = write!(
                line,
                ", ETA {}",
                short_duration(std::time::Duration::from_secs(eta))
            );
        }
        let _ = writeln!(out, "{line}");
        if let Some(follow) = &self.follow {
            let _ = writeln!(
                out,
                "follow:   {}",
                follow_text(follow, job.state == "following")
            );
            for gap in &self.follow_gaps {
                let closed = match (&gap.caught_up_at, gap.keys_differing) {
                    (Some(at), Some(keys)) => format!(
                        "caught up at {at}, {} differed",
                        crate::output::count(keys, "key")
                    ),
                    _ => "not caught up yet".to_string(),
                };
                let _ = writeln!(
                    out,
                    "  gap at {} ({}): {}; {closed}",
                    gap.at, gap.kind, gap.reason
                );
            }
        }
        if !self.workers.is_empty() {
            out.push_str(&workers_text(&self.workers));
        } else if !self.cursors.is_empty() {
            let _ = writeln!(out, "cursors:");
            for c in &self.cursors {
                let state = if c.done {
                    "done".to_string()
                } else {
                    format!("at cursor {}", c.cursor)
                };
                let expected = c
                    .keys_expected
                    .map(|e| format!(" of ~{e}"))
                    .unwrap_or_default();
                let _ = writeln!(
                    out,
                    "  {} db {} -> db {}: {}{} keys scanned, {}",
                    c.node, c.db, c.target_db, c.keys_scanned, expected, state
                );
            }
        }
        if let Some(error) = &job.last_error {
            let _ = writeln!(out, "stopped because: {error}");
        }
        if !self.last_errors.is_empty() {
            let _ = writeln!(out, "last errors:");
            for e in &self.last_errors {
                let _ = writeln!(out, "  db {} \"{}\": {} ({})", e.db, e.key, e.error, e.at);
            }
        }
        for note in &self.notes {
            let _ = writeln!(out, "note:     {note}");
        }
        if !self.workers.is_empty() {
            out.push_str(&workers_next(&self.workers, &job.source, &job.target));
        } else if !job.active && matches!(job.state.as_str(), "interrupted" | "failed" | "running")
        {
            let _ = writeln!(
                out,
                "next:     `{}` continues the job{}",
                hint::command("resume", journal, ""),
                hint::passwords_again(&job.source, &job.target)
            );
        }
        out
    }
}

/// One line per worker of a sharded job: shard, slots, state, counts and
/// how far its scan got.
fn workers_text(workers: &[crate::shard::workers::WorkerView]) -> String {
    let mut out = String::from("workers:\n");
    let width = |text: &dyn Fn(&crate::shard::workers::WorkerView) -> String| {
        workers.iter().map(|w| text(w).len()).max().unwrap_or(0)
    };
    let shard = |w: &crate::shard::workers::WorkerView| w.shard.clone().unwrap_or("?".into());
    let slots = |w: &crate::shard::workers::WorkerView| w.slots.clone().unwrap_or_default();
    let state = |w: &crate::shard::workers::WorkerView| {
        format!("{}{}", w.state, if w.active { " (working)" } else { "" })
    };
    let (shard_width, slots_width, state_width) = (width(&shard), width(&slots), width(&state));
    for worker in workers {
        let o = &worker.outcomes;
        let progress = worker
            .progress
            .as_ref()
            .map(|p| {
                let rate = p
                    .rate_keys_per_second
                    .filter(|_| worker.active)
                    .map(|rate| format!(", {rate:.0} keys/s"))
                    .unwrap_or_default();
                format!("; {} of ~{} scanned{rate}", p.keys_scanned, p.keys_expected)
            })
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {:<shard_width$}  slots {:<slots_width$}  {:<state_width$}  {} restored, {} expired, {} skipped, {} failed, {} mismatch{progress}  ({})",
            shard(worker),
            slots(worker),
            state(worker),
            o.restored,
            o.expired,
            o.skipped,
            o.failed,
            o.mismatch,
            worker.journal
        );
    }
    out
}

/// The commands that continue the workers no process is working on.
fn workers_next(
    workers: &[crate::shard::workers::WorkerView],
    source: &str,
    target: &str,
) -> String {
    let mut out = String::new();
    for worker in workers
        .iter()
        .filter(|w| !w.active && matches!(w.state.as_str(), "interrupted" | "failed" | "running"))
    {
        let _ = writeln!(
            out,
            "next:     `{}` continues shard {}{}",
            hint::command("resume", Path::new(&worker.journal), ""),
            worker.shard.as_deref().unwrap_or("?"),
            hint::passwords_again(source, target)
        );
    }
    out
}

/// `in sync (0 keys pending), 1204 changes applied, 0 gaps`.
fn follow_text(follow: &crate::follow::FollowView, following: bool) -> String {
    let standing = if !following {
        "not following now".to_string()
    } else if follow.in_sync {
        "in sync".to_string()
    } else {
        format!(
            "{} pending, lag {:.1}s",
            crate::output::count(follow.pending_keys, "key"),
            follow.lag_ms as f64 / 1000.0
        )
    };
    format!(
        "{standing}; {} applied, {}",
        crate::output::count(follow.changes_applied, "change"),
        crate::output::count(follow.gaps, "gap")
    )
}

/// What `status` shows of a journal that a process is creating: the
/// contract's object with state `starting` and nothing known yet.
#[derive(Debug, Clone, Serialize)]
pub struct StartingSummary {
    pub job: StartingJob,
    pub outcomes: OutcomeCounts,
    pub dbs: Vec<DbView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StartingJob {
    pub state: &'static str,
    pub source: Option<String>,
    pub target: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub active: bool,
}

impl StartingSummary {
    pub fn new() -> StartingSummary {
        StartingSummary {
            job: StartingJob {
                state: "starting",
                source: None,
                target: None,
                started_at: None,
                finished_at: None,
                active: true,
            },
            outcomes: OutcomeCounts::default(),
            dbs: Vec::new(),
        }
    }

    pub fn to_text(&self, journal: &Path) -> String {
        format!(
            "job:      starting (a redis-ferry process is creating journal {}; nothing is recorded yet)\n",
            journal.display()
        )
    }
}

impl Default for StartingSummary {
    fn default() -> Self {
        StartingSummary::new()
    }
}

/// `redis-ferry status [--json]` on several journals: the workers of one
/// sharded job, shown as one job (one journal: as [`run`]).
pub fn run_merged(journal_paths: &[std::path::PathBuf], json: bool) -> Result<Exit> {
    if let [only] = journal_paths {
        return run(only, json);
    }
    let workers = crate::shard::workers::Workers::open(journal_paths)?;
    let summary = crate::shard::workers::merge(&workers)?;
    let text = if json {
        serde_json::to_string_pretty(&summary)? + "\n"
    } else {
        summary.to_text(&workers.journals[0].path)
    };
    crate::output::print(&text)?;
    Ok(Exit::Success)
}

/// `redis-ferry status [--json]`.
pub fn run(journal_path: &Path, json: bool) -> Result<Exit> {
    let journal = JournalReader::open(journal_path)?;
    let text = match journal.contents()? {
        Contents::Starting if json => serde_json::to_string_pretty(&StartingSummary::new())? + "\n",
        Contents::Starting => StartingSummary::new().to_text(journal_path),
        Contents::Job(_) => {
            let summary = JobSummary::read(&journal)?;
            if json {
                serde_json::to_string_pretty(&summary)? + "\n"
            } else {
                summary.to_text(journal_path)
            }
        }
    };
    crate::output::print(&text)?;
    Ok(Exit::Success)
}
