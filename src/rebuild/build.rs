//! The commands that create a key from nothing on the target, with its TTL
//! and its hash fields' TTLs: `SET` (+ `APPEND`), `RPUSH`, `SADD`, `ZADD`,
//! `HSET` (+ `HPEXPIREAT`), the stream commands of [`super::stream`], then
//! `PEXPIRE` / `PEXPIREAT`.
//!
//! The caller wraps them as `MULTI; UNLINK key; <these>; EXEC` (on the
//! connection it fenced with `WATCH`), so the target never shows a
//! half-built key and an older copy's TTL never survives. No command is
//! huge: elements are sent [`BuildLimits`] at a time.

use anyhow::{Result, bail};

use super::stream::queue_stream_build;
use super::{HashValue, KeyValue};
use crate::capabilities::Capabilities;
use crate::copy::read::Ttl;
use crate::wire::CommandBuffer;

/// How much one command may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuildLimits {
    /// Elements (members, fields, list items) per command.
    pub elements: usize,
    /// Bytes of arguments per command (a string longer than this is sent as
    /// `SET` + `APPEND`s).
    pub bytes: usize,
}

impl Default for BuildLimits {
    /// 1,000 elements or 1 MiB: each command then takes the server well
    /// under a millisecond, and pipelines stay a few MiB.
    fn default() -> Self {
        BuildLimits {
            elements: 1000,
            bytes: 1024 * 1024,
        }
    }
}

/// Queues the commands that create `key` holding `value` with `ttl`;
/// returns how many. A hash with field TTLs on a target that cannot keep
/// them is an error (the key becomes `failed` with that text).
pub fn queue_build(
    pipe: &mut CommandBuffer,
    key: &[u8],
    value: &KeyValue,
    ttl: Ttl,
    target: &Capabilities,
    limits: BuildLimits,
) -> Result<usize> {
    let mut count = match value {
        KeyValue::String(bytes) => queue_string(pipe, key, bytes, limits),
        KeyValue::List(items) => queue_elements(pipe, "RPUSH", key, items, limits),
        KeyValue::Set(members) => queue_elements(pipe, "SADD", key, members, limits),
        KeyValue::ZSet(pairs) => queue_zadd(pipe, key, pairs, limits),
        KeyValue::Hash(hash) => queue_hash(pipe, key, hash, target, limits)?,
        KeyValue::Stream(stream) => queue_stream_build(pipe, key, stream, target),
    };
    count += queue_ttl(pipe, key, ttl);
    Ok(count)
}

/// `PEXPIRE` / `PEXPIREAT` for a key's TTL (nothing when persistent).
pub fn queue_ttl(pipe: &mut CommandBuffer, key: &[u8], ttl: Ttl) -> usize {
    match ttl {
        Ttl::Persistent => return 0,
        Ttl::Remaining(ms) => pipe.cmd("PEXPIRE").arg(key).arg(ms.max(1)),
        Ttl::ExpiresAt(at) => pipe.cmd("PEXPIREAT").arg(key).arg(at),
    };
    1
}

/// `SET`, then `APPEND`s of at most `limits.bytes` each.
pub fn queue_string(
    pipe: &mut CommandBuffer,
    key: &[u8],
    bytes: &[u8],
    limits: BuildLimits,
) -> usize {
    let mut chunks = bytes.chunks(limits.bytes.max(1));
    pipe.cmd("SET").arg(key).arg(chunks.next().unwrap_or(&[]));
    let mut count = 1;
    for chunk in chunks {
        pipe.cmd("APPEND").arg(key).arg(chunk);
        count += 1;
    }
    count
}

/// `RPUSH` / `SADD` of `items`, split by [`BuildLimits`].
pub fn queue_elements(
    pipe: &mut CommandBuffer,
    command: &str,
    key: &[u8],
    items: &[Vec<u8>],
    limits: BuildLimits,
) -> usize {
    let mut count = 0;
    for group in split(items, limits, |item| item.len()) {
        let mut built = pipe.cmd(command);
        built.arg(key);
        for item in group {
            built.arg(item);
        }
        drop(built);
        count += 1;
    }
    count
}

