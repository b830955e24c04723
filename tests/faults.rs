//! Servers that restart, links that drop at the worst moment: the job
//! either ends with the target equal to the source, or says it did not.

mod common;

use std::time::Duration;

use common::*;

const KEYS: usize = 20_000;

fn paced_run<'a>(source: &'a str, target: &'a str, journal: &'a str) -> Vec<&'a str> {
    vec![
        "run",
        "--source",
        source,
        "--target",
        target,
        "--journal",
        journal,
        "--progress",
        "log",
        "--rate",
        "5000",
        "--scan-count",
        "200",
    ]
}

/// Issue 13 item 1: the target restarts empty (no persistence) in the
/// middle of a run; the connection comes back within the reconnect budget.
/// The job notices (run_id), says so, copies everything again, and only
/// then calls itself completed.
#[test]
fn a_target_that_restarts_empty_during_a_run_is_noticed_and_refilled() {
    let source = RedisServer::start();
    fill_strings(&mut source.connection(), "k", KEYS, Some(4));
    let mut target = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);
    let mut child = spawn_ferry(&paced_run(&source.url(), &target.url(), &journal));
    wait_for_restored(&mut child, &journal, 5_000);
    target.restart();
    let output = finish(child);
    assert_exit(&output, 0);
    let text = stderr(&output);
    assert!(
        text.contains(
            "restarted since the job recorded it (its run_id changed); so every key is copied again"
        ),
        "{}",
        describe(&output)
    );
    assert!(text.contains("lost the connection to target"), "{text}");
    assert_servers_equal(&source, &target, &[0]);
    let status = status_json(&journal);
    assert_eq!(status["outcomes"]["restored"], KEYS as u64, "counted once");
}

/// The same restart between an interrupted run and its `resume`.
#[test]
fn resume_after_the_target_restarted_empty_copies_everything_again() {
    let source = RedisServer::start();
    fill_strings(&mut source.connection(), "k", KEYS, None);
    let mut target = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);
    let mut child = spawn_ferry(&paced_run(&source.url(), &target.url(), &journal));
    wait_for_restored(&mut child, &journal, 5_000);
    child.kill().unwrap();
    child.wait().unwrap();
    target.restart();
    let output = ferry(&["resume", "--journal", &journal, "--progress", "off"]);
    assert_exit(&output, 0);
    assert!(
        stderr(&output).contains("so every key is copied again"),
        "{}",
        describe(&output)
    );
    assert_servers_equal(&source, &target, &[0]);
}

/// `retry` on a job whose target restarted since: it must not claim the
/// earlier keys are there; it reopens the job for `resume`.
#[test]
fn retry_after_the_target_restarted_reopens_the_job() {
    let source = RedisServer::start();
    fill_strings(&mut source.connection(), "ok", 500, None);
    fill_strings(&mut source.connection(), "no", 20, None);
    let mut target = RedisServer::start();
    target.restrict_ferry_user_to_ok_keys("pw");
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);
    let ferry_url = target.ferry_user_url("pw");
    let output = run_job(&source.url(), &ferry_url, &journal, &[]);
    assert_exit(&output, 3);
    target.restart();
    target.restrict_ferry_user_to(&["~*"], "pw");
    let output = ferry(&[
        "retry",
        "--journal",
        &journal,
        "--target",
        &ferry_url,
        "--progress",
        "off",
    ]);
    assert_exit(&output, 1);
    assert!(
        stderr(&output).contains("the job is reopened: run `redis-ferry resume --journal"),
        "{}",
        describe(&output)
    );
    assert_eq!(status_json(&journal)["job"]["state"], "interrupted");
    let output = ferry(&[
        "resume",
        "--journal",
        &journal,
        "--target",
        &ferry_url,
        "--progress",
        "off",
    ]);
    assert_exit(&output, 0);
    assert_servers_equal(&source, &target, &[0]);
}

