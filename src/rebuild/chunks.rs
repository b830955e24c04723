//! Reading a big key chunk by chunk on the source: the chunks
//! ([`Chunk`]), the reader that walks a value with `HSCAN`, `SSCAN`,
//! `ZRANGE` by rank, `LRANGE`, `GETRANGE` or `XRANGE` ([`ChunkReader`]),
//! and a stream's groups and pending entries, read before its entries
//! ([`StreamPlan`]). [`super::chunked`] writes what this reads.

use anyhow::{Result, bail};
use redis::Value;

use super::build::BuildLimits;
use super::reply::{byte_items, byte_pairs, bytes, int, items, text};
use super::stream::{self, GroupSummary, StreamEntry, StreamGroup, StreamId};
use super::{KeyType, module_type_error};
use crate::clock::now_ms;
use crate::connection::{ErrorClass, NodeConnection, classify, error_text};
use crate::wire::CommandBuffer;

/// Fewest elements asked for per SCAN-like read, when elements are large.
const MIN_COUNT: usize = 10;

/// One chunk of a value, as read from the source.
#[derive(Debug)]
pub(super) enum Chunk {
    /// A piece of a string at `offset`; the first piece also carries the
    /// string's whole length, so the target allocates it once.
    Bytes {
        offset: i64,
        bytes: Vec<u8>,
        total: Option<i64>,
    },
    Items(Vec<Vec<u8>>),
    Members(Vec<Vec<u8>>),
    Scored(Vec<(Vec<u8>, Vec<u8>)>),
    Fields {
        fields: Vec<(Vec<u8>, Vec<u8>)>,
        expiries: Vec<(Vec<u8>, i64)>,
    },
    Entries(Vec<StreamEntry>),
    /// The reader stopped this attempt (the key changed type or vanished,
    /// or a server error about this key).
    Stop(AttemptStop),
}

#[derive(Debug)]
pub(super) enum AttemptStop {
    Changed(String),
    Busy(String),
    Failed(String),
}

impl Chunk {
    pub(super) fn byte_size(&self) -> u64 {
        let sum = |items: &[Vec<u8>]| items.iter().map(|i| i.len() as u64).sum::<u64>();
        let pairs = |pairs: &[(Vec<u8>, Vec<u8>)]| {
            pairs
                .iter()
                .map(|(a, b)| (a.len() + b.len()) as u64)
                .sum::<u64>()
        };
        match self {
            Chunk::Bytes { bytes, .. } => bytes.len() as u64,
            Chunk::Items(items) | Chunk::Members(items) => sum(items),
            Chunk::Scored(scored) => pairs(scored),
            Chunk::Fields { fields, .. } => pairs(fields),
            Chunk::Entries(entries) => entries.iter().map(|e| pairs(&e.fields)).sum(),
            Chunk::Stop(_) => 0,
        }
    }
}

/// The stream's groups, read before its entries (under the WATCH, so they
/// belong to the same version of the key).
pub(super) struct StreamPlan {
    pub(super) counters: stream::StreamCounters,
    pub(super) groups: Vec<StreamGroup>,
    /// Pending IDs whose messages were deleted, in order (see
    /// [`super::stream`]).
    pub(super) placeholders: Vec<StreamId>,
    pub(super) next_placeholder: usize,
}

/// Reads a stream's counters, groups, consumers and pending entries.
pub(super) fn read_stream_plan(source: &mut NodeConnection, key: &[u8]) -> Result<StreamPlan> {
    let mut pipe = CommandBuffer::new();
    pipe.cmd("XINFO").arg("STREAM").arg(key);
    pipe.cmd("XINFO").arg("GROUPS").arg(key);
    let mut replies = source.pipeline(&pipe)?.into_iter();
    let counters = stream::parse_counters(replies.next().unwrap_or(Value::Nil))?;
    let summaries = stream::parse_groups(replies.next().unwrap_or(Value::Nil))?;
    let groups = read_groups(source, key, summaries)?;
    let mut placeholders: Vec<StreamId> = groups
        .iter()
        .flat_map(|group| group.pending.iter().map(|pending| pending.id))
        .collect();
    placeholders.sort_unstable();
    placeholders.dedup();
    // Only IDs whose message is gone need one: ask which are still there.
    let placeholders = missing_messages(source, key, placeholders)?;
    Ok(StreamPlan {
        counters,
        groups,
        placeholders,
        next_placeholder: 0,
    })
}

fn read_groups(
    source: &mut NodeConnection,
    key: &[u8],
    summaries: Vec<GroupSummary>,
) -> Result<Vec<StreamGroup>> {
    let mut groups = Vec::with_capacity(summaries.len());
    for group in summaries {
        let mut pipe = CommandBuffer::new();
        pipe.cmd("XINFO").arg("CONSUMERS").arg(key).arg(&group.name);
        pipe.cmd("XPENDING")
            .arg(key)
            .arg(&group.name)
            .arg("-")
            .arg("+")
            .arg(group.pending.max(1));
        let mut replies = source.pipeline(&pipe)?.into_iter();
        let consumers = stream::parse_consumers(replies.next().unwrap_or(Value::Nil))?;
        let pending = stream::parse_pending(replies.next().unwrap_or(Value::Nil), now_ms())?;
        groups.push(StreamGroup {
            name: group.name,
            last_delivered_id: group.last_delivered_id,
            entries_read: group.entries_read,
            consumers,
            pending,
        });
    }
    Ok(groups)
}

