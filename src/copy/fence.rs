//! The fence: while the application keeps writing (dual writes, source
//! first then target), a key redis-ferry read must never land on the target
//! after a newer write of the application's, and a key the application
//! deleted must never come back.
//!
//! One *round* copies a group of keys under one of two fences, picked by
//! what the target is:
//!
//! - **Target fence** (a standalone target): `WATCH` every key of the group
//!   on the target connection and wait for the reply, *then* read them on
//!   the source, then `MULTI` / the writes / `EXEC` on that same target
//!   connection. A write of the application's that reaches the target after
//!   the WATCH makes EXEC abort (nothing is written; the round is redone).
//!   One that reached the target before the WATCH was made on the source
//!   earlier still, so the read already contains it. Nothing stale ever
//!   lands, not even for a moment.
//! - **Source fence** (a cluster target, where one transaction can only hold
//!   keys of one hash slot): `WATCH key` precedes each key's read on the
//!   source connection; the writes go to the target; then an empty
//!   `MULTI`/`EXEC` on each source connection says whether any key read
//!   there changed since its read (nil: it did). Such keys are copied again,
//!   and since every application write reaches the source before the
//!   target, the final copy of each key is the newest. A key the
//!   application changed in the milliseconds between redis-ferry's read and
//!   write can hold redis-ferry's copy until its next round, a few
//!   milliseconds later.
//!
//! Either way, an application write to the target that arrives *after*
//! redis-ferry's write but belongs to a source write made *before*
//! redis-ferry's read (the application was slow between its two writes)
//! would be applied twice for commands such as INCR or RPUSH. The *hold*
//! keeps the round open that long after the read (a few milliseconds by
//! default), so such a write lands inside the fence and aborts the round.
//!
//! A fence lives on one connection: a reconnect in the middle of a round
//! loses it, and the round is redone rather than finished unguarded.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use redis::Value;

use crate::clock::now_ms;
use crate::connection::{ErrorClass, classify, error_text};
use crate::options::Existing;
use crate::outcome::Outcome;
use crate::route::{Step, route_rounds};
use crate::side::Side;
use crate::wire::CommandBuffer;

use super::read::{Found, Read, read_keys};
use super::write::{Plan, Written, interpret_write, plan, plan_known_target, queue_write};

/// A target transaction carries at most this many payload bytes: EXEC runs
/// them all at once, and the target serves no one else meanwhile.
const MAX_TRANSACTION_BYTES: usize = 4 << 20;

/// Which fence a job's rounds use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FenceKind {
    Target,
    Source,
    /// `--no-fence`: nobody writes during the copy.
    Off,
}

/// What one round's caller needs to know about a key (indices are the
/// batch's).
#[derive(Debug, Default)]
pub struct RoundResult {
    /// Settled keys and their outcomes.
    pub done: Vec<(usize, Written)>,
    /// A key of these changed during the round: copy them again.
    pub changed: Vec<usize>,
    /// The fence's connection broke: copy them again.
    pub lost: Vec<usize>,
    /// Not written because the transaction would carry too many bytes:
    /// copy them again in smaller groups.
    pub split: Vec<usize>,
    /// Not written because another key's command was refused: copy them
    /// again as they are (the refused keys are settled).
    pub again: Vec<usize>,
    /// Keys this round created on the target (`--existing skip` must not
    /// protect them from the next round).
    pub created: Vec<usize>,
    /// Keys a lost transaction may or may not have created, with the
    /// payload it carried.
    pub uncertain: Vec<(usize, Vec<u8>)>,
}

/// What a round is given.
pub struct Round<'a> {
    pub db: i64,
    pub target_db: i64,
    pub existing: Existing,
    pub ttl: crate::options::TtlMode,
    pub hold: Duration,
    /// The batch's keys (the round copies those in `group`).
    pub keys: &'a [Vec<u8>],
    pub group: &'a [usize],
    /// Where to read each key of the group first.
    pub addresses: Vec<String>,
    /// Per batch index: this job created the key on the target earlier.
    pub created: &'a [bool],
    /// Per batch index: a lost transaction may have created it with this payload.
    pub uncertain: &'a [Option<Vec<u8>>],
}

