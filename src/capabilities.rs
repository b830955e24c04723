//! What each server can do, and the decision it leads to: can the target
//! load the source's DUMP payloads (RESTORE), or must keys be rebuilt with
//! ordinary commands of their type?
//!
//! Facts come from `INFO` (fork and version), a probe `DUMP` of a key that
//! already exists (its footer says which RDB version the server writes;
//! nothing is ever written to find out), and Valkey's `rdb-version-check`
//! setting. Where a probe is impossible (an empty server, `CONFIG` blocked
//! on a managed service) the version table below stands in, and the
//! per-key fallback ([`is_payload_refused`]) makes a wrong guess cost one
//! round trip, not a failed key.
//!
//! Measured on the servers of the test matrix (string, hash, set, zset and
//! list payloads): Redis 5.0 / 6.0 / 6.2 write RDB 9, Redis 7.0 writes 10,
//! Valkey 8.1 writes 11, Redis 8.2 writes 12, Valkey 9.1 writes 80. Each
//! server loads payloads up to its own version; Valkey 9.1 loads 9-11 and
//! 80 but not Redis's 12 ("foreign") unless `rdb-version-check relaxed`;
//! Valkey 8.1 refuses 12 even when relaxed.

use anyhow::{Context, Result};
use redis::{ServerError, Value};

use crate::connection::NodeConnection;
use crate::options::RestoreMode;
use crate::server::{Fork, ServerInfo};

/// The last bytes of a DUMP payload: a 2-byte little-endian RDB version,
/// then an 8-byte CRC64.
const PAYLOAD_FOOTER_BYTES: usize = 10;
/// Valkey numbers its own RDB formats from 80 up; 12 to 79 are Redis's
/// ("foreign" to Valkey).
const VALKEY_FIRST_OWN_RDB: u16 = 80;
/// The last RDB version Redis and Valkey share.
const LAST_SHARED_RDB: u16 = 11;
/// How many keys a probe DUMP tries before it gives up (a key RANDOMKEY
/// names can expire before the DUMP reaches it, or be too big to DUMP).
const PROBE_ATTEMPTS: usize = 5;
/// The largest key a probe DUMPs (MEMORY USAGE): a DUMP of a big key
/// would block the source for as long as it takes.
const PROBE_MAX_BYTES: i64 = 64 * 1024;

/// Valkey's `rdb-version-check`: `strict` refuses RDB versions it does not
/// know, `relaxed` tries to load them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RdbVersionCheck {
    #[default]
    Strict,
    Relaxed,
}

/// Which of LRU idle time or LFU frequency a server keeps per key (from
/// `maxmemory-policy`), for `--keep-idle`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EvictionClock {
    /// `OBJECT IDLETIME` → `RESTORE ... IDLETIME`.
    #[default]
    Idle,
    /// `OBJECT FREQ` → `RESTORE ... FREQ` (an `*-lfu` policy).
    Frequency,
}

impl EvictionClock {
    /// The `OBJECT` subcommand that reads it on the source.
    pub fn object_subcommand(self) -> &'static str {
        match self {
            EvictionClock::Idle => "IDLETIME",
            EvictionClock::Frequency => "FREQ",
        }
    }

    /// The `RESTORE` option that sets it on the target (Redis 5.0+). A
    /// target whose policy keeps the other clock ignores it.
    pub fn restore_option(self) -> &'static str {
        match self {
            EvictionClock::Idle => "IDLETIME",
            EvictionClock::Frequency => "FREQ",
        }
    }
}

/// Everything the copy needs to know about one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    pub fork: Fork,
    /// The server's own version (`valkey_version` on Valkey).
    pub version: (u32, u32, u32),
    /// The Redis level it is compatible with (`redis_version`).
    pub redis_level: (u32, u32, u32),
    /// The RDB version its DUMP payloads carry.
    pub rdb_version: u16,
    /// Whether `rdb_version` was read from a real payload (else: the table).
    pub rdb_version_probed: bool,
    pub rdb_version_check: RdbVersionCheck,
    pub eviction_clock: EvictionClock,
}

/// Whether a target can load a payload of some RDB version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acceptance {
    Yes,
    /// Valkey with `rdb-version-check relaxed` tries a foreign payload;
    /// most load, a type it does not know is refused.
    Maybe,
    No,
}

