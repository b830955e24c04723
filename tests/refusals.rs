//! What redis-ferry refuses to do, and how it says so: one line naming what
//! is wrong and what to do, an exit code from the contract, no panic, and
//! never a password.

mod common;

use std::path::Path;

use common::*;

fn assert_one_clear_line(output: &std::process::Output, needle: &str) {
    let text = stderr(output);
    assert!(
        text.contains(needle),
        "expected {needle:?} in:\n{}",
        describe(output)
    );
    assert!(
        !text.contains("panicked") && !text.contains("backtrace"),
        "{}",
        describe(output)
    );
    assert_eq!(
        text.trim_end().lines().count(),
        1,
        "one line expected:\n{text}"
    );
    assert!(
        text.starts_with("redis-ferry: ") || text.starts_with("error:"),
        "{text}"
    );
}

#[test]
fn source_and_target_on_the_same_server_are_refused() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let url = server.url();
    let other_spelling = format!("redis://localhost:{}", server.port);
    let output = ferry(&[
        "run",
        "--source",
        &url,
        "--target",
        &other_spelling,
        "--journal",
        &journal_in(&dir),
    ]);
    assert_exit(&output, 1);
    assert_one_clear_line(&output, "are the same server");
    assert!(
        !Path::new(&journal_in(&dir)).exists(),
        "nothing is created for a refused job"
    );
}

#[test]
fn a_read_only_replica_target_is_refused() {
    let source = RedisServer::start();
    let primary = RedisServer::start();
    let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &primary.port.to_string()]);
    let dir = tempfile::tempdir().unwrap();
    let output = ferry(&[
        "run",
        "--source",
        &source.url(),
        "--target",
        &replica.url(),
        "--journal",
        &journal_in(&dir),
    ]);
    assert_exit(&output, 1);
    assert_one_clear_line(&output, "is a read-only replica of 127.0.0.1:");
}

#[test]
fn resume_without_a_journal_says_how_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);
    for command in ["resume", "retry", "status"] {
        let output = ferry(&[command, "--journal", &journal]);
        assert_exit(&output, 1);
        assert_one_clear_line(
            &output,
            "does not exist: start a job with `redis-ferry run`",
        );
    }
}

#[test]
fn a_journal_that_is_not_sqlite_is_refused_and_left_unchanged() {
    let source = RedisServer::start();
    let target = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.db");
    std::fs::write(&path, "shopping list: milk, eggs\n").unwrap();
    let journal = path.display().to_string();
    let output = ferry(&[
        "run",
        "--source",
        &source.url(),
        "--target",
        &target.url(),
        "--journal",
        &journal,
    ]);
    assert_exit(&output, 1);
    assert_one_clear_line(
        &output,
        "is not a redis-ferry journal (not a SQLite database)",
    );
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "shopping list: milk, eggs\n"
    );
    let output = ferry(&["status", "--journal", &journal]);
    assert_exit(&output, 1);
    assert_one_clear_line(&output, "is not a redis-ferry journal");
}

#[test]
fn an_unreachable_server_is_named_with_the_reason() {
    let target = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut gone = RedisServer::start();
    let gone_url = gone.url();
    gone.stop();
    let output = ferry(&[
        "run",
        "--source",
        &gone_url,
        "--target",
        &target.url(),
        "--journal",
        &journal_in(&dir),
    ]);
    assert_exit(&output, 1);
    assert_one_clear_line(
        &output,
        &format!("cannot connect to source {gone_url}: connection refused"),
    );
}

#[test]
fn a_wrong_password_is_reported_without_echoing_any_password() {
    let source = RedisServer::start_with(&["--requirepass", "right-horse-battery"]);
    let target = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let output = ferry_command(&[
        "run",
        "--source",
        &source.url(),
        "--target",
        &target.url(),
        "--journal",
        &journal_in(&dir),
    ])
    .env("REDIS_FERRY_SOURCE_PASSWORD", "wrong-staple-9")
    .output()
    .unwrap();
    assert_exit(&output, 1);
    assert_one_clear_line(
        &output,
        "authentication failed: the source refused the password (taken from REDIS_FERRY_SOURCE_PASSWORD)",
    );
    let all = format!("{}{}", stdout(&output), stderr(&output));
    assert!(
        !all.contains("wrong-staple-9") && !all.contains("right-horse-battery"),
        "{all}"
    );
    assert!(all.contains(":***@"), "{all}");

    // No password at all.
    let output = ferry(&[
        "run",
        "--source",
        &source.url(),
        "--target",
        &target.url(),
        "--journal",
        &journal_in(&dir),
    ]);
    assert_exit(&output, 1);
    assert_one_clear_line(&output, "authentication required");
}

