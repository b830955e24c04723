//! `redis-ferry verify` tells an operator whether the new server holds what
//! the old one does: exactly the keys that differ, by kind, with exit 0 or
//! 3; `retry --outcome mismatch` repairs what it records; equal values in
//! other encodings are not differences; big values are compared in chunks;
//! and neither server is written to.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Output;

use common::*;
use redis::Value;

fn verify(args: &[&str]) -> Output {
    let mut all = vec!["verify", "--progress", "off"];
    all.extend_from_slice(args);
    ferry(&all)
}

fn copy(source: &RedisServer, target: &RedisServer, journal: &str, extra: &[&str]) {
    let (s, t) = (source.url(), target.url());
    let mut args = vec![
        "run",
        "--source",
        &s,
        "--target",
        &t,
        "--journal",
        journal,
        "--progress",
        "off",
    ];
    args.extend_from_slice(extra);
    assert_exit(&ferry(&args), 0);
}

/// The differing keys the summary lists: escaped key → what differs, with
/// the milliseconds of a TTL difference written `N` (they move with time).
fn listed(output: &Output) -> BTreeMap<String, String> {
    stdout(output)
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("  db ")?;
            let (_, rest) = rest.split_once(" \"")?;
            let (key, detail) = rest.split_once("\": ")?;
            Some((key.to_string(), without_milliseconds(detail)))
        })
        .collect()
}

/// "ttl differs: source 7199265 ms, target none" → "... source N ms, ...".
fn without_milliseconds(detail: &str) -> String {
    if !detail.starts_with("ttl differs") {
        return detail.to_string();
    }
    let mut out = String::new();
    let mut in_number = false;
    for c in detail.chars() {
        if c.is_ascii_digit() {
            if !in_number {
                out.push('N');
            }
            in_number = true;
        } else {
            in_number = false;
            out.push(c);
        }
    }
    out
}

/// The number the summary gives for one kind of difference.
#[track_caller]
fn count(output: &Output, label: &str) -> u64 {
    stdout(output)
        .lines()
        .find_map(|line| line.trim_start().strip_prefix(label))
        .and_then(|rest| rest.trim().parse().ok())
        .unwrap_or_else(|| panic!("no count for {label:?}:\n{}", describe(output)))
}

#[track_caller]
fn assert_listed(output: &Output, expected: &[(&str, &str)]) {
    let listed = listed(output);
    let expected: BTreeMap<String, String> = expected
        .iter()
        .map(|(k, d)| (k.to_string(), d.to_string()))
        .collect();
    assert_eq!(listed, expected, "{}", describe(output));
}

fn cmd(connection: &mut redis::Connection, args: &[&str]) {
    let mut command = redis::Cmd::new();
    for arg in args {
        command.arg(*arg);
    }
    command.exec(connection).expect("test command succeeds");
}

fn dump(server: &RedisServer, key: &str) -> Option<Vec<u8>> {
    redis::cmd("DUMP")
        .arg(key)
        .query(&mut server.connection())
        .unwrap()
}

/// Starts counting commands afresh on a server.
fn reset_command_stats(server: &RedisServer) {
    cmd(&mut server.connection(), &["CONFIG", "RESETSTAT"]);
}

/// The commands the server ran since the last reset, by name.
fn commands_run(server: &RedisServer) -> BTreeSet<String> {
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut server.connection())
        .unwrap();
    stats
        .lines()
        .filter_map(|line| line.strip_prefix("cmdstat_"))
        .filter_map(|line| line.split(':').next())
        .map(str::to_string)
        .collect()
}

/// The commands run since the last reset that Redis itself flags `write`.
fn write_commands_run(server: &RedisServer) -> Vec<String> {
    let mut connection = server.connection();
    commands_run(server)
        .into_iter()
        .filter(|name| {
            let container = name.split('|').next().unwrap();
            let info: Value = redis::cmd("COMMAND")
                .arg("INFO")
                .arg(container)
                .query(&mut connection)
                .unwrap();
            let Value::Array(commands) = info else {
                return false;
            };
            commands.iter().any(|command| match command {
                Value::Array(parts) => matches!(parts.get(2), Some(Value::Array(flags))
                    if flags.iter().any(|f| matches!(f, Value::SimpleString(s) if s == "write"))),
                _ => false,
            })
        })
        .collect()
}

