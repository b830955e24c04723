//! The journal: one SQLite file that records a job, its SCAN cursors and the
//! latest outcome of every key, so a job survives any interruption.
//!
//! The schema lives in the top-level `migrations/` folder, embedded at build
//! time and applied with rusqlite_migration; `PRAGMA user_version` holds the
//! schema version, and a journal written by a newer redis-ferry is refused.
//! The journal runs in WAL mode, so `status` reads while a run writes.
//!
//! The one rule everything else leans on: a batch's key outcomes, the
//! per-database counts and the cursor move forward in **one transaction**,
//! written after the target acknowledged the batch ([`Journal::commit_batch`]).
//! A process killed at any moment leaves either all of a batch or none of it.

mod lock;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use anyhow::{Context, Result, bail};
use include_dir::{Dir, include_dir};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use rusqlite_migration::Migrations;
use serde::{Deserialize, Serialize};

pub use lock::{JournalLock, is_locked, lock_path};

use crate::clock::now_ms;
use crate::options::{CopyOptions, JournalKeys};
use crate::outcome::{KeyResult, Outcome, OutcomeCounts};
use crate::scan::Checkpoint;

static MIGRATIONS_DIR: Dir = include_dir!("$CARGO_MANIFEST_DIR/migrations");

static MIGRATIONS: LazyLock<Migrations<'static>> = LazyLock::new(|| {
    Migrations::from_directory(&MIGRATIONS_DIR)
        .expect("migrations/ is embedded at build time and valid")
});

/// The schema version this build writes (number of migrations).
pub fn schema_version() -> i64 {
    MIGRATIONS_DIR.dirs().count() as i64
}

/// The first bytes of every SQLite 3 database file.
const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

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

pub struct Journal {
    connection: Connection,
    path: PathBuf,
    _lock: Option<JournalLock>,
    /// The `runs` row of this invocation, once started.
    run: Option<i64>,
}

impl Journal {
    /// Opens the journal for a new job (`run`). Refuses, leaving the file
    /// byte-for-byte unchanged, when it is not a journal or already holds
    /// a job.
    pub fn create(path: &Path) -> Result<Journal> {
        Journal::precheck_new(path)?;
        let lock = JournalLock::acquire(path)?;
        let mut journal = Journal::open_locked(path, Some(lock))?;
        // A second `run` could have created a job between the check and the lock.
        if let Some(job) = journal.job()? {
            return Err(refuse_second_job(path, &job));
        }
        journal.run = None;
        Ok(journal)
    }

