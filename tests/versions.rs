//! Any server version to any other: every type read on one server with the
//! rebuild reads and written on the other with the rebuild commands,
//! compared structurally (not by DUMP bytes), over every ordered pair of
//! Redis 5.0, 6.0, 6.2, 7.0, 8.2 and Valkey 8.1, 9.1; what each server
//! says it is and which payloads it loads; hash field TTLs; module types.
//!
//! The binaries come from `.ci/fetch-servers`; a missing one fails the test
//! with the command that fetches it.

mod common;

use common::RedisServer;
use common::versions::{
    ALL_VERSIONS, Comparable, REDIS_7_0, REDIS_8_2, ServerVersion, VALKEY_8_1, VALKEY_9_1,
    assert_same_shape, capabilities, copy_by_commands, fill_every_type_for, node_connection,
    servers_dir, shape, write_by_commands,
};
use redis::ConnectionLike;
use redis_ferry::capabilities::{
    Acceptance, PlannedMethod, accepts_payload, is_payload_refused, payload_rdb_version,
    restore_plan,
};
use redis_ferry::endpoint::Role;
use redis_ferry::options::RestoreMode;
use redis_ferry::rebuild::read::{SourceReads, read_values};
use redis_ferry::server::Fork;

/// Every version of the matrix, each started once for the whole test.
fn start_all() -> Vec<(ServerVersion, RedisServer)> {
    ALL_VERSIONS
        .iter()
        .map(|version| (*version, version.start()))
        .collect()
}

#[test]
fn each_binary_is_the_version_it_claims_and_redis_ferry_names_it() {
    for (version, server) in start_all() {
        let caps = capabilities(&server);
        let fork = match version.fork {
            common::versions::Fork::Redis => Fork::Redis,
            common::versions::Fork::Valkey => Fork::Valkey,
        };
        assert_eq!(caps.fork, fork, "{}", version.label());
        assert_eq!(caps.version, version.version, "{}", version.label());
        assert_eq!(caps.product(), version.label());
    }
}

#[test]
fn the_rdb_version_comes_from_a_probe_dump_and_matches_what_restore_accepts() {
    let servers = start_all();
    let mut payloads = Vec::new();
    for (version, server) in &servers {
        let mut connection = server.connection();
        let empty = capabilities(server);
        assert!(
            !empty.rdb_version_probed,
            "{}: nothing to probe yet",
            version.label()
        );
        let _: () = redis::cmd("SET")
            .arg("probe")
            .arg("v")
            .query(&mut connection)
            .unwrap();
        let caps = capabilities(server);
        assert!(caps.rdb_version_probed, "{}", version.label());
        assert_eq!(
            caps.rdb_version,
            empty.rdb_version,
            "{}: table and probe agree",
            version.label()
        );
        let payload: Vec<u8> = redis::cmd("DUMP")
            .arg("probe")
            .query(&mut connection)
            .unwrap();
        assert_eq!(payload_rdb_version(&payload), Some(caps.rdb_version));
        payloads.push((version.label(), payload, caps));
    }
    // What the capabilities predict is what RESTORE does, for every pair.
    for (source_label, payload, source_caps) in &payloads {
        for ((target_version, target), (_, _, target_caps)) in servers.iter().zip(&payloads) {
            let predicted = accepts_payload(target_caps, payload);
            let mut restore = redis::cmd("RESTORE");
            restore
                .arg("restored")
                .arg(0)
                .arg(payload.as_slice())
                .arg("REPLACE");
            let reply = target
                .connection()
                .req_command(&restore)
                .expect("RESTORE answers");
            let loaded = matches!(reply, redis::Value::Okay);
            assert_eq!(
                predicted == Acceptance::Yes,
                loaded,
                "{source_label} -> {}: predicted {predicted:?}, RESTORE said {reply:?}",
                target_version.label()
            );
            if let redis::Value::ServerError(error) = &reply {
                assert!(is_payload_refused(error), "{error:?}");
            }
            let plan = restore_plan(source_caps, target_caps, RestoreMode::Auto);
            let restores = matches!(plan.method, PlannedMethod::Restore { .. });
            assert_eq!(
                restores,
                loaded,
                "{source_label} -> {}: {}",
                target_version.label(),
                plan.reason
            );
        }
    }
}

