//! Writing keys on the target: what to send for each key read from the
//! source (`RESTORE` of its payload, the commands that rebuild its value,
//! `DEL`, or nothing), and what the target's replies mean for the key's
//! outcome.
//!
//! A rebuilt key is created from nothing inside one transaction (`DEL`,
//! then the commands of its type, then its TTL), so the target never shows
//! it half built. A payload the target refuses (another version or fork)
//! is, when the job allows it, read again by commands and rebuilt: the
//! outcome says so ([`Written::rebuild_instead`]).
//!
//! `--existing skip` leaves every key the target already has untouched,
//! including one the source lost in the meantime: such a key is checked
//! with `EXISTS` (`skipped` when there) rather than deleted.

use redis::Value;

use crate::capabilities::{Capabilities, EvictionClock, is_payload_refused};
use crate::connection::{ErrorClass, classify, error_text};
use crate::options::Existing;
use crate::outcome::{KeyResult, Outcome, WriteMethod};
use crate::rebuild::KeyValue;
use crate::rebuild::build::{BuildLimits, field_ttl_refusal, queue_build};
use crate::route::{Step, step_for_error};
use crate::wire::CommandBuffer;

use super::read::{Found, Ttl};

/// What writing needs to know besides the key.
#[derive(Debug, Clone, Copy)]
pub struct WriteContext<'a> {
    pub existing: Existing,
    pub target: &'a Capabilities,
    pub limits: BuildLimits,
    /// `--keep-idle`: which clock the source's values carry.
    pub clock: Option<EvictionClock>,
    /// A refused payload is rebuilt by commands (else the key fails).
    pub rebuild_refused: bool,
}

/// What to do with one key on the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// `RESTORE` the payload, with `REPLACE` when `replace`.
    Restore { replace: bool },
    /// `DEL` the key, then build it with commands of its type.
    Rebuild,
    /// `DEL`: the key is gone on the source (or its absolute expiry passed).
    Delete,
    /// `EXISTS`: the key is gone on the source and `--existing skip` says
    /// not to touch the target's copy: `skipped` if there, else `expired`.
    CheckExists,
    /// Nothing to send; the outcome is already known.
    Known(Written),
}

/// A key's outcome on the target, before it is paired with its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub outcome: Outcome,
    pub ttl_ms: Option<i64>,
    pub size_bytes: Option<i64>,
    pub error: Option<String>,
    pub method: Option<WriteMethod>,
    /// The target refused the payload: read the key by commands and
    /// rebuild it (not an outcome yet).
    pub rebuild_instead: bool,
}

impl Written {
    pub fn failed(error: impl Into<String>) -> Written {
        Written {
            error: Some(error.into()),
            ..Written::without_value(Outcome::Failed)
        }
    }

    fn without_value(outcome: Outcome) -> Written {
        Written {
            outcome,
            ttl_ms: None,
            size_bytes: None,
            error: None,
            method: None,
            rebuild_instead: false,
        }
    }

    /// Pairs the outcome with its key for the journal.
    pub fn into_result(self, key: Vec<u8>) -> KeyResult {
        KeyResult {
            key,
            outcome: self.outcome,
            ttl_ms: self.ttl_ms,
            size_bytes: self.size_bytes,
            error: self.error,
            method: self.method,
        }
    }
}

/// Whether the source's copy of the key no longer exists as far as the
/// target is concerned: gone, or an absolute expiry already past.
fn is_gone(found: &Found, now: i64) -> bool {
    let ttl = match found {
        Found::Gone => return true,
        Found::Value { ttl, .. } | Found::Rebuilt { ttl, .. } => ttl,
        Found::Failed(_) => return false,
    };
    matches!(ttl, Ttl::ExpiresAt(at) if *at <= now)
}

/// A value the target cannot hold: a hash with field TTLs on a target
/// without them.
fn unbuildable(found: &Found, target: &Capabilities) -> Option<String> {
    match found {
        Found::Rebuilt {
            value: KeyValue::Hash(hash),
            ..
        } if !hash.field_expiries.is_empty() && !target.hash_field_ttls() => {
            Some(field_ttl_refusal(hash.field_expiries.len(), target))
        }
        _ => None,
    }
}

