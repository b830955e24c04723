//! Keys by slot: what a worker keeps of a SCAN page, and how many keys a
//! set of slots holds on a server now.
//!
//! A cluster counts a slot's keys in O(1) (`CLUSTER COUNTKEYSINSLOT`), so
//! counting a worker's share of a node is one pipeline of at most 16,384
//! small commands. A standalone server cannot tell which slot a key is in
//! without seeing its name, so there the keys are scanned.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result, bail};
use redis::Value;

use super::SlotSet;
use crate::interrupt::Shutdown;
use crate::scan::parse_scan;
use crate::side::Side;
use crate::wire::CommandBuffer;

/// Splits a SCAN page into the keys of `slots` and the number of keys
/// that belong to other slots (another worker's, the scan overhead).
pub fn keep_own(mut keys: Vec<Vec<u8>>, slots: &SlotSet) -> (Vec<Vec<u8>>, u64) {
    let before = keys.len();
    keys.retain(|key| slots.holds_key(key));
    let foreign = (before - keys.len()) as u64;
    (keys, foreign)
}

/// Keys of `slots` on the cluster node at `address` (db 0), now.
pub fn count_on_node(side: &mut Side, address: &str, slots: &SlotSet) -> Result<u64> {
    let mut pipe = CommandBuffer::new();
    for slot in slots.slots() {
        pipe.cmd("CLUSTER").arg("COUNTKEYSINSLOT").arg(slot);
    }
    if pipe.is_empty() {
        return Ok(0);
    }
    let replies = side
        .run_pipelines(0, vec![(address.to_string(), pipe)])?
        .pop()
        .map(|(_, replies)| replies)
        .unwrap_or_default();
    sum_counts(replies).with_context(|| format!("cannot count the keys per slot on {address}"))
}

/// Keys of `slots` over a whole cluster now, each slot counted on the
/// primary that serves it.
pub fn count_in_cluster(side: &mut Side, slots: &SlotSet) -> Result<u64> {
    let topology = side
        .topology()
        .cloned()
        .context("keys are counted per slot only on a cluster")?;
    let mut total = 0;
    for node in topology.primaries() {
        let on_node = slots.intersection(&SlotSet::from_ranges(&node.slots));
        if !on_node.is_empty() {
            total += count_on_node(side, &node.address(), &on_node)?;
        }
    }
    Ok(total)
}

/// Keys of `slots` in database `db` of a standalone server, found by
/// scanning it (only the key names travel).
pub fn count_by_scanning(
    side: &mut Side,
    db: i64,
    slots: &SlotSet,
    shutdown: &Shutdown,
) -> Result<u64> {
    let address = side.seed_address().to_string();
    let mut cursor = 0u64;
    let mut found = 0u64;
    loop {
        if shutdown.requested() {
            bail!("interrupted while counting the keys of this shard's slots");
        }
        let mut pipe = CommandBuffer::new();
        pipe.cmd("SCAN").arg(cursor).arg("COUNT").arg(1000);
        let reply = side
            .run_pipelines(db, vec![(address.clone(), pipe)])?
            .pop()
            .and_then(|(_, mut replies)| replies.pop())
            .context("no reply to SCAN")?;
        let (keys, next) = parse_scan(reply)?;
        found += keys.iter().filter(|key| slots.holds_key(key)).count() as u64;
        if next == 0 {
            return Ok(found);
        }
        cursor = next;
    }
}

/// Keys of `slots` per database of `dbs` on a server now: per slot on a
/// cluster (db 0), scanned on a standalone server.
pub fn counts_in_slots(
    side: &mut Side,
    dbs: &BTreeSet<i64>,
    slots: &SlotSet,
) -> Result<BTreeMap<i64, u64>> {
    if side.is_cluster() {
        return Ok(BTreeMap::from([(0, count_in_cluster(side, slots)?)]));
    }
    let shutdown = side.shutdown().clone();
    dbs.iter()
        .map(|&db| Ok((db, count_by_scanning(side, db, slots, &shutdown)?)))
        .collect()
}

fn sum_counts(replies: Vec<Value>) -> Result<u64> {
    replies
        .into_iter()
        .map(|reply| match reply {
            Value::Int(keys) => Ok(keys.max(0) as u64),
            Value::ServerError(error) => bail!("{}", crate::connection::error_text(&error)),
            other => bail!("CLUSTER COUNTKEYSINSLOT returned {other:?}"),
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_keeps_only_the_keys_of_its_slots() {
        // foo: slot 12182, bar: 5061; {foo}x shares foo's slot.
        let slots = SlotSet::from_ranges(&[(10923, 16383)]);
        let page = vec![b"foo".to_vec(), b"bar".to_vec(), b"{foo}x".to_vec()];
        let (kept, foreign) = keep_own(page, &slots);
        assert_eq!(kept, vec![b"foo".to_vec(), b"{foo}x".to_vec()]);
        assert_eq!(foreign, 1);
    }
}
