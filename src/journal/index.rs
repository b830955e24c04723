//! The writer's key index: from a (db, key) to the `key_log` rows that may
//! hold it, so that recording a key tells whether it was recorded before
//! (every count is of distinct keys) at a hundred million keys, in bounded
//! memory, without a B-tree keyed by the key.
//!
//! A B-tree keyed by the key is what the journal had: keys arrive in SCAN's
//! hash order, so each transaction rewrote pages all over it and the
//! journal slowed down as it grew. Here, a key is known by a 40-bit hash of
//! (db, key), and the index is an LSM tree of (hash, seq) entries:
//! - **recent**: the entries of rows recorded since the last flush, sorted
//!   runs in memory (rebuilt from `key_log` when a journal is opened);
//! - **runs**: sorted runs on disk (`key_hash_runs`, `key_hash_chunks`,
//!   packed by [`chunk`]), written whole when `recent` is flushed, and
//!   merged four at a time into a run of the next level, so each entry is
//!   rewritten about log4(keys / flush size) times, always sequentially.
//!
//! Every run has a [`filter`] in memory: a key that was never recorded
//! (nearly every key of a first scan) is told apart without reading the
//! run. Filters get fewer bits per key the bigger their run (a false
//! "maybe" costs one chunk read whichever run it comes from, and big runs
//! are few), within [`FILTER_BUDGET_BYTES`] for the job's expected key
//! count. A hash tells which rows *may* hold the key; the caller compares
//! the rows' keys, so equal hashes of different keys never merge them.
//!
//! Flushes and merges are transactions of their own, after the keys' own
//! transaction: the index may lag `key_log` (what it lacks is indexed again
//! on open), never run ahead of it.

mod chunk;
mod filter;

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rusqlite::{Connection, params};
use xxhash_rust::xxh3::xxh3_64_with_seed;

use chunk::ChunkWriter;
use filter::Filter;

/// Bits of the key hash that the index keeps: enough that a new key
/// rarely meets another key's hash (1 in 10,000 at 100 million keys),
/// few enough that sorted hashes differ by about two bytes.
const KEY_HASH_BITS: u32 = 40;

/// Entries held in memory before they are written as a run (unit tests
/// use a small one, to go through flushes and merges with few keys).
const RECENT_LIMIT: usize = if cfg!(test) { 4096 } else { 262_144 };

/// Runs of one level merged into one run of the next.
const MERGE_FANOUT: usize = 4;

/// Memory for all runs' filters at the job's expected key count. With the
/// rest of the writer (page cache, recent entries, batches) this keeps a
/// 100-million-key job under 100 MB; smaller jobs get 14 bits per key.
const FILTER_BUDGET_BYTES: u64 = 64 << 20;

/// How many keys ahead a filter lookup asks for its block.
const PREFETCH_DISTANCE: usize = 8;

/// A merge commits after this many chunks, so its WAL stays small.
const MERGE_CHUNKS_PER_TRANSACTION: usize = 4096;

/// The index's hash of a key.
pub fn key_hash(db: i64, key: &[u8]) -> u64 {
    xxh3_64_with_seed(key, db as u64) >> (64 - KEY_HASH_BITS)
}

/// What the index did, for benchmarks and profiles.
#[derive(Debug, Clone, Copy, Default)]
pub struct IndexStats {
    pub runs: usize,
    pub run_entries: u64,
    pub recent_entries: usize,
    pub filter_bytes: usize,
    /// Lookups that had to read a run (a filter said "maybe").
    pub run_probes: u64,
    /// Of those, how many found no entry with the hash.
    pub false_maybes: u64,
    pub flushes: u64,
    pub merges: u64,
    /// Time spent finding candidates (filters, run reads).
    pub lookup_time: Duration,
    /// Of `lookup_time`, the run reads.
    pub probe_time: Duration,
    /// Time spent writing runs (flushes, merges).
    pub maintenance_time: Duration,
}

pub struct KeyIndex {
    recent: Recent,
    /// Oldest first.
    runs: Vec<Run>,
    /// Rows with a smaller seq are in `runs`.
    indexed_upto: i64,
    next_chunk: i64,
    next_run: i64,
    expected_keys: u64,
    stats: IndexStats,
}

/// A sorted run on disk, with what is kept of it in memory.
struct Run {
    id: i64,
    level: i64,
    entries: u64,
    first_chunk: i64,
    /// The first hash of each chunk, in order (chunk ids are consecutive).
    first_hashes: Vec<u64>,
    covers_upto: i64,
    filter: Filter,
}

