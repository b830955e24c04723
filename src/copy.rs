//! Copying keys: pipelined DUMP + TTL on the source, pipelined RESTORE (or
//! DEL) on the target, and the outcome of each key.
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
//! Both directions go through [`route_rounds`], which sends each key to the
//! node serving it and follows MOVED / ASK redirections (a cluster whose
//! slots move while the job runs), and waits out TRYAGAIN / LOADING /
//! CLUSTERDOWN within the reconnect budget.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use redis::Value;

use crate::clock::now_ms;
use crate::connection::{ErrorClass, classify, error_text};
use crate::options::{Existing, TtlMode};
use crate::outcome::{KeyResult, Outcome, WriteMethod};
use crate::side::Side;
use crate::wire::CommandBuffer;

/// How many times one key may be redirected before it counts as failed.
const MAX_REDIRECTS: u32 = 16;
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
    Value {
        payload: Vec<u8>,
        ttl: Ttl,
    },
    /// Gone by the time it was read (expired or deleted).
    Gone,
    Failed(String),
}

/// A key read from the source, on its way to the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadKey {
    pub key: Vec<u8>,
    pub found: Found,
}

/// What one key's replies say to do next, in [`route_rounds`].
#[derive(Debug)]
pub enum Step<T> {
    Done(T),
    /// Send this key's commands again to `address`, preceded by ASKING when
    /// `ask` is set.
    Redirect {
        address: String,
        ask: bool,
        moved: bool,
    },
    /// Send again after a pause (TRYAGAIN, LOADING, CLUSTERDOWN, or a key
    /// that changed between two reads).
    Again(String),
    /// Stop the job.
    Fatal(String),
}

/// Sends every item to its node, follows redirections, and returns one
/// result per item, in order.
///
/// `queue` appends an item's commands to a pipeline and returns how many
/// it appended; `interpret` turns those replies into a [`Step`].
pub fn route_rounds<T>(
    side: &mut Side,
    db: i64,
    addresses: Vec<String>,
    mut queue: impl FnMut(&mut CommandBuffer, usize) -> usize,
    mut interpret: impl FnMut(usize, &mut [Value]) -> Step<T>,
) -> Result<Vec<T>> {
    let mut results: Vec<Option<T>> = (0..addresses.len()).map(|_| None).collect();
    let mut pending: Vec<(usize, String, bool)> = addresses
        .into_iter()
        .enumerate()
        .map(|(index, address)| (index, address, false))
        .collect();
    let mut redirects = vec![0u32; results.len()];
    let started = Instant::now();
    let mut pause = Duration::from_millis(50);
    while !pending.is_empty() {
        // Group by node, keeping each node's items in order.
        let mut groups: BTreeMap<String, Vec<(usize, bool)>> = BTreeMap::new();
        for (index, address, ask) in pending.drain(..) {
            groups.entry(address).or_default().push((index, ask));
        }
        let mut work = Vec::with_capacity(groups.len());
        let mut layouts = Vec::with_capacity(groups.len());
        for (address, items) in groups {
            let mut pipe = CommandBuffer::new();
            let mut layout = Vec::with_capacity(items.len());
            for (index, ask) in items {
                let mut count = 0;
                if ask {
                    pipe.cmd("ASKING");
                    count += 1;
                }
                count += queue(&mut pipe, index);
                layout.push((index, ask, count));
            }
            work.push((address, pipe));
            layouts.push(layout);
        }
        let replies = side.run_pipelines(db, work)?;
        let mut again = Vec::new();
        let mut topology_moved = false;
        for ((address, mut replies), layout) in replies.into_iter().zip(layouts) {
            let mut offset = 0;
            for (index, ask, count) in layout {
                let slice = &mut replies[offset..offset + count];
                offset += count;
                // ASKING's own +OK is not part of the item's replies.
                let slice = if ask { &mut slice[1..] } else { slice };
                match interpret(index, slice) {
                    Step::Done(result) => results[index] = Some(result),
                    Step::Redirect {
                        address: to,
                        ask,
                        moved,
                    } => {
                        redirects[index] += 1;
                        if redirects[index] > MAX_REDIRECTS {
                            bail!(
                                "key kept being redirected (last to {to}); the cluster is not settling"
                            );
                        }
                        topology_moved |= moved;
                        pending.push((index, to, ask));
                    }
                    Step::Again(reason) => again.push((index, address.clone(), reason)),
                    Step::Fatal(reason) => bail!("{reason}"),
                }
            }
        }
        if topology_moved {
            // Best effort: the redirect itself says where to go.
            let _ = side.refresh_topology();
        }
        if !again.is_empty() {
            if started.elapsed() > side_budget(side) {
                let (_, _, reason) = &again[0];
                bail!("{} kept answering {reason:?}; giving up", side.role());
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_secs(1));
            pending.extend(
                again
                    .into_iter()
                    .map(|(index, address, _)| (index, address, false)),
            );
        }
    }
    Ok(results
        .into_iter()
        .map(|result| result.expect("every item ends Done or the call fails"))
        .collect())
}

