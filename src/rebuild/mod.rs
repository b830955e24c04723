//! Keys copied with ordinary commands of their type instead of DUMP +
//! RESTORE: for a target that cannot load the source's payloads (another
//! RDB version, another fork), and for big keys copied in chunks.
//!
//! - [`KeyValue`] (this file): the value model, one variant per type, exact
//!   (zset scores kept as the text the server printed, hash field TTLs,
//!   stream IDs, counters, groups, consumers and pending entries).
//! - [`read`]: the reads of a small key, in one pipeline per round
//!   ([`read::KeyRead`]), with its TTL.
//! - [`build`]: the commands that create a key from nothing on the target
//!   ([`build::queue_build`]); the caller wraps them in `MULTI` / `EXEC`.
//! - [`stream`]: reading and rebuilding a stream's groups and pending entries.
//! - [`chunked`]: one big key copied in chunks, fenced on both sides, built
//!   under a temporary name and renamed over the key (its reads: `chunks`).
//! - [`temp`]: temporary key names in the key's hash slot, and their cleanup.
//! - [`reply`]: reading replies.

pub mod build;
pub mod chunked;
mod chunks;
pub mod read;
pub mod reply;
pub mod stream;
pub mod temp;

pub use build::{BuildLimits, queue_build};
pub use chunked::{BigKeyCopy, BigKeyOptions, copy_big_key};
pub use read::{KeyRead, ReadProgress, queue_read};
pub use stream::StreamValue;
pub use temp::{cleanup_temp_keys, temp_key_name};

/// A key's type as `TYPE` names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyType {
    String,
    List,
    Set,
    ZSet,
    Hash,
    Stream,
    /// A module's type (`ReJSON-RL`, `TSDB-TYPE`, ...): only RESTORE can copy it.
    Module(String),
}

impl KeyType {
    /// The type of a `TYPE` reply; `None` for `none` (no such key).
    pub fn from_type_reply(name: &str) -> Option<KeyType> {
        Some(match name {
            "none" => return None,
            "string" => KeyType::String,
            "list" => KeyType::List,
            "set" => KeyType::Set,
            "zset" => KeyType::ZSet,
            "hash" => KeyType::Hash,
            "stream" => KeyType::Stream,
            other => KeyType::Module(other.to_string()),
        })
    }

    pub fn name(&self) -> &str {
        match self {
            KeyType::String => "string",
            KeyType::List => "list",
            KeyType::Set => "set",
            KeyType::ZSet => "zset",
            KeyType::Hash => "hash",
            KeyType::Stream => "stream",
            KeyType::Module(name) => name,
        }
    }
}

/// A key's whole value, read from the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyValue {
    String(Vec<u8>),
    /// Elements in order.
    List(Vec<Vec<u8>>),
    Set(Vec<Vec<u8>>),
    /// `(member, score)`, the score as the server printed it (`1.5`,
    /// `-inf`, `-0`, `0.10000000000000001`): passed back as the same text,
    /// it is the same double, whatever the two versions' float printing.
    ZSet(Vec<(Vec<u8>, Vec<u8>)>),
    Hash(HashValue),
    Stream(Box<StreamValue>),
}

impl KeyValue {
    pub fn key_type(&self) -> KeyType {
        match self {
            KeyValue::String(_) => KeyType::String,
            KeyValue::List(_) => KeyType::List,
            KeyValue::Set(_) => KeyType::Set,
            KeyValue::ZSet(_) => KeyType::ZSet,
            KeyValue::Hash(_) => KeyType::Hash,
            KeyValue::Stream(_) => KeyType::Stream,
        }
    }

    /// Roughly how many bytes the value holds (for the journal's size and
    /// the bytes-copied count).
    pub fn byte_size(&self) -> u64 {
        let sum = |items: &[Vec<u8>]| items.iter().map(|item| item.len() as u64).sum::<u64>();
        match self {
            KeyValue::String(bytes) => bytes.len() as u64,
            KeyValue::List(items) | KeyValue::Set(items) => sum(items),
            KeyValue::ZSet(pairs) => pairs
                .iter()
                .map(|(member, score)| (member.len() + score.len()) as u64)
                .sum(),
            KeyValue::Hash(hash) => hash
                .fields
                .iter()
                .map(|(field, value)| (field.len() + value.len()) as u64)
                .sum(),
            KeyValue::Stream(stream) => stream.byte_size(),
        }
    }
}

/// A hash, with the fields that have their own TTL (Redis 7.4+, Valkey 9).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HashValue {
    pub fields: Vec<(Vec<u8>, Vec<u8>)>,
    /// `(field, Unix time in ms)` of each field that expires.
    pub field_expiries: Vec<(Vec<u8>, i64)>,
}

/// The error for a key of a module type: no command rebuilds it.
pub fn module_type_error(type_name: &str) -> String {
    let module = match type_name {
        "ReJSON-RL" => Some("RedisJSON"),
        "TSDB-TYPE" => Some("RedisTimeSeries"),
        "MBbloom--" | "MBbloomCF" | "CMSk-TYPE" | "TopK-TYPE" | "TDIS-TYPE" => Some("RedisBloom"),
        "graphdata" => Some("RedisGraph / FalkorDB"),
        "ft_index0" => Some("RediSearch"),
        _ => None,
    };
    let named = match module {
        Some(module) => format!("the {module} module's type {type_name:?}"),
        None => format!("module type {type_name:?}"),
    };
    format!(
        "the key is of {named}: only RESTORE can copy it, and the target cannot load its payload; load the same module on the target (and the same RDB version), then `retry`"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_replies_name_the_types() {
        assert_eq!(KeyType::from_type_reply("none"), None);
        assert_eq!(KeyType::from_type_reply("zset"), Some(KeyType::ZSet));
        assert_eq!(
            KeyType::from_type_reply("ReJSON-RL"),
            Some(KeyType::Module("ReJSON-RL".into()))
        );
        assert_eq!(KeyType::Module("TSDB-TYPE".into()).name(), "TSDB-TYPE");
    }

    #[test]
    fn module_errors_name_the_module() {
        let text = module_type_error("ReJSON-RL");
        assert!(
            text.contains("RedisJSON module's type \"ReJSON-RL\""),
            "{text}"
        );
        assert!(module_type_error("custom-x").contains("module type \"custom-x\""));
    }
}
