//! Streams by commands: the model of a stream's entries, counters, consumer
//! groups, consumers and pending entries; reading them (one `XINFO STREAM
//! FULL` from Redis 6.0 on, `XINFO` + `XPENDING` before that and for big
//! streams); and rebuilding them on a target.
//!
//! The rebuild, in order (every command exists from Redis 5.0 on unless
//! said): `XADD` each entry with its ID; `XGROUP CREATE` each group at its
//! last-delivered ID (`ENTRIESREAD`, 7.0+); each consumer created
//! (`XGROUP CREATECONSUMER`, 6.2+; before that `XREADGROUP` of its own,
//! still empty, history, which creates it and delivers nothing); each
//! pending entry claimed for its owner with `XCLAIM ... TIME RETRYCOUNT
//! FORCE JUSTID` (its delivery time and count kept); then `XSETID` with the
//! last-generated ID (and `ENTRIESADDED` / `MAXDELETEDID`, 7.0+).
//!
//! A pending entry whose message was deleted (`XDEL`) cannot be claimed:
//! `XCLAIM` needs the message. Such IDs are added as placeholder entries,
//! claimed, then deleted again, and `XSETID` puts the counters back.
//!
//! What commands cannot carry: a consumer's seen-time / active-time (they
//! start now on the target).

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use anyhow::{Context, Result, anyhow, bail};
use redis::Value;

use super::reply::{Fields, byte_pairs, bytes, int, items, optional_int, optional_text, text};
use crate::capabilities::Capabilities;
use crate::wire::CommandBuffer;

/// The field of a placeholder entry (see the module doc).
const PLACEHOLDER_FIELD: &[u8] = b"redis-ferry-placeholder";
/// The group created and destroyed again to make an empty stream exist.
const PLACEHOLDER_GROUP: &[u8] = b"redis-ferry-placeholder";

/// A stream entry ID, `ms-seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct StreamId {
    pub ms: u64,
    pub seq: u64,
}

impl StreamId {
    /// The smallest ID after this one (an exclusive range start for servers
    /// before 6.2, which lack `(`).
    pub fn next(self) -> Option<StreamId> {
        match self.seq.checked_add(1) {
            Some(seq) => Some(StreamId { ms: self.ms, seq }),
            None => self.ms.checked_add(1).map(|ms| StreamId { ms, seq: 0 }),
        }
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

impl FromStr for StreamId {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> Result<StreamId> {
        let (ms, seq) = text.split_once('-').unwrap_or((text, "0"));
        Ok(StreamId {
            ms: ms
                .parse()
                .with_context(|| format!("{text:?} is not a stream ID"))?,
            seq: seq
                .parse()
                .with_context(|| format!("{text:?} is not a stream ID"))?,
        })
    }
}

/// One entry: its ID and field/value pairs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEntry {
    pub id: StreamId,
    pub fields: Vec<(Vec<u8>, Vec<u8>)>,
}

/// A message delivered to a consumer and not acknowledged yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingEntry {
    pub id: StreamId,
    pub consumer: Vec<u8>,
    /// Unix time in ms of the last delivery.
    pub delivered_at_ms: i64,
    pub delivery_count: i64,
}

/// A consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamGroup {
    pub name: Vec<u8>,
    pub last_delivered_id: StreamId,
    /// Redis 7+: how many entries the group has read (`None`: unknown).
    pub entries_read: Option<i64>,
    pub consumers: Vec<Vec<u8>>,
    pub pending: Vec<PendingEntry>,
}

/// A whole stream.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StreamValue {
    pub entries: Vec<StreamEntry>,
    pub last_id: StreamId,
    /// Redis 7+: entries ever added.
    pub entries_added: Option<i64>,
    /// Redis 7+: the greatest ID ever deleted.
    pub max_deleted_id: Option<StreamId>,
    pub groups: Vec<StreamGroup>,
}

impl StreamValue {
    pub fn byte_size(&self) -> u64 {
        self.entries
            .iter()
            .flat_map(|entry| entry.fields.iter())
            .map(|(field, value)| (field.len() + value.len()) as u64)
            .sum()
    }
}

/// The counters of `XINFO STREAM` (without FULL).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StreamCounters {
    pub last_id: StreamId,
    pub entries_added: Option<i64>,
    pub max_deleted_id: Option<StreamId>,
}

fn stream_id(value: Value, what: &str) -> Result<StreamId> {
    text(value, what)?.parse()
}