/// The plan for a key when nothing is known about the target's copy.
/// `ours`: the key on the target (if any) was written by this job in an
/// earlier round, so `--existing skip` does not protect it.
pub fn plan(found: &Found, context: &WriteContext<'_>, ours: bool, now: i64) -> Plan {
    if let Found::Failed(error) = found {
        return Plan::Known(Written::failed(error.clone()));
    }
    if let Some(reason) = unbuildable(found, context.target) {
        return Plan::Known(Written::failed(reason));
    }
    let skip = context.existing == Existing::Skip && !ours;
    match (is_gone(found, now), skip, found) {
        (true, false, _) => Plan::Delete,
        (true, true, _) => Plan::CheckExists,
        (false, _, Found::Rebuilt { .. }) => Plan::Rebuild,
        (false, _, _) => Plan::Restore { replace: !skip },
    }
}

/// The plan when the target was asked (under the fence) whether it has the
/// key: with `--existing skip` a key it has is `skipped` without a write.
pub fn plan_known_target(
    found: &Found,
    context: &WriteContext<'_>,
    on_target: bool,
    now: i64,
) -> Plan {
    if context.existing == Existing::Replace {
        return plan(found, context, false, now);
    }
    match (found, on_target, is_gone(found, now)) {
        (Found::Failed(error), _, _) => Plan::Known(Written::failed(error.clone())),
        (_, true, _) => Plan::Known(Written::without_value(Outcome::Skipped)),
        (_, false, true) => Plan::Known(Written::without_value(Outcome::Expired)),
        (_, false, false) => plan(found, context, true, now),
    }
}

/// Queues the commands of `plan` for one key; returns how many. Inside a
/// transaction already (`in_transaction`, the target fence), a rebuild is
/// its commands alone; otherwise it is a transaction of its own.
pub fn queue_write(
    pipe: &mut CommandBuffer,
    key: &[u8],
    found: &Found,
    plan: &Plan,
    context: &WriteContext<'_>,
    in_transaction: bool,
) -> usize {
    match (plan, found) {
        (
            Plan::Restore { replace },
            Found::Value {
                payload,
                ttl,
                clock,
            },
        ) => {
            let mut command = pipe.cmd("RESTORE");
            command.arg(key);
            match ttl {
                Ttl::Persistent => command.arg(0),
                Ttl::Remaining(ms) => command.arg(*ms),
                Ttl::ExpiresAt(at) => command.arg(*at),
            };
            command.arg(payload.as_slice());
            if *replace {
                command.arg("REPLACE");
            }
            if matches!(ttl, Ttl::ExpiresAt(_)) {
                command.arg("ABSTTL");
            }
            if let (Some(kind), Some(value)) = (context.clock, clock) {
                command.arg(kind.restore_option()).arg(*value);
            }
            1
        }
        (Plan::Rebuild, Found::Rebuilt { value, ttl }) => {
            let mut count = 0;
            if !in_transaction {
                pipe.cmd("MULTI");
                count += 1;
            }
            pipe.cmd("DEL").arg(key);
            count += 1;
            // Checked when planned: the build cannot be refused here.
            count +=
                queue_build(pipe, key, value, *ttl, context.target, context.limits).unwrap_or(0);
            if !in_transaction {
                pipe.cmd("EXEC");
                count += 1;
            }
            count
        }
        (Plan::Delete, _) => {
            pipe.cmd("DEL").arg(key);
            1
        }
        (Plan::CheckExists, _) => {
            pipe.cmd("EXISTS").arg(key);
            1
        }
        _ => 0,
    }
}

/// The journal's view of a key that was read: its TTL, its size, and how
/// it is written.
fn read_facts(found: &Found, now: i64) -> (Option<i64>, Option<i64>, Option<WriteMethod>) {
    let ttl_ms = |ttl: &Ttl| match ttl {
        Ttl::Persistent => None,
        Ttl::Remaining(ms) => Some(*ms),
        Ttl::ExpiresAt(at) => Some((*at - now).max(0)),
    };
    match found {
        Found::Value { payload, ttl, .. } => (
            ttl_ms(ttl),
            Some(payload.len() as i64),
            Some(WriteMethod::Restore),
        ),
        Found::Rebuilt { value, ttl } => (
            ttl_ms(ttl),
            Some(value.byte_size() as i64),
            Some(WriteMethod::Commands),
        ),
        _ => (None, None, None),
    }
}