impl Capabilities {
    /// What INFO alone says (the RDB version from the table).
    pub fn from_info(info: &ServerInfo) -> Capabilities {
        Capabilities {
            fork: info.fork,
            version: info.fork_version,
            redis_level: info.version,
            rdb_version: table_rdb_version(info.fork, info.fork_version),
            rdb_version_probed: false,
            rdb_version_check: RdbVersionCheck::Strict,
            eviction_clock: EvictionClock::Idle,
        }
    }

    /// Reads INFO, Valkey's `rdb-version-check`, `maxmemory-policy`, and the
    /// RDB version from a probe DUMP of an existing key. Read-only: a
    /// source is never written to. `CONFIG GET` refused (managed services
    /// rename it) leaves the defaults.
    pub fn detect(connection: &mut NodeConnection) -> Result<Capabilities> {
        Capabilities::detect_with(connection, true)
    }

    /// [`Capabilities::detect`], with the probe DUMP or without it (the
    /// RDB version from the table): a DUMP counts as an access, so a job
    /// carrying idle times (`--keep-idle`) must not make one key look used.
    pub fn detect_with(connection: &mut NodeConnection, probe: bool) -> Result<Capabilities> {
        let info = ServerInfo::read(connection)?;
        let mut capabilities = Capabilities::from_info(&info);
        if capabilities.fork == Fork::Valkey
            && config_get(connection, "rdb-version-check").as_deref() == Some("relaxed")
        {
            capabilities.rdb_version_check = RdbVersionCheck::Relaxed;
        }
        if config_get(connection, "maxmemory-policy").is_some_and(|policy| policy.contains("lfu")) {
            capabilities.eviction_clock = EvictionClock::Frequency;
        }
        if probe && let Some(version) = probe_rdb_version(connection)? {
            capabilities.rdb_version = version;
            capabilities.rdb_version_probed = true;
        }
        Ok(capabilities)
    }

    /// `Valkey 8.1.8`, for messages.
    pub fn product(&self) -> String {
        let (major, minor, patch) = self.version;
        format!("{} {major}.{minor}.{patch}", self.fork.name())
    }

    fn own_at_least(&self, major: u32, minor: u32) -> bool {
        (self.version.0, self.version.1) >= (major, minor)
    }

    /// A feature that came with Redis `major.minor` and that every Valkey
    /// has when it came before the fork (7.2).
    fn redis_feature(&self, major: u32, minor: u32) -> bool {
        (self.redis_level.0, self.redis_level.1) >= (major, minor)
    }

    /// Whether a payload of RDB version `rdb` loads here.
    pub fn accepts_rdb(&self, rdb: u16) -> Acceptance {
        let shared_or_older = rdb <= LAST_SHARED_RDB;
        let own_range = match self.fork {
            Fork::Redis => rdb < VALKEY_FIRST_OWN_RDB,
            Fork::Valkey => shared_or_older || rdb >= VALKEY_FIRST_OWN_RDB,
        };
        if own_range && rdb <= self.rdb_version {
            return Acceptance::Yes;
        }
        let foreign_to_valkey = (LAST_SHARED_RDB + 1..VALKEY_FIRST_OWN_RDB).contains(&rdb);
        if self.fork == Fork::Valkey
            && foreign_to_valkey
            && self.rdb_version_check == RdbVersionCheck::Relaxed
            && self.own_at_least(9, 0)
        {
            return Acceptance::Maybe;
        }
        Acceptance::No
    }

    /// Per-field TTLs on hashes (HPEXPIRE, HPEXPIRETIME): Redis 7.4, Valkey 9.0.
    pub fn hash_field_ttls(&self) -> bool {
        match self.fork {
            Fork::Redis => self.own_at_least(7, 4),
            Fork::Valkey => self.own_at_least(9, 0),
        }
    }

    /// Streams' entries-added, max-deleted-id and a group's entries-read
    /// (XSETID ENTRIESADDED / MAXDELETEDID, XGROUP CREATE ... ENTRIESREAD).
    pub fn stream_counters(&self) -> bool {
        self.redis_feature(7, 0)
    }

    /// `XINFO STREAM key FULL` (groups, consumers and pending entries in one reply).
    pub fn xinfo_full(&self) -> bool {
        self.redis_feature(6, 0)
    }

    /// `XGROUP CREATECONSUMER`.
    pub fn create_consumer(&self) -> bool {
        self.redis_feature(6, 2)
    }

    /// `RESTORE ... IDLETIME / FREQ` and `ABSTTL`.
    pub fn restore_eviction_clock(&self) -> bool {
        self.redis_feature(5, 0)
    }

    /// `PEXPIRETIME` (and `EXPIRETIME`).
    pub fn expire_time(&self) -> bool {
        self.redis_feature(7, 0)
    }
}