/// Copies the round's keys under the target fence.
pub fn target_round(source: &mut Side, target: &mut Side, round: Round<'_>) -> Result<RoundResult> {
    let mut result = RoundResult::default();
    let address = target.seed_address().to_string();
    let skip = round.existing == Existing::Skip;
    // 1. WATCH the keys (and, with skip, ask whether the target has them).
    // One WATCH for the whole group; if the target refuses it (an ACL that
    // forbids some key), one per key, so only those keys fail.
    let n = round.group.len();
    let mut replies = watch(target, &round, &address, skip, false)?;
    let mut watches = 1;
    if matches!(replies.first(), Some(Value::ServerError(_))) && n > 1 {
        key_refusal(&replies[0])?;
        replies = watch(target, &round, &address, skip, true)?;
        watches = n;
    }
    let generation = target.generation(&address)?;
    let mut watched = Vec::with_capacity(n);
    let mut on_target = vec![false; n];
    let mut target_dump: Vec<Option<Vec<u8>>> = vec![None; n];
    let mut dumps = replies.iter().skip(watches + n);
    for (position, &index) in round.group.iter().enumerate() {
        let dump = if skip && round.uncertain[index].is_some() {
            dumps.next()
        } else {
            None
        };
        let watch_reply = &replies[if watches == 1 { 0 } else { position }];
        if let Some(error) = key_refusal(watch_reply)? {
            result.done.push((index, Written::failed(error)));
            continue;
        }
        if skip {
            match &replies[watches + position] {
                Value::Int(present) => on_target[position] = *present > 0,
                Value::ServerError(error) => {
                    result
                        .done
                        .push((index, Written::failed(error_text(error))));
                    continue;
                }
                other => bail!("EXISTS returned {other:?}"),
            }
            if let Some(Value::BulkString(payload)) = dump {
                target_dump[position] = Some(payload.clone());
            }
        }
        watched.push(position);
    }
    // 2. Read them on the source, now that the target watches them.
    let keys: Vec<&[u8]> = watched
        .iter()
        .map(|&p| round.keys[round.group[p]].as_slice())
        .collect();
    let addresses = watched
        .iter()
        .map(|&p| round.addresses[p].clone())
        .collect();
    let reads = read_keys(source, round.db, &keys, addresses, round.ttl, false)?;
    let read_at = Instant::now();
    // 3. Decide each key's write.
    let now = now_ms();
    let mut plans = Vec::with_capacity(reads.len());
    let mut bytes = 0;
    for (&position, read) in watched.iter().zip(&reads) {
        let index = round.group[position];
        let ours = round.created[index]
            || same_value(
                round.uncertain[index].as_deref(),
                target_dump[position].as_deref(),
            );
        let plan = if ours {
            plan(&read.found, round.existing, true, now)
        } else {
            plan_known_target(&read.found, round.existing, on_target[position], now)
        };
        if let Found::Value { payload, .. } = &read.found {
            bytes += payload.len();
        }
        plans.push(plan);
    }
    if bytes > MAX_TRANSACTION_BYTES && watched.len() > 1 {
        unwatch(target, round.target_db, &address)?;
        result.split.extend(watched.iter().map(|&p| round.group[p]));
        return Ok(result);
    }
    hold(read_at, round.hold);
    // 4. MULTI / writes / EXEC on the watching connection.
    let mut pipe = CommandBuffer::new();
    pipe.cmd("MULTI");
    let mut queued = Vec::with_capacity(plans.len());
    for ((&position, read), plan) in watched.iter().zip(&reads).zip(&plans) {
        let key = &round.keys[round.group[position]];
        queued.push(queue_write(&mut pipe, key, &read.found, plan));
    }
    if queued.iter().all(|&q| q == 0) {
        unwatch(target, round.target_db, &address)?;
        for ((&position, read), plan) in watched.iter().zip(&reads).zip(&plans) {
            let written = settle(&read.found, plan, &Value::Nil, now)?;
            result.done.push((round.group[position], written));
        }
        return Ok(result);
    }
    pipe.cmd("EXEC");
    let Some(mut replies) = target.send_fenced(&address, round.target_db, &pipe, generation)?
    else {
        for ((&position, read), plan) in watched.iter().zip(&reads).zip(&plans) {
            let index = round.group[position];
            match (&read.found, plan) {
                (Found::Failed(_), _) | (_, Plan::Known(_)) => {
                    result
                        .done
                        .push((index, settle(&read.found, plan, &Value::Nil, now)?));
                }
                (Found::Value { payload, .. }, Plan::Restore { .. }) => {
                    result.uncertain.push((index, payload.clone()));
                    result.lost.push(index);
                }
                _ => result.lost.push(index),
            }
        }
        return Ok(result);
    };
    let exec = replies.pop().unwrap_or(Value::Nil);
    match exec {
        // A watched key changed: nothing was written.
        Value::Nil => {
            for ((&position, read), plan) in watched.iter().zip(&reads).zip(&plans) {
                let index = round.group[position];
                if matches!(read.found, Found::Failed(_)) {
                    result
                        .done
                        .push((index, settle(&read.found, plan, &Value::Nil, now)?));
                } else {
                    result.changed.push(index);
                }
            }
        }
        Value::Array(mut executed) => {
            let mut executed = executed.drain(..);
            for (((&position, read), plan), &count) in
                watched.iter().zip(&reads).zip(&plans).zip(&queued)
            {
                let index = round.group[position];
                let reply = if count == 1 {
                    executed.next().unwrap_or(Value::Nil)
                } else {
                    Value::Nil
                };
                let written = settle(&read.found, plan, &reply, now)?;
                if matches!(plan, Plan::Restore { .. }) && written.outcome == Outcome::Restored {
                    result.created.push(index);
                }
                result.done.push((index, written));
            }
        }
        // EXECABORT: a command was refused while queuing (an ACL on one
        // key, out of memory...). The refused keys failed; the others were
        // not written and go again.
        Value::ServerError(_) => {
            let mut queue_replies = replies.into_iter().skip(1);
            for (((&position, read), plan), &count) in
                watched.iter().zip(&reads).zip(&plans).zip(&queued)
            {
                let index = round.group[position];
                let reply = if count == 1 {
                    queue_replies.next().unwrap_or(Value::Nil)
                } else {
                    Value::Nil
                };
                match &reply {
                    Value::ServerError(error) => match classify(error) {
                        ErrorClass::Fatal(reason) => bail!("{reason}"),
                        _ => result
                            .done
                            .push((index, Written::failed(error_text(error)))),
                    },
                    _ if count == 0 => result
                        .done
                        .push((index, settle(&read.found, plan, &Value::Nil, now)?)),
                    _ => result.again.push(index),
                }
            }
        }
        other => bail!("EXEC returned {other:?}"),
    }
    Ok(result)
}

