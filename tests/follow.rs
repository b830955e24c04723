//! `run --follow`: the application writes the source only; redis-ferry
//! copies, then keeps copying every change until cutover, and the target
//! ends equal to the source.

mod common;

use std::process::Child;
use std::time::Duration;

use common::*;

fn follow_args<'a>(source: &'a str, target: &'a str, journal: &'a str) -> Vec<&'a str> {
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
        "--follow",
    ]
}

/// Waits until `status --json` says the job follows and is in sync.
fn wait_in_sync(child: &mut Child, journal: &str) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    wait_while_running(
        child,
        "the job to be in sync",
        Duration::from_secs(120),
        || {
            let output = ferry(&["status", "--journal", journal, "--json"]);
            if output.status.code() != Some(0) {
                return false;
            }
            last = serde_json::from_slice(&output.stdout).unwrap_or_default();
            last["job"]["state"] == "following" && last["follow"]["in_sync"] == true
        },
    );
    last
}

/// Waits until the job follows (the scan is over).
fn wait_following(child: &mut Child, journal: &str) {
    wait_while_running(child, "the job to follow", Duration::from_secs(120), || {
        let output = ferry(&["status", "--journal", journal, "--json"]);
        let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
        status["job"]["state"] == "following"
    });
}

/// Ctrl-C at cutover: the job drains and ends completed, exit 0.
fn cut_over(child: Child) -> std::process::Output {
    signal(&child, "INT");
    let output = finish(child);
    assert_exit(&output, 0);
    output
}

#[test]
fn every_change_made_while_following_reaches_the_target() {
    let source = RedisServer::start();
    let target = RedisServer::start();
    fill_strings(&mut source.connection(), "bulk", 20_000, Some(5));
    fill_strings(&mut source.connection_db(1), "other", 1_000, None);
    fill_hot_keys(&mut source.connection(), 500);
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);
    let mut child = spawn_ferry(&follow_args(&source.url(), &target.url(), &journal));
    // Changes start while the scan runs, and go on while following.
    let writer = DualWriter::source_only(Box::new(source.connection()), 500, 3_000);
    wait_following(&mut child, &journal);
    writer.wait_for_changes(writer.changes() + 3_000);
    // A flush has no keyevent of its own.
    redis::cmd("FLUSHDB")
        .exec(&mut source.connection_db(1))
        .unwrap();
    fill_strings(&mut source.connection_db(1), "after-flush", 10, None);
    writer.wait_for_changes(writer.changes() + 1_000);
    let changes = writer.stop();
    assert!(changes > 4_000, "{changes} changes");
    let status = wait_in_sync(&mut child, &journal);
    assert!(
        status["follow"]["changes_applied"].as_u64().unwrap() > 1_000,
        "{status}"
    );
    assert_eq!(status["follow"]["pending_keys"], 0);
    assert!(
        status["follow"]["gaps"].as_u64().unwrap() >= 1,
        "the flush is a gap: {status}"
    );
    let output = cut_over(child);
    assert!(stderr(&output).contains("flushed"), "{}", describe(&output));
    assert_servers_equal(&source, &target, &[0, 1]);
    assert_eq!(status_json(&journal)["job"]["state"], "completed");
}

#[test]
fn a_killed_subscription_is_a_gap_that_is_caught_up() {
    let source = RedisServer::start();
    let target = RedisServer::start();
    fill_strings(&mut source.connection(), "bulk", 5_000, None);
    fill_hot_keys(&mut source.connection(), 200);
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);
    let mut child = spawn_ferry(&follow_args(&source.url(), &target.url(), &journal));
    wait_following(&mut child, &journal);
    let writer = DualWriter::source_only(Box::new(source.connection()), 200, 2_000);
    writer.wait_for_changes(500);
    let killed = source.kill_pubsub_clients();
    assert!(killed >= 1, "a subscription of redis-ferry was killed");
    writer.wait_for_changes(writer.changes() + 1_000);
    writer.stop();
    let status = wait_in_sync(&mut child, &journal);
    let gaps = status["follow_gaps"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        gaps.iter().any(|gap| gap["reason"]
            .as_str()
            .unwrap_or("")
            .contains("subscription")
            && !gap["caught_up_at"].is_null()),
        "{status}"
    );
    cut_over(child);
    assert_servers_equal(&source, &target, &[0, 1]);
}

