//! `redis-ferry run` copies what it should, as it should: every type, binary
//! keys and values, TTLs to the millisecond, databases, filters, and the
//! `--existing` policy.

mod common;

use common::*;

#[test]
fn every_type_is_copied_with_values_and_ttls_intact() {
    let source = RedisServer::start();
    let target = RedisServer::start();
    fill_every_type(&mut source.connection(), "t");
    let dir = tempfile::tempdir().unwrap();
    let output = run_job(&source.url(), &target.url(), &journal_in(&dir), &[]);
    assert_exit(&output, 0);
    assert_servers_equal(&source, &target, &[0]);
    // The stream's consumer group, its pending entry and consumer came along.
    let snap = key_snapshot(&mut target.connection(), b"t:stream").unwrap();
    match snap.data {
        Data::Stream(entries, groups) => {
            assert_eq!(entries.len(), 2);
            assert_eq!(
                groups,
                vec![(
                    "readers".to_string(),
                    "1-1".to_string(),
                    1,
                    vec!["alice".to_string()]
                )]
            );
        }
        other => panic!("t:stream is {other:?}"),
    }
    assert!(
        stdout(&output).contains("job completed"),
        "{}",
        describe(&output)
    );
}

#[test]
fn binary_keys_and_values_survive_byte_for_byte() {
    let source = RedisServer::start();
    let target = RedisServer::start();
    let long_key = vec![b'k'; 10 * 1024];
    let keys: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (b"nul\x00inside".to_vec(), b"value\x00with nul".to_vec()),
        (b"crlf\r\nkey".to_vec(), b"\r\n\r\n".to_vec()),
        (b"key with spaces".to_vec(), b"value with spaces".to_vec()),
        (vec![0xff, 0xfe, 0x80, b'x'], vec![0xc3, 0x28, 0xa0, 0xa1]),
        (b"quote\"and\\backslash".to_vec(), b"\"".to_vec()),
        (long_key.clone(), b"ten kilobyte key".to_vec()),
        (b"empty value".to_vec(), Vec::new()),
    ];
    let mut connection = source.connection();
    for (key, value) in &keys {
        redis::cmd("SET")
            .arg(key)
            .arg(value)
            .exec(&mut connection)
            .unwrap();
    }
    redis::cmd("HSET")
        .arg(b"\x00hash")
        .arg(b"\x00field")
        .arg(b"\xffvalue")
        .exec(&mut connection)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    assert_exit(
        &run_job(&source.url(), &target.url(), &journal_in(&dir), &[]),
        0,
    );
    let mut target_connection = target.connection();
    for (key, value) in &keys {
        let copied: Option<Vec<u8>> = redis::cmd("GET")
            .arg(key)
            .query(&mut target_connection)
            .unwrap();
        assert_eq!(
            copied.as_ref(),
            Some(value),
            "key {:?}",
            String::from_utf8_lossy(key)
        );
    }
    assert_servers_equal(&source, &target, &[0]);
}

#[test]
fn ttls_are_carried_in_milliseconds_and_persistent_keys_stay_persistent() {
    let source = RedisServer::start();
    let target = RedisServer::start();
    let mut connection = source.connection();
    redis::cmd("SET")
        .arg("hours")
        .arg("x")
        .arg("PX")
        .arg(2 * 3_600_000)
        .exec(&mut connection)
        .unwrap();
    redis::cmd("SET")
        .arg("seconds")
        .arg("x")
        .arg("PX")
        .arg(90_000)
        .exec(&mut connection)
        .unwrap();
    redis::cmd("SET")
        .arg("millis")
        .arg("x")
        .arg("PX")
        .arg(60_250)
        .exec(&mut connection)
        .unwrap();
    redis::cmd("SET")
        .arg("forever")
        .arg("x")
        .exec(&mut connection)
        .unwrap();
    redis::cmd("SET")
        .arg("stale")
        .arg("new")
        .exec(&mut connection)
        .unwrap();
    // The target holds an older copy of "stale" with a TTL it must lose.
    redis::cmd("SET")
        .arg("stale")
        .arg("old")
        .arg("EX")
        .arg(100)
        .exec(&mut target.connection())
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The target holds a key already: say how to treat it.
    let existing = ["--existing", "replace"];
    assert_exit(
        &run_job(&source.url(), &target.url(), &journal_in(&dir), &existing),
        0,
    );
    let mut t = target.connection();
    let pttl =
        |c: &mut redis::Connection, k: &str| -> i64 { redis::cmd("PTTL").arg(k).query(c).unwrap() };
    let hours = pttl(&mut t, "hours");
    assert!(
        hours > 2 * 3_600_000 - 60_000 && hours <= 2 * 3_600_000,
        "hours: {hours} ms"
    );
    let seconds = pttl(&mut t, "seconds");
    assert!(
        seconds > 30_000 && seconds <= 90_000,
        "seconds: {seconds} ms"
    );
    let millis = pttl(&mut t, "millis");
    assert!(millis > 0 && millis <= 60_250, "millis: {millis} ms");
    assert_eq!(pttl(&mut t, "forever"), -1);
    assert_eq!(
        pttl(&mut t, "stale"),
        -1,
        "a stale TTL on the target must be removed"
    );
    let value: String = redis::cmd("GET").arg("stale").query(&mut t).unwrap();
    assert_eq!(value, "new");
    assert_servers_equal(&source, &target, &[0]);
}