/// `ZADD key score member ...`, each score as the source printed it.
pub fn queue_zadd(
    pipe: &mut CommandBuffer,
    key: &[u8],
    pairs: &[(Vec<u8>, Vec<u8>)],
    limits: BuildLimits,
) -> usize {
    let mut count = 0;
    for group in split(pairs, limits, |(member, score)| member.len() + score.len()) {
        let mut built = pipe.cmd("ZADD");
        built.arg(key);
        for (member, score) in group {
            built.arg(score).arg(member);
        }
        drop(built);
        count += 1;
    }
    count
}

/// `HSET key field value ...`.
pub fn queue_hset(
    pipe: &mut CommandBuffer,
    key: &[u8],
    fields: &[(Vec<u8>, Vec<u8>)],
    limits: BuildLimits,
) -> usize {
    let mut count = 0;
    for group in split(fields, limits, |(field, value)| field.len() + value.len()) {
        let mut built = pipe.cmd("HSET");
        built.arg(key);
        for (field, value) in group {
            built.arg(field).arg(value);
        }
        drop(built);
        count += 1;
    }
    count
}

fn queue_hash(
    pipe: &mut CommandBuffer,
    key: &[u8],
    hash: &HashValue,
    target: &Capabilities,
    limits: BuildLimits,
) -> Result<usize> {
    if !hash.field_expiries.is_empty() && !target.hash_field_ttls() {
        bail!("{}", field_ttl_refusal(hash.field_expiries.len(), target));
    }
    let count = queue_hset(pipe, key, &hash.fields, limits);
    Ok(count + queue_field_expiries(pipe, key, &hash.field_expiries, limits))
}

/// Why a hash with field TTLs cannot be written to `target`.
pub fn field_ttl_refusal(fields: usize, target: &Capabilities) -> String {
    format!(
        "the hash has {fields} field(s) with their own TTL, and the target ({}) cannot keep field TTLs (Redis 7.4+ or Valkey 9 can); copy it to such a server, or remove the field TTLs on the source (HPERSIST) and `retry`",
        target.product()
    )
}

/// `HPEXPIREAT key at FIELDS n field ...`, fields grouped by expiry time.
pub fn queue_field_expiries(
    pipe: &mut CommandBuffer,
    key: &[u8],
    expiries: &[(Vec<u8>, i64)],
    limits: BuildLimits,
) -> usize {
    let mut by_time: std::collections::BTreeMap<i64, Vec<&Vec<u8>>> = Default::default();
    for (field, at) in expiries {
        by_time.entry(*at).or_default().push(field);
    }
    let mut count = 0;
    for (at, fields) in by_time {
        for group in split(&fields, limits, |field| field.len()) {
            let mut built = pipe.cmd("HPEXPIREAT");
            built.arg(key).arg(at).arg("FIELDS").arg(group.len());
            for field in group {
                built.arg(field.as_slice());
            }
            drop(built);
            count += 1;
        }
    }
    count
}

