//! Sharded jobs: `run --shard I/N` copies one worker's share of a cluster
//! source's 16,384 hash slots, so N workers (processes, pods, machines)
//! copy one cluster between them, each with its own journal, and `status`
//! and `report` merge their journals into one view.
//!
//! # How the slots are split, and why every worker agrees
//!
//! Worker I owns a contiguous range of the slot space that depends on I
//! and N alone ([`split`]), cut where `redis-cli --cluster create` cuts
//! the slots of N primaries. Nothing about the cluster goes into the
//! split, so workers that start hours apart (an Indexed Job with less
//! parallelism than completions), that restart after a crash, or that
//! start while slots move, still agree; no worker needs to see another's
//! journal. The split is recorded in each journal with the job's options,
//! so a resume uses the slots the job started with.
//!
//! The price is paid in SCAN only: a worker scans every node that holds
//! some of its slots now and keeps the keys of its own slots
//! ([`crate::cluster::key_slot`]), so a node whose slots straddle two
//! workers' ranges is scanned by both. On a cluster laid out as
//! `redis-cli` lays it out, with N equal to the number of primaries (or
//! dividing it), the ranges match the nodes and a worker scans nothing
//! that is not its own while no slot moves.
//!
//! # Layout
//! - [`split`]: the split itself ([`ShardSpec`]) and a set of slots
//!   ([`SlotSet`]).
//! - [`keys`]: keys counted per slot (a worker's expected keys, the guard
//!   against a target that already holds keys of this shard, the report's
//!   counts over some workers' slots) and kept per slot (the scan's filter).
//! - [`workers`]: the journals of several workers read as one job, for
//!   `status` and `report`.

pub mod keys;
pub mod split;
pub mod workers;

pub use split::{ShardSpec, SlotSet};

use anyhow::Result;

use crate::exit::usage_error;
use crate::options::CopyOptions;
use crate::side::Side;

/// `--shard` splits a cluster's hash slots: refused (a usage error) for a
/// standalone source, which has none.
pub fn check_source(source: &Side, options: &CopyOptions) -> Result<()> {
    if options.shard.is_some() && !source.is_cluster() {
        return Err(usage_error(format!(
            "--shard splits the hash slots of a cluster source, but source {} is a standalone server: drop --shard (one worker copies it)",
            source.endpoint.redacted()
        )));
    }
    Ok(())
}

/// The end of a worker's run: how many keys SCAN returned that belong to
/// other workers (scanned, not copied), beside the keys it kept.
pub fn log_scan_overhead(shard: &ShardSpec, kept: u64) {
    let foreign = crate::metrics::registry().foreign_keys();
    let scanned = kept + foreign;
    let share = if scanned == 0 {
        0.0
    } else {
        foreign as f64 * 100.0 / scanned as f64
    };
    crate::log::event(
        crate::log::Level::Info,
        &format!(
            "shard {} (slots {}): this run scanned {scanned} keys, {foreign} of them ({share:.1}%) in other workers' slots (left to them)",
            shard.label(),
            shard.slots_text()
        ),
        &[
            ("event", serde_json::json!("shard")),
            ("shard", serde_json::json!(shard.label())),
            ("keys_scanned", serde_json::json!(scanned)),
            ("keys_foreign", serde_json::json!(foreign)),
        ],
    );
}

/// What the start line says a worker copies: `shard 1/3 (slots 5461-10922)`.
pub fn selection_text(shard: &ShardSpec) -> String {
    format!("shard {} (slots {})", shard.label(), shard.slots_text())
}

/// Where a finished worker points to for the whole job: the report of
/// every worker's journal together.
pub fn whole_job_hint(shard: &ShardSpec, journal: &std::path::Path) -> String {
    let directory = match journal.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    format!(
        "this was shard {} of {}: the whole job's report reads every worker's journal, `{}` (a directory holding them all) or --journal once per worker",
        shard.label(),
        shard.count,
        crate::hint::command("report", &directory, "")
    )
}
