//! Redis Cluster topology: which node serves which hash slot.
//!
//! The topology is read from `CLUSTER NODES`, which every cluster version
//! answers and which also shows slots being migrated (`[slot->-id]`) or
//! imported (`[slot-<-id]`). [`key_slot`] is Redis's own CRC16 with hash
//! tags, so redis-ferry can group keys per node before sending anything.

use std::collections::BTreeSet;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::connection::{NodeConnection, expect_text};

/// Number of hash slots in a Redis Cluster.
pub const SLOTS: usize = 16384;

/// The hash slot of a key: CRC16 of the key, or of the part between the
/// first `{` and the next `}` when that part is not empty.
pub fn key_slot(key: &[u8]) -> u16 {
    let hashed = hash_tag(key).unwrap_or(key);
    crc16::State::<crc16::XMODEM>::calculate(hashed) % SLOTS as u16
}

fn hash_tag(key: &[u8]) -> Option<&[u8]> {
    let open = key.iter().position(|&b| b == b'{')?;
    let close = key[open + 1..].iter().position(|&b| b == b'}')?;
    (close > 0).then(|| &key[open + 1..open + 1 + close])
}

/// One node as `CLUSTER NODES` describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterNode {
    pub id: String,
    /// The announced hostname when there is one (needed for TLS), else the IP.
    pub host: String,
    pub port: u16,
    pub primary: bool,
    /// For a replica: the id of its primary.
    pub primary_id: Option<String>,
    /// Flagged `fail` (or `noaddr`): not usable.
    pub failed: bool,
    /// Slot ranges served, inclusive.
    pub slots: Vec<(u16, u16)>,
    /// Slots this node is handing over to another node right now.
    pub migrating: Vec<u16>,
    /// Slots this node is receiving from another node right now.
    pub importing: Vec<u16>,
    /// The node's config epoch: bumped when it takes over slots.
    #[serde(default)]
    pub config_epoch: u64,
}

/// What a node served when its scan started: enough to tell later whether
/// keys could have moved in behind its cursor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeLayout {
    pub slots: Vec<(u16, u16)>,
    pub config_epoch: u64,
}

impl NodeLayout {
    /// Whether a node that had `self` and now has `now` may hold keys its
    /// scan never saw: it gained a slot, or its epoch moved (it took slots
    /// over, perhaps giving them back since).
    pub fn may_have_gained_keys(&self, now: &NodeLayout) -> bool {
        if self.config_epoch != now.config_epoch {
            return true;
        }
        let had = |slot: u16| self.slots.iter().any(|(a, b)| (*a..=*b).contains(&slot));
        now.slots
            .iter()
            .any(|(a, b)| (*a..=*b).any(|slot| !had(slot)))
    }
}

impl ClusterNode {
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    pub fn layout(&self) -> NodeLayout {
        let mut slots = self.slots.clone();
        slots.sort_unstable();
        NodeLayout {
            slots,
            config_epoch: self.config_epoch,
        }
    }

    pub fn serves(&self, slot: u16) -> bool {
        self.slots
            .iter()
            .any(|(first, last)| (*first..=*last).contains(&slot))
    }
}

/// The whole cluster: its nodes and the owner of every slot.
#[derive(Debug, Clone)]
pub struct Topology {
    pub nodes: Vec<ClusterNode>,
    /// Index into `nodes` of each slot's primary (None: slot not served).
    slot_owner: Vec<Option<usize>>,
}

impl Topology {
    /// Reads `CLUSTER NODES` through `connection`.
    pub fn discover(connection: &mut NodeConnection) -> Result<Topology> {
        let reply = connection
            .command(redis::cmd("CLUSTER").arg("NODES"))
            .with_context(|| {
                format!(
                    "cannot read the cluster topology from {} {}",
                    connection.endpoint().role,
                    connection.endpoint().redacted()
                )
            })?;
        let text = expect_text(reply, "CLUSTER NODES")?;
        let (host, port) = match &connection.endpoint().address {
            crate::endpoint::Address::Tcp { host, port }
            | crate::endpoint::Address::Tls { host, port } => (host.clone(), *port),
            crate::endpoint::Address::Unix(_) => (String::from("127.0.0.1"), 0),
        };
        Topology::parse(&text, &host, port)
    }

    /// Parses `CLUSTER NODES` output. A node that announces no address
    /// (`:0@0`, seen on a node that is alone) gets the address we reached it at.
    pub fn parse(text: &str, connected_host: &str, connected_port: u16) -> Result<Topology> {
        let mut nodes = Vec::new();
        for line in text.lines().filter(|line| !line.trim().is_empty()) {
            nodes.push(parse_node_line(line, connected_host, connected_port)?);
        }
        let mut slot_owner = vec![None; SLOTS];
        for (index, node) in nodes.iter().enumerate() {
            if !node.primary {
                continue;
            }
            for &(first, last) in &node.slots {
                for slot in first..=last {
                    slot_owner[slot as usize] = Some(index);
                }
            }
        }
        Ok(Topology { nodes, slot_owner })
    }

    /// Primaries that serve at least one slot, in a stable order.
    pub fn primaries(&self) -> Vec<&ClusterNode> {
        let mut primaries: Vec<_> = self
            .nodes
            .iter()
            .filter(|node| node.primary && !node.slots.is_empty())
            .collect();
        primaries.sort_by(|a, b| a.id.cmp(&b.id));
        primaries
    }

