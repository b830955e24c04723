//! Facts about one Redis server, read from `INFO`: its identity (`run_id`),
//! fork (Redis or Valkey) and version, role, whether it runs in cluster
//! mode, and how many keys each database holds.
//!
//! Valkey reports `redis_version:7.2.4` (the Redis it forked from) next to
//! its own `valkey_version`; [`ServerInfo::version`] keeps the Redis level
//! (what existing feature checks compare against) and
//! [`ServerInfo::fork_version`] the server's own number, which is what an
//! operator should read in a message ([`ServerInfo::product`]).

use std::collections::BTreeMap;

use anyhow::{Context, Result};

use crate::connection::{NodeConnection, expect_text};

/// Which server this is: Redis, or its fork Valkey.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Fork {
    #[default]
    Redis,
    Valkey,
}

impl Fork {
    pub fn name(self) -> &'static str {
        match self {
            Fork::Redis => "Redis",
            Fork::Valkey => "Valkey",
        }
    }
}

/// What `INFO server`, `INFO replication`, `INFO cluster` and
/// `INFO keyspace` say about a server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerInfo {
    pub run_id: String,
    /// `(major, minor, patch)` of `redis_version`: the Redis level the
    /// server is compatible with (7.2.4 on every Valkey so far).
    pub version: (u32, u32, u32),
    pub fork: Fork,
    /// The server's own version: `valkey_version` on Valkey, else
    /// `redis_version`.
    pub fork_version: (u32, u32, u32),
    /// `master` or `slave`.
    pub role: String,
    pub replica_read_only: bool,
    /// `host:port` of the primary when this is a replica.
    pub primary: Option<String>,
    pub cluster_enabled: bool,
    /// Keys per database, from INFO keyspace (databases with no keys are absent).
    pub keyspace: BTreeMap<i64, u64>,
}

impl ServerInfo {
    /// Sends `INFO` (all default sections) and parses it.
    pub fn read(connection: &mut NodeConnection) -> Result<ServerInfo> {
        let reply = connection.command(&redis::cmd("INFO")).with_context(|| {
            format!(
                "cannot read INFO from {} {}",
                connection.endpoint().role,
                connection.endpoint().redacted()
            )
        })?;
        let text = expect_text(reply, "INFO")?;
        Ok(ServerInfo::parse(&text))
    }

    pub fn parse(text: &str) -> ServerInfo {
        let mut info = ServerInfo::default();
        let mut primary_host = None;
        let mut primary_port = None;
        let mut valkey_version = None;
        for line in text.lines() {
            let Some((name, value)) = line.trim_end().split_once(':') else {
                continue;
            };
            match name {
                "run_id" => info.run_id = value.to_string(),
                "redis_version" => info.version = parse_version(value),
                "valkey_version" => valkey_version = Some(parse_version(value)),
                "server_name" if value == "valkey" => info.fork = Fork::Valkey,
                "role" => info.role = value.to_string(),
                "slave_read_only" | "replica_read_only" => info.replica_read_only = value == "1",
                "master_host" => primary_host = Some(value.to_string()),
                "master_port" => primary_port = Some(value.to_string()),
                "cluster_enabled" => info.cluster_enabled = value == "1",
                db if db.starts_with("db") => {
                    if let (Ok(number), Some(keys)) = (db[2..].parse::<i64>(), parse_keys(value)) {
                        info.keyspace.insert(number, keys);
                    }
                }
                _ => {}
            }
        }
        if let (Some(host), Some(port)) = (primary_host, primary_port) {
            info.primary = Some(format!("{host}:{port}"));
        }
        info.fork_version = info.version;
        if let Some(version) = valkey_version {
            info.fork = Fork::Valkey;
            info.fork_version = version;
        }
        info
    }

    pub fn is_replica(&self) -> bool {
        self.role == "slave" || self.role == "replica"
    }

    /// Whether this server has at least `major.minor`.
    pub fn at_least(&self, major: u32, minor: u32) -> bool {
        (self.version.0, self.version.1) >= (major, minor)
    }

    /// The server's own version, `8.1.8` for Valkey 8.1.8.
    pub fn version_text(&self) -> String {
        let (major, minor, patch) = self.fork_version;
        format!("{major}.{minor}.{patch}")
    }

    /// `Redis 7.0.15`, `Valkey 8.1.8`: what the server is, for messages.
    pub fn product(&self) -> String {
        format!("{} {}", self.fork.name(), self.version_text())
    }
}

fn parse_version(text: &str) -> (u32, u32, u32) {
    let mut parts = text.split('.').map(|part| part.parse().unwrap_or(0));
    (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    )
}

/// `keys=12,expires=3,avg_ttl=0` → 12.
fn parse_keys(value: &str) -> Option<u64> {
    value
        .split(',')
        .find_map(|field| field.strip_prefix("keys="))
        .and_then(|keys| keys.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_sections_redis_ferry_uses() {
        let text = "# Server\r\nredis_version:7.0.15\r\nrun_id:abc123\r\n\r\n# Replication\r\n\
                    role:slave\r\nmaster_host:10.0.0.1\r\nmaster_port:6380\r\nslave_read_only:1\r\n\
                    # Cluster\r\ncluster_enabled:0\r\n# Keyspace\r\n\
                    db0:keys=12,expires=3,avg_ttl=0\r\ndb15:keys=1,expires=0,avg_ttl=0\r\n";
        let info = ServerInfo::parse(text);
        assert_eq!(info.run_id, "abc123");
        assert_eq!(info.version, (7, 0, 15));
        assert!(info.is_replica());
        assert!(info.replica_read_only);
        assert_eq!(info.primary.as_deref(), Some("10.0.0.1:6380"));
        assert!(!info.cluster_enabled);
        assert_eq!(info.keyspace, BTreeMap::from([(0, 12), (15, 1)]));
        assert!(info.at_least(7, 0));
        assert!(!info.at_least(7, 2));
        assert_eq!(info.fork, Fork::Redis);
        assert_eq!(info.product(), "Redis 7.0.15");
    }

    #[test]
    fn valkey_is_named_by_its_own_version() {
        let text = "# Server\r\nredis_version:7.2.4\r\nserver_name:valkey\r\n\
                    valkey_version:8.1.8\r\nrun_id:abc\r\n";
        let info = ServerInfo::parse(text);
        assert_eq!(info.fork, Fork::Valkey);
        assert_eq!(info.version, (7, 2, 4));
        assert_eq!(info.fork_version, (8, 1, 8));
        assert_eq!(info.product(), "Valkey 8.1.8");
        assert_eq!(info.version_text(), "8.1.8");
    }
}