fn side_budget(side: &Side) -> Duration {
    side.reconnect_budget()
}

/// Queues the reads of one key: DUMP, then PTTL (or PEXPIRETIME).
pub fn queue_read(pipe: &mut CommandBuffer, key: &[u8], ttl_mode: TtlMode) -> usize {
    pipe.cmd("DUMP").arg(key);
    match ttl_mode {
        TtlMode::Relative => pipe.cmd("PTTL").arg(key),
        TtlMode::Absolute => pipe.cmd("PEXPIRETIME").arg(key),
    };
    2
}

/// Interprets the DUMP and TTL replies of one key.
pub fn interpret_read(replies: &mut [Value], ttl_mode: TtlMode) -> Step<Found> {
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
        Value::BulkString(payload) => Step::Done(Found::Value { payload, ttl }),
        // Gone at DUMP but present at PTTL: deleted and written again in
        // between. Read it again rather than guess.
        Value::Nil => Step::Again("key changed while it was read".to_string()),
        other => Step::Fatal(format!("DUMP returned {other:?}")),
    }
}

/// The step for a server error: redirects and pauses are followed; a key
/// error becomes this key's result (`failed`); the rest stops the job.
pub fn step_for_error<T>(class: ErrorClass, key_failure: impl FnOnce() -> T) -> Step<T> {
    match class {
        ErrorClass::Moved { address, .. } => Step::Redirect {
            address,
            ask: false,
            moved: true,
        },
        ErrorClass::Ask { address, .. } => Step::Redirect {
            address,
            ask: true,
            moved: false,
        },
        ErrorClass::Transient(reason) => Step::Again(reason),
        ErrorClass::Fatal(reason) => Step::Fatal(reason),
        ErrorClass::Key(_) | ErrorClass::BusyKey => Step::Done(key_failure()),
    }
}

/// Reads `keys` from the source (each at the node serving it), in `db`.
/// Keys that change between DUMP and PTTL are read again a few times, then
/// reported as failed.
pub fn read_keys(
    side: &mut Side,
    db: i64,
    keys: Vec<Vec<u8>>,
    ttl_mode: TtlMode,
) -> Result<Vec<ReadKey>> {
    let addresses = keys.iter().map(|key| side.address_for_key(key)).collect();
    read_keys_at(side, db, keys, addresses, ttl_mode)
}

