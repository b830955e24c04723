//! `redis-ferry run` between any two server versions: every type, each
//! ordered pair of Redis 5.0, 6.0, 6.2, 7.0, 8.2 and Valkey 8.1, 9.1, through
//! the real pipeline (fence, journal), compared structurally; the journal
//! says how each key was written (`restore` where the target loads the
//! source's payloads, `commands` where it cannot); a hash with field TTLs
//! from Redis 8.2 is kept where the target can and fails with the reason
//! where it cannot; keys above `--big-key-threshold` arrive whole, in
//! chunks, across versions.
//!
//! The binaries come from `.ci/fetch-servers`.

mod common;

use std::collections::BTreeMap;

use common::versions::{
    ALL_VERSIONS, Comparable, REDIS_7_0, REDIS_8_2, ServerVersion, VALKEY_9_1, assert_same_shape,
    fill_every_type_for, shape,
};
use common::*;

/// The journal's CSV, as `(key, outcome, method, error)` per key.
fn audit(journal: &str) -> BTreeMap<Vec<u8>, (String, String, String)> {
    let output = ferry(&["report", "--journal", journal, "--format", "csv"]);
    assert_exit(&output, 0);
    let mut reader = csv::Reader::from_reader(output.stdout.as_slice());
    let headers = reader.headers().unwrap().clone();
    let column = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let (key, outcome, method, error) = (
        column("key"),
        column("outcome"),
        column("method"),
        column("error"),
    );
    reader
        .records()
        .map(|record| {
            let record = record.unwrap();
            (
                unescape(&record[key]),
                (
                    record[outcome].to_string(),
                    record[method].to_string(),
                    record[error].to_string(),
                ),
            )
        })
        .collect()
}

