//! The change feed: the source fence without `WATCH` on the source.
//!
//! The source fence must know whether a key changed on the source between
//! redis-ferry's read and the moment its write was acknowledged by the
//! target. `WATCH` answers that, but on a big source it gets dear: keys
//! arrive in SCAN order, which walks the hash table's buckets in
//! reverse-binary order, so the keys watched at once share the low bits of
//! their hash; the server's table of watched keys hashes them with the same
//! function and seed, chains them into a few buckets and walks those chains
//! on every WATCH and unwatch. Measured: 3 us per key at 400,000 keys,
//! 7.5 us at 2,000,000, a third of the copy's speed at 10,000,000.
//!
//! The feed answers the same question from keyspace notifications instead:
//! one subscription per source node (`__keyevent@*__:*`, which carries
//! every change of every class in `A`: writes, deletes, expirations,
//! evictions), held by a thread that marks each changed key that a round
//! has in flight. A round:
//!
//! 1. registers its keys *before* reading them: a change executed after the
//!    read is then necessarily received after the registration;
//! 2. once the target acknowledged its writes, publishes a marker on each
//!    node it read from, on a channel only that node's subscriber listens
//!    to, and waits for the subscriber to receive it: notifications arrive
//!    in the order the server executed the commands, so every change made
//!    before the marker has been seen by then;
//! 3. a key marked in between changed since its read: copied again.
//!
//! Flushes send no keyevent: the subscription sees them through client
//! tracking (see [`crate::follow::events`]), and a flush marks every key in
//! flight. A node without tracking (Redis 5), without the notifications
//! (CONFIG not allowed, no `--notify-configured`) or whose subscription is
//! not up is not covered: rounds reading there use `WATCH`. A subscription
//! that broke between a round's registration and its marker, a marker that
//! reached no subscriber, or a `notify-keyspace-events` found changed at
//! the marker: the round's keys there are redone (as a lost connection).
//!
//! What notifications do not carry and `WATCH` did: `SWAPDB` on the source
//! during the copy (README: do not).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::Thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use redis::Value;

use crate::follow::notify;
use crate::side::Side;
use crate::wire::CommandBuffer;

mod subscription;

use subscription::NodeFeed;

/// How long a round waits for its marker before the feed gives up on it
/// (the keys go again under `WATCH`): a subscription that is up but no
/// longer delivers must slow the copy down for seconds, not stall it.
const MARKER_WAIT: Duration = Duration::from_secs(10);
/// A waiting worker looks at its round at least this often.
const PARK_TICK: Duration = Duration::from_millis(50);
/// How long a node whose subscription could not be made is left to the
/// `WATCH` fence before it is tried again.
const RETRY_NODE_AFTER: Duration = Duration::from_secs(30);

/// The source's change feed of one job: shared by every copy worker.
pub struct ChangeFeed {
    shared: Arc<Shared>,
    /// Per source node address.
    nodes: Mutex<HashMap<String, NodeEntry>>,
    /// The job's markers go to `<prefix><node address>`.
    channel_prefix: String,
    assume_configured: bool,
    next_round: AtomicU64,
}

impl std::fmt::Debug for ChangeFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeFeed")
            .field("channel_prefix", &self.channel_prefix)
            .finish_non_exhaustive()
    }
}

enum NodeEntry {
    Running(Box<NodeFeed>),
    /// Could not be covered; `WATCH` serves it until `retry_at`.
    Uncovered {
        retry_at: Instant,
    },
}

/// What the subscription threads and the rounds share.
#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    hasher: std::collections::hash_map::RandomState,
}

/// A key and its database, hashed: two keys that share a hash only make a
/// round redo a key that did not change.
type KeyHash = u64;

/// One subscription to a node: its number (counts every time one is made)
/// and the client id of the connection that keeps flush tracking on (the
/// feed subscribes only where there is one).
type Subscription = crate::keyspace::Session;

#[derive(Default)]
struct State {
    /// Per node: the subscription that is up (`None` while it is down).
    up: HashMap<String, Option<Subscription>>,
    /// The rounds in flight (few: one per copy worker at most). Each
    /// change is looked up in each of them, so that registering and
    /// ending a round are one insertion and one removal under the lock.
    rounds: HashMap<u64, RoundState>,
}