#[test]
fn every_type_crosses_every_ordered_pair_of_versions() {
    let servers = start_all();
    let keys: Vec<Vec<Vec<u8>>> = servers
        .iter()
        .map(|(version, server)| fill_every_type_for(&mut server.connection(), version))
        .collect();
    let caps: Vec<_> = servers
        .iter()
        .map(|(_, server)| capabilities(server))
        .collect();
    let mut pairs = 0;
    for (s, (source_version, source)) in servers.iter().enumerate() {
        for (t, (target_version, target)) in servers.iter().enumerate() {
            if s == t {
                continue;
            }
            let pair = format!("{} -> {}", source_version.label(), target_version.label());
            // Each server keeps its own dataset in db 0; copies land in db 1.
            let _: () = redis::cmd("FLUSHDB")
                .query(&mut target.connection_db(1))
                .unwrap();
            let mut from = node_connection(source, Role::Source);
            let mut to = node_connection(target, Role::Target);
            to.select(1);
            for key in &keys[s] {
                copy_by_commands(&mut from, &mut to, key, &caps[s], &caps[t])
                    .unwrap_or_else(|e| panic!("{pair}: {:?}: {e}", String::from_utf8_lossy(key)))
                    .unwrap_or_else(|e| {
                        panic!("{pair}: {:?} failed: {e}", String::from_utf8_lossy(key))
                    });
            }
            let comparable = Comparable::between(source_version, target_version);
            let (mut source_reads, mut target_reads) =
                (source.connection(), target.connection_db(1));
            for key in &keys[s] {
                let what = format!("{pair}: {:?}", String::from_utf8_lossy(key));
                let expected = shape(&mut source_reads, key, comparable).expect("source key");
                let copied = shape(&mut target_reads, key, comparable)
                    .unwrap_or_else(|| panic!("{what}: missing on the target"));
                assert_same_shape(&what, &expected, &copied, 1000);
            }
            pairs += 1;
        }
    }
    assert_eq!(pairs, 42);
}

/// A hash whose fields have their own TTLs, on Redis 8.2.
fn hash_with_field_ttls(server: &RedisServer) {
    let mut connection = server.connection();
    let _: () = redis::cmd("HSET")
        .arg("session")
        .arg(&["user", "ann", "token", "abc", "csrf", "xyz"])
        .query(&mut connection)
        .unwrap();
    let _: Vec<i64> = redis::cmd("HPEXPIRE")
        .arg("session")
        .arg(600_000)
        .arg("FIELDS")
        .arg(1)
        .arg("token")
        .query(&mut connection)
        .unwrap();
    let _: Vec<i64> = redis::cmd("HPEXPIRE")
        .arg("session")
        .arg(1_200_000)
        .arg("FIELDS")
        .arg(1)
        .arg("csrf")
        .query(&mut connection)
        .unwrap();
}

