//! Reading a journal without changing it: [`JournalReader`], for `status`,
//! `report`, `retry`'s pages of keys and anything else that only looks.
//!
//! A reader opens the file read-only (`SQLITE_OPEN_READ_ONLY`): it never
//! switches the journal mode, never migrates, and cannot get in the way of
//! the process that drives the job. SQLite lets a read-only connection read
//! a WAL journal that another process is writing (it shares the `-shm`
//! index, creating it beside the journal when there is none yet). On
//! read-only storage (a copy on a read-only disk, a directory the reader
//! may not write) there is no `-shm` to create: if the journal has no
//! unfinished write-ahead log there, it is opened `immutable`, which
//! SQLite reads as a plain file; otherwise the reader says how to read it.
//!
//! A journal whose schema is older than this build's is not read (it would
//! need the upgrade only a writer does): the error says that `resume`
//! upgrades it. A journal without a job yet, while a process holds its lock,
//! is a job that is starting ([`Contents::Starting`]).
//!
//! The query functions below take a plain connection, so the writer
//! ([`super::Journal`]) answers the same questions with the same code.

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use percent_encoding::{AsciiSet, CONTROLS, percent_encode};
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, params};

use super::codes::{NEEDING_ATTENTION, method_from_code, outcome_code, outcome_from_code};
use super::open::{check_exists, check_is_ours, check_is_sqlite, schema_version_of, sibling};
use super::{CursorRecord, JobRecord, JobState, KeyRow, RunRecord};
use crate::outcome::{Outcome, OutcomeCounts};

/// A journal opened read-only.
pub struct JournalReader {
    connection: Connection,
    path: PathBuf,
    /// 0 for an empty file: no tables at all yet.
    version: i64,
}

/// What a journal holds.
#[derive(Debug, Clone)]
pub enum Contents {
    Job(Box<JobRecord>),
    /// No job yet, and a process holds the journal's lock: it is creating it.
    Starting,
}

/// Where a page of [`JournalReader::keys_with_outcomes`] ended; pass it to
/// get the next page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyPosition {
    outcome: Outcome,
    seq: i64,
}

impl KeyPosition {
    /// The outcome the key had when it was paged.
    pub fn outcome(&self) -> Outcome {
        self.outcome
    }
}

/// One key of a page of keys with chosen outcomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PagedKey {
    pub db: i64,
    pub key: Vec<u8>,
    pub position: KeyPosition,
}

impl JournalReader {
    /// The read-only connection (for the query functions of sibling modules).
    pub(super) fn connection(&self) -> &Connection {
        &self.connection
    }

