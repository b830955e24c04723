//! The source side of a round's fence: did a key change on the source
//! between redis-ferry's read and the target's acknowledgement?
//!
//! Two ways to ask, picked per round: the change feed ([`super::feed`]:
//! keyspace notifications, nothing per key on the source), or, where the
//! feed does not cover the nodes read or cannot hear a key's changes,
//! `WATCH key` before each read on the reading connection and an empty
//! `MULTI`/`EXEC` there afterwards (nil: a watched key changed). A reconnect
//! between the two loses the `WATCH`, which the connection's generation
//! tells.

use std::collections::{BTreeMap, HashMap};

use anyhow::{Result, bail};
use redis::Value;

use crate::side::Side;
use crate::wire::CommandBuffer;

use super::feed::{FeedRound, FeedVerdict};
use super::fence::Round;
use super::read::{Found, Read};

/// The source side of a round's fence: the change feed where it covers the
/// nodes read, else `WATCH` on the reading connections.
pub(super) enum SourceFence<'f> {
    Feed(FeedRound<'f>),
    Watch(SourceWatch),
    /// `--no-fence`.
    Off,
}

impl<'f> SourceFence<'f> {
    /// Starts the fence of the round's keys at `positions` (before they are
    /// read).
    pub(super) fn begin(
        source: &mut Side,
        round: &Round<'f>,
        positions: &[usize],
        fenced: bool,
    ) -> Result<SourceFence<'f>> {
        if !fenced {
            return Ok(SourceFence::Off);
        }
        let addresses: Vec<&str> = positions
            .iter()
            .map(|&p| round.addresses[p].as_str())
            .collect();
        let watch_needed = positions
            .iter()
            .any(|&p| round.watch_on_source[round.group[p]]);
        if let Some(feed) = round.feed.filter(|_| !watch_needed) {
            let keys: Vec<&[u8]> = positions
                .iter()
                .map(|&p| round.keys[round.group[p]].as_slice())
                .collect();
            if let Some(registered) = feed.register(source, round.db, &keys, &addresses) {
                return Ok(SourceFence::Feed(registered));
            }
        }
        Ok(SourceFence::Watch(SourceWatch::begin(source, &addresses)?))
    }

    /// Whether each read must be preceded by `WATCH key`.
    pub(super) fn watches_reads(&self) -> bool {
        matches!(self, SourceFence::Watch(_))
    }

    pub(super) fn after_read(&mut self, source: &mut Side, reads: &[Read]) -> Result<()> {
        match self {
            SourceFence::Watch(watch) => watch.after_read(source, reads),
            _ => Ok(()),
        }
    }

    /// Ends the fence without a verdict (nothing was written).
    pub(super) fn end(self, source: &mut Side, db: i64) -> Result<()> {
        if let SourceFence::Watch(watch) = self {
            watch.verdicts(source, db)?;
        }
        Ok(())
    }

    /// Once the target acknowledged: per read, did its key change on the
    /// source since? Ends the fence.
    pub(super) fn verdicts(
        self,
        source: &mut Side,
        db: i64,
        reads: &[Read],
    ) -> Result<Vec<Verdict>> {
        Ok(match self {
            SourceFence::Off => vec![Verdict::Unchanged; reads.len()],
            SourceFence::Feed(registered) => {
                let addresses: Vec<&str> = reads.iter().map(|read| read.address.as_str()).collect();
                registered
                    .verdicts(source, &addresses)
                    .into_iter()
                    .zip(reads)
                    .map(|(verdict, read)| match verdict {
                        _ if is_module_value(&read.found) => Verdict::Unheard,
                        FeedVerdict::Unchanged => Verdict::Unchanged,
                        FeedVerdict::Changed => Verdict::Changed,
                        FeedVerdict::Unvouched => Verdict::Unheard,
                    })
                    .collect()
            }
            SourceFence::Watch(watch) => {
                let by_connection = watch.verdicts(source, db)?;
                // A connection without a verdict watched nothing we know
                // of: redo the key rather than trust it.
                reads
                    .iter()
                    .map(|read| {
                        by_connection
                            .get(&read.address)
                            .copied()
                            .unwrap_or(Verdict::Lost)
                    })
                    .collect()
            }
        })
    }
}

