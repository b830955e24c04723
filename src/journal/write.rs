//! [`Journal`]: the one process that drives a job (`run`, `resume`,
//! `retry`, `verify`) holds the journal's lock and writes through here: the
//! job row, the cursors, the runs, and every key's outcome with
//! [`Journal::commit_batches`].
//!
//! Recording a batch of keys, in one transaction: each key's hash is looked
//! up in the key index ([`super::index`]); a key never recorded before gets
//! a new row at the end of `key_log` and counts +1 for its outcome; a key
//! recorded before has its row updated in place and its count moves from
//! the old outcome to the new one; then the per-database counts, the
//! cursors and this run's progress. The index learns the new rows once
//! the transaction has committed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rusqlite::{Connection, OptionalExtension, params};

use super::codes::{method_code, outcome_code, outcome_from_code};
use super::index::{IndexStats, KeyIndex, key_hash};
use super::lock::JournalLock;
use super::open::{self, check_exists, check_is_ours, check_is_sqlite, schema_version_of};
use super::read::{self, KeyPosition, PagedKey, read_job};
use super::{BatchRecord, CursorRecord, JobRecord, JobState, KeyRow};
use crate::clock::now_ms;
use crate::options::JournalKeys;
use crate::outcome::{KeyResult, Outcome, OutcomeCounts};
use crate::scan::Checkpoint;

pub struct Journal {
    pub(super) connection: Connection,
    path: PathBuf,
    _lock: JournalLock,
    /// The `runs` row of this invocation, once started.
    run: Option<i64>,
    /// Loaded when keys are first recorded or looked up.
    keys: Option<KeyState>,
}

/// What recording keys needs beyond the connection.
struct KeyState {
    index: KeyIndex,
    next_seq: i64,
    next_commit: i64,
}

impl Journal {
    /// Opens the journal for a new job (`run`): creates it, or takes over
    /// an empty file or a journal that holds no job. Refuses, leaving the
    /// file byte-for-byte unchanged, when it is not a journal or already
    /// holds a job.
    pub fn create(path: &Path) -> Result<Journal> {
        let lock = JournalLock::acquire(path)?;
        check_new(path)?;
        let fresh = !path.exists() || std::fs::metadata(path)?.len() == 0;
        if fresh {
            open::create_file(path)?;
        }
        let connection = open::open_for_writing(path)?;
        Ok(Journal::with(connection, path, lock))
    }

    /// The checks of [`Journal::create`], run before connecting anywhere so
    /// a journal that already holds a job is reported first. Writes
    /// nothing and leaves no `-wal` or `-shm` file behind.
    pub fn precheck_new(path: &Path) -> Result<()> {
        if !path.exists() {
            return Ok(());
        }
        check_exists(path)?;
        if check_is_sqlite(path)? {
            return Ok(()); // an empty file becomes a new journal
        }
        match JournalLock::try_acquire(path)? {
            Some(_lock) => check_new(path),
            // Another process drives the journal: say what it holds.
            None => {
                let existing = read::open_for_check(path)?;
                match read_job(&existing, path)? {
                    Some(job) => Err(refuse_second_job(path, &job)),
                    None => JournalLock::acquire(path).map(|_| ()),
                }
            }
        }
    }

    /// The job a journal already holds, read without writing anything or
    /// leaving a `-wal` or `-shm` file behind (`run --or-resume` decides
    /// with it). `None`: no file yet, an empty file, or no job recorded.
    pub fn existing_job(path: &Path) -> Result<Option<JobRecord>> {
        if !path.exists() {
            return Ok(None);
        }
        check_exists(path)?;
        if check_is_sqlite(path)? {
            return Ok(None);
        }
        // Held (when free) so that no writer starts while we look.
        let _lock = JournalLock::try_acquire(path)?;
        let existing = read::open_for_check(path)?;
        let version = schema_version_of(&existing, path)?;
        check_is_ours(&existing, path, version)?;
        read_job(&existing, path)
    }

    /// Opens an existing journal to drive its job (`resume`, `retry`,
    /// `verify`), taking the lock and upgrading an older schema.
    pub fn open_to_drive(path: &Path) -> Result<Journal> {
        check_exists(path)?;
        check_is_sqlite(path)?;
        let lock = JournalLock::acquire(path)?;
        let connection = open::open_for_writing(path)?;
        let journal = Journal::with(connection, path, lock);
        journal.job()?.with_context(|| {
            format!(
                "journal {} holds no job; start one with `redis-ferry run --journal {}`",
                path.display(),
                path.display()
            )
        })?;
        Ok(journal)
    }

