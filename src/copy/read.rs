//! Reading keys on the source: `DUMP` then `PTTL` (or `PEXPIRETIME`) per
//! key, pipelined, each at the node that serves it.
//!
//! Why DUMP comes before PTTL: if the key changes between the two commands,
//! the TTL we restore is the one the source had *after* the value was read.
//! A key that gained a TTL in between lands with it; one that expired in
//! between is reported `expired` and deleted on the target. So a key that
//! has a TTL on the source never lands without one.
//!
//! PTTL can answer 0 for a key about to expire; RESTORE reads a TTL of 0 as
//! "no TTL", so 0 is sent as 1 ms.
//!
//! With the source-side fence (see [`super::fence`]) each key's reads are
//! preceded by `WATCH key` on the same connection, so a later empty
//! `MULTI`/`EXEC` there tells whether the key changed after it was read.
//!
//! A key the target cannot load as a payload (another version or fork) is
//! read by commands of its type instead ([`crate::rebuild`]), and
//! `--keep-idle` reads its LRU idle time or LFU frequency first (`OBJECT`
//! does not touch it; `DUMP` would).

use anyhow::Result;
use redis::Value;

use crate::capabilities::EvictionClock;
use crate::connection::{classify, error_text};
use crate::options::TtlMode;
use crate::rebuild::KeyValue;
use crate::rebuild::read::{ReadProgress, SourceReads, read_values};
use crate::route::{Step, route_rounds_at, step_for_error};
use crate::side::Side;
use crate::wire::CommandBuffer;

/// How many times a key that changed between DUMP and PTTL is read again.
const MAX_REREADS: u32 = 3;

/// The TTL a key had on the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ttl {
    Persistent,
    /// Remaining milliseconds (PTTL), at least 1.
    Remaining(i64),
    /// Unix time in milliseconds (PEXPIRETIME), for `--ttl absolute`.
    ExpiresAt(i64),
}

/// What reading a key on the source found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// Its DUMP payload, and (`--keep-idle`) its idle time or frequency.
    Value {
        payload: Vec<u8>,
        ttl: Ttl,
        clock: Option<i64>,
    },
    /// Its whole value, read by commands of its type.
    Rebuilt {
        value: KeyValue,
        ttl: Ttl,
    },
    /// Gone by the time it was read (expired or deleted).
    Gone,
    Failed(String),
}

/// What a read asks besides the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReadAlso {
    /// `WATCH` the key first (the source fence).
    pub watch: bool,
    /// `OBJECT IDLETIME|FREQ` first (`--keep-idle`).
    pub clock: Option<EvictionClock>,
}

/// Queues the reads of one key: `WATCH` (when asked), `OBJECT IDLETIME|FREQ`
/// (when asked), `DUMP`, then `PTTL` (or `PEXPIRETIME`).
pub fn queue_read(
    pipe: &mut CommandBuffer,
    key: &[u8],
    ttl_mode: TtlMode,
    also: ReadAlso,
) -> usize {
    if also.watch {
        pipe.cmd("WATCH").arg(key);
    }
    if let Some(clock) = also.clock {
        pipe.cmd("OBJECT").arg(clock.object_subcommand()).arg(key);
    }
    pipe.cmd("DUMP").arg(key);
    match ttl_mode {
        TtlMode::Relative => pipe.cmd("PTTL").arg(key),
        TtlMode::Absolute => pipe.cmd("PEXPIRETIME").arg(key),
    };
    2 + usize::from(also.watch) + usize::from(also.clock.is_some())
}