    pub fn node(&self, id: &str) -> Option<&ClusterNode> {
        self.nodes.iter().find(|node| node.id == id)
    }

    /// The primary serving `slot`.
    pub fn owner(&self, slot: u16) -> Option<&ClusterNode> {
        self.slot_owner[slot as usize].map(|index| &self.nodes[index])
    }

    /// A healthy replica of `primary_id`, if it has one.
    pub fn replica_of(&self, primary_id: &str) -> Option<&ClusterNode> {
        self.nodes
            .iter()
            .find(|node| !node.failed && node.primary_id.as_deref() == Some(primary_id))
    }

    /// Whether every slot is served.
    pub fn covers_all_slots(&self) -> bool {
        self.slot_owner.iter().all(Option::is_some)
    }

    /// Slots some node reports as migrating or importing.
    pub fn moving_slots(&self) -> BTreeSet<u16> {
        self.nodes
            .iter()
            .flat_map(|node| node.migrating.iter().chain(node.importing.iter()))
            .copied()
            .collect()
    }
}

fn parse_node_line(line: &str, connected_host: &str, connected_port: u16) -> Result<ClusterNode> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.len() < 8 {
        bail!("unexpected CLUSTER NODES line: {line:?}");
    }
    let flags: Vec<&str> = fields[2].split(',').collect();
    // `ip:port@cport[,hostname]`
    let (address, bus) = fields[1].split_once('@').unwrap_or((fields[1], ""));
    let hostname = bus.split(',').nth(1).filter(|name| !name.is_empty());
    let (host, port) = address
        .rsplit_once(':')
        .map(|(host, port)| (host.to_string(), port.parse::<u16>().unwrap_or(0)))
        .unwrap_or_default();
    let myself = flags.contains(&"myself");
    let (host, port) = if (host.is_empty() || port == 0) && myself {
        (connected_host.to_string(), connected_port)
    } else {
        (hostname.map(str::to_string).unwrap_or(host), port)
    };
    let mut node = ClusterNode {
        id: fields[0].to_string(),
        host,
        port,
        primary: flags.contains(&"master"),
        primary_id: (fields[3] != "-").then(|| fields[3].to_string()),
        failed: flags
            .iter()
            .any(|f| *f == "fail" || *f == "noaddr" || *f == "handshake"),
        slots: Vec::new(),
        migrating: Vec::new(),
        importing: Vec::new(),
        config_epoch: fields[6].parse().unwrap_or(0),
    };
    for slot in &fields[8..] {
        if let Some(inner) = slot.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            if let Some((number, _)) = inner.split_once("->-") {
                node.migrating.extend(number.parse::<u16>().ok());
            } else if let Some((number, _)) = inner.split_once("-<-") {
                node.importing.extend(number.parse::<u16>().ok());
            }
            continue;
        }
        let range = match slot.split_once('-') {
            Some((first, last)) => (first.parse::<u16>()?, last.parse::<u16>()?),
            None => {
                let only = slot.parse::<u16>()?;
                (only, only)
            }
        };
        node.slots.push(range);
    }
    Ok(node)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis_reference_values() {
        // Values from `CLUSTER KEYSLOT` on a real server.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"{}foo"), key_slot(b"{}foo"));
        assert_ne!(key_slot(b"{}foo"), key_slot(b"foo"));
        assert_eq!(
            key_slot(b"foo{}{bar}"),
            crc16::State::<crc16::XMODEM>::calculate(b"foo{}{bar}") % 16384
        );
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
        assert_eq!(key_slot(b""), 0);
    }

    #[test]
    fn cluster_nodes_output_is_parsed_with_migrations() {
        let text = "\
07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004 slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@31002 master - 0 1426238316232 2 connected 5461-10922 [10923->-292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f]
292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 127.0.0.1:30003@31003 master - 0 1426238318243 3 connected 10923-16383 [10923-<-67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1]
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@31001 myself,master - 0 0 1 connected 0-5460
";
        let topology = Topology::parse(text, "127.0.0.1", 30001).unwrap();
        assert_eq!(topology.primaries().len(), 3);
        assert_eq!(topology.owner(0).unwrap().port, 30001);
        assert_eq!(topology.owner(5461).unwrap().port, 30002);
        assert_eq!(topology.owner(16383).unwrap().port, 30003);
        assert!(topology.covers_all_slots());
        assert_eq!(topology.moving_slots(), BTreeSet::from([10923]));
        let replica = topology
            .replica_of("e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca")
            .unwrap();
        assert_eq!(replica.port, 30004);
        assert_eq!(topology.owner(0).unwrap().config_epoch, 1);
    }

    #[test]
    fn a_node_that_gained_slots_or_epoch_may_hold_unseen_keys() {
        let layout = |slots: Vec<(u16, u16)>, config_epoch| NodeLayout {
            slots,
            config_epoch,
        };
        let before = layout(vec![(0, 100)], 3);
        assert!(!before.may_have_gained_keys(&before));
        assert!(
            !before.may_have_gained_keys(&layout(vec![(0, 50)], 3)),
            "only lost slots"
        );
        assert!(
            before.may_have_gained_keys(&layout(vec![(0, 101)], 3)),
            "gained slot 101"
        );
        assert!(
            before.may_have_gained_keys(&layout(vec![(0, 100)], 4)),
            "epoch moved"
        );
    }
}