/// What the target's replies to a key's write mean (as many as
/// [`queue_write`] queued; inside a transaction, the results `EXEC` gave).
pub fn interpret_write(
    found: &Found,
    plan: &Plan,
    replies: &[Value],
    context: &WriteContext<'_>,
    in_transaction: bool,
    now: i64,
) -> Step<Written> {
    let (ttl_ms, size_bytes, method) = read_facts(found, now);
    let with_value = |outcome: Outcome, error: Option<String>| Written {
        outcome,
        ttl_ms,
        size_bytes,
        error,
        method: (outcome == Outcome::Restored).then_some(method).flatten(),
        rebuild_instead: false,
    };
    if let Plan::Known(written) = plan {
        return Step::Done(written.clone());
    }
    if let Plan::Rebuild = plan {
        return interpret_rebuild(replies, in_transaction, with_value);
    }
    let reply = replies.first().unwrap_or(&Value::Nil);
    match (plan, reply) {
        (Plan::Restore { .. }, Value::ServerError(error))
            if context.rebuild_refused && is_payload_refused(error) =>
        {
            Step::Done(Written {
                rebuild_instead: true,
                ..with_value(Outcome::Failed, Some(error_text(error)))
            })
        }
        (_, Value::ServerError(error)) => match classify(error) {
            ErrorClass::BusyKey => Step::Done(with_value(Outcome::Skipped, None)),
            class => step_for_error(class, || {
                with_value(Outcome::Failed, Some(error_text(error)))
            }),
        },
        (Plan::Delete, Value::Int(_)) => Step::Done(Written::without_value(Outcome::Expired)),
        (Plan::CheckExists, Value::Int(present)) => {
            Step::Done(Written::without_value(if *present > 0 {
                Outcome::Skipped
            } else {
                Outcome::Expired
            }))
        }
        (Plan::Restore { .. }, Value::Okay | Value::SimpleString(_)) => {
            Step::Done(with_value(Outcome::Restored, None))
        }
        (_, other) => Step::Fatal(format!("unexpected reply from the target: {other:?}")),
    }
}

