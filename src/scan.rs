//! Walking one database of one source node with SCAN, and reading what each
//! SCAN returns, as batches that carry the cursor to checkpoint.
//!
//! The SCAN for the next batch travels in the same pipeline as the DUMP and
//! PTTL of the current one, so a batch costs one round trip on the source.
//! A batch's checkpoint is the cursor SCAN returned *with* its keys: once
//! the batch is journaled, a resume starts there and never skips a key.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use redis::Value;

use crate::copy::{ReadKey, Step, interpret_read, queue_read, read_keys_at};
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
    /// Keys SCAN returned for this batch.
    pub scanned: u64,
}

/// Keys read from the source, waiting to be written.
#[derive(Debug)]
pub struct ReadBatch {
    pub db: i64,
    pub target_db: i64,
    pub checkpoint: Option<Checkpoint>,
    pub reads: Vec<ReadKey>,
}

/// Scans `task` to the end (or until `stop`), handing each batch to `emit`.
/// `emit` returns false when nobody wants more batches. Returns true when
/// SCAN came back to cursor 0 (the whole database was walked).
pub fn scan_task(
    side: &mut Side,
    task: &ScanTask,
    options: &CopyOptions,
    limiter: &RateLimiter,
    stop: &Shutdown,
    mut emit: impl FnMut(ReadBatch) -> bool,
) -> Result<bool> {
    let scan = |cursor: u64| scan_command(cursor, options);
    let mut first = CommandBuffer::new();
    first.add_command(scan(task.cursor));
    let replies = side.run_pipelines(task.db, vec![(task.address.clone(), first)])?;
    let (mut keys, mut next) = parse_scan(last_reply(replies)?)
        .with_context(|| format!("SCAN of db {} on {} failed", task.db, task.address))?;
    let mut last_emit = Instant::now();
    loop {
        if stop.requested() {
            return Ok(false);
        }
        limiter.acquire(keys.len());
        let done = next == 0;
        let mut pipe = CommandBuffer::new();
        for key in &keys {
            queue_read(&mut pipe, key, options.ttl);
        }
        if !done {
            pipe.add_command(scan(next));
        }
        let mut replies =
            last_reply_vec(side.run_pipelines(task.db, vec![(task.address.clone(), pipe)])?)?;
        let following =
            if done {
                None
            } else {
                let reply = replies.pop().unwrap_or(Value::Nil);
                Some(parse_scan(reply).with_context(|| {
                    format!("SCAN of db {} on {} failed", task.db, task.address)
                })?)
            };
        let reads = interpret_batch(side, task, options, std::mem::take(&mut keys), replies)?;
        let scanned = reads.len() as u64;
        if !reads.is_empty() || done || last_emit.elapsed() >= EMPTY_CHECKPOINT_INTERVAL {
            let batch = ReadBatch {
                db: task.db,
                target_db: task.target_db,
                checkpoint: Some(Checkpoint {
                    node: task.node.clone(),
                    db: task.db,
                    cursor: next,
                    done,
                    run_id: task.run_id.clone(),
                    scanned,
                }),
                reads,
            };
            if !emit(batch) {
                return Ok(false);
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

/// Turns the DUMP/PTTL replies into reads; keys that were redirected (a
/// cluster slot on the move), or changed between the two reads, are read
/// again where they live now.
fn interpret_batch(
    side: &mut Side,
    task: &ScanTask,
    options: &CopyOptions,
    keys: Vec<Vec<u8>>,
    mut replies: Vec<Value>,
) -> Result<Vec<ReadKey>> {
    if replies.len() != keys.len() * 2 {
        bail!(
            "expected {} replies from the source, got {}",
            keys.len() * 2,
            replies.len()
        );
    }
    let mut reads = Vec::with_capacity(keys.len());
    let mut again = Vec::new();
    for (index, key) in keys.into_iter().enumerate() {
        match interpret_read(&mut replies[index * 2..index * 2 + 2], options.ttl) {
            Step::Done(found) => reads.push(ReadKey { key, found }),
            Step::Fatal(reason) => bail!("{reason}"),
            Step::Redirect { address, .. } => again.push((index, key, address)),
            Step::Again(_) => again.push((index, key, task.address.clone())),
        }
    }
    if again.is_empty() {
        return Ok(reads);
    }
    // Rare: resolve the stragglers with the general routed reader and put
    // them back (order within a batch does not matter to the journal).
    let (keys, addresses): (Vec<_>, Vec<_>) = again
        .into_iter()
        .map(|(_, key, address)| (key, address))
        .unzip();
    let resolved = read_keys_at(side, task.db, keys, addresses, options.ttl)?;
    reads.extend(resolved);
    Ok(reads)
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

fn last_reply_vec(replies: Vec<(String, Vec<Value>)>) -> Result<Vec<Value>> {
    replies
        .into_iter()
        .next()
        .map(|(_, replies)| replies)
        .context("no reply from the source")
}

fn last_reply(replies: Vec<(String, Vec<Value>)>) -> Result<Value> {
    last_reply_vec(replies)?
        .pop()
        .context("no reply from the source")
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
