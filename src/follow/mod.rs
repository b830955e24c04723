//! Following (`run --follow`): after the scan, every change made on the
//! source is copied to the target, until cutover.
//!
//! The subscriptions are made on every source primary *before* the scan
//! starts, so a change made while the scan runs is not missed: changed keys
//! queue up ([`pending`]) and are copied by the same pipeline and the same
//! fenced writes as the scan's (a key changed twice while it waits is
//! copied once, with its last value). A key read after its change is gone
//! from the source (deleted, expired, evicted, renamed or moved away) is
//! deleted on the target.
//!
//! - [`notify`]: `notify-keyspace-events` set for the job, and put back.
//! - [`events`]: a subscription per primary; flushes through tracking.
//! - [`pending`]: the queue of changed keys.
//! - [`gaps`]: when changes may have been missed, and what catches up.
//! - [`session`]: the job's phases: scan with changes applied meanwhile,
//!   then following, catch-up passes after gaps, and the drain at cutover.

pub mod events;
pub mod gaps;
pub mod notify;
pub mod pending;
pub mod session;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::copy::{FENCED_BATCH_KEYS, KeyBatch};
use crate::interrupt::Shutdown;
use crate::options::CopyOptions;
use crate::outcome::KeyResult;
use crate::pipeline::Lister;
use crate::scan::Listed;
use crate::side::Side;
use crate::verify::glob::Glob;

use events::Subscriber;
use gaps::{GapKind, Gaps};
use notify::NotifySetting;
use pending::{KeyScope, Pending};

/// How long the lister waits for a change before it looks at its flags.
const TAKE_WAIT: Duration = Duration::from_millis(100);
/// While following, the lister hands control back this often, so the job
/// can look at the cluster's primaries and the target's identity.
const FOLLOW_ROUND: Duration = Duration::from_secs(5);

/// Where following stands, for `status` (the contract's `follow` object).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowView {
    /// Changed keys waiting to be copied, or being copied.
    pub pending_keys: u64,
    /// How long the oldest of them has waited, in milliseconds.
    pub lag_ms: u64,
    /// Changes copied since the job started following.
    pub changes_applied: u64,
    /// Gaps recorded since the job started.
    pub gaps: u64,
    /// Nothing pending and no catch-up pass running.
    pub in_sync: bool,
}

/// Counters shared by the lister, the journal stage and the job.
#[derive(Default)]
pub struct FollowStats {
    applied: AtomicU64,
    gaps: AtomicU64,
    catching_up: AtomicBool,
    following: AtomicBool,
    next_batch: AtomicU64,
    /// Batches handed to the pipeline and not journaled yet: when the
    /// oldest change in each was made, and how many keys it holds.
    in_flight: Mutex<BTreeMap<u64, (Instant, u64)>>,
}