    fn with(connection: Connection, path: &Path, lock: JournalLock) -> Journal {
        Journal {
            connection,
            path: path.to_path_buf(),
            _lock: lock,
            run: None,
            keys: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
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
        read::read_cursors(&self.connection)
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

    /// Distinct keys per source database and latest outcome.
    pub fn counts(&self) -> Result<BTreeMap<i64, OutcomeCounts>> {
        read::read_counts(&self.connection)
    }

    /// Up to `limit` keys whose latest outcome is one of `outcomes`, after
    /// `after`; see [`super::JournalReader::keys_with_outcomes`].
    pub fn keys_with_outcomes(
        &self,
        outcomes: &[Outcome],
        after: Option<KeyPosition>,
        limit: usize,
    ) -> Result<Vec<PagedKey>> {
        read::read_keys_with_outcomes(&self.connection, outcomes, after, limit)
    }

    /// The latest outcome of one key, if it was recorded.
    pub fn key(&mut self, db: i64, key: &[u8]) -> Result<Option<KeyRow>> {
        let Journal {
            connection, keys, ..
        } = self;
        let state = key_state(keys, connection)?;
        let probe = KeyResult::failed(key.to_vec(), "");
        let arrivals = [(db, &probe)];
        let mut distinct = distinct_keys(&arrivals);
        find_previous_rows(connection, &mut state.index, &mut distinct)?;
        let Some(previous) = distinct[0].previous else {
            return Ok(None);
        };
        let mut found = None;
        read::read_key_rows(connection, "k.seq = ?1", params![previous.seq], |row| {
            found = Some(row);
            Ok(())
        })?;
        Ok(found)
    }

    /// What the key index did so far (for benchmarks and profiles).
    pub fn index_stats(&mut self) -> Result<IndexStats> {
        let Journal {
            connection, keys, ..
        } = self;
        Ok(key_state(keys, connection)?.index.stats())
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
    /// in scan order (its cursor ends at the last one's checkpoint). A key
    /// present twice keeps its batches' order: the later outcome wins.
    ///
    /// Every key gets a row, whatever `journal_keys` says: the row costs
    /// about 45 bytes and no longer slows the journal down as it grows,
    /// and it is what keeps counts exact (`--journal-keys failures` is
    /// accepted for the scripts and journals of older versions).
    pub fn commit_batches(
        &mut self,
        batches: &[BatchRecord<'_>],
        journal_keys: JournalKeys,
    ) -> Result<()> {
        let _ = journal_keys;
        let now = now_ms();
        let Journal {
            connection,
            keys,
            run,
            ..
        } = self;
        let state = key_state(keys, connection)?;
        let transaction = connection.unchecked_transaction()?;
        let recorded = record_keys(&transaction, state, batches, now)?;
        update_counts(&transaction, &recorded.deltas)?;
        record_checkpoints(&transaction, batches, now)?;
        if let Some(run) = *run {
            let arrivals: usize = batches.iter().map(|b| b.results.len()).sum();
            transaction
                .prepare_cached("UPDATE runs SET keys_processed = keys_processed + ?1, updated_at = ?2 WHERE id = ?3")?
                .execute(params![arrivals as i64, now, run])?;
        }
        transaction
            .commit()
            .context("cannot write to the journal")?;
        state.next_seq += recorded.new_entries.len() as i64;
        if recorded.used_commit {
            state.next_commit += 1;
        }
        state.index.add(recorded.new_entries);
        if let Err(error) = state.index.maintain(connection, state.next_seq) {
            // The index in memory may be half-merged; the next use loads it
            // again from the journal, where every merge is all or nothing.
            *keys = None;
            return Err(error);
        }
        Ok(())
    }
}

/// The key state, loaded on first use.
fn key_state<'s>(
    keys: &'s mut Option<KeyState>,
    connection: &Connection,
) -> Result<&'s mut KeyState> {
    if keys.is_none() {
        let expected: i64 = connection.query_row(
            "SELECT COALESCE(SUM(keys_expected), 0) FROM cursors",
            [],
            |row| row.get(0),
        )?;
        let index = KeyIndex::load(connection, expected.max(0) as u64)?;
        let (next_seq, next_commit): (i64, i64) = connection.query_row(
            "SELECT (SELECT COALESCE(MAX(seq), 0) + 1 FROM key_log),
                    (SELECT COALESCE(MAX(id), 0) + 1 FROM journal_commits)",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
        *keys = Some(KeyState {
            index,
            next_seq,
            next_commit,
        });
    }
    Ok(keys.as_mut().expect("loaded above"))
}

/// Refuses a path that cannot take a new job: not a journal, a newer
/// journal, or one that already holds a job. The caller holds the lock.
fn check_new(path: &Path) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    check_exists(path)?;
    if check_is_sqlite(path)? {
        return Ok(()); // an empty file becomes a new journal
    }
    let existing = read::open_for_check(path)?;
    let version = schema_version_of(&existing, path)?;
    check_is_ours(&existing, path, version)?;
    if let Some(job) = read_job(&existing, path)? {
        return Err(refuse_second_job(path, &job));
    }
    Ok(())
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

/// What recording a transaction's keys did.
struct Recorded {
    /// How the per-database counts move.
    deltas: BTreeMap<(i64, Outcome), i64>,
    /// (hash, seq) of the rows appended, sorted by hash, for the index
    /// once committed.
    new_entries: Vec<(u64, i64)>,
    /// Whether the transaction's `journal_commits` row was written.
    used_commit: bool,
}

/// One distinct (db, key) of a transaction, however often it came.
struct Distinct<'a> {
    hash: u64,
    db: i64,
    key: &'a [u8],
    /// Where it came first (its place in `key_log` if it is new) and last
    /// (the outcome that counts) among the transaction's keys.
    first: usize,
    last: usize,
    occurrences: i64,
    /// Its row, when an earlier transaction recorded it.
    previous: Option<Previous>,
}

/// A key's row as recorded before.
#[derive(Debug, Clone, Copy)]
struct Previous {
    seq: i64,
    outcome: Outcome,
}

/// Records the keys of `batches`. Keys are handled in hash order: equal
/// keys meet (the later outcome wins), and the index is walked in order;
/// rows recorded before are read and updated in seq order (neighbours on
/// the same pages), new rows are appended in arrival order.
fn record_keys<'a>(
    transaction: &Connection,
    state: &mut KeyState,
    batches: &'a [BatchRecord<'a>],
    now: i64,
) -> Result<Recorded> {
    let arrivals: Vec<(i64, &'a KeyResult)> = batches
        .iter()
        .flat_map(|batch| batch.results.iter().map(move |result| (batch.db, result)))
        .collect();
    let mut distinct = distinct_keys(&arrivals);
    find_previous_rows(transaction, &mut state.index, &mut distinct)?;
    let commit = state.next_commit;
    let mut deltas: BTreeMap<(i64, Outcome), i64> = BTreeMap::new();
    for key in &distinct {
        *deltas
            .entry((key.db, arrivals[key.last].1.outcome))
            .or_default() += 1;
        if let Some(previous) = key.previous {
            *deltas.entry((key.db, previous.outcome)).or_default() -= 1;
        }
    }
    let mut updates: Vec<&Distinct<'_>> =
        distinct.iter().filter(|k| k.previous.is_some()).collect();
    updates.sort_unstable_by_key(|key| key.previous.map(|p| p.seq));
    for key in &updates {
        let seq = key.previous.expect("filtered").seq;
        update_row(
            transaction,
            seq,
            arrivals[key.last].1,
            key.occurrences,
            commit,
        )?;
    }
    let mut fresh: Vec<&Distinct<'_>> = distinct.iter().filter(|k| k.previous.is_none()).collect();
    fresh.sort_unstable_by_key(|key| key.first);
    let used_commit = !updates.is_empty() || !fresh.is_empty();
    if used_commit {
        let first_seq = (!fresh.is_empty()).then_some(state.next_seq);
        transaction
            .prepare_cached("INSERT INTO journal_commits (id, at, first_seq) VALUES (?1, ?2, ?3)")?
            .execute(params![commit, now, first_seq])?;
    }
    insert_rows(transaction, &fresh, &arrivals, state.next_seq)?;
    let mut new_entries: Vec<(u64, i64)> = fresh
        .iter()
        .enumerate()
        .map(|(i, key)| (key.hash, state.next_seq + i as i64))
        .collect();
    new_entries.sort_unstable();
    Ok(Recorded {
        deltas,
        new_entries,
        used_commit,
    })
}

/// The distinct keys among `arrivals`, in hash order.
fn distinct_keys<'a>(arrivals: &[(i64, &'a KeyResult)]) -> Vec<Distinct<'a>> {
    let mut order: Vec<(u64, usize)> = arrivals
        .iter()
        .enumerate()
        .map(|(i, (db, result))| (key_hash(*db, &result.key), i))
        .collect();
    order.sort_unstable();
    let mut distinct: Vec<Distinct<'a>> = Vec::with_capacity(order.len());
    let mut same_hash_from = 0;
    for (hash, i) in order {
        let (db, result) = arrivals[i];
        if distinct.last().is_some_and(|last| last.hash != hash) {
            same_hash_from = distinct.len();
        }
        // Arrivals of one hash come in arrival order: the last one seen wins.
        match distinct[same_hash_from..]
            .iter_mut()
            .find(|key| key.db == db && key.key == result.key)
        {
            Some(key) => {
                key.last = i;
                key.occurrences += 1;
            }
            None => distinct.push(Distinct {
                hash,
                db,
                key: &result.key,
                first: i,
                last: i,
                occurrences: 1,
                previous: None,
            }),
        }
    }
    distinct
}