    /// Opens an existing journal read-only. An empty file (a journal being
    /// created by an older redis-ferry) opens too; [`Self::contents`] tells.
    pub fn open(path: &Path) -> Result<JournalReader> {
        check_exists(path)?;
        check_is_sqlite(path)?;
        let connection = open_read_only(path)?;
        let version = schema_version_of(&connection, path)?;
        check_is_ours(&connection, path, version)?;
        if version > 0 && version < super::schema_version() {
            return Err(older_schema(path, version));
        }
        Ok(JournalReader {
            connection,
            path: path.to_path_buf(),
            version,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The job, or [`Contents::Starting`] while a process creates it.
    pub fn contents(&self) -> Result<Contents> {
        if let Some(job) = read_job(&self.connection, &self.path)? {
            return Ok(Contents::Job(Box::new(job)));
        }
        if super::is_locked(&self.path) {
            return Ok(Contents::Starting);
        }
        Err(no_job(&self.path))
    }

    /// The job; an error when there is none (yet).
    pub fn job(&self) -> Result<JobRecord> {
        match self.contents()? {
            Contents::Job(job) => Ok(*job),
            Contents::Starting => bail!(
                "journal {} holds no job yet: a redis-ferry process is creating it; try again in a moment",
                self.path.display()
            ),
        }
    }

    /// Runs `read` inside one read transaction, so everything it reads is
    /// the journal as of one moment, however the writer moves on meanwhile.
    pub fn consistently<T>(&self, read: impl FnOnce(&Self) -> Result<T>) -> Result<T> {
        let snapshot = self.connection.unchecked_transaction()?;
        let value = read(self)?;
        snapshot.finish()?;
        Ok(value)
    }

    pub fn cursors(&self) -> Result<Vec<CursorRecord>> {
        read_cursors(&self.connection)
    }

    /// Distinct keys per source database and latest outcome.
    pub fn counts(&self) -> Result<BTreeMap<i64, OutcomeCounts>> {
        read_counts(&self.connection)
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

    /// The failed keys recorded last, newest first.
    pub fn last_errors(&self, limit: usize) -> Result<Vec<KeyRow>> {
        let mut rows = Vec::new();
        read_key_rows(
            &self.connection,
            &format!(
                "k.outcome >= {NEEDING_ATTENTION} AND k.outcome = ?1 ORDER BY k.seq DESC LIMIT ?2"
            ),
            params![outcome_code(Outcome::Failed), limit as i64],
            |row| {
                rows.push(row);
                Ok(())
            },
        )?;
        Ok(rows)
    }

    /// The most frequent per-key error texts of failed keys, with counts.
    pub fn top_errors(&self, limit: usize) -> Result<Vec<(String, u64)>> {
        let mut statement = self.connection.prepare(&format!(
            "SELECT error, COUNT(*) FROM key_log
             WHERE outcome >= {NEEDING_ATTENTION} AND outcome = ?1
             GROUP BY error ORDER BY COUNT(*) DESC, error LIMIT ?2"
        ))?;
        let rows = statement.query_map(
            params![outcome_code(Outcome::Failed), limit as i64],
            |row| {
                Ok((
                    row.get::<_, Option<String>>(0)?.unwrap_or_default(),
                    row.get::<_, i64>(1)? as u64,
                ))
            },
        )?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Up to `limit` keys whose latest outcome is one of `outcomes`, after
    /// `after`: pages for `retry` and `verify`.
    pub fn keys_with_outcomes(
        &self,
        outcomes: &[Outcome],
        after: Option<KeyPosition>,
        limit: usize,
    ) -> Result<Vec<PagedKey>> {
        read_keys_with_outcomes(&self.connection, outcomes, after, limit)
    }

    /// Calls `each` for every key row, in the order keys were first
    /// recorded, streaming (the journal may hold hundreds of millions of
    /// rows), all as of one moment.
    pub fn for_each_key(&self, mut each: impl FnMut(KeyRow) -> Result<()>) -> Result<()> {
        if self.version == 0 {
            return Ok(()); // an empty file being made a journal: no keys yet
        }
        self.consistently(|reader| {
            let times = CommitTimes::read(&reader.connection)?;
            let mut statement = reader.connection.prepare(
                "SELECT db, key, outcome, ttl_ms, size_bytes, attempts, error, NULL, method, seq, commit_id
                 FROM key_log ORDER BY seq",
            )?;
            let mut rows = statement.query([])?;
            while let Some(row) = rows.next()? {
                let at = times.at(row.get(9)?, row.get(10)?);
                each(key_row(row, at)?)?;
            }
            Ok(())
        })
    }
}

/// Calls `each` for the key rows that `condition` (on `key_log k`) selects,
/// with the time of the transaction that last recorded each.
pub(super) fn read_key_rows(
    connection: &Connection,
    condition: &str,
    parameters: impl rusqlite::Params,
    mut each: impl FnMut(KeyRow) -> Result<()>,
) -> Result<()> {
    let mut statement = connection.prepare(&format!(
        "SELECT k.db, k.key, k.outcome, k.ttl_ms, k.size_bytes, k.attempts, k.error,
                COALESCE((SELECT at FROM journal_commits WHERE id = k.commit_id),
                         (SELECT at FROM journal_commits WHERE first_seq <= k.seq
                          ORDER BY first_seq DESC LIMIT 1)),
                k.method
         FROM key_log k WHERE {condition}"
    ))?;
    let mut rows = statement.query(parameters)?;
    while let Some(row) = rows.next()? {
        let at = row.get::<_, Option<i64>>(7)?.unwrap_or(0);
        each(key_row(row, at)?)?;
    }
    Ok(())
}

fn key_row(row: &rusqlite::Row<'_>, updated_at: i64) -> Result<KeyRow> {
    Ok(KeyRow {
        db: row.get(0)?,
        key: row.get(1)?,
        outcome: outcome_from_code(row.get(2)?)?,
        ttl_ms: row.get(3)?,
        size_bytes: row.get(4)?,
        attempts: row.get(5)?,
        error: row.get(6)?,
        updated_at,
        method: method_from_code(row.get(8)?)?,
    })
}

/// Every transaction's time, held in memory while the key rows stream by
/// (there is one per transaction, not per key): by id, for rows changed
/// since they were appended, and by the first seq each appended.
struct CommitTimes {
    by_id: Vec<(i64, i64)>,
    by_first_seq: Vec<(i64, i64)>,
}

impl CommitTimes {
    fn read(connection: &Connection) -> Result<CommitTimes> {
        let mut statement =
            connection.prepare("SELECT id, at, first_seq FROM journal_commits ORDER BY id")?;
        let mut rows = statement.query([])?;
        let (mut by_id, mut by_first_seq) = (Vec::new(), Vec::new());
        while let Some(row) = rows.next()? {
            let (id, at, first_seq): (i64, i64, Option<i64>) =
                (row.get(0)?, row.get(1)?, row.get(2)?);
            by_id.push((id, at));
            by_first_seq.extend(first_seq.map(|seq| (seq, at)));
        }
        by_first_seq.sort_unstable();
        Ok(CommitTimes {
            by_id,
            by_first_seq,
        })
    }

    fn at(&self, seq: i64, commit: Option<i64>) -> i64 {
        match commit {
            Some(id) => self
                .by_id
                .binary_search_by_key(&id, |(id, _)| *id)
                .map_or(0, |i| self.by_id[i].1),
            None => {
                let after = self
                    .by_first_seq
                    .partition_point(|(first, _)| *first <= seq);
                after.checked_sub(1).map_or(0, |i| self.by_first_seq[i].1)
            }
        }
    }
}

pub(super) fn read_job(connection: &Connection, path: &Path) -> Result<Option<JobRecord>> {
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
                Ok(StoredJob {
                    state: row.get(0)?,
                    source_url: row.get(1)?,
                    target_url: row.get(2)?,
                    source_ca: row.get(3)?,
                    target_ca: row.get(4)?,
                    options: row.get(5)?,
                    nodes: row.get(6)?,
                    started: row.get(7)?,
                    updated: row.get(8)?,
                    finished: row.get(9)?,
                    error: row.get(10)?,
                    target_nodes: row.get(11)?,
                })
            },
        )
        .optional()
        .with_context(|| format!("cannot read the job from journal {}", path.display()))?;
    row.map(|stored| stored.into_record(path)).transpose()
}

/// The job row as stored.
struct StoredJob {
    state: String,
    source_url: String,
    target_url: String,
    source_ca: Option<String>,
    target_ca: Option<String>,
    options: String,
    nodes: Option<String>,
    started: i64,
    updated: i64,
    finished: Option<i64>,
    error: Option<String>,
    target_nodes: Option<String>,
}

impl StoredJob {
    fn into_record(self, path: &Path) -> Result<JobRecord> {
        Ok(JobRecord {
            state: JobState::parse(&self.state)?,
            source_url: self.source_url,
            target_url: self.target_url,
            source_tls_ca: self.source_ca.map(PathBuf::from),
            target_tls_ca: self.target_ca.map(PathBuf::from),
            options: serde_json::from_str(&self.options).with_context(|| {
                format!("journal {} holds unreadable job options", path.display())
            })?,
            source_nodes: self.nodes,
            target_nodes: self.target_nodes,
            started_at: self.started,
            updated_at: self.updated,
            finished_at: self.finished,
            last_error: self.error,
        })
    }
}

/// Every cursor, in (node, db) order.
pub(super) fn read_cursors(connection: &Connection) -> Result<Vec<CursorRecord>> {
    let mut statement = connection.prepare_cached(
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

pub(super) fn read_counts(connection: &Connection) -> Result<BTreeMap<i64, OutcomeCounts>> {
    let mut statement =
        connection.prepare_cached("SELECT db, outcome, keys FROM counts ORDER BY db")?;
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

/// Pages walk one outcome at a time, each in the order its keys were first
/// recorded: the partial index holds (outcome, seq), so a page is a range
/// of it, however many keys have that outcome. A key whose outcome changes
/// meanwhile (retry copied it) leaves the walk or joins it further on.
pub(super) fn read_keys_with_outcomes(
    connection: &Connection,
    outcomes: &[Outcome],
    after: Option<KeyPosition>,
    limit: usize,
) -> Result<Vec<PagedKey>> {
    let mut wanted: Vec<Outcome> = outcomes.to_vec();
    wanted.sort_by_key(|o| outcome_code(*o));
    wanted.dedup();
    let mut page = Vec::new();
    for outcome in wanted {
        let after_seq = match after {
            Some(position) if outcome_code(position.outcome) > outcome_code(outcome) => continue,
            Some(position) if position.outcome == outcome => position.seq,
            _ => 0,
        };
        let indexed = if outcome_code(outcome) >= NEEDING_ATTENTION {
            format!("outcome >= {NEEDING_ATTENTION} AND ")
        } else {
            String::new()
        };
        let mut statement = connection.prepare_cached(&format!(
            "SELECT seq, db, key FROM key_log WHERE {indexed}outcome = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"
        ))?;
        let mut rows = statement.query(params![
            outcome_code(outcome),
            after_seq,
            (limit - page.len()) as i64
        ])?;
        while let Some(row) = rows.next()? {
            page.push(PagedKey {
                db: row.get(1)?,
                key: row.get(2)?,
                position: KeyPosition {
                    outcome,
                    seq: row.get(0)?,
                },
            });
        }
        if page.len() >= limit {
            break;
        }
    }
    Ok(page)
}

/// Characters that must be escaped in a SQLite URI filename.
const URI_ESCAPED: &AsciiSet = &CONTROLS.add(b'%').add(b'?').add(b'#').add(b' ');

/// A read-only connection, falling back to `immutable` on read-only
/// storage (see the module doc).
fn open_read_only(path: &Path) -> Result<Connection> {
    match try_open_read_only(path, false) {
        Ok(connection) => Ok(connection),
        Err(error) if is_unwritable_location(&error) => {
            if wal_holds_changes(path) {
                bail!(
                    "cannot read journal {}: it is on read-only storage and has an unfinished write-ahead log ({}) that SQLite cannot read there without {}; copy the journal with its -wal file to a writable directory and read the copy",
                    path.display(),
                    sibling(path, "-wal").display(),
                    sibling(path, "-shm").display()
                );
            }
            try_open_read_only(path, true)
                .with_context(|| format!("cannot read journal {}", path.display()))
        }
        Err(error) => Err(error).with_context(|| format!("cannot read journal {}", path.display())),
    }
}

/// `immutable`: SQLite reads the file as it is, with no locks and no
/// side files; only for a file nobody can be writing.
fn try_open_read_only(path: &Path, immutable: bool) -> rusqlite::Result<Connection> {
    let mut uri = String::from("file:");
    uri.extend(percent_encode(path.as_os_str().as_bytes(), URI_ESCAPED));
    if immutable {
        uri.push_str("?immutable=1");
    }
    let connection = Connection::open_with_flags(
        &uri,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    connection.busy_timeout(std::time::Duration::from_secs(10))?;
    // The first read opens the WAL index, where a read-only location fails.
    connection.query_row("SELECT COUNT(*) FROM sqlite_master", [], |_| Ok(()))?;
    Ok(connection)
}

/// The errors SQLite gives when it cannot create or write the `-shm` file.
fn is_unwritable_location(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(ErrorCode::ReadOnly | ErrorCode::CannotOpen)
    )
}

fn wal_holds_changes(path: &Path) -> bool {
    std::fs::metadata(sibling(path, "-wal")).is_ok_and(|m| m.len() > 0)
}

/// Opens a journal to look at it without any side effect (no `-wal` or
/// `-shm` left behind): `run` checks the file it was given this way before
/// refusing it. The caller holds the lock, so no redis-ferry process writes
/// the journal meanwhile, and a journal without a `-wal` file is whole in
/// its main file.
pub(super) fn open_for_check(path: &Path) -> Result<Connection> {
    let has_wal = sibling(path, "-wal").exists();
    try_open_read_only(path, !has_wal)
        .or_else(|error| match has_wal {
            false => Err(error),
            true if is_unwritable_location(&error) && !wal_holds_changes(path) => {
                try_open_read_only(path, true)
            }
            true => Err(error),
        })
        .with_context(|| format!("cannot read journal {}", path.display()))
}

fn older_schema(path: &Path, version: i64) -> anyhow::Error {
    let shown = path.display();
    let current = super::schema_version();
    if super::is_locked(path) {
        anyhow::anyhow!(
            "journal {shown} has schema version {version}, older than this redis-ferry's {current}, and a redis-ferry process is using it (an older redis-ferry running the job, or a `resume` upgrading it right now); use that redis-ferry's `status`, or try again when the upgrade is done"
        )
    } else {
        anyhow::anyhow!(
            "journal {shown} was written by an older redis-ferry (schema version {version}, this one reads {current}); run `redis-ferry resume --journal {shown}` once to upgrade it (for a completed job it only upgrades), then read it again"
        )
    }
}

fn no_job(path: &Path) -> anyhow::Error {
    anyhow::anyhow!(
        "journal {} holds no job; start one with `redis-ferry run --journal {}`",
        path.display(),
        path.display()
    )
}