/// A rebuild's replies: inside the fence's transaction, the results of its
/// commands; on its own, `MULTI`'s, each command's `QUEUED` (or a refusal:
/// a redirect, an ACL), then `EXEC`'s results.
fn interpret_rebuild(
    replies: &[Value],
    in_transaction: bool,
    with_value: impl Fn(Outcome, Option<String>) -> Written,
) -> Step<Written> {
    let results: &[Value] = if in_transaction {
        replies
    } else {
        let queued = replies
            .get(1..replies.len().saturating_sub(1))
            .unwrap_or(&[]);
        if let Some(Value::ServerError(error)) = queued
            .iter()
            .find(|reply| matches!(reply, Value::ServerError(_)))
        {
            return match classify(error) {
                // A slot being imported answers ASK for each queued command;
                // the transaction cannot follow it: wait for the migration.
                ErrorClass::Ask { .. } => Step::Again(error_text(error)),
                class => step_for_error(class, || {
                    with_value(Outcome::Failed, Some(error_text(error)))
                }),
            };
        }
        match replies.last() {
            Some(Value::Array(results)) => results,
            Some(Value::ServerError(error)) => {
                return step_for_error(classify(error), || {
                    with_value(Outcome::Failed, Some(error_text(error)))
                });
            }
            other => return Step::Fatal(format!("EXEC returned {other:?}")),
        }
    };
    match results
        .iter()
        .find(|reply| matches!(reply, Value::ServerError(_)))
    {
        Some(Value::ServerError(error)) => Step::Done(Written {
            // The transaction ran the other commands: the key is half
            // built; the caller deletes it.
            ..with_value(Outcome::Failed, Some(error_text(error)))
        }),
        _ => Step::Done(with_value(Outcome::Restored, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::{Fork, ServerInfo};

    fn value(ttl: Ttl) -> Found {
        Found::Value {
            payload: b"p".to_vec(),
            ttl,
            clock: None,
        }
    }

    fn caps() -> Capabilities {
        Capabilities::from_info(&ServerInfo {
            version: (7, 0, 15),
            fork: Fork::Redis,
            fork_version: (7, 0, 15),
            ..ServerInfo::default()
        })
    }

    fn context(caps: &Capabilities, existing: Existing) -> WriteContext<'_> {
        WriteContext {
            existing,
            target: caps,
            limits: BuildLimits::default(),
            clock: None,
            rebuild_refused: true,
        }
    }

    #[test]
    fn restore_carries_milliseconds_and_replace() {
        let caps = caps();
        let context = context(&caps, Existing::Replace);
        let found = value(Ttl::Remaining(7_200_000));
        let plan = plan(&found, &context, false, 0);
        let mut pipe = CommandBuffer::new();
        queue_write(&mut pipe, b"k", &found, &plan, &context, false);
        let packed = String::from_utf8_lossy(pipe.bytes()).into_owned();
        assert_eq!(
            packed,
            "*5\r\n$7\r\nRESTORE\r\n$1\r\nk\r\n$7\r\n7200000\r\n$1\r\np\r\n$7\r\nREPLACE\r\n"
        );
    }

    #[test]
    fn absolute_ttls_in_the_past_delete_instead() {
        let caps = caps();
        let context = context(&caps, Existing::Replace);
        let found = value(Ttl::ExpiresAt(1_000));
        let plan = plan(&found, &context, false, 2_000);
        assert_eq!(plan, Plan::Delete);
        let step = interpret_write(&found, &plan, &[Value::Int(0)], &context, false, 2_000);
        assert!(matches!(
            step,
            Step::Done(Written {
                outcome: Outcome::Expired,
                ..
            })
        ));
    }

    #[test]
    fn skip_never_deletes_what_the_target_has() {
        let caps = caps();
        let context = context(&caps, Existing::Skip);
        // The source lost the key between SCAN and the read: with skip, the
        // target's copy is only looked at.
        let plan = plan(&Found::Gone, &context, false, 0);
        assert_eq!(plan, Plan::CheckExists);
        let mut pipe = CommandBuffer::new();
        queue_write(&mut pipe, b"k", &Found::Gone, &plan, &context, false);
        assert!(!String::from_utf8_lossy(pipe.bytes()).contains("DEL"));
        let step = interpret_write(&Found::Gone, &plan, &[Value::Int(1)], &context, false, 0);
        assert!(matches!(
            step,
            Step::Done(Written {
                outcome: Outcome::Skipped,
                ..
            })
        ));
        // Under the target fence the answer is known before writing.
        assert_eq!(
            plan_known_target(&Found::Gone, &context, true, 0),
            Plan::Known(Written::without_value(Outcome::Skipped))
        );
    }

    #[test]
    fn a_key_this_job_wrote_is_replaced_even_with_skip() {
        let caps = caps();
        let context = context(&caps, Existing::Skip);
        let found = value(Ttl::Persistent);
        assert_eq!(
            plan(&found, &context, true, 0),
            Plan::Restore { replace: true }
        );
        assert_eq!(
            plan(&found, &context, false, 0),
            Plan::Restore { replace: false }
        );
    }

    #[test]
    fn a_refused_payload_asks_for_a_rebuild() {
        let caps = caps();
        let context = context(&caps, Existing::Replace);
        let found = value(Ttl::Persistent);
        let plan = plan(&found, &context, false, 0);
        let refused =
            redis::parse_redis_value(b"-ERR DUMP payload version or checksum are wrong\r\n")
                .unwrap();
        match interpret_write(&found, &plan, &[refused], &context, false, 0) {
            Step::Done(written) => assert!(written.rebuild_instead, "{written:?}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_rebuilt_key_is_one_transaction_of_its_own() {
        let caps = caps();
        let context = context(&caps, Existing::Replace);
        let found = Found::Rebuilt {
            value: KeyValue::List(vec![b"a".to_vec(), b"b".to_vec()]),
            ttl: Ttl::Remaining(5_000),
        };
        let plan = plan(&found, &context, false, 0);
        assert_eq!(plan, Plan::Rebuild);
        let mut pipe = CommandBuffer::new();
        let count = queue_write(&mut pipe, b"k", &found, &plan, &context, false);
        let packed = String::from_utf8_lossy(pipe.bytes()).into_owned();
        assert_eq!(count, 5, "{packed}");
        let order: Vec<usize> = ["MULTI", "DEL", "RPUSH", "PEXPIRE", "EXEC"]
            .iter()
            .map(|name| packed.find(name).unwrap())
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{packed}");
    }
}