/// Sets `previous` of the keys that an earlier transaction recorded: the
/// index names the rows that may hold each hash; the rows' keys decide.
fn find_previous_rows(
    connection: &Connection,
    index: &mut KeyIndex,
    distinct: &mut [Distinct<'_>],
) -> Result<()> {
    let mut hashes: Vec<u64> = distinct.iter().map(|key| key.hash).collect();
    hashes.dedup();
    let mut candidates = Vec::new();
    index.candidates(connection, &hashes, &mut candidates)?;
    candidates.sort_unstable_by_key(|&(_, seq)| seq);
    let mut statement =
        connection.prepare_cached("SELECT db, key, outcome FROM key_log WHERE seq = ?1")?;
    for (i, seq) in candidates {
        let row: Option<(i64, Vec<u8>, i64)> = statement
            .query_row(params![seq], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })
            .optional()?;
        let Some((db, key, outcome)) = row else {
            continue;
        };
        let from = distinct.partition_point(|k| k.hash < hashes[i]);
        if let Some(found) = distinct[from..]
            .iter_mut()
            .take_while(|k| k.hash == hashes[i])
            .find(|k| k.db == db && k.key == key.as_slice())
        {
            found.previous = Some(Previous {
                seq,
                outcome: outcome_from_code(outcome)?,
            });
        }
    }
    Ok(())
}

