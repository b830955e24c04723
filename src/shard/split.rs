//! The split of the hash slots among N workers, and sets of slots.
//!
//! Worker I of N owns the I-th of N contiguous ranges of the 16,384 slots,
//! cut exactly where `redis-cli --cluster create` cuts them for N primaries
//! (the same single-precision arithmetic and rounding), so that on a
//! cluster created that way with N primaries each worker's range is one
//! node's slots. The ranges depend on I and N only: see the module doc of
//! [`crate::shard`] for why that, and not the cluster's layout, decides.

use serde::{Deserialize, Serialize};

use crate::cluster::{SLOTS, key_slot};

/// One worker's share of a sharded job (`--shard I/N`), as the journal
/// records it in the job's options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardSpec {
    /// This worker's number, from 0.
    pub index: u32,
    /// How many workers share the job.
    pub count: u32,
    /// The slots this worker owns, as inclusive ranges. Recorded when the
    /// job starts, so a resume uses them whatever a later build computes.
    pub slots: Vec<(u16, u16)>,
}

impl ShardSpec {
    /// Worker `index` of `count`, with the slots the split gives it.
    pub fn new(index: u32, count: u32) -> Result<ShardSpec, String> {
        if count == 0 || count as usize > SLOTS {
            return Err(format!(
                "--shard {index}/{count}: the number of workers must be between 1 and {SLOTS} (one per hash slot at most)"
            ));
        }
        if index >= count {
            return Err(format!(
                "--shard {index}/{count}: workers are numbered from 0, so with {count} worker{} the index is {}",
                if count == 1 { "" } else { "s" },
                if count == 1 {
                    "0".to_string()
                } else {
                    format!("0 to {}", count - 1)
                }
            ));
        }
        let (first, last) = split(count)[index as usize];
        Ok(ShardSpec {
            index,
            count,
            slots: vec![(first, last)],
        })
    }

    /// `1/3`: how the flag names this worker.
    pub fn label(&self) -> String {
        format!("{}/{}", self.index, self.count)
    }

    pub fn slot_set(&self) -> SlotSet {
        SlotSet::from_ranges(&self.slots)
    }

    /// `5461-10922`, or several ranges separated by commas.
    pub fn slots_text(&self) -> String {
        ranges_text(&self.slots)
    }
}

/// Parses `I/N` (clap's value parser for `--shard`).
pub fn parse_shard(text: &str) -> Result<ShardSpec, String> {
    let bad = || {
        format!(
            "{text:?} is not a shard: write I/N, this worker's number (from 0) and the number of workers, for example 0/3"
        )
    };
    let (index, count) = text.trim().split_once('/').ok_or_else(bad)?;
    let index: u32 = index.trim().parse().map_err(|_| bad())?;
    let count: u32 = count.trim().parse().map_err(|_| bad())?;
    ShardSpec::new(index, count)
}

/// The `count` ranges of the split, in worker order: `redis-cli --cluster
/// create`'s own arithmetic (float slots per node, each range ending at
/// the rounded running total), so a cluster it created with `count`
/// primaries has exactly these ranges.
pub fn split(count: u32) -> Vec<(u16, u16)> {
    let slots = SLOTS as i64;
    let per_worker = SLOTS as f32 / count as f32;
    let mut ranges = Vec::with_capacity(count as usize);
    let mut first: i64 = 0;
    let mut cursor: f32 = 0.0;
    for worker in 0..count {
        let mut last = (cursor + per_worker - 1.0).round() as i64;
        if last >= slots || worker == count - 1 {
            last = slots - 1;
        }
        // Each worker keeps at least one slot, and what is left for the
        // others stays at least one slot each.
        let left_for_others = i64::from(count - worker - 1);
        last = last.max(first).min(slots - 1 - left_for_others);
        ranges.push((first as u16, last as u16));
        first = last + 1;
        cursor += per_worker;
    }
    ranges
}

/// A set of hash slots.
#[derive(Clone, PartialEq, Eq)]
pub struct SlotSet {
    bits: Box<[u64; SLOTS / 64]>,
}

impl std::fmt::Debug for SlotSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SlotSet({})", ranges_text(&self.ranges()))
    }
}

impl SlotSet {
    pub fn empty() -> SlotSet {
        SlotSet {
            bits: Box::new([0; SLOTS / 64]),
        }
    }

    pub fn all() -> SlotSet {
        SlotSet {
            bits: Box::new([u64::MAX; SLOTS / 64]),
        }
    }

    /// The slots of inclusive ranges (as `CLUSTER NODES` and the journal
    /// write them); slots past 16383 are ignored.
    pub fn from_ranges(ranges: &[(u16, u16)]) -> SlotSet {
        let mut set = SlotSet::empty();
        for &(first, last) in ranges {
            for slot in first..=last.min(SLOTS as u16 - 1) {
                set.insert(slot);
            }
        }
        set
    }

    pub fn insert(&mut self, slot: u16) {
        self.bits[slot as usize / 64] |= 1 << (slot % 64);
    }

    pub fn contains(&self, slot: u16) -> bool {
        (slot as usize) < SLOTS && self.bits[slot as usize / 64] & (1 << (slot % 64)) != 0
    }

    /// Whether `key` hashes to one of these slots.
    pub fn holds_key(&self, key: &[u8]) -> bool {
        self.contains(key_slot(key))
    }

    pub fn len(&self) -> usize {
        self.bits
            .iter()
            .map(|word| word.count_ones() as usize)
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.bits.iter().all(|word| *word == 0)
    }

    pub fn is_full(&self) -> bool {
        self.bits.iter().all(|word| *word == u64::MAX)
    }