/// Changes made while no subscription listens, into a database that was
/// empty when the job started: the catch-up compares the databases as they
/// are now, so those keys reach the target too.
#[test]
fn a_gap_catch_up_covers_a_database_empty_when_the_job_started() {
    let source = RedisServer::start();
    let target = RedisServer::start();
    fill_strings(&mut source.connection(), "bulk", 2_000, None);
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);
    let mut child = spawn_ferry(&follow_args(&source.url(), &target.url(), &journal));
    wait_following(&mut child, &journal);
    // One transaction: the subscriptions are closed before the writes run,
    // so their events are never delivered (a certain gap, not a race).
    let mut connection = source.connection();
    let replies: Vec<redis::Value> = redis::pipe()
        .atomic()
        .cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .cmd("SET")
        .arg("bulk:0")
        .arg("changed in the gap")
        .cmd("MOVE")
        .arg("bulk:1")
        .arg(2)
        .cmd("SELECT")
        .arg(3)
        .cmd("SET")
        .arg("born:in:the:gap")
        .arg("x")
        .query(&mut connection)
        .unwrap();
    assert!(
        matches!(replies[0], redis::Value::Int(killed) if killed >= 1),
        "a subscription of redis-ferry was killed: {replies:?}"
    );
    wait_while_running(
        &mut child,
        "the gap to be caught up",
        Duration::from_secs(120),
        || {
            let status = status_json(&journal);
            status["follow"]["gaps"].as_u64().unwrap_or(0) >= 1
                && status["follow"]["in_sync"] == true
        },
    );
    cut_over(child);
    assert_servers_equal(&source, &target, &[0, 2, 3]);
    assert_eq!(dbsize(&mut target.connection(), 3), 1);
}

#[test]
fn a_following_job_killed_and_resumed_follows_again_and_ends_identical() {
    let source = RedisServer::start();
    let target = RedisServer::start();
    fill_strings(&mut source.connection(), "bulk", 5_000, None);
    fill_hot_keys(&mut source.connection(), 200);
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);
    let mut child = spawn_ferry(&follow_args(&source.url(), &target.url(), &journal));
    wait_following(&mut child, &journal);
    let writer = DualWriter::source_only(Box::new(source.connection()), 200, 2_000);
    writer.wait_for_changes(500);
    child.kill().unwrap();
    child.wait().unwrap();
    // The application goes on while nothing follows.
    writer.wait_for_changes(writer.changes() + 1_000);
    let mut child = spawn_ferry(&["resume", "--journal", &journal, "--progress", "log"]);
    wait_following(&mut child, &journal);
    writer.wait_for_changes(writer.changes() + 1_000);
    writer.stop();
    wait_in_sync(&mut child, &journal);
    let output = cut_over(child);
    assert!(
        stderr(&output).contains("was not running"),
        "{}",
        describe(&output)
    );
    assert_servers_equal(&source, &target, &[0, 1]);
}

#[test]
fn a_cluster_is_followed_on_every_primary() {
    let source = RedisCluster::start();
    let target = RedisCluster::start();
    fill_cluster_keys(&mut source.connection(), 5_000);
    fill_hot_keys(&mut source.connection(), 300);
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);
    let mut child = spawn_ferry(&follow_args(&source.url(), &target.url(), &journal));
    let writer = DualWriter::source_only(Box::new(source.connection()), 300, 2_000);
    wait_following(&mut child, &journal);
    writer.wait_for_changes(writer.changes() + 2_000);
    writer.stop();
    wait_in_sync(&mut child, &journal);
    cut_over(child);
    assert_same_data(&cluster_snapshot(&source), &cluster_snapshot(&target), 5000);
}

#[test]
fn notifications_that_cannot_be_set_are_refused_with_the_setting_to_change() {
    let source = RedisServer::start_with(&["--rename-command", "CONFIG", ""]);
    let target = RedisServer::start();
    fill_strings(&mut source.connection(), "k", 10, None);
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);
    let output = ferry(&follow_args(&source.url(), &target.url(), &journal));
    assert_exit(&output, 1);
    let text = stderr(&output);
    assert!(
        text.contains("notify-keyspace-events") && text.contains("KEA"),
        "{}",
        describe(&output)
    );
    assert_eq!(dbsize(&mut target.connection(), 0), 0, "nothing was copied");
}

#[test]
fn the_notification_setting_is_put_back_when_the_job_stops() {
    let source = RedisServer::start_with(&["--notify-keyspace-events", "Kx"]);
    let target = RedisServer::start();
    fill_strings(&mut source.connection(), "k", 100, None);
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);
    let mut child = spawn_ferry(&follow_args(&source.url(), &target.url(), &journal));
    wait_following(&mut child, &journal);
    let during: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("notify-keyspace-events")
        .query(&mut source.connection())
        .unwrap();
    assert!(
        during[1].contains('E') && during[1].contains('A'),
        "{during:?}"
    );
    cut_over(child);
    let after: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("notify-keyspace-events")
        .query(&mut source.connection())
        .unwrap();
    assert_eq!(after[1], "xK");
}