#[test]
fn passwords_never_reach_the_journal_status_or_logs() {
    let source = RedisServer::start_with(&["--requirepass", "source-secret-1"]);
    let target = RedisServer::start_with(&["--requirepass", "target-secret-2"]);
    fill_strings(&mut source.connection(), "k", 100, None);
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);
    let source_url = format!("redis://:source-secret-1@127.0.0.1:{}", source.port);
    // The target's password comes from the environment instead.
    let output = ferry_command(&[
        "run",
        "--source",
        &source_url,
        "--target",
        &target.url(),
        "--journal",
        &journal,
        "--progress",
        "log",
    ])
    .env("REDIS_FERRY_TARGET_PASSWORD", "target-secret-2")
    .output()
    .unwrap();
    assert_exit(&output, 0);
    let status = ferry(&["status", "--journal", &journal, "--json"]);
    let mut everything = file_bytes(Path::new(&journal));
    everything.extend(file_bytes(Path::new(&format!("{journal}-wal"))));
    everything.extend(output.stdout.clone());
    everything.extend(output.stderr.clone());
    everything.extend(status.stdout.clone());
    let text = String::from_utf8_lossy(&everything);
    assert!(!text.contains("source-secret-1") && !text.contains("target-secret-2"));
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(
        status["job"]["source"],
        format!("redis://:***@127.0.0.1:{}", source.port)
    );
    assert_eq!(
        status["job"]["target"],
        format!("redis://:***@127.0.0.1:{}", target.port)
    );

    // A later command needs the passwords again, and says how to give them.
    let output = ferry(&["retry", "--journal", &journal]);
    assert_exit(&output, 1);
    assert_one_clear_line(
        &output,
        "it needs a password, which the journal does not keep; give it with --source-password-file FILE, REDIS_FERRY_SOURCE_PASSWORD or a --source URL with the password",
    );
    let output = ferry_command(&["retry", "--journal", &journal, "--progress", "off"])
        .env("REDIS_FERRY_SOURCE_PASSWORD", "source-secret-1")
        .env("REDIS_FERRY_TARGET_PASSWORD", "target-secret-2")
        .output()
        .unwrap();
    assert_exit(&output, 0);
}

#[test]
fn usage_errors_exit_2_and_never_echo_a_url() {
    let output = ferry(&[
        "run",
        "--source",
        "redis://:hunter2@host/notadb",
        "--target",
        "redis://h",
    ]);
    assert_exit(&output, 2);
    assert_one_clear_line(&output, "--source is not a usable Redis URL");
    assert!(!stderr(&output).contains("hunter2"));

    let output = ferry(&[
        "run",
        "--source",
        "redis://a",
        "--target",
        "redis://b",
        "--frobnicate",
    ]);
    assert_exit(&output, 2);
    let output = ferry(&[
        "run",
        "--source",
        "redis://a",
        "--target",
        "redis://b",
        "--db-map",
        "3",
    ]);
    assert_exit(&output, 2);
    let output = ferry(&[
        "run",
        "--source",
        "redis://a",
        "--target",
        "redis://b",
        "--existing",
        "sometimes",
    ]);
    assert_exit(&output, 2);
    let output = ferry(&[
        "run",
        "--source",
        "redis://a",
        "--target",
        "redis://b",
        "--db",
        "1",
        "--db-map",
        "2:3",
    ]);
    assert_exit(&output, 2);
    assert_one_clear_line(
        &output,
        "--db-map 2:3 names source db 2, which --db does not select",
    );
}

