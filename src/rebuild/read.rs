//! Reading a small key whole with commands of its type, and its TTL.
//!
//! A [`KeyRead`] is a little state machine, one pipeline round at a time,
//! so the caller can put the reads of many keys in one pipeline per round
//! (and route them with [`crate::route::route_rounds`]): `queue` appends this
//! key's commands, `interpret` reads their replies and says whether the key
//! is done, gone, failed, or needs another round. A key whose type is not
//! known yet first takes a `TYPE` round. Then most keys take one round:
//! the value (`GET`, `LRANGE`, `SMEMBERS`, `ZRANGE ... WITHSCORES`,
//! `HGETALL`, `XINFO STREAM ... FULL`), then `PTTL` (or `PEXPIRETIME`). Two
//! take another round: a hash whose fields may have TTLs (`HPEXPIRETIME`
//! needs the field names; a `listpack`-encoded hash has none, so only
//! hashes encoded otherwise on a server with field TTLs take it) and a
//! stream with groups on Redis 5 (`XINFO CONSUMERS` and `XPENDING` per
//! group).
//!
//! The TTL is read after the value, in the last round, for the reason
//! [`crate::copy`] gives for DUMP + PTTL. A key that is not of the type
//! read (`WRONGTYPE`), or an empty collection (Redis has none: the key
//! vanished), goes back to `TYPE`. The commands of a round are not atomic;
//! a key written between rounds is what the writer's fence (`WATCH` on the
//! source) catches.

use std::cell::RefCell;

use anyhow::Result;
use redis::Value;

use super::reply::{byte_items, byte_pairs, bytes, int, items, text};
use super::stream::{self, GroupSummary, StreamGroup, StreamValue};
use super::{HashValue, KeyType, KeyValue, module_type_error};
use crate::capabilities::Capabilities;
use crate::clock::now_ms;
use crate::connection::{NodeConnection, classify, error_text};
use crate::copy::read::Ttl;
use crate::options::TtlMode;
use crate::route::{Step, route_rounds, step_for_error};
use crate::side::Side;
use crate::wire::CommandBuffer;

/// How many rounds one key may take before it counts as changing too often.
pub const MAX_ROUNDS: u32 = 8;

/// What a round of reads found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadProgress {
    Done {
        value: KeyValue,
        ttl: Ttl,
    },
    /// Gone (expired or deleted) by the time it was read.
    Gone,
    /// Queue this key's reads again: the next round, or the same round for
    /// the type the key has now.
    Unfinished,
    /// This key cannot be read by commands (a module type, an ACL): `failed`.
    Failed(String),
}

/// What the reads need to know about the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceReads {
    /// Ask `HPEXPIRETIME` for hashes' fields (Redis 7.4+, Valkey 9).
    pub field_ttls: bool,
    /// `XINFO STREAM FULL` (Redis 6.0+).
    pub xinfo_full: bool,
    pub ttl_mode: TtlMode,
}