impl KeyIndex {
    /// Loads the index of the journal open on `connection` (a writer's):
    /// drops what a killed merge left half-written, reads every run's
    /// chunk directory and filter, and indexes the rows recorded since the
    /// last flush (or moved over by a schema upgrade).
    pub fn load(connection: &Connection, expected_keys: u64) -> Result<KeyIndex> {
        connection
            .execute(
                "DELETE FROM key_hash_chunks WHERE id >
                     (SELECT COALESCE(MAX(first_chunk + chunk_count - 1), 0) FROM key_hash_runs)",
                [],
            )
            .context("cannot read the journal's key index")?;
        let mut index = KeyIndex {
            recent: Recent::default(),
            runs: Vec::new(),
            indexed_upto: 1,
            next_chunk: 1,
            next_run: 1,
            expected_keys,
            stats: IndexStats::default(),
        };
        index.load_runs(connection)?;
        index.index_unindexed_rows(connection)?;
        Ok(index)
    }

    fn load_runs(&mut self, connection: &Connection) -> Result<()> {
        let stored: Vec<(i64, i64, u64, i64, i64, i64)> = {
            let mut statement = connection.prepare(
                "SELECT id, level, entries, first_chunk, chunk_count, covers_upto FROM key_hash_runs ORDER BY id",
            )?;
            statement
                .query_map([], |row| {
                    Ok((
                        row.get(0)?,
                        row.get(1)?,
                        row.get::<_, i64>(2)? as u64,
                        row.get(3)?,
                        row.get(4)?,
                        row.get(5)?,
                    ))
                })?
                .collect::<rusqlite::Result<_>>()?
        };
        let total: u64 = stored.iter().map(|run| run.2).sum();
        self.expected_keys = self.expected_keys.max(total);
        for (id, level, entries, first_chunk, chunk_count, covers_upto) in stored {
            let mut run = Run {
                id,
                level,
                entries,
                first_chunk,
                first_hashes: Vec::with_capacity(chunk_count as usize),
                covers_upto,
                filter: Filter::new(entries, self.bits_per_key(entries)),
            };
            let mut statement = connection.prepare_cached(
                "SELECT first_hash, entries FROM key_hash_chunks WHERE id BETWEEN ?1 AND ?2 ORDER BY id",
            )?;
            let mut rows = statement.query(params![first_chunk, first_chunk + chunk_count - 1])?;
            while let Some(row) = rows.next()? {
                let first = row.get::<_, i64>(0)? as u64;
                run.first_hashes.push(first);
                let filter = &mut run.filter;
                chunk::decode(first, row.get_ref(1)?.as_blob()?, |hash, _| {
                    filter.insert(hash);
                    true
                })?;
            }
            self.next_chunk = self.next_chunk.max(first_chunk + chunk_count);
            self.next_run = self.next_run.max(id + 1);
            self.indexed_upto = self.indexed_upto.max(covers_upto);
            self.runs.push(run);
        }
        Ok(())
    }