/// A set of key hashes (already hashed: no need to hash them again).
type HashSet64 = HashSet<KeyHash, BuildHasherDefault<AlreadyHashed>>;

struct RoundState {
    keys: HashSet64,
    /// Keys that changed since registration.
    changed: HashSet64,
    /// A database of a node it reads from was flushed: all changed.
    flushed: bool,
    /// Node address -> the subscription that received its marker.
    markers: HashMap<String, Subscription>,
    /// The worker waiting for a marker (woken alone: with a condition
    /// variable every marker would wake every worker).
    waiter: Option<Thread>,
}

/// The hasher of [`HashSet64`]: a key hash is its own hash.
#[derive(Default)]
struct AlreadyHashed(u64);

impl Hasher for AlreadyHashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

/// A round's registration with the feed; unregisters when dropped.
pub struct FeedRound<'f> {
    feed: &'f ChangeFeed,
    id: u64,
    db: i64,
    /// Node address -> the subscription that was up at registration.
    covered: BTreeMap<String, Subscription>,
    keys: Vec<KeyHash>,
}

/// Whether a key read at a node changed since (per position).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedVerdict {
    Unchanged,
    Changed,
    /// The feed cannot vouch for this node (its subscription broke, its
    /// marker did not come back): copy the key again under `WATCH`.
    Unvouched,
}

impl ChangeFeed {
    /// A feed for the job, with a subscription on each node in
    /// `addresses`, or `None` (logged) when the source cannot give one: the
    /// fence then uses `WATCH`.
    pub fn start(
        source: &mut Side,
        addresses: &[String],
        assume_configured: bool,
    ) -> Option<Arc<ChangeFeed>> {
        let feed = ChangeFeed {
            shared: Arc::default(),
            nodes: Mutex::new(HashMap::new()),
            channel_prefix: format!(
                "redis-ferry:fence:{}:{}:",
                std::process::id(),
                crate::clock::now_ms()
            ),
            assume_configured,
            next_round: AtomicU64::new(1),
        };
        for address in addresses {
            let entry = match feed.start_node(source, address) {
                Ok(node) => NodeEntry::Running(Box::new(node)),
                Err(NotStarted::Refused(error)) => {
                    crate::log::info(format!(
                        "the source fence uses WATCH, which costs the source more the bigger it is: {error:#}"
                    ));
                    return None;
                }
                // The source gives what the feed needs; its subscription
                // broke while starting (a killed client, a proxy): the
                // node is tried again, as one that breaks later is.
                Err(NotStarted::Interrupted(error)) => {
                    crate::log::warn(format!(
                        "source {address} is fenced with WATCH for now: {error:#}"
                    ));
                    uncovered()
                }
            };
            feed.lock_nodes().insert(address.clone(), entry);
        }
        crate::log::info(
            "the source fence follows the source's keyspace notifications (no WATCH on the source)",
        );
        Some(Arc::new(feed))
    }

