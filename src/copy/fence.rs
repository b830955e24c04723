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
//!   earlier still, so the read already contains it. But a write that
//!   changes nothing on the target (a `DEL`, `HDEL` or `LPOP` of a key not
//!   copied yet) does not touch the WATCH, while its source half (after the
//!   read) did change the source: so the source fence below runs too, and
//!   such a key is copied again with the newer value right after.
//! - **Source fence** (every round; alone for a cluster target, where one
//!   transaction can only hold keys of one hash slot): once the target
//!   acknowledged the writes, the source says whether any key changed since
//!   its read; such keys are copied again, and since every application
//!   write reaches the source before the target, the final copy of each key
//!   is the newest. A key the application changed in the milliseconds
//!   between redis-ferry's read and write can hold redis-ferry's copy until
//!   its next round, a few milliseconds later. The source answers through
//!   its keyspace notifications ([`super::feed`]: nothing per key on the
//!   source), or, where it cannot give them, through `WATCH key` before
//!   each read and an empty `MULTI`/`EXEC` after (nil: a key changed),
//!   which costs the source more the bigger it is.
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

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use redis::Value;

use crate::clock::now_ms;
use crate::connection::{ErrorClass, classify, error_text};
use crate::options::{Existing, TtlMode};
use crate::outcome::{Outcome, WriteMethod};
use crate::rebuild::read::SourceReads;
use crate::route::{Step, route_rounds};
use crate::side::Side;
use crate::wire::CommandBuffer;

use super::feed::ChangeFeed;
use super::read::{Found, Read, ReadAlso, read_by_commands, read_keys};
use super::source_fence::{SourceFence, Verdict};
use super::write::{
    Plan, WriteContext, Written, interpret_write, plan, plan_known_target, queue_write,
};

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
    /// The target refused their payloads: read them by commands and
    /// rebuild them.
    pub rebuild: Vec<usize>,
    /// Written, but the change feed cannot vouch for them (their type's
    /// changes send no notification, as Redis 8's vector sets, or its
    /// subscription broke meanwhile): copy them again under the `WATCH`
    /// fence, which does not depend on the subscription.
    pub unheard: Vec<usize>,
    /// Keys this round created on the target (`--existing skip` must not
    /// protect them from the next round).
    pub created: Vec<usize>,
    /// Keys a lost transaction may or may not have created, with the
    /// payload it carried.
    pub uncertain: Vec<(usize, Vec<u8>)>,
}

impl RoundResult {
    /// Files a settled key: an outcome, or (a refused payload) a rebuild.
    fn settled(&mut self, index: usize, written: Written) {
        if written.rebuild_instead {
            self.rebuild.push(index);
        } else {
            self.done.push((index, written));
        }
    }
}

/// How the round's keys are read and written.
pub struct Round<'a> {
    pub db: i64,
    pub target_db: i64,
    pub ttl: TtlMode,
    pub hold: Duration,
    pub write: WriteContext<'a>,
    pub source_reads: SourceReads,
    /// The batch's keys (the round copies those in `group`).
    pub keys: &'a [Vec<u8>],
    pub group: &'a [usize],
    /// Where to read each key of the group first.
    pub addresses: Vec<String>,
    /// Per batch index: read by commands (not DUMP).
    pub by_commands: &'a [bool],
    /// Per batch index: this job created the key on the target earlier.
    pub created: &'a [bool],
    /// Per batch index: a lost transaction may have created it with this payload.
    pub uncertain: &'a [Option<Vec<u8>>],
    /// The source's change feed, when it covers the source (else `WATCH`).
    pub feed: Option<&'a ChangeFeed>,
    /// Per batch index: fence it with `WATCH` on the source (the feed does
    /// not hear its changes).
    pub watch_on_source: &'a [bool],
}

impl Round<'_> {
    fn existing(&self) -> Existing {
        self.write.existing
    }
}

/// Reads `positions` of the round (positions in `round.group`): by DUMP,
/// or by commands for the keys that need it. One read per position, in
/// order.
fn read_positions(
    source: &mut Side,
    round: &Round<'_>,
    positions: &[usize],
    watch: bool,
) -> Result<Vec<Read>> {
    let (by_commands, by_dump): (Vec<usize>, Vec<usize>) = positions
        .iter()
        .partition(|&&p| round.by_commands[round.group[p]]);
    let keys = |list: &[usize]| -> Vec<&[u8]> {
        list.iter()
            .map(|&p| round.keys[round.group[p]].as_slice())
            .collect()
    };
    let also = ReadAlso {
        watch,
        clock: round.write.clock,
    };
    let addresses = by_dump
        .iter()
        .map(|&p| round.addresses[p].clone())
        .collect();
    let dumped = read_keys(
        source,
        round.db,
        &keys(&by_dump),
        addresses,
        round.ttl,
        also,
    )?;
    let rebuilt = if by_commands.is_empty() {
        Vec::new()
    } else {
        read_by_commands(
            source,
            round.db,
            &keys(&by_commands),
            round.source_reads,
            watch,
        )?
    };
    let mut by_position: HashMap<usize, Read> = by_dump.into_iter().zip(dumped).collect();
    by_position.extend(by_commands.into_iter().zip(rebuilt));
    Ok(positions
        .iter()
        .map(|p| by_position.remove(p).expect("every position was read"))
        .collect())
}

