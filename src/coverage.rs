//! Proving the source was covered: which cursors still prove anything.
//!
//! A SCAN cursor is only meaningful on the server process that produced it
//! (Redis hashes keys with a seed chosen at start-up), so a cursor whose
//! server restarted since its scan started — standalone or a cluster node,
//! noticed before a resume or after a pass, even when the connection came
//! back within the reconnect budget — is scanned again from 0.
//!
//! For a cluster, each primary is scanned with its own cursor. SCAN guarantees to return
//! every key that stayed in that node for the whole scan, but a key that
//! moves in from another node (resharding, `redis-cli --cluster reshard`)
//! can land behind the cursor, and the node it left may not have reached
//! it yet. So each cursor records the node's *layout* (slots and config
//! epoch) when its pass starts, and after every pass (and before a resume)
//! [`reconcile`] compares with the cluster as it is now:
//!
//! - a node that gained a slot, or whose config epoch moved (it took slots
//!   over, perhaps giving them back since), is scanned again from 0;
//! - a node that only lost slots keeps its cursor: what it still holds was
//!   there all along;
//! - a restarted node (new run_id: new hash seed, so its cursor means
//!   nothing) is scanned again; a new primary (failover) gets a cursor;
//! - a node that is no longer a primary loses its cursor: its keys are now
//!   on primaries that are scanned.
//!
//! Slots caught mid-migration are waited out first, since their keys are
//! split between two nodes. Passes repeat until a pass ends with nothing
//! moved, so the job only completes once every key provably had its turn.
//! Keys scanned twice are copied twice and counted once.
//!
//! A worker of a sharded job (`--shard`) applies the same rules over its
//! own slots only: it has cursors on the nodes that serve some of them, a
//! node that gained one of *its* slots is scanned again (gaining another
//! worker's slot is no reason), a node left with none of its slots loses
//! its cursor, and only its own slots' migrations are waited out. A node
//! whose config epoch moved is still scanned again: Redis says a node took
//! over slots, not which, and one of this worker's slots may have left it
//! and come back during the scan.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::clock::now_ms;
use crate::cluster::{ClusterNode, NodeLayout};
use crate::journal::{CursorRecord, Journal};
use crate::options::CopyOptions;
use crate::server::ServerInfo;
use crate::shard::SlotSet;
use crate::side::Side;

/// How long to wait for slot migrations in progress to finish, as a
/// multiple of the reconnect budget.
const MIGRATION_WAIT_FACTOR: u32 = 10;

/// Where a primary's keys are scanned: its replica with
/// `--source-replicas`, else the primary itself.
pub fn scan_address(source: &Side, node: &ClusterNode) -> String {
    source
        .replica_address_for(&node.id)
        .unwrap_or_else(|| node.address())
}

/// A fresh cursor (at 0) for every primary of a cluster source (with
/// `--shard`: every primary that serves some of this worker's slots).
pub fn plan(source: &mut Side, options: &CopyOptions) -> Result<Vec<CursorRecord>> {
    let Some(topology) = source.topology().cloned() else {
        return Ok(Vec::new());
    };
    let own = own_slots(options);
    let mut cursors = Vec::new();
    for node in topology.primaries() {
        if !serves_own_slots(node, own.as_ref()) {
            continue;
        }
        let info = scanned_info(source, node)?;
        cursors.push(fresh_cursor(source, node, &info, options)?);
    }
    Ok(cursors)
}

/// This worker's slots; `None` for a job that is not sharded (every slot).
fn own_slots(options: &CopyOptions) -> Option<SlotSet> {
    options
        .shard
        .as_ref()
        .map(crate::shard::ShardSpec::slot_set)
}

fn serves_own_slots(node: &ClusterNode, own: Option<&SlotSet>) -> bool {
    own.is_none_or(|own| own.overlaps(&node.slots))
}

fn fresh_cursor(
    source: &mut Side,
    node: &ClusterNode,
    scanned: &ServerInfo,
    options: &CopyOptions,
) -> Result<CursorRecord> {
    Ok(CursorRecord {
        node: node.id.clone(),
        db: 0,
        target_db: options.target_db(0),
        cursor: 0,
        done: false,
        run_id: Some(scanned.run_id.clone()),
        keys_scanned: 0,
        keys_expected: Some(keys_expected(source, node, scanned, options)?),
        updated_at: now_ms(),
        node_layout: Some(serde_json::to_string(&node.layout())?),
    })
}