#[test]
fn hash_field_ttls_are_kept_where_the_target_can_and_refused_with_a_reason_where_not() {
    let source = REDIS_8_2.start();
    hash_with_field_ttls(&source);
    let source_caps = capabilities(&source);
    for target_version in [VALKEY_9_1, REDIS_8_2] {
        let target = target_version.start();
        let target_caps = capabilities(&target);
        let mut from = node_connection(&source, Role::Source);
        let mut to = node_connection(&target, Role::Target);
        copy_by_commands(&mut from, &mut to, b"session", &source_caps, &target_caps)
            .unwrap()
            .unwrap();
        let comparable = Comparable::between(&REDIS_8_2, &target_version);
        assert!(comparable.field_ttls);
        let expected = shape(&mut source.connection(), b"session", comparable).unwrap();
        let copied = shape(&mut target.connection(), b"session", comparable).unwrap();
        assert_eq!(expected.times.len(), 2, "two fields expire: {expected:?}");
        assert_same_shape(&target_version.label(), &expected, &copied, 1000);
    }
    let old = REDIS_7_0.start();
    let old_caps = capabilities(&old);
    let mut from = node_connection(&source, Role::Source);
    let mut to = node_connection(&old, Role::Target);
    let refusal = copy_by_commands(&mut from, &mut to, b"session", &source_caps, &old_caps)
        .unwrap()
        .unwrap_err();
    assert_eq!(
        refusal,
        "the hash has 2 field(s) with their own TTL, and the target (Redis 7.0.15) cannot keep field TTLs (Redis 7.4+ or Valkey 9 can); copy it to such a server, or remove the field TTLs on the source (HPERSIST) and `retry`"
    );
    let exists: i64 = redis::cmd("EXISTS")
        .arg("session")
        .query(&mut old.connection())
        .unwrap();
    assert_eq!(exists, 0, "nothing half-built is left on the target");
}

#[test]
fn a_module_type_fails_with_the_module_named_and_its_payload_is_refused_elsewhere() {
    let module = servers_dir().join("redis-8.2/falkordb.so");
    assert!(
        module.is_file(),
        "{} is missing; run .ci/fetch-servers",
        module.display()
    );
    let source = REDIS_8_2.start_with(&["--loadmodule", &module.display().to_string()]);
    let _: redis::Value = redis::cmd("GRAPH.QUERY")
        .arg("social")
        .arg("CREATE (:Person {name: 'ann'})")
        .query(&mut source.connection())
        .unwrap();
    let target = VALKEY_8_1.start();
    let payload: Vec<u8> = redis::cmd("DUMP")
        .arg("social")
        .query(&mut source.connection())
        .unwrap();
    let mut restore = redis::cmd("RESTORE");
    restore.arg("social").arg(0).arg(payload);
    let reply = target.connection().req_command(&restore).unwrap();
    match reply {
        redis::Value::ServerError(error) => assert!(is_payload_refused(&error), "{error:?}"),
        other => panic!("Valkey loaded a FalkorDB payload: {other:?}"),
    }
    let mut from = node_connection(&source, Role::Source);
    let mut to = node_connection(&target, Role::Target);
    let refusal = copy_by_commands(
        &mut from,
        &mut to,
        b"social",
        &capabilities(&source),
        &capabilities(&target),
    )
    .unwrap()
    .unwrap_err();
    assert!(
        refusal.starts_with("the key is of the RedisGraph / FalkorDB module's type \"graphdata\""),
        "{refusal}"
    );
}

#[test]
fn the_probe_never_dumps_a_big_key() {
    let server = REDIS_7_0.start();
    let big = "x".repeat(1024 * 1024);
    let _: () = redis::cmd("SET")
        .arg("only-a-big-key")
        .arg(&big)
        .query(&mut server.connection())
        .unwrap();
    let caps = capabilities(&server);
    assert!(
        !caps.rdb_version_probed,
        "a 1 MiB value is not DUMPed to learn a version"
    );
    assert_eq!(caps.rdb_version, 10, "the table answers instead");
    let _: () = redis::cmd("SET")
        .arg("small")
        .arg("v")
        .query(&mut server.connection())
        .unwrap();
    // RANDOMKEY picks one of the two; a few probes find the small one.
    let probed = (0..20).any(|_| capabilities(&server).rdb_version_probed);
    assert!(probed);
}

