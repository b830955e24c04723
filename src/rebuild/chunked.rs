//! One big key copied in chunks, so that no command blocks either server
//! for more than a few milliseconds and redis-ferry holds a few chunks at
//! a time, whatever the key's size.
//!
//! The procedure, on a source and a target connection of its own (both on
//! the node that serves the key):
//!
//! 1. `WATCH key` on the **target** (before anything is read), then
//!    `WATCH key` + `TYPE key` on the **source**.
//! 2. The value is read in chunks (`HSCAN`, `SSCAN`, `ZRANGE` by rank, `LRANGE`,
//!    `GETRANGE`, `XRANGE`; hash field TTLs with `HPEXPIRETIME`) by a reader
//!    thread and written by this one into a temporary key in the key's hash
//!    slot ([`super::temp`]), each write refreshing the temporary key's
//!    safety TTL. Reading and writing overlap; at most [`CHUNKS_IN_FLIGHT`]
//!    chunks wait between them.
//! 3. `MULTI; PTTL key; EXEC` on the source: nil means the key changed
//!    while it was copied, so the temporary key is dropped and the key is
//!    copied again (never a mix of old and new). The TTL read inside the
//!    transaction belongs to exactly the value that was copied.
//! 4. `MULTI; UNLINK key; RENAME tmp key; PEXPIRE key ttl | PERSIST key;
//!    EXEC` on the target: the key appears whole, with its TTL, in one step
//!    (`UNLINK` frees an older copy in the background instead of blocking
//!    the target as RENAME's own delete would). Nil means the application
//!    wrote the key on the target meanwhile: copied again.
//!
//! A connection that was re-established in the middle loses its `WATCH`;
//! that counts as "changed" too: each `EXEC` goes out once, with
//! [`NodeConnection::send_fenced`], on the very connection that set the
//! `WATCH`, never resent on another. After [`BigKeyOptions::max_attempts`] the
//! key is `failed` with the reason.

use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Result, bail};
use redis::Value;

use super::build::{
    BuildLimits, field_ttl_refusal, queue_elements, queue_field_expiries, queue_hset, queue_ttl,
    queue_zadd,
};
use super::chunks::{AttemptStop, Chunk, ChunkReader, StreamPlan, read_stream_plan};
use super::reply::{int, text};
use super::stream::{StreamValue, queue_entries, queue_group, queue_set_id};
use super::temp::temp_key_name;
use super::{KeyType, module_type_error};
use crate::capabilities::Capabilities;
use crate::clock::now_ms;
use crate::connection::{ErrorClass, NodeConnection, classify, error_text};
use crate::copy::read::Ttl;
use crate::options::{Existing, TtlMode};
use crate::outcome::{KeyResult, Outcome, WriteMethod};
use crate::wire::CommandBuffer;

/// Chunks read but not written yet, at most.
pub const CHUNKS_IN_FLIGHT: usize = 2;
/// A pause before copying a key again after it changed.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// A pause before copying again after a server said LOADING, BUSY,
/// TRYAGAIN or CLUSTERDOWN.
const BUSY_PAUSE: Duration = Duration::from_millis(500);

/// How a big key is copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BigKeyOptions {
    /// The job's label, part of temporary key names.
    pub job: String,
    pub existing: Existing,
    pub ttl_mode: TtlMode,
    /// Elements and bytes per chunk.
    pub limits: BuildLimits,
    /// Copies of a key that keeps changing before it counts as failed.
    pub max_attempts: u32,
    /// The temporary key's TTL, refreshed with every chunk.
    pub temp_ttl_ms: i64,
    /// How long servers may answer LOADING / BUSY / TRYAGAIN / CLUSTERDOWN
    /// before the job stops (as `--reconnect-timeout` does for connections).
    pub transient_budget: Duration,
}

impl BigKeyOptions {
    pub fn new(job: impl Into<String>) -> BigKeyOptions {
        BigKeyOptions {
            job: job.into(),
            existing: Existing::Replace,
            ttl_mode: TtlMode::Relative,
            limits: BuildLimits::default(),
            max_attempts: 5,
            temp_ttl_ms: 10 * 60 * 1000,
            transient_budget: Duration::from_secs(60),
        }
    }
}

/// What copying one big key did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BigKeyCopy {
    /// The key's outcome for the journal (`method: chunked` when written).
    pub result: KeyResult,
    /// Bytes of values sent to the target (all attempts).
    pub bytes_copied: u64,
    pub attempts: u32,
}

