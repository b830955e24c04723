//! Which keys `verify` looks at: every key of a (node, database), listed
//! with SCAN, or a random sample of them drawn with RANDOMKEY.
//!
//! Why RANDOMKEY for `--sample` rather than a reservoir over SCAN: a sample
//! is for a quick look, and a reservoir would still walk every key. The
//! sample is spread over databases and cluster primaries in proportion to
//! their key counts (see `plan` in `verify.rs`); within one, RANDOMKEY is
//! drawn until the share is filled with distinct keys that match `--match`
//! (and the job's `--type`), giving up after 20 draws per wanted key.
//! RANDOMKEY picks a random hash bucket, so it is close to uniform but not
//! exactly; what the summary says is "a random sample", nothing stronger.

use std::collections::HashSet;

use anyhow::{Context, Result, bail};
use redis::Value;

use super::glob::Glob;
use crate::connection::error_text;
use crate::scan::parse_scan;
use crate::side::Side;
use crate::wire::CommandBuffer;

/// Keys drawn per RANDOMKEY pipeline.
const SAMPLE_BATCH: u64 = 1000;
/// Give up filling a share after this many draws per wanted key (a
/// `--match` that few keys match).
const MAX_DRAWS_PER_KEY: u64 = 20;

/// Which keys are in scope.
#[derive(Debug, Clone, Default)]
pub struct KeyFilter {
    /// Sent as SCAN MATCH.
    pub scan_match: Option<String>,
    /// Every key must match all of these (RANDOMKEY knows no pattern, and a
    /// job's own `--match` may be narrowed by verify's).
    pub globs: Vec<Glob>,
    /// Sent as SCAN TYPE; checked with TYPE for a sample.
    pub key_type: Option<String>,
    pub scan_count: u32,
    /// A sharded job's worker (`--shard`): only the keys of its slots.
    pub slots: Option<std::sync::Arc<crate::shard::SlotSet>>,
}

impl KeyFilter {
    pub fn wants(&self, key: &[u8]) -> bool {
        self.globs.iter().all(|glob| glob.matches(key))
            && self.slots.as_ref().is_none_or(|slots| slots.holds_key(key))
    }

    fn scan_command(&self, cursor: u64) -> redis::Cmd {
        let mut command = redis::cmd("SCAN");
        command.arg(cursor);
        if let Some(pattern) = &self.scan_match {
            command.arg("MATCH").arg(pattern);
        }
        command.arg("COUNT").arg(self.scan_count.max(1));
        if let Some(key_type) = &self.key_type {
            command.arg("TYPE").arg(key_type);
        }
        command
    }
}

/// Lists the keys of one database of one node, a batch at a time.
pub struct Lister {
    address: String,
    db: i64,
    state: State,
}

enum State {
    Scan { cursor: u64 },
    Sample(Sample),
    Done,
}

struct Sample {
    quota: u64,
    taken: u64,
    draws: u64,
    seen: HashSet<Vec<u8>>,
}

impl Lister {
    /// Every key (`quota` None) or a random sample of `quota` keys of `db`
    /// on the node at `address`.
    pub fn new(address: &str, db: i64, quota: Option<u64>) -> Lister {
        let state = match quota {
            None => State::Scan { cursor: 0 },
            Some(0) => State::Done,
            Some(quota) => State::Sample(Sample {
                quota,
                taken: 0,
                draws: 0,
                seen: HashSet::new(),
            }),
        };
        Lister {
            address: address.to_string(),
            db,
            state,
        }
    }

    /// The next keys (possibly none), or `None` when the listing is over.
    pub fn next_batch(
        &mut self,
        side: &mut Side,
        filter: &KeyFilter,
    ) -> Result<Option<Vec<Vec<u8>>>> {
        match &mut self.state {
            State::Done => Ok(None),
            State::Scan { cursor } => {
                let (keys, next) = scan_once(side, &self.address, self.db, *cursor, filter)?;
                self.state = if next == 0 {
                    State::Done
                } else {
                    State::Scan { cursor: next }
                };
                Ok(Some(keys))
            }
            State::Sample(sample) => {
                let (keys, finished) = sample.draw(side, &self.address, self.db, filter)?;
                if finished {
                    self.state = State::Done;
                }
                Ok(Some(keys))
            }
        }
    }
}

fn scan_once(
    side: &mut Side,
    address: &str,
    db: i64,
    cursor: u64,
    filter: &KeyFilter,
) -> Result<(Vec<Vec<u8>>, u64)> {
    let mut pipe = CommandBuffer::new();
    pipe.add_command(filter.scan_command(cursor));
    let reply = only_replies(side.run_pipelines(db, vec![(address.to_string(), pipe)])?)
        .pop()
        .unwrap_or(Value::Nil);
    let (keys, next) = parse_scan(reply)
        .with_context(|| format!("SCAN of db {db} on {} {address} failed", side.role()))?;
    Ok((keys.into_iter().filter(|k| filter.wants(k)).collect(), next))
}

fn only_replies(replies: Vec<(String, Vec<Value>)>) -> Vec<Value> {
    replies
        .into_iter()
        .next()
        .map(|(_, replies)| replies)
        .unwrap_or_default()
}