/// Sends the WATCH of a target round: one command for the group, or one
/// per key; with `skip`, followed by an EXISTS per key and a DUMP per key a
/// lost transaction may have written.
fn watch(
    target: &mut Side,
    round: &Round<'_>,
    address: &str,
    skip: bool,
    per_key: bool,
) -> Result<Vec<Value>> {
    let mut pipe = CommandBuffer::new();
    if per_key {
        for &index in round.group {
            pipe.cmd("WATCH").arg(&round.keys[index]);
        }
    } else {
        let mut command = pipe.cmd("WATCH");
        for &index in round.group {
            command.arg(&round.keys[index]);
        }
    }
    if skip {
        for &index in round.group {
            pipe.cmd("EXISTS").arg(&round.keys[index]);
        }
        for &index in round.group {
            if round.uncertain[index].is_some() {
                pipe.cmd("DUMP").arg(&round.keys[index]);
            }
        }
    }
    Ok(single(target.run_pipelines(
        round.target_db,
        vec![(address.to_string(), pipe)],
    )?))
}

/// Copies the round's keys under the source fence (or none, for `Off`).
pub fn source_round(
    source: &mut Side,
    target: &mut Side,
    round: Round<'_>,
    fenced: bool,
) -> Result<RoundResult> {
    let mut result = RoundResult::default();
    let mut before: HashMap<String, u64> = HashMap::new();
    if fenced {
        for address in &round.addresses {
            if !before.contains_key(address) {
                before.insert(address.clone(), source.generation(address)?);
            }
        }
    }
    // 1. WATCH + read each key on the source.
    let keys: Vec<&[u8]> = round
        .group
        .iter()
        .map(|&i| round.keys[i].as_slice())
        .collect();
    let reads = read_keys(
        source,
        round.db,
        &keys,
        round.addresses.clone(),
        round.ttl,
        fenced,
    )?;
    let read_at = Instant::now();
    let mut generations: BTreeMap<String, u64> = BTreeMap::new();
    if fenced {
        for read in &reads {
            if !generations.contains_key(&read.address) {
                generations.insert(read.address.clone(), source.generation(&read.address)?);
            }
        }
    }
    if fenced {
        hold(read_at, round.hold);
    }
    // 2. Write to the target, each key at its node.
    let now = now_ms();
    let plans: Vec<Plan> = round
        .group
        .iter()
        .zip(&reads)
        .map(|(&index, read)| plan(&read.found, round.existing, round.created[index], now))
        .collect();
    let written = write_plain(
        target,
        round.target_db,
        round.keys,
        round.group,
        &reads,
        &plans,
        now,
    )?;
    // 3. Did any key change on the source since its read?
    let mut verdicts: BTreeMap<String, Verdict> = BTreeMap::new();
    for (address, &generation) in &generations {
        let verdict = if before.get(address).is_some_and(|&g| g != generation) {
            Verdict::Lost
        } else {
            check_unchanged(source, round.db, address, generation)?
        };
        verdicts.insert(address.clone(), verdict);
    }
    for (((&index, read), plan), written) in round.group.iter().zip(&reads).zip(&plans).zip(written)
    {
        let settled = matches!(read.found, Found::Failed(_)) || !fenced;
        let verdict = verdicts
            .get(&read.address)
            .copied()
            .unwrap_or(Verdict::Unchanged);
        if matches!(plan, Plan::Restore { .. }) && written.outcome == Outcome::Restored {
            result.created.push(index);
        }
        match verdict {
            _ if settled => result.done.push((index, written)),
            Verdict::Unchanged => result.done.push((index, written)),
            Verdict::Changed => result.changed.push(index),
            Verdict::Lost => result.lost.push(index),
        }
    }
    Ok(result)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Unchanged,
    Changed,
    Lost,
}