#[test]
fn values_are_read_at_the_node_serving_each_key_of_a_cluster_source() {
    let cluster = common::RedisCluster::start();
    let mut cluster_connection = cluster.connection();
    let keys = fill_every_type_for(&mut cluster_connection, &REDIS_7_0);
    let endpoint = redis_ferry::endpoint::Endpoint::parse(Role::Source, &cluster.url()).unwrap();
    let mut side = redis_ferry::side::Side::connect(
        &endpoint,
        std::time::Duration::from_secs(30),
        &redis_ferry::interrupt::Shutdown::new(),
    )
    .unwrap();
    let source_caps = capabilities(&cluster.nodes[0]);
    let reads = SourceReads::new(&source_caps, redis_ferry::options::TtlMode::Relative);
    let types = vec![None; keys.len()];
    let values = read_values(&mut side, 0, &keys, types, reads).expect("read from the cluster");
    let target = VALKEY_9_1.start();
    let target_caps = capabilities(&target);
    let mut to = node_connection(&target, Role::Target);
    for (key, read) in keys.iter().zip(values) {
        write_by_commands(&mut to, key, read, &target_caps)
            .unwrap()
            .unwrap_or_else(|e| panic!("{:?}: {e}", String::from_utf8_lossy(key)));
    }
    let comparable = Comparable::between(&REDIS_7_0, &VALKEY_9_1);
    for key in &keys {
        let node = cluster
            .primaries()
            .into_iter()
            .find(|node| {
                // Another node answers MOVED.
                let exists: i64 = redis::cmd("EXISTS")
                    .arg(key)
                    .query(&mut node.connection())
                    .unwrap_or(0);
                exists == 1
            })
            .expect("a primary holds the key");
        let what = format!("{:?}", String::from_utf8_lossy(key));
        let expected = shape(&mut node.connection(), key, comparable).unwrap();
        let copied = shape(&mut target.connection(), key, comparable).unwrap();
        assert_same_shape(&what, &expected, &copied, 1000);
    }
}

#[test]
fn valkey_9_relaxed_is_tried_with_restore_and_the_eviction_clock_follows_the_policy() {
    let source = REDIS_8_2.start_with(&["--maxmemory-policy", "allkeys-lfu"]);
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query(&mut source.connection())
        .unwrap();
    let source_caps = capabilities(&source);
    assert_eq!(
        source_caps.eviction_clock,
        redis_ferry::capabilities::EvictionClock::Frequency
    );
    let strict = capabilities(&VALKEY_9_1.start());
    assert_eq!(
        restore_plan(&source_caps, &strict, RestoreMode::Auto).method,
        PlannedMethod::Commands
    );
    let relaxed_server = VALKEY_9_1.start_with(&["--rdb-version-check", "relaxed"]);
    let relaxed = capabilities(&relaxed_server);
    assert_eq!(
        relaxed.rdb_version_check,
        redis_ferry::capabilities::RdbVersionCheck::Relaxed
    );
    let plan = restore_plan(&source_caps, &relaxed, RestoreMode::Auto);
    assert_eq!(
        plan.method,
        PlannedMethod::Restore {
            fall_back_to_commands: true
        },
        "{}",
        plan.reason
    );
    assert!(
        plan.reason.contains("rdb-version-check relaxed"),
        "{}",
        plan.reason
    );
    let payload: Vec<u8> = redis::cmd("DUMP")
        .arg("k")
        .query(&mut source.connection())
        .unwrap();
    let mut restore = redis::cmd("RESTORE");
    restore.arg("k").arg(0).arg(payload);
    let reply = relaxed_server.connection().req_command(&restore).unwrap();
    assert_eq!(
        reply,
        redis::Value::Okay,
        "relaxed Valkey 9.1 loads a Redis 8.2 string"
    );
    // ...but not a hash with field TTLs: the per-key fallback's case.
    hash_with_field_ttls(&source);
    let payload: Vec<u8> = redis::cmd("DUMP")
        .arg("session")
        .query(&mut source.connection())
        .unwrap();
    let mut restore = redis::cmd("RESTORE");
    restore.arg("session").arg(0).arg(payload);
    match relaxed_server.connection().req_command(&restore).unwrap() {
        redis::Value::ServerError(error) => assert!(is_payload_refused(&error), "{error:?}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}
