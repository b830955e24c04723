//! Copying one batch of keys from the source to the target, fenced against
//! the application's own writes (see [`fence`]), with every key ending with
//! an outcome.
//!
//! A [`Copier`] belongs to one pipeline worker and owns its own connections
//! to both sides: a fence lives on a connection, so no two batches may
//! share one. [`Copier::copy`] first asks the source how big each key is
//! (`MEMORY USAGE`): a key above `--big-key-threshold` is copied alone, in
//! chunks ([`crate::rebuild::chunked`]), so neither server is blocked by
//! one huge DUMP or RESTORE. The others are copied as one round; a round in
//! which some key changed is split in halves and run again, so a hot key
//! ends up alone in its round and the others are not held back by it. A
//! key that keeps changing through [`MAX_ROUNDS_PER_KEY`] rounds of its own
//! is `failed` (`retry` copies it later); it is never written unfenced.
//!
//! How a key is written depends on the job (see
//! [`crate::capabilities::restore_plan`]): `RESTORE` of its DUMP payload, or
//! rebuilt with commands of its type where the target cannot load the
//! source's payloads; a payload refused anyway is rebuilt by commands in
//! the next round, so a wrong guess costs a round trip, not a failed key.
//!
//! - [`read`]: DUMP + PTTL (or reads by type) on the source.
//! - [`write`]: RESTORE, rebuild, DEL on the target and what replies mean.
//! - [`fence`]: the rounds, under the target fence or the source fence.
//! - `source_fence`: the source side of a round's fence, by the feed or by
//!   `WATCH`.
//! - [`feed`]: the source fence from keyspace notifications (no `WATCH`).

pub mod feed;
pub mod fence;
pub mod read;
mod source_fence;
pub mod write;

use std::collections::VecDeque;
use std::time::Duration;

use anyhow::{Result, bail};
use redis::Value;

use crate::capabilities::{Capabilities, EvictionClock, PlannedMethod};
use crate::connection::classify;
use crate::options::{Existing, TtlMode};
use crate::outcome::KeyResult;
use crate::rebuild::build::BuildLimits;
use crate::rebuild::chunked::{BigKeyEnds, BigKeyOptions, copy_big_key};
use crate::rebuild::read::SourceReads;
use crate::route::{Step, route_rounds, step_for_error};
use crate::side::Side;

use fence::{FenceKind, Round, RoundResult, source_round, target_round};
use write::{WriteContext, Written};

/// Keys per fenced batch (see `job::batch_keys`).
pub const FENCED_BATCH_KEYS: usize = 128;

/// A key alone in its round that changed this many times is `failed`.
pub const MAX_ROUNDS_PER_KEY: u32 = 10;
/// Rounds of one batch whose fence connection broke, before the batch
/// fails the job (the connection is not coming back).
const MAX_LOST_ROUNDS: u32 = 20;

/// How a job writes.
#[derive(Debug, Clone)]
pub struct CopySettings {
    pub existing: Existing,
    pub ttl: TtlMode,
    /// Fence the writes (the default); off only when nobody writes.
    pub fence: bool,
    /// How long a round stays open after its read (see [`fence`]).
    pub hold: Duration,
    /// RESTORE (with or without the fallback to commands), or commands.
    pub method: PlannedMethod,
    /// Keys whose MEMORY USAGE is above this are copied in chunks.
    pub big_key_threshold: u64,
    /// `--keep-idle`: the source's eviction clock, carried by RESTORE.
    pub keep_idle: Option<EvictionClock>,
    pub source: Capabilities,
    pub target: Capabilities,
    /// The job's label, part of big keys' temporary names.
    pub job_label: String,
    /// How long a big key's servers may stay busy (LOADING, BUSY...).
    pub transient_budget: Duration,
    /// The source's change feed (the source fence without `WATCH`), if
    /// the source gives one.
    pub feed: Option<std::sync::Arc<feed::ChangeFeed>>,
}

/// Keys to copy, all from one source database.
#[derive(Debug, Clone, Default)]
pub struct KeyBatch {
    pub db: i64,
    pub target_db: i64,
    pub keys: Vec<Vec<u8>>,
    /// The source node the keys were listed on (SCAN); `None`: route each
    /// key by its slot.
    pub source_address: Option<String>,
    /// What a key found gone from the source means here, for its journal
    /// row (a `retry` of mismatches: it may only ever have been on the
    /// target).
    pub gone_note: Option<&'static str>,
    /// Each key's `MEMORY USAGE` when it was listed, if known (the lister
    /// asks with its next SCAN): the copy asks for the others itself.
    pub sizes: Option<Vec<Option<u64>>>,
}