/// Copies the round's keys under the target fence, with the source fence
/// as well: a write of the application's that changes nothing on the
/// target (a `DEL`, `HDEL` or `LPOP` of a key redis-ferry has not copied
/// yet) does not touch the target's WATCH, but it changed the source after
/// the read, which the source's check sees.
pub fn target_round(source: &mut Side, target: &mut Side, round: Round<'_>) -> Result<RoundResult> {
    let mut result = RoundResult::default();
    let address = target.seed_address().to_string();
    let skip = round.existing() == Existing::Skip;
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
    // 2. Read them on the source (watched there too), now that the target
    // watches them.
    let mut source_fence = SourceFence::begin(source, &round, &watched, true)?;
    let reads = read_positions(source, &round, &watched, source_fence.watches_reads())?;
    let read_at = Instant::now();
    source_fence.after_read(source, &reads)?;
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
            plan(&read.found, &round.write, true, now)
        } else {
            plan_known_target(&read.found, &round.write, on_target[position], now)
        };
        bytes += found_bytes(&read.found);
        plans.push(plan);
    }
    if bytes > MAX_TRANSACTION_BYTES && watched.len() > 1 {
        unwatch(target, round.target_db, &address)?;
        source_fence.end(source, round.db)?;
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
        queued.push(queue_write(
            &mut pipe,
            key,
            &read.found,
            plan,
            &round.write,
            true,
        ));
    }
    let settle_all_known = |result: &mut RoundResult| -> Result<()> {
        for ((&position, read), plan) in watched.iter().zip(&reads).zip(&plans) {
            let written = settle(&read.found, plan, &[], &round.write, true, now)?;
            result.settled(round.group[position], written);
        }
        Ok(())
    };
    if queued.iter().all(|&q| q == 0) {
        unwatch(target, round.target_db, &address)?;
        source_fence.end(source, round.db)?;
        settle_all_known(&mut result)?;
        return Ok(result);
    }
    pipe.cmd("EXEC");
    let sent = target.send_fenced(&address, round.target_db, &pipe, generation)?;
    // 5. Did a key change on the source since its read (also when the
    // target's EXEC did not run: this ends the source's WATCH)?
    let verdicts = source_fence.verdicts(source, round.db, &reads)?;
    let Some(mut replies) = sent else {
        for ((&position, read), plan) in watched.iter().zip(&reads).zip(&plans) {
            let index = round.group[position];
            match (&read.found, plan) {
                (Found::Failed(_), _) | (_, Plan::Known(_)) => {
                    let written = settle(&read.found, plan, &[], &round.write, true, now)?;
                    result.settled(index, written);
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
                    let written = settle(&read.found, plan, &[], &round.write, true, now)?;
                    result.settled(index, written);
                } else {
                    result.changed.push(index);
                }
            }
        }
        Value::Array(executed) => {
            let mut offset = 0;
            let mut half_built = Vec::new();
            for ((((&position, read), plan), &count), &verdict) in watched
                .iter()
                .zip(&reads)
                .zip(&plans)
                .zip(&queued)
                .zip(&verdicts)
            {
                let index = round.group[position];
                let end = (offset + count).min(executed.len());
                let own = &executed[offset..end];
                offset = end;
                let written = settle(&read.found, plan, own, &round.write, true, now)?;
                if matches!(plan, Plan::Restore { .. } | Plan::Rebuild)
                    && written.outcome == Outcome::Restored
                {
                    result.created.push(index);
                }
                if matches!(plan, Plan::Rebuild) && written.outcome == Outcome::Failed {
                    half_built.push(round.keys[index].clone());
                }
                match verdict {
                    _ if matches!(read.found, Found::Failed(_)) => result.settled(index, written),
                    Verdict::Unchanged => result.settled(index, written),
                    // Written, but the source moved on since: again, with
                    // the newer value.
                    Verdict::Changed => result.changed.push(index),
                    Verdict::Lost => result.lost.push(index),
                    Verdict::Unheard => result.unheard.push(index),
                }
            }
            delete(target, round.target_db, &half_built)?;
        }
        // EXECABORT: a command was refused while queuing (an ACL on one
        // key, out of memory...). The refused keys failed; the others were
        // not written and go again.
        Value::ServerError(_) => {
            let queue_replies: Vec<Value> = replies.into_iter().skip(1).collect();
            let mut offset = 0;
            for (((&position, read), plan), &count) in
                watched.iter().zip(&reads).zip(&plans).zip(&queued)
            {
                let index = round.group[position];
                let end = (offset + count).min(queue_replies.len());
                let own = &queue_replies[offset..end];
                offset = end;
                match own
                    .iter()
                    .find(|reply| matches!(reply, Value::ServerError(_)))
                {
                    Some(Value::ServerError(error)) => match classify(error) {
                        ErrorClass::Fatal(reason) => bail!("{reason}"),
                        _ => result
                            .done
                            .push((index, Written::failed(error_text(error)))),
                    },
                    _ if count == 0 => {
                        let written = settle(&read.found, plan, &[], &round.write, true, now)?;
                        result.settled(index, written);
                    }
                    _ => result.again.push(index),
                }
            }
        }
        other => bail!("EXEC returned {other:?}"),
    }
    Ok(result)
}