impl Sample {
    /// One RANDOMKEY round: the new keys, and whether the share is done.
    fn draw(
        &mut self,
        side: &mut Side,
        address: &str,
        db: i64,
        filter: &KeyFilter,
    ) -> Result<(Vec<Vec<u8>>, bool)> {
        let wanted = (self.quota - self.taken).min(SAMPLE_BATCH);
        let mut pipe = CommandBuffer::new();
        for _ in 0..wanted {
            pipe.cmd("RANDOMKEY");
        }
        let replies = only_replies(side.run_pipelines(db, vec![(address.to_string(), pipe)])?);
        self.draws += wanted;
        let mut empty = false;
        let mut fresh = Vec::new();
        for reply in replies {
            match reply {
                Value::BulkString(key) => {
                    if filter.wants(&key) && self.seen.insert(key.clone()) {
                        fresh.push(key);
                    }
                }
                Value::Nil => empty = true,
                Value::ServerError(error) => bail!(
                    "RANDOMKEY in db {db} on {} {address} failed: {}",
                    side.role(),
                    error_text(&error)
                ),
                other => bail!("RANDOMKEY returned {other:?}"),
            }
        }
        let mut keys = of_type(side, address, db, fresh, filter)?;
        keys.truncate((self.quota - self.taken) as usize);
        self.taken += keys.len() as u64;
        let finished = empty
            || self.taken >= self.quota
            || self.draws >= self.quota.saturating_mul(MAX_DRAWS_PER_KEY) + 100;
        Ok((keys, finished))
    }
}

/// Keeps the keys of the filter's type (all of them when it names none).
fn of_type(
    side: &mut Side,
    address: &str,
    db: i64,
    keys: Vec<Vec<u8>>,
    filter: &KeyFilter,
) -> Result<Vec<Vec<u8>>> {
    let Some(wanted) = &filter.key_type else {
        return Ok(keys);
    };
    if keys.is_empty() {
        return Ok(keys);
    }
    let mut pipe = CommandBuffer::new();
    for key in &keys {
        pipe.cmd("TYPE").arg(key);
    }
    let types = only_replies(side.run_pipelines(db, vec![(address.to_string(), pipe)])?);
    Ok(keys
        .into_iter()
        .zip(types)
        .filter(|(_, key_type)| matches!(key_type, Value::SimpleString(t) if t == wanted))
        .map(|(key, _)| key)
        .collect())
}

/// Splits a sample of `size` keys over places holding `counts` keys, in
/// proportion (largest remainders get the leftover keys). `None` means
/// "every key there": a place whose share is all of it is simply scanned.
pub fn quotas(counts: &[u64], size: u64) -> Vec<Option<u64>> {
    let total: u64 = counts.iter().sum();
    if total <= size {
        return vec![None; counts.len()];
    }
    let exact: Vec<f64> = counts
        .iter()
        .map(|&count| size as f64 * count as f64 / total as f64)
        .collect();
    let mut shares: Vec<u64> = exact
        .iter()
        .zip(counts)
        .map(|(e, &count)| (e.floor() as u64).min(count))
        .collect();
    let mut order: Vec<usize> = (0..counts.len()).collect();
    order.sort_by(|&a, &b| (exact[b] - exact[b].floor()).total_cmp(&(exact[a] - exact[a].floor())));
    let mut left = size.saturating_sub(shares.iter().sum());
    // total > size, so there is always room somewhere.
    while left > 0 {
        for &i in &order {
            if left > 0 && shares[i] < counts[i] {
                shares[i] += 1;
                left -= 1;
            }
        }
    }
    shares
        .into_iter()
        .zip(counts)
        .map(|(share, &count)| (share < count).then_some(share))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_is_spread_in_proportion_and_adds_up() {
        // None means "every key there", so it counts as the whole place.
        let total = |counts: &[u64], size| -> u64 {
            quotas(counts, size)
                .iter()
                .zip(counts)
                .map(|(share, count)| share.unwrap_or(*count))
                .sum()
        };
        assert_eq!(
            quotas(&[700, 200, 100], 100),
            vec![Some(70), Some(20), Some(10)]
        );
        assert_eq!(total(&[1, 1, 1], 2), 2);
        assert_eq!(total(&[5, 1_000_000], 10), 10);
        assert_eq!(total(&[3, 3, 3, 3, 1000], 17), 17);
    }

    #[test]
    fn a_sample_as_big_as_the_data_checks_everything() {
        assert_eq!(quotas(&[10, 20], 30), vec![None, None]);
        assert_eq!(quotas(&[10, 20], 1000), vec![None, None]);
    }

    #[test]
    fn filters_apply_every_glob_and_scan_carries_match_and_type() {
        let filter = KeyFilter {
            scan_match: Some("user:*".into()),
            globs: vec![Glob::new("user:*"), Glob::new("*:1?")],
            key_type: Some("hash".into()),
            scan_count: 500,
            slots: None,
        };
        assert!(filter.wants(b"user:12"));
        assert!(!filter.wants(b"user:2"));
        assert!(!filter.wants(b"order:12"));
        let packed =
            String::from_utf8_lossy(&filter.scan_command(7).get_packed_command()).into_owned();
        for part in ["SCAN", "MATCH", "user:*", "COUNT", "500", "TYPE", "hash"] {
            assert!(packed.contains(part), "{packed}");
        }
    }
}