/// One worker's connections and settings.
pub struct Copier {
    source: Side,
    target: Side,
    settings: CopySettings,
    kind: FenceKind,
}

/// Where each key of a batch stands while it is copied.
struct Keys {
    outcomes: Vec<Option<Written>>,
    rounds_alone: Vec<u32>,
    created: Vec<bool>,
    uncertain: Vec<Option<Vec<u8>>>,
    by_commands: Vec<bool>,
    watch_on_source: Vec<bool>,
}

impl Copier {
    /// A copier on its own connections (`fork`s of the job's sides).
    pub fn new(source: &Side, target: &Side, settings: CopySettings) -> Copier {
        let kind = match (settings.fence, target.is_cluster()) {
            (false, _) => FenceKind::Off,
            (true, false) => FenceKind::Target,
            (true, true) => FenceKind::Source,
        };
        Copier {
            source: source.fork(),
            target: target.fork(),
            settings,
            kind,
        }
    }

    pub fn fence_kind(&self) -> FenceKind {
        self.kind
    }

    /// The target side of this copier (to notice restarts).
    pub fn target(&self) -> &Side {
        &self.target
    }

    /// Copies every key of `batch` and returns one result per key, in the
    /// batch's order. An error is about the job (a server that is gone,
    /// out of memory, read-only): nothing of the batch is journaled.
    pub fn copy(&mut self, batch: KeyBatch) -> Result<Vec<KeyResult>> {
        let count = batch.keys.len();
        let mut keys = Keys {
            outcomes: vec![None; count],
            rounds_alone: vec![0; count],
            created: vec![false; count],
            uncertain: vec![None; count],
            by_commands: vec![self.settings.method == PlannedMethod::Commands; count],
            watch_on_source: vec![false; count],
        };
        let big = self.big_keys(&batch)?;
        for (index, &is_big) in big.iter().enumerate() {
            if is_big {
                keys.outcomes[index] = Some(self.copy_big(&batch, index)?);
            }
        }
        let small: Vec<usize> = (0..count).filter(|&index| !big[index]).collect();
        let mut queue: VecDeque<Vec<usize>> = VecDeque::new();
        if !small.is_empty() {
            queue.push_back(small);
        }
        let mut lost_rounds = 0;
        while let Some(group) = queue.pop_front() {
            let result = self.round(&batch, &group, &keys)?;
            lost_rounds += u32::from(!result.lost.is_empty());
            if lost_rounds > MAX_LOST_ROUNDS {
                bail!(
                    "the connection kept breaking in the middle of fenced writes ({lost_rounds} times in one batch)"
                );
            }
            file_round(&mut keys, &mut queue, &group, result);
        }
        if let Some(note) = batch.gone_note {
            for written in keys.outcomes.iter_mut().flatten() {
                if written.outcome == crate::outcome::Outcome::Expired {
                    written.error = Some(note.to_string());
                }
            }
        }
        batch
            .keys
            .into_iter()
            .zip(keys.outcomes)
            .map(|(key, outcome)| match outcome {
                Some(written) => Ok(written.into_result(key)),
                None => bail!("a key was left without an outcome"),
            })
            .collect()
    }

    /// Which keys are above the big-key threshold (`MEMORY USAGE`, which
    /// samples a few elements: cheap even for a huge key).
    fn big_keys(&mut self, batch: &KeyBatch) -> Result<Vec<bool>> {
        let threshold = self.settings.big_key_threshold;
        let known: Vec<Option<u64>> = match &batch.sizes {
            Some(sizes) => sizes.clone(),
            None => vec![None; batch.keys.len()],
        };
        let unknown: Vec<usize> = (0..known.len()).filter(|&i| known[i].is_none()).collect();
        let addresses = self.source_addresses(batch, &unknown);
        let asked = route_rounds(
            &mut self.source,
            batch.db,
            addresses,
            |pipe, item| {
                pipe.cmd("MEMORY")
                    .arg("USAGE")
                    .arg(&batch.keys[unknown[item]]);
                1
            },
            |_, replies| match replies.first() {
                Some(Value::Int(bytes)) => Step::Done(*bytes as u64 > threshold),
                // A key read later fails for the same reason (an ACL) or is
                // gone: not big.
                Some(Value::ServerError(error)) => step_for_error(classify(error), || false),
                _ => Step::Done(false),
            },
        )?;
        let mut big: Vec<bool> = known
            .iter()
            .map(|size| size.is_some_and(|s| s > threshold))
            .collect();
        for (item, is_big) in asked.into_iter().enumerate() {
            big[unknown[item]] = is_big;
        }
        Ok(big)
    }