/// The keys a node's scan is expected to keep: all of them, or with
/// `--shard` those in this worker's slots (counted per slot).
fn keys_expected(
    source: &mut Side,
    node: &ClusterNode,
    scanned: &ServerInfo,
    options: &CopyOptions,
) -> Result<u64> {
    let Some(own) = own_slots(options) else {
        return Ok(scanned.keyspace.get(&0).copied().unwrap_or(0));
    };
    let on_node = own.intersection(&SlotSet::from_ranges(&node.slots));
    let address = scan_address(source, node);
    crate::shard::keys::count_on_node(source, &address, &on_node)
}

fn scanned_info(source: &mut Side, node: &ClusterNode) -> Result<ServerInfo> {
    let address = scan_address(source, node);
    ServerInfo::read(source.connection(&address)?)
}

/// Brings the journal's cursors in line with the cluster as it is now (see
/// the module doc). Returns one line per node that must be scanned (again),
/// saying why; empty when every key is provably covered.
pub fn reconcile(
    journal: &mut Journal,
    source: &mut Side,
    options: &CopyOptions,
) -> Result<Vec<String>> {
    if !source.is_cluster() {
        return reconcile_standalone(journal, source);
    }
    let own = own_slots(options);
    wait_for_settled_slots(source, own.as_ref())?;
    let topology = source.topology().cloned().expect("checked: cluster");
    let cursors = journal.cursors()?;
    let mut reasons = Vec::new();
    let serving: Vec<&ClusterNode> = topology
        .primaries()
        .into_iter()
        .filter(|node| serves_own_slots(node, own.as_ref()))
        .collect();
    for node in &serving {
        let info = scanned_info(source, node)?;
        let reason = match cursors.iter().find(|c| c.node == node.id) {
            None => {
                journal.plan_cursors(&[fresh_cursor(source, node, &info, options)?])?;
                Some(new_node_reason(node, options))
            }
            Some(cursor) => check_cursor(journal, cursor, node, &info, own.as_ref())?,
        };
        reasons.extend(reason);
    }
    // A node that serves no slot (now a replica, gone, or emptied), or with
    // --shard none of this worker's, holds no key of its own to scan: the
    // keys it had are on nodes that gained their slots, scanned again.
    for cursor in cursors
        .iter()
        .filter(|c| !serving.iter().any(|node| node.id == c.node))
    {
        journal.remove_cursor(&cursor.node, cursor.db)?;
        if !cursor.done {
            reasons.push(left_node_reason(&topology, cursor, options));
        }
    }
    if !reasons.is_empty() {
        journal.set_source_nodes(&serde_json::to_string(&topology.primaries())?)?;
    }
    Ok(reasons)
}

/// One node's cursor against the node as it is now: restarted, or gained
/// (this worker's) slots, and so scanned again; or only noted.
fn check_cursor(
    journal: &mut Journal,
    cursor: &CursorRecord,
    node: &ClusterNode,
    info: &ServerInfo,
    own: Option<&SlotSet>,
) -> Result<Option<String>> {
    let layout_now = node.layout();
    let layout_text = serde_json::to_string(&layout_now)?;
    let layout_then: Option<NodeLayout> = cursor
        .node_layout
        .as_deref()
        .and_then(|t| serde_json::from_str(t).ok());
    let restarted = cursor.run_id.as_deref() != Some(info.run_id.as_str());
    let gained = layout_then
        .as_ref()
        .is_none_or(|then| may_have_gained_own_keys(then, &layout_now, own));
    let started = cursor.cursor != 0 || cursor.done;
    let reason = if restarted && started {
        format!("{} restarted since its scan", node.address())
    } else if gained && started {
        format!("{} took over slots during its scan", node.address())
    } else {
        if layout_then.as_ref() != Some(&layout_now) || restarted {
            // Not started yet, or only lost slots: keep the cursor, note the layout.
            journal.set_cursor_identity(
                &cursor.node,
                cursor.db,
                &info.run_id,
                Some(&layout_text),
            )?;
        }
        return Ok(None);
    };
    journal.restart_cursor(&cursor.node, cursor.db, &info.run_id, Some(&layout_text))?;
    Ok(Some(reason))
}