/// Splits `items` into runs of at most `limits.elements` items and about
/// `limits.bytes` bytes (a single bigger item gets a run of its own).
pub fn split<T>(items: &[T], limits: BuildLimits, size: impl Fn(&T) -> usize) -> Vec<&[T]> {
    let mut runs = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (index, item) in items.iter().enumerate() {
        let item_bytes = size(item);
        let full = index - start >= limits.elements.max(1)
            || (index > start && bytes + item_bytes > limits.bytes);
        if full {
            runs.push(&items[start..index]);
            start = index;
            bytes = 0;
        }
        bytes += item_bytes;
    }
    if start < items.len() {
        runs.push(&items[start..]);
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::{Fork, ServerInfo};

    fn target(fork: Fork, version: (u32, u32, u32)) -> Capabilities {
        let info = ServerInfo {
            fork,
            fork_version: version,
            version: if fork == Fork::Valkey {
                (7, 2, 4)
            } else {
                version
            },
            ..ServerInfo::default()
        };
        Capabilities::from_info(&info)
    }

    fn text(pipe: &CommandBuffer) -> String {
        String::from_utf8_lossy(pipe.bytes()).into_owned()
    }

    #[test]
    fn runs_respect_both_limits() {
        let items: Vec<Vec<u8>> = (0..25).map(|_| vec![b'x'; 10]).collect();
        let limits = BuildLimits {
            elements: 10,
            bytes: 1_000,
        };
        let runs = split(&items, limits, |item| item.len());
        assert_eq!(
            runs.iter().map(|r| r.len()).collect::<Vec<_>>(),
            vec![10, 10, 5]
        );
        let limits = BuildLimits {
            elements: 100,
            bytes: 35,
        };
        let runs = split(&items, limits, |item| item.len());
        assert!(runs.iter().all(|run| run.len() == 3 || run.len() == 1));
        assert_eq!(runs.iter().map(|r| r.len()).sum::<usize>(), 25);
        let huge = vec![vec![b'x'; 100]];
        assert_eq!(split(&huge, limits, |item| item.len()).len(), 1);
        assert!(split::<Vec<u8>>(&[], limits, |item| item.len()).is_empty());
    }

    #[test]
    fn long_strings_are_appended_in_pieces() {
        let mut pipe = CommandBuffer::new();
        let limits = BuildLimits {
            elements: 10,
            bytes: 4,
        };
        assert_eq!(queue_string(&mut pipe, b"k", b"abcdefghij", limits), 3);
        let packed = text(&pipe);
        assert!(packed.contains("SET\r\n$1\r\nk\r\n$4\r\nabcd"));
        assert!(packed.contains("APPEND\r\n$1\r\nk\r\n$4\r\nefgh"));
        assert!(packed.contains("APPEND\r\n$1\r\nk\r\n$2\r\nij"));
    }

    #[test]
    fn scores_go_back_as_the_source_printed_them() {
        let mut pipe = CommandBuffer::new();
        let pairs = vec![
            (b"a".to_vec(), b"-inf".to_vec()),
            (b"b".to_vec(), b"-0".to_vec()),
            (b"c".to_vec(), b"0.10000000000000001".to_vec()),
        ];
        queue_zadd(&mut pipe, b"z", &pairs, BuildLimits::default());
        assert!(text(&pipe).ends_with(
            "$4\r\n-inf\r\n$1\r\na\r\n$2\r\n-0\r\n$1\r\nb\r\n$19\r\n0.10000000000000001\r\n$1\r\nc\r\n"
        ));
    }

    #[test]
    fn field_ttls_need_a_target_that_keeps_them() {
        let hash = KeyValue::Hash(HashValue {
            fields: vec![
                (b"f".to_vec(), b"v".to_vec()),
                (b"g".to_vec(), b"w".to_vec()),
            ],
            field_expiries: vec![(b"f".to_vec(), 1_900_000_000_000)],
        });
        let mut pipe = CommandBuffer::new();
        let old = target(Fork::Redis, (7, 0, 15));
        let error = queue_build(
            &mut pipe,
            b"h",
            &hash,
            Ttl::Persistent,
            &old,
            BuildLimits::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("1 field(s) with their own TTL"), "{error}");
        assert!(error.contains("Redis 7.0.15"), "{error}");
        let new = target(Fork::Valkey, (9, 1, 2));
        let mut pipe = CommandBuffer::new();
        let count = queue_build(
            &mut pipe,
            b"h",
            &hash,
            Ttl::Remaining(5_000),
            &new,
            BuildLimits::default(),
        )
        .unwrap();
        assert_eq!(count, 3, "HSET, HPEXPIREAT, PEXPIRE");
        let packed = text(&pipe);
        assert!(packed.contains("HPEXPIREAT\r\n$1\r\nh\r\n$13\r\n1900000000000\r\n$6\r\nFIELDS\r\n$1\r\n1\r\n$1\r\nf\r\n"));
        assert!(packed.contains("PEXPIRE\r\n$1\r\nh\r\n$4\r\n5000\r\n"));
    }
}