    /// Registers a round's keys before they are read at `addresses` (one per
    /// key). `None`: a node is not covered, the round uses `WATCH`.
    pub fn register(
        &self,
        source: &mut Side,
        db: i64,
        keys: &[&[u8]],
        addresses: &[&str],
    ) -> Option<FeedRound<'_>> {
        let mut covered = BTreeMap::new();
        for &address in addresses {
            if covered.contains_key(address) {
                continue;
            }
            covered.insert(address.to_string(), self.coverage(source, address)?);
        }
        let id = self.next_round.fetch_add(1, Ordering::Relaxed);
        let keys: Vec<KeyHash> = keys.iter().map(|key| self.shared.hash(db, key)).collect();
        let round = RoundState {
            keys: keys.iter().copied().collect(),
            changed: HashSet64::default(),
            flushed: false,
            markers: HashMap::new(),
            waiter: None,
        };
        self.shared.lock().rounds.insert(id, round);
        Some(FeedRound {
            feed: self,
            id,
            db,
            covered,
            keys,
        })
    }

    /// The subscription covering `address` now, starting one if needed
    /// (under the nodes' lock: two workers never start the same node).
    fn coverage(&self, source: &mut Side, address: &str) -> Option<Subscription> {
        let mut nodes = self.lock_nodes();
        let start = match nodes.get(address) {
            Some(NodeEntry::Running(_)) => false,
            Some(NodeEntry::Uncovered { retry_at }) => Instant::now() >= *retry_at,
            None => true,
        };
        if start {
            match self.start_node(source, address) {
                Ok(feed) => {
                    nodes.insert(address.to_string(), NodeEntry::Running(Box::new(feed)));
                }
                Err(NotStarted::Refused(error) | NotStarted::Interrupted(error)) => {
                    crate::log::warn(format!(
                        "source {address} is fenced with WATCH for now: {error:#}"
                    ));
                    nodes.insert(address.to_string(), uncovered());
                }
            }
        }
        if !matches!(nodes.get(address), Some(NodeEntry::Running(_))) {
            return None;
        }
        drop(nodes);
        self.shared.lock().up.get(address).copied().flatten()
    }

    /// Leaves `address` to the `WATCH` fence for a while, after its
    /// `notify-keyspace-events` was changed behind the job's back: that
    /// change is someone's, and stays.
    fn uncover(&self, address: &str) {
        let old = self.lock_nodes().insert(address.to_string(), uncovered());
        if let Some(NodeEntry::Running(mut feed)) = old {
            feed.setting.changed = false;
            feed.stop();
        }
    }

    /// Makes `address` publish what the feed needs and subscribes to it;
    /// returns once the subscription is up.
    fn start_node(&self, source: &mut Side, address: &str) -> Result<NodeFeed, NotStarted> {
        let endpoint = source.endpoint_for(address).map_err(NotStarted::Refused)?;
        let connection = source
            .connection(address)
            .map_err(NotStarted::Interrupted)?;
        // What each round's marker sends must be allowed: `CLIENT LIST ID`
        // (Redis 6.2 or later; it checks that flush tracking still holds)
        // and a PUBLISH on the job's channel (an ACL may forbid channels).
        connection
            .command(redis::cmd("CLIENT").arg("LIST").arg("ID").arg(1))
            .with_context(|| {
                format!("source {address} refused CLIENT LIST ID (Redis 6.2 or later has it)")
            })
            .map_err(NotStarted::Refused)?;
        connection
            .command(
                redis::cmd("PUBLISH")
                    .arg(self.channel(address))
                    .arg("probe"),
            )
            .with_context(|| {
                format!("source {address} refused a PUBLISH (its ACL may not allow channels)")
            })
            .map_err(NotStarted::Refused)?;
        let setting = notify::ensure(
            connection,
            self.assume_configured,
            "the source fence without WATCH needs keyspace notifications",
        )
        .map_err(NotStarted::Refused)?;
        NodeFeed::start(
            endpoint,
            address.to_string(),
            setting.clone(),
            self.channel(address),
            Arc::clone(&self.shared),
        )
        .map_err(|error| {
            // Nothing subscribed: put the setting back now.
            if let Ok(connection) = source.connection(address) {
                let _ = notify::restore(connection, &setting);
            }
            NotStarted::Interrupted(error)
        })
    }

    fn lock_nodes(&self) -> MutexGuard<'_, HashMap<String, NodeEntry>> {
        self.nodes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn channel(&self, address: &str) -> String {
        format!("{}{address}", self.channel_prefix)
    }
}

impl Drop for ChangeFeed {
    /// Ends the subscriptions and puts `notify-keyspace-events` back.
    fn drop(&mut self) {
        let nodes: Vec<NodeEntry> = self.lock_nodes().drain().map(|(_, n)| n).collect();
        for node in nodes {
            if let NodeEntry::Running(feed) = node {
                feed.stop();
            }
        }
    }
}

