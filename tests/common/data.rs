//! Test datasets and a structural snapshot of a server's data, to check
//! that the target holds what the source holds (values by type, not DUMP
//! bytes: two equal values can be encoded differently).

use std::collections::BTreeMap;

use redis::{ConnectionLike, Value};

/// Writes `commands` in one pipeline and checks none failed.
pub fn pipeline_write(connection: &mut dyn ConnectionLike, pipe: &redis::Pipeline) {
    let replies: Vec<Value> = pipe.query(connection).expect("pipelined writes succeed");
    for reply in replies {
        if let Value::ServerError(error) = reply {
            panic!("test data write failed: {error:?}");
        }
    }
}

/// `count` string keys `prefix:N` with a 100-byte value, written in
/// pipelines of 1000. Every `ttl_every`-th key gets a 2-hour TTL.
pub fn fill_strings(
    connection: &mut dyn ConnectionLike,
    prefix: &str,
    count: usize,
    ttl_every: Option<usize>,
) {
    let value = "v".repeat(100);
    for chunk in (0..count).collect::<Vec<_>>().chunks(1000) {
        let mut pipe = redis::pipe();
        for &i in chunk {
            let key = format!("{prefix}:{i}");
            match ttl_every {
                Some(every) if i % every == 0 => pipe
                    .cmd("SET")
                    .arg(&key)
                    .arg(&value)
                    .arg("PX")
                    .arg(7_200_000)
                    .ignore(),
                _ => pipe.cmd("SET").arg(&key).arg(&value).ignore(),
            };
        }
        pipe.cmd("PING");
        let _: Vec<Value> = pipe.query(connection).expect("fill strings");
    }
}

/// One key of every type, some with TTLs, under `prefix`. Returns the
/// number of keys written.
pub fn fill_every_type(connection: &mut dyn ConnectionLike, prefix: &str) -> usize {
    let mut pipe = redis::pipe();
    pipe.cmd("SET")
        .arg(format!("{prefix}:string"))
        .arg("hello world");
    pipe.cmd("RPUSH")
        .arg(format!("{prefix}:list"))
        .arg(&["a", "b", "c", "a"]);
    pipe.cmd("SADD")
        .arg(format!("{prefix}:set"))
        .arg(&["x", "y", "z"]);
    pipe.cmd("ZADD")
        .arg(format!("{prefix}:zset"))
        .arg(&["1.5", "one", "-2", "two", "1e10", "big"]);
    pipe.cmd("HSET")
        .arg(format!("{prefix}:hash"))
        .arg(&["f1", "v1", "f2", "v2"]);
    pipe.cmd("XADD")
        .arg(format!("{prefix}:stream"))
        .arg("1-1")
        .arg(&["a", "1"]);
    pipe.cmd("XADD")
        .arg(format!("{prefix}:stream"))
        .arg("2-1")
        .arg(&["b", "2"]);
    pipe.cmd("XGROUP")
        .arg("CREATE")
        .arg(format!("{prefix}:stream"))
        .arg("readers")
        .arg("0");
    pipe.cmd("XREADGROUP")
        .arg("GROUP")
        .arg("readers")
        .arg("alice")
        .arg("COUNT")
        .arg(1)
        .arg("STREAMS")
        .arg(format!("{prefix}:stream"))
        .arg(">");
    // Big enough to leave the compact encodings.
    let members: Vec<String> = (0..300).map(|i| format!("member-{i}")).collect();
    pipe.cmd("SADD")
        .arg(format!("{prefix}:bigset"))
        .arg(&members);
    let fields: Vec<String> = (0..300)
        .flat_map(|i| [format!("field-{i}"), format!("value-{i}")])
        .collect();
    pipe.cmd("HSET")
        .arg(format!("{prefix}:bighash"))
        .arg(&fields);
    pipe.cmd("SET")
        .arg(format!("{prefix}:with-ttl"))
        .arg("expires later")
        .arg("PX")
        .arg(7_200_000);
    pipe.cmd("PEXPIRE")
        .arg(format!("{prefix}:hash"))
        .arg(3_600_000);
    pipeline_write(connection, &pipe);
    9
}