#[test]
fn verify_reports_exactly_what_changed_on_the_target_and_retry_repairs_it() {
    let source = RedisServer::start();
    let target = RedisServer::start();
    fill_strings(&mut source.connection(), "k", 2000, Some(10));
    fill_every_type(&mut source.connection(), "t");
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);
    copy(&source, &target, &journal, &[]);

    let clean = verify(&["--journal", &journal]);
    assert_exit(&clean, 0);
    let total = dbsize(&mut source.connection(), 0);
    assert!(
        stdout(&clean).contains(&format!("checked {total} keys")),
        "{}",
        describe(&clean)
    );
    assert!(stdout(&clean).contains("result: no differences"));

    let mut t = target.connection();
    cmd(&mut t, &["SET", "k:1", "changed"]);
    cmd(&mut t, &["HSET", "t:hash", "f1", "other"]);
    cmd(&mut t, &["LSET", "t:list", "0", "z"]);
    cmd(&mut t, &["DEL", "k:2", "t:set"]);
    cmd(&mut t, &["PERSIST", "k:10"]);
    cmd(&mut t, &["SET", "extra:1", "x"]);
    cmd(&mut t, &["SET", "extra:2", "y"]);

    assert!(
        write_commands_run(&target).contains(&"set".to_string()),
        "the read-only check below must be able to see writes"
    );
    reset_command_stats(&source);
    reset_command_stats(&target);
    let found = verify(&["--journal", &journal]);
    assert_exit(&found, 3);
    let expected = [
        (
            "k:1",
            "value differs: string is 100 bytes on the source, 7 on the target",
        ),
        ("t:hash", "value differs: hash field \"f1\" differs"),
        ("t:list", "value differs: list element 0 differs"),
        ("k:2", "missing on target"),
        ("t:set", "missing on target"),
        ("k:10", "ttl differs: source N ms, target none"),
    ];
    assert_listed(&found, &expected);
    assert_eq!(count(&found, "missing on target"), 2);
    assert_eq!(count(&found, "value differs"), 3);
    assert_eq!(count(&found, "ttl differs"), 1);
    assert_eq!(count(&found, "type differs"), 0);
    assert!(stdout(&found).contains("only on target       not checked"));
    assert!(stdout(&found).contains("--outcome mismatch"));
    assert_eq!(write_commands_run(&source), Vec::<String>::new());
    assert_eq!(write_commands_run(&target), Vec::<String>::new());

    let with_extra = verify(&["--journal", &journal, "--extra"]);
    assert_exit(&with_extra, 3);
    let extra = "only on target: the source has no such key";
    let mut expected = expected.to_vec();
    expected.extend([("extra:1", extra), ("extra:2", extra)]);
    assert_listed(&with_extra, &expected);
    assert_eq!(count(&with_extra, "only on target"), 2);
    assert_eq!(status_json(&journal)["outcomes"]["mismatch"], 8);

    let retry = ferry(&[
        "retry",
        "--journal",
        &journal,
        "--outcome",
        "mismatch",
        "--progress",
        "off",
    ]);
    assert_exit(&retry, 0);
    let repaired = verify(&["--journal", &journal, "--extra"]);
    assert_exit(&repaired, 0);
    assert!(stdout(&repaired).contains("result: no differences"));
    assert_eq!(status_json(&journal)["outcomes"]["mismatch"], 0);
    assert_servers_equal(&source, &target, &[0]);
}

