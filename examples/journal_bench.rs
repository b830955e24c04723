//! Journal write throughput alone (no Redis): commits N random-order keys
//! in batches, as the copy pipeline would, and prints keys/s.
//!
//!     cargo run --release --example journal_bench -- 1000000 1000

use std::time::Instant;

use redis_ferry::journal::{JobRecord, JobState, Journal};
use redis_ferry::options::{CopyOptions, JournalKeys};
use redis_ferry::outcome::{KeyResult, Outcome};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let keys: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let batch: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1000);
    let dir = tempfile::tempdir_in(".")?;
    let path = dir.path().join("bench.db");
    let mut journal = Journal::create(&path)?;
    journal.insert_job(
        &JobRecord::new(
            JobState::Running,
            "redis://a",
            "redis://b",
            CopyOptions::default(),
        ),
        &[],
    )?;
    let started = Instant::now();
    let mut state = 0x9e3779b97f4a7c15u64;
    for start in (0..keys).step_by(batch) {
        let results: Vec<KeyResult> = (start..(start + batch).min(keys))
            .map(|_| {
                // xorshift: random order, like SCAN's hash order
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                KeyResult {
                    key: format!("key:{:016x}", state).into_bytes(),
                    outcome: Outcome::Restored,
                    ttl_ms: None,
                    size_bytes: Some(120),
                    error: None,
                    method: Some(redis_ferry::outcome::WriteMethod::Restore),
                }
            })
            .collect();
        journal.commit_batch(0, &results, None, JournalKeys::All)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let size: u64 = std::fs::read_dir(dir.path())?
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    let sqlite_peak = unsafe { rusqlite::ffi::sqlite3_memory_highwater(0) };
    let hwm = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .unwrap_or("")
        .split_whitespace()
        .nth(1)
        .and_then(|kb| kb.parse::<f64>().ok())
        .unwrap_or(0.0);
    println!(
        "sqlite peak memory {:.1} MB, process peak RSS {:.1} MB",
        sqlite_peak as f64 / 1e6,
        hwm / 1024.0
    );
    println!(
        "{keys} keys in batches of {batch}: {seconds:.2}s, {:.0} keys/s, {:.1} bytes/key on disk",
        keys as f64 / seconds,
        size as f64 / keys as f64
    );
    Ok(())
}