/// A key's value, compared structurally.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    String(Vec<u8>),
    List(Vec<Vec<u8>>),
    Set(Vec<Vec<u8>>),
    /// (member, score as text)
    ZSet(Vec<(Vec<u8>, String)>),
    Hash(Vec<(Vec<u8>, Vec<u8>)>),
    /// Entries, then groups as (name, last-delivered-id, pending, consumers).
    Stream(Vec<Value>, Vec<(String, String, i64, Vec<String>)>),
    Other(String),
}

/// A key as a snapshot holds it: value and expiry. The expiry is absolute
/// (PEXPIRETIME, Unix ms; -1 for none), so two snapshots taken seconds
/// apart still compare: a remaining TTL would drift while they are read.
#[derive(Debug, Clone, PartialEq)]
pub struct KeySnapshot {
    pub data: Data,
    pub expire_at: i64,
}

/// Every key of database `db` with its value and TTL. Meant for test-sized
/// data only (loads everything).
pub fn snapshot(connection: &mut dyn ConnectionLike, db: i64) -> BTreeMap<Vec<u8>, KeySnapshot> {
    redis::cmd("SELECT")
        .arg(db)
        .exec(connection)
        .expect("select");
    let mut keys: Vec<Vec<u8>> = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, batch): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .query(connection)
            .expect("scan");
        keys.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter_map(|key| key_snapshot(connection, &key).map(|snap| (key, snap)))
        .collect()
}

/// Reads one key (None when it does not exist).
pub fn key_snapshot(connection: &mut dyn ConnectionLike, key: &[u8]) -> Option<KeySnapshot> {
    let key_type: String = redis::cmd("TYPE").arg(key).query(connection).expect("type");
    let data = match key_type.as_str() {
        "none" => return None,
        "string" => Data::String(redis::cmd("GET").arg(key).query(connection).expect("get")),
        "list" => Data::List(
            redis::cmd("LRANGE")
                .arg(key)
                .arg(0)
                .arg(-1)
                .query(connection)
                .expect("lrange"),
        ),
        "set" => {
            let mut members: Vec<Vec<u8>> = redis::cmd("SMEMBERS")
                .arg(key)
                .query(connection)
                .expect("smembers");
            members.sort();
            Data::Set(members)
        }
        "zset" => {
            let pairs: Vec<(Vec<u8>, String)> = redis::cmd("ZRANGE")
                .arg(key)
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES")
                .query(connection)
                .expect("zrange");
            Data::ZSet(pairs)
        }
        "hash" => {
            let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = redis::cmd("HGETALL")
                .arg(key)
                .query(connection)
                .expect("hgetall");
            pairs.sort();
            Data::Hash(pairs)
        }
        "stream" => {
            let entries: Vec<Value> = redis::cmd("XRANGE")
                .arg(key)
                .arg("-")
                .arg("+")
                .query(connection)
                .expect("xrange");
            let groups: Vec<Value> = redis::cmd("XINFO")
                .arg("GROUPS")
                .arg(key)
                .query(connection)
                .expect("xinfo");
            let mut described = Vec::new();
            for group in groups {
                let fields: BTreeMap<String, Value> =
                    redis::from_redis_value(group).expect("group map");
                let name: String = redis::from_redis_value(fields["name"].clone()).unwrap();
                let last: String =
                    redis::from_redis_value(fields["last-delivered-id"].clone()).unwrap();
                let pending: i64 = redis::from_redis_value(fields["pending"].clone()).unwrap();
                let consumers: Vec<Value> = redis::cmd("XINFO")
                    .arg("CONSUMERS")
                    .arg(key)
                    .arg(&name)
                    .query(connection)
                    .expect("xinfo consumers");
                let mut names: Vec<String> = consumers
                    .into_iter()
                    .map(|c| {
                        let fields: BTreeMap<String, Value> = redis::from_redis_value(c).unwrap();
                        redis::from_redis_value(fields["name"].clone()).unwrap()
                    })
                    .collect();
                names.sort();
                described.push((name, last, pending, names));
            }
            Data::Stream(entries, described)
        }
        other => Data::Other(other.to_string()),
    };
    let expire_at: i64 = redis::cmd("PEXPIRETIME")
        .arg(key)
        .query(connection)
        .expect("pexpiretime");
    Some(KeySnapshot { data, expire_at })
}

