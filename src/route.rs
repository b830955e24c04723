//! Sending per-key commands to the node that serves each key, and following
//! the cluster when it says the key is elsewhere.
//!
//! [`route_rounds`] groups items by node, sends one pipeline per node (all
//! nodes at once), and asks a caller's `interpret` what each item's replies
//! mean: done, redirected (`MOVED` for good, `ASK` for this once), or to be
//! sent again after a pause (`TRYAGAIN`, `LOADING`, `CLUSTERDOWN`). It is
//! the one place both the copy and `verify` go through, so a cluster whose
//! slots move while a job runs is handled the same way everywhere.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use redis::Value;

use crate::connection::ErrorClass;
use crate::side::Side;
use crate::wire::CommandBuffer;

/// How many times one key may be redirected before the call fails.
const MAX_REDIRECTS: u32 = 16;

/// What one key's replies say to do next, in [`route_rounds`].
#[derive(Debug)]
pub enum Step<T> {
    Done(T),
    /// Send this key's commands again to `address`, each preceded by ASKING
    /// when `ask` is set.
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

/// The step for a server error: redirects and pauses are followed; a key
/// error becomes this key's result (via `key_failure`); the rest stops the
/// job.
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

/// Sends every item to its node, follows redirections, and returns one
/// result per item, in order.
///
/// `queue` appends an item's commands to a pipeline and returns how many
/// it appended; `interpret` turns those replies into a [`Step`].
pub fn route_rounds<T>(
    side: &mut Side,
    db: i64,
    addresses: Vec<String>,
    queue: impl FnMut(&mut CommandBuffer, usize) -> usize,
    interpret: impl FnMut(usize, &mut [Value]) -> Step<T>,
) -> Result<Vec<T>> {
    Ok(route_rounds_at(side, db, addresses, queue, interpret)?
        .into_iter()
        .map(|(result, _)| result)
        .collect())
}

/// Like [`route_rounds`], also returning the address of the node whose
/// replies settled each item (where a `WATCH` among its commands holds).
pub fn route_rounds_at<T>(
    side: &mut Side,
    db: i64,
    addresses: Vec<String>,
    mut queue: impl FnMut(&mut CommandBuffer, usize) -> usize,
    mut interpret: impl FnMut(usize, &mut [Value]) -> Step<T>,
) -> Result<Vec<(T, String)>> {
    let mut results: Vec<Option<(T, String)>> = (0..addresses.len()).map(|_| None).collect();
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
                pipe.set_asking(ask);
                let before = pipe.len();
                queue(&mut pipe, index);
                pipe.set_asking(false);
                layout.push((index, ask, pipe.len() - before));
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
                let step = if ask {
                    // Every other reply is ASKING's own +OK.
                    let mut own: Vec<Value> = slice
                        .iter_mut()
                        .skip(1)
                        .step_by(2)
                        .map(|reply| std::mem::replace(reply, Value::Nil))
                        .collect();
                    interpret(index, &mut own)
                } else {
                    interpret(index, slice)
                };
                match step {
                    Step::Done(result) => results[index] = Some((result, address.clone())),
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
                    Step::Again(reason) => again.push((index, address.clone(), ask, reason)),
                    Step::Fatal(reason) => bail!("{reason}"),
                }
            }
        }
        if topology_moved {
            // Best effort: the redirect itself says where to go.
            let _ = side.refresh_topology();
        }
        if !again.is_empty() {
            if started.elapsed() > side.reconnect_budget() {
                let (_, _, _, reason) = &again[0];
                bail!("{} kept answering {reason:?}; giving up", side.role());
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_secs(1));
            pending.extend(
                again
                    .into_iter()
                    .map(|(index, address, ask, _)| (index, address, ask)),
            );
        }
    }
    Ok(results
        .into_iter()
        .map(|result| result.expect("every item ends Done or the call fails"))
        .collect())
}