/// The two servers of one big key's copy.
pub struct BigKeyEnds<'a> {
    /// A connection of its own (its WATCH must not be shared), on the node
    /// serving the key.
    pub source: &'a mut NodeConnection,
    pub source_caps: &'a Capabilities,
    /// The database the key is in on the source.
    pub source_db: i64,
    /// Likewise on the target.
    pub target: &'a mut NodeConnection,
    pub target_caps: &'a Capabilities,
    pub target_db: i64,
}

/// How one attempt ended.
enum Attempt {
    Copied {
        ttl: Ttl,
    },
    Gone,
    Skipped,
    /// Copy it again: the key changed (or a connection was re-established).
    Changed(String),
    /// Copy it again after a pause, without counting an attempt: a server
    /// busy loading, a cluster reconfiguring (bounded by
    /// [`BigKeyOptions::transient_budget`]).
    Busy(String),
    Failed(String),
}

/// Copies `key` in chunks (see the module doc). `Err` is a job-level
/// failure (a connection lost past its budget, out of memory, read-only);
/// anything about this key alone is in the result.
pub fn copy_big_key(
    ends: &mut BigKeyEnds<'_>,
    key: &[u8],
    options: &BigKeyOptions,
) -> Result<BigKeyCopy> {
    let mut bytes_copied = 0;
    let mut last_change = String::new();
    let busy_since = std::time::Instant::now();
    let mut attempt = 0;
    while attempt < options.max_attempts.max(1) {
        attempt += 1;
        let (end, bytes) = copy_once(ends, key, options)?;
        bytes_copied += bytes;
        let result = match end {
            Attempt::Copied { ttl } => KeyResult {
                key: key.to_vec(),
                outcome: Outcome::Restored,
                ttl_ms: ttl_ms(ttl),
                size_bytes: Some(bytes as i64),
                error: None,
                method: Some(WriteMethod::Chunked),
            },
            Attempt::Gone => outcome_only(key, Outcome::Expired),
            Attempt::Skipped => outcome_only(key, Outcome::Skipped),
            Attempt::Failed(reason) => KeyResult::failed(key.to_vec(), reason),
            Attempt::Changed(reason) => {
                last_change = reason;
                std::thread::sleep(RETRY_PAUSE);
                continue;
            }
            Attempt::Busy(reason) => {
                if busy_since.elapsed() > options.transient_budget {
                    bail!(
                        "the servers kept answering {reason:?} for {}s while a big key was copied; giving up",
                        options.transient_budget.as_secs()
                    );
                }
                attempt -= 1;
                std::thread::sleep(BUSY_PAUSE);
                continue;
            }
        };
        return Ok(BigKeyCopy {
            result,
            bytes_copied,
            attempts: attempt,
        });
    }
    Ok(BigKeyCopy {
        result: KeyResult::failed(
            key.to_vec(),
            format!(
                "big key kept changing during its chunked copy ({} attempts; last: {last_change}); `retry` copies it again",
                options.max_attempts.max(1)
            ),
        ),
        bytes_copied,
        attempts: options.max_attempts.max(1),
    })
}

fn outcome_only(key: &[u8], outcome: Outcome) -> KeyResult {
    KeyResult {
        key: key.to_vec(),
        outcome,
        ttl_ms: None,
        size_bytes: None,
        error: None,
        method: None,
    }
}

fn ttl_ms(ttl: Ttl) -> Option<i64> {
    match ttl {
        Ttl::Persistent => None,
        Ttl::Remaining(ms) => Some(ms),
        Ttl::ExpiresAt(at) => Some((at - now_ms()).max(0)),
    }
}

/// One attempt; returns how it ended and the bytes it sent.
fn copy_once(
    ends: &mut BigKeyEnds<'_>,
    key: &[u8],
    options: &BigKeyOptions,
) -> Result<(Attempt, u64)> {
    ends.source.select(ends.source_db);
    ends.target.select(ends.target_db);
    let temp = temp_key_name(&options.job, key);
    let (key_type, watched) = match prepare(ends, key, &temp, options)? {
        Ok(prepared) => prepared,
        Err(Prepared::Ended(end)) => return unwatched(ends, end),
        Err(Prepared::Gone(watched)) => return finish_gone(ends, key, &watched),
    };
    let written = match write_chunks(ends, key, &temp, &key_type, options) {
        Ok(written) => written,
        Err(error) => {
            discard(ends, &temp)?;
            return Err(error);
        }
    };
    let bytes = match written {
        Written::Done(bytes) => bytes,
        Written::Stopped(end, bytes) => {
            discard(ends, &temp)?;
            return Ok((end, bytes));
        }
    };
    let end = finish(ends, key, &temp, options, &watched)?;
    if !matches!(end, Attempt::Copied { .. }) {
        discard(ends, &temp)?;
    }
    Ok((end, bytes))
}