impl SourceReads {
    pub fn new(source: &Capabilities, ttl_mode: TtlMode) -> SourceReads {
        SourceReads {
            field_ttls: source.hash_field_ttls(),
            xinfo_full: source.xinfo_full(),
            ttl_mode,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Stage {
    /// The type is not known yet: `TYPE` alone.
    Type,
    /// `TYPE`, the value, the TTL.
    Value(KeyType),
    /// `TYPE`, `HPEXPIRETIME` of every field, the TTL.
    FieldTtls(HashValue),
    /// `TYPE`, per group `XINFO CONSUMERS` + `XPENDING`, the TTL (Redis 5).
    StreamGroups(Box<StreamValue>, Vec<GroupSummary>),
}

/// The reads of one key, round by round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRead {
    reads: SourceReads,
    stage: Stage,
    rounds: u32,
}

impl KeyRead {
    /// `key_type`: what `TYPE` (or SCAN TYPE) said, if known.
    pub fn new(key_type: Option<KeyType>, reads: SourceReads) -> KeyRead {
        let stage = match key_type {
            // A module type goes through TYPE, which fails it with the
            // module named.
            Some(KeyType::Module(_)) | None => Stage::Type,
            Some(key_type) => Stage::Value(key_type),
        };
        KeyRead {
            reads,
            stage,
            rounds: 0,
        }
    }

    /// Appends this round's commands; returns how many.
    pub fn queue(&self, pipe: &mut CommandBuffer, key: &[u8]) -> usize {
        let reads = match &self.stage {
            Stage::Type => {
                pipe.cmd("TYPE").arg(key);
                return 1;
            }
            Stage::Value(key_type) => queue_value(pipe, key, key_type, self.reads),
            Stage::FieldTtls(hash) => {
                let mut command = pipe.cmd("HPEXPIRETIME");
                command.arg(key).arg("FIELDS").arg(hash.fields.len());
                for (field, _) in &hash.fields {
                    command.arg(field);
                }
                1
            }
            Stage::StreamGroups(_, groups) => queue_group_reads(pipe, key, groups),
        };
        reads + queue_ttl(pipe, key, self.reads.ttl_mode)
    }

    /// Reads this round's replies (as many as [`KeyRead::queue`] returned).
    pub fn interpret(&mut self, replies: &mut [Value]) -> Step<ReadProgress> {
        self.rounds += 1;
        if self.rounds > MAX_ROUNDS {
            return Step::Done(ReadProgress::Failed(
                "key kept changing while it was read; `retry` copies it again".to_string(),
            ));
        }
        match self.round(replies) {
            Ok(step) => step,
            Err(error) => Step::Fatal(format!("{error:#}")),
        }
    }

    fn round(&mut self, replies: &mut [Value]) -> Result<Step<ReadProgress>> {
        if self.stage == Stage::Type {
            return self.type_round(replies);
        }
        if let Some(step) = self.wrong_type_or_error(replies) {
            return Ok(step);
        }
        let rest = replies;
        let (ttl_reply, reads) = rest.split_last_mut().expect("a TTL follows every read");
        let ttl = match read_ttl(take(ttl_reply), self.reads.ttl_mode)? {
            Some(ttl) => ttl,
            None => return Ok(Step::Done(ReadProgress::Gone)),
        };
        let stage = std::mem::replace(&mut self.stage, Stage::Type);
        let value = match stage {
            Stage::Type => unreachable!("a TYPE-only round returns above"),
            Stage::Value(key_type) => match self.read_value(&key_type, reads)? {
                FirstRound::FieldTtls(hash) => {
                    self.stage = Stage::FieldTtls(hash);
                    return Ok(Step::Done(ReadProgress::Unfinished));
                }
                FirstRound::Value(value) => value,
                FirstRound::StreamGroups(stream, groups) => {
                    self.stage = Stage::StreamGroups(stream, groups);
                    return Ok(Step::Done(ReadProgress::Unfinished));
                }
                FirstRound::Changed => {
                    self.stage = Stage::Value(key_type);
                    return Ok(Step::Again("key changed while it was read".to_string()));
                }
            },
            Stage::FieldTtls(hash) => KeyValue::Hash(with_field_ttls(hash, take(&mut reads[0]))?),
            Stage::StreamGroups(stream, groups) => {
                KeyValue::Stream(Box::new(with_groups(*stream, groups, reads)?))
            }
        };
        Ok(Step::Done(ReadProgress::Done { value, ttl }))
    }

    /// `TYPE` alone: the next round reads the value of that type.
    fn type_round(&mut self, replies: &mut [Value]) -> Result<Step<ReadProgress>> {
        let Some(type_reply) = replies.first_mut() else {
            anyhow::bail!("no reply to TYPE");
        };
        if let Some(step) = error_step(std::slice::from_ref(type_reply)) {
            return Ok(step);
        }
        Ok(Step::Done(
            match KeyType::from_type_reply(&text(take(type_reply), "TYPE")?) {
                None => ReadProgress::Gone,
                Some(KeyType::Module(name)) => ReadProgress::Failed(module_type_error(&name)),
                Some(key_type) => {
                    self.stage = Stage::Value(key_type);
                    ReadProgress::Unfinished
                }
            },
        ))
    }

    /// A WRONGTYPE means the key changed type between `TYPE` and the read:
    /// find out its type again. Other errors: redirects, pauses, `failed`.
    fn wrong_type_or_error(&mut self, replies: &[Value]) -> Option<Step<ReadProgress>> {
        let wrong_type = replies
            .iter()
            .any(|reply| matches!(reply, Value::ServerError(error) if error.code() == "WRONGTYPE"));
        if wrong_type {
            self.stage = Stage::Type;
            return Some(Step::Done(ReadProgress::Unfinished));
        }
        error_step(replies)
    }

    fn read_value(&self, key_type: &KeyType, reads: &mut [Value]) -> Result<FirstRound> {
        let first = take(&mut reads[0]);
        Ok(FirstRound::Value(match key_type {
            KeyType::String => match first {
                Value::Nil => return Ok(FirstRound::Changed),
                other => KeyValue::String(bytes(other, "GET")?),
            },
            KeyType::List => match non_empty(byte_items(first, "LRANGE")?) {
                Some(items) => KeyValue::List(items),
                None => return Ok(FirstRound::Changed),
            },
            KeyType::Set => match non_empty(byte_items(first, "SMEMBERS")?) {
                Some(items) => KeyValue::Set(items),
                None => return Ok(FirstRound::Changed),
            },
            KeyType::ZSet => match non_empty(byte_pairs(first, "ZRANGE")?) {
                Some(items) => KeyValue::ZSet(items),
                None => return Ok(FirstRound::Changed),
            },
            KeyType::Hash => {
                let Some(fields) = non_empty(byte_pairs(first, "HGETALL")?) else {
                    return Ok(FirstRound::Changed);
                };
                let hash = HashValue {
                    fields,
                    field_expiries: Vec::new(),
                };
                let may_have_field_ttls = self.reads.field_ttls
                    && !hash.fields.is_empty()
                    && text(take(&mut reads[1]), "OBJECT ENCODING")? != "listpack";
                if may_have_field_ttls {
                    return Ok(FirstRound::FieldTtls(hash));
                }
                KeyValue::Hash(hash)
            }
            KeyType::Stream if self.reads.xinfo_full => {
                KeyValue::Stream(Box::new(stream::parse_full(first)?))
            }
            KeyType::Stream => {
                let entries = stream::parse_entries(first, "XRANGE")?;
                let counters = stream::parse_counters(take(&mut reads[1]))?;
                let groups = stream::parse_groups(take(&mut reads[2]))?;
                let value = StreamValue {
                    entries,
                    last_id: counters.last_id,
                    entries_added: counters.entries_added,
                    max_deleted_id: counters.max_deleted_id,
                    groups: Vec::new(),
                };
                if groups.is_empty() {
                    KeyValue::Stream(Box::new(value))
                } else {
                    return Ok(FirstRound::StreamGroups(Box::new(value), groups));
                }
            }
            KeyType::Module(name) => anyhow::bail!("{}", module_type_error(name)),
        }))
    }
}

/// Redis has no empty list, set, zset or hash: an empty read means the key
/// vanished after its TYPE was read.
fn non_empty<T>(items: Vec<T>) -> Option<Vec<T>> {
    (!items.is_empty()).then_some(items)
}

/// What the first round of a key's reads found.
enum FirstRound {
    Value(KeyValue),
    /// A hash whose fields may have TTLs: read them in the next round.
    FieldTtls(HashValue),
    /// A stream with groups on Redis 5: their consumers and pending
    /// entries are read in the next round.
    StreamGroups(Box<StreamValue>, Vec<GroupSummary>),
    /// The value vanished between TYPE and the read although the key is
    /// there: deleted and written again in between.
    Changed,
}

fn queue_value(
    pipe: &mut CommandBuffer,
    key: &[u8],
    key_type: &KeyType,
    reads: SourceReads,
) -> usize {
    let xinfo_full = reads.xinfo_full;
    match key_type {
        KeyType::String => {
            pipe.cmd("GET").arg(key);
        }
        KeyType::List => {
            pipe.cmd("LRANGE").arg(key).arg(0).arg(-1);
        }
        KeyType::Set => {
            pipe.cmd("SMEMBERS").arg(key);
        }
        KeyType::ZSet => {
            pipe.cmd("ZRANGE").arg(key).arg(0).arg(-1).arg("WITHSCORES");
        }
        KeyType::Hash if reads.field_ttls => {
            pipe.cmd("HGETALL").arg(key);
            // `listpack`: no field has a TTL (those are `listpackex` on
            // Redis, `hashtable` on Valkey), so no HPEXPIRETIME round.
            pipe.cmd("OBJECT").arg("ENCODING").arg(key);
            return 2;
        }
        KeyType::Hash => {
            pipe.cmd("HGETALL").arg(key);
        }
        KeyType::Stream if xinfo_full => {
            pipe.cmd("XINFO")
                .arg("STREAM")
                .arg(key)
                .arg("FULL")
                .arg("COUNT")
                .arg(0);
        }
        KeyType::Stream => {
            pipe.cmd("XRANGE").arg(key).arg("-").arg("+");
            pipe.cmd("XINFO").arg("STREAM").arg(key);
            pipe.cmd("XINFO").arg("GROUPS").arg(key);
            return 3;
        }
        // Nothing to read: TYPE already says it cannot be rebuilt.
        KeyType::Module(_) => {
            pipe.cmd("EXISTS").arg(key);
        }
    }
    1
}

fn queue_group_reads(pipe: &mut CommandBuffer, key: &[u8], groups: &[GroupSummary]) -> usize {
    for group in groups {
        pipe.cmd("XINFO").arg("CONSUMERS").arg(key).arg(&group.name);
        pipe.cmd("XPENDING")
            .arg(key)
            .arg(&group.name)
            .arg("-")
            .arg("+")
            .arg(group.pending.max(1));
    }
    2 * groups.len()
}

fn queue_ttl(pipe: &mut CommandBuffer, key: &[u8], ttl_mode: TtlMode) -> usize {
    match ttl_mode {
        TtlMode::Relative => pipe.cmd("PTTL").arg(key),
        TtlMode::Absolute => pipe.cmd("PEXPIRETIME").arg(key),
    };
    1
}

/// `None`: the key is gone (-2).
pub fn read_ttl(reply: Value, ttl_mode: TtlMode) -> Result<Option<Ttl>> {
    Ok(Some(match int(reply, "PTTL")? {
        -2 => return Ok(None),
        -1 => Ttl::Persistent,
        n if n >= 0 => match ttl_mode {
            TtlMode::Relative => Ttl::Remaining(n.max(1)),
            TtlMode::Absolute => Ttl::ExpiresAt(n),
        },
        other => anyhow::bail!("PTTL returned {other}"),
    }))
}

fn with_field_ttls(mut hash: HashValue, reply: Value) -> Result<HashValue> {
    let times = items(reply, "HPEXPIRETIME")?;
    let mut kept = Vec::with_capacity(hash.fields.len());
    for ((field, value), time) in hash.fields.into_iter().zip(times) {
        match int(time, "HPEXPIRETIME")? {
            // Deleted (or expired) since HGETALL: the fence tells.
            -2 => continue,
            -1 => {}
            at => hash.field_expiries.push((field.clone(), at)),
        }
        kept.push((field, value));
    }
    hash.fields = kept;
    Ok(hash)
}

fn with_groups(
    mut stream: StreamValue,
    groups: Vec<GroupSummary>,
    replies: &mut [Value],
) -> Result<StreamValue> {
    let now = now_ms();
    for (group, pair) in groups.into_iter().zip(replies.chunks_mut(2)) {
        let consumers = stream::parse_consumers(take(&mut pair[0]))?;
        let pending = stream::parse_pending(take(&mut pair[1]), now)?;
        stream.groups.push(StreamGroup {
            name: group.name,
            last_delivered_id: group.last_delivered_id,
            entries_read: group.entries_read,
            consumers,
            pending,
        });
    }
    Ok(stream)
}

/// The step for the first server error among `replies`, if any.
fn error_step(replies: &[Value]) -> Option<Step<ReadProgress>> {
    replies.iter().find_map(|reply| match reply {
        Value::ServerError(error) => Some(step_for_error(classify(error), || {
            ReadProgress::Failed(error_text(error))
        })),
        _ => None,
    })
}

fn take(value: &mut Value) -> Value {
    std::mem::replace(value, Value::Nil)
}

/// Queues the first round of reads of `key` (see [`KeyRead`]).
pub fn queue_read(pipe: &mut CommandBuffer, key: &[u8], read: &KeyRead) -> usize {
    read.queue(pipe, key)
}

/// Reads one key to the end on one connection (tests, big keys' small
/// parts, tools). `Ok(ReadProgress::Done / Gone / Failed)`.
pub fn read_key(
    connection: &mut NodeConnection,
    key: &[u8],
    key_type: Option<KeyType>,
    reads: SourceReads,
) -> Result<ReadProgress> {
    let mut read = KeyRead::new(key_type, reads);
    loop {
        let mut pipe = CommandBuffer::new();
        read.queue(&mut pipe, key);
        let mut replies = connection.pipeline(&pipe)?;
        match read.interpret(&mut replies) {
            Step::Done(ReadProgress::Unfinished) | Step::Again(_) => continue,
            Step::Done(progress) => return Ok(progress),
            Step::Redirect { address, .. } => {
                anyhow::bail!("the key is served by another node ({address}); read it there")
            }
            Step::Fatal(reason) => anyhow::bail!("{reason}"),
        }
    }
}

/// Reads the whole values of `keys` in `db` (a type per key if known),
/// each at the node that serves it (MOVED / ASK followed), one pipeline per
/// node per round, until every key is done, gone or failed. For small keys:
/// each value is held whole.
pub fn read_values(
    side: &mut Side,
    db: i64,
    keys: &[Vec<u8>],
    types: Vec<Option<KeyType>>,
    reads: SourceReads,
) -> Result<Vec<ReadProgress>> {
    let states = RefCell::new(
        types
            .into_iter()
            .map(|key_type| KeyRead::new(key_type, reads))
            .collect::<Vec<_>>(),
    );
    let mut results: Vec<Option<ReadProgress>> = vec![None; keys.len()];
    let mut pending: Vec<usize> = (0..keys.len()).collect();
    while !pending.is_empty() {
        let addresses = pending
            .iter()
            .map(|&index| side.address_for_key(&keys[index]))
            .collect();
        let round = route_rounds(
            side,
            db,
            addresses,
            |pipe, item| states.borrow()[pending[item]].queue(pipe, &keys[pending[item]]),
            |item, replies| states.borrow_mut()[pending[item]].interpret(replies),
        )?;
        let mut unfinished = Vec::new();
        for (item, progress) in round.into_iter().enumerate() {
            match progress {
                ReadProgress::Unfinished => unfinished.push(pending[item]),
                done => results[pending[item]] = Some(done),
            }
        }
        pending = unfinished;
    }
    Ok(results
        .into_iter()
        .map(|result| result.expect("every key ends done, gone or failed"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    fn status(text: &str) -> Value {
        Value::SimpleString(text.to_string())
    }

    fn reads(field_ttls: bool) -> SourceReads {
        SourceReads {
            field_ttls,
            xinfo_full: true,
            ttl_mode: TtlMode::Relative,
        }
    }

    fn queued(read: &KeyRead) -> String {
        let mut pipe = CommandBuffer::new();
        read.queue(&mut pipe, b"k");
        String::from_utf8_lossy(pipe.bytes()).into_owned()
    }

    #[test]
    fn a_listpack_hash_is_done_in_one_round_and_another_encoding_asks_for_field_ttls() {
        let pairs = || Value::Array(vec![bulk("f"), bulk("v")]);
        let mut read = KeyRead::new(Some(KeyType::Hash), reads(true));
        assert!(queued(&read).contains("OBJECT"));
        assert!(!queued(&read).contains("TYPE"), "the type is known");
        let mut replies = [pairs(), bulk("listpack"), Value::Int(-1)];
        match read.interpret(&mut replies) {
            Step::Done(ReadProgress::Done { value, ttl }) => {
                assert_eq!(ttl, Ttl::Persistent);
                assert!(matches!(value, KeyValue::Hash(hash) if hash.fields.len() == 1));
            }
            other => panic!("{other:?}"),
        }
        let mut read = KeyRead::new(Some(KeyType::Hash), reads(true));
        let mut replies = [pairs(), bulk("listpackex"), Value::Int(-1)];
        assert!(matches!(
            read.interpret(&mut replies),
            Step::Done(ReadProgress::Unfinished)
        ));
        assert!(queued(&read).contains("HPEXPIRETIME"));
        let mut replies = [
            Value::Array(vec![Value::Int(1_900_000_000_000)]),
            Value::Int(5_000),
        ];
        match read.interpret(&mut replies) {
            Step::Done(ReadProgress::Done {
                value: KeyValue::Hash(hash),
                ttl,
            }) => {
                assert_eq!(
                    hash.field_expiries,
                    vec![(b"f".to_vec(), 1_900_000_000_000)]
                );
                assert_eq!(ttl, Ttl::Remaining(5_000));
            }
            other => panic!("{other:?}"),
        }
    }

    fn wrong_type() -> Value {
        redis::parse_redis_value(
            b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n",
        )
        .unwrap()
    }

    #[test]
    fn a_key_of_another_type_is_asked_its_type_and_read_again() {
        let mut read = KeyRead::new(Some(KeyType::Set), reads(false));
        let mut replies = [wrong_type(), Value::Int(-1)];
        assert!(matches!(
            read.interpret(&mut replies),
            Step::Done(ReadProgress::Unfinished)
        ));
        assert!(queued(&read).starts_with("*2\r\n$4\r\nTYPE"));
        assert!(matches!(
            read.interpret(&mut [status("list")]),
            Step::Done(ReadProgress::Unfinished)
        ));
        assert!(queued(&read).contains("LRANGE"));
    }

    #[test]
    fn an_empty_collection_means_the_key_changed_and_is_read_again() {
        let mut read = KeyRead::new(Some(KeyType::List), reads(false));
        let mut replies = [Value::Array(vec![]), Value::Int(-1)];
        assert!(matches!(read.interpret(&mut replies), Step::Again(_)));
        assert!(queued(&read).contains("LRANGE"));
    }

    #[test]
    fn unknown_types_are_asked_first_and_gone_keys_are_gone() {
        let mut read = KeyRead::new(None, reads(false));
        assert_eq!(queued(&read), "*2\r\n$4\r\nTYPE\r\n$1\r\nk\r\n");
        assert!(matches!(
            read.interpret(&mut [status("string")]),
            Step::Done(ReadProgress::Unfinished)
        ));
        assert!(queued(&read).contains("GET"));
        let mut replies = [bulk("v"), Value::Int(-2)];
        assert!(matches!(
            read.interpret(&mut replies),
            Step::Done(ReadProgress::Gone)
        ));
        let mut read = KeyRead::new(None, reads(false));
        assert!(matches!(
            read.interpret(&mut [status("none")]),
            Step::Done(ReadProgress::Gone)
        ));
    }

    #[test]
    fn module_types_fail_and_a_key_that_never_settles_fails() {
        let mut read = KeyRead::new(Some(KeyType::Module("ReJSON-RL".into())), reads(false));
        match read.interpret(&mut [status("ReJSON-RL")]) {
            Step::Done(ReadProgress::Failed(reason)) => assert!(reason.contains("RedisJSON")),
            other => panic!("{other:?}"),
        }
        let mut read = KeyRead::new(Some(KeyType::Set), reads(false));
        let mut last = None;
        for _ in 0..=MAX_ROUNDS {
            let mut replies = [wrong_type(), Value::Int(-1)];
            last = Some(read.interpret(&mut replies));
            read.stage = Stage::Value(KeyType::Set);
        }
        assert!(matches!(last, Some(Step::Done(ReadProgress::Failed(_)))));
    }
}
