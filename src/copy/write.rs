//! Writing keys on the target: what to send for each key read from the
//! source (`RESTORE`, `DEL`, or nothing), and what the target's reply means
//! for the key's outcome.
//!
//! `--existing skip` leaves every key the target already has untouched,
//! including one the source lost in the meantime: such a key is checked
//! with `EXISTS` (`skipped` when there) rather than deleted.

use redis::Value;

use crate::connection::{ErrorClass, classify, error_text};
use crate::options::Existing;
use crate::outcome::{KeyResult, Outcome, WriteMethod};
use crate::route::{Step, step_for_error};
use crate::wire::CommandBuffer;

use super::read::{Found, Ttl};

/// What to do with one key on the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// `RESTORE` the payload, with `REPLACE` when `replace`.
    Restore { replace: bool },
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
}

impl Written {
    pub fn failed(error: impl Into<String>) -> Written {
        Written {
            outcome: Outcome::Failed,
            ttl_ms: None,
            size_bytes: None,
            error: Some(error.into()),
            method: None,
        }
    }

    fn without_value(outcome: Outcome) -> Written {
        Written {
            outcome,
            ttl_ms: None,
            size_bytes: None,
            error: None,
            method: None,
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
    match found {
        Found::Gone => true,
        Found::Value {
            ttl: Ttl::ExpiresAt(at),
            ..
        } => *at <= now,
        _ => false,
    }
}

/// The plan for a key when nothing is known about the target's copy.
/// `ours`: the key on the target (if any) was written by this job in an
/// earlier round, so `--existing skip` does not protect it.
pub fn plan(found: &Found, existing: Existing, ours: bool, now: i64) -> Plan {
    if let Found::Failed(error) = found {
        return Plan::Known(Written::failed(error.clone()));
    }
    let skip = existing == Existing::Skip && !ours;
    match (is_gone(found, now), skip) {
        (true, false) => Plan::Delete,
        (true, true) => Plan::CheckExists,
        (false, _) => Plan::Restore { replace: !skip },
    }
}

/// The plan when the target was asked (under the fence) whether it has the
/// key: with `--existing skip` a key it has is `skipped` without a write.
pub fn plan_known_target(found: &Found, existing: Existing, on_target: bool, now: i64) -> Plan {
    if existing == Existing::Replace {
        return plan(found, existing, false, now);
    }
    if let Found::Failed(error) = found {
        return Plan::Known(Written::failed(error.clone()));
    }
    match (on_target, is_gone(found, now)) {
        (true, _) => Plan::Known(Written::without_value(Outcome::Skipped)),
        (false, true) => Plan::Known(Written::without_value(Outcome::Expired)),
        (false, false) => Plan::Restore { replace: false },
    }
}

/// Queues the command of `plan` for one key; returns how many (0 or 1).
pub fn queue_write(pipe: &mut CommandBuffer, key: &[u8], found: &Found, plan: &Plan) -> usize {
    match (plan, found) {
        (Plan::Restore { replace }, Found::Value { payload, ttl }) => {
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
            1
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

/// What the target's reply to a key's write means.
pub fn interpret_write(found: &Found, plan: &Plan, reply: &Value, now: i64) -> Step<Written> {
    let (ttl_ms, size_bytes) = read_facts(found, now);
    let with_value = |outcome: Outcome, error: Option<String>| Written {
        outcome,
        ttl_ms,
        size_bytes,
        error,
        method: (outcome == Outcome::Restored).then_some(WriteMethod::Restore),
    };
    match (plan, reply) {
        (Plan::Known(written), _) => Step::Done(written.clone()),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn value(ttl: Ttl) -> Found {
        Found::Value {
            payload: b"p".to_vec(),
            ttl,
        }
    }

    #[test]
    fn restore_carries_milliseconds_and_replace() {
        let found = value(Ttl::Remaining(7_200_000));
        let plan = plan(&found, Existing::Replace, false, 0);
        let mut pipe = CommandBuffer::new();
        queue_write(&mut pipe, b"k", &found, &plan);
        let packed = String::from_utf8_lossy(pipe.bytes()).into_owned();
        assert_eq!(
            packed,
            "*5\r\n$7\r\nRESTORE\r\n$1\r\nk\r\n$7\r\n7200000\r\n$1\r\np\r\n$7\r\nREPLACE\r\n"
        );
    }

    #[test]
    fn absolute_ttls_in_the_past_delete_instead() {
        let found = value(Ttl::ExpiresAt(1_000));
        let plan = plan(&found, Existing::Replace, false, 2_000);
        assert_eq!(plan, Plan::Delete);
        let step = interpret_write(&found, &plan, &Value::Int(0), 2_000);
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
        // The source lost the key between SCAN and the read: with skip, the
        // target's copy is only looked at.
        let plan = plan(&Found::Gone, Existing::Skip, false, 0);
        assert_eq!(plan, Plan::CheckExists);
        let mut pipe = CommandBuffer::new();
        queue_write(&mut pipe, b"k", &Found::Gone, &plan);
        assert!(!String::from_utf8_lossy(pipe.bytes()).contains("DEL"));
        let step = interpret_write(&Found::Gone, &plan, &Value::Int(1), 0);
        assert!(matches!(
            step,
            Step::Done(Written {
                outcome: Outcome::Skipped,
                ..
            })
        ));
        // Under the target fence the answer is known before writing.
        assert_eq!(
            plan_known_target(&Found::Gone, Existing::Skip, true, 0),
            Plan::Known(Written::without_value(Outcome::Skipped))
        );
    }

    #[test]
    fn a_key_this_job_wrote_is_replaced_even_with_skip() {
        let found = value(Ttl::Persistent);
        assert_eq!(
            plan(&found, Existing::Skip, true, 0),
            Plan::Restore { replace: true }
        );
        assert_eq!(
            plan(&found, Existing::Skip, false, 0),
            Plan::Restore { replace: false }
        );
    }
}
