//! One side of a migration (the source or the target): a standalone server
//! or a whole cluster, reached through one [`NodeConnection`] per node.
//!
//! A `Side` answers "which node serves this key?" and runs pipelines on
//! several nodes at once (one scoped thread per node, so a cluster's nodes
//! work in parallel). Connections to cluster nodes open on first use with
//! the seed URL's credentials and TLS settings.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use redis::Value;

use crate::cluster::{Topology, key_slot};
use crate::connection::NodeConnection;
use crate::endpoint::{Address, Endpoint, Role};
use crate::interrupt::Shutdown;
use crate::server::ServerInfo;
use crate::wire::CommandBuffer;

/// The node name used for a standalone server in the journal's cursors.
pub const STANDALONE_NODE: &str = "standalone";

/// Which server process serves a primary: recorded for the target when a
/// job starts, compared before every resume and after every pass.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeIdentity {
    pub node: String,
    pub address: String,
    pub run_id: String,
}

pub struct Side {
    pub endpoint: Endpoint,
    /// INFO of the server the URL named.
    pub info: ServerInfo,
    topology: Option<Topology>,
    seed_address: String,
    connections: HashMap<String, NodeConnection>,
    /// Replicas read instead of their primaries (`--source-replicas`):
    /// primary id → replica address. They are sent READONLY.
    replicas: Vec<(String, String)>,
    reconnect_budget: Duration,
    shutdown: Shutdown,
}

impl Side {
    /// Connects to the server the URL names, reads INFO and, for a cluster,
    /// the topology.
    pub fn connect(
        endpoint: &Endpoint,
        reconnect_budget: Duration,
        shutdown: &Shutdown,
    ) -> Result<Side> {
        let mut seed = NodeConnection::open(endpoint, reconnect_budget, shutdown.clone())?;
        let info = ServerInfo::read(&mut seed)?;
        let topology = if info.cluster_enabled {
            let topology = Topology::discover(&mut seed)?;
            if topology.primaries().is_empty() {
                bail!(
                    "{} {} is in cluster mode but serves no slots: finish setting up the cluster first",
                    endpoint.role,
                    endpoint.redacted()
                );
            }
            Some(topology)
        } else {
            None
        };
        let seed_address = seed.address();
        let mut connections = HashMap::new();
        connections.insert(seed_address.clone(), seed);
        Ok(Side {
            endpoint: endpoint.clone(),
            info,
            topology,
            seed_address,
            connections,
            replicas: Vec::new(),
            reconnect_budget,
            shutdown: shutdown.clone(),
        })
    }

    /// A second handle on the same deployment for another thread: same
    /// topology, its own connections (opened on first use).
    pub fn fork(&self) -> Side {
        Side {
            endpoint: self.endpoint.clone(),
            info: self.info.clone(),
            topology: self.topology.clone(),
            seed_address: self.seed_address.clone(),
            connections: HashMap::new(),
            replicas: self.replicas.clone(),
            reconnect_budget: self.reconnect_budget,
            shutdown: self.shutdown.clone(),
        }
    }

    pub fn role(&self) -> Role {
        self.endpoint.role
    }

    /// How long connection losses and cluster reconfigurations are waited out.
    pub fn reconnect_budget(&self) -> Duration {
        self.reconnect_budget
    }

    /// Whether `other` is the very same deployment: the same server process
    /// (run_id), or clusters sharing a node.
    pub fn is_same_deployment(&self, other: &Side) -> bool {
        match (self.topology(), other.topology()) {
            (Some(mine), Some(theirs)) => mine
                .nodes
                .iter()
                .any(|node| theirs.node(&node.id).is_some()),
            _ => self.info.run_id == other.info.run_id,
        }
    }