/// The IDs among `ids` that have no message in the stream (`XRANGE id id`).
fn missing_messages(
    source: &mut NodeConnection,
    key: &[u8],
    ids: Vec<StreamId>,
) -> Result<Vec<StreamId>> {
    let mut missing = Vec::new();
    for batch in ids.chunks(1000) {
        let mut pipe = CommandBuffer::new();
        for id in batch {
            pipe.cmd("XRANGE")
                .arg(key)
                .arg(id.to_string())
                .arg(id.to_string());
        }
        for (id, reply) in batch.iter().zip(source.pipeline(&pipe)?) {
            if items(reply, "XRANGE")?.is_empty() {
                missing.push(*id);
            }
        }
    }
    Ok(missing)
}

/// Reads a value chunk by chunk. SCAN-like reads adapt their COUNT so a
/// chunk stays near the byte limit when elements are large.
pub(super) struct ChunkReader {
    key_type: KeyType,
    limits: BuildLimits,
    field_ttls: bool,
    count: usize,
    /// SCAN cursor, list index, string offset, or the next stream ID.
    position: Position,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Position {
    Start,
    Cursor(String),
    Index(i64),
    NextId(StreamId),
    End,
}

impl ChunkReader {
    pub(super) fn new(key_type: KeyType, limits: BuildLimits, field_ttls: bool) -> ChunkReader {
        ChunkReader {
            key_type,
            count: limits.elements.max(1),
            limits,
            field_ttls,
            position: Position::Start,
        }
    }

    /// The next chunk; `None` after the last.
    pub(super) fn next(
        &mut self,
        source: &mut NodeConnection,
        key: &[u8],
    ) -> Result<Option<Chunk>> {
        if self.position == Position::End {
            return Ok(None);
        }
        let mut pipe = CommandBuffer::new();
        let wants_length = self.key_type == KeyType::String && self.position == Position::Start;
        if wants_length {
            pipe.cmd("STRLEN").arg(key);
        }
        self.queue(&mut pipe, key);
        let mut replies = source.pipeline(&pipe)?;
        if let Some(Value::ServerError(error)) =
            replies.iter().find(|r| matches!(r, Value::ServerError(_)))
        {
            return Ok(Some(Chunk::Stop(self.stop_for(error)?)));
        }
        let reply = replies.pop().unwrap_or(Value::Nil);
        let total = match (wants_length, replies.pop()) {
            (true, Some(length)) => Some(int(length, "STRLEN")?),
            _ => None,
        };
        let chunk = match self.interpret(reply)? {
            Chunk::Bytes { offset, bytes, .. } => Chunk::Bytes {
                offset,
                bytes,
                total,
            },
            other => other,
        };
        let chunk = match chunk {
            Chunk::Fields { fields, .. } if self.field_ttls && !fields.is_empty() => {
                with_field_ttls(source, key, fields)?
            }
            other => other,
        };
        self.adapt_count(&chunk);
        Ok(Some(chunk))
    }

    fn stop_for(&self, error: &redis::ServerError) -> Result<AttemptStop> {
        Ok(match classify(error) {
            ErrorClass::Fatal(reason) => bail!("the source refused a read: {reason}"),
            _ if error.code() == "WRONGTYPE" => {
                AttemptStop::Changed("the key changed type during its copy".to_string())
            }
            ErrorClass::Transient(reason) => AttemptStop::Busy(reason),
            _ => AttemptStop::Failed(error_text(error)),
        })
    }

    /// Where the next list, zset or string window starts.
    fn index(&self) -> i64 {
        match self.position {
            Position::Index(index) => index,
            _ => 0,
        }
    }

    fn cursor(&self) -> &str {
        match &self.position {
            Position::Cursor(cursor) => cursor,
            _ => "0",
        }
    }