    /// The slots in both sets.
    pub fn intersection(&self, other: &SlotSet) -> SlotSet {
        let mut set = SlotSet::empty();
        for (word, (a, b)) in set
            .bits
            .iter_mut()
            .zip(self.bits.iter().zip(other.bits.iter()))
        {
            *word = a & b;
        }
        set
    }

    /// Adds every slot of `other`.
    pub fn add(&mut self, other: &SlotSet) {
        for (word, more) in self.bits.iter_mut().zip(other.bits.iter()) {
            *word |= more;
        }
    }

    /// Whether any slot of these inclusive ranges is in the set.
    pub fn overlaps(&self, ranges: &[(u16, u16)]) -> bool {
        ranges
            .iter()
            .any(|&(first, last)| (first..=last).any(|slot| self.contains(slot)))
    }

    /// Every slot in the set, in order.
    pub fn slots(&self) -> impl Iterator<Item = u16> + '_ {
        (0..SLOTS as u16).filter(|slot| self.contains(*slot))
    }

    /// The set as inclusive ranges, in order.
    pub fn ranges(&self) -> Vec<(u16, u16)> {
        let mut ranges: Vec<(u16, u16)> = Vec::new();
        for slot in self.slots() {
            match ranges.last_mut() {
                Some((_, last)) if *last + 1 == slot => *last = slot,
                _ => ranges.push((slot, slot)),
            }
        }
        ranges
    }
}

/// `0-5460,10923-16383`; a range of one slot is written as the slot.
pub fn ranges_text(ranges: &[(u16, u16)]) -> String {
    if ranges.is_empty() {
        return "none".to_string();
    }
    ranges
        .iter()
        .map(|&(first, last)| {
            if first == last {
                first.to_string()
            } else {
                format!("{first}-{last}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `redis-cli --cluster create` (7.0.15) assigned on real
    /// clusters of 3, 6 and 7 primaries.
    #[test]
    fn the_split_matches_what_redis_cli_gives_the_same_number_of_primaries() {
        assert_eq!(split(3), vec![(0, 5460), (5461, 10922), (10923, 16383)]);
        assert_eq!(
            split(6),
            vec![
                (0, 2730),
                (2731, 5460),
                (5461, 8191),
                (8192, 10922),
                (10923, 13652),
                (13653, 16383)
            ]
        );
        assert_eq!(
            split(7),
            vec![
                (0, 2340),
                (2341, 4680),
                (4681, 7021),
                (7022, 9361),
                (9362, 11702),
                (11703, 14042),
                (14043, 16383)
            ]
        );
        assert_eq!(split(1), vec![(0, 16383)]);
    }

    #[test]
    fn every_split_gives_each_slot_to_exactly_one_worker() {
        let counts = (1..=512).chain([1000, 1024, 4096, 8191, 16383, 16384]);
        for count in counts {
            let ranges = split(count);
            assert_eq!(ranges.len(), count as usize);
            let mut next = 0u32;
            for &(first, last) in &ranges {
                assert_eq!(u32::from(first), next, "{count} workers: {ranges:?}");
                assert!(first <= last, "{count} workers: an empty share");
                next = u32::from(last) + 1;
            }
            assert_eq!(next, SLOTS as u32, "{count} workers cover every slot");
        }
    }

    #[test]
    fn a_split_in_half_of_the_workers_joins_their_neighbours() {
        // 6 workers cut where 3 do, and more: N dividing the number of
        // primaries keeps each worker within one node.
        let three = split(3);
        let six = split(6);
        for (i, range) in three.iter().enumerate() {
            assert_eq!(range.0, six[2 * i].0);
            assert_eq!(range.1, six[2 * i + 1].1);
        }
    }

    #[test]
    fn shards_parse_and_say_what_is_wrong() {
        let spec = parse_shard("1/3").unwrap();
        assert_eq!((spec.index, spec.count), (1, 3));
        assert_eq!(spec.slots, vec![(5461, 10922)]);
        assert_eq!(spec.label(), "1/3");
        assert_eq!(spec.slots_text(), "5461-10922");
        assert_eq!(
            parse_shard("3/3").unwrap_err(),
            "--shard 3/3: workers are numbered from 0, so with 3 workers the index is 0 to 2"
        );
        assert_eq!(
            parse_shard("1/1").unwrap_err(),
            "--shard 1/1: workers are numbered from 0, so with 1 worker the index is 0"
        );
        assert!(
            parse_shard("0/0")
                .unwrap_err()
                .contains("between 1 and 16384")
        );
        assert!(parse_shard("0/16385").is_err());
        for bad in ["", "1", "a/3", "1/b", "-1/3", "1/3/4"] {
            assert!(
                parse_shard(bad).unwrap_err().contains("write I/N"),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn slot_sets_hold_ranges_and_keys() {
        let set = SlotSet::from_ranges(&[(0, 2), (10, 10), (16383, 16383)]);
        assert_eq!(set.len(), 5);
        assert_eq!(set.ranges(), vec![(0, 2), (10, 10), (16383, 16383)]);
        assert_eq!(ranges_text(&set.ranges()), "0-2,10,16383");
        assert!(set.overlaps(&[(5, 10)]) && !set.overlaps(&[(3, 9)]));
        // "foo" hashes to 12182 (CLUSTER KEYSLOT foo).
        assert!(!set.holds_key(b"foo"));
        assert!(SlotSet::from_ranges(&[(12182, 12182)]).holds_key(b"foo"));
        let mut union = SlotSet::empty();
        for range in split(4) {
            union.add(&SlotSet::from_ranges(&[range]));
        }
        assert!(union.is_full() && SlotSet::all().is_full());
        assert_eq!(set.intersection(&SlotSet::from_ranges(&[(1, 10)])).len(), 3);
        assert!(SlotSet::empty().is_empty());
    }
}