    /// The job's stop flag (Ctrl-C).
    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }

    pub fn is_cluster(&self) -> bool {
        self.topology.is_some()
    }

    pub fn topology(&self) -> Option<&Topology> {
        self.topology.as_ref()
    }

    /// Re-reads the cluster topology (after MOVED, or between scans).
    pub fn refresh_topology(&mut self) -> Result<()> {
        if self.topology.is_none() {
            return Ok(());
        }
        let mut last_error = None;
        // Any reachable node can tell; the seed first.
        let mut candidates = vec![self.seed_address.clone()];
        if let Some(topology) = &self.topology {
            candidates.extend(topology.primaries().iter().map(|node| node.address()));
        }
        for address in candidates {
            match self.connection(&address).and_then(Topology::discover) {
                Ok(topology) if topology.covers_all_slots() => {
                    self.topology = Some(topology);
                    return Ok(());
                }
                Ok(_) => last_error = Some(anyhow::anyhow!("not every slot is served yet")),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("no node answered")))
            .with_context(|| format!("cannot refresh the {} cluster's topology", self.role()))
    }

    /// The address of the node that serves `key` (the server itself when
    /// standalone).
    pub fn address_for_key(&self, key: &[u8]) -> String {
        match &self.topology {
            None => self.seed_address.clone(),
            Some(topology) => topology
                .owner(key_slot(key))
                .map(|node| node.address())
                .unwrap_or_else(|| self.seed_address.clone()),
        }
    }

    pub fn seed_address(&self) -> &str {
        &self.seed_address
    }

    /// Reads the keys of primary `primary_id` from its replica at `address`
    /// (sent READONLY first).
    pub fn read_from_replica(&mut self, primary_id: &str, address: &str) {
        self.replicas.retain(|(id, _)| id != primary_id);
        self.replicas
            .push((primary_id.to_string(), address.to_string()));
    }

    /// The replica to scan instead of primary `primary_id`, if any.
    pub fn replica_address_for(&self, primary_id: &str) -> Option<String> {
        self.replicas
            .iter()
            .find(|(id, _)| id == primary_id)
            .map(|(_, address)| address.clone())
    }

    /// The connection to the node at `address`, opened on first use.
    pub fn connection(&mut self, address: &str) -> Result<&mut NodeConnection> {
        if !self.connections.contains_key(address) {
            let endpoint = self.endpoint_for(address)?;
            let mut connection = NodeConnection::open_during_job(
                &endpoint,
                self.reconnect_budget,
                self.shutdown.clone(),
            )?;
            if self.replicas.iter().any(|(_, a)| a == address) {
                connection
                    .command(&redis::cmd("READONLY"))
                    .with_context(|| format!("cannot read from replica {address}"))?;
            }
            self.connections.insert(address.to_string(), connection);
        }
        Ok(self.connections.get_mut(address).expect("inserted above"))
    }

    /// The generation of the connection to `address` (see
    /// [`NodeConnection::generation`]), opening it if needed.
    pub fn generation(&mut self, address: &str) -> Result<u64> {
        Ok(self.connection(address)?.generation())
    }

    /// Sends `pipe` to `address` in `db` once, only on connection
    /// `generation` (see [`NodeConnection::send_fenced`]).
    pub fn send_fenced(
        &mut self,
        address: &str,
        db: i64,
        pipe: &CommandBuffer,
        generation: u64,
    ) -> Result<Option<Vec<Value>>> {
        let connection = self.connection(address)?;
        connection.select(db);
        connection.send_fenced(pipe, generation)
    }

    /// Identity of every primary now: (node id or `standalone`, address,
    /// run_id), sorted. A target whose identity changed since it was
    /// recorded has restarted or failed over, and may have lost keys.
    pub fn identity(&mut self) -> Result<Vec<NodeIdentity>> {
        let nodes: Vec<(String, String)> = match &self.topology {
            None => vec![(STANDALONE_NODE.to_string(), self.seed_address.clone())],
            Some(topology) => topology
                .primaries()
                .iter()
                .map(|node| (node.id.clone(), node.address()))
                .collect(),
        };
        let mut identity = Vec::with_capacity(nodes.len());
        for (node, address) in nodes {
            let info = ServerInfo::read(self.connection(&address)?)?;
            identity.push(NodeIdentity {
                node,
                address,
                run_id: info.run_id,
            });
        }
        identity.sort_by(|a, b| a.node.cmp(&b.node));
        Ok(identity)
    }

    /// How to reach the node at `address` (the seed URL's credentials and TLS).
    pub fn endpoint_for(&self, address: &str) -> Result<Endpoint> {
        if address == self.seed_address {
            return Ok(self.endpoint.clone());
        }
        let (host, port) = address
            .rsplit_once(':')
            .and_then(|(host, port)| Some((host, port.parse::<u16>().ok()?)))
            .with_context(|| format!("cannot understand node address {address:?}"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if let Address::Unix(_) = self.endpoint.address {
            bail!(
                "a cluster reached through a unix socket redirected to {address}; use a redis:// URL"
            );
        }
        Ok(self.endpoint.at_node(host, port))
    }

    /// Runs one pipeline per node, all nodes at once, in `db`. Returns the
    /// replies in the order of `work`. The first connection-level error wins.
    pub fn run_pipelines(
        &mut self,
        db: i64,
        work: Vec<(String, CommandBuffer)>,
    ) -> Result<Vec<(String, Vec<Value>)>> {
        for (address, _) in &work {
            self.connection(address)?.select(db);
        }
        if work.len() == 1 {
            let (address, pipe) = work.into_iter().next().expect("one item");
            let replies = self.connection(&address)?.pipeline(&pipe)?;
            return Ok(vec![(address, replies)]);
        }
        let mut by_address: HashMap<&String, &mut NodeConnection> = self
            .connections
            .iter_mut()
            .filter(|(address, _)| work.iter().any(|(a, _)| a == *address))
            .collect();
        let results: Vec<Result<Vec<Value>>> = std::thread::scope(|scope| {
            let handles: Vec<_> = work
                .iter()
                .map(|(address, pipe)| {
                    let connection = by_address
                        .remove(address)
                        .expect("opened above; addresses are unique");
                    scope.spawn(move || connection.pipeline(pipe))
                })
                .collect();
            handles
                .into_iter()
                .map(|handle| {
                    handle
                        .join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("a node worker panicked")))
                })
                .collect()
        });
        work.into_iter()
            .zip(results)
            .map(|((address, _), replies)| Ok((address, replies?)))
            .collect()
    }

    /// Every primary's address (the server itself when standalone).
    pub fn primary_addresses(&self) -> Vec<String> {
        match &self.topology {
            None => vec![self.seed_address.clone()],
            Some(topology) => topology
                .primaries()
                .iter()
                .map(|node| node.address())
                .collect(),
        }
    }

    /// INFO of every primary (or of the server itself when standalone),
    /// keyed by address.
    pub fn primaries_info(&mut self) -> Result<Vec<(String, ServerInfo)>> {
        let mut infos = Vec::new();
        for address in self.primary_addresses() {
            let info = ServerInfo::read(self.connection(&address)?)?;
            infos.push((address, info));
        }
        Ok(infos)
    }

    /// Total keys per database over the whole deployment, now.
    pub fn key_counts(&mut self) -> Result<std::collections::BTreeMap<i64, u64>> {
        let mut counts = std::collections::BTreeMap::new();
        for (_, info) in self.primaries_info()? {
            for (db, keys) in info.keyspace {
                *counts.entry(db).or_insert(0) += keys;
            }
        }
        Ok(counts)
    }
}