#[test]
fn a_full_target_stops_the_job_resumably() {
    let source = RedisServer::start();
    fill_strings(&mut source.connection(), "k", 20_000, None);
    let target =
        RedisServer::start_with(&["--maxmemory", "2mb", "--maxmemory-policy", "noeviction"]);
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);
    let output = run_job(&source.url(), &target.url(), &journal, &[]);
    assert_exit(&output, 1);
    // Warned before the first write, then one line for the stop.
    let text = stderr(&output);
    assert!(text.contains("it will not fit"), "{text}");
    let last = text.lines().last().unwrap_or_default();
    assert!(
        last.contains("OOM command not allowed") && !text.contains("panicked"),
        "{text}"
    );
    assert!(
        stderr(&output).contains("redis-ferry resume --journal"),
        "{}",
        describe(&output)
    );
    let status = status_json(&journal);
    assert_eq!(status["job"]["state"], "failed");
    assert_eq!(
        status["outcomes"]["failed"], 0,
        "a full target is not a per-key failure"
    );

    redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("0")
        .exec(&mut target.connection())
        .unwrap();
    resume_to_completion(&journal);
    assert_servers_equal(&source, &target, &[0]);
}

#[test]
fn a_database_a_server_does_not_have_is_refused_before_anything_is_copied() {
    let source = RedisServer::start();
    fill_strings(&mut source.connection(), "k", 10, None);
    let target = RedisServer::start_with(&["--databases", "4"]);
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);
    let output = ferry(&[
        "run",
        "--source",
        &source.url(),
        "--target",
        &target.url(),
        "--journal",
        &journal,
        "--db-map",
        "0:7",
    ]);
    assert_exit(&output, 1);
    assert_one_clear_line(
        &output,
        &format!(
            "target {} has no database 7 (use --db-map to choose another)",
            target.url()
        ),
    );
    assert!(
        !Path::new(&journal).exists(),
        "nothing is created for a refused job"
    );
    assert_eq!(dbsize(&mut target.connection(), 0), 0);
}

#[test]
fn a_type_that_does_not_exist_is_refused_before_the_journal_is_touched() {
    let source = RedisServer::start();
    fill_strings(&mut source.connection(), "k", 10, None);
    let target = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);
    let output = run_job(&source.url(), &target.url(), &journal, &["--type", "strng"]);
    assert_exit(&output, 2);
    assert_one_clear_line(
        &output,
        &format!(
            "--type \"strng\" is not a type the source {} can hold; use one of: string, list, set, zset, hash, stream",
            source.url()
        ),
    );
    assert!(
        !Path::new(&journal).exists(),
        "the journal must not be created"
    );
    assert_eq!(dbsize(&mut target.connection(), 0), 0);
    // A real type, in any case, is accepted.
    let output = run_job(
        &source.url(),
        &target.url(),
        &journal,
        &["--type", "STRING"],
    );
    assert_exit(&output, 0);
    assert_eq!(dbsize(&mut target.connection(), 0), 10);
}

#[test]
fn databases_poured_into_one_target_database_are_refused() {
    let source = RedisServer::start();
    fill_strings(&mut source.connection_db(0), "same", 10, None);
    fill_strings(&mut source.connection_db(1), "same", 10, None);
    let target = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);
    for maps in [
        vec!["--db-map", "0:2", "--db-map", "1:2"],
        // db 1 onto db 0, which is copied as itself.
        vec!["--db-map", "1:0"],
    ] {
        let output = run_job(&source.url(), &target.url(), &journal, &maps);
        assert_exit(&output, 2);
        assert_one_clear_line(
            &output,
            "source databases 0 and 1 would all go to target db",
        );
        assert!(
            stderr(&output).contains("keys of the same name overwrite each other"),
            "{}",
            describe(&output)
        );
        assert!(!Path::new(&journal).exists());
    }
    // Distinct targets are fine.
    let output = run_job(
        &source.url(),
        &target.url(),
        &journal,
        &["--db-map", "0:2", "--db-map", "1:3"],
    );
    assert_exit(&output, 0);
    assert_eq!(dbsize(&mut target.connection_db(2), 2), 10);
    assert_eq!(dbsize(&mut target.connection_db(3), 3), 10);
}
