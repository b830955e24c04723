//! How long, and how much memory, a CSV export of a big journal takes.
//!
//!     cargo build --release
//!     cargo run --release --example csv_export_bench -- [DIR] [KEYS]
//!
//! Builds a journal of KEYS keys (default 1,000,000) in DIR (default
//! `$TMPDIR/redis-ferry-csv-bench`) through the library, as a job would
//! (`Journal::commit_batch`, 10,000 keys per transaction): mostly restored
//! keys, a third with a TTL, one in 200 expired, one in 1,000 failed with a
//! NOPERM error, some binary keys. No Redis server is needed.
//!
//! Then it runs, in a separate process so the figures are the export's own:
//!
//!     /usr/bin/time -v target/release/redis-ferry report --journal DIR/journal.db \
//!         --format csv --output DIR/audit.csv
//!
//! and prints wall time, peak memory (max RSS), rows and bytes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use redis_ferry::journal::{JobRecord, JobState, Journal};
use redis_ferry::options::{CopyOptions, JournalKeys};
use redis_ferry::outcome::{KeyResult, Outcome};

const BATCH: usize = 10_000;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("redis-ferry-csv-bench"));
    let keys: usize = match args.next() {
        Some(text) => text.parse().context("KEYS must be a number")?,
        None => 1_000_000,
    };
    std::fs::create_dir_all(&dir)?;
    let journal = dir.join("journal.db");
    for stale in [
        "journal.db",
        "journal.db-wal",
        "journal.db-shm",
        "audit.csv",
    ] {
        let _ = std::fs::remove_file(dir.join(stale));
    }

    let started = Instant::now();
    build_journal(&journal, keys)?;
    println!(
        "built {} ({keys} keys, {} MB) in {:.1}s",
        journal.display(),
        std::fs::metadata(&journal)?.len() / 1_000_000,
        started.elapsed().as_secs_f64()
    );
    export(&journal, &dir.join("audit.csv"))
}

fn build_journal(path: &Path, keys: usize) -> Result<()> {
    let mut journal = Journal::create(path)?;
    journal.insert_job(
        &JobRecord::new(
            JobState::Completed,
            "redis://:***@old.example:6379",
            "redis://new.example:6379",
            CopyOptions::default(),
        ),
        &[],
    )?;
    journal.begin_run("run")?;
    for first in (0..keys).step_by(BATCH) {
        let batch: Vec<KeyResult> = (first..keys.min(first + BATCH)).map(key_result).collect();
        journal.commit_batch(0, &batch, None, JournalKeys::All)?;
    }
    journal.end_run(3)?;
    journal.set_job_state(JobState::Completed, None)?;
    Ok(())
}

/// A plausible key and outcome for key number `i`.
fn key_result(i: usize) -> KeyResult {
    let mut key = format!("user:{i:09}:session").into_bytes();
    if i.is_multiple_of(97) {
        key.extend_from_slice(b"\x00\xff\"bin,\n");
    }
    let outcome = match i {
        _ if i % 1000 == 7 => Outcome::Failed,
        _ if i % 200 == 3 => Outcome::Expired,
        _ => Outcome::Restored,
    };
    KeyResult {
        key,
        outcome,
        ttl_ms: (i.is_multiple_of(3) && outcome == Outcome::Restored)
            .then_some(3_600_000 + i as i64),
        size_bytes: (outcome == Outcome::Restored).then_some(64 + (i % 2000) as i64),
        error: (outcome == Outcome::Failed).then(|| {
            "NOPERM this user has no permissions to access one of the keys used as arguments"
                .to_string()
        }),
        method: (outcome == Outcome::Restored)
            .then_some(redis_ferry::outcome::WriteMethod::Restore),
    }
}

/// Times the export in its own process with `/usr/bin/time -v`.
fn export(journal: &Path, csv: &Path) -> Result<()> {
    let exe = std::env::current_exe()?;
    // target/release/examples/csv_export_bench -> target/release/redis-ferry
    let binary = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("redis-ferry"))
        .filter(|path| path.exists())
        .context("target/release/redis-ferry not found: run `cargo build --release` first")?;
    let arguments = [
        "report".as_ref(),
        "--journal".as_ref(),
        journal.as_os_str(),
        "--format".as_ref(),
        "csv".as_ref(),
        "--output".as_ref(),
        csv.as_os_str(),
    ];
    println!(
        "running: /usr/bin/time -v {} report --journal {} --format csv --output {}",
        binary.display(),
        journal.display(),
        csv.display()
    );
    let output = Command::new("/usr/bin/time")
        .arg("-v")
        .arg(&binary)
        .args(arguments)
        .output()
        .context("cannot run /usr/bin/time (Debian: apt-get install time)")?;
    let stats = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        bail!("the export failed:\n{stats}");
    }
    let field = |name: &str| {
        stats
            .lines()
            .find_map(|line| line.trim().strip_prefix(name))
            .map(|value| value.trim().to_string())
            .unwrap_or_else(|| "?".to_string())
    };
    let bytes = std::fs::metadata(csv)?.len();
    let rows = std::io::BufRead::lines(std::io::BufReader::new(std::fs::File::open(csv)?))
        .count()
        .saturating_sub(1);
    println!(
        "wall time:       {}",
        field("Elapsed (wall clock) time (h:mm:ss or m:ss):")
    );
    println!(
        "user + system:   {} s + {} s",
        field("User time (seconds):"),
        field("System time (seconds):")
    );
    println!(
        "peak RSS:        {} KB",
        field("Maximum resident set size (kbytes):")
    );
    println!("CSV:             {bytes} bytes, {rows} lines after the header");
    Ok(())
}