/// An empty transaction on the connection that watched some keys: nil
/// when one of them changed since.
fn check_unchanged(source: &mut Side, db: i64, address: &str, generation: u64) -> Result<Verdict> {
    let mut pipe = CommandBuffer::new();
    pipe.cmd("MULTI");
    pipe.cmd("EXEC");
    Ok(match source.send_fenced(address, db, &pipe, generation)? {
        None => Verdict::Lost,
        Some(replies) => match replies.last() {
            Some(Value::Nil) => Verdict::Changed,
            Some(Value::Array(_)) => Verdict::Unchanged,
            other => bail!("the source's EXEC returned {other:?}"),
        },
    })
}

/// Writes without a transaction (source fence, or no fence), each key at
/// the node serving it. With `--existing skip`, a key found on the target
/// after a reconnect resent its RESTORE is checked: if it holds exactly
/// what was sent, this job wrote it (`restored`), not the application.
fn write_plain(
    target: &mut Side,
    db: i64,
    keys: &[Vec<u8>],
    group: &[usize],
    reads: &[Read],
    plans: &[Plan],
    now: i64,
) -> Result<Vec<Written>> {
    let addresses: Vec<String> = group
        .iter()
        .map(|&i| target.address_for_key(&keys[i]))
        .collect();
    let mut before = HashMap::new();
    for address in &addresses {
        if !before.contains_key(address) {
            before.insert(address.clone(), target.generation(address)?);
        }
    }
    let mut written = route_rounds(
        target,
        db,
        addresses.clone(),
        |pipe, item| queue_write(pipe, &keys[group[item]], &reads[item].found, &plans[item]),
        |item, replies| {
            let reply = replies.first().cloned().unwrap_or(Value::Nil);
            match interpret_write(&reads[item].found, &plans[item], &reply, now) {
                Step::Done(written) => Step::Done(written),
                other => other,
            }
        },
    )?;
    for (item, written) in written.iter_mut().enumerate() {
        let resent = before.get(&addresses[item]).is_some_and(|&g| {
            target
                .generation(&addresses[item])
                .is_ok_and(|now| now != g)
        });
        let busy =
            written.outcome == Outcome::Skipped && matches!(plans[item], Plan::Restore { .. });
        if resent
            && busy
            && let Found::Value { payload, .. } = &reads[item].found
            && holds_payload(target, db, &keys[group[item]], payload)?
        {
            written.outcome = Outcome::Restored;
            written.method = Some(crate::outcome::WriteMethod::Restore);
        }
    }
    Ok(written)
}