/// The connections' generations (see [`NodeConnection::generation`]) when
/// their WATCHes were set: an EXEC is only sent on that same connection.
struct Watched {
    source: u64,
    target: u64,
}

/// How the steps before the first chunk ended, when not with the key's type.
enum Prepared {
    Ended(Attempt),
    /// No such key on the source.
    Gone(Watched),
}

/// `WATCH` on the target, then `WATCH` + `TYPE` on the source; skips a key
/// the target has (`--existing skip`); drops an old temporary key.
fn prepare(
    ends: &mut BigKeyEnds<'_>,
    key: &[u8],
    temp: &[u8],
    options: &BigKeyOptions,
) -> Result<std::result::Result<(KeyType, Watched), Prepared>> {
    let mut watch = CommandBuffer::new();
    watch.cmd("WATCH").arg(key);
    if let Err(end) = send(ends.target, &watch)? {
        return Ok(Err(Prepared::Ended(end)));
    }
    let target = ends.target.generation();
    let mut watch_and_type = CommandBuffer::new();
    watch_and_type.cmd("WATCH").arg(key);
    watch_and_type.cmd("TYPE").arg(key);
    let replies = match send(ends.source, &watch_and_type)? {
        Ok(replies) => replies,
        Err(end) => return Ok(Err(Prepared::Ended(end))),
    };
    let watched = Watched {
        source: ends.source.generation(),
        target,
    };
    let type_name = text(replies.into_iter().nth(1).unwrap_or(Value::Nil), "TYPE")?;
    let key_type = match KeyType::from_type_reply(&type_name) {
        None => return Ok(Err(Prepared::Gone(watched))),
        Some(KeyType::Module(name)) => {
            return Ok(Err(Prepared::Ended(Attempt::Failed(module_type_error(
                &name,
            )))));
        }
        Some(key_type) => key_type,
    };
    let mut check = CommandBuffer::new();
    check.cmd("EXISTS").arg(key);
    check.cmd("UNLINK").arg(temp);
    let replies = match send(ends.target, &check)? {
        Ok(replies) => replies,
        Err(end) => return Ok(Err(Prepared::Ended(end))),
    };
    let exists = int(replies.into_iter().next().unwrap_or(Value::Nil), "EXISTS")? > 0;
    if options.existing == Existing::Skip && exists {
        return Ok(Err(Prepared::Ended(Attempt::Skipped)));
    }
    Ok(Ok((key_type, watched)))
}

/// Sends `pipe`; a server error in a reply ends the attempt (`Ok(Err)`) or,
/// when no key can get past it, the job (`Err`).
fn send(
    connection: &mut NodeConnection,
    pipe: &CommandBuffer,
) -> Result<std::result::Result<Vec<Value>, Attempt>> {
    let replies = connection.pipeline(pipe)?;
    match replies.iter().find_map(server_error) {
        Some(error) => key_error(error).map(Err),
        None => Ok(Ok(replies)),
    }
}

/// Sends the `MULTI ... EXEC` of a fence once, on the connection its
/// `WATCH` was set on (`generation`); a connection lost or re-established
/// since ends the attempt: copy again.
fn send_exec(
    connection: &mut NodeConnection,
    pipe: &CommandBuffer,
    generation: u64,
) -> Result<std::result::Result<Vec<Value>, Attempt>> {
    let side = connection.endpoint().role.name();
    let Some(replies) = connection.send_fenced(pipe, generation)? else {
        return Ok(Err(Attempt::Changed(reconnected(side))));
    };
    match replies.iter().find_map(server_error) {
        Some(error) => key_error(error).map(Err),
        None => Ok(Ok(replies)),
    }
}

/// Ends an attempt that wrote nothing: both WATCHes released.
fn unwatched(ends: &mut BigKeyEnds<'_>, end: Attempt) -> Result<(Attempt, u64)> {
    let mut unwatch = CommandBuffer::new();
    unwatch.cmd("UNWATCH");
    ends.source.pipeline(&unwatch)?;
    ends.target.pipeline(&unwatch)?;
    Ok((end, 0))
}

