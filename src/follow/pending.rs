//! Keys changed on the source and not yet copied again: a queue in the
//! order changes arrived, with each key at most once while it waits (a key
//! written a thousand times before its turn is copied once, with its last
//! value).
//!
//! The queue is bounded: past [`MAX_PENDING`] keys, waiting for them would
//! hold more memory than the job may take, so they are dropped and the
//! follower records a *gap* instead: a catch-up pass compares the servers
//! and copies what differs, which finds them all.

use std::collections::{HashSet, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::verify::glob::Glob;

/// At most this many keys wait (about 40 MB for 40-byte keys).
pub const MAX_PENDING: usize = 500_000;

/// Which changed keys the job copies.
#[derive(Debug, Clone, Default)]
pub struct KeyScope {
    /// Source databases (empty: every database).
    pub dbs: Vec<i64>,
    /// `--match`.
    pub glob: Option<Glob>,
}

impl KeyScope {
    fn wants(&self, db: i64, key: &[u8]) -> bool {
        (self.dbs.is_empty() || self.dbs.contains(&db))
            && self.glob.as_ref().is_none_or(|glob| glob.matches(key))
    }
}

#[derive(Default)]
struct Queue {
    order: VecDeque<(i64, Vec<u8>, Instant)>,
    waiting: HashSet<(i64, Vec<u8>)>,
    /// Keys were dropped since the last [`Pending::take_overflow`].
    overflowed: bool,
}

/// The queue of changed keys, shared by the event readers and the lister.
pub struct Pending {
    scope: KeyScope,
    queue: Mutex<Queue>,
    arrived: Condvar,
}

impl Pending {
    pub fn new(scope: KeyScope) -> Pending {
        Pending {
            scope,
            queue: Mutex::new(Queue::default()),
            arrived: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A key changed (or may have): queue it unless it already waits.
    pub fn push(&self, db: i64, key: Vec<u8>) {
        if !self.scope.wants(db, &key) {
            return;
        }
        let mut queue = self.lock();
        if queue.waiting.contains(&(db, key.clone())) {
            return;
        }
        if queue.order.len() >= MAX_PENDING {
            queue.order.clear();
            queue.waiting.clear();
            queue.overflowed = true;
            return;
        }
        queue.waiting.insert((db, key.clone()));
        queue.order.push_back((db, key, Instant::now()));
        drop(queue);
        self.arrived.notify_one();
    }

    /// Up to `max` waiting keys of one database (the oldest key's), and
    /// when the oldest of them changed; waits up to `wait` for one.
    pub fn take(&self, max: usize, wait: Duration) -> Option<(i64, Vec<Vec<u8>>, Instant)> {
        let mut queue = self.lock();
        if queue.order.is_empty() {
            queue = self
                .arrived
                .wait_timeout(queue, wait)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|poisoned| poisoned.into_inner().0);
        }
        let (db, _, oldest) = queue.order.front().cloned()?;
        let mut keys = Vec::new();
        let mut kept = VecDeque::new();
        while keys.len() < max {
            let Some((key_db, key, seen)) = queue.order.pop_front() else {
                break;
            };
            if key_db == db {
                queue.waiting.remove(&(key_db, key.clone()));
                keys.push(key);
            } else {
                kept.push_back((key_db, key, seen));
            }
        }
        while let Some(entry) = kept.pop_back() {
            queue.order.push_front(entry);
        }
        Some((db, keys, oldest))
    }

    /// Keys waiting now.
    pub fn len(&self) -> usize {
        self.lock().order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// When the oldest waiting key changed.
    pub fn oldest(&self) -> Option<Instant> {
        self.lock().order.front().map(|(_, _, seen)| *seen)
    }

    /// Whether keys were dropped (the queue was full) since the last call.
    pub fn take_overflow(&self) -> bool {
        std::mem::take(&mut self.lock().overflowed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_waits_once_and_batches_keep_one_database() {
        let pending = Pending::new(KeyScope::default());
        pending.push(0, b"a".to_vec());
        pending.push(1, b"x".to_vec());
        pending.push(0, b"a".to_vec());
        pending.push(0, b"b".to_vec());
        assert_eq!(pending.len(), 3);
        let (db, keys, _) = pending.take(10, Duration::ZERO).unwrap();
        assert_eq!((db, keys), (0, vec![b"a".to_vec(), b"b".to_vec()]));
        let (db, keys, _) = pending.take(10, Duration::ZERO).unwrap();
        assert_eq!((db, keys), (1, vec![b"x".to_vec()]));
        assert!(pending.take(10, Duration::ZERO).is_none());
        // Taken, it may be queued again.
        pending.push(0, b"a".to_vec());
        assert_eq!(pending.len(), 1);
    }

    #[test]
    fn keys_outside_the_job_are_not_queued() {
        let pending = Pending::new(KeyScope {
            dbs: vec![2],
            glob: Some(Glob::new("user:*")),
        });
        pending.push(0, b"user:1".to_vec());
        pending.push(2, b"order:1".to_vec());
        pending.push(2, b"user:1".to_vec());
        assert_eq!(pending.len(), 1);
    }

    #[test]
    fn a_full_queue_is_dropped_and_says_so() {
        let pending = Pending::new(KeyScope::default());
        for i in 0..=MAX_PENDING {
            pending.push(0, i.to_be_bytes().to_vec());
        }
        assert!(pending.take_overflow());
        assert!(!pending.take_overflow());
        assert_eq!(pending.len(), 0);
    }
}