/// [`NodeLayout::may_have_gained_keys`], over this worker's slots: a slot
/// of another worker moving in is no reason to scan again; an epoch that
/// moved still is (see the module doc).
fn may_have_gained_own_keys(then: &NodeLayout, now: &NodeLayout, own: Option<&SlotSet>) -> bool {
    let Some(own) = own else {
        return then.may_have_gained_keys(now);
    };
    let restrict = |layout: &NodeLayout| NodeLayout {
        slots: own
            .intersection(&SlotSet::from_ranges(&layout.slots))
            .ranges(),
        config_epoch: layout.config_epoch,
    };
    restrict(then).may_have_gained_keys(&restrict(now))
}

fn new_node_reason(node: &ClusterNode, options: &CopyOptions) -> String {
    match &options.shard {
        None => format!(
            "{} ({}) is a new primary",
            node.address(),
            short_id(&node.id)
        ),
        Some(shard) => format!(
            "{} ({}) now serves slots of shard {}",
            node.address(),
            short_id(&node.id),
            shard.label()
        ),
    }
}

fn left_node_reason(
    topology: &crate::cluster::Topology,
    cursor: &CursorRecord,
    options: &CopyOptions,
) -> String {
    let still_primary = topology.primaries().iter().any(|p| p.id == cursor.node);
    match &options.shard {
        Some(shard) if still_primary => format!(
            "node {} no longer serves slots of shard {}; its keys of them are scanned on the nodes that serve them now",
            short_id(&cursor.node),
            shard.label()
        ),
        _ => format!(
            "node {} is no longer a primary; its keys are scanned on the primaries that hold them now",
            short_id(&cursor.node)
        ),
    }
}

/// A standalone source: every database's cursor belongs to the server
/// process (run_id) that was there when its scan started.
fn reconcile_standalone(journal: &mut Journal, source: &mut Side) -> Result<Vec<String>> {
    let address = source.seed_address().to_string();
    let run_id = ServerInfo::read(source.connection(&address)?)?.run_id;
    let mut reasons = Vec::new();
    for cursor in journal.cursors()? {
        if cursor.run_id.as_deref() == Some(run_id.as_str()) {
            continue;
        }
        if cursor.cursor != 0 || cursor.done {
            journal.restart_cursor(&cursor.node, cursor.db, &run_id, None)?;
            reasons.push(format!(
                "the source restarted since db {} was scanned (its run_id changed), so that scan proves nothing: db {} is scanned again from the start",
                cursor.db, cursor.db
            ));
        } else {
            journal.set_cursor_identity(&cursor.node, cursor.db, &run_id, None)?;
        }
    }
    Ok(reasons)
}

/// Waits until no slot (with `--shard`: none of this worker's) is
/// migrating: a migrating slot's keys are split between two nodes and its
/// final owner is not known yet.
fn wait_for_settled_slots(source: &mut Side, own: Option<&SlotSet>) -> Result<()> {
    let limit = source.reconnect_budget() * MIGRATION_WAIT_FACTOR;
    let started = Instant::now();
    let mut told = false;
    loop {
        if source.shutdown().requested() {
            return Ok(());
        }
        source.refresh_topology()?;
        let mut moving = source
            .topology()
            .map(|t| t.moving_slots())
            .unwrap_or_default();
        if let Some(own) = own {
            moving.retain(|slot| own.contains(*slot));
        }
        if moving.is_empty() {
            return Ok(());
        }
        if !told {
            crate::log::info(format!(
                "{} slot(s) of the source cluster are migrating; waiting for the migration to finish before checking coverage",
                moving.len()
            ));
            told = true;
        }
        if started.elapsed() > limit {
            bail!(
                "slots of the source cluster kept migrating for {}s; run `redis-ferry resume` once the resharding has finished",
                limit.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn short_id(id: &str) -> &str {
    &id[..id.len().min(8)]
}