/// Interprets one key's replies to [`queue_read`].
pub fn interpret_read(replies: &mut [Value], ttl_mode: TtlMode, also: ReadAlso) -> Step<Found> {
    let replies = if also.watch {
        match replies.split_first_mut() {
            Some((Value::ServerError(error), _)) => {
                return step_for_error(classify(error), || Found::Failed(error_text(error)));
            }
            Some((_, rest)) => rest,
            None => return Step::Fatal("no reply to WATCH".to_string()),
        }
    } else {
        replies
    };
    let (clock, replies) = if also.clock.is_some() {
        match replies.split_first_mut() {
            // A key gone at OBJECT is gone at DUMP too, or was written again
            // since: either way its clock starts fresh.
            Some((Value::Int(value), rest)) => (Some(*value), rest),
            Some((_, rest)) => (None, rest),
            None => return Step::Fatal("no reply to OBJECT".to_string()),
        }
    } else {
        (None, replies)
    };
    let [dump, ttl] = replies else {
        return Step::Fatal(format!(
            "expected 2 replies to DUMP + TTL, got {}",
            replies.len()
        ));
    };
    for reply in [&*dump, &*ttl] {
        if let Value::ServerError(error) = reply {
            return step_for_error(classify(error), || Found::Failed(error_text(error)));
        }
    }
    let ttl = match ttl {
        Value::Int(-2) => return Step::Done(Found::Gone),
        Value::Int(-1) => Ttl::Persistent,
        Value::Int(n) if *n >= 0 => match ttl_mode {
            TtlMode::Relative => Ttl::Remaining((*n).max(1)),
            TtlMode::Absolute => Ttl::ExpiresAt(*n),
        },
        other => return Step::Fatal(format!("TTL returned {other:?}")),
    };
    match std::mem::replace(dump, Value::Nil) {
        Value::BulkString(payload) => Step::Done(Found::Value {
            payload,
            ttl,
            clock,
        }),
        // Gone at DUMP but present at PTTL: deleted and written again in
        // between. Read it again rather than guess.
        Value::Nil => Step::Again(KEY_CHANGED.to_string()),
        other => Step::Fatal(format!("DUMP returned {other:?}")),
    }
}

const KEY_CHANGED: &str = "key changed while it was read";

/// One key's read, and the node that answered (where its WATCH holds).
#[derive(Debug)]
pub struct Read {
    pub found: Found,
    pub address: String,
}

/// Reads `keys` in `db`, asking `addresses[i]` first for key `i` and
/// following redirections. A key that changes between DUMP and PTTL is
/// read again a few times, then reported failed.
pub fn read_keys(
    side: &mut Side,
    db: i64,
    keys: &[&[u8]],
    addresses: Vec<String>,
    ttl_mode: TtlMode,
    also: ReadAlso,
) -> Result<Vec<Read>> {
    let mut rereads = vec![0u32; keys.len()];
    let reads = route_rounds_at(
        side,
        db,
        addresses,
        |pipe, index| queue_read(pipe, keys[index], ttl_mode, also),
        |index, replies| match interpret_read(replies, ttl_mode, also) {
            Step::Again(reason) if reason == KEY_CHANGED => {
                rereads[index] += 1;
                if rereads[index] > MAX_REREADS {
                    Step::Done(Found::Failed(
                        "key kept changing while it was read; `retry` copies it again".to_string(),
                    ))
                } else {
                    Step::Again(reason)
                }
            }
            step => step,
        },
    )?;
    Ok(reads
        .into_iter()
        .map(|(found, address)| Read { found, address })
        .collect())
}