/// Bytes a key's write carries.
fn found_bytes(found: &Found) -> usize {
    match found {
        Found::Value { payload, .. } => payload.len(),
        Found::Rebuilt { value, .. } => value.byte_size() as usize,
        _ => 0,
    }
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
    // 1. Read each key on the source, fenced there.
    let positions: Vec<usize> = (0..round.group.len()).collect();
    let mut source_fence = SourceFence::begin(source, &round, &positions, fenced)?;
    let reads = read_positions(source, &round, &positions, source_fence.watches_reads())?;
    let read_at = Instant::now();
    if fenced {
        source_fence.after_read(source, &reads)?;
        hold(read_at, round.hold);
    }
    // 2. Write to the target, each key at its node.
    let now = now_ms();
    let plans: Vec<Plan> = round
        .group
        .iter()
        .zip(&reads)
        .map(|(&index, read)| plan(&read.found, &round.write, round.created[index], now))
        .collect();
    let written = write_plain(target, &round, &reads, &plans, now)?;
    // 3. Did any key change on the source since its read?
    let verdicts = source_fence.verdicts(source, round.db, &reads)?;
    let mut half_built = Vec::new();
    for ((((&index, read), plan), written), verdict) in round
        .group
        .iter()
        .zip(&reads)
        .zip(&plans)
        .zip(written)
        .zip(verdicts)
    {
        let settled = matches!(read.found, Found::Failed(_)) || !fenced;
        if matches!(plan, Plan::Restore { .. } | Plan::Rebuild)
            && written.outcome == Outcome::Restored
        {
            result.created.push(index);
        }
        if matches!(plan, Plan::Rebuild) && written.outcome == Outcome::Failed {
            half_built.push(round.keys[index].clone());
        }
        match verdict {
            _ if settled => result.settled(index, written),
            Verdict::Unchanged => result.settled(index, written),
            Verdict::Changed => result.changed.push(index),
            Verdict::Lost => result.lost.push(index),
            Verdict::Unheard => result.unheard.push(index),
        }
    }
    delete(target, round.target_db, &half_built)?;
    Ok(result)
}

/// Writes without a fence transaction (source fence, or no fence), each
/// key at the node serving it (a rebuilt key in a transaction of its own).
/// With `--existing skip`, a key found on the target after a reconnect
/// resent its RESTORE is checked: if it holds exactly what was sent, this
/// job wrote it (`restored`), not the application.
fn write_plain(
    target: &mut Side,
    round: &Round<'_>,
    reads: &[Read],
    plans: &[Plan],
    now: i64,
) -> Result<Vec<Written>> {
    let keys = round.keys;
    let group = round.group;
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
        round.target_db,
        addresses.clone(),
        |pipe, item| {
            queue_write(
                pipe,
                &keys[group[item]],
                &reads[item].found,
                &plans[item],
                &round.write,
                false,
            )
        },
        |item, replies| {
            interpret_write(
                &reads[item].found,
                &plans[item],
                replies,
                &round.write,
                false,
                now,
            )
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
            && holds_payload(target, round.target_db, &keys[group[item]], payload)?
        {
            written.outcome = Outcome::Restored;
            written.method = Some(WriteMethod::Restore);
        }
    }
    Ok(written)
}

/// Deletes keys a failed rebuild left half built (best effort: the key is
/// `failed` and `retry` builds it again).
fn delete(target: &mut Side, db: i64, keys: &[Vec<u8>]) -> Result<()> {
    if keys.is_empty() {
        return Ok(());
    }
    let addresses = keys.iter().map(|key| target.address_for_key(key)).collect();
    route_rounds(
        target,
        db,
        addresses,
        |pipe, item| {
            pipe.cmd("DEL").arg(&keys[item]);
            1
        },
        |_, _| Step::Done(()),
    )?;
    Ok(())
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

/// The outcome of a key from its replies (or from its plan alone).
fn settle(
    found: &Found,
    plan: &Plan,
    replies: &[Value],
    context: &WriteContext<'_>,
    in_transaction: bool,
    now: i64,
) -> Result<Written> {
    match interpret_write(found, plan, replies, context, in_transaction, now) {
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