/// Whether the target's `key` serializes to the same value as `payload`
/// (DUMP bodies compared, without the version and checksum footer).
fn holds_payload(target: &mut Side, db: i64, key: &[u8], payload: &[u8]) -> Result<bool> {
    let address = target.address_for_key(key);
    let connection = target.connection(&address)?;
    connection.select(db);
    let reply = connection.command(redis::cmd("DUMP").arg(key))?;
    Ok(match reply {
        Value::BulkString(dump) => same_value(Some(payload), Some(&dump)),
        _ => false,
    })
}

/// Two DUMP payloads carry the same value (footers aside).
fn same_value(a: Option<&[u8]>, b: Option<&[u8]>) -> bool {
    const FOOTER: usize = 10;
    match (a, b) {
        (Some(a), Some(b)) if a.len() > FOOTER && b.len() > FOOTER => {
            a[..a.len() - FOOTER] == b[..b.len() - FOOTER]
        }
        _ => false,
    }
}

/// The outcome of a key from its reply (or from its plan alone).
fn settle(found: &Found, plan: &Plan, reply: &Value, now: i64) -> Result<Written> {
    match interpret_write(found, plan, reply, now) {
        Step::Done(written) => Ok(written),
        Step::Fatal(reason) => bail!("{reason}"),
        Step::Again(reason) => bail!("the target answered {reason:?} inside a transaction"),
        Step::Redirect { address, .. } => {
            bail!("the target redirected a key to {address} inside a transaction")
        }
    }
}

/// A refusal of one key's WATCH/EXISTS that is about that key (an ACL key
/// pattern): the key fails. A refusal about the whole job stops it.
fn key_refusal(reply: &Value) -> Result<Option<String>> {
    match reply {
        Value::ServerError(error) => match classify(error) {
            ErrorClass::Fatal(reason) => bail!("{reason}"),
            _ => Ok(Some(error_text(error))),
        },
        _ => Ok(None),
    }
}

fn unwatch(target: &mut Side, db: i64, address: &str) -> Result<()> {
    let mut pipe = CommandBuffer::new();
    pipe.cmd("UNWATCH");
    target.run_pipelines(db, vec![(address.to_string(), pipe)])?;
    Ok(())
}

fn single(mut replies: Vec<(String, Vec<Value>)>) -> Vec<Value> {
    replies.pop().map(|(_, r)| r).unwrap_or_default()
}

/// Keeps the round open until `hold` after the read (see the module doc).
fn hold(read_at: Instant, hold: Duration) {
    let elapsed = read_at.elapsed();
    if elapsed < hold {
        std::thread::sleep(hold - elapsed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dump_payloads_compare_without_their_footer() {
        let body = b"\x00\x05hello".to_vec();
        let mut a = body.clone();
        a.extend_from_slice(&[10, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
        let mut b = body;
        b.extend_from_slice(&[11, 0, 9, 9, 9, 9, 9, 9, 9, 9]);
        assert!(same_value(Some(&a), Some(&b)));
        let mut c = b"\x00\x05hellp".to_vec();
        c.extend_from_slice(&[11, 0, 9, 9, 9, 9, 9, 9, 9, 9]);
        assert!(!same_value(Some(&a), Some(&c)));
        assert!(!same_value(None, Some(&a)));
    }
}
