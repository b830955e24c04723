//! Walking one database of one source node with SCAN, as checkpointable
//! batches of keys for the copy workers.
//!
//! A batch's checkpoint is the cursor SCAN returned *with* its keys: once
//! the batch is journaled, a resume starts there and never skips a key.
//! Listing is separate from reading so that each batch's copy can set up
//! its fence before the keys are read (see [`crate::copy::fence`]).
//!
//! A worker of a sharded job (`--shard`) keeps only the keys of its own
//! slots from each page; the others belong to another worker, and are
//! counted as the scan's overhead ([`crate::metrics`]).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use redis::Value;

use crate::copy::KeyBatch;
use crate::interrupt::Shutdown;
use crate::options::CopyOptions;
use crate::rate::RateLimiter;
use crate::side::Side;
use crate::wire::CommandBuffer;

/// Emit a batch without keys (to checkpoint a cursor that found nothing)
/// no more often than this.
const EMPTY_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// One (source node, database) to scan, from `cursor` on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanTask {
    /// The node's name in the journal (`standalone` or a cluster node id).
    pub node: String,
    /// Where to send SCAN (the node itself, or its replica).
    pub address: String,
    pub db: i64,
    pub target_db: i64,
    pub cursor: u64,
    /// run_id of the server being scanned, stored with the cursor.
    pub run_id: String,
}

/// Where a scan stands after a batch; journaled with the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub node: String,
    pub db: i64,
    pub cursor: u64,
    /// SCAN returned cursor 0: this database of this node is covered.
    pub done: bool,
    pub run_id: String,
    /// Keys SCAN returned for this batch (of this worker's slots, with
    /// `--shard`).
    pub scanned: u64,
}

/// Keys listed by a source of work, the cursor to record once they are
/// journaled (SCAN), and what to tell the source of work then.
pub struct Listed {
    pub batch: KeyBatch,
    pub checkpoint: Option<Checkpoint>,
    /// Called once the batch's outcomes are journaled (following counts
    /// the changes it applied and how late).
    pub journaled: Option<Journaled>,
}

/// See [`Listed::journaled`].
pub type Journaled = Box<dyn FnOnce(&[crate::outcome::KeyResult]) + Send>;

/// Scans `task` to the end (or until `stop`), handing batches of at most
/// `batch_keys` keys to `emit`. `emit` returns false when nobody wants more
/// batches. Returns true when SCAN came back to cursor 0 (the whole
/// database was walked).
pub fn scan_task(
    side: &mut Side,
    task: &ScanTask,
    options: &CopyOptions,
    limiter: &RateLimiter,
    stop: &Shutdown,
    batch_keys: usize,
    mut emit: impl FnMut(Listed) -> bool,
) -> Result<bool> {
    let failed = || format!("SCAN of db {} on {} failed", task.db, task.address);
    let mut first = CommandBuffer::new();
    first.add_command(scan_command(task.cursor, options));
    let reply = side
        .run_pipelines(task.db, vec![(task.address.clone(), first)])?
        .pop()
        .and_then(|(_, mut replies)| replies.pop())
        .context("no reply from the source")?;
    let (mut keys, mut next) = parse_scan(reply).with_context(failed)?;
    let mut last_emit = Instant::now();
    let own_slots = options
        .shard
        .as_ref()
        .map(crate::shard::ShardSpec::slot_set);
    loop {
        if stop.requested() {
            return Ok(false);
        }
        // A sharded worker keeps only its slots' keys (of the first page
        // and of each following one) before sizing and copying them.
        if let Some(slots) = &own_slots {
            let (own, foreign) = crate::shard::keys::keep_own(std::mem::take(&mut keys), slots);
            crate::metrics::registry().add_foreign_keys(foreign);
            keys = own;
        }
        limiter.acquire(keys.len());
        let done = next == 0;
        // The page's sizes (for big keys) travel with the next SCAN.
        let mut pipe = CommandBuffer::new();
        for key in &keys {
            pipe.cmd("MEMORY").arg("USAGE").arg(key);
        }
        if !done {
            pipe.add_command(scan_command(next, options));
        }
        let mut replies = if pipe.is_empty() {
            Vec::new()
        } else {
            side.run_pipelines(task.db, vec![(task.address.clone(), pipe)])?
                .pop()
                .map(|(_, replies)| replies)
                .context("no reply from the source")?
        };
        let following = if done {
            None
        } else {
            Some(parse_scan(replies.pop().unwrap_or(Value::Nil)).with_context(failed)?)
        };
        let sizes: Vec<Option<u64>> = replies
            .into_iter()
            .map(|reply| match reply {
                Value::Int(bytes) => Some(bytes.max(0) as u64),
                // Gone (nil), moved, refused: the copy looks again.
                _ => None,
            })
            .collect();
        if !keys.is_empty() || done || last_emit.elapsed() >= EMPTY_CHECKPOINT_INTERVAL {
            let checkpoint = Checkpoint {
                node: task.node.clone(),
                db: task.db,
                cursor: next,
                done,
                run_id: task.run_id.clone(),
                scanned: keys.len() as u64,
            };
            let page = std::mem::take(&mut keys);
            for listed in split_page(task, page, sizes, checkpoint, batch_keys) {
                if !emit(listed) {
                    return Ok(false);
                }
            }
            last_emit = Instant::now();
        }
        match following {
            None => return Ok(true),
            Some((following_keys, following_cursor)) => {
                keys = following_keys;
                next = following_cursor;
            }
        }
    }
}