/// Like [`read_keys`], with the first node to ask for each key given (the
/// node that SCAN returned it from).
pub fn read_keys_at(
    side: &mut Side,
    db: i64,
    keys: Vec<Vec<u8>>,
    addresses: Vec<String>,
    ttl_mode: TtlMode,
) -> Result<Vec<ReadKey>> {
    let mut rereads = vec![0u32; keys.len()];
    let found = route_rounds(
        side,
        db,
        addresses,
        |pipe, index| queue_read(pipe, &keys[index], ttl_mode),
        |index, replies| match interpret_read(replies, ttl_mode) {
            Step::Again(reason) if reason.starts_with("key changed") => {
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
    Ok(keys
        .into_iter()
        .zip(found)
        .map(|(key, found)| ReadKey { key, found })
        .collect())
}

/// What will be sent to the target for one key.
enum WriteAction {
    Restore,
    Delete,
    /// Nothing to send: reading already failed.
    Nothing,
}

fn write_action(found: &Found, now: i64) -> WriteAction {
    match found {
        Found::Value {
            ttl: Ttl::ExpiresAt(at),
            ..
        } if *at <= now => WriteAction::Delete,
        Found::Value { .. } => WriteAction::Restore,
        Found::Gone => WriteAction::Delete,
        Found::Failed(_) => WriteAction::Nothing,
    }
}

/// Queues RESTORE (or DEL for a key that is gone) for one key.
fn queue_write(pipe: &mut CommandBuffer, read: &ReadKey, existing: Existing, now: i64) -> usize {
    match (write_action(&read.found, now), &read.found) {
        (WriteAction::Restore, Found::Value { payload, ttl }) => {
            let mut command = pipe.cmd("RESTORE");
            command.arg(&read.key);
            match ttl {
                Ttl::Persistent => command.arg(0),
                Ttl::Remaining(ms) => command.arg(*ms),
                Ttl::ExpiresAt(at) => command.arg(*at),
            };
            command.arg(payload.as_slice());
            if existing == Existing::Replace {
                command.arg("REPLACE");
            }
            if matches!(ttl, Ttl::ExpiresAt(_)) {
                command.arg("ABSTTL");
            }
            1
        }
        (WriteAction::Delete, _) => {
            pipe.cmd("DEL").arg(&read.key);
            1
        }
        _ => 0,
    }
}

/// The journal's view of a key that was read: its TTL and payload size.
fn read_facts(found: &Found, now: i64) -> (Option<i64>, Option<i64>) {
    match found {
        Found::Value { payload, ttl } => {
            let ttl_ms = match ttl {
                Ttl::Persistent => None,
                Ttl::Remaining(ms) => Some(*ms),
                Ttl::ExpiresAt(at) => Some((*at - now).max(0)),
            };
            (ttl_ms, Some(payload.len() as i64))
        }
        _ => (None, None),
    }
}

/// Writes keys read from the source into `db` on the target and returns
/// each key's outcome. A job-level error (out of memory, read-only,
/// authentication) is an `Err`: nothing of this batch is journaled.
pub fn write_keys(
    side: &mut Side,
    db: i64,
    reads: Vec<ReadKey>,
    existing: Existing,
) -> Result<Vec<KeyResult>> {
    let now = now_ms();
    // A key whose read failed has its outcome already; the others are sent.
    let to_send: Vec<usize> = (0..reads.len())
        .filter(|&index| !matches!(reads[index].found, Found::Failed(_)))
        .collect();
    let addresses = to_send
        .iter()
        .map(|&index| side.address_for_key(&reads[index].key))
        .collect();
    let mut written = route_rounds(
        side,
        db,
        addresses,
        |pipe, item| queue_write(pipe, &reads[to_send[item]], existing, now),
        |item, replies| interpret_write(&reads[to_send[item]], replies, now),
    )?
    .into_iter();
    // Keys move into their results (no copy per key).
    reads
        .into_iter()
        .map(|read| {
            let written = match read.found {
                Found::Failed(error) => Written::failed(error),
                _ => written
                    .next()
                    .ok_or_else(|| anyhow!("a key was left without an outcome"))?,
            };
            Ok(KeyResult {
                key: read.key,
                outcome: written.outcome,
                ttl_ms: written.ttl_ms,
                size_bytes: written.size_bytes,
                error: written.error,
                method: (written.outcome == Outcome::Restored).then_some(WriteMethod::Restore),
            })
        })
        .collect()
}

/// A key's outcome on the target, before it is paired with its key.
#[derive(Debug)]
struct Written {
    outcome: Outcome,
    ttl_ms: Option<i64>,
    size_bytes: Option<i64>,
    error: Option<String>,
}

impl Written {
    fn failed(error: String) -> Written {
        Written {
            outcome: Outcome::Failed,
            ttl_ms: None,
            size_bytes: None,
            error: Some(error),
        }
    }
}

fn interpret_write(read: &ReadKey, replies: &mut [Value], now: i64) -> Step<Written> {
    let (ttl_ms, size_bytes) = read_facts(&read.found, now);
    let written = |outcome: Outcome, error: Option<String>| Written {
        outcome,
        ttl_ms,
        size_bytes,
        error,
    };
    let deleting = matches!(write_action(&read.found, now), WriteAction::Delete);
    match replies {
        [Value::ServerError(error)] => match classify(error) {
            ErrorClass::BusyKey => Step::Done(written(Outcome::Skipped, None)),
            class => step_for_error(class, || written(Outcome::Failed, Some(error_text(error)))),
        },
        [Value::Int(_)] if deleting => Step::Done(Written {
            outcome: Outcome::Expired,
            ttl_ms: None,
            size_bytes: None,
            error: None,
        }),
        [Value::Okay] | [Value::SimpleString(_)] => Step::Done(written(Outcome::Restored, None)),
        other => Step::Fatal(format!("unexpected reply from the target: {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(text: &str) -> Value {
        redis::parse_redis_value(format!("-{text}\r\n").as_bytes()).unwrap()
    }

    fn read(dump: Value, ttl: Value) -> Step<Found> {
        interpret_read(&mut [dump, ttl], TtlMode::Relative)
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
            Step::Done(Found::Value { ttl, payload }) => {
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

    #[test]
    fn restore_carries_milliseconds_and_replace() {
        let read = ReadKey {
            key: b"k".to_vec(),
            found: Found::Value {
                payload: b"p".to_vec(),
                ttl: Ttl::Remaining(7_200_000),
            },
        };
        let mut pipe = CommandBuffer::new();
        queue_write(&mut pipe, &read, Existing::Replace, 0);
        let packed = String::from_utf8_lossy(pipe.bytes()).into_owned();
        assert_eq!(
            packed,
            "*5\r\n$7\r\nRESTORE\r\n$1\r\nk\r\n$7\r\n7200000\r\n$1\r\np\r\n$7\r\nREPLACE\r\n"
        );
    }

    #[test]
    fn absolute_ttls_in_the_past_delete_instead() {
        let read = ReadKey {
            key: b"k".to_vec(),
            found: Found::Value {
                payload: b"p".to_vec(),
                ttl: Ttl::ExpiresAt(1_000),
            },
        };
        let mut pipe = CommandBuffer::new();
        queue_write(&mut pipe, &read, Existing::Replace, 2_000);
        assert!(String::from_utf8_lossy(pipe.bytes()).contains("DEL"));
        let step = interpret_write(&read, &mut [Value::Int(0)], 2_000);
        assert!(matches!(
            step,
            Step::Done(Written {
                outcome: Outcome::Expired,
                ..
            })
        ));
    }
}