impl FeedRound<'_> {
    /// After the target acknowledged the round's writes: per read (its
    /// position and the node that answered it), did its key change on the
    /// source since it was read?
    pub fn verdicts(&self, source: &mut Side, addresses: &[&str]) -> Vec<FeedVerdict> {
        let nodes: HashSet<&str> = addresses.iter().copied().collect();
        let mut vouched: HashMap<&str, bool> = HashMap::new();
        for address in nodes {
            let published = self.covered.contains_key(address)
                && self
                    .publish_marker(source, address)
                    .unwrap_or_else(|error| {
                        crate::log::warn(format!("{error:#}"));
                        self.feed.uncover(address);
                        false
                    });
            vouched.insert(address, published);
        }
        for (address, vouched) in vouched.iter_mut() {
            *vouched = *vouched && self.wait_for_marker(address);
        }
        let state = self.feed.shared.lock();
        let round = state.rounds.get(&self.id);
        addresses
            .iter()
            .zip(&self.keys)
            .map(|(address, &key)| {
                let vouched = vouched.get(address).copied().unwrap_or(false);
                verdict_of(round, key, vouched)
            })
            .collect()
    }

    /// Publishes this round's marker on `address`, after checking that the
    /// node still publishes what the feed needs and that the connection
    /// keeping flush tracking on is still there (a connection that is gone
    /// never comes back with the same id). `Ok(false)`: not vouched for
    /// (no subscriber received the marker, or the tracker is gone); `Err`:
    /// the setting changed.
    fn publish_marker(&self, source: &mut Side, address: &str) -> Result<bool> {
        let Some(tracker_id) = self.covered.get(address).and_then(|s| s.tracker_id) else {
            return Ok(false);
        };
        let mut pipe = CommandBuffer::new();
        let check = !self.feed.assume_configured;
        if check {
            pipe.cmd("CONFIG").arg("GET").arg("notify-keyspace-events");
        }
        pipe.cmd("CLIENT").arg("LIST").arg("ID").arg(tracker_id);
        pipe.cmd("PUBLISH")
            .arg(self.feed.channel(address))
            .arg(self.id.to_string());
        let mut replies =
            single(source.run_pipelines(self.db, vec![(address.to_string(), pipe)])?).into_iter();
        if check {
            let reply = replies.next().unwrap_or(Value::Nil);
            let setting = notify::read_config_value(reply)
                .context("the source fence could not read notify-keyspace-events")?;
            if notify::missing(&setting).is_some() {
                bail!(
                    "notify-keyspace-events on source {address} was changed to {setting:?} during the job: the keys in flight there are copied again, and the source fence there uses WATCH for now"
                );
            }
        }
        let tracker_alive = match replies.next() {
            Some(Value::BulkString(text)) => !text.is_empty(),
            Some(Value::VerbatimString { text, .. }) => !text.is_empty(),
            _ => false,
        };
        let received = matches!(replies.next(), Some(Value::Int(n)) if n > 0);
        Ok(tracker_alive && received)
    }

    /// Waits until the subscription that was up at registration received
    /// the marker; `false` if it went down or another took its place.
    fn wait_for_marker(&self, address: &str) -> bool {
        let Some(&subscription) = self.covered.get(address) else {
            return false;
        };
        let deadline = Instant::now() + MARKER_WAIT;
        loop {
            {
                let mut state = self.feed.shared.lock();
                if state.up.get(address).copied().flatten() != Some(subscription) {
                    return false;
                }
                let Some(round) = state.rounds.get_mut(&self.id) else {
                    return false;
                };
                if let Some(&got) = round.markers.get(address) {
                    return got == subscription;
                }
                round.waiter = Some(std::thread::current());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            // Woken by the marker or by the subscription going down; the
            // tick only bounds a wake-up that raced the registration.
            std::thread::park_timeout(left.min(PARK_TICK));
        }
    }
}

impl Drop for FeedRound<'_> {
    fn drop(&mut self) {
        let round = self.feed.shared.lock().rounds.remove(&self.id);
        // Freed outside the lock.
        drop(round);
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn set_up(&self, address: &str, subscription: Option<Subscription>) {
        let waiters: Vec<Thread> = {
            let mut state = self.lock();
            state.up.insert(address.to_string(), subscription);
            state
                .rounds
                .values()
                .filter_map(|round| round.waiter.clone())
                .collect()
        };
        for waiter in waiters {
            waiter.unpark();
        }
    }

    fn hash(&self, db: i64, key: &[u8]) -> KeyHash {
        use std::hash::BuildHasher;
        self.hasher.hash_one((db, key))
    }

    fn key_changed(&self, db: i64, key: &[u8]) {
        let key = self.hash(db, key);
        for round in self.lock().rounds.values_mut() {
            if round.keys.contains(&key) {
                round.changed.insert(key);
            }
        }
    }

    fn flushed(&self) {
        for round in self.lock().rounds.values_mut() {
            round.flushed = true;
        }
    }

    fn marker(&self, address: &str, subscription: Subscription, round: &[u8]) {
        let Some(id) = std::str::from_utf8(round)
            .ok()
            .and_then(|text| text.parse::<u64>().ok())
        else {
            return;
        };
        let waiter = self.lock().rounds.get_mut(&id).and_then(|round| {
            round.markers.insert(address.to_string(), subscription);
            round.waiter.take()
        });
        if let Some(waiter) = waiter {
            waiter.unpark();
        }
    }
}