fn optional_stream_id(value: Option<Value>, what: &str) -> Result<Option<StreamId>> {
    match value {
        None => Ok(None),
        Some(value) => optional_text(value, what)?.map(|id| id.parse()).transpose(),
    }
}

/// Entries as `XRANGE` (and `XINFO STREAM FULL`) list them.
pub fn parse_entries(value: Value, what: &str) -> Result<Vec<StreamEntry>> {
    items(value, what)?
        .into_iter()
        .map(|entry| {
            let mut parts = items(entry, what)?.into_iter();
            let (Some(id), Some(fields)) = (parts.next(), parts.next()) else {
                bail!("{what} returned an entry without ID and fields");
            };
            Ok(StreamEntry {
                id: stream_id(id, what)?,
                fields: byte_pairs(fields, what)?,
            })
        })
        .collect()
}

/// `XINFO STREAM key FULL COUNT 0` (Redis 6.0+): the whole stream.
pub fn parse_full(value: Value) -> Result<StreamValue> {
    const WHAT: &str = "XINFO STREAM FULL";
    let mut fields = Fields::parse(value, WHAT)?;
    let counters = counters_from(&mut fields, WHAT)?;
    let entries = parse_entries(fields.require("entries", WHAT)?, WHAT)?;
    let groups = items(fields.require("groups", WHAT)?, WHAT)?
        .into_iter()
        .map(parse_full_group)
        .collect::<Result<Vec<_>>>()?;
    Ok(StreamValue {
        entries,
        last_id: counters.last_id,
        entries_added: counters.entries_added,
        max_deleted_id: counters.max_deleted_id,
        groups,
    })
}

fn counters_from(fields: &mut Fields, what: &str) -> Result<StreamCounters> {
    let last_id = stream_id(fields.require("last-generated-id", what)?, what)?;
    let entries_added = match fields.take("entries-added") {
        Some(value) => optional_int(value, what)?,
        None => None,
    };
    let max_deleted_id = optional_stream_id(fields.take("max-deleted-entry-id"), what)?;
    Ok(StreamCounters {
        last_id,
        entries_added,
        max_deleted_id,
    })
}