/// The report's escaping, undone (printable ASCII as is, `\\`, `\"`, `\xHH`).
fn unescape(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1)) {
            (b'\\', Some(b'x')) => {
                out.push(u8::from_str_radix(&text[i + 2..i + 4], 16).unwrap());
                i += 4;
            }
            (b'\\', Some(&next)) => {
                out.push(next);
                i += 2;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    out
}

/// Copies `source`'s db 0 into `target`'s db 1 with `run`.
fn run_into_db1(
    source: &RedisServer,
    target: &RedisServer,
    journal: &str,
    extra: &[&str],
) -> std::process::Output {
    redis::cmd("FLUSHDB")
        .exec(&mut target.connection_db(1))
        .unwrap();
    let mut args = vec!["--db", "0", "--db-map", "0:1"];
    args.extend_from_slice(extra);
    run_job(&source.url(), &target.url(), journal, &args)
}

#[test]
fn run_crosses_every_ordered_pair_of_versions() {
    let servers: Vec<(ServerVersion, RedisServer)> = ALL_VERSIONS
        .iter()
        .map(|version| (*version, version.start()))
        .collect();
    let keys: Vec<Vec<Vec<u8>>> = servers
        .iter()
        .map(|(version, server)| fill_every_type_for(&mut server.connection(), version))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let mut rebuilt_pairs = 0;
    for (s, (source_version, source)) in servers.iter().enumerate() {
        for (t, (target_version, target)) in servers.iter().enumerate() {
            if s == t {
                continue;
            }
            let pair = format!("{} -> {}", source_version.label(), target_version.label());
            let journal = dir.path().join(format!("{s}-{t}.db")).display().to_string();
            let output = run_into_db1(source, target, &journal, &[]);
            assert_exit(&output, 0);
            let comparable = Comparable::between(source_version, target_version);
            let (mut from, mut to) = (source.connection(), target.connection_db(1));
            for key in &keys[s] {
                let what = format!("{pair}: {:?}", String::from_utf8_lossy(key));
                let expected = shape(&mut from, key, comparable).expect("the source key");
                let copied = shape(&mut to, key, comparable).unwrap_or_else(|| {
                    panic!("{what}: missing on the target\n{}", describe(&output))
                });
                assert_same_shape(&what, &expected, &copied, 1000);
            }
            let written = audit(&journal);
            assert_eq!(written.len(), keys[s].len(), "{pair}");
            let methods: Vec<&str> = written
                .values()
                .map(|(_, method, _)| method.as_str())
                .collect();
            assert!(
                methods.iter().all(|m| *m == "restore" || *m == "commands"),
                "{pair}: {methods:?}"
            );
            if methods.contains(&"commands") {
                rebuilt_pairs += 1;
            }
        }
    }
    // Newer payloads to older servers, and across forks, are rebuilt.
    assert!(
        rebuilt_pairs >= 15,
        "only {rebuilt_pairs} pairs rebuilt by commands"
    );
}

/// Redis 8.2's hash field TTLs: kept on Valkey 9.1 and Redis 8.2, refused
/// with the reason on Redis 7.0 (the other keys still copied).
#[test]
fn hash_field_ttls_are_kept_or_refused_with_the_reason() {
    let source = REDIS_8_2.start();
    let mut connection = source.connection();
    redis::cmd("HSET")
        .arg("fields")
        .arg(&["a", "1", "b", "2", "c", "3"])
        .exec(&mut connection)
        .unwrap();
    redis::cmd("HPEXPIRE")
        .arg("fields")
        .arg(3_600_000)
        .arg("FIELDS")
        .arg(2)
        .arg("a")
        .arg("b")
        .exec(&mut connection)
        .unwrap();
    redis::cmd("SET")
        .arg("plain")
        .arg("x")
        .exec(&mut connection)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    for target_version in [VALKEY_9_1, REDIS_8_2] {
        let target = target_version.start();
        let journal = dir
            .path()
            .join(format!("{}.db", target_version.label()))
            .display()
            .to_string();
        let output = run_into_db1(&source, &target, &journal, &[]);
        assert_exit(&output, 0);
        let ttls: Vec<i64> = redis::cmd("HPTTL")
            .arg("fields")
            .arg("FIELDS")
            .arg(3)
            .arg("a")
            .arg("b")
            .arg("c")
            .query(&mut target.connection_db(1))
            .unwrap();
        assert!(ttls[0] > 3_500_000 && ttls[1] > 3_500_000, "{ttls:?}");
        assert_eq!(ttls[2], -1, "field c has no TTL");
    }
    let target = REDIS_7_0.start();
    let journal = journal_in(&dir);
    let output = run_into_db1(&source, &target, &journal, &[]);
    assert_exit(&output, 3);
    let written = audit(&journal);
    let (outcome, _, error) = &written[b"fields".as_slice()];
    assert_eq!(outcome, "failed");
    assert!(error.contains("cannot keep field TTLs"), "{error}");
    assert_eq!(written[b"plain".as_slice()].0, "restored");
}

/// Keys above the threshold arrive whole, in chunks, from Redis 8.2 to
/// Valkey 9.1; the journal says `chunked`.
#[test]
fn big_keys_are_copied_in_chunks_across_versions() {
    let source = REDIS_8_2.start();
    let target = VALKEY_9_1.start();
    let mut connection = source.connection();
    let fields: Vec<String> = (0..20_000)
        .flat_map(|i| [format!("f{i}"), format!("v{i}")])
        .collect();
    redis::cmd("HSET")
        .arg("big:hash")
        .arg(&fields)
        .exec(&mut connection)
        .unwrap();
    let items: Vec<String> = (0..20_000).map(|i| format!("item-{i}")).collect();
    redis::cmd("RPUSH")
        .arg("big:list")
        .arg(&items)
        .exec(&mut connection)
        .unwrap();
    redis::cmd("SET")
        .arg("big:string")
        .arg("s".repeat(2_000_000))
        .exec(&mut connection)
        .unwrap();
    redis::cmd("SET")
        .arg("small")
        .arg("x")
        .exec(&mut connection)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);
    let output = run_into_db1(&source, &target, &journal, &["--big-key-threshold", "100K"]);
    assert_exit(&output, 0);
    let written = audit(&journal);
    for key in ["big:hash", "big:list", "big:string"] {
        assert_eq!(written[key.as_bytes()].1, "chunked", "{key}");
    }
    assert_ne!(written[b"small".as_slice()].1, "chunked");
    let comparable = Comparable::between(&REDIS_8_2, &VALKEY_9_1);
    let (mut from, mut to) = (source.connection(), target.connection_db(1));
    for key in ["big:hash", "big:list", "big:string", "small"] {
        let expected = shape(&mut from, key.as_bytes(), comparable).unwrap();
        let copied = shape(&mut to, key.as_bytes(), comparable).expect(key);
        assert_same_shape(key, &expected, &copied, 1000);
    }
}

/// `--keep-idle`: a key idle for a while on the source is as idle on the
/// target (RESTORE IDLETIME), within the clock's one-second resolution.
#[test]
fn keep_idle_carries_the_idle_time() {
    let source = RedisServer::start();
    let target = RedisServer::start();
    redis::cmd("SET")
        .arg("old")
        .arg("x")
        .exec(&mut source.connection())
        .unwrap();
    // OBJECT IDLETIME counts whole seconds: wait for a few.
    wait_until(
        "the key to be idle 3 s",
        std::time::Duration::from_secs(30),
        || {
            let idle: i64 = redis::cmd("OBJECT")
                .arg("IDLETIME")
                .arg("old")
                .query(&mut source.connection())
                .unwrap();
            idle >= 3
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);
    let output = run_job(&source.url(), &target.url(), &journal, &["--keep-idle"]);
    assert_exit(&output, 0);
    let idle: i64 = redis::cmd("OBJECT")
        .arg("IDLETIME")
        .arg("old")
        .query(&mut target.connection())
        .unwrap();
    assert!(idle >= 3, "idle {idle} s on the target");
}