/// Issue 13 item 2: with `--existing skip`, a source key that expires
/// between SCAN and its read must not delete the target's copy.
#[test]
fn existing_skip_never_deletes_a_target_key_whose_source_expired() {
    let source = RedisServer::start();
    let target = RedisServer::start();
    // 3,000 keys that expire while the (paced) copy runs, all of them also
    // on the target with a value of the target's own.
    let mut pipe = redis::pipe();
    for i in 0..3_000 {
        pipe.cmd("SET")
            .arg(format!("short:{i}"))
            .arg("source")
            .arg("PX")
            .arg(300 + i)
            .ignore();
    }
    pipe.query::<()>(&mut source.connection()).unwrap();
    fill_strings(&mut source.connection(), "long", 2_000, None);
    let mut pipe = redis::pipe();
    for i in 0..3_000 {
        pipe.cmd("SET")
            .arg(format!("short:{i}"))
            .arg("target's own")
            .ignore();
    }
    pipe.query::<()>(&mut target.connection()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);
    let output = run_job(
        &source.url(),
        &target.url(),
        &journal,
        &[
            "--existing",
            "skip",
            "--rate",
            "2000",
            "--scan-count",
            "100",
        ],
    );
    assert_exit(&output, 0);
    for i in 0..3_000 {
        let value: Option<String> = redis::cmd("GET")
            .arg(format!("short:{i}"))
            .query(&mut target.connection())
            .unwrap();
        assert_eq!(value.as_deref(), Some("target's own"), "short:{i}");
    }
    // Keys that expired before SCAN reached them are not listed at all;
    // every one listed was on the target, so none is `expired`.
    let status = status_json(&journal);
    assert_eq!(status["outcomes"]["expired"], 0);
    assert!(status["outcomes"]["skipped"].as_u64().unwrap() <= 3_000);
    assert_eq!(status["outcomes"]["restored"], 2_000);
}

/// Issue 13 item 7 (and the fence's own rule): the link to the target drops
/// after the target ran a batch's EXEC but before redis-ferry heard back. The
/// EXEC is never resent unguarded; the batch is redone, and with
/// `--existing skip` the keys this job wrote are `restored`, not `skipped`.
#[test]
fn a_reply_lost_after_exec_is_redone_and_keeps_outcomes_true() {
    let source = RedisServer::start();
    fill_strings(&mut source.connection(), "k", 2_000, Some(3));
    let target = RedisServer::start();
    // A key the target had before: skip must leave it, and say so.
    redis::cmd("SET")
        .arg("k:7")
        .arg("the target's own")
        .exec(&mut target.connection())
        .unwrap();
    let proxy = LossyProxy::start(target.port);
    proxy.lose_reply_after(b"EXEC");
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);
    let output = run_job(
        &source.url(),
        &proxy.url(),
        &journal,
        &["--existing", "skip"],
    );
    assert_exit(&output, 0);
    assert_eq!(proxy.fired(), 1, "the proxy lost one reply");
    assert!(
        stderr(&output).contains("during a fenced write"),
        "{}",
        describe(&output)
    );
    let status = status_json(&journal);
    assert_eq!(
        status["outcomes"]["skipped"], 1,
        "only k:7 was the target's"
    );
    assert_eq!(status["outcomes"]["restored"], 1_999);
    let own: String = redis::cmd("GET")
        .arg("k:7")
        .query(&mut target.connection())
        .unwrap();
    assert_eq!(own, "the target's own");
    redis::cmd("DEL")
        .arg("k:7")
        .exec(&mut target.connection())
        .unwrap();
    redis::cmd("DEL")
        .arg("k:7")
        .exec(&mut source.connection())
        .unwrap();
    assert_servers_equal(&source, &target, &[0]);
}

