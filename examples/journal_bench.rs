//! The journal alone (no Redis): records KEYS keys in random order, as the
//! copy pipeline would (batches of 1,000 keys like one SCAN reply, 50
//! batches per transaction like the pipeline's group commit), and prints
//! keys/s for each tenth of the run and overall, bytes per key on disk and
//! the peak RSS of the process.
//!
//!     cargo run --release --example journal_bench -- 1000000
//!     cargo run --release --example journal_bench -- 100000000 --dir /var/tmp --keep
//!
//! Options: `--batch N` keys per batch (1000), `--group N` batches per
//! transaction (50), `--dir DIR` where to put the journal (a temporary
//! directory under the current one), `--keep` leave the journal there (to
//! time `status` and `report` on it), `--rescan` then record every key a
//! second time, in another order (what a rescan after a source restart
//! does), `--reopen` then open the journal again as `resume` would, time
//! loading its key index and paging through the failed keys as `retry`
//! does, `--failed-every N` record every Nth key as failed.
//!
//! Keys look like `key:0123456789abcdef` (20 bytes), 10% with a TTL, as
//! the project's `bench --dataset small` copies them.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use redis_ferry::journal::{
    BatchRecord, CursorRecord, JobRecord, JobState, Journal, JournalReader,
};
use redis_ferry::options::{CopyOptions, JournalKeys};
use redis_ferry::outcome::{KeyResult, Outcome, WriteMethod};

struct Settings {
    keys: u64,
    batch: usize,
    group: usize,
    dir: Option<PathBuf>,
    keep: bool,
    rescan: bool,
    reopen: bool,
    failed_every: u64,
}

fn main() -> Result<()> {
    let settings = parse_args()?;
    let (_temporary, dir) = match &settings.dir {
        Some(dir) => (None, tempfile::tempdir_in(dir)?.keep()),
        None => {
            let temporary = tempfile::tempdir_in(".")?;
            let path = temporary.path().to_path_buf();
            (Some(temporary), path)
        }
    };
    let path = dir.join("journal.db");
    let mut journal = Journal::create(&path)?;
    journal.insert_job(
        &JobRecord::new(
            JobState::Running,
            "redis://a",
            "redis://b",
            CopyOptions::default(),
        ),
        &[expected_cursor(settings.keys)],
    )?;
    journal.begin_run("run")?;
    println!(
        "recording {} keys (batches of {}, {} per transaction) in {}",
        settings.keys,
        settings.batch,
        settings.group,
        path.display()
    );
    let seconds = record_pass(&mut journal, &settings, 0x9e37_79b9_7f4a_7c15, "first pass")?;
    let stats = journal.index_stats()?;
    println!(
        "key index: {} runs, {} entries in runs, {} recent, filters {:.1} MB; {} run reads for {} keys, {} of them false maybes; {} flushes, {} merges; {:.1}s finding candidates ({:.1}s of it reading runs), {:.1}s writing runs",
        stats.runs,
        stats.run_entries,
        stats.recent_entries,
        stats.filter_bytes as f64 / 1e6,
        stats.run_probes,
        settings.keys,
        stats.false_maybes,
        stats.flushes,
        stats.merges,
        stats.lookup_time.as_secs_f64(),
        stats.probe_time.as_secs_f64(),
        stats.maintenance_time.as_secs_f64()
    );
    if settings.rescan {
        // The same keys in the same generator, another starting state: a
        // different order, as a rescan after a restart sees them.
        record_pass(&mut journal, &settings, 0x5851_f42d_4c95_7f2d, "rescan")?;
    }
    journal.set_job_state(JobState::Completed, None)?;
    journal.end_run(0)?;
    let counts = journal.counts()?;
    drop(journal);
    if settings.reopen {
        // What `resume`, `retry` or `verify` pay before their first key.
        let started = Instant::now();
        let mut again = Journal::open_to_drive(&path)?;
        let stats = again.index_stats()?;
        println!(
            "reopened and loaded the key index ({} runs, {:.1} MB of filters) in {:.1}s, RSS {:.1} MB",
            stats.runs,
            stats.filter_bytes as f64 / 1e6,
            started.elapsed().as_secs_f64(),
            rss_mb()
        );
        drop(again);
        page_through_failed_keys(&path)?;
    }
    let restored: u64 = counts.values().map(|c| c.restored).sum();
    let failed: u64 = counts.values().map(|c| c.failed).sum();
    assert_eq!(restored + failed, settings.keys, "every key counted once");
    let size: u64 = std::fs::read_dir(&dir)?
        .filter_map(|entry| entry.ok()?.metadata().ok())
        .map(|metadata| metadata.len())
        .sum();
    println!(
        "{} keys in {seconds:.1}s: {:.0} keys/s; {:.1} bytes/key on disk ({:.0} MB); peak RSS {:.1} MB; counted {restored} restored",
        settings.keys,
        settings.keys as f64 / seconds,
        size as f64 / settings.keys as f64,
        size as f64 / 1e6,
        peak_rss_mb()
    );
    if settings.keep {
        println!("kept {}", path.display());
    } else if settings.dir.is_some() {
        std::fs::remove_dir_all(&dir)?;
    }
    Ok(())
}