/// The RDB version a server writes, by fork and version, for when no key
/// exists to probe. A version newer than the table knows is given the
/// newest known number of its fork: a lower bound, since versions only grow.
pub fn table_rdb_version(fork: Fork, version: (u32, u32, u32)) -> u16 {
    let at_least = |major: u32, minor: u32| (version.0, version.1) >= (major, minor);
    match fork {
        Fork::Valkey if at_least(9, 0) => 80,
        Fork::Valkey => 11,
        Fork::Redis if at_least(7, 4) => 12,
        Fork::Redis if at_least(7, 2) => 11,
        Fork::Redis if at_least(7, 0) => 10,
        Fork::Redis if at_least(5, 0) => 9,
        Fork::Redis if at_least(4, 0) => 8,
        Fork::Redis if at_least(3, 2) => 7,
        Fork::Redis => 6,
    }
}

/// The RDB version in a DUMP payload's footer.
pub fn payload_rdb_version(payload: &[u8]) -> Option<u16> {
    if payload.len() < PAYLOAD_FOOTER_BYTES + 1 {
        return None;
    }
    let footer = &payload[payload.len() - PAYLOAD_FOOTER_BYTES..];
    Some(u16::from_le_bytes([footer[0], footer[1]]))
}

/// Whether the target can load this payload (per key: a cluster in the
/// middle of a rolling upgrade has nodes of two versions).
pub fn accepts_payload(target: &Capabilities, payload: &[u8]) -> Acceptance {
    match payload_rdb_version(payload) {
        Some(rdb) => target.accepts_rdb(rdb),
        None => Acceptance::No,
    }
}

/// Whether RESTORE refused the payload itself (another RDB version, a
/// type or encoding the target does not know, a module it lacks), so the
/// key can still be rebuilt by commands. Redis has no error kind for these
/// (both are plain `ERR`), so the text decides.
pub fn is_payload_refused(error: &ServerError) -> bool {
    let details = error.details().unwrap_or("");
    error.code() == "ERR"
        && (details.starts_with("DUMP payload version or checksum are wrong")
            || details.starts_with("Bad data format"))
}

/// How keys will be written, decided once per job from both servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestorePlan {
    pub method: PlannedMethod,
    /// One sentence for the operator: what was decided and why.
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlannedMethod {
    /// DUMP + RESTORE. A payload the target refuses
    /// ([`is_payload_refused`]) is rebuilt by commands when
    /// `fall_back_to_commands`, else the key is `failed`.
    Restore { fall_back_to_commands: bool },
    /// Every key rebuilt with commands of its type.
    Commands,
}

/// Decides up front whether RESTORE can be used between these servers.
pub fn restore_plan(
    source: &Capabilities,
    target: &Capabilities,
    mode: RestoreMode,
) -> RestorePlan {
    let acceptance = target.accepts_rdb(source.rdb_version);
    let versions = format!(
        "source {} writes RDB {}, target {} reads {}",
        source.product(),
        source.rdb_version,
        target.product(),
        readable_range(target)
    );
    let (method, reason) = match (mode, acceptance) {
        (RestoreMode::Commands, _) => (
            PlannedMethod::Commands,
            "--restore-mode commands: every key is rebuilt with commands of its type".to_string(),
        ),
        (RestoreMode::Dump, Acceptance::No) => (
            PlannedMethod::Restore {
                fall_back_to_commands: false,
            },
            format!(
                "{versions}: with --restore-mode dump every key will fail; use --restore-mode auto to rebuild them by commands"
            ),
        ),
        (RestoreMode::Dump, _) => (
            PlannedMethod::Restore {
                fall_back_to_commands: false,
            },
            format!("{versions}: keys are written with RESTORE"),
        ),
        (RestoreMode::Auto, Acceptance::Yes) => (
            PlannedMethod::Restore {
                fall_back_to_commands: true,
            },
            format!("{versions}: keys are written with RESTORE"),
        ),
        (RestoreMode::Auto, Acceptance::Maybe) => (
            PlannedMethod::Restore {
                fall_back_to_commands: true,
            },
            format!(
                "{versions} (rdb-version-check relaxed): keys are written with RESTORE, and a payload it refuses is rebuilt by commands"
            ),
        ),
        (RestoreMode::Auto, Acceptance::No) => (
            PlannedMethod::Commands,
            format!("{versions}: keys are rebuilt with commands of their type"),
        ),
    };
    RestorePlan { method, reason }
}