/// The key is gone from the source: delete it on the target too, unless
/// the application wrote it there meanwhile (then copy again).
fn finish_gone(ends: &mut BigKeyEnds<'_>, key: &[u8], watched: &Watched) -> Result<(Attempt, u64)> {
    let mut unwatch = CommandBuffer::new();
    unwatch.cmd("UNWATCH");
    ends.source.pipeline(&unwatch)?;
    let mut pipe = CommandBuffer::new();
    pipe.cmd("MULTI");
    pipe.cmd("UNLINK").arg(key);
    pipe.cmd("EXEC");
    let replies = match send_exec(ends.target, &pipe, watched.target)? {
        Ok(replies) => replies,
        Err(end) => return unwatched(ends, end),
    };
    match replies.last() {
        Some(Value::Nil) => Ok((Attempt::Changed(written_on_target()), 0)),
        Some(Value::Array(_)) => Ok((Attempt::Gone, 0)),
        other => bail!("the target answered {other:?} to MULTI/EXEC"),
    }
}

fn reconnected(side: &str) -> String {
    format!("the connection to the {side} was re-established, so its WATCH was lost")
}

fn written_on_target() -> String {
    "the key was written on the target during its copy".to_string()
}

/// Drops the temporary key and any WATCH left.
fn discard(ends: &mut BigKeyEnds<'_>, temp: &[u8]) -> Result<()> {
    let mut pipe = CommandBuffer::new();
    pipe.cmd("UNWATCH");
    pipe.cmd("UNLINK").arg(temp);
    ends.target.pipeline(&pipe)?;
    let mut unwatch = CommandBuffer::new();
    unwatch.cmd("UNWATCH");
    ends.source.pipeline(&unwatch)?;
    Ok(())
}

/// Steps 3 and 4 of the module doc.
fn finish(
    ends: &mut BigKeyEnds<'_>,
    key: &[u8],
    temp: &[u8],
    options: &BigKeyOptions,
    watched: &Watched,
) -> Result<Attempt> {
    let ttl = match source_fence(ends, key, options.ttl_mode, watched)? {
        Ok(ttl) => ttl,
        Err(end) => return Ok(end),
    };
    let mut pipe = CommandBuffer::new();
    pipe.cmd("MULTI");
    if options.existing == Existing::Replace {
        pipe.cmd("UNLINK").arg(key);
    }
    pipe.cmd("RENAME").arg(temp).arg(key);
    if queue_ttl(&mut pipe, key, ttl) == 0 {
        pipe.cmd("PERSIST").arg(key);
    }
    pipe.cmd("EXEC");
    let mut replies = match send_exec(ends.target, &pipe, watched.target)? {
        Ok(replies) => replies,
        Err(end) => return Ok(end),
    };
    match replies.pop() {
        Some(Value::Nil) => Ok(Attempt::Changed(written_on_target())),
        Some(Value::Array(results)) => match results.iter().find_map(server_error) {
            Some(error) => key_error(error),
            None => Ok(Attempt::Copied { ttl }),
        },
        other => bail!("the target answered {other:?} to MULTI/EXEC"),
    }
}

/// `MULTI; PTTL key; EXEC` on the source: the key's TTL if the key did not
/// change since its WATCH, else how the attempt ends.
fn source_fence(
    ends: &mut BigKeyEnds<'_>,
    key: &[u8],
    ttl_mode: TtlMode,
    watched: &Watched,
) -> Result<std::result::Result<Ttl, Attempt>> {
    let mut pipe = CommandBuffer::new();
    pipe.cmd("MULTI");
    match ttl_mode {
        TtlMode::Relative => pipe.cmd("PTTL").arg(key),
        TtlMode::Absolute => pipe.cmd("PEXPIRETIME").arg(key),
    };
    pipe.cmd("EXEC");
    let mut replies = match send_exec(ends.source, &pipe, watched.source)? {
        Ok(replies) => replies,
        Err(end) => return Ok(Err(end)),
    };
    match replies.pop() {
        Some(Value::Nil) => Ok(Err(Attempt::Changed(
            "the key changed on the source during its copy".to_string(),
        ))),
        Some(Value::Array(mut results)) if results.len() == 1 => {
            match super::read::read_ttl(results.remove(0), ttl_mode)? {
                Some(ttl) => Ok(Ok(ttl)),
                None => Ok(Err(Attempt::Changed(
                    "the key expired during its copy".to_string(),
                ))),
            }
        }
        other => bail!("the source answered {other:?} to MULTI/EXEC"),
    }
}