fn update_row(
    connection: &Connection,
    seq: i64,
    result: &KeyResult,
    occurrences: i64,
    commit: i64,
) -> Result<()> {
    connection
        .prepare_cached(
            "UPDATE key_log SET outcome = ?2, method = ?3, ttl_ms = ?4, size_bytes = ?5,
                                attempts = attempts + ?6, error = ?7, commit_id = ?8
             WHERE seq = ?1",
        )?
        .execute(params![
            seq,
            outcome_code(result.outcome),
            method_code(result.method),
            result.ttl_ms,
            result.size_bytes,
            occurrences,
            result.error,
            commit
        ])?;
    Ok(())
}

/// Rows appended per INSERT statement: per-statement overhead was a third
/// of the journal's cost with one statement per key.
const ROWS_PER_INSERT: usize = 100;

/// Columns of an appended row (`commit_id` is left NULL: the transaction
/// that appended a row is found by its `first_seq`).
const ROW_COLUMNS: usize = 9;

fn insert_rows(
    connection: &Connection,
    fresh: &[&Distinct<'_>],
    arrivals: &[(i64, &KeyResult)],
    first_seq: i64,
) -> Result<()> {
    for (chunk_index, chunk) in fresh.chunks(ROWS_PER_INSERT).enumerate() {
        let first = first_seq + (chunk_index * ROWS_PER_INSERT) as i64;
        let sql = if chunk.len() == ROWS_PER_INSERT {
            FULL_INSERT.as_str()
        } else {
            &insert_sql(chunk.len())
        };
        let mut statement = connection.prepare_cached(sql)?;
        // Bound one by one: no slice of trait objects to build per row.
        for (i, key) in chunk.iter().enumerate() {
            let result = arrivals[key.last].1;
            let at = i * ROW_COLUMNS;
            statement.raw_bind_parameter(at + 1, first + i as i64)?;
            statement.raw_bind_parameter(at + 2, key.db)?;
            statement.raw_bind_parameter(at + 3, &result.key)?;
            statement.raw_bind_parameter(at + 4, outcome_code(result.outcome))?;
            statement.raw_bind_parameter(at + 5, method_code(result.method))?;
            statement.raw_bind_parameter(at + 6, result.ttl_ms)?;
            statement.raw_bind_parameter(at + 7, result.size_bytes)?;
            statement.raw_bind_parameter(at + 8, key.occurrences)?;
            statement.raw_bind_parameter(at + 9, &result.error)?;
        }
        statement.raw_execute()?;
    }
    Ok(())
}

static FULL_INSERT: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| insert_sql(ROWS_PER_INSERT));

