//! The work of the threads behind one node: a lister walks the node's keys
//! (SCAN, or RANDOMKEY for a sample) and hands out batches; comparers take
//! them and compare, each with its own connections, so the servers are
//! kept busy while a batch's results are being read.
//!
//! A source place's keys are compared with the target. A target place's
//! keys (`--extra`) are looked for in the source databases that feed that
//! target database.
//!
//! Keys found different are compared once more after a short pause before
//! the verdict stands: while an application writes to both servers (the
//! dual writes of a live move), a key read between its two writes looks
//! different for a moment and is not worth an operator's attention.

use std::sync::Mutex;
use std::sync::mpsc::Receiver;
use std::time::Duration;

use anyhow::Result;
use redis::Value;

use super::compare::{CompareSettings, DiffKind, Verdict, compare_keys};
use super::reply::{Dbs, Sides, unreadable_text};
use super::walk::{KeyFilter, Lister};
use crate::connection::{classify, error_text};
use crate::interrupt::Shutdown;
use crate::rate::RateLimiter;
use crate::route::{Step, route_rounds, step_for_error};
use crate::side::Side;

/// How long to wait before comparing a differing key again.
const RECHECK_DELAY: Duration = Duration::from_millis(100);

/// Comparer threads per node: while one waits for replies, another's
/// commands are being served.
pub const COMPARERS_PER_NODE: usize = 2;

/// Which way a batch is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Direction {
    /// Source keys compared with the target.
    SourceToTarget(Dbs),
    /// Target keys in `target_db` looked for on the source (`--extra`), in
    /// every source database copied into it (several when `--db-map`
    /// merged databases); a key is extra when none has it.
    TargetOnly {
        target_db: i64,
        source_dbs: Vec<i64>,
    },
}

impl Direction {
    /// The source database the keys belong to (the journal's `db`).
    pub fn journal_db(&self) -> i64 {
        match self {
            Direction::SourceToTarget(dbs) => dbs.source,
            Direction::TargetOnly {
                target_db,
                source_dbs,
            } => source_dbs.first().copied().unwrap_or(*target_db),
        }
    }

    pub fn is_source(&self) -> bool {
        matches!(self, Direction::SourceToTarget(_))
    }
}

/// A (node, database) whose keys are listed: all, or a sample.
#[derive(Debug, Clone)]
pub struct Place {
    /// The node, on the side being listed.
    pub address: String,
    pub direction: Direction,
    /// A sample of this many keys; `None`: every key.
    pub quota: Option<u64>,
}

impl Place {
    /// The database listed (on the source or on the target).
    fn db(&self) -> i64 {
        match &self.direction {
            Direction::SourceToTarget(dbs) => dbs.source,
            Direction::TargetOnly { target_db, .. } => *target_db,
        }
    }
}

/// Keys listed, waiting for a comparer.
#[derive(Debug)]
pub struct Batch {
    pub direction: Direction,
    pub keys: Vec<Vec<u8>>,
}

/// One batch of verdicts, for the collector.
#[derive(Debug)]
pub struct Checked {
    pub direction: Direction,
    pub verdicts: Vec<(Vec<u8>, Verdict)>,
}

/// Everything a thread needs besides its sides.
pub struct WorkContext<'a> {
    pub filter: &'a KeyFilter,
    pub compare: &'a CompareSettings,
    pub stop: &'a Shutdown,
    /// `verify --rate`: paces the keys listed, so the comparing follows.
    pub limiter: &'a RateLimiter,
}