/// One SCAN page as batches of at most `batch_keys` keys. Only the last
/// carries the cursor: the pipeline journals a stream's checkpoints in
/// order, so the cursor moves past the page once all of it is journaled.
fn split_page(
    task: &ScanTask,
    mut keys: Vec<Vec<u8>>,
    mut sizes: Vec<Option<u64>>,
    checkpoint: Checkpoint,
    batch_keys: usize,
) -> Vec<Listed> {
    let batch = |keys: Vec<Vec<u8>>, sizes: Vec<Option<u64>>| KeyBatch {
        db: task.db,
        target_db: task.target_db,
        sizes: (sizes.len() == keys.len()).then_some(sizes),
        keys,
        source_address: Some(task.address.clone()),
        gone_note: None,
    };
    let mut parts = Vec::new();
    let limit = batch_keys.max(1);
    while keys.len() > limit {
        let rest = keys.split_off(limit);
        let rest_sizes = sizes.split_off(limit.min(sizes.len()));
        parts.push(Listed {
            batch: batch(keys, sizes),
            checkpoint: None,
            journaled: None,
        });
        keys = rest;
        sizes = rest_sizes;
    }
    parts.push(Listed {
        batch: batch(keys, sizes),
        checkpoint: Some(checkpoint),
        journaled: None,
    });
    parts
}

pub fn scan_command(cursor: u64, options: &CopyOptions) -> redis::Cmd {
    let mut command = redis::cmd("SCAN");
    command.arg(cursor);
    if let Some(pattern) = &options.match_pattern {
        command.arg("MATCH").arg(pattern);
    }
    command.arg("COUNT").arg(options.scan_count);
    if let Some(key_type) = &options.key_type {
        command.arg("TYPE").arg(key_type);
    }
    command
}

/// `[cursor, [key, ...]]` → (keys, cursor).
pub fn parse_scan(reply: Value) -> Result<(Vec<Vec<u8>>, u64)> {
    let Value::Array(mut parts) = reply else {
        if let Value::ServerError(error) = reply {
            bail!("{}", crate::connection::error_text(&error));
        }
        bail!("SCAN returned {reply:?}");
    };
    if parts.len() != 2 {
        bail!("SCAN returned {} parts", parts.len());
    }
    let keys = match parts.pop() {
        Some(Value::Array(keys)) => keys
            .into_iter()
            .map(|key| match key {
                Value::BulkString(bytes) => Ok(bytes),
                other => bail!("SCAN returned a key as {other:?}"),
            })
            .collect::<Result<Vec<_>>>()?,
        other => bail!("SCAN returned keys as {other:?}"),
    };
    let cursor = match parts.pop() {
        Some(Value::BulkString(bytes)) => String::from_utf8_lossy(&bytes).parse::<u64>()?,
        Some(Value::SimpleString(text)) => text.parse::<u64>()?,
        other => bail!("SCAN returned cursor {other:?}"),
    };
    Ok((keys, cursor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_replies_parse_with_binary_keys_and_64_bit_cursors() {
        let reply = Value::Array(vec![
            Value::BulkString(b"18446744073709551615".to_vec()),
            Value::Array(vec![
                Value::BulkString(b"a\x00b".to_vec()),
                Value::BulkString(vec![]),
            ]),
        ]);
        let (keys, cursor) = parse_scan(reply).unwrap();
        assert_eq!(cursor, u64::MAX);
        assert_eq!(keys, vec![b"a\x00b".to_vec(), vec![]]);
    }

    #[test]
    fn a_page_splits_into_batches_and_only_the_last_moves_the_cursor() {
        let task = ScanTask {
            node: "standalone".into(),
            address: "127.0.0.1:1".into(),
            db: 0,
            target_db: 0,
            cursor: 0,
            run_id: "r".into(),
        };
        let keys: Vec<Vec<u8>> = (0..250u32).map(|i| i.to_be_bytes().to_vec()).collect();
        let checkpoint = Checkpoint {
            node: "standalone".into(),
            db: 0,
            cursor: 77,
            done: false,
            run_id: "r".into(),
            scanned: 250,
        };
        let sizes = vec![Some(10); keys.len()];
        let parts = split_page(&task, keys.clone(), sizes, checkpoint.clone(), 100);
        let sizes: Vec<usize> = parts.iter().map(|p| p.batch.keys.len()).collect();
        assert_eq!(sizes, vec![100, 100, 50]);
        assert!(parts[..2].iter().all(|p| p.checkpoint.is_none()));
        assert_eq!(parts[2].checkpoint.as_ref(), Some(&checkpoint));
        let rejoined: Vec<Vec<u8>> = parts.into_iter().flat_map(|p| p.batch.keys).collect();
        assert_eq!(rejoined, keys);
    }

    #[test]
    fn scan_command_carries_filters() {
        let options = CopyOptions {
            match_pattern: Some("user:*".into()),
            key_type: Some("hash".into()),
            scan_count: 500,
            ..CopyOptions::default()
        };
        let packed =
            String::from_utf8_lossy(&scan_command(42, &options).get_packed_command()).into_owned();
        assert!(packed.contains("SCAN") && packed.contains("42") && packed.contains("user:*"));
        assert!(
            packed.contains("COUNT")
                && packed.contains("500")
                && packed.contains("TYPE")
                && packed.contains("hash")
        );
    }
}