/// Reads `keys` by commands of their type (for a target that cannot load
/// the source's payloads). With `watch`, each key is watched first on the
/// connection that serves it (the source fence).
pub fn read_by_commands(
    side: &mut Side,
    db: i64,
    keys: &[&[u8]],
    reads: SourceReads,
    watch: bool,
) -> Result<Vec<Read>> {
    let addresses: Vec<String> = keys.iter().map(|key| side.address_for_key(key)).collect();
    let addresses = if watch {
        route_rounds_at(
            side,
            db,
            addresses,
            |pipe, index| {
                pipe.cmd("WATCH").arg(keys[index]);
                1
            },
            |_, replies| match replies.first() {
                Some(Value::ServerError(error)) => step_for_error(classify(error), || ()),
                _ => Step::Done(()),
            },
        )?
        .into_iter()
        .map(|((), address)| address)
        .collect()
    } else {
        addresses
    };
    let owned: Vec<Vec<u8>> = keys.iter().map(|key| key.to_vec()).collect();
    let progress = read_values(side, db, &owned, vec![None; keys.len()], reads)?;
    Ok(progress
        .into_iter()
        .zip(addresses)
        .map(|(progress, address)| Read {
            found: match progress {
                ReadProgress::Done { value, ttl } => Found::Rebuilt { value, ttl },
                ReadProgress::Gone => Found::Gone,
                ReadProgress::Failed(reason) => Found::Failed(reason),
                ReadProgress::Unfinished => {
                    Found::Failed("the key kept changing while it was read".to_string())
                }
            },
            address,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(text: &str) -> Value {
        redis::parse_redis_value(format!("-{text}\r\n").as_bytes()).unwrap()
    }

    fn read(dump: Value, ttl: Value) -> Step<Found> {
        interpret_read(&mut [dump, ttl], TtlMode::Relative, ReadAlso::default())
    }

    #[test]
    fn a_ttl_of_zero_milliseconds_is_kept_as_one() {
        match read(Value::BulkString(b"payload".to_vec()), Value::Int(0)) {
            Step::Done(Found::Value { ttl, .. }) => assert_eq!(ttl, Ttl::Remaining(1)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn keys_gone_at_either_read_are_gone() {
        assert!(matches!(
            read(Value::Nil, Value::Int(-2)),
            Step::Done(Found::Gone)
        ));
        assert!(matches!(
            read(Value::BulkString(b"p".to_vec()), Value::Int(-2)),
            Step::Done(Found::Gone)
        ));
        assert!(matches!(read(Value::Nil, Value::Int(5000)), Step::Again(_)));
    }

    #[test]
    fn persistent_keys_stay_persistent() {
        match read(Value::BulkString(b"p".to_vec()), Value::Int(-1)) {
            Step::Done(Found::Value { ttl, payload, .. }) => {
                assert_eq!(ttl, Ttl::Persistent);
                assert_eq!(payload, b"p");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn source_errors_become_key_failures_or_redirects() {
        assert!(matches!(
            read(error("NOPERM No permissions to access a key"), Value::Int(-1)),
            Step::Done(Found::Failed(text)) if text.starts_with("NOPERM")
        ));
        assert!(matches!(
            read(
                error("MOVED 1 127.0.0.1:7001"),
                error("MOVED 1 127.0.0.1:7001")
            ),
            Step::Redirect { ask: false, .. }
        ));
    }

    const WATCH: ReadAlso = ReadAlso {
        watch: true,
        clock: None,
    };

    #[test]
    fn the_eviction_clock_is_read_before_the_value() {
        let also = ReadAlso {
            watch: false,
            clock: Some(EvictionClock::Idle),
        };
        let mut pipe = CommandBuffer::new();
        assert_eq!(queue_read(&mut pipe, b"k", TtlMode::Relative, also), 3);
        let packed = String::from_utf8_lossy(pipe.bytes()).into_owned();
        assert!(packed.find("IDLETIME").unwrap() < packed.find("DUMP").unwrap());
        let mut replies = [
            Value::Int(42),
            Value::BulkString(b"p".to_vec()),
            Value::Int(-1),
        ];
        assert!(matches!(
            interpret_read(&mut replies, TtlMode::Relative, also),
            Step::Done(Found::Value {
                clock: Some(42),
                ..
            })
        ));
    }

    #[test]
    fn a_watch_that_is_redirected_redirects_the_key() {
        let mut replies = [
            error("MOVED 1 127.0.0.1:7001"),
            error("MOVED 1 127.0.0.1:7001"),
            error("MOVED 1 127.0.0.1:7001"),
        ];
        assert!(matches!(
            interpret_read(&mut replies, TtlMode::Relative, WATCH),
            Step::Redirect { moved: true, .. }
        ));
        let mut replies = [
            Value::Okay,
            Value::BulkString(b"p".to_vec()),
            Value::Int(-1),
        ];
        assert!(matches!(
            interpret_read(&mut replies, TtlMode::Relative, WATCH),
            Step::Done(Found::Value { .. })
        ));
    }
}
