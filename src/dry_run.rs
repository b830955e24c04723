//! `run --dry-run`: walk the source exactly as a job would (same databases,
//! `--match`, `--type`, with `--shard` this worker's slots) and count what
//! would be copied, per database and type. Nothing is written to the
//! target or to the journal.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{Result, bail};
use redis::Value;

use crate::exit::Exit;
use crate::interrupt::Shutdown;
use crate::options::CopyOptions;
use crate::scan::{parse_scan, scan_command};
use crate::side::Side;
use crate::wire::CommandBuffer;

/// Keys (and keys with a TTL) per database and type.
#[derive(Debug, Default)]
pub struct DryRunCounts {
    /// (source db, type) → (keys, keys with a TTL)
    pub by_db_and_type: BTreeMap<(i64, String), (u64, u64)>,
}

/// Scans the source and counts; `source` is already connected and checked.
pub fn count(
    source: &mut Side,
    options: &CopyOptions,
    shutdown: &Shutdown,
) -> Result<DryRunCounts> {
    let mut counts = DryRunCounts::default();
    let dbs = crate::job::source_databases(source, options);
    let own_slots = options
        .shard
        .as_ref()
        .map(crate::shard::ShardSpec::slot_set);
    for node in &nodes_to_scan(source, own_slots.as_ref()) {
        for &db in &dbs {
            let mut cursor = 0u64;
            loop {
                if shutdown.requested() {
                    bail!("interrupted");
                }
                let mut pipe = CommandBuffer::new();
                pipe.add_command(scan_command(cursor, options));
                let reply = source.run_pipelines(db, vec![(node.clone(), pipe)])?;
                let reply = reply
                    .into_iter()
                    .next()
                    .and_then(|(_, mut r)| r.pop())
                    .unwrap_or(Value::Nil);
                let (mut keys, next) = parse_scan(reply)?;
                if let Some(own) = &own_slots {
                    keys = crate::shard::keys::keep_own(keys, own).0;
                }
                count_keys(source, node, db, &keys, &mut counts)?;
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
    }
    Ok(counts)
}

/// Every primary, or with `--shard` those that serve this worker's slots.
fn nodes_to_scan(source: &Side, own: Option<&crate::shard::SlotSet>) -> Vec<String> {
    match (source.topology(), own) {
        (Some(topology), Some(own)) => topology
            .primaries()
            .into_iter()
            .filter(|node| own.overlaps(&node.slots))
            .map(|node| node.address())
            .collect(),
        _ => source.primary_addresses(),
    }
}

fn count_keys(
    source: &mut Side,
    node: &str,
    db: i64,
    keys: &[Vec<u8>],
    counts: &mut DryRunCounts,
) -> Result<()> {
    if keys.is_empty() {
        return Ok(());
    }
    let mut pipe = CommandBuffer::new();
    for key in keys {
        pipe.cmd("TYPE").arg(key);
        pipe.cmd("PTTL").arg(key);
    }
    let replies = source.run_pipelines(db, vec![(node.to_string(), pipe)])?;
    let replies = replies
        .into_iter()
        .next()
        .map(|(_, r)| r)
        .unwrap_or_default();
    for pair in replies.chunks(2) {
        let key_type = match &pair[0] {
            Value::SimpleString(text) => text.clone(),
            Value::Okay => "string".to_string(),
            Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
            _ => "unknown".to_string(),
        };
        if key_type == "none" {
            continue; // gone since SCAN returned it
        }
        let has_ttl = matches!(pair.get(1), Some(Value::Int(ttl)) if *ttl >= 0);
        let entry = counts.by_db_and_type.entry((db, key_type)).or_default();
        entry.0 += 1;
        entry.1 += u64::from(has_ttl);
    }
    Ok(())
}

impl DryRunCounts {
    pub fn total(&self) -> u64 {
        self.by_db_and_type.values().map(|(keys, _)| keys).sum()
    }

    pub fn to_text(&self, options: &CopyOptions) -> String {
        let mut out = String::from("dry run: nothing was written to the target or the journal\n");
        let _ = writeln!(
            out,
            "{:>4} {:>6} {:<12} {:>12} {:>12}",
            "db", "-> db", "type", "keys", "with TTL"
        );
        for ((db, key_type), (keys, with_ttl)) in &self.by_db_and_type {
            let _ = writeln!(
                out,
                "{:>4} {:>6} {:<12} {:>12} {:>12}",
                db,
                options.target_db(*db),
                key_type,
                keys,
                with_ttl
            );
        }
        let _ = writeln!(out, "total: {} keys would be copied", self.total());
        out
    }
}

/// `redis-ferry run --dry-run`.
pub fn run(source: &mut Side, options: &CopyOptions, shutdown: &Shutdown) -> Result<Exit> {
    let counts = match count(source, options, shutdown) {
        Err(_) if shutdown.requested() => return Ok(Exit::Interrupted),
        other => other?,
    };
    crate::output::print(&counts.to_text(options))?;
    Ok(Exit::Success)
}