#[test]
fn equal_values_in_other_encodings_are_not_differences() {
    let source = RedisServer::start();
    let target = RedisServer::start_with(&[
        "--hash-max-listpack-entries",
        "0",
        "--set-max-intset-entries",
        "0",
        "--zset-max-listpack-entries",
        "0",
        "--list-max-listpack-size",
        "1",
    ]);
    for (server, big_score) in [(&source, "1e10"), (&target, "10000000000")] {
        let mut c = server.connection();
        let elements: Vec<String> = (0..200).map(|i| format!("element-{i}")).collect();
        let mut rpush = vec!["RPUSH", "list"];
        rpush.extend(elements.iter().map(String::as_str));
        cmd(&mut c, &rpush);
        cmd(
            &mut c,
            &["HSET", "hash", "f1", "v1", "f2", "v2", "f3", "v3"],
        );
        cmd(&mut c, &["SADD", "ints", "1", "2", "3", "42"]);
        cmd(&mut c, &["ZADD", "zset", "1.5", "one", big_score, "big"]);
        cmd(&mut c, &["XADD", "stream", "1-1", "a", "1"]);
        cmd(&mut c, &["XADD", "stream", "2-1", "b", "2"]);
        cmd(&mut c, &["XGROUP", "CREATE", "stream", "readers", "0"]);
        cmd(
            &mut c,
            &[
                "XREADGROUP",
                "GROUP",
                "readers",
                "alice",
                "COUNT",
                "1",
                "STREAMS",
                "stream",
                ">",
            ],
        );
    }
    // Another delivery time for the same pending entry: DUMP differs, the
    // stream (entries, group, consumer, delivery count) does not.
    cmd(
        &mut target.connection(),
        &[
            "XCLAIM", "stream", "readers", "alice", "0", "1-1", "IDLE", "60000", "JUSTID",
        ],
    );
    for key in ["list", "hash", "ints", "zset", "stream"] {
        assert_ne!(
            dump(&source, key),
            dump(&target, key),
            "{key}: the DUMP payloads must differ, or this test proves nothing"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let (s, t) = (source.url(), target.url());
    let run = |extra: &[&str]| {
        let mut args = vec![
            "verify",
            "--progress",
            "off",
            "--source",
            &s,
            "--target",
            &t,
        ];
        args.extend_from_slice(extra);
        ferry_command(&args)
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let same = run(&["--extra"]);
    assert_exit(&same, 0);
    assert!(
        stdout(&same).contains("checked 5 keys"),
        "{}",
        describe(&same)
    );
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "without --journal nothing is written, not even a journal"
    );

    // The structural comparison still sees real differences.
    cmd(&mut target.connection(), &["HSET", "hash", "f3", "other"]);
    cmd(
        &mut target.connection(),
        &["XACK", "stream", "readers", "1-1"],
    );
    let differs = run(&[]);
    assert_exit(&differs, 3);
    assert_listed(
        &differs,
        &[
            ("hash", "value differs: hash field \"f3\" differs"),
            (
                "stream",
                "value differs: stream consumer group \"readers\" differs (last delivered id, pending entries or consumers)",
            ),
        ],
    );
    assert!(stdout(&differs).contains("verify with the job's --journal to record them"));
}

#[test]
fn big_values_are_compared_in_chunks_and_never_dumped() {
    let source = RedisServer::start();
    let target = RedisServer::start();
    let mut c = source.connection();
    let padding = "p".repeat(40);
    for chunk in 0..20 {
        let mut pipe = redis::pipe();
        for i in chunk * 1000..(chunk + 1) * 1000 {
            pipe.cmd("HSET")
                .arg("bighash")
                .arg(format!("f:{i}"))
                .arg(format!("{padding}{i}"))
                .ignore();
            pipe.cmd("SADD")
                .arg("bigset")
                .arg(format!("m:{i}:{padding}"))
                .ignore();
            pipe.cmd("ZADD")
                .arg("bigzset")
                .arg(i as f64 * 1.5)
                .arg(format!("m:{i}:{padding}"))
                .ignore();
            pipe.cmd("RPUSH")
                .arg("biglist")
                .arg(format!("{padding}{i}"))
                .ignore();
        }
        pipeline_write(&mut c, &pipe);
    }
    cmd(&mut c, &["SET", "bigstring", &"x".repeat(2 * 1024 * 1024)]);
    let keys = ["bighash", "bigset", "bigzset", "biglist", "bigstring"];
    for key in keys {
        let memory: u64 = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(key)
            .query(&mut c)
            .unwrap();
        assert!(
            memory > redis_ferry::verify::compare::DUMP_MAX_BYTES,
            "{key} holds {memory} bytes: too small to be compared in chunks"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);
    copy(&source, &target, &journal, &[]);
    assert_exit(&verify(&["--journal", &journal]), 0);

    let mut t = target.connection();
    cmd(&mut t, &["HSET", "bighash", "f:12345", "other"]);
    let gone = format!("m:777:{padding}");
    cmd(&mut t, &["SREM", "bigset", &gone]);
    cmd(&mut t, &["SADD", "bigset", "intruder"]);
    cmd(
        &mut t,
        &["ZADD", "bigzset", "0.25", &format!("m:5000:{padding}")],
    );
    cmd(&mut t, &["LSET", "biglist", "15000", "changed"]);
    cmd(&mut t, &["SETRANGE", "bigstring", "1572864", "Y"]);
    reset_command_stats(&source);
    reset_command_stats(&target);
    let found = verify(&["--journal", &journal]);
    assert_exit(&found, 3);
    let set_detail = format!("value differs: set member \"{gone}\" is missing on the target");
    let zset_detail = format!("value differs: score of zset member \"m:5000:{padding}\" differs");
    assert_listed(
        &found,
        &[
            ("bighash", "value differs: hash field \"f:12345\" differs"),
            ("bigset", &set_detail),
            ("bigzset", &zset_detail),
            ("biglist", "value differs: list element 15000 differs"),
            (
                "bigstring",
                "value differs: string differs from byte 1572864",
            ),
        ],
    );
    for server in [&source, &target] {
        let seen = commands_run(server);
        assert!(!seen.contains("dump"), "a big value was dumped: {seen:?}");
    }
    let target_seen = commands_run(&target);
    for chunked in ["hmget", "smismember", "zmscore", "lrange", "getrange"] {
        assert!(
            target_seen.contains(chunked),
            "{chunked} not used: {target_seen:?}"
        );
    }

    let retry = ferry(&[
        "retry",
        "--journal",
        &journal,
        "--outcome",
        "mismatch",
        "--progress",
        "off",
    ]);
    assert_exit(&retry, 0);
    assert_exit(&verify(&["--journal", &journal]), 0);
}

#[test]
fn binary_keys_are_compared_and_shown_escaped() {
    let source = RedisServer::start();
    let target = RedisServer::start();
    let mut c = source.connection();
    let keys: [&[u8]; 4] = [
        b"nul\x00inside",
        b"crlf\r\nkey",
        b"quote\"and\\backslash",
        &[0xff, 0xfe, b'x'],
    ];
    for key in keys {
        redis::cmd("SET")
            .arg(key)
            .arg(b"v\x00")
            .exec(&mut c)
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    copy(&source, &target, &journal_in(&dir), &[]);
    let (s, t) = (source.url(), target.url());
    let args = ["--source", s.as_str(), "--target", t.as_str()];
    assert_exit(&verify(&args), 0);

    let mut tc = target.connection();
    redis::cmd("DEL").arg(keys[0]).exec(&mut tc).unwrap();
    redis::cmd("SET")
        .arg(keys[2])
        .arg("other")
        .exec(&mut tc)
        .unwrap();
    redis::cmd("SET")
        .arg(keys[3])
        .arg(b"v\x00")
        .arg("EX")
        .arg(100)
        .exec(&mut tc)
        .unwrap();
    let found = verify(&args);
    assert_exit(&found, 3);
    assert_listed(
        &found,
        &[
            ("nul\\x00inside", "missing on target"),
            (
                "quote\\\"and\\\\backslash",
                "value differs: string is 2 bytes on the source, 5 on the target",
            ),
            ("\\xff\\xfex", "ttl differs: source none, target N ms"),
        ],
    );
    assert!(
        stdout(&found).contains("  db 0 \"nul\\x00inside\": missing on target"),
        "{}",
        describe(&found)
    );
}

#[test]
fn a_sample_checks_that_many_random_keys() {
    let source = RedisServer::start();
    let target = RedisServer::start();
    fill_strings(&mut source.connection(), "k", 3000, None);
    let dir = tempfile::tempdir().unwrap();
    copy(&source, &target, &journal_in(&dir), &[]);
    let (s, t) = (source.url(), target.url());
    let sampled = verify(&["--source", &s, "--target", &t, "--sample", "50"]);
    assert_exit(&sampled, 0);
    assert!(
        stdout(&sampled).contains("checked a random sample of 50 keys (asked for 50)"),
        "{}",
        describe(&sampled)
    );

    cmd(&mut target.connection(), &["FLUSHALL"]);
    let broken = verify(&[
        "--source", &s, "--target", &t, "--sample", "50", "--show", "5",
    ]);
    assert_exit(&broken, 3);
    assert_eq!(count(&broken, "missing on target"), 50);
    assert_eq!(listed(&broken).len(), 5);

    // A sample as big as the data is a full check.
    let everything = verify(&["--source", &s, "--target", &t, "--sample", "100000"]);
    assert_exit(&everything, 3);
    assert_eq!(count(&everything, "missing on target"), 3000);
    assert!(stdout(&everything).contains("checked 3000 keys"));
}

#[test]
fn match_narrows_the_check_and_a_jobs_own_pattern_still_applies() {
    let source = RedisServer::start();
    let target = RedisServer::start();
    fill_strings(&mut source.connection(), "a", 100, None);
    fill_strings(&mut source.connection(), "b", 100, None);
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);
    copy(&source, &target, &journal, &["--match", "a:*"]);
    // Keys the job left out are not missing: they are out of its scope.
    assert_exit(&verify(&["--journal", &journal]), 0);

    cmd(&mut target.connection(), &["SET", "a:15", "changed"]);
    cmd(&mut target.connection(), &["SET", "a:50", "changed"]);
    let narrowed = verify(&["--journal", &journal, "--match", "*:1*"]);
    assert_exit(&narrowed, 3);
    // a:1, a:10..a:19: eleven keys; none of b:* although they match *:1*.
    assert!(
        stdout(&narrowed).contains("checked 11 keys"),
        "{}",
        describe(&narrowed)
    );
    assert_listed(
        &narrowed,
        &[(
            "a:15",
            "value differs: string is 100 bytes on the source, 7 on the target",
        )],
    );
}

#[test]
fn ttls_further_apart_than_the_tolerance_differ() {
    let source = RedisServer::start();
    let target = RedisServer::start();
    cmd(
        &mut source.connection(),
        &["SET", "session", "x", "PX", "600000"],
    );
    let dir = tempfile::tempdir().unwrap();
    copy(&source, &target, &journal_in(&dir), &[]);
    let (s, t) = (source.url(), target.url());
    // Just copied: the TTLs are milliseconds apart.
    assert_exit(&verify(&["--source", &s, "--target", &t]), 0);
    // A minute shorter on the target.
    cmd(&mut target.connection(), &["PEXPIRE", "session", "540000"]);
    let found = verify(&["--source", &s, "--target", &t]);
    assert_exit(&found, 3);
    assert_listed(
        &found,
        &[("session", "ttl differs: source N ms, target N ms")],
    );
    let lenient = verify(&["--source", &s, "--target", &t, "--ttl-tolerance", "120000"]);
    assert_exit(&lenient, 0);
}

#[test]
fn a_mismatch_fixed_by_hand_is_cleared_by_the_next_verify() {
    let source = RedisServer::start();
    let target = RedisServer::start();
    fill_strings(&mut source.connection(), "k", 10, None);
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);
    copy(&source, &target, &journal, &[]);
    cmd(&mut target.connection(), &["SET", "k:3", "broken"]);
    assert_exit(&verify(&["--journal", &journal]), 3);
    assert_eq!(status_json(&journal)["outcomes"]["mismatch"], 1);
    assert_eq!(status_json(&journal)["outcomes"]["restored"], 9);

    cmd(&mut target.connection(), &["SET", "k:3", &"v".repeat(100)]);
    let fixed = verify(&["--journal", &journal]);
    assert_exit(&fixed, 0);
    assert!(stdout(&fixed).contains("1 key recorded as mismatch earlier now compares equal"));
    let status = status_json(&journal);
    assert_eq!(status["outcomes"]["mismatch"], 0);
    assert_eq!(status["outcomes"]["restored"], 10);
}

#[test]
fn clusters_are_compared_node_by_node_with_extra_keys_on_every_primary() {
    let source = RedisCluster::start();
    let target = RedisCluster::start();
    let mut c = source.connection();
    for chunk in 0..3 {
        let mut pipe = redis::cluster::cluster_pipe();
        for i in chunk * 100..(chunk + 1) * 100 {
            pipe.cmd("SET").arg(format!("k:{i}")).arg("v").ignore();
        }
        pipe.query::<()>(&mut c).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);
    let (s, t) = (source.url(), target.url());
    assert_exit(&run_job(&s, &t, &journal, &[]), 0);
    let clean = verify(&["--journal", &journal, "--extra"]);
    assert_exit(&clean, 0);
    assert!(
        stdout(&clean).contains("checked 300 keys"),
        "{}",
        describe(&clean)
    );
    assert!(stdout(&clean).contains("looked for 300 target keys"));

    // Keys on several slots, hence several nodes of each cluster.
    let mut tc = target.connection();
    for key in ["k:1", "k:2", "k:3"] {
        redis::cmd("DEL").arg(key).exec(&mut tc).unwrap();
    }
    for key in ["new:1", "new:2", "new:3"] {
        redis::cmd("SET").arg(key).arg("x").exec(&mut tc).unwrap();
    }
    let found = verify(&["--journal", &journal, "--extra"]);
    assert_exit(&found, 3);
    let extra = "only on target: the source has no such key";
    assert_listed(
        &found,
        &[
            ("k:1", "missing on target"),
            ("k:2", "missing on target"),
            ("k:3", "missing on target"),
            ("new:1", extra),
            ("new:2", extra),
            ("new:3", extra),
        ],
    );
    let retry = ferry(&[
        "retry",
        "--journal",
        &journal,
        "--outcome",
        "mismatch",
        "--progress",
        "off",
    ]);
    assert_exit(&retry, 0);
    assert_exit(&verify(&["--journal", &journal, "--extra"]), 0);
}

#[test]
fn verify_refuses_clearly_what_it_cannot_do() {
    let dir = tempfile::tempdir().unwrap();
    let nothing = ferry_command(&["verify", "--progress", "off"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_exit(&nothing, 1);
    assert!(
        stderr(&nothing).contains(
            "journal ./redis-ferry.db does not exist: pass --journal PATH of a job, or both --source URL and --target URL"
        ),
        "{}",
        describe(&nothing)
    );

    let server = RedisServer::start();
    let url = server.url();
    let same = verify(&["--source", &url, "--target", &url]);
    assert_exit(&same, 1);
    assert!(
        stderr(&same).contains("are the same server"),
        "{}",
        describe(&same)
    );

    for bad in [
        vec!["--ttl-tolerance", "soon"],
        vec!["--sample", "0"],
        vec!["--bogus"],
    ] {
        let mut args = vec!["--source", url.as_str(), "--target", url.as_str()];
        args.extend(bad);
        let output = verify(&args);
        assert_exit(&output, 2);
        assert!(
            !stderr(&output).contains("panicked"),
            "{}",
            describe(&output)
        );
    }
}

#[test]
fn a_key_of_another_type_on_the_target_is_a_type_difference() {
    let source = RedisServer::start();
    let target = RedisServer::start();
    cmd(&mut source.connection(), &["SET", "k", "v"]);
    let dir = tempfile::tempdir().unwrap();
    copy(&source, &target, &journal_in(&dir), &[]);
    cmd(&mut target.connection(), &["DEL", "k"]);
    cmd(&mut target.connection(), &["RPUSH", "k", "v"]);
    let (s, t) = (source.url(), target.url());
    let found = verify(&["--source", &s, "--target", &t]);
    assert_exit(&found, 3);
    assert_listed(&found, &[("k", "type differs: source string, target list")]);
    assert_eq!(count(&found, "type differs"), 1);
}