/// Lists the keys of `places` (all on the same side, `side`) and hands them
/// out in batches. Returns when done, stopped, or nobody takes batches.
pub fn list(
    side: &mut Side,
    places: &[Place],
    context: &WorkContext<'_>,
    hand_out: &mut dyn FnMut(Batch) -> bool,
) -> Result<()> {
    for place in places {
        let mut lister = Lister::new(&place.address, place.db(), place.quota);
        while let Some(keys) = lister.next_batch(side, context.filter)? {
            if context.stop.requested() {
                return Ok(());
            }
            if keys.is_empty() {
                continue;
            }
            context.limiter.acquire(keys.len());
            let batch = Batch {
                direction: place.direction.clone(),
                keys,
            };
            if !hand_out(batch) {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Takes batches until the lister is done and checks each.
pub fn check(
    sides: &mut Sides,
    batches: &Mutex<Receiver<Batch>>,
    context: &WorkContext<'_>,
    emit: &mut dyn FnMut(Checked) -> bool,
) -> Result<()> {
    loop {
        let next = batches
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .recv();
        let Ok(batch) = next else {
            return Ok(());
        };
        if context.stop.requested() {
            return Ok(());
        }
        let verdicts = match &batch.direction {
            Direction::SourceToTarget(dbs) => {
                compare_with_recheck(sides, *dbs, batch.keys, context.compare)?
            }
            Direction::TargetOnly {
                target_db,
                source_dbs,
            } => extra_with_recheck(sides, *target_db, source_dbs, batch.keys)?,
        };
        let checked = Checked {
            direction: batch.direction,
            verdicts,
        };
        if !emit(checked) {
            return Ok(());
        }
    }
}

fn compare_with_recheck(
    sides: &mut Sides,
    dbs: Dbs,
    keys: Vec<Vec<u8>>,
    settings: &CompareSettings,
) -> Result<Vec<(Vec<u8>, Verdict)>> {
    let mut verdicts = compare_keys(sides, dbs, &keys, settings)?;
    let differing: Vec<usize> = (0..keys.len())
        .filter(|&i| verdicts[i].is_difference())
        .collect();
    if !differing.is_empty() {
        std::thread::sleep(RECHECK_DELAY);
        let again: Vec<Vec<u8>> = differing.iter().map(|&i| keys[i].clone()).collect();
        let second = compare_keys(sides, dbs, &again, settings)?;
        for (i, verdict) in differing.into_iter().zip(second) {
            verdicts[i] = verdict;
        }
    }
    Ok(keys.into_iter().zip(verdicts).collect())
}

fn extra_with_recheck(
    sides: &mut Sides,
    target_db: i64,
    source_dbs: &[i64],
    keys: Vec<Vec<u8>>,
) -> Result<Vec<(Vec<u8>, Verdict)>> {
    let mut verdicts = extra_verdicts(sides, target_db, source_dbs, &keys)?;
    let suspects: Vec<usize> = (0..keys.len())
        .filter(|&i| verdicts[i].is_difference())
        .collect();
    if !suspects.is_empty() {
        std::thread::sleep(RECHECK_DELAY);
        let again: Vec<Vec<u8>> = suspects.iter().map(|&i| keys[i].clone()).collect();
        let second = extra_verdicts(sides, target_db, source_dbs, &again)?;
        for (i, verdict) in suspects.into_iter().zip(second) {
            verdicts[i] = verdict;
        }
    }
    Ok(keys.into_iter().zip(verdicts).collect())
}

/// For each target key: `Equal` when a source database holds it, `Gone`
/// when the target no longer does, else `only on target`.
fn extra_verdicts(
    sides: &mut Sides,
    target_db: i64,
    source_dbs: &[i64],
    keys: &[Vec<u8>],
) -> Result<Vec<Verdict>> {
    let mut verdicts = vec![None; keys.len()];
    for &db in source_dbs {
        for (i, exists) in exists(&mut sides.source, db, keys)?.into_iter().enumerate() {
            match exists {
                Ok(true) => verdicts[i] = Some(Verdict::Equal),
                Err(text) if verdicts[i].is_none() => {
                    verdicts[i] = Some(Verdict::differs(
                        DiffKind::Unreadable,
                        format!("could not compare: {text}"),
                    ));
                }
                _ => {}
            }
        }
    }
    let suspects: Vec<usize> = (0..keys.len()).filter(|&i| verdicts[i].is_none()).collect();
    let suspect_keys: Vec<Vec<u8>> = suspects.iter().map(|&i| keys[i].clone()).collect();
    let on_target = exists(&mut sides.target, target_db, &suspect_keys)?;
    for (i, exists) in suspects.into_iter().zip(on_target) {
        verdicts[i] = Some(match exists {
            Ok(true) => Verdict::differs(
                DiffKind::Extra,
                "only on target: the source has no such key",
            ),
            Ok(false) => Verdict::Gone,
            Err(text) => {
                Verdict::differs(DiffKind::Unreadable, format!("could not compare: {text}"))
            }
        });
    }
    Ok(verdicts
        .into_iter()
        .map(|verdict| verdict.unwrap_or(Verdict::Equal))
        .collect())
}

/// EXISTS of each key, at the node serving it.
fn exists(
    side: &mut Side,
    db: i64,
    keys: &[Vec<u8>],
) -> Result<Vec<std::result::Result<bool, String>>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let role = side.role();
    let addresses = keys.iter().map(|key| side.address_for_key(key)).collect();
    let found = route_rounds(
        side,
        db,
        addresses,
        |pipe, i| {
            pipe.cmd("EXISTS").arg(&keys[i]);
            1
        },
        |_, replies| match replies {
            [Value::Int(n)] => Step::Done(Ok(*n > 0)),
            [Value::ServerError(error)] => {
                step_for_error(classify(error), || Err(error_text(error)))
            }
            other => Step::Fatal(format!("EXISTS returned {other:?}")),
        },
    )?;
    Ok(found
        .into_iter()
        .map(|exists| exists.map_err(|text| unreadable_text(role, &text)))
        .collect())
}