#[test]
fn every_database_is_copied_and_db_map_moves_the_ones_it_names() {
    let source = RedisServer::start();
    let target = RedisServer::start();
    for db in [0, 2, 5] {
        fill_strings(
            &mut source.connection_db(db),
            &format!("db{db}"),
            50 + db as usize,
            None,
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let output = run_job(
        &source.url(),
        &target.url(),
        &journal_in(&dir),
        &["--db-map", "5:9"],
    );
    assert_exit(&output, 0);
    assert_eq!(dbsize(&mut target.connection(), 0), 50);
    assert_eq!(dbsize(&mut target.connection(), 2), 52);
    assert_eq!(
        dbsize(&mut target.connection(), 5),
        0,
        "db 5 was mapped to 9"
    );
    assert_eq!(dbsize(&mut target.connection(), 9), 55);
    let s5 = snapshot(&mut source.connection(), 5);
    let t9 = snapshot(&mut target.connection(), 9);
    assert_same_data(&s5, &t9, 5000);
    let status = status_json(&journal_in(&dir));
    let dbs = status["dbs"].as_array().unwrap();
    assert_eq!(dbs.len(), 3);
    assert_eq!(status["outcomes"]["restored"], 157);
}

#[test]
fn db_option_and_url_db_select_databases() {
    let source = RedisServer::start();
    let target = RedisServer::start();
    for db in [0, 1, 3] {
        fill_strings(&mut source.connection_db(db), &format!("db{db}"), 20, None);
    }
    let dir = tempfile::tempdir().unwrap();
    assert_exit(
        &run_job(
            &source.url(),
            &target.url(),
            &journal_in(&dir),
            &["--db", "1"],
        ),
        0,
    );
    assert_eq!(dbsize(&mut target.connection(), 0), 0);
    assert_eq!(dbsize(&mut target.connection(), 1), 20);
    assert_eq!(dbsize(&mut target.connection(), 3), 0);

    // A db in the URLs: source db 3 into target db 7.
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);
    let output = run_job(&source.url_db(3), &target.url_db(7), &journal, &[]);
    assert_exit(&output, 0);
    assert_eq!(dbsize(&mut target.connection(), 7), 20);
}

#[test]
fn match_and_type_filters_copy_only_what_they_select_and_count_nothing_else() {
    let source = RedisServer::start();
    let target = RedisServer::start();
    let mut connection = source.connection();
    fill_strings(&mut connection, "user", 30, None);
    fill_strings(&mut connection, "session", 40, None);
    redis::cmd("HSET")
        .arg("user:h")
        .arg("f")
        .arg("v")
        .exec(&mut connection)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);
    assert_exit(
        &run_job(
            &source.url(),
            &target.url(),
            &journal,
            &["--match", "user:*"],
        ),
        0,
    );
    assert_eq!(dbsize(&mut target.connection(), 0), 31);
    let status = status_json(&journal);
    assert_eq!(status["outcomes"]["restored"], 31);
    assert_eq!(
        status["outcomes"]["skipped"], 0,
        "filtered keys are not counted as skipped"
    );

    let target = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);
    assert_exit(
        &run_job(&source.url(), &target.url(), &journal, &["--type", "hash"]),
        0,
    );
    assert_eq!(dbsize(&mut target.connection(), 0), 1);
    assert_eq!(status_json(&journal)["outcomes"]["restored"], 1);
}

#[test]
fn existing_skip_leaves_target_keys_alone_and_counts_them_skipped() {
    let source = RedisServer::start();
    let target = RedisServer::start();
    fill_strings(&mut source.connection(), "k", 100, None);
    let mut t = target.connection();
    for i in 0..10 {
        redis::cmd("SET")
            .arg(format!("k:{i}"))
            .arg("written by the application")
            .exec(&mut t)
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);
    assert_exit(
        &run_job(
            &source.url(),
            &target.url(),
            &journal,
            &["--existing", "skip"],
        ),
        0,
    );
    let kept: String = redis::cmd("GET").arg("k:3").query(&mut t).unwrap();
    assert_eq!(kept, "written by the application");
    let copied: String = redis::cmd("GET").arg("k:50").query(&mut t).unwrap();
    assert_eq!(copied, "v".repeat(100));
    let status = status_json(&journal);
    assert_eq!(status["outcomes"]["skipped"], 10);
    assert_eq!(status["outcomes"]["restored"], 90);
}

#[test]
fn absolute_ttl_mode_keeps_the_expiry_time() {
    let source = RedisServer::start();
    let target = RedisServer::start();
    let mut connection = source.connection();
    redis::cmd("SET")
        .arg("abs")
        .arg("x")
        .arg("PX")
        .arg(3_600_000)
        .exec(&mut connection)
        .unwrap();
    let expected: i64 = redis::cmd("PEXPIRETIME")
        .arg("abs")
        .query(&mut connection)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    assert_exit(
        &run_job(
            &source.url(),
            &target.url(),
            &journal_in(&dir),
            &["--ttl", "absolute"],
        ),
        0,
    );
    let copied: i64 = redis::cmd("PEXPIRETIME")
        .arg("abs")
        .query(&mut target.connection())
        .unwrap();
    assert_eq!(copied, expected);
}

#[test]
fn dry_run_counts_per_database_and_type_and_writes_nothing() {
    let source = RedisServer::start();
    let target = RedisServer::start();
    fill_every_type(&mut source.connection(), "t");
    fill_strings(&mut source.connection_db(4), "s", 25, Some(5));
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);
    let output = run_job(&source.url(), &target.url(), &journal, &["--dry-run"]);
    assert_exit(&output, 0);
    let text = stdout(&output);
    assert!(text.contains("total: 34 keys would be copied"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["4", "4", "string", "25", "5"]),
        "{text}"
    );
    assert_eq!(dbsize(&mut target.connection(), 0), 0);
    assert!(
        !std::path::Path::new(&journal).exists(),
        "a dry run creates no journal"
    );
}