fn parse_full_group(value: Value) -> Result<StreamGroup> {
    const WHAT: &str = "XINFO STREAM FULL (group)";
    let mut fields = Fields::parse(value, WHAT)?;
    let name = bytes(fields.require("name", WHAT)?, WHAT)?;
    let last_delivered_id = stream_id(fields.require("last-delivered-id", WHAT)?, WHAT)?;
    let entries_read = match fields.take("entries-read") {
        Some(value) => optional_int(value, WHAT)?,
        None => None,
    };
    let pending = items(fields.require("pending", WHAT)?, WHAT)?
        .into_iter()
        .map(|entry| {
            let mut parts = items(entry, WHAT)?.into_iter();
            let mut next = || {
                parts
                    .next()
                    .ok_or_else(|| anyhow!("{WHAT}: short pending entry"))
            };
            Ok(PendingEntry {
                id: stream_id(next()?, WHAT)?,
                consumer: bytes(next()?, WHAT)?,
                delivered_at_ms: int(next()?, WHAT)?,
                delivery_count: int(next()?, WHAT)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let consumers = items(fields.require("consumers", WHAT)?, WHAT)?
        .into_iter()
        .map(|consumer| bytes(Fields::parse(consumer, WHAT)?.require("name", WHAT)?, WHAT))
        .collect::<Result<Vec<_>>>()?;
    Ok(StreamGroup {
        name,
        last_delivered_id,
        entries_read,
        consumers,
        pending,
    })
}

/// `XINFO STREAM key` (without FULL): the counters.
pub fn parse_counters(value: Value) -> Result<StreamCounters> {
    const WHAT: &str = "XINFO STREAM";
    counters_from(&mut Fields::parse(value, WHAT)?, WHAT)
}

/// One group as `XINFO GROUPS` lists it, before its consumers and pending
/// entries are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSummary {
    pub name: Vec<u8>,
    pub last_delivered_id: StreamId,
    pub entries_read: Option<i64>,
    pub pending: i64,
}

/// `XINFO GROUPS key`.
pub fn parse_groups(value: Value) -> Result<Vec<GroupSummary>> {
    const WHAT: &str = "XINFO GROUPS";
    items(value, WHAT)?
        .into_iter()
        .map(|group| {
            let mut fields = Fields::parse(group, WHAT)?;
            Ok(GroupSummary {
                name: bytes(fields.require("name", WHAT)?, WHAT)?,
                last_delivered_id: stream_id(fields.require("last-delivered-id", WHAT)?, WHAT)?,
                entries_read: match fields.take("entries-read") {
                    Some(value) => optional_int(value, WHAT)?,
                    None => None,
                },
                pending: int(fields.require("pending", WHAT)?, WHAT)?,
            })
        })
        .collect()
}

/// `XINFO CONSUMERS key group`: the consumers' names.
pub fn parse_consumers(value: Value) -> Result<Vec<Vec<u8>>> {
    const WHAT: &str = "XINFO CONSUMERS";
    items(value, WHAT)?
        .into_iter()
        .map(|consumer| bytes(Fields::parse(consumer, WHAT)?.require("name", WHAT)?, WHAT))
        .collect()
}

/// `XPENDING key group start end count` (the extended form): each entry's
/// owner, idle time and delivery count. `now_ms` turns idle times into
/// delivery times.
pub fn parse_pending(value: Value, now_ms: i64) -> Result<Vec<PendingEntry>> {
    const WHAT: &str = "XPENDING";
    items(value, WHAT)?
        .into_iter()
        .map(|entry| {
            let mut parts = items(entry, WHAT)?.into_iter();
            let mut next = || parts.next().ok_or_else(|| anyhow!("{WHAT}: short entry"));
            let id = stream_id(next()?, WHAT)?;
            let consumer = bytes(next()?, WHAT)?;
            let idle = int(next()?, WHAT)?;
            Ok(PendingEntry {
                id,
                consumer,
                delivered_at_ms: now_ms - idle,
                delivery_count: int(next()?, WHAT)?,
            })
        })
        .collect()
}

/// Queues the commands that create `key` holding `stream`, from nothing.
pub fn queue_stream_build(
    pipe: &mut CommandBuffer,
    key: &[u8],
    stream: &StreamValue,
    target: &Capabilities,
) -> usize {
    let placeholders = placeholder_ids(stream);
    let mut count = queue_entries(pipe, key, &stream.entries, &placeholders);
    if stream.entries.is_empty() && placeholders.is_empty() {
        pipe.cmd("XGROUP")
            .arg("CREATE")
            .arg(key)
            .arg(PLACEHOLDER_GROUP)
            .arg("0")
            .arg("MKSTREAM");
        pipe.cmd("XGROUP")
            .arg("DESTROY")
            .arg(key)
            .arg(PLACEHOLDER_GROUP);
        count += 2;
    }
    for group in &stream.groups {
        count += queue_group(pipe, key, group, target);
    }
    if !placeholders.is_empty() {
        let mut command = pipe.cmd("XDEL");
        command.arg(key);
        for id in &placeholders {
            command.arg(id.to_string());
        }
        drop(command);
        count += 1;
    }
    count += queue_set_id(pipe, key, stream, target);
    count
}

/// IDs pending in some group whose message is no longer in the stream.
fn placeholder_ids(stream: &StreamValue) -> Vec<StreamId> {
    let present: BTreeSet<StreamId> = stream.entries.iter().map(|entry| entry.id).collect();
    let missing: BTreeSet<StreamId> = stream
        .groups
        .iter()
        .flat_map(|group| group.pending.iter().map(|pending| pending.id))
        .filter(|id| !present.contains(id))
        .collect();
    missing.into_iter().collect()
}

/// `XADD`s of the entries and placeholders, merged in ID order.
pub fn queue_entries(
    pipe: &mut CommandBuffer,
    key: &[u8],
    entries: &[StreamEntry],
    placeholders: &[StreamId],
) -> usize {
    let mut count = 0;
    let mut placeholders = placeholders.iter().peekable();
    for entry in entries {
        while let Some(id) = placeholders.next_if(|id| **id < entry.id) {
            queue_placeholder(pipe, key, *id);
            count += 1;
        }
        let mut command = pipe.cmd("XADD");
        command.arg(key).arg(entry.id.to_string());
        for (field, value) in &entry.fields {
            command.arg(field).arg(value);
        }
        drop(command);
        count += 1;
    }
    for id in placeholders {
        queue_placeholder(pipe, key, *id);
        count += 1;
    }
    count
}

fn queue_placeholder(pipe: &mut CommandBuffer, key: &[u8], id: StreamId) {
    pipe.cmd("XADD")
        .arg(key)
        .arg(id.to_string())
        .arg(PLACEHOLDER_FIELD)
        .arg("");
}

/// One group: created at its last-delivered ID, its consumers, its
/// pending entries claimed for their owners.
pub fn queue_group(
    pipe: &mut CommandBuffer,
    key: &[u8],
    group: &StreamGroup,
    target: &Capabilities,
) -> usize {
    let mut count = 1;
    {
        let mut command = pipe.cmd("XGROUP");
        command
            .arg("CREATE")
            .arg(key)
            .arg(&group.name)
            .arg(group.last_delivered_id.to_string());
        if let (Some(read), true) = (group.entries_read, target.stream_counters()) {
            command.arg("ENTRIESREAD").arg(read);
        }
    }
    for consumer in &group.consumers {
        if target.create_consumer() {
            pipe.cmd("XGROUP")
                .arg("CREATECONSUMER")
                .arg(key)
                .arg(&group.name)
                .arg(consumer);
        } else {
            // Its own history is still empty: creates the consumer and
            // delivers nothing.
            pipe.cmd("XREADGROUP")
                .arg("GROUP")
                .arg(&group.name)
                .arg(consumer)
                .arg("COUNT")
                .arg(1)
                .arg("STREAMS")
                .arg(key)
                .arg("0");
        }
        count += 1;
    }
    for pending in &group.pending {
        pipe.cmd("XCLAIM")
            .arg(key)
            .arg(&group.name)
            .arg(&pending.consumer)
            .arg(0)
            .arg(pending.id.to_string())
            .arg("TIME")
            .arg(pending.delivered_at_ms)
            .arg("RETRYCOUNT")
            .arg(pending.delivery_count)
            .arg("FORCE")
            .arg("JUSTID");
        count += 1;
    }
    count
}

/// `XSETID` with the last-generated ID and, where both sides have them,
/// entries-added and max-deleted-ID.
pub fn queue_set_id(
    pipe: &mut CommandBuffer,
    key: &[u8],
    stream: &StreamValue,
    target: &Capabilities,
) -> usize {
    let mut command = pipe.cmd("XSETID");
    command.arg(key).arg(stream.last_id.to_string());
    if target.stream_counters()
        && let (Some(added), Some(deleted)) = (stream.entries_added, stream.max_deleted_id)
    {
        command
            .arg("ENTRIESADDED")
            .arg(added)
            .arg("MAXDELETEDID")
            .arg(deleted.to_string());
    }
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(text: &str) -> StreamId {
        text.parse().unwrap()
    }

    #[test]
    fn ids_parse_order_and_step() {
        assert_eq!(id("5-3"), StreamId { ms: 5, seq: 3 });
        assert_eq!(id("7"), StreamId { ms: 7, seq: 0 });
        assert!(id("1-9") < id("2-0"));
        assert_eq!(id("1-1").next(), Some(id("1-2")));
        assert_eq!(
            StreamId {
                ms: 4,
                seq: u64::MAX
            }
            .next(),
            Some(id("5-0"))
        );
        assert!("x-1".parse::<StreamId>().is_err());
        assert_eq!(
            id("18446744073709551615-3").to_string(),
            "18446744073709551615-3"
        );
    }

    #[test]
    fn deleted_pending_messages_become_placeholders_in_id_order() {
        let stream = StreamValue {
            entries: vec![
                StreamEntry {
                    id: id("2-0"),
                    fields: vec![(b"a".to_vec(), b"1".to_vec())],
                },
                StreamEntry {
                    id: id("4-0"),
                    fields: vec![(b"b".to_vec(), b"2".to_vec())],
                },
            ],
            last_id: id("9-0"),
            groups: vec![StreamGroup {
                name: b"g".to_vec(),
                last_delivered_id: id("9-0"),
                entries_read: None,
                consumers: vec![b"c".to_vec()],
                pending: ["1-0", "2-0", "9-0"]
                    .iter()
                    .map(|text| PendingEntry {
                        id: id(text),
                        consumer: b"c".to_vec(),
                        delivered_at_ms: 1,
                        delivery_count: 2,
                    })
                    .collect(),
            }],
            ..StreamValue::default()
        };
        assert_eq!(placeholder_ids(&stream), vec![id("1-0"), id("9-0")]);
        let mut pipe = CommandBuffer::new();
        let count = queue_entries(&mut pipe, b"s", &stream.entries, &placeholder_ids(&stream));
        assert_eq!(count, 4);
        let text = String::from_utf8_lossy(pipe.bytes()).into_owned();
        let order: Vec<usize> = ["$3\r\n1-0", "$3\r\n2-0", "$3\r\n4-0", "$3\r\n9-0"]
            .iter()
            .map(|needle| text.find(needle).expect(needle))
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
    }
}
