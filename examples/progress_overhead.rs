//! What progress and metrics cost per key: `Progress::record` (the call the
//! journal stage makes for every committed batch: outcome counts, the
//! metrics registry, the bar or log-line check) over 10,000,000 synthetic
//! key results in batches of 1000, with no servers involved.
//!
//!     cargo run --release --example progress_overhead
//!
//! Prints nanoseconds per key for `--progress off` and `--progress log`
//! (with a log interval longer than the run, so no line is written).

use std::time::{Duration, Instant};

use redis_ferry::outcome::{KeyResult, Outcome, WriteMethod};
use redis_ferry::progress::{Progress, ProgressMode, ProgressSettings};

const BATCH: usize = 1000;
const BATCHES: usize = 10_000;

fn main() {
    let batch: Vec<KeyResult> = (0..BATCH)
        .map(|i| KeyResult {
            key: format!("key:{i}").into_bytes(),
            outcome: if i % 100 == 0 {
                Outcome::Expired
            } else {
                Outcome::Restored
            },
            ttl_ms: None,
            size_bytes: Some(120),
            error: None,
            method: Some(WriteMethod::Restore),
        })
        .collect();
    for (mode, name) in [(ProgressMode::Off, "off"), (ProgressMode::Log, "log")] {
        let settings = ProgressSettings::new(mode, Duration::from_secs(3600));
        let total = (BATCH * BATCHES) as u64;
        let mut progress = Progress::new(settings, Some(total), 0);
        let started = Instant::now();
        for _ in 0..BATCHES {
            progress.record(&batch);
        }
        let took = started.elapsed();
        progress.finish();
        println!(
            "--progress {name}: {} keys in {:.3}s, {:.1} ns per key",
            progress.counts().total(),
            took.as_secs_f64(),
            took.as_nanos() as f64 / total as f64
        );
    }
}
