//! `redis-ferry retry` finishes what failed, for real: a target ACL user
//! limited to `~ok:*` makes every other key fail with NOPERM (the run exits
//! 3 and the CSV names those keys with the error); once the ACL is widened,
//! `retry` copies exactly those keys, from the source as it is now, and the
//! target equals the source. A retry stopped by Ctrl-C or SIGKILL halfway
//! finishes the rest when run again.

mod common;

use std::collections::BTreeMap;

use common::*;
use redis_ferry::escape::unescape_key;

const ACL_PASSWORD: &str = "ferry-acl-pw";

/// A target where user `ferry` may only touch keys matching `ok:*`.
fn target_with_ok_only_acl() -> RedisServer {
    let target = RedisServer::start();
    target.restrict_ferry_user_to_ok_keys(ACL_PASSWORD);
    target
}

fn ferry_url(target: &RedisServer) -> String {
    target.ferry_user_url(ACL_PASSWORD)
}

/// Lets user `ferry` write every key.
fn widen_acl(target: &RedisServer) {
    redis::cmd("ACL")
        .arg(&["SETUSER", "ferry", "allkeys"])
        .exec(&mut target.connection())
        .expect("ACL SETUSER allkeys");
}

/// `redis-ferry retry` with the ACL user's password in the environment (the
/// journal stores the target URL without it).
fn retry(journal: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["retry", "--journal", journal, "--progress", "off"];
    args.extend_from_slice(extra);
    ferry_command(&args)
        .env("REDIS_FERRY_TARGET_PASSWORD", ACL_PASSWORD)
        .output()
        .expect("redis-ferry runs")
}

/// One CSV row of the audit log, key unescaped to its real bytes.
#[derive(Debug)]
struct Row {
    outcome: String,
    attempts: u64,
    error: String,
}

/// `report --format csv`, parsed with a CSV reader: (db, key) -> row.
fn audit_log(journal: &str) -> BTreeMap<(i64, Vec<u8>), Row> {
    let output = ferry(&["report", "--journal", journal, "--format", "csv"]);
    assert_exit(&output, 0);
    let mut reader = csv::Reader::from_reader(output.stdout.as_slice());
    let mut rows = BTreeMap::new();
    for record in reader.records() {
        let record = record.expect("a well-formed CSV row");
        let key = unescape_key(&record[1]).expect("an escaped key");
        let row = Row {
            outcome: record[2].to_string(),
            attempts: record[5].parse().unwrap(),
            error: record[6].to_string(),
        };
        assert!(
            rows.insert((record[0].parse().unwrap(), key), row)
                .is_none(),
            "one row per key"
        );
    }
    rows
}