    /// Rows with seq >= `indexed_upto`, in pages (a flush writes between
    /// two pages, never under an open statement).
    fn index_unindexed_rows(&mut self, connection: &Connection) -> Result<()> {
        let mut after = self.indexed_upto - 1;
        loop {
            let page: Vec<(i64, u64)> = {
                let mut statement = connection.prepare_cached(
                    "SELECT seq, db, key FROM key_log WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                )?;
                statement
                    .query_map(params![after, RECENT_LIMIT as i64], |row| {
                        let key: Vec<u8> = row.get(2)?;
                        Ok((row.get(0)?, key_hash(row.get(1)?, &key)))
                    })?
                    .collect::<rusqlite::Result<_>>()?
            };
            let Some(&(last, _)) = page.last() else {
                return Ok(());
            };
            let mut entries: Vec<(u64, i64)> =
                page.into_iter().map(|(seq, hash)| (hash, seq)).collect();
            entries.sort_unstable();
            self.recent.add_sorted(entries);
            after = last;
            self.maintain(connection, last + 1)?;
        }
    }

    /// For each of `hashes` (strictly increasing), appends `(i, seq)` to
    /// `out` for every row that may hold a key with `hashes[i]`: every row
    /// that holds one is among them. Hashes in order walk the recent
    /// entries, the filters and the runs' chunks in order too.
    pub fn candidates(
        &mut self,
        connection: &Connection,
        hashes: &[u64],
        out: &mut Vec<(usize, i64)>,
    ) -> Result<()> {
        debug_assert!(hashes.windows(2).all(|w| w[0] < w[1]));
        let started = Instant::now();
        let KeyIndex {
            recent,
            runs,
            stats,
            ..
        } = self;
        recent.candidates(hashes, out);
        for run in runs.iter().rev() {
            for (i, &hash) in hashes.iter().enumerate() {
                if let Some(&ahead) = hashes.get(i + PREFETCH_DISTANCE) {
                    run.filter.prefetch(ahead);
                }
                if !run.filter.may_contain(hash) {
                    continue;
                }
                let before = out.len();
                let probe_started = Instant::now();
                run.probe(connection, hash, i, out)?;
                stats.probe_time += probe_started.elapsed();
                stats.run_probes += 1;
                if out.len() == before {
                    stats.false_maybes += 1;
                }
            }
        }
        stats.lookup_time += started.elapsed();
        Ok(())
    }

    /// Adds the entries (sorted by hash) of rows that a committed
    /// transaction appended.
    pub fn add(&mut self, entries: Vec<(u64, i64)>) {
        self.recent.add_sorted(entries);
    }

    /// Writes the recent entries as a run once there are enough, then
    /// merges full levels; `next_seq` is the first seq not recorded yet.
    pub fn maintain(&mut self, connection: &Connection, next_seq: i64) -> Result<()> {
        if self.recent.len() < RECENT_LIMIT {
            return Ok(());
        }
        let started = Instant::now();
        self.flush(connection, next_seq)?;
        while let Some(level) = self.full_level() {
            self.merge(connection, level)?;
        }
        self.stats.maintenance_time += started.elapsed();
        Ok(())
    }

    pub fn stats(&self) -> IndexStats {
        IndexStats {
            runs: self.runs.len(),
            run_entries: self.runs.iter().map(|run| run.entries).sum(),
            recent_entries: self.recent.len(),
            filter_bytes: self.runs.iter().map(|run| run.filter.bytes()).sum(),
            ..self.stats
        }
    }

    fn flush(&mut self, connection: &Connection, covers_upto: i64) -> Result<()> {
        let transaction = connection.unchecked_transaction()?;
        let mut builder = self.start_run(0, self.recent.len() as u64);
        for (hash, seq) in self.recent.merged() {
            builder.push(&transaction, hash, seq)?;
        }
        let run = builder.finish(&transaction, covers_upto)?;
        transaction
            .commit()
            .context("cannot write the journal's key index")?;
        self.finish_run(run);
        self.recent.clear();
        self.stats.flushes += 1;
        Ok(())
    }

    fn full_level(&self) -> Option<i64> {
        let mut levels: Vec<i64> = self.runs.iter().map(|run| run.level).collect();
        levels.sort_unstable();
        levels
            .chunk_by(|a, b| a == b)
            .find(|same| same.len() >= MERGE_FANOUT)
            .map(|same| same[0])
    }

    /// Merges the oldest `MERGE_FANOUT` runs of `level` into one of the
    /// next level. Their filters are dropped first, so the merged run's
    /// filter takes their memory rather than adding to it; if the merge
    /// fails, the caller drops the whole index and loads it again.
    fn merge(&mut self, connection: &Connection, level: i64) -> Result<()> {
        let mut inputs = Vec::with_capacity(MERGE_FANOUT);
        while inputs.len() < MERGE_FANOUT {
            let position = self
                .runs
                .iter()
                .position(|run| run.level == level)
                .expect("full_level found enough runs");
            let mut run = self.runs.remove(position);
            run.filter = Filter::new(0, 0.0);
            inputs.push(run);
        }
        let total: u64 = inputs.iter().map(|run| run.entries).sum();
        let covers_upto = inputs.iter().map(|run| run.covers_upto).max().unwrap_or(1);
        let mut builder = self.start_run(level + 1, total);
        let mut readers: Vec<RunReader> = inputs.iter().map(RunReader::new).collect();
        let mut transaction = connection.unchecked_transaction()?;
        let mut chunks_in_transaction = 0;
        loop {
            let mut smallest: Option<(usize, (u64, i64))> = None;
            for (i, reader) in readers.iter_mut().enumerate() {
                if let Some(entry) = reader.peek(&transaction)?
                    && smallest.is_none_or(|(_, best)| entry < best)
                {
                    smallest = Some((i, entry));
                }
            }
            let Some((i, (hash, seq))) = smallest else {
                break;
            };
            readers[i].advance();
            if builder.push(&transaction, hash, seq)? {
                chunks_in_transaction += 1;
            }
            if chunks_in_transaction >= MERGE_CHUNKS_PER_TRANSACTION {
                transaction.commit()?;
                transaction = connection.unchecked_transaction()?;
                chunks_in_transaction = 0;
            }
        }
        let run = builder.finish(&transaction, covers_upto)?;
        for input in &inputs {
            input.delete(&transaction)?;
        }
        transaction
            .commit()
            .context("cannot write the journal's key index")?;
        self.finish_run(run);
        self.stats.merges += 1;
        Ok(())
    }

    fn start_run(&mut self, level: i64, entries: u64) -> RunBuilder {
        let bits = self.bits_per_key(entries);
        let builder = RunBuilder {
            run: Run {
                id: self.next_run,
                level,
                entries: 0,
                first_chunk: self.next_chunk,
                first_hashes: Vec::new(),
                covers_upto: 0,
                filter: Filter::new(entries, bits),
            },
            chunk: ChunkWriter::default(),
        };
        self.next_run += 1;
        builder
    }

    fn finish_run(&mut self, run: Run) {
        self.next_chunk = run.first_chunk + run.first_hashes.len() as i64;
        self.indexed_upto = self.indexed_upto.max(run.covers_upto);
        self.runs.push(run);
        self.runs.sort_by_key(|run| run.id);
    }

    /// Bits per key for a run of `entries`: the optimum for a fixed memory
    /// (Monkey, SIGMOD 2017) gives each run a false-maybe rate in proportion
    /// to its size, i.e. 1.44 bits per key fewer each time a run is twice
    /// as big. `base` is what a run of all expected keys would get.
    fn bits_per_key(&self, entries: u64) -> f64 {
        let expected = self.expected_keys.max(1_000_000) as f64;
        let average = (FILTER_BUDGET_BYTES * 8) as f64 / expected;
        let base = (average - 2.0).max(1.0);
        (base + 1.44 * (expected / entries.max(1) as f64).log2()).clamp(3.0, 14.0)
    }
}

/// Writes one run, chunk by chunk.
struct RunBuilder {
    run: Run,
    chunk: ChunkWriter,
}

impl RunBuilder {
    /// Adds an entry; returns whether a full chunk was written.
    fn push(&mut self, connection: &Connection, hash: u64, seq: i64) -> Result<bool> {
        let mut wrote = false;
        if !self.chunk.has_room() {
            self.write_chunk(connection)?;
            wrote = true;
        }
        self.chunk.push(hash, seq);
        self.run.filter.insert(hash);
        self.run.entries += 1;
        Ok(wrote)
    }