fn server_error(value: &Value) -> Option<&redis::ServerError> {
    match value {
        Value::ServerError(error) => Some(error),
        _ => None,
    }
}

/// A server error about this key: how the attempt ends; about the job: `Err`.
fn key_error(error: &redis::ServerError) -> Result<Attempt> {
    match classify(error) {
        ErrorClass::Fatal(reason) => bail!("cannot copy a big key: {reason}"),
        ErrorClass::Transient(reason) => Ok(Attempt::Busy(reason)),
        ErrorClass::Moved { address, .. } | ErrorClass::Ask { address, .. } => {
            Ok(Attempt::Failed(format!(
                "the key's slot moved to {address} during its chunked copy; `retry` copies it again"
            )))
        }
        ErrorClass::BusyKey | ErrorClass::Key(_) => Ok(Attempt::Failed(error_text(error))),
    }
}

/// How writing the chunks ended.
enum Written {
    Done(u64),
    /// Stopped early: this attempt's end, and the bytes sent so far.
    Stopped(Attempt, u64),
}

fn write_chunks(
    ends: &mut BigKeyEnds<'_>,
    key: &[u8],
    temp: &[u8],
    key_type: &KeyType,
    options: &BigKeyOptions,
) -> Result<Written> {
    let mut plan = match key_type {
        KeyType::Stream => Some(read_stream_plan(ends.source, key)?),
        _ => None,
    };
    let field_ttls = ends.source_caps.hash_field_ttls();
    let target_caps = ends.target_caps;
    let source = &mut *ends.source;
    let target = &mut *ends.target;
    std::thread::scope(|scope| -> Result<Written> {
        let (sender, receiver) = mpsc::sync_channel::<Result<Chunk>>(CHUNKS_IN_FLIGHT);
        let mut reader = ChunkReader::new(key_type.clone(), options.limits, field_ttls);
        let reading = scope.spawn(move || {
            loop {
                match reader.next(source, key) {
                    Ok(None) => break,
                    Ok(Some(chunk)) => {
                        let stop = matches!(chunk, Chunk::Stop(_));
                        // A closed channel: the writer stopped this attempt.
                        if sender.send(Ok(chunk)).is_err() || stop {
                            break;
                        }
                    }
                    Err(error) => {
                        let _ = sender.send(Err(error));
                        break;
                    }
                }
            }
        });
        let mut bytes = 0;
        let mut first = true;
        let mut outcome = None;
        for chunk in receiver.iter() {
            let chunk = chunk?;
            if let Chunk::Stop(stop) = chunk {
                outcome = Some(match stop {
                    AttemptStop::Changed(reason) => Attempt::Changed(reason),
                    AttemptStop::Busy(reason) => Attempt::Busy(reason),
                    AttemptStop::Failed(reason) => Attempt::Failed(reason),
                });
                break;
            }
            bytes += chunk.byte_size();
            let pipe =
                match chunk_commands(temp, &chunk, first, plan.as_mut(), target_caps, options) {
                    Ok(pipe) => pipe,
                    Err(refusal) => {
                        outcome = Some(Attempt::Failed(refusal));
                        break;
                    }
                };
            first = false;
            if let Some(end) = send_chunk(target, &pipe)? {
                outcome = Some(end);
                break;
            }
        }
        drop(receiver);
        reading
            .join()
            .map_err(|_| anyhow::anyhow!("the chunk reader panicked"))?;
        if let Some(end) = outcome {
            return Ok(Written::Stopped(end, bytes));
        }
        let Some(plan) = plan.as_mut() else {
            // Every read yields a chunk, so only a key that vanished in
            // between gets here with nothing: the source's fence decides.
            return Ok(Written::Done(bytes));
        };
        // A stream's groups, pending entries and counters come last.
        let pipe = stream_tail_commands(temp, plan, target_caps, options, first);
        match send_chunk(target, &pipe)? {
            Some(end) => Ok(Written::Stopped(end, bytes)),
            None => Ok(Written::Done(bytes)),
        }
    })
}

/// Sends a chunk's writes; a server error about the key ends the attempt.
fn send_chunk(target: &mut NodeConnection, pipe: &CommandBuffer) -> Result<Option<Attempt>> {
    for reply in target.pipeline(pipe)? {
        if let Value::ServerError(error) = reply {
            return key_error(&error).map(Some);
        }
    }
    Ok(None)
}