/// A source restarted with persistence answers LOADING for a while: the
/// run waits within --reconnect-timeout instead of stopping, then scans the
/// restarted source again (a new run_id) and completes.
#[test]
fn a_source_that_is_loading_after_a_restart_is_waited_for() {
    // Loading takes 300 µs a key: 10,000 keys keep the source LOADING for
    // about 3 seconds after its restart (answering LOADING meanwhile, as a
    // large dataset does).
    let mut source = RedisServer::start_with(&[
        "--key-load-delay",
        "300",
        "--loading-process-events-interval-bytes",
        "1024",
    ]);
    fill_strings(&mut source.connection(), "k", 10_000, Some(10));
    let target = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);
    let mut child = spawn_ferry(&paced_run(&source.url(), &target.url(), &journal));
    wait_for_restored(&mut child, &journal, 2_000);
    redis::cmd("SAVE").exec(&mut source.connection()).unwrap();
    source.restart_without_waiting();
    let output = finish(child);
    assert_exit(&output, 0);
    let text = stderr(&output);
    assert!(text.contains("lost the connection to source"), "{text}");
    assert!(text.contains("is loading its dataset; waiting"), "{text}");
    assert!(text.contains("has loaded its dataset"), "{text}");
    assert_servers_equal(&source, &target, &[0]);
}

/// A target down for a few seconds: each loss and each reconnection is in
/// the log (without passwords), and the run completes.
#[test]
fn disconnects_and_reconnects_are_logged() {
    let source = RedisServer::start();
    fill_strings(&mut source.connection(), "k", KEYS, None);
    let mut target = RedisServer::start_with(&[
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--requirepass",
        "s3cret",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);
    let target_url = target.admin_url(0);
    let mut child = ferry_command(&paced_run(&source.url(), &target_url, &journal))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_restored(&mut child, &journal, 3_000);
    target.stop();
    std::thread::sleep(Duration::from_secs(2));
    target.restart();
    let output = finish(child);
    assert_exit(&output, 0);
    let text = stderr(&output);
    let redacted = format!("redis://:***@127.0.0.1:{}/0", target.port);
    let lost = format!("lost the connection to target {redacted}");
    assert!(text.contains(&lost), "{text}");
    assert_eq!(
        text.matches(&lost).count(),
        1,
        "one line per outage: {text}"
    );
    assert!(
        text.contains(&format!("reconnected to target {redacted} after")),
        "{text}"
    );
    assert!(!text.contains("s3cret"), "{text}");
    assert_servers_equal(&source, &target, &[0]);
}

/// A connection first opened while a job runs (another copier thread's,
/// another node's) waits for a server that is down at that moment, within
/// the reconnect budget, as a dropped connection does; past the budget it
/// says how long it waited.
#[test]
fn a_connection_first_opened_while_the_server_is_down_waits_within_the_budget() {
    use redis_ferry::endpoint::{Endpoint, Role};
    use redis_ferry::interrupt::Shutdown;
    use redis_ferry::side::Side;

    let mut server = RedisServer::start();
    let endpoint = Endpoint::parse(Role::Target, &server.url()).unwrap();
    let shutdown = Shutdown::new();
    let side = Side::connect(&endpoint, Duration::from_secs(60), &shutdown).unwrap();
    let address = side.seed_address().to_string();

    // Down for a moment: the new connection waits and gets through.
    let mut waiting = side.fork();
    server.stop();
    let restarter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(700));
        server.restart();
        server
    });
    let connection = waiting.connection(&address);
    assert!(
        connection.is_ok(),
        "the connection waited for the server: {:?}",
        connection.err()
    );
    let reply = waiting
        .connection(&address)
        .unwrap()
        .command(&redis::cmd("PING"))
        .unwrap();
    assert_eq!(reply, redis::Value::SimpleString("PONG".into()));
    let mut server = restarter.join().unwrap();

    // Down for longer than the budget: an error that says so.
    let short = Side::connect(&endpoint, Duration::from_secs(1), &shutdown).unwrap();
    let mut fork = short.fork();
    server.stop();
    let error = fork
        .connection(&address)
        .err()
        .expect("the server stayed down");
    let text = format!("{error:#}");
    assert!(text.contains("within 1s"), "{text}");
    assert!(text.contains(&server.url()), "{text}");
}