/// A key's verdict from its round's state, once the marker of the node
/// that answered its read was (`vouched`) or was not seen.
fn verdict_of(round: Option<&RoundState>, key: KeyHash, vouched: bool) -> FeedVerdict {
    match round {
        Some(round) if vouched && (round.flushed || round.changed.contains(&key)) => {
            FeedVerdict::Changed
        }
        Some(_) if vouched => FeedVerdict::Unchanged,
        _ => FeedVerdict::Unvouched,
    }
}

/// Why a node's subscription was not started.
enum NotStarted {
    /// The source refuses what the feed needs (a command, pub/sub
    /// channels, the notification setting): it cannot give a feed.
    Refused(anyhow::Error),
    /// The subscription could not be made just now (a connection broke):
    /// worth trying again.
    Interrupted(anyhow::Error),
}

fn uncovered() -> NodeEntry {
    NodeEntry::Uncovered {
        retry_at: Instant::now() + RETRY_NODE_AFTER,
    }
}

fn single(mut replies: Vec<(String, Vec<Value>)>) -> Vec<Value> {
    replies.pop().map(|(_, r)| r).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_of(shared: &Shared, id: u64, keys: &[&[u8]]) -> Vec<KeyHash> {
        let hashes: Vec<KeyHash> = keys.iter().map(|key| shared.hash(0, key)).collect();
        shared.lock().rounds.insert(
            id,
            RoundState {
                keys: hashes.iter().copied().collect(),
                changed: HashSet64::default(),
                flushed: false,
                markers: HashMap::new(),
                waiter: None,
            },
        );
        hashes
    }

    fn verdicts(shared: &Shared, id: u64, keys: &[KeyHash], vouched: bool) -> Vec<FeedVerdict> {
        let state = shared.lock();
        keys.iter()
            .map(|&key| verdict_of(state.rounds.get(&id), key, vouched))
            .collect()
    }

    #[test]
    fn a_change_marks_its_key_in_every_round_that_holds_it_and_no_other() {
        let shared = Shared::default();
        let first = round_of(&shared, 1, &[b"a", b"b"]);
        let second = round_of(&shared, 2, &[b"b", b"c"]);
        shared.key_changed(0, b"b");
        // The same name in another database is another key.
        shared.key_changed(1, b"a");
        use FeedVerdict::{Changed, Unchanged};
        assert_eq!(verdicts(&shared, 1, &first, true), [Unchanged, Changed]);
        assert_eq!(verdicts(&shared, 2, &second, true), [Changed, Unchanged]);
    }

    #[test]
    fn a_flush_changes_every_key_in_flight() {
        let shared = Shared::default();
        let keys = round_of(&shared, 7, &[b"a", b"b"]);
        shared.flushed();
        assert_eq!(
            verdicts(&shared, 7, &keys, true),
            [FeedVerdict::Changed, FeedVerdict::Changed]
        );
    }

    #[test]
    fn without_its_marker_or_its_round_nothing_is_vouched_for() {
        let shared = Shared::default();
        let keys = round_of(&shared, 3, &[b"a"]);
        assert_eq!(verdicts(&shared, 3, &keys, false), [FeedVerdict::Unvouched]);
        assert_eq!(verdicts(&shared, 4, &keys, true), [FeedVerdict::Unvouched]);
    }

    #[test]
    fn a_marker_is_recorded_with_the_subscription_that_received_it() {
        let shared = Shared::default();
        round_of(&shared, 5, &[b"a"]);
        let subscription = Subscription {
            number: 2,
            tracker_id: Some(40),
        };
        shared.marker("127.0.0.1:7000", subscription, b"5");
        // Another job's marker, or garbage, is ignored.
        shared.marker("127.0.0.1:7000", subscription, b"not a round");
        let state = shared.lock();
        assert_eq!(
            state.rounds[&5].markers.get("127.0.0.1:7000"),
            Some(&subscription)
        );
    }
}