/// Asserts two snapshots hold the same keys and values, with expiry times
/// within `ttl_tolerance_ms` (and persistent on both sides or neither).
#[track_caller]
pub fn assert_same_data(
    source: &BTreeMap<Vec<u8>, KeySnapshot>,
    target: &BTreeMap<Vec<u8>, KeySnapshot>,
    ttl_tolerance_ms: i64,
) {
    let missing: Vec<_> = source
        .keys()
        .filter(|k| !target.contains_key(*k))
        .take(5)
        .collect();
    let extra: Vec<_> = target
        .keys()
        .filter(|k| !source.contains_key(*k))
        .take(5)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "source has {} keys, target {}; first missing on target: {:?}; first extra: {:?}",
        source.len(),
        target.len(),
        missing
            .iter()
            .map(|k| String::from_utf8_lossy(k))
            .collect::<Vec<_>>(),
        extra
            .iter()
            .map(|k| String::from_utf8_lossy(k))
            .collect::<Vec<_>>()
    );
    for (key, expected) in source {
        let actual = &target[key];
        assert_eq!(
            actual.data,
            expected.data,
            "value of {:?} differs",
            String::from_utf8_lossy(key)
        );
        match (expected.expire_at, actual.expire_at) {
            (-1, -1) => {}
            (s, t) if s >= 0 && t >= 0 => assert!(
                (s - t).abs() <= ttl_tolerance_ms,
                "TTL of {:?}: source {s} ms, target {t} ms",
                String::from_utf8_lossy(key)
            ),
            (s, t) => panic!(
                "TTL of {:?}: source {s}, target {t}",
                String::from_utf8_lossy(key)
            ),
        }
    }
}

/// Asserts two servers hold the same data in the given databases.
#[track_caller]
pub fn assert_servers_equal(source: &super::RedisServer, target: &super::RedisServer, dbs: &[i64]) {
    for &db in dbs {
        let s = snapshot(&mut source.connection(), db);
        let t = snapshot(&mut target.connection(), db);
        assert_same_data(&s, &t, 5000);
    }
}

/// Keys per database, from INFO keyspace.
pub fn dbsize(connection: &mut dyn ConnectionLike, db: i64) -> u64 {
    redis::cmd("SELECT")
        .arg(db)
        .exec(connection)
        .expect("select");
    redis::cmd("DBSIZE").query(connection).expect("dbsize")
}

/// Every key of a cluster (merged from each primary, db 0).
pub fn cluster_snapshot(cluster: &super::RedisCluster) -> BTreeMap<Vec<u8>, KeySnapshot> {
    let mut all = BTreeMap::new();
    for node in cluster.primaries() {
        all.extend(snapshot(&mut node.connection(), 0));
    }
    all
}

/// Keys spread over every slot, plus hash-tagged groups that share a slot.
pub fn fill_cluster_keys(connection: &mut redis::cluster::ClusterConnection, count: usize) {
    for chunk in (0..count).collect::<Vec<_>>().chunks(500) {
        for &i in chunk {
            let _: () = redis::cmd("SET")
                .arg(format!("key:{i}"))
                .arg(format!("value {i}"))
                .query(connection)
                .expect("set");
        }
    }
    for group in 0..20 {
        for member in 0..5 {
            let key = format!("{{user{group}}}:field{member}");
            let _: () = redis::cmd("HSET")
                .arg(&key)
                .arg("f")
                .arg(member)
                .query(connection)
                .expect("hset");
        }
        let _: () = redis::cmd("PEXPIRE")
            .arg(format!("{{user{group}}}:field0"))
            .arg(3_600_000)
            .query(connection)
            .expect("pexpire");
    }
}