#[test]
fn keys_denied_by_an_acl_fail_with_noperm_and_retry_copies_them_once_the_acl_is_widened() {
    let source = RedisServer::start();
    let target = target_with_ok_only_acl();
    fill_strings(&mut source.connection(), "ok", 1000, Some(3));
    fill_strings(&mut source.connection(), "no", 300, Some(5));
    let typed = fill_every_type(&mut source.connection_db(1), "no:types");
    let binary_key: &[u8] = b"no:\x00\xff \"quoted\",\r\n";
    redis::cmd("SET")
        .arg(binary_key)
        .arg(b"\x01\x02")
        .exec(&mut source.connection())
        .unwrap();
    let denied = 300 + typed + 1;
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);

    let (s, t) = (source.url(), ferry_url(&target));
    let output = run_job(&s, &t, &journal, &[]);
    assert_exit(&output, 3);
    assert!(
        stdout(&output).contains(&format!("{denied} keys failed")),
        "{}",
        describe(&output)
    );
    let status = status_json(&journal);
    assert_eq!(status["outcomes"]["failed"], denied as u64);
    assert_eq!(status["outcomes"]["restored"], 1000);
    assert_eq!(
        dbsize(&mut target.connection(), 0),
        1000,
        "no:* never reached the target"
    );

    // The audit log names every denied key, with the server's error.
    let log = audit_log(&journal);
    assert_eq!(log.len(), 1000 + denied);
    for ((db, key), row) in &log {
        if key.starts_with(b"no:") {
            assert_eq!(
                row.outcome,
                "failed",
                "db {db} {:?}",
                String::from_utf8_lossy(key)
            );
            assert!(row.error.starts_with("NOPERM"), "{row:?}");
        } else {
            assert_eq!((row.outcome.as_str(), row.error.as_str()), ("restored", ""));
        }
    }
    assert_eq!(log[&(0, binary_key.to_vec())].outcome, "failed");

    // While the ACL is being fixed, the source moves on: one denied key is
    // deleted, another rewritten. retry reads the source as it is now.
    let mut connection = source.connection();
    redis::cmd("DEL").arg("no:7").exec(&mut connection).unwrap();
    redis::cmd("SET")
        .arg("no:8")
        .arg("rewritten")
        .exec(&mut connection)
        .unwrap();
    widen_acl(&target);

    let output = retry(&journal, &[]);
    assert_exit(&output, 0);
    // Exactly the failed keys were copied again, no more.
    assert!(
        stdout(&output).contains(&format!("retry of failed keys completed: {denied} keys in")),
        "{}",
        describe(&output)
    );
    assert_servers_equal(&source, &target, &[0, 1]);
    let status = status_json(&journal);
    assert_eq!(status["outcomes"]["failed"], 0);
    assert_eq!(
        status["outcomes"]["expired"], 1,
        "no:7 was gone when retried"
    );
    assert_eq!(status["outcomes"]["restored"], (1000 + denied - 1) as u64);
    let log = audit_log(&journal);
    assert_eq!(log[&(0, b"no:7".to_vec())].outcome, "expired");
    for ((_, key), row) in &log {
        if key.starts_with(b"no:") {
            assert!(
                row.attempts >= 2,
                "{:?}: {row:?}",
                String::from_utf8_lossy(key)
            );
        }
        assert_eq!(row.error, "", "the error is cleared once the key is copied");
    }

    // Nothing left to retry: a second retry copies nothing and exits 0.
    let output = retry(&journal, &[]);
    assert_exit(&output, 0);
    assert!(
        stdout(&output).contains(": 0 keys in"),
        "{}",
        describe(&output)
    );
}

#[test]
fn a_retry_without_the_password_stops_with_exit_1_and_says_where_to_give_it() {
    let source = RedisServer::start();
    let target = target_with_ok_only_acl();
    fill_strings(&mut source.connection(), "no", 10, None);
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);
    let (s, t) = (source.url(), ferry_url(&target));
    assert_exit(&run_job(&s, &t, &journal, &[]), 3);
    widen_acl(&target);
    let output = ferry(&["retry", "--journal", &journal, "--progress", "off"]);
    assert_exit(&output, 1);
    let error = stderr(&output);
    assert!(error.contains("REDIS_FERRY_TARGET_PASSWORD"), "{error}");
    assert!(!error.contains(ACL_PASSWORD), "{error}");
    assert_eq!(status_json(&journal)["outcomes"]["failed"], 10);

    // The URL given again on the command line works as well.
    let output = ferry(&[
        "retry",
        "--journal",
        &journal,
        "--target",
        &t,
        "--progress",
        "off",
    ]);
    assert_exit(&output, 0);
    assert_servers_equal(&source, &target, &[0]);
}

