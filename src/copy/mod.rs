//! Copying one batch of keys from the source to the target, fenced against
//! the application's own writes (see [`fence`]), with every key ending with
//! an outcome.
//!
//! A [`Copier`] belongs to one pipeline worker and owns its own connections
//! to both sides: a fence lives on a connection, so no two batches may
//! share one. [`Copier::copy`] runs the batch as one round; a round in which
//! some key changed is split in halves and run again, so a hot key ends up
//! alone in its round and the others are not held back by it. A key that
//! keeps changing through [`MAX_ROUNDS_PER_KEY`] rounds of its own is
//! `failed` (`retry` copies it later); it is never written unfenced.
//!
//! - [`read`]: DUMP + PTTL on the source, at the node serving each key.
//! - [`write`]: RESTORE / DEL on the target and what each reply means.
//! - [`fence`]: the rounds, under the target fence or the source fence.

pub mod fence;
pub mod read;
pub mod write;

use std::collections::VecDeque;
use std::time::Duration;

use anyhow::{Result, bail};

use crate::options::{Existing, TtlMode};
use crate::outcome::KeyResult;
use crate::side::Side;

use fence::{FenceKind, Round, RoundResult, source_round, target_round};
use write::Written;

/// Keys per fenced batch (see `job::batch_keys`).
pub const FENCED_BATCH_KEYS: usize = 64;

/// A key alone in its round that changed this many times is `failed`.
pub const MAX_ROUNDS_PER_KEY: u32 = 10;
/// Rounds of one batch whose fence connection broke, before the batch
/// fails the job (the connection is not coming back).
const MAX_LOST_ROUNDS: u32 = 20;

/// How a job writes.
#[derive(Debug, Clone, Copy)]
pub struct CopySettings {
    pub existing: Existing,
    pub ttl: TtlMode,
    /// Fence the writes (the default); off only when nobody writes.
    pub fence: bool,
    /// How long a round stays open after its read (see [`fence`]).
    pub hold: Duration,
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
}

/// One worker's connections and settings.
pub struct Copier {
    source: Side,
    target: Side,
    settings: CopySettings,
    kind: FenceKind,
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
        let mut outcomes: Vec<Option<Written>> = vec![None; count];
        let mut rounds_alone = vec![0u32; count];
        let mut created = vec![false; count];
        let mut uncertain: Vec<Option<Vec<u8>>> = vec![None; count];
        let mut lost_rounds = 0;
        let mut queue: VecDeque<Vec<usize>> = VecDeque::new();
        if count > 0 {
            queue.push_back((0..count).collect());
        }
        while let Some(group) = queue.pop_front() {
            let result = self.round(&batch, &group, &created, &uncertain)?;
            for index in &result.created {
                created[*index] = true;
            }
            for (index, payload) in result.uncertain {
                uncertain[index] = Some(payload);
            }
            for (index, written) in result.done {
                uncertain[index] = None;
                outcomes[index] = Some(written);
            }
            if !result.lost.is_empty() {
                lost_rounds += 1;
                if lost_rounds > MAX_LOST_ROUNDS {
                    bail!(
                        "the connection kept breaking in the middle of fenced writes ({lost_rounds} times in one batch)"
                    );
                }
                queue.push_front(result.lost);
            }
            if !result.again.is_empty() {
                queue.push_front(result.again);
            }
            split_into(&mut queue, result.split);
            let changed = result.changed;
            if changed.len() > 1 || (changed.len() == 1 && group.len() > 1) {
                split_into(&mut queue, changed);
            } else if let [index] = changed[..] {
                rounds_alone[index] += 1;
                if rounds_alone[index] >= MAX_ROUNDS_PER_KEY {
                    outcomes[index] = Some(Written::failed(format!(
                        "the key kept changing while it was copied ({MAX_ROUNDS_PER_KEY} rounds); `retry` copies it again"
                    )));
                } else {
                    // Behind the rest: time for the application to let go.
                    queue.push_back(vec![index]);
                }
            }
        }
        batch
            .keys
            .into_iter()
            .zip(outcomes)
            .map(|(key, outcome)| match outcome {
                Some(written) => Ok(written.into_result(key)),
                None => bail!("a key was left without an outcome"),
            })
            .collect()
    }

    fn round(
        &mut self,
        batch: &KeyBatch,
        group: &[usize],
        created: &[bool],
        uncertain: &[Option<Vec<u8>>],
    ) -> Result<RoundResult> {
        let addresses = group
            .iter()
            .map(|&index| match &batch.source_address {
                Some(address) => address.clone(),
                None => self.source.address_for_key(&batch.keys[index]),
            })
            .collect();
        let round = Round {
            db: batch.db,
            target_db: batch.target_db,
            existing: self.settings.existing,
            ttl: self.settings.ttl,
            hold: self.settings.hold,
            keys: &batch.keys,
            group,
            addresses,
            created,
            uncertain,
        };
        match self.kind {
            FenceKind::Target => target_round(&mut self.source, &mut self.target, round),
            FenceKind::Source => source_round(&mut self.source, &mut self.target, round, true),
            FenceKind::Off => source_round(&mut self.source, &mut self.target, round, false),
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