    /// Copies one big key in chunks, on this copier's connections.
    fn copy_big(&mut self, batch: &KeyBatch, index: usize) -> Result<Written> {
        let key = &batch.keys[index];
        let source_address = self.source_addresses(batch, &[index]).remove(0);
        let target_address = self.target.address_for_key(key);
        let options = BigKeyOptions {
            existing: self.settings.existing,
            ttl_mode: self.settings.ttl,
            transient_budget: self.settings.transient_budget,
            ..BigKeyOptions::new(self.settings.job_label.clone())
        };
        let (source_caps, target_caps) = (&self.settings.source, &self.settings.target);
        let mut ends = BigKeyEnds {
            source: self.source.connection(&source_address)?,
            source_caps,
            source_db: batch.db,
            target: self.target.connection(&target_address)?,
            target_caps,
            target_db: batch.target_db,
        };
        let copied = copy_big_key(&mut ends, key, &options)?;
        let result = copied.result;
        Ok(Written {
            outcome: result.outcome,
            ttl_ms: result.ttl_ms,
            size_bytes: result.size_bytes,
            error: result.error,
            method: result.method,
            rebuild_instead: false,
        })
    }

    fn source_addresses(&self, batch: &KeyBatch, indices: &[usize]) -> Vec<String> {
        indices
            .iter()
            .map(|&index| match &batch.source_address {
                Some(address) => address.clone(),
                None => self.source.address_for_key(&batch.keys[index]),
            })
            .collect()
    }

    fn round(&mut self, batch: &KeyBatch, group: &[usize], keys: &Keys) -> Result<RoundResult> {
        let settings = &self.settings;
        let addresses = self.source_addresses(batch, group);
        let round = Round {
            db: batch.db,
            target_db: batch.target_db,
            ttl: settings.ttl,
            hold: settings.hold,
            write: WriteContext {
                existing: settings.existing,
                target: &settings.target,
                limits: BuildLimits::default(),
                clock: settings.keep_idle,
                rebuild_refused: matches!(
                    settings.method,
                    PlannedMethod::Restore {
                        fall_back_to_commands: true
                    }
                ),
            },
            source_reads: SourceReads::new(&settings.source, settings.ttl),
            keys: &batch.keys,
            group,
            addresses,
            by_commands: &keys.by_commands,
            created: &keys.created,
            uncertain: &keys.uncertain,
            feed: settings.feed.as_deref(),
            watch_on_source: &keys.watch_on_source,
        };
        match self.kind {
            FenceKind::Target => target_round(&mut self.source, &mut self.target, round),
            FenceKind::Source => source_round(&mut self.source, &mut self.target, round, true),
            FenceKind::Off => source_round(&mut self.source, &mut self.target, round, false),
        }
    }
}

/// Records what a round settled and queues what goes again.
fn file_round(
    keys: &mut Keys,
    queue: &mut VecDeque<Vec<usize>>,
    group: &[usize],
    result: RoundResult,
) {
    for index in &result.created {
        keys.created[*index] = true;
    }
    for (index, payload) in result.uncertain {
        keys.uncertain[index] = Some(payload);
    }
    for (index, written) in result.done {
        keys.uncertain[index] = None;
        keys.outcomes[index] = Some(written);
    }
    if !result.rebuild.is_empty() {
        for &index in &result.rebuild {
            keys.by_commands[index] = true;
        }
        queue.push_front(result.rebuild);
    }
    if !result.lost.is_empty() {
        queue.push_front(result.lost);
    }
    if !result.unheard.is_empty() {
        for &index in &result.unheard {
            keys.watch_on_source[index] = true;
        }
        queue.push_front(result.unheard);
    }
    if !result.again.is_empty() {
        queue.push_front(result.again);
    }
    split_into(queue, result.split);
    let changed = result.changed;
    if changed.len() > 1 || (changed.len() == 1 && group.len() > 1) {
        split_into(queue, changed);
    } else if let [index] = changed[..] {
        keys.rounds_alone[index] += 1;
        if keys.rounds_alone[index] >= MAX_ROUNDS_PER_KEY {
            keys.outcomes[index] = Some(Written::failed(format!(
                "the key kept changing while it was copied ({MAX_ROUNDS_PER_KEY} rounds); `retry` copies it again"
            )));
        } else {
            // Behind the rest: time for the application to let go.
            queue.push_back(vec![index]);
        }
    }
}

/// Queues `keys` again as two halves (first), or as one key alone.
fn split_into(queue: &mut VecDeque<Vec<usize>>, mut keys: Vec<usize>) {
    match keys.len() {
        0 => {}
        1 => queue.push_front(keys),
        n => {
            let second = keys.split_off(n / 2);
            queue.push_front(second);
            queue.push_front(keys);
        }
    }
}