impl FollowStats {
    fn in_flight(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, (Instant, u64)>> {
        self.in_flight
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The subscriptions, the queue and the counters of a following job.
pub struct Follower {
    pending: Arc<Pending>,
    gaps: Arc<Gaps>,
    stats: Arc<FollowStats>,
    /// Per primary (by node id, or `standalone`).
    subscribers: HashMap<String, Subscriber>,
    notify: Vec<NotifySetting>,
    options: CopyOptions,
    shutdown: Shutdown,
    assume_notify: bool,
}

impl Follower {
    /// Sets up notifications and subscribes on every source primary;
    /// returns once every subscription is in place.
    pub fn start(
        source: &mut Side,
        options: &CopyOptions,
        shutdown: &Shutdown,
        gaps_before: u64,
    ) -> Result<Follower> {
        let scope = KeyScope {
            dbs: options.dbs.clone(),
            glob: options.match_pattern.as_deref().map(Glob::new),
        };
        let stats = FollowStats::default();
        stats.gaps.store(gaps_before, Ordering::SeqCst);
        let mut follower = Follower {
            pending: Arc::new(Pending::new(scope)),
            gaps: Arc::new(Gaps::default()),
            stats: Arc::new(stats),
            subscribers: HashMap::new(),
            notify: Vec::new(),
            options: options.clone(),
            shutdown: shutdown.clone(),
            assume_notify: options.notify_configured,
        };
        if let Err(error) = follower.subscribe_new_primaries(source) {
            follower.stop(source);
            return Err(error);
        }
        Ok(follower)
    }

    /// Subscribes to primaries not subscribed yet (all of them at the
    /// start; later, a primary that appeared, whose earlier changes are a
    /// gap). Stops listening to nodes that are no longer primaries.
    /// Returns how many were subscribed.
    pub fn subscribe_new_primaries(&mut self, source: &mut Side) -> Result<usize> {
        let primaries = primaries(source);
        let started = !self.subscribers.is_empty();
        let mut added = 0;
        for (node, address) in &primaries {
            if self.subscribers.contains_key(node) {
                continue;
            }
            let connection = source.connection(address)?;
            self.notify.push(notify::ensure(
                connection,
                self.assume_notify,
                "--follow needs keyspace notifications",
            )?);
            let endpoint = source.endpoint_for(address)?;
            let subscriber = Subscriber::start(
                endpoint,
                address.clone(),
                Arc::clone(&self.pending),
                Arc::clone(&self.gaps),
            )?;
            self.subscribers.insert(node.clone(), subscriber);
            added += 1;
            if started {
                self.record_gap(
                    GapKind::Lost,
                    format!("{address} became a primary of the source and was subscribed only now"),
                );
            }
        }
        let gone: Vec<String> = self
            .subscribers
            .keys()
            .filter(|node| !primaries.iter().any(|(id, _)| id == *node))
            .cloned()
            .collect();
        for node in gone {
            if let Some(subscriber) = self.subscribers.remove(&node) {
                subscriber.stop();
            }
        }
        Ok(added)
    }

    /// Records a gap found by the job itself (not by a reader thread).
    pub fn record_gap(&self, kind: GapKind, reason: String) {
        self.gaps.record(kind, reason);
    }

    /// The gaps waiting for a catch-up (also when the queue overflowed),
    /// counted; empty when none.
    pub fn take_gaps(&self) -> Vec<gaps::Gap> {
        if self.pending.take_overflow() {
            self.gaps.record(
                GapKind::Lost,
                format!(
                    "more than {} changed keys waited at once, so they were dropped",
                    pending::MAX_PENDING
                ),
            );
        }
        let taken = self.gaps.take();
        self.stats
            .gaps
            .fetch_add(taken.len() as u64, Ordering::SeqCst);
        taken
    }

    /// Whether a gap waits for its catch-up.
    pub fn gap_waiting(&self) -> bool {
        self.gaps.any()
    }

    /// Marks a catch-up pass as running (not in sync meanwhile).
    pub fn set_catching_up(&self, running: bool) {
        self.stats.catching_up.store(running, Ordering::SeqCst);
    }

    /// The scan is over: the job follows now.
    pub fn set_following(&self) {
        self.stats.following.store(true, Ordering::SeqCst);
    }

    /// Where following stands now.
    pub fn view(&self) -> FollowView {
        self.probe().view()
    }

    /// A handle that tells where following stands, for another thread.
    pub fn probe(&self) -> FollowProbe {
        FollowProbe {
            pending: Arc::clone(&self.pending),
            gaps: Arc::clone(&self.gaps),
            stats: Arc::clone(&self.stats),
        }
    }

    /// A lister that hands the pipeline batches of changed keys.
    ///
    /// `Alongside(others)`: while other listers work (the scan, a
    /// catch-up), until the last of them is done (`others` counts them).
    /// `Following`: until the operator stops the job (then every waiting
    /// change is copied first: the drain), a gap needs catching up, or a
    /// few seconds passed (the job then looks around and follows again).
    pub fn lister(&self, mode: ListerMode) -> Lister {
        let (pending, stats, gaps) = (
            Arc::clone(&self.pending),
            Arc::clone(&self.stats),
            Arc::clone(&self.gaps),
        );
        let shutdown = self.shutdown.clone();
        let options = self.options.clone();
        Box::new(move |emit: &mut dyn FnMut(Listed) -> bool| {
            let started = Instant::now();
            loop {
                let stopping = shutdown.requested();
                match &mode {
                    ListerMode::Alongside(others) if others.load(Ordering::SeqCst) == 0 => {
                        return Ok(true);
                    }
                    ListerMode::Alongside(_) if stopping => return Ok(false),
                    ListerMode::Following if stopping && pending.is_empty() => {
                        return Ok(true);
                    }
                    ListerMode::Following
                        if !stopping && (gaps.any() || started.elapsed() >= FOLLOW_ROUND) =>
                    {
                        return Ok(true);
                    }
                    _ => {}
                }
                let Some((db, keys, oldest)) = pending.take(FENCED_BATCH_KEYS, TAKE_WAIT) else {
                    continue;
                };
                if !emit(changed_batch(&stats, &options, db, keys, oldest)) {
                    return Ok(false);
                }
            }
        })
    }

    /// Stops every subscription and puts `notify-keyspace-events` back.
    pub fn stop(&mut self, source: &mut Side) {
        for (_, subscriber) in self.subscribers.drain() {
            subscriber.stop();
        }
        for setting in self.notify.drain(..) {
            let restored = source
                .connection(&setting.address)
                .and_then(|connection| notify::restore(connection, &setting));
            if let Err(error) = restored {
                crate::log::warn(format!("{error:#}"));
            }
        }
    }
}

/// Reads where following stands (see [`Follower::probe`]).
#[derive(Clone)]
pub struct FollowProbe {
    pending: Arc<Pending>,
    gaps: Arc<Gaps>,
    stats: Arc<FollowStats>,
}

impl FollowProbe {
    /// Whether the scan is over and the job follows.
    pub fn following(&self) -> bool {
        self.stats.following.load(Ordering::SeqCst)
    }

    pub fn view(&self) -> FollowView {
        let in_flight = self.stats.in_flight();
        let flying: u64 = in_flight.values().map(|(_, keys)| keys).sum();
        let oldest = in_flight
            .values()
            .map(|(seen, _)| *seen)
            .chain(self.pending.oldest())
            .min();
        drop(in_flight);
        let pending_keys = self.pending.len() as u64 + flying;
        let catching_up = self.stats.catching_up.load(Ordering::SeqCst);
        FollowView {
            pending_keys,
            lag_ms: oldest.map_or(0, |seen| seen.elapsed().as_millis() as u64),
            changes_applied: self.stats.applied.load(Ordering::SeqCst),
            gaps: self.stats.gaps.load(Ordering::SeqCst),
            in_sync: pending_keys == 0 && !catching_up && !self.gaps.any() && self.following(),
        }
    }
}

/// When a follow lister stops (see [`Follower::lister`]).
pub enum ListerMode {
    Alongside(Arc<std::sync::atomic::AtomicUsize>),
    Following,
}

/// A batch of changed keys, counted in flight until it is journaled.
fn changed_batch(
    stats: &Arc<FollowStats>,
    options: &CopyOptions,
    db: i64,
    keys: Vec<Vec<u8>>,
    oldest: Instant,
) -> Listed {
    let id = stats.next_batch.fetch_add(1, Ordering::SeqCst);
    stats.in_flight().insert(id, (oldest, keys.len() as u64));
    let stats = Arc::clone(stats);
    Listed {
        batch: KeyBatch {
            db,
            target_db: options.target_db(db),
            keys,
            source_address: None,
            gone_note: None,
            sizes: None,
        },
        checkpoint: None,
        journaled: Some(Box::new(move |results: &[KeyResult]| {
            stats.in_flight().remove(&id);
            stats
                .applied
                .fetch_add(results.len() as u64, Ordering::SeqCst);
        })),
    }
}

/// Every primary of the source, by node id (`standalone` for a server).
fn primaries(source: &Side) -> Vec<(String, String)> {
    match source.topology() {
        None => vec![(
            crate::side::STANDALONE_NODE.to_string(),
            source.seed_address().to_string(),
        )],
        Some(topology) => topology
            .primaries()
            .iter()
            .map(|node| (node.id.clone(), node.address()))
            .collect(),
    }
}
