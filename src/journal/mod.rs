//! The journal: one SQLite file that records a job, its SCAN cursors and the
//! latest outcome of every key, so a job survives any interruption.
//!
//! The one rule everything else leans on: a batch's key outcomes, the
//! per-database counts and the cursor move forward in **one transaction**,
//! written after the target acknowledged the batch
//! ([`Journal::commit_batches`]). A process killed at any moment leaves
//! either all of a batch or none of it.
//!
//! # Layout
//! - [`open`]: file checks, pragmas, schema migrations (the SQL lives in the
//!   top-level `migrations/` folder) and creating a new journal atomically.
//!   Writers only.
//! - [`write`]: [`Journal`], the one process that drives a job: the lock,
//!   the job, cursor and run rows, and [`Journal::commit_batches`].
//! - [`index`]: how the writer finds out, at a hundred million keys, whether
//!   an arriving key was recorded before (counts are of distinct keys).
//! - [`read`]: [`JournalReader`], read-only, for `status`, `report`,
//!   `retry`'s pages and anything else that only looks; it never writes,
//!   never migrates, and reads a journal that another process is writing,
//!   or a read-only copy.
//! - [`lock`]: one process per journal.
//!
//! # Keys on disk
//! `key_log` holds one row per distinct key, appended in the order keys
//! are first recorded (so a transaction writes at the end of the table, not
//! all over it, whatever order SCAN returns keys in); a key recorded again
//! (SCAN returned it twice, a rescan, `retry`, `verify`) has its row updated
//! in place. Outcomes and write methods are small integers ([`codes`]);
//! a row's time is that of its transaction (`journal_commits`).

mod codes;
mod follow;
mod index;
mod lock;
mod open;
mod read;
mod write;

use std::path::PathBuf;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

pub use follow::{FollowPhase, FollowRecord, GapRecord};
pub use index::IndexStats;
pub use lock::{JournalLock, is_locked, lock_path};
pub use open::schema_version;
pub use read::{Contents, JournalReader, KeyPosition, PagedKey};
pub use write::Journal;

use crate::clock::now_ms;
use crate::options::CopyOptions;
use crate::outcome::{KeyResult, Outcome, WriteMethod};
use crate::scan::Checkpoint;

/// State of the job in the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Running,
    Interrupted,
    Completed,
    Failed,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Interrupted => "interrupted",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
        }
    }

    fn parse(text: &str) -> Result<JobState> {
        Ok(match text {
            "running" => JobState::Running,
            "interrupted" => JobState::Interrupted,
            "completed" => JobState::Completed,
            "failed" => JobState::Failed,
            other => bail!("the journal holds an unknown job state {other:?}"),
        })
    }
}

/// The job row.
#[derive(Debug, Clone)]
pub struct JobRecord {
    pub state: JobState,
    /// Redacted URLs (password shown as `***`).
    pub source_url: String,
    pub target_url: String,
    pub source_tls_ca: Option<PathBuf>,
    pub target_tls_ca: Option<PathBuf>,
    pub options: CopyOptions,
    /// JSON list of the source cluster's primaries when the job started.
    pub source_nodes: Option<String>,
    /// JSON list of the target's primaries and their run_ids (see
    /// [`crate::side::NodeIdentity`]), recorded when the job started.
    pub target_nodes: Option<String>,
    pub started_at: i64,
    pub updated_at: i64,
    pub finished_at: Option<i64>,
    pub last_error: Option<String>,
}

impl JobRecord {
    /// A job as recorded when it starts: now, no TLS CA, no cluster nodes.
    pub fn new(
        state: JobState,
        source_url: &str,
        target_url: &str,
        options: CopyOptions,
    ) -> JobRecord {
        let now = now_ms();
        JobRecord {
            state,
            source_url: source_url.to_string(),
            target_url: target_url.to_string(),
            source_tls_ca: None,
            target_tls_ca: None,
            options,
            source_nodes: None,
            target_nodes: None,
            started_at: now,
            updated_at: now,
            finished_at: None,
            last_error: None,
        }
    }
}

/// One planned or progressing SCAN cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CursorRecord {
    pub node: String,
    pub db: i64,
    pub target_db: i64,
    pub cursor: u64,
    pub done: bool,
    pub run_id: Option<String>,
    pub keys_scanned: u64,
    pub keys_expected: Option<u64>,
    pub updated_at: i64,
    /// Cluster source: the node's slots and epoch when this pass started (JSON).
    pub node_layout: Option<String>,
}

/// One batch's results, ready to journal.
#[derive(Debug, Clone, Copy)]
pub struct BatchRecord<'a> {
    /// Source database of every key in the batch.
    pub db: i64,
    pub results: &'a [KeyResult],
    /// The cursor to record once these keys are journaled, if any.
    pub checkpoint: Option<&'a Checkpoint>,
}

/// One row of the per-key audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRow {
    pub db: i64,
    pub key: Vec<u8>,
    pub outcome: Outcome,
    pub ttl_ms: Option<i64>,
    pub size_bytes: Option<i64>,
    pub attempts: i64,
    pub error: Option<String>,
    pub updated_at: i64,
    /// How the key was last written; `None` when nothing was written.
    pub method: Option<WriteMethod>,
}

/// One invocation (run, resume, retry, verify) that worked on the job.
#[derive(Debug, Clone)]
pub struct RunRecord {
    pub id: i64,
    pub command: String,
    pub started_at: i64,
    pub updated_at: i64,
    pub finished_at: Option<i64>,
    pub keys_processed: u64,
    pub exit_code: Option<i64>,
}