    fn write_chunk(&mut self, connection: &Connection) -> Result<()> {
        let (first, bytes) = self.chunk.take();
        let id = self.run.first_chunk + self.run.first_hashes.len() as i64;
        connection
            .prepare_cached(
                "INSERT INTO key_hash_chunks (id, run, first_hash, entries) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![id, self.run.id, first as i64, bytes])?;
        self.run.first_hashes.push(first);
        Ok(())
    }

    fn finish(mut self, connection: &Connection, covers_upto: i64) -> Result<Run> {
        if !self.chunk.is_empty() {
            self.write_chunk(connection)?;
        }
        self.run.covers_upto = covers_upto;
        let run = &self.run;
        connection.execute(
            "INSERT INTO key_hash_runs (id, level, entries, first_chunk, chunk_count, covers_upto)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                run.id,
                run.level,
                run.entries as i64,
                run.first_chunk,
                run.first_hashes.len() as i64,
                run.covers_upto
            ],
        )?;
        Ok(self.run)
    }
}

impl Run {
    /// Appends `(i, seq)` for this run's entries with `hash`, decoding
    /// the chunk only as far as the hash.
    fn probe(
        &self,
        connection: &Connection,
        hash: u64,
        i: usize,
        out: &mut Vec<(usize, i64)>,
    ) -> Result<()> {
        let end = self.first_hashes.partition_point(|&first| first <= hash);
        if end == 0 {
            return Ok(());
        }
        // Entries with this hash may begin in the chunk before the first
        // chunk that starts with it.
        let start = self.first_hashes[..end]
            .partition_point(|&first| first < hash)
            .saturating_sub(1);
        for index in start..end {
            chunk::find(connection, self.first_chunk + index as i64, hash, |seq| {
                out.push((i, seq))
            })?;
        }
        Ok(())
    }