fn insert_sql(rows: usize) -> String {
    format!(
        "INSERT INTO key_log (seq, db, key, outcome, method, ttl_ms, size_bytes, attempts, error)
         VALUES {}",
        vec!["(?, ?, ?, ?, ?, ?, ?, ?, ?)"; rows].join(", ")
    )
}

fn update_counts(connection: &Connection, deltas: &BTreeMap<(i64, Outcome), i64>) -> Result<()> {
    let mut count = connection.prepare_cached(
        "INSERT INTO counts (db, outcome, keys) VALUES (?1, ?2, ?3)
         ON CONFLICT (db, outcome) DO UPDATE SET keys = keys + excluded.keys",
    )?;
    for ((db, outcome), delta) in deltas.iter().filter(|(_, delta)| **delta != 0) {
        count.execute(params![db, outcome.as_str(), delta])?;
    }
    Ok(())
}

fn record_checkpoints(
    connection: &Connection,
    batches: &[BatchRecord<'_>],
    now: i64,
) -> Result<()> {
    let mut cursor = connection.prepare_cached(
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{Contents, JournalReader, schema_version};
    use crate::options::CopyOptions;
    use crate::outcome::WriteMethod;

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
            method: (outcome == Outcome::Restored).then_some(WriteMethod::Restore),
        }
    }

    fn new_journal(dir: &tempfile::TempDir) -> Journal {
        let mut journal = Journal::create(&dir.path().join("j.db")).unwrap();
        journal.insert_job(&sample_job(), &[]).unwrap();
        journal
    }

    #[test]
    fn counts_follow_each_keys_latest_outcome() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = new_journal(&dir);
        let batch = [
            result(b"a", Outcome::Failed),
            result(b"b", Outcome::Restored),
        ];
        journal
            .commit_batch(0, &batch, None, JournalKeys::All)
            .unwrap();
        // The same keys again (SCAN duplicate, or retry): counted once.
        let batch = [
            result(b"a", Outcome::Restored),
            result(b"b", Outcome::Restored),
        ];
        journal
            .commit_batch(0, &batch, None, JournalKeys::All)
            .unwrap();
        let counts = journal.counts().unwrap();
        assert_eq!((counts[&0].restored, counts[&0].failed), (2, 0));
        let a = journal.key(0, b"a").unwrap().unwrap();
        assert_eq!(
            (a.outcome, a.attempts, a.method),
            (Outcome::Restored, 2, Some(WriteMethod::Restore))
        );
        assert!(
            journal.key(1, b"a").unwrap().is_none(),
            "db is part of the key"
        );
    }

    #[test]
    fn a_key_twice_in_one_transaction_ends_with_its_later_outcome() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = new_journal(&dir);
        let first = [
            result(b"k", Outcome::Restored),
            result(b"x", Outcome::Restored),
        ];
        let second = [result(b"k", Outcome::Failed)];
        journal
            .commit_batches(
                &[
                    BatchRecord {
                        db: 0,
                        results: &first,
                        checkpoint: None,
                    },
                    BatchRecord {
                        db: 0,
                        results: &second,
                        checkpoint: None,
                    },
                ],
                JournalKeys::All,
            )
            .unwrap();
        let counts = journal.counts().unwrap();
        assert_eq!((counts[&0].restored, counts[&0].failed), (1, 1));
        let k = journal.key(0, b"k").unwrap().unwrap();
        assert_eq!((k.outcome, k.attempts), (Outcome::Failed, 2));
        let page = journal
            .keys_with_outcomes(&[Outcome::Failed], None, 10)
            .unwrap();
        assert_eq!(page.len(), 1, "retry finds it");
        assert_eq!(page[0].key, b"k");
    }

    #[test]
    fn journal_keys_failures_still_keeps_a_row_per_key_and_exact_counts() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = new_journal(&dir);
        let batch = [
            result(b"a", Outcome::Failed),
            result(b"b", Outcome::Restored),
        ];
        journal
            .commit_batch(3, &batch, None, JournalKeys::Failures)
            .unwrap();
        journal
            .commit_batch(3, &batch, None, JournalKeys::Failures)
            .unwrap();
        let counts = journal.counts().unwrap();
        assert_eq!((counts[&3].restored, counts[&3].failed), (1, 1));
        assert!(journal.key(3, b"b").unwrap().is_some());
    }

    /// Enough keys for several flushes and merges of the key index (unit
    /// tests flush every 4096 keys), recorded again in another order.
    #[test]
    fn counts_stay_exact_through_flushes_merges_and_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.db");
        let mut journal = new_journal(&dir);
        let keys: Vec<Vec<u8>> = (0..40_000u32)
            .map(|i| format!("key:{i}").into_bytes())
            .collect();
        for chunk in keys.chunks(1000) {
            let batch: Vec<KeyResult> =
                chunk.iter().map(|k| result(k, Outcome::Restored)).collect();
            journal
                .commit_batch(0, &batch, None, JournalKeys::All)
                .unwrap();
        }
        assert!(journal.index_stats().unwrap().merges >= 2);
        drop(journal);
        let mut journal = Journal::open_to_drive(&path).unwrap();
        // A rescan in another order: every 7th key fails this time.
        for chunk in keys.chunks(999).rev() {
            let batch: Vec<KeyResult> = chunk
                .iter()
                .map(|k| {
                    let failed = k.iter().map(|b| *b as u32).sum::<u32>() % 7 == 0;
                    result(
                        k,
                        if failed {
                            Outcome::Failed
                        } else {
                            Outcome::Restored
                        },
                    )
                })
                .collect();
            journal
                .commit_batch(0, &batch, None, JournalKeys::All)
                .unwrap();
        }
        let counts = journal.counts().unwrap()[&0];
        assert_eq!(counts.restored + counts.failed, 40_000, "{counts:?}");
        let rows: i64 = journal
            .connection
            .query_row("SELECT COUNT(*) FROM key_log", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 40_000);
        let mut failed = 0;
        let mut after = None;
        loop {
            let page = journal
                .keys_with_outcomes(&[Outcome::Failed], after, 500)
                .unwrap();
            let Some(last) = page.last() else { break };
            after = Some(last.position);
            failed += page.len() as u64;
        }
        assert_eq!(failed, counts.failed);
        assert!(journal.key(0, b"key:39999").unwrap().unwrap().attempts == 2);
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
    fn a_refused_run_leaves_the_journal_and_its_directory_as_they_were() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.db");
        drop(new_journal(&dir));
        let before = std::fs::read(&path).unwrap();
        for attempt in [
            Journal::precheck_new(&path).err(),
            Journal::create(&path).err(),
        ] {
            let error = attempt.expect("refused").to_string();
            assert!(error.contains("already holds a job"), "{error}");
        }
        assert_eq!(std::fs::read(&path).unwrap(), before);
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["j.db", "j.db.lock"], "no -wal or -shm left behind");
    }

    /// A journal written by the first released schema (migrations 01 and
    /// 02), with keys: it opens, upgrades, keeps every row, and a key it
    /// recorded is recognised when it is recorded again.
    #[test]
    fn a_journal_of_an_older_schema_is_upgraded_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            let mut connection = Connection::open(&path).unwrap();
            connection
                .pragma_update(None, "journal_mode", "WAL")
                .unwrap();
            super::super::open::migrate_to(&mut connection, 2);
            connection
                .execute(
                    "INSERT INTO job (id, state, source_url, target_url, options, started_at, updated_at)
                     VALUES (1, 'interrupted', 'redis://a:1', 'redis://b:2', ?1, 1, 1)",
                    params![serde_json::to_string(&CopyOptions::default()).unwrap()],
                )
                .unwrap();
            connection
                .execute_batch(
                    "INSERT INTO cursors (node, db, target_db, cursor, updated_at) VALUES ('standalone', 0, 0, '42', 1);
                     INSERT INTO keys (db, key, outcome, size_bytes, attempts, error, updated_at) VALUES
                         (0, x'6f6b', 'restored', 10, 1, NULL, 1764062490000),
                         (0, x'626164', 'failed', NULL, 2, 'NOPERM', 1764062491000);
                     INSERT INTO counts (db, outcome, keys) VALUES (0, 'restored', 1), (0, 'failed', 1);",
                )
                .unwrap();
        }
        let error = JournalReader::open(&path).err().unwrap().to_string();
        assert!(
            error.contains("older redis-ferry") && error.contains("redis-ferry resume --journal"),
            "{error}"
        );

        let mut journal = Journal::open_to_drive(&path).unwrap();
        let version: i64 = journal
            .connection
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, schema_version());
        assert_eq!(journal.cursors().unwrap()[0].cursor, 42);
        let bad = journal.key(0, b"bad").unwrap().unwrap();
        assert_eq!(
            (bad.outcome, bad.attempts, bad.updated_at),
            (Outcome::Failed, 2, 1764062491000)
        );
        journal
            .commit_batch(
                0,
                &[result(b"bad", Outcome::Restored)],
                None,
                JournalKeys::All,
            )
            .unwrap();
        let counts = journal.counts().unwrap()[&0];
        assert_eq!((counts.restored, counts.failed), (2, 0));
        drop(journal);
        let reader = JournalReader::open(&path).unwrap();
        assert_eq!(reader.job().unwrap().state, JobState::Interrupted);
    }

    #[test]
    fn a_journal_from_a_newer_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.db");
        {
            let journal = new_journal(&dir);
            journal
                .connection
                .pragma_update(None, "user_version", 99)
                .unwrap();
        }
        for error in [
            JournalReader::open(&path).err().unwrap().to_string(),
            Journal::open_to_drive(&path).err().unwrap().to_string(),
        ] {
            assert!(error.contains("written by a newer redis-ferry"), "{error}");
        }
    }

    #[test]
    fn a_journal_without_a_job_reads_as_starting_only_while_locked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.db");
        let journal = Journal::create(&path).unwrap();
        let reader = JournalReader::open(&path).unwrap();
        assert!(matches!(reader.contents().unwrap(), Contents::Starting));
        drop(journal);
        let error = reader.contents().err().unwrap().to_string();
        assert!(
            error.contains("holds no job; start one with `redis-ferry run"),
            "{error}"
        );
    }

    #[test]
    fn retry_pages_walk_each_outcome_in_recorded_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = new_journal(&dir);
        let mut batch: Vec<KeyResult> = (0..10u8)
            .map(|i| result(&[b'k', i], Outcome::Failed))
            .collect();
        batch.push(result(b"m", Outcome::Mismatch));
        batch.push(result(b"r", Outcome::Restored));
        journal
            .commit_batch(0, &batch, None, JournalKeys::All)
            .unwrap();
        let wanted = [Outcome::Mismatch, Outcome::Failed];
        let first = journal.keys_with_outcomes(&wanted, None, 4).unwrap();
        let keys: Vec<&[u8]> = first.iter().map(|p| p.key.as_slice()).collect();
        assert_eq!(keys, [b"k\x00", b"k\x01", b"k\x02", b"k\x03"]);
        let rest = journal
            .keys_with_outcomes(&wanted, Some(first[3].position), 100)
            .unwrap();
        assert_eq!(rest.len(), 7);
        assert_eq!(rest.last().unwrap().key, b"m");
        assert!(
            journal
                .keys_with_outcomes(&[Outcome::Expired], None, 100)
                .unwrap()
                .is_empty()
        );
    }
}