/// The writes of one chunk into the temporary key, and its safety TTL.
fn chunk_commands(
    temp: &[u8],
    chunk: &Chunk,
    first: bool,
    plan: Option<&mut StreamPlan>,
    target: &Capabilities,
    options: &BigKeyOptions,
) -> std::result::Result<CommandBuffer, String> {
    let mut pipe = CommandBuffer::new();
    let limits = options.limits;
    match chunk {
        Chunk::Bytes {
            offset,
            bytes,
            total,
        } => queue_string_piece(&mut pipe, temp, *offset, bytes, *total, first),
        Chunk::Items(items) => {
            queue_elements(&mut pipe, "RPUSH", temp, items, limits);
        }
        Chunk::Members(members) => {
            queue_elements(&mut pipe, "SADD", temp, members, limits);
        }
        Chunk::Scored(pairs) => {
            queue_zadd(&mut pipe, temp, pairs, limits);
        }
        Chunk::Fields { fields, expiries } => {
            if !expiries.is_empty() && !target.hash_field_ttls() {
                return Err(field_ttl_refusal(expiries.len(), target));
            }
            queue_hset(&mut pipe, temp, fields, limits);
            queue_field_expiries(&mut pipe, temp, expiries, limits);
        }
        Chunk::Entries(entries) => {
            let plan = plan.expect("a stream has a plan");
            let last = entries.last().map(|entry| entry.id).unwrap_or_default();
            let start = plan.next_placeholder;
            while plan.next_placeholder < plan.placeholders.len()
                && plan.placeholders[plan.next_placeholder] < last
            {
                plan.next_placeholder += 1;
            }
            queue_entries(
                &mut pipe,
                temp,
                entries,
                &plan.placeholders[start..plan.next_placeholder],
            );
        }
        Chunk::Stop(_) => {}
    }
    pipe.cmd("PEXPIRE").arg(temp).arg(options.temp_ttl_ms);
    Ok(pipe)
}

/// A piece of a big string. The first piece allocates the whole string
/// (`SETRANGE` at its last byte): growing it by `APPEND`s makes the target
/// reallocate, and copy, an ever larger buffer (measured on a 200 MB
/// string: twice the time, and longer stalls).
fn queue_string_piece(
    pipe: &mut CommandBuffer,
    temp: &[u8],
    offset: i64,
    bytes: &[u8],
    total: Option<i64>,
    first: bool,
) {
    if first {
        match total {
            Some(length) if length > 0 => {
                pipe.cmd("SETRANGE")
                    .arg(temp)
                    .arg(length - 1)
                    .arg(b"\x00".as_slice());
            }
            _ => {
                pipe.cmd("SET").arg(temp).arg("");
            }
        }
    }
    if !bytes.is_empty() {
        pipe.cmd("SETRANGE").arg(temp).arg(offset).arg(bytes);
    }
}

/// A stream's remaining placeholders, groups, consumers, pending entries
/// and counters (or the creation of an empty stream).
fn stream_tail_commands(
    temp: &[u8],
    plan: &mut StreamPlan,
    target: &Capabilities,
    options: &BigKeyOptions,
    nothing_written: bool,
) -> CommandBuffer {
    let mut pipe = CommandBuffer::new();
    let rest = &plan.placeholders[plan.next_placeholder..];
    queue_entries(&mut pipe, temp, &[], rest);
    if nothing_written && plan.placeholders.is_empty() {
        pipe.cmd("XGROUP")
            .arg("CREATE")
            .arg(temp)
            .arg("redis-ferry-placeholder")
            .arg("0")
            .arg("MKSTREAM");
        pipe.cmd("XGROUP")
            .arg("DESTROY")
            .arg(temp)
            .arg("redis-ferry-placeholder");
    }
    for group in &plan.groups {
        queue_group(&mut pipe, temp, group, target);
    }
    if !plan.placeholders.is_empty() {
        let mut command = pipe.cmd("XDEL");
        command.arg(temp);
        for id in &plan.placeholders {
            command.arg(id.to_string());
        }
    }
    let counters = StreamValue {
        last_id: plan.counters.last_id,
        entries_added: plan.counters.entries_added,
        max_deleted_id: plan.counters.max_deleted_id,
        ..StreamValue::default()
    };
    queue_set_id(&mut pipe, temp, &counters, target);
    pipe.cmd("PEXPIRE").arg(temp).arg(options.temp_ttl_ms);
    pipe
}