    fn delete(&self, connection: &Connection) -> Result<()> {
        connection.execute(
            "DELETE FROM key_hash_chunks WHERE id BETWEEN ?1 AND ?2",
            params![
                self.first_chunk,
                self.first_chunk + self.first_hashes.len() as i64 - 1
            ],
        )?;
        connection.execute("DELETE FROM key_hash_runs WHERE id = ?1", params![self.id])?;
        Ok(())
    }
}

/// Streams one run's entries in order, a chunk at a time.
struct RunReader {
    next_chunk: i64,
    end_chunk: i64,
    buffer: Vec<(u64, i64)>,
    position: usize,
}

impl RunReader {
    fn new(run: &Run) -> RunReader {
        RunReader {
            next_chunk: run.first_chunk,
            end_chunk: run.first_chunk + run.first_hashes.len() as i64,
            buffer: Vec::new(),
            position: 0,
        }
    }

    fn peek(&mut self, connection: &Connection) -> Result<Option<(u64, i64)>> {
        while self.position == self.buffer.len() {
            if self.next_chunk == self.end_chunk {
                return Ok(None);
            }
            self.buffer.clear();
            self.position = 0;
            let buffer = &mut self.buffer;
            chunk::read(connection, self.next_chunk, |hash, seq| {
                buffer.push((hash, seq));
                true
            })?;
            self.next_chunk += 1;
        }
        Ok(Some(self.buffer[self.position]))
    }

    fn advance(&mut self) {
        self.position += 1;
    }
}

/// The entries not written as a run yet: sorted runs in memory, one per
/// transaction, merged two by two whenever the newer is at least half the
/// size of the older (so there are only a few, however small the
/// transactions), 16 bytes an entry.
#[derive(Default)]
struct Recent {
    runs: Vec<Vec<(u64, i64)>>,
    len: usize,
}

impl Recent {
    fn add_sorted(&mut self, entries: Vec<(u64, i64)>) {
        if entries.is_empty() {
            return;
        }
        self.len += entries.len();
        self.runs.push(entries);
        while let [.., older, newer] = self.runs.as_slice()
            && newer.len() * 2 >= older.len()
        {
            let newer = self.runs.pop().expect("two runs");
            let older = self.runs.pop().expect("two runs");
            self.runs.push(merge_sorted(older, newer));
        }
    }