/// The `WATCH` source fence: the connections that watched a round's
/// keys with their reads, and their generations (a reconnect in between
/// loses the WATCH).
#[derive(Debug, Default)]
pub(super) struct SourceWatch {
    before: HashMap<String, u64>,
    after: BTreeMap<String, u64>,
}

impl SourceWatch {
    /// Notes the connections' generations before the reads.
    fn begin(source: &mut Side, addresses: &[&str]) -> Result<SourceWatch> {
        let mut watch = SourceWatch::default();
        for &address in addresses {
            if !watch.before.contains_key(address) {
                watch
                    .before
                    .insert(address.to_string(), source.generation(address)?);
            }
        }
        Ok(watch)
    }

    /// Notes the connections that answered the reads (their WATCH holds).
    fn after_read(&mut self, source: &mut Side, reads: &[Read]) -> Result<()> {
        for read in reads {
            if !self.after.contains_key(&read.address) {
                self.after
                    .insert(read.address.clone(), source.generation(&read.address)?);
            }
        }
        Ok(())
    }

    /// Per connection: did a watched key change since its read? Ends the
    /// WATCH either way.
    fn verdicts(&self, source: &mut Side, db: i64) -> Result<BTreeMap<String, Verdict>> {
        let mut verdicts = BTreeMap::new();
        for (address, &generation) in &self.after {
            let verdict = if self.before.get(address).is_some_and(|&g| g != generation) {
                Verdict::Lost
            } else {
                check_unchanged(source, db, address, generation)?
            };
            verdicts.insert(address.clone(), verdict);
        }
        Ok(verdicts)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    Unchanged,
    Changed,
    Lost,
    /// The feed cannot vouch (see [`super::fence::RoundResult::unheard`]).
    Unheard,
}

/// A DUMP payload of a module's type (RDB types 6 and 7): modules need
/// not send keyspace notifications, and Redis 8's vector sets do not.
fn is_module_value(found: &Found) -> bool {
    const RDB_TYPE_MODULE_PRE_GA: u8 = 6;
    const RDB_TYPE_MODULE_2: u8 = 7;
    matches!(found, Found::Value { payload, .. }
        if matches!(payload.first(), Some(&(RDB_TYPE_MODULE_PRE_GA | RDB_TYPE_MODULE_2))))
}

/// An empty transaction on the connection that watched some keys: nil
/// when one of them changed since.
fn check_unchanged(source: &mut Side, db: i64, address: &str, generation: u64) -> Result<Verdict> {
    let mut pipe = CommandBuffer::new();
    pipe.cmd("MULTI");
    pipe.cmd("EXEC");
    Ok(match source.send_fenced(address, db, &pipe, generation)? {
        None => Verdict::Lost,
        Some(replies) => match replies.last() {
            Some(Value::Nil) => Verdict::Changed,
            Some(Value::Array(_)) => Verdict::Unchanged,
            other => bail!("the source's EXEC returned {other:?}"),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::copy::read::Ttl;

    fn value(payload: &[u8]) -> Found {
        Found::Value {
            payload: payload.to_vec(),
            ttl: Ttl::Persistent,
            clock: None,
        }
    }

    #[test]
    fn module_payloads_are_told_apart_by_their_type_byte() {
        // A vector set's DUMP starts with RDB type 7 (module, version 2).
        assert!(is_module_value(&value(b"\x07\x81vectorset")));
        assert!(is_module_value(&value(b"\x06old-module")));
        // A string (0), a listpack hash (16), a gone key: not modules.
        assert!(!is_module_value(&value(b"\x00\x05hello")));
        assert!(!is_module_value(&value(b"\x10hash")));
        assert!(!is_module_value(&Found::Gone));
    }
}