fn readable_range(target: &Capabilities) -> String {
    match target.fork {
        Fork::Valkey if target.rdb_version >= VALKEY_FIRST_OWN_RDB => {
            format!(
                "up to RDB {LAST_SHARED_RDB} and its own {}",
                target.rdb_version
            )
        }
        _ => format!("up to RDB {}", target.rdb_version),
    }
}

/// `CONFIG GET name`'s value, or `None` when the server does not have the
/// setting or refuses CONFIG.
fn config_get(connection: &mut NodeConnection, name: &str) -> Option<String> {
    let reply = connection
        .command(redis::cmd("CONFIG").arg("GET").arg(name))
        .ok()?;
    let values: Vec<String> = redis::from_redis_value(reply).ok()?;
    values.into_iter().nth(1)
}

/// The RDB version in the DUMP of a small key that exists (RANDOMKEY, and
/// MEMORY USAGE under [`PROBE_MAX_BYTES`]), or `None` on an empty server
/// (or one whose keys all are big).
fn probe_rdb_version(connection: &mut NodeConnection) -> Result<Option<u16>> {
    for _ in 0..PROBE_ATTEMPTS {
        let key = match connection
            .command(&redis::cmd("RANDOMKEY"))
            .context("cannot probe the server's RDB version (RANDOMKEY)")?
        {
            Value::BulkString(key) => key,
            _ => return Ok(None),
        };
        let size = connection.command(
            redis::cmd("MEMORY")
                .arg("USAGE")
                .arg(&key)
                .arg("SAMPLES")
                .arg(1),
        );
        match size {
            Ok(Value::Int(bytes)) if bytes <= PROBE_MAX_BYTES => {}
            // Too big, or gone, or MEMORY refused: try another key.
            _ => continue,
        }
        // A DUMP refused (an ACL on that key) is no reason to stop: the
        // table answers instead.
        match connection.command(redis::cmd("DUMP").arg(&key)) {
            Ok(Value::BulkString(payload)) => return Ok(payload_rdb_version(&payload)),
            Ok(_) => continue,
            Err(_) => return Ok(None),
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(fork: Fork, version: (u32, u32, u32)) -> Capabilities {
        let redis_level = match fork {
            Fork::Redis => version,
            Fork::Valkey => (7, 2, 4),
        };
        Capabilities {
            fork,
            version,
            redis_level,
            rdb_version: table_rdb_version(fork, version),
            rdb_version_probed: false,
            rdb_version_check: RdbVersionCheck::Strict,
            eviction_clock: EvictionClock::Idle,
        }
    }

    fn server_error(text: &str) -> ServerError {
        match redis::parse_redis_value(format!("-{text}\r\n").as_bytes()).unwrap() {
            Value::ServerError(error) => error,
            other => panic!("not an error: {other:?}"),
        }
    }

    const REDIS_5_0: (Fork, (u32, u32, u32)) = (Fork::Redis, (5, 0, 10));
    const REDIS_6_2: (Fork, (u32, u32, u32)) = (Fork::Redis, (6, 2, 14));
    const REDIS_7_0: (Fork, (u32, u32, u32)) = (Fork::Redis, (7, 0, 15));
    const REDIS_8_2: (Fork, (u32, u32, u32)) = (Fork::Redis, (8, 2, 3));
    const VALKEY_8_1: (Fork, (u32, u32, u32)) = (Fork::Valkey, (8, 1, 8));
    const VALKEY_9_1: (Fork, (u32, u32, u32)) = (Fork::Valkey, (9, 1, 2));

    #[test]
    fn the_table_matches_what_the_matrix_servers_write() {
        let written = [
            (REDIS_5_0, 9),
            (REDIS_6_2, 9),
            (REDIS_7_0, 10),
            (REDIS_8_2, 12),
            (VALKEY_8_1, 11),
            (VALKEY_9_1, 80),
        ];
        for ((fork, version), rdb) in written {
            assert_eq!(
                table_rdb_version(fork, version),
                rdb,
                "{fork:?} {version:?}"
            );
        }
    }

    /// The acceptance measured on the real servers (module doc).
    #[test]
    fn acceptance_follows_the_measured_matrix() {
        let all = [
            REDIS_5_0, REDIS_6_2, REDIS_7_0, REDIS_8_2, VALKEY_8_1, VALKEY_9_1,
        ];
        let loads = |(sf, sv): (Fork, (u32, u32, u32)), (tf, tv): (Fork, (u32, u32, u32))| {
            server(tf, tv).accepts_rdb(server(sf, sv).rdb_version) == Acceptance::Yes
        };
        assert!(loads(REDIS_5_0, VALKEY_9_1));
        assert!(loads(VALKEY_8_1, REDIS_8_2));
        assert!(loads(VALKEY_8_1, VALKEY_9_1));
        assert!(loads(REDIS_7_0, VALKEY_8_1));
        assert!(!loads(REDIS_8_2, VALKEY_8_1));
        assert!(!loads(REDIS_8_2, VALKEY_9_1));
        assert!(!loads(VALKEY_9_1, REDIS_8_2));
        assert!(!loads(REDIS_7_0, REDIS_6_2));
        for version in all {
            assert!(
                loads(version, version),
                "{version:?} loads its own payloads"
            );
        }
    }

    #[test]
    fn relaxed_valkey_9_tries_foreign_payloads_and_8_1_does_not() {
        let mut valkey_9 = server(VALKEY_9_1.0, VALKEY_9_1.1);
        valkey_9.rdb_version_check = RdbVersionCheck::Relaxed;
        assert_eq!(valkey_9.accepts_rdb(12), Acceptance::Maybe);
        let mut valkey_8 = server(VALKEY_8_1.0, VALKEY_8_1.1);
        valkey_8.rdb_version_check = RdbVersionCheck::Relaxed;
        assert_eq!(valkey_8.accepts_rdb(12), Acceptance::No);
    }

    #[test]
    fn the_plan_restores_where_it_can_and_rebuilds_where_it_cannot() {
        let redis_8 = server(REDIS_8_2.0, REDIS_8_2.1);
        let valkey_8 = server(VALKEY_8_1.0, VALKEY_8_1.1);
        let plan = restore_plan(&redis_8, &valkey_8, RestoreMode::Auto);
        assert_eq!(plan.method, PlannedMethod::Commands);
        assert_eq!(
            plan.reason,
            "source Redis 8.2.3 writes RDB 12, target Valkey 8.1.8 reads up to RDB 11: keys are rebuilt with commands of their type"
        );
        let plan = restore_plan(&valkey_8, &redis_8, RestoreMode::Auto);
        assert_eq!(
            plan.method,
            PlannedMethod::Restore {
                fall_back_to_commands: true
            }
        );
        let plan = restore_plan(&redis_8, &valkey_8, RestoreMode::Dump);
        assert_eq!(
            plan.method,
            PlannedMethod::Restore {
                fall_back_to_commands: false
            }
        );
        assert!(
            plan.reason.contains("every key will fail"),
            "{}",
            plan.reason
        );
        let plan = restore_plan(&valkey_8, &redis_8, RestoreMode::Commands);
        assert_eq!(plan.method, PlannedMethod::Commands);
    }

    #[test]
    fn features_follow_fork_and_version() {
        assert!(server(REDIS_8_2.0, REDIS_8_2.1).hash_field_ttls());
        assert!(!server(REDIS_7_0.0, REDIS_7_0.1).hash_field_ttls());
        assert!(!server(VALKEY_8_1.0, VALKEY_8_1.1).hash_field_ttls());
        assert!(server(VALKEY_9_1.0, VALKEY_9_1.1).hash_field_ttls());
        assert!(server(VALKEY_8_1.0, VALKEY_8_1.1).stream_counters());
        assert!(!server(REDIS_6_2.0, REDIS_6_2.1).stream_counters());
        assert!(server(REDIS_6_2.0, REDIS_6_2.1).create_consumer());
        assert!(!server(REDIS_5_0.0, REDIS_5_0.1).xinfo_full());
    }

    #[test]
    fn the_footer_carries_the_rdb_version() {
        // DUMP of "v" on Redis 8.2.3.
        let payload = b"\x00\x01v\x0c\x00Z~\xfar\xe3\x12\x14\x87";
        assert_eq!(payload_rdb_version(payload), Some(12));
        assert_eq!(payload_rdb_version(b"short"), None);
        let valkey_8 = server(VALKEY_8_1.0, VALKEY_8_1.1);
        assert_eq!(accepts_payload(&valkey_8, payload), Acceptance::No);
    }

    #[test]
    fn refused_payloads_are_told_from_other_errors() {
        assert!(is_payload_refused(&server_error(
            "ERR DUMP payload version or checksum are wrong"
        )));
        assert!(is_payload_refused(&server_error("ERR Bad data format")));
        assert!(!is_payload_refused(&server_error(
            "NOPERM No permissions to access a key"
        )));
        assert!(!is_payload_refused(&server_error(
            "OOM command not allowed when used memory > 'maxmemory'."
        )));
    }
}
