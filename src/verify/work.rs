//! The work one thread does: list keys of some (node, database) places and
//! compare them, handing each batch's verdicts to the collector.
//!
//! A source worker lists source keys and compares each with the target. A
//! target worker (`--extra`) lists target keys and looks for each in the
//! source databases that feed that target database.
//!
//! Keys found different are compared once more after a short pause before
//! the verdict stands: while an application writes to both servers (the
//! dual writes of a live move), a key read between its two writes looks
//! different for a moment and is not worth an operator's attention.

use std::time::Duration;

use anyhow::Result;
use redis::Value;

use super::compare::{CompareSettings, DiffKind, Verdict, compare_keys};
use super::reply::{Dbs, Sides, unreadable_text};
use super::walk::{KeyFilter, Lister};
use crate::connection::{classify, error_text};
use crate::copy::{Step, route_rounds, step_for_error};
use crate::interrupt::Shutdown;
use crate::side::Side;

/// How long to wait before comparing a differing key again.
const RECHECK_DELAY: Duration = Duration::from_millis(100);

/// Which way a batch was checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Source keys compared with the target.
    SourceToTarget,
    /// Target keys looked for on the source (`--extra`).
    TargetOnly,
}

/// One batch of verdicts, for the collector.
#[derive(Debug)]
pub struct Checked {
    pub direction: Direction,
    /// The source database the keys belong to (the journal's `db`).
    pub db: i64,
    pub verdicts: Vec<(Vec<u8>, Verdict)>,
}

/// A (node, database) of the source to compare with the target.
#[derive(Debug, Clone)]
pub struct SourceTask {
    pub address: String,
    pub dbs: Dbs,
    /// A sample of this many keys; `None`: every key.
    pub quota: Option<u64>,
}

/// A (node, database) of the target to look for keys only it has.
#[derive(Debug, Clone)]
pub struct TargetTask {
    pub address: String,
    pub target_db: i64,
    /// The source databases copied into `target_db` (several when
    /// `--db-map` merged databases); a key is extra when none has it.
    pub source_dbs: Vec<i64>,
    pub quota: Option<u64>,
}

/// Everything a worker needs besides its sides and tasks.
pub struct WorkContext<'a> {
    pub filter: &'a KeyFilter,
    pub compare: &'a CompareSettings,
    pub stop: &'a Shutdown,
}

/// Compares every key the tasks list. Returns false when stopped early
/// (Ctrl-C, or nobody listens any more).
pub fn compare_source(
    sides: &mut Sides,
    tasks: &[SourceTask],
    context: &WorkContext<'_>,
    emit: &mut dyn FnMut(Checked) -> bool,
) -> Result<bool> {
    for task in tasks {
        let mut lister = Lister::new(&task.address, task.dbs.source, task.quota);
        while let Some(keys) = lister.next_batch(&mut sides.source, context.filter)? {
            if context.stop.requested() {
                return Ok(false);
            }
            if keys.is_empty() {
                continue;
            }
            let verdicts = compare_with_recheck(sides, task.dbs, keys, context.compare)?;
            let checked = Checked {
                direction: Direction::SourceToTarget,
                db: task.dbs.source,
                verdicts,
            };
            if !emit(checked) {
                return Ok(false);
            }
        }
    }
    Ok(true)
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

/// Looks for every key the tasks list on the source; a key none of the
/// task's source databases holds is `only on target`.
pub fn find_extra(
    sides: &mut Sides,
    tasks: &[TargetTask],
    context: &WorkContext<'_>,
    emit: &mut dyn FnMut(Checked) -> bool,
) -> Result<bool> {
    for task in tasks {
        let mut lister = Lister::new(&task.address, task.target_db, task.quota);
        while let Some(keys) = lister.next_batch(&mut sides.target, context.filter)? {
            if context.stop.requested() {
                return Ok(false);
            }
            if keys.is_empty() {
                continue;
            }
            let verdicts = extra_with_recheck(sides, task, keys)?;
            let checked = Checked {
                direction: Direction::TargetOnly,
                db: task.source_dbs.first().copied().unwrap_or(task.target_db),
                verdicts,
            };
            if !emit(checked) {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

fn extra_with_recheck(
    sides: &mut Sides,
    task: &TargetTask,
    keys: Vec<Vec<u8>>,
) -> Result<Vec<(Vec<u8>, Verdict)>> {
    let mut verdicts = extra_verdicts(sides, task, &keys)?;
    let suspects: Vec<usize> = (0..keys.len())
        .filter(|&i| verdicts[i].is_difference())
        .collect();
    if !suspects.is_empty() {
        std::thread::sleep(RECHECK_DELAY);
        let again: Vec<Vec<u8>> = suspects.iter().map(|&i| keys[i].clone()).collect();
        let second = extra_verdicts(sides, task, &again)?;
        for (i, verdict) in suspects.into_iter().zip(second) {
            verdicts[i] = verdict;
        }
    }
    Ok(keys.into_iter().zip(verdicts).collect())
}

/// For each target key: `Equal` when a source database holds it, `Gone`
/// when the target no longer does, else `only on target`.
fn extra_verdicts(sides: &mut Sides, task: &TargetTask, keys: &[Vec<u8>]) -> Result<Vec<Verdict>> {
    let mut verdicts = vec![None; keys.len()];
    for &db in &task.source_dbs {
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
    let on_target = exists(&mut sides.target, task.target_db, &suspect_keys)?;
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