    fn candidates(&self, hashes: &[u64], out: &mut Vec<(usize, i64)>) {
        for run in &self.runs {
            let mut from = 0;
            for (i, &hash) in hashes.iter().enumerate() {
                from += run[from..].partition_point(|entry| entry.0 < hash);
                out.extend(
                    run[from..]
                        .iter()
                        .take_while(|entry| entry.0 == hash)
                        .map(|entry| (i, entry.1)),
                );
            }
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    /// Every entry, in order, merged from the runs as it goes (no copy of
    /// them all).
    fn merged(&self) -> impl Iterator<Item = (u64, i64)> + '_ {
        let mut positions = vec![0usize; self.runs.len()];
        std::iter::from_fn(move || {
            let (run, entry) = self
                .runs
                .iter()
                .zip(&positions)
                .enumerate()
                .filter_map(|(i, (run, &at))| run.get(at).map(|entry| (i, *entry)))
                .min_by_key(|(_, entry)| *entry)?;
            positions[run] += 1;
            Some(entry)
        })
    }

    fn clear(&mut self) {
        self.runs.clear();
        self.len = 0;
    }
}

fn merge_sorted(older: Vec<(u64, i64)>, newer: Vec<(u64, i64)>) -> Vec<(u64, i64)> {
    let mut merged = Vec::with_capacity(older.len() + newer.len());
    let (mut left, mut right) = (older.into_iter().peekable(), newer.into_iter().peekable());
    while let (Some(l), Some(r)) = (left.peek(), right.peek()) {
        let next = if l <= r { left.next() } else { right.next() };
        merged.push(next.expect("peeked"));
    }
    merged.extend(left);
    merged.extend(right);
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journal_schema() -> Connection {
        let mut connection = Connection::open_in_memory().unwrap();
        super::super::open::migrate_to(&mut connection, super::super::schema_version() as usize);
        connection
    }

    fn insert_rows(connection: &Connection, keys: std::ops::Range<u32>) {
        connection
            .execute(
                "INSERT OR IGNORE INTO journal_commits (id, at) VALUES (1, 0)",
                [],
            )
            .unwrap();
        let mut insert = connection
            .prepare("INSERT INTO key_log (seq, db, key, outcome, attempts, commit_id) VALUES (?1, 0, ?2, 0, 1, 1)")
            .unwrap();
        for i in keys {
            insert
                .execute(params![i as i64 + 1, format!("k{i}").into_bytes()])
                .unwrap();
        }
    }

    fn seqs_of(index: &mut KeyIndex, connection: &Connection, i: u32) -> Vec<i64> {
        let mut out = Vec::new();
        index
            .candidates(
                connection,
                &[key_hash(0, format!("k{i}").as_bytes())],
                &mut out,
            )
            .unwrap();
        out.into_iter().map(|(_, seq)| seq).collect()
    }

    #[test]
    fn every_recorded_key_is_found_through_flushes_merges_and_reloads() {
        let connection = journal_schema();
        let keys = (RECENT_LIMIT * MERGE_FANOUT + RECENT_LIMIT / 2) as u32;
        insert_rows(&connection, 0..keys);
        // Loading indexes the rows: four flushes merge into one run.
        let mut index = KeyIndex::load(&connection, 0).unwrap();
        let stats = index.stats();
        assert_eq!((stats.flushes, stats.merges), (4, 1));
        assert_eq!(stats.runs, 1);
        assert_eq!(stats.recent_entries, RECENT_LIMIT / 2);
        for i in (0..keys).step_by(9973).chain([0, keys - 1]) {
            assert!(
                seqs_of(&mut index, &connection, i).contains(&(i as i64 + 1)),
                "key {i}"
            );
        }
        let unknown = (keys..keys + 10_000)
            .filter(|i| !seqs_of(&mut index, &connection, *i).is_empty())
            .count();
        assert!(
            unknown < 10,
            "{unknown} of 10000 unrecorded keys matched a hash"
        );
        // A writer that opens the journal again finds the same.
        let mut again = KeyIndex::load(&connection, 0).unwrap();
        assert_eq!(again.stats().runs, 1);
        assert_eq!(again.stats().recent_entries, RECENT_LIMIT / 2);
        assert!(seqs_of(&mut again, &connection, keys / 3).contains(&(keys as i64 / 3 + 1)));
    }

    #[test]
    fn half_written_merge_chunks_are_dropped_on_load() {
        let connection = journal_schema();
        insert_rows(&connection, 0..(RECENT_LIMIT as u32 + 5));
        drop(KeyIndex::load(&connection, 0).unwrap());
        let chunks: i64 = connection
            .query_row("SELECT MAX(id) FROM key_hash_chunks", [], |r| r.get(0))
            .unwrap();
        connection
            .execute(
                "INSERT INTO key_hash_chunks (id, run, first_hash, entries) VALUES (?1, 99, 0, x'0001')",
                params![chunks + 1],
            )
            .unwrap();
        let mut index = KeyIndex::load(&connection, 0).unwrap();
        let left: i64 = connection
            .query_row("SELECT MAX(id) FROM key_hash_chunks", [], |r| r.get(0))
            .unwrap();
        assert_eq!(left, chunks);
        assert!(seqs_of(&mut index, &connection, 7).contains(&8));
    }

    #[test]
    fn filters_get_fewer_bits_as_runs_grow_within_the_budget() {
        let index = KeyIndex {
            recent: Recent::default(),
            runs: Vec::new(),
            indexed_upto: 1,
            next_chunk: 1,
            next_run: 1,
            expected_keys: 100_000_000,
            stats: IndexStats::default(),
        };
        let small = index.bits_per_key(RECENT_LIMIT as u64);
        let big = index.bits_per_key(64 << 20);
        assert!(small > big + 5.0, "{small} vs {big}");
        // The runs of a 100M-key job fit the budget.
        let sizes = [67_108_864u64, 16_777_216, 16_777_216, 1_048_576, 262_144];
        let bytes: f64 = sizes
            .iter()
            .map(|&n| n as f64 * index.bits_per_key(n) / 8.0)
            .sum();
        assert!(bytes < (FILTER_BUDGET_BYTES as f64) * 1.1, "{bytes}");
    }
}