    fn queue(&self, pipe: &mut CommandBuffer, key: &[u8]) {
        let count = self.count;
        match &self.key_type {
            KeyType::Hash | KeyType::Set => {
                let command = match self.key_type {
                    KeyType::Hash => "HSCAN",
                    _ => "SSCAN",
                };
                pipe.cmd(command)
                    .arg(key)
                    .arg(self.cursor())
                    .arg("COUNT")
                    .arg(count);
            }
            KeyType::List => {
                let start = self.index();
                pipe.cmd("LRANGE")
                    .arg(key)
                    .arg(start)
                    .arg(start + count as i64 - 1);
            }
            // By rank rather than ZSCAN: in score order, each chunk lands at
            // the end of the target's skiplist (measured several times
            // faster than inserting in hash order), and the reads are as
            // cheap as LRANGE's.
            KeyType::ZSet => {
                let start = self.index();
                pipe.cmd("ZRANGE")
                    .arg(key)
                    .arg(start)
                    .arg(start + count as i64 - 1)
                    .arg("WITHSCORES");
            }
            KeyType::String => {
                let start = match self.position {
                    Position::Index(index) => index,
                    _ => 0,
                };
                let bytes = self.limits.bytes.max(1) as i64;
                pipe.cmd("GETRANGE")
                    .arg(key)
                    .arg(start)
                    .arg(start + bytes - 1);
            }
            KeyType::Stream => {
                let start = match self.position {
                    Position::NextId(id) => id.to_string(),
                    _ => "-".to_string(),
                };
                pipe.cmd("XRANGE")
                    .arg(key)
                    .arg(start)
                    .arg("+")
                    .arg("COUNT")
                    .arg(count);
            }
            KeyType::Module(_) => {
                pipe.cmd("TYPE").arg(key);
            }
        }
    }

    fn interpret(&mut self, reply: Value) -> Result<Chunk> {
        match self.key_type.clone() {
            KeyType::Hash | KeyType::Set => self.scan_chunk(reply),
            KeyType::List => {
                let items = byte_items(reply, "LRANGE")?;
                self.advance_index(items.len(), self.count);
                Ok(Chunk::Items(items))
            }
            KeyType::ZSet => {
                let pairs = byte_pairs(reply, "ZRANGE")?;
                self.advance_index(pairs.len(), self.count);
                Ok(Chunk::Scored(pairs))
            }
            KeyType::String => {
                let offset = match self.position {
                    Position::Index(index) => index,
                    _ => 0,
                };
                let piece = bytes(reply, "GETRANGE")?;
                self.advance_index(piece.len(), self.limits.bytes.max(1));
                Ok(Chunk::Bytes {
                    offset,
                    bytes: piece,
                    total: None,
                })
            }
            KeyType::Stream => {
                let entries = stream::parse_entries(reply, "XRANGE")?;
                self.position = match entries.last().map(|entry| entry.id.next()) {
                    Some(Some(next)) if entries.len() >= self.count => Position::NextId(next),
                    _ => Position::End,
                };
                Ok(Chunk::Entries(entries))
            }
            KeyType::Module(name) => Ok(Chunk::Stop(AttemptStop::Failed(module_type_error(&name)))),
        }
    }

    /// Lists and strings: a short read is the last one.
    fn advance_index(&mut self, got: usize, asked: usize) {
        let start = match self.position {
            Position::Index(index) => index,
            _ => 0,
        };
        self.position = if got < asked {
            Position::End
        } else {
            Position::Index(start + got as i64)
        };
    }

    fn scan_chunk(&mut self, reply: Value) -> Result<Chunk> {
        let mut parts = items(reply, "SCAN")?.into_iter();
        let cursor = text(parts.next().unwrap_or(Value::Nil), "SCAN")?;
        let elements = parts.next().unwrap_or(Value::Nil);
        self.position = if cursor == "0" {
            Position::End
        } else {
            Position::Cursor(cursor)
        };
        Ok(match self.key_type {
            KeyType::Set => Chunk::Members(byte_items(elements, "SSCAN")?),
            _ => Chunk::Fields {
                fields: byte_pairs(elements, "HSCAN")?,
                expiries: Vec::new(),
            },
        })
    }

    /// Keeps SCAN-like chunks near the byte limit.
    fn adapt_count(&mut self, chunk: &Chunk) {
        if matches!(self.key_type, KeyType::String) {
            return;
        }
        let bytes = chunk.byte_size().max(1) as usize;
        let wanted = self.count.saturating_mul(self.limits.bytes) / bytes;
        self.count = wanted.clamp(
            MIN_COUNT.min(self.limits.elements),
            self.limits.elements.max(1),
        );
    }
}

/// Adds the field TTLs of a hash chunk (`HPEXPIRETIME`).
pub(super) fn with_field_ttls(
    source: &mut NodeConnection,
    key: &[u8],
    fields: Vec<(Vec<u8>, Vec<u8>)>,
) -> Result<Chunk> {
    let mut pipe = CommandBuffer::new();
    {
        let mut command = pipe.cmd("HPEXPIRETIME");
        command.arg(key).arg("FIELDS").arg(fields.len());
        for (field, _) in &fields {
            command.arg(field);
        }
    }
    let reply = source.pipeline(&pipe)?.pop().unwrap_or(Value::Nil);
    let mut expiries = Vec::new();
    for ((field, _), time) in fields.iter().zip(items(reply, "HPEXPIRETIME")?) {
        let at = int(time, "HPEXPIRETIME")?;
        if at >= 0 {
            expiries.push((field.clone(), at));
        }
    }
    Ok(Chunk::Fields { fields, expiries })
}