/// Records every key once, in the generator's order; prints the rate of
/// each tenth. Returns the seconds it took.
fn record_pass(journal: &mut Journal, settings: &Settings, seed: u64, name: &str) -> Result<f64> {
    let started = Instant::now();
    let mut tenth_started = Instant::now();
    let mut keys = Keys::new(seed, settings.keys);
    let mut done = 0u64;
    let mut next_tenth = 1;
    let mut group: Vec<Vec<KeyResult>> = Vec::with_capacity(settings.group);
    while done < settings.keys {
        group.clear();
        while group.len() < settings.group && done < settings.keys {
            let size = (settings.keys - done).min(settings.batch as u64);
            group.push(
                (0..size)
                    .map(|_| keys.next_result(settings.failed_every))
                    .collect(),
            );
            done += size;
        }
        let records: Vec<BatchRecord<'_>> = group
            .iter()
            .map(|results| BatchRecord {
                db: 0,
                results,
                checkpoint: None,
            })
            .collect();
        journal.commit_batches(&records, JournalKeys::All)?;
        if done * 10 >= settings.keys * next_tenth {
            let tenth = settings.keys / 10;
            println!(
                "  {name} {:>3}%: {:>9.0} keys/s in this tenth, RSS {:.1} MB",
                next_tenth * 10,
                tenth as f64 / tenth_started.elapsed().as_secs_f64(),
                rss_mb()
            );
            tenth_started = Instant::now();
            next_tenth += 1;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{name}: {} keys in {seconds:.1}s, {:.0} keys/s",
        settings.keys,
        settings.keys as f64 / seconds
    );
    Ok(seconds)
}

/// Reads every failed key in pages of 1,000, as `retry` does.
fn page_through_failed_keys(path: &std::path::Path) -> Result<()> {
    let reader = JournalReader::open(path)?;
    let started = Instant::now();
    let (mut after, mut keys, mut pages) = (None, 0usize, 0usize);
    loop {
        let page = reader.keys_with_outcomes(&[Outcome::Failed], after, 1000)?;
        let Some(last) = page.last() else { break };
        after = Some(last.position);
        keys += page.len();
        pages += 1;
    }
    println!(
        "retry's pages: {keys} failed keys in {pages} pages in {:.2}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The keys of a run, in a random order like SCAN's: a permutation of
/// 0..keys (an odd multiplier modulo a power of two, then a xorshift of
/// the bits, both invertible), so every key comes exactly once per pass.
struct Keys {
    position: u64,
    mask: u64,
    multiplier: u64,
    count: u64,
}

impl Keys {
    fn new(seed: u64, count: u64) -> Keys {
        let bits = 64 - count.max(2).leading_zeros();
        Keys {
            position: 0,
            mask: (1u64 << bits) - 1,
            multiplier: seed | 1,
            count,
        }
    }

    fn next_index(&mut self) -> u64 {
        loop {
            let mut x = self.position.wrapping_mul(self.multiplier) & self.mask;
            x ^= x >> (self.mask.count_ones() / 2 + 1);
            x = x.wrapping_mul(0xd6e8_feb8_6659_fd93) & self.mask;
            self.position += 1;
            if x < self.count {
                return x;
            }
        }
    }

    fn next_result(&mut self, failed_every: u64) -> KeyResult {
        let index = self.next_index();
        let key = format!("key:{:016x}", index.wrapping_mul(0x9e37_79b9_7f4a_7c15)).into_bytes();
        if failed_every > 0 && index.is_multiple_of(failed_every) {
            return KeyResult::failed(
                key,
                "NOPERM this user has no permissions to access one of the keys used as arguments",
            );
        }
        KeyResult {
            key,
            outcome: Outcome::Restored,
            ttl_ms: index.is_multiple_of(10).then_some(3_600_000),
            size_bytes: Some(120),
            error: None,
            method: Some(WriteMethod::Restore),
        }
    }
}

/// A cursor that expects `keys` keys, as `run` plans one from INFO keyspace.
fn expected_cursor(keys: u64) -> CursorRecord {
    CursorRecord {
        node: "standalone".to_string(),
        db: 0,
        target_db: 0,
        cursor: 0,
        done: false,
        run_id: None,
        keys_scanned: 0,
        keys_expected: Some(keys),
        updated_at: 0,
        node_layout: None,
    }
}

fn status_kb(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|line| line.starts_with(field))
        .and_then(|line| line.split_whitespace().nth(1)?.parse::<f64>().ok())
        .unwrap_or(0.0)
}

fn rss_mb() -> f64 {
    status_kb("VmRSS") / 1024.0
}

fn peak_rss_mb() -> f64 {
    status_kb("VmHWM") / 1024.0
}

fn parse_args() -> Result<Settings> {
    let mut settings = Settings {
        keys: 1_000_000,
        batch: 1000,
        group: 50,
        dir: None,
        keep: false,
        rescan: false,
        reopen: false,
        failed_every: 0,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--batch" => settings.batch = value("--batch")?.parse()?,
            "--group" => settings.group = value("--group")?.parse()?,
            "--dir" => settings.dir = Some(PathBuf::from(value("--dir")?)),
            "--keep" => settings.keep = true,
            "--rescan" => settings.rescan = true,
            "--reopen" => settings.reopen = true,
            "--failed-every" => settings.failed_every = value("--failed-every")?.parse()?,
            keys => settings.keys = keys.parse().context("KEYS must be a number")?,
        }
    }
    Ok(settings)
}