#[test]
fn a_retry_stopped_by_ctrl_c_or_killed_halfway_finishes_the_rest_when_run_again() {
    const OK: u64 = 500;
    const DENIED: u64 = 8000;
    let source = RedisServer::start();
    let target = target_with_ok_only_acl();
    fill_strings(&mut source.connection(), "ok", OK as usize, None);
    fill_strings(&mut source.connection(), "no", DENIED as usize, Some(4));
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);
    let (s, t) = (source.url(), ferry_url(&target));
    // The job's --rate also paces its retries: 8000 keys take ~4 s, long
    // enough to stop a retry in the middle.
    let output = run_job(&s, &t, &journal, &["--rate", "2000", "--scan-count", "200"]);
    assert_exit(&output, 3);
    widen_acl(&target);

    let retry_args = ["retry", "--journal", journal.as_str(), "--progress", "off"];
    let spawn_retry = || {
        ferry_command(&retry_args)
            .env("REDIS_FERRY_TARGET_PASSWORD", ACL_PASSWORD)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("redis-ferry starts")
    };

    let mut child = spawn_retry();
    wait_for_restored(&mut child, &journal, OK + 1000);
    signal(&child, "INT");
    let output = finish(child);
    assert_exit(&output, 130);
    assert!(
        stderr(&output).contains(&format!(
            "run `redis-ferry retry --journal {journal}` to continue"
        )),
        "{}",
        describe(&output)
    );
    let failed = status_json(&journal)["outcomes"]["failed"]
        .as_u64()
        .unwrap();
    assert!(failed > 0 && failed <= DENIED - 1000, "failed {failed}");

    let mut child = spawn_retry();
    wait_for_restored(&mut child, &journal, OK + 4000);
    signal(&child, "KILL");
    finish(child);
    let failed = status_json(&journal)["outcomes"]["failed"]
        .as_u64()
        .unwrap();
    assert!(failed > 0 && failed <= DENIED - 4000, "failed {failed}");

    let output = retry(&journal, &[]);
    assert_exit(&output, 0);
    // Only what was left was copied by the last retry.
    assert!(
        stdout(&output).contains(&format!("completed: {failed} keys in")),
        "{}",
        describe(&output)
    );
    assert_servers_equal(&source, &target, &[0]);
    let status = status_json(&journal);
    assert_eq!(
        status["outcomes"]["restored"],
        OK + DENIED,
        "each key counted once"
    );
    assert_eq!(status["outcomes"]["failed"], 0);
}

#[test]
fn a_retry_before_the_job_finished_says_resume_copies_the_rest() {
    let source = RedisServer::start();
    let target = target_with_ok_only_acl();
    fill_strings(&mut source.connection(), "ok", 3000, None);
    fill_strings(&mut source.connection(), "no", 3000, None);
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);
    let (s, t) = (source.url(), ferry_url(&target));
    let mut child = spawn_paced_run(&s, &t, &journal, 2000);
    wait_for_outcome(&mut child, &journal, "failed", 100);
    signal(&child, "INT");
    assert_exit(&finish(child), 130);
    widen_acl(&target);

    let output = retry(&journal, &[]);
    assert_exit(&output, 0);
    assert!(
        stdout(&output).contains(&format!(
            "note: the job itself is interrupted, not finished; run `redis-ferry resume --journal {journal}`"
        )),
        "{}",
        describe(&output)
    );
    assert!(
        dbsize(&mut target.connection(), 0) < 6000,
        "the scan had not finished"
    );

    let output = ferry_command(&["resume", "--journal", &journal, "--progress", "off"])
        .env("REDIS_FERRY_TARGET_PASSWORD", ACL_PASSWORD)
        .output()
        .unwrap();
    assert_exit(&output, 0);
    assert_servers_equal(&source, &target, &[0]);
}

/// Issue 13 item 8: a key only the target has, found by `verify --extra`
/// and deleted by `retry --outcome mismatch`, is recorded as what happened
/// (gone from the source, deleted from the target, and why), not as a key
/// that expired on the source during the copy.
#[test]
fn a_key_only_on_the_target_is_recorded_as_deleted_there_not_as_expired_on_the_source() {
    let source = RedisServer::start();
    let target = RedisServer::start();
    fill_strings(&mut source.connection(), "k", 100, None);
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);
    assert_exit(&run_job(&source.url(), &target.url(), &journal, &[]), 0);
    redis::cmd("SET")
        .arg("only-on-target")
        .arg("x")
        .exec(&mut target.connection())
        .unwrap();
    let output = ferry(&[
        "verify",
        "--journal",
        &journal,
        "--extra",
        "--progress",
        "off",
    ]);
    assert_exit(&output, 3);
    let output = ferry(&[
        "retry",
        "--journal",
        &journal,
        "--outcome",
        "mismatch",
        "--progress",
        "off",
    ]);
    assert_exit(&output, 0);
    assert_eq!(dbsize(&mut target.connection(), 0), 100);
    let csv = ferry(&["report", "--journal", &journal, "--format", "csv"]);
    let text = stdout(&csv);
    let row = text
        .lines()
        .find(|line| line.contains("only-on-target"))
        .expect("the key has a row");
    assert!(row.contains(",expired,"), "{row}");
    assert!(row.contains("verify found it only on the target"), "{row}");
    let report = stdout(&ferry(&["report", "--journal", &journal]));
    assert!(
        !report.contains("expired on the source during the copy"),
        "{report}"
    );
}