    /// The checks of [`Journal::create`] that need no lock and write
    /// nothing: run them before connecting anywhere, so a journal that
    /// already holds a job is reported first.
    pub fn precheck_new(path: &Path) -> Result<()> {
        if path.exists() {
            check_is_sqlite(path)?;
            if std::fs::metadata(path)?.len() > 0 {
                let existing = open_connection(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
                check_schema_version(&existing, path)?;
                if let Some(job) = read_job(&existing, path)? {
                    return Err(refuse_second_job(path, &job));
                }
            }
        }
        Ok(())
    }

    /// Opens an existing journal to drive its job (`resume`, `retry`,
    /// `verify`), taking the lock.
    pub fn open_to_drive(path: &Path) -> Result<Journal> {
        check_exists(path)?;
        check_is_sqlite(path)?;
        let lock = JournalLock::acquire(path)?;
        let journal = Journal::open_locked(path, Some(lock))?;
        journal.require_job()?;
        Ok(journal)
    }

    /// Opens an existing journal to read it (`status`, `report`) while
    /// another process may be writing.
    pub fn open_to_read(path: &Path) -> Result<Journal> {
        check_exists(path)?;
        check_is_sqlite(path)?;
        let journal = Journal::open_locked(path, None)?;
        journal.require_job()?;
        Ok(journal)
    }

    fn open_locked(path: &Path, lock: Option<JournalLock>) -> Result<Journal> {
        let mut connection = open_connection(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
        )?;
        check_schema_version(&connection, path)?;
        check_is_ours(&connection, path)?;
        connection
            .pragma_update(None, "journal_mode", "WAL")
            .with_context(|| format!("cannot open journal {}", path.display()))?;
        let pending = MIGRATIONS
            .pending_migrations(&connection)
            .with_context(|| format!("cannot read the schema of journal {}", path.display()))?;
        if pending > 0 {
            MIGRATIONS
                .to_latest(&mut connection)
                .with_context(|| format!("cannot upgrade journal {}", path.display()))?;
        }
        limit_page_cache(&connection)?;
        Ok(Journal {
            connection,
            path: path.to_path_buf(),
            _lock: lock,
            run: None,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn require_job(&self) -> Result<JobRecord> {
        self.job()?.with_context(|| {
            format!(
                "journal {} holds no job; start one with `redis-ferry run --journal {}`",
                self.path.display(),
                self.path.display()
            )
        })
    }

    /// The job, if one was recorded.
    pub fn job(&self) -> Result<Option<JobRecord>> {
        read_job(&self.connection, &self.path)
    }

    /// Records a new job with the cursors it starts from, in one
    /// transaction: a process killed in between must not leave a job without
    /// cursors, which would read as "everything scanned".
    pub fn insert_job(&mut self, job: &JobRecord, cursors: &[CursorRecord]) -> Result<()> {
        let transaction = self.connection.transaction()?;
        transaction.execute(
            "INSERT INTO job (id, state, source_url, target_url, source_tls_ca, target_tls_ca, options,
                              source_nodes, started_at, updated_at, finished_at, last_error, target_nodes)
             VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, NULL, NULL, ?9)",
            params![
                job.state.as_str(),
                job.source_url,
                job.target_url,
                job.source_tls_ca.as_ref().map(|p| p.display().to_string()),
                job.target_tls_ca.as_ref().map(|p| p.display().to_string()),
                serde_json::to_string(&job.options)?,
                job.source_nodes,
                job.started_at,
                job.target_nodes,
            ],
        )?;
        insert_cursors(&transaction, cursors)?;
        transaction.commit()?;
        Ok(())
    }

    /// Moves the job to `state`, keeping `error` as the reason it stopped.
    pub fn set_job_state(&self, state: JobState, error: Option<&str>) -> Result<()> {
        let now = now_ms();
        let finished = (state == JobState::Completed).then_some(now);
        self.connection.execute(
            "UPDATE job SET state = ?1, updated_at = ?2, finished_at = ?3, last_error = ?4 WHERE id = 1",
            params![state.as_str(), now, finished, error],
        )?;
        Ok(())
    }

    /// Updates the stored (redacted) URLs when a later command gave new ones.
    pub fn set_job_urls(&self, source_url: &str, target_url: &str) -> Result<()> {
        self.connection.execute(
            "UPDATE job SET source_url = ?1, target_url = ?2 WHERE id = 1",
            params![source_url, target_url],
        )?;
        Ok(())
    }

    /// Records the target's primaries as they are now (after the job
    /// noticed a restart and copies everything again).
    pub fn set_target_nodes(&self, nodes: &str) -> Result<()> {
        self.connection.execute(
            "UPDATE job SET target_nodes = ?1 WHERE id = 1",
            params![nodes],
        )?;
        Ok(())
    }

    /// Starts every cursor over from 0: the target may have lost keys that
    /// the journal records as copied, so the whole source is copied again.
    pub fn restart_all_cursors(&self) -> Result<()> {
        self.connection.execute(
            "UPDATE cursors SET cursor = '0', done = 0, keys_scanned = 0, updated_at = ?1",
            params![now_ms()],
        )?;
        Ok(())
    }

    pub fn set_source_nodes(&self, nodes: &str) -> Result<()> {
        self.connection.execute(
            "UPDATE job SET source_nodes = ?1 WHERE id = 1",
            params![nodes],
        )?;
        Ok(())
    }

    /// Adds cursors to scan (new ones start at 0; existing ones are kept).
    pub fn plan_cursors(&mut self, cursors: &[CursorRecord]) -> Result<()> {
        let transaction = self.connection.transaction()?;
        insert_cursors(&transaction, cursors)?;
        transaction.commit()?;
        Ok(())
    }

    /// Every cursor, in (node, db) order.
    pub fn cursors(&self) -> Result<Vec<CursorRecord>> {
        let mut statement = self.connection.prepare(
            "SELECT node, db, target_db, cursor, done, run_id, keys_scanned, keys_expected, updated_at, node_layout
             FROM cursors ORDER BY node, db",
        )?;
        let rows = statement.query_map([], |row| {
            let cursor: String = row.get(3)?;
            Ok(CursorRecord {
                node: row.get(0)?,
                db: row.get(1)?,
                target_db: row.get(2)?,
                cursor: cursor.parse().unwrap_or(0),
                done: row.get(4)?,
                run_id: row.get(5)?,
                keys_scanned: row.get::<_, i64>(6)? as u64,
                keys_expected: row.get::<_, Option<i64>>(7)?.map(|k| k as u64),
                updated_at: row.get(8)?,
                node_layout: row.get(9)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Starts a scan over from cursor 0 (the server restarted, or its node
    /// may have received keys behind its cursor): what it covered before
    /// can no longer be proven.
    pub fn restart_cursor(
        &self,
        node: &str,
        db: i64,
        run_id: &str,
        node_layout: Option<&str>,
    ) -> Result<()> {
        self.connection.execute(
            "UPDATE cursors SET cursor = '0', done = 0, keys_scanned = 0, run_id = ?3, node_layout = ?4,
                                updated_at = ?5
             WHERE node = ?1 AND db = ?2",
            params![node, db, run_id, node_layout, now_ms()],
        )?;
        Ok(())
    }

    /// Records which server process a cursor belongs to and the node's
    /// current layout, without restarting its scan (it has not started, or
    /// the node only lost slots: every key it still has was there all along).
    pub fn set_cursor_identity(
        &self,
        node: &str,
        db: i64,
        run_id: &str,
        node_layout: Option<&str>,
    ) -> Result<()> {
        self.connection.execute(
            "UPDATE cursors SET run_id = ?3, node_layout = ?4 WHERE node = ?1 AND db = ?2",
            params![node, db, run_id, node_layout],
        )?;
        Ok(())
    }

    /// Drops the cursor of a node that is no longer a primary (its keys are
    /// on nodes that are scanned).
    pub fn remove_cursor(&self, node: &str, db: i64) -> Result<()> {
        self.connection.execute(
            "DELETE FROM cursors WHERE node = ?1 AND db = ?2",
            params![node, db],
        )?;
        Ok(())
    }

    /// Marks the start of an invocation working on the job.
    pub fn begin_run(&mut self, command: &str) -> Result<i64> {
        let now = now_ms();
        self.connection.execute(
            "INSERT INTO runs (command, started_at, updated_at) VALUES (?1, ?2, ?2)",
            params![command, now],
        )?;
        let id = self.connection.last_insert_rowid();
        self.run = Some(id);
        Ok(id)
    }

    /// Marks the end of this invocation with its exit code.
    pub fn end_run(&self, exit_code: u8) -> Result<()> {
        if let Some(id) = self.run {
            self.connection.execute(
                "UPDATE runs SET finished_at = ?1, updated_at = ?1, exit_code = ?2 WHERE id = ?3",
                params![now_ms(), exit_code, id],
            )?;
        }
        Ok(())
    }

    /// Sets this run's key count where it is not the rows it wrote
    /// (`verify` records only differences, but compared every key).
    pub fn set_run_keys(&self, keys: u64) -> Result<()> {
        if let Some(id) = self.run {
            self.connection.execute(
                "UPDATE runs SET keys_processed = ?1, updated_at = ?2 WHERE id = ?3",
                params![keys as i64, now_ms(), id],
            )?;
        }
        Ok(())
    }

    /// Records one batch; see [`Journal::commit_batches`].
    pub fn commit_batch(
        &mut self,
        db: i64,
        results: &[KeyResult],
        checkpoint: Option<&Checkpoint>,
        journal_keys: JournalKeys,
    ) -> Result<()> {
        self.commit_batches(
            &[BatchRecord {
                db,
                results,
                checkpoint,
            }],
            journal_keys,
        )
    }

    /// Records batches: every key's outcome, the counts, the cursors and
    /// this run's progress, in one transaction. Call only after the target
    /// acknowledged every write of these batches, and pass a node's batches
    /// in scan order (its cursor ends at the last one's checkpoint).
    ///
    /// Keys are written in key order rather than scan (hash) order: it
    /// touches each B-tree page once per transaction instead of once per
    /// key, which is most of the journal's cost.
    pub fn commit_batches(
        &mut self,
        batches: &[BatchRecord<'_>],
        journal_keys: JournalKeys,
    ) -> Result<()> {
        let now = now_ms();
        // A key present twice keeps its batches' order (the sequence number
        // breaks ties), so the later outcome is written last and wins.
        let mut sequenced: Vec<(i64, &KeyResult, usize)> = batches
            .iter()
            .flat_map(|batch| batch.results.iter().map(move |result| (batch.db, result)))
            .enumerate()
            .map(|(sequence, (db, result))| (db, result, sequence))
            .collect();
        sequenced.sort_unstable_by(|a, b| (a.0, &a.1.key, a.2).cmp(&(b.0, &b.1.key, b.2)));
        let rows: Vec<(i64, &KeyResult)> = sequenced
            .into_iter()
            .map(|(db, result, _)| (db, result))
            .collect();
        let transaction = self.connection.transaction()?;
        let deltas = write_key_rows(&transaction, &rows, journal_keys, now)?;
        {
            let mut count = transaction.prepare_cached(
                "INSERT INTO counts (db, outcome, keys) VALUES (?1, ?2, ?3)
                 ON CONFLICT (db, outcome) DO UPDATE SET keys = keys + excluded.keys",
            )?;
            for ((db, outcome), delta) in deltas.into_iter().filter(|(_, delta)| *delta != 0) {
                count.execute(params![db, outcome, delta])?;
            }
            let mut cursor = transaction.prepare_cached(
                "UPDATE cursors SET cursor = ?3, done = ?4, run_id = ?5,
                                    keys_scanned = keys_scanned + ?6, updated_at = ?7
                 WHERE node = ?1 AND db = ?2",
            )?;
            for checkpoint in batches.iter().filter_map(|batch| batch.checkpoint) {
                cursor.execute(params![
                    checkpoint.node,
                    checkpoint.db,
                    checkpoint.cursor.to_string(),
                    checkpoint.done,
                    checkpoint.run_id,
                    checkpoint.scanned as i64,
                    now
                ])?;
            }
            if let Some(run) = self.run {
                transaction
                    .prepare_cached("UPDATE runs SET keys_processed = keys_processed + ?1, updated_at = ?2 WHERE id = ?3")?
                    .execute(params![rows.len() as i64, now, run])?;
            }
        }
        transaction
            .commit()
            .context("cannot write to the journal")?;
        Ok(())
    }

    /// Distinct keys per source database and latest outcome.
    pub fn counts(&self) -> Result<BTreeMap<i64, OutcomeCounts>> {
        let mut statement = self
            .connection
            .prepare("SELECT db, outcome, keys FROM counts ORDER BY db")?;
        let mut counts: BTreeMap<i64, OutcomeCounts> = BTreeMap::new();
        let rows = statement.query_map([], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, i64>(2)?,
            ))
        })?;
        for row in rows {
            let (db, outcome, keys) = row?;
            let outcome: Outcome = outcome.parse().map_err(anyhow::Error::msg)?;
            counts.entry(db).or_default().add(outcome, keys);
        }
        Ok(counts)
    }

    /// The most recent per-key errors, newest first.
    pub fn last_errors(&self, limit: usize) -> Result<Vec<KeyRow>> {
        self.key_rows(
            "SELECT db, key, outcome, ttl_ms, size_bytes, attempts, error, updated_at FROM keys
             WHERE outcome <> 'restored' AND outcome = 'failed'
             ORDER BY updated_at DESC LIMIT ?1",
            params![limit as i64],
        )
    }

    /// The most frequent per-key error texts with their counts.
    pub fn top_errors(&self, limit: usize) -> Result<Vec<(String, u64)>> {
        let mut statement = self.connection.prepare(
            "SELECT error, COUNT(*) FROM keys WHERE outcome <> 'restored' AND outcome = 'failed'
             GROUP BY error ORDER BY COUNT(*) DESC, error LIMIT ?1",
        )?;
        let rows = statement.query_map(params![limit as i64], |row| {
            Ok((
                row.get::<_, Option<String>>(0)?.unwrap_or_default(),
                row.get::<_, i64>(1)? as u64,
            ))
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Up to `limit` keys whose latest outcome is one of `outcomes`, after
    /// `(db, key)` in key order: pages for `retry`.
    pub fn keys_with_outcomes(
        &self,
        outcomes: &[Outcome],
        after: Option<(i64, &[u8])>,
        limit: usize,
    ) -> Result<Vec<(i64, Vec<u8>)>> {
        let wanted: Vec<&str> = outcomes.iter().map(|o| o.as_str()).collect();
        let wanted = serde_json::to_string(&wanted)?;
        let (after_db, after_key) = after.unwrap_or((i64::MIN, &[]));
        // `outcome <> 'restored'` lets SQLite use the partial index.
        let mut statement = self.connection.prepare_cached(
            "SELECT db, key FROM keys
             WHERE outcome <> 'restored' AND outcome IN (SELECT value FROM json_each(?1))
               AND (db > ?2 OR (db = ?2 AND key > ?3))
             ORDER BY db, key LIMIT ?4",
        )?;
        let rows = statement
            .query_map(params![wanted, after_db, after_key, limit as i64], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Calls `each` for every key row in (db, key) order, streaming (the
    /// journal may hold hundreds of millions of rows).
    pub fn for_each_key(&self, mut each: impl FnMut(KeyRow) -> Result<()>) -> Result<()> {
        let mut statement = self.connection.prepare(
            "SELECT db, key, outcome, ttl_ms, size_bytes, attempts, error, updated_at FROM keys ORDER BY db, key",
        )?;
        let mut rows = statement.query([])?;
        while let Some(row) = rows.next()? {
            each(key_row(row)?)?;
        }
        Ok(())
    }

    /// The latest outcome of one key, if it has a row.
    pub fn key(&self, db: i64, key: &[u8]) -> Result<Option<KeyRow>> {
        Ok(self
            .key_rows(
                "SELECT db, key, outcome, ttl_ms, size_bytes, attempts, error, updated_at FROM keys
                 WHERE db = ?1 AND key = ?2",
                params![db, key],
            )?
            .pop())
    }

    fn key_rows(&self, sql: &str, parameters: impl rusqlite::Params) -> Result<Vec<KeyRow>> {
        let mut statement = self.connection.prepare(sql)?;
        let mut rows = statement.query(parameters)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            out.push(key_row(row)?);
        }
        Ok(out)
    }

    /// Every invocation, oldest first.
    pub fn runs(&self) -> Result<Vec<RunRecord>> {
        let mut statement = self.connection.prepare(
            "SELECT id, command, started_at, updated_at, finished_at, keys_processed, exit_code FROM runs ORDER BY id",
        )?;
        let rows = statement.query_map([], |row| {
            Ok(RunRecord {
                id: row.get(0)?,
                command: row.get(1)?,
                started_at: row.get(2)?,
                updated_at: row.get(3)?,
                finished_at: row.get(4)?,
                keys_processed: row.get::<_, i64>(5)? as u64,
                exit_code: row.get(6)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }
}

fn insert_cursors(transaction: &rusqlite::Transaction<'_>, cursors: &[CursorRecord]) -> Result<()> {
    let mut insert = transaction.prepare(
        "INSERT OR IGNORE INTO cursors (node, db, target_db, cursor, done, run_id, keys_scanned, keys_expected, updated_at, node_layout)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?;
    for cursor in cursors {
        insert.execute(params![
            cursor.node,
            cursor.db,
            cursor.target_db,
            cursor.cursor.to_string(),
            cursor.done,
            cursor.run_id,
            cursor.keys_scanned as i64,
            cursor.keys_expected.map(|k| k as i64),
            cursor.updated_at,
            cursor.node_layout,
        ])?;
    }
    Ok(())
}

fn key_row(row: &rusqlite::Row<'_>) -> Result<KeyRow> {
    let outcome: String = row.get(2)?;
    Ok(KeyRow {
        db: row.get(0)?,
        key: row.get(1)?,
        outcome: outcome.parse().map_err(anyhow::Error::msg)?,
        ttl_ms: row.get(3)?,
        size_bytes: row.get(4)?,
        attempts: row.get(5)?,
        error: row.get(6)?,
        updated_at: row.get(7)?,
    })
}

/// Keys written per INSERT statement: per-statement overhead was a third
/// of the journal's cost with one statement per key.
const ROWS_PER_INSERT: usize = 100;

/// Writes each key's latest outcome and returns how the per-database
/// counts move. Keys are upserted many per statement; RETURNING tells, for
/// each, whether it was new (`attempts` = 1) or which outcome it replaced,
/// so a key seen again (SCAN duplicate, rescan, retry) moves its count
/// instead of adding one.
fn write_key_rows(
    transaction: &rusqlite::Transaction<'_>,
    rows: &[(i64, &KeyResult)],
    journal_keys: JournalKeys,
    now: i64,
) -> Result<BTreeMap<(i64, Outcome), i64>> {
    let mut deltas: BTreeMap<(i64, Outcome), i64> = BTreeMap::new();
    let (kept, unkept): (Vec<_>, Vec<_>) = rows
        .iter()
        .copied()
        .partition(|(_, result)| keeps_row(journal_keys, result.outcome));
    for chunk in kept.chunks(ROWS_PER_INSERT) {
        let mut statement =
            chunk_statement(transaction, &UPSERT_FULL_CHUNK, chunk.len(), upsert_sql)?;
        let mut parameters: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(chunk.len() * 7);
        for (db, result) in chunk {
            parameters.extend_from_slice(&[
                db,
                &result.key,
                &result.outcome,
                &result.ttl_ms,
                &result.size_bytes,
                &result.error,
                &now,
            ]);
        }
        let mut returned = statement.query(parameters.as_slice())?;
        while let Some(row) = returned.next()? {
            let (db, attempts, previous): (i64, i64, Option<String>) =
                (row.get(0)?, row.get(1)?, row.get(2)?);
            if attempts > 1
                && let Some(previous) = previous
            {
                *deltas
                    .entry((db, previous.parse().map_err(anyhow::Error::msg)?))
                    .or_default() -= 1;
            }
        }
    }
    // `--journal-keys failures`: a key without a row stays without one, but
    // one that has a row (it failed before) gets its new outcome. One probe
    // per chunk finds those (usually none) without a statement per key.
    let mut update = transaction.prepare_cached(
        "UPDATE keys SET previous_outcome = outcome, outcome = ?3, ttl_ms = ?4, size_bytes = ?5,
                         attempts = attempts + 1, error = ?6, updated_at = ?7
         WHERE db = ?1 AND key = ?2
         RETURNING previous_outcome",
    )?;
    for chunk in unkept.chunks(ROWS_PER_INSERT) {
        for (db, result) in journaled_among(transaction, chunk)? {
            let previous: Option<String> = update
                .query_row(
                    params![
                        db,
                        result.key,
                        result.outcome,
                        result.ttl_ms,
                        result.size_bytes,
                        result.error,
                        now
                    ],
                    |row| row.get(0),
                )
                .optional()?;
            if let Some(previous) = previous {
                *deltas
                    .entry((db, previous.parse().map_err(anyhow::Error::msg)?))
                    .or_default() -= 1;
            }
        }
    }
    for (db, result) in rows {
        *deltas.entry((*db, result.outcome)).or_default() += 1;
    }
    Ok(deltas)
}

/// The keys of `chunk` that already have a row.
fn journaled_among<'r>(
    transaction: &rusqlite::Transaction<'_>,
    chunk: &[(i64, &'r KeyResult)],
) -> Result<Vec<(i64, &'r KeyResult)>> {
    let mut statement = chunk_statement(transaction, &PROBE_FULL_CHUNK, chunk.len(), probe_sql)?;
    let mut parameters: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(chunk.len() * 2);
    for (db, result) in chunk {
        parameters.extend_from_slice(&[db, &result.key]);
    }
    let mut found = Vec::new();
    let mut rows = statement.query(parameters.as_slice())?;
    while let Some(row) = rows.next()? {
        let (db, key): (i64, Vec<u8>) = (row.get(0)?, row.get(1)?);
        found.extend(
            chunk
                .iter()
                .filter(|(d, r)| *d == db && r.key == key)
                .copied(),
        );
    }
    Ok(found)
}

/// The statements for a full chunk, built once.
static UPSERT_FULL_CHUNK: LazyLock<String> = LazyLock::new(|| upsert_sql(ROWS_PER_INSERT));
static PROBE_FULL_CHUNK: LazyLock<String> = LazyLock::new(|| probe_sql(ROWS_PER_INSERT));

/// A multi-row statement for a chunk of `rows` keys. The full-size one is
/// prepared once and cached; only a transaction's last, shorter chunk gets
/// a statement of its own (caching every size would evict the full one).
fn chunk_statement<'t>(
    transaction: &'t rusqlite::Transaction<'_>,
    full_chunk_sql: &str,
    rows: usize,
    sql_for: fn(usize) -> String,
) -> Result<ChunkStatement<'t>> {
    Ok(if rows == ROWS_PER_INSERT {
        ChunkStatement::Cached(transaction.prepare_cached(full_chunk_sql)?)
    } else {
        ChunkStatement::Fresh(transaction.prepare(&sql_for(rows))?)
    })
}

enum ChunkStatement<'t> {
    Cached(rusqlite::CachedStatement<'t>),
    Fresh(rusqlite::Statement<'t>),
}

impl<'t> std::ops::Deref for ChunkStatement<'t> {
    type Target = rusqlite::Statement<'t>;
    fn deref(&self) -> &Self::Target {
        match self {
            ChunkStatement::Cached(statement) => statement,
            ChunkStatement::Fresh(statement) => statement,
        }
    }
}

impl std::ops::DerefMut for ChunkStatement<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        match self {
            ChunkStatement::Cached(statement) => statement,
            ChunkStatement::Fresh(statement) => statement,
        }
    }
}

/// `SELECT db, key FROM keys WHERE (db, key) IN (VALUES (?, ?) x rows)`.
fn probe_sql(rows: usize) -> String {
    format!(
        "SELECT db, key FROM keys WHERE (db, key) IN (VALUES {})",
        vec!["(?, ?)"; rows].join(", ")
    )
}

/// Outcomes are stored as their names.
impl rusqlite::ToSql for Outcome {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(rusqlite::types::ToSqlOutput::Borrowed(
            rusqlite::types::ValueRef::Text(self.as_str().as_bytes()),
        ))
    }
}

/// `INSERT ... VALUES (...) x rows ... ON CONFLICT DO UPDATE ... RETURNING`.
/// In DO UPDATE, `keys.outcome` is the row's value before the update.
fn upsert_sql(rows: usize) -> String {
    let values = vec!["(?, ?, ?, ?, ?, 1, ?, ?)"; rows].join(", ");
    format!(
        "INSERT INTO keys (db, key, outcome, ttl_ms, size_bytes, attempts, error, updated_at)
         VALUES {values}
         ON CONFLICT (db, key) DO UPDATE SET
             previous_outcome = keys.outcome, outcome = excluded.outcome, ttl_ms = excluded.ttl_ms,
             size_bytes = excluded.size_bytes, attempts = keys.attempts + 1, error = excluded.error,
             updated_at = excluded.updated_at
         RETURNING db, attempts, previous_outcome"
    )
}

/// Whether a key with this outcome gets a row of its own.
fn keeps_row(journal_keys: JournalKeys, outcome: Outcome) -> bool {
    match journal_keys {
        JournalKeys::All => true,
        JournalKeys::Failures => matches!(outcome, Outcome::Failed | Outcome::Mismatch),
    }
}

fn open_connection(path: &Path, flags: OpenFlags) -> Result<Connection> {
    let connection = Connection::open_with_flags(path, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .with_context(|| format!("cannot open journal {}", path.display()))?;
    connection.busy_timeout(std::time::Duration::from_secs(30))?;
    // NORMAL in WAL mode survives a killed process; a power cut may lose the
    // last batches, which the cursor then replays, never past a lost key.
    connection.pragma_update(None, "synchronous", "NORMAL")?;
    // Only takes effect on a new file: bigger pages mean fewer pages touched
    // per transaction by keys arriving in hash order.
    connection.pragma_update(None, "page_size", 16_384)?;
    // Multi-row upserts keep a statement journal (the pages a statement
    // changed, in case it must be undone alone); in memory it is bounded by
    // one statement's pages and skips a temporary file.
    connection.pragma_update(None, "temp_store", "MEMORY")?;
    // Checkpoint every ~80 MB of WAL rather than 4 MB: a page modified by
    // many transactions is then copied back once.
    connection.pragma_update(None, "wal_autocheckpoint", 5_000)?;
    Ok(connection)
}

/// The page cache, in bytes: most of the journal's memory.
const PAGE_CACHE_BYTES: i64 = 16 << 20;

/// Caps the page cache. A negative `cache_size` is turned into a page count
/// with the page size known at that moment, so it is set once the file's
/// page size is (before that, 16 KB pages were counted as 4 KB ones and
/// the cache took 64 MB).
fn limit_page_cache(connection: &Connection) -> Result<()> {
    let page_size: i64 = connection.pragma_query_value(None, "page_size", |row| row.get(0))?;
    connection.pragma_update(None, "cache_size", PAGE_CACHE_BYTES / page_size.max(512))?;
    Ok(())
}

fn check_exists(path: &Path) -> Result<()> {
    if !path.exists() {
        bail!(
            "journal {} does not exist: start a job with `redis-ferry run`, or pass --journal with the path of an existing journal",
            path.display()
        );
    }
    Ok(())
}

fn check_is_sqlite(path: &Path) -> Result<()> {
    let mut header = [0u8; 16];
    let mut file = std::fs::File::open(path)
        .with_context(|| format!("cannot open journal {}", path.display()))?;
    let read = file.read(&mut header).unwrap_or(0);
    if read == 0 {
        return Ok(()); // an empty file becomes a new journal
    }
    if read < 16 || &header != SQLITE_HEADER {
        bail!(
            "{} is not a redis-ferry journal (not a SQLite database); pass --journal with another path",
            path.display()
        );
    }
    Ok(())
}

fn check_schema_version(connection: &Connection, path: &Path) -> Result<()> {
    let version: i64 = connection
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .with_context(|| format!("{} is not a redis-ferry journal", path.display()))?;
    let known = schema_version();
    if version > known {
        bail!(
            "journal {} was written by a newer redis-ferry (schema version {version}, this one knows up to {known}); use that newer version",
            path.display()
        );
    }
    Ok(())
}

fn check_is_ours(connection: &Connection, path: &Path) -> Result<()> {
    let version: i64 = connection.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if version > 0 {
        return Ok(());
    }
    let tables: i64 =
        connection.query_row("SELECT COUNT(*) FROM sqlite_master", [], |row| row.get(0))?;
    if tables > 0 {
        bail!(
            "{} is a SQLite database but not a redis-ferry journal; pass --journal with another path",
            path.display()
        );
    }
    Ok(())
}

fn read_job(connection: &Connection, path: &Path) -> Result<Option<JobRecord>> {
    let has_table: bool = connection.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'job')",
        [],
        |row| row.get(0),
    )?;
    if !has_table {
        return Ok(None);
    }
    let row = connection
        .query_row(
            "SELECT state, source_url, target_url, source_tls_ca, target_tls_ca, options, source_nodes,
                    started_at, updated_at, finished_at, last_error, target_nodes
             FROM job WHERE id = 1",
            [],
            |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, Option<String>>(3)?,
                    row.get::<_, Option<String>>(4)?,
                    row.get::<_, String>(5)?,
                    row.get::<_, Option<String>>(6)?,
                    row.get::<_, i64>(7)?,
                    row.get::<_, i64>(8)?,
                    row.get::<_, Option<i64>>(9)?,
                    row.get::<_, Option<String>>(10)?,
                    row.get::<_, Option<String>>(11)?,
                ))
            },
        )
        .optional()
        .with_context(|| format!("cannot read the job from journal {}", path.display()))?;
    let Some((
        state,
        source_url,
        target_url,
        source_ca,
        target_ca,
        options,
        nodes,
        started,
        updated,
        finished,
        error,
        target_nodes,
    )) = row
    else {
        return Ok(None);
    };
    Ok(Some(JobRecord {
        state: JobState::parse(&state)?,
        source_url,
        target_url,
        source_tls_ca: source_ca.map(PathBuf::from),
        target_tls_ca: target_ca.map(PathBuf::from),
        options: serde_json::from_str(&options)
            .with_context(|| format!("journal {} holds unreadable job options", path.display()))?,
        source_nodes: nodes,
        target_nodes,
        started_at: started,
        updated_at: updated,
        finished_at: finished,
        last_error: error,
    }))
}

fn refuse_second_job(path: &Path, job: &JobRecord) -> anyhow::Error {
    let shown = path.display();
    if job.state == JobState::Completed {
        anyhow::anyhow!(
            "journal {shown} already holds a completed job (started {}); pass another --journal for a new job",
            crate::clock::rfc3339(job.started_at)
        )
    } else {
        anyhow::anyhow!(
            "journal {shown} already holds a job ({}, started {}); continue it with `redis-ferry resume --journal {shown}`, or pass another --journal for a new job",
            job.state.as_str(),
            crate::clock::rfc3339(job.started_at)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_valid() {
        assert!(MIGRATIONS.validate().is_ok());
        assert!(schema_version() >= 1);
    }

    fn sample_job() -> JobRecord {
        JobRecord::new(
            JobState::Running,
            "redis://:***@old:6379",
            "redis://new:6379",
            CopyOptions::default(),
        )
    }

    fn result(key: &[u8], outcome: Outcome) -> KeyResult {
        KeyResult {
            key: key.to_vec(),
            outcome,
            ttl_ms: None,
            size_bytes: Some(3),
            error: (outcome == Outcome::Failed).then(|| "NOPERM".to_string()),
            method: None,
        }
    }

    #[test]
    fn counts_follow_each_keys_latest_outcome() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::create(&dir.path().join("j.db")).unwrap();
        journal.insert_job(&sample_job(), &[]).unwrap();
        journal
            .commit_batch(
                0,
                &[
                    result(b"a", Outcome::Failed),
                    result(b"b", Outcome::Restored),
                ],
                None,
                JournalKeys::All,
            )
            .unwrap();
        // The same key again (SCAN duplicate, or retry): counted once.
        journal
            .commit_batch(
                0,
                &[
                    result(b"a", Outcome::Restored),
                    result(b"b", Outcome::Restored),
                ],
                None,
                JournalKeys::All,
            )
            .unwrap();
        let counts = journal.counts().unwrap();
        assert_eq!(counts[&0].restored, 2);
        assert_eq!(counts[&0].failed, 0);
        assert_eq!(journal.key(0, b"a").unwrap().unwrap().attempts, 2);
    }

    #[test]
    fn failures_mode_keeps_rows_only_for_failures_but_exact_counts() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::create(&dir.path().join("j.db")).unwrap();
        journal.insert_job(&sample_job(), &[]).unwrap();
        let batch = [
            result(b"a", Outcome::Failed),
            result(b"b", Outcome::Restored),
            result(b"c", Outcome::Expired),
        ];
        journal
            .commit_batch(3, &batch, None, JournalKeys::Failures)
            .unwrap();
        let counts = journal.counts().unwrap();
        assert_eq!(
            (counts[&3].restored, counts[&3].failed, counts[&3].expired),
            (1, 1, 1)
        );
        assert!(journal.key(3, b"b").unwrap().is_none());
        assert_eq!(
            journal.key(3, b"a").unwrap().unwrap().outcome,
            Outcome::Failed
        );
        journal
            .commit_batch(
                3,
                &[result(b"a", Outcome::Restored)],
                None,
                JournalKeys::Failures,
            )
            .unwrap();
        let counts = journal.counts().unwrap();
        assert_eq!((counts[&3].restored, counts[&3].failed), (2, 0));
    }

    #[test]
    fn a_file_that_is_not_sqlite_is_refused_and_left_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notes.txt");
        std::fs::write(&path, b"these are my notes, not a journal\n").unwrap();
        let error = Journal::create(&path).err().unwrap().to_string();
        assert!(error.contains("is not a redis-ferry journal"), "{error}");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"these are my notes, not a journal\n"
        );
    }

    #[test]
    fn a_journal_of_an_older_schema_is_upgraded_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            let mut connection = Connection::open(&path).unwrap();
            MIGRATIONS.to_version(&mut connection, 1).unwrap();
            connection
                .execute(
                    "INSERT INTO job (id, state, source_url, target_url, options, started_at, updated_at)
                     VALUES (1, 'interrupted', 'redis://a:1', 'redis://b:2', ?1, 1, 1)",
                    params![serde_json::to_string(&CopyOptions::default()).unwrap()],
                )
                .unwrap();
            connection
                .execute("INSERT INTO cursors (node, db, target_db, cursor, updated_at) VALUES ('standalone', 0, 0, '42', 1)", [])
                .unwrap();
        }
        let journal = Journal::open_to_read(&path).unwrap();
        let version: i64 = journal
            .connection
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, schema_version());
        let cursors = journal.cursors().unwrap();
        assert_eq!(
            (cursors[0].cursor, cursors[0].node_layout.clone()),
            (42, None)
        );
        assert_eq!(journal.job().unwrap().unwrap().state, JobState::Interrupted);
    }

    #[test]
    fn a_journal_from_a_newer_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.db");
        {
            let mut journal = Journal::create(&path).unwrap();
            journal.insert_job(&sample_job(), &[]).unwrap();
            journal
                .connection
                .pragma_update(None, "user_version", 99)
                .unwrap();
        }
        let error = Journal::open_to_read(&path).err().unwrap().to_string();
        assert!(error.contains("written by a newer redis-ferry"), "{error}");
    }

    #[test]
    fn retry_pages_walk_keys_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::create(&dir.path().join("j.db")).unwrap();
        journal.insert_job(&sample_job(), &[]).unwrap();
        let batch: Vec<_> = (0..10u8)
            .map(|i| result(&[b'k', i], Outcome::Failed))
            .collect();
        journal
            .commit_batch(0, &batch, None, JournalKeys::All)
            .unwrap();
        let first = journal
            .keys_with_outcomes(&[Outcome::Failed], None, 4)
            .unwrap();
        assert_eq!(first.len(), 4);
        let (db, key) = first.last().unwrap().clone();
        let rest = journal
            .keys_with_outcomes(&[Outcome::Failed], Some((db, &key)), 100)
            .unwrap();
        assert_eq!(rest.len(), 6);
        assert!(
            journal
                .keys_with_outcomes(&[Outcome::Mismatch], None, 100)
                .unwrap()
                .is_empty()
        );
    }
}
