//! The application keeps writing while redis-ferry copies (dual writes:
//! every change to the source, then to the target), and when the copy ends
//! the target equals the source, key by key, value and TTL.
//!
//! Each test starts the application before the copy (the README's step 1),
//! lets it run through the whole copy and a moment after, stops it, and
//! compares the servers. A hot set of 50 keys makes every batch that holds
//! one of them race the application; a wide set of 5,000 spreads the races.
//!
//! Setting `REDIS_FERRY_TEST_NO_FENCE=1` runs the same copies with
//! `--no-fence`, to see the fence matter: then these tests find stale
//! values, lost TTLs and resurrected keys.

mod common;

use std::time::Duration;

use common::*;

/// Bulk keys that nobody writes during the copy.
const BULK_KEYS: usize = 20_000;

/// One test at a time: each runs an application thread, redis-ferry and
/// two or six servers, and on two cores five of them at once would starve
/// the application thread between its two writes for longer than any
/// production application stalls (see `--fence-hold` in the README).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn fence_flags() -> Vec<&'static str> {
    if std::env::var("REDIS_FERRY_TEST_NO_FENCE").is_ok_and(|v| v == "1") {
        vec!["--no-fence"]
    } else {
        vec![]
    }
}

/// Source with bulk data and the hot keys; an empty target.
fn servers(hot: usize) -> (RedisServer, RedisServer) {
    let source = RedisServer::start();
    let target = RedisServer::start();
    fill_strings(&mut source.connection(), "bulk", BULK_KEYS, Some(5));
    fill_hot_keys(&mut source.connection(), hot);
    (source, target)
}

fn writer(source: &RedisServer, target: &RedisServer, hot: usize) -> DualWriter {
    let writer = DualWriter::start(
        Box::new(source.connection()),
        Box::new(target.connection()),
        hot,
        4_000,
    );
    writer.wait_for_changes(200);
    writer
}

/// The application goes on for a moment after the copy, then stops.
fn stop_after_a_moment(writer: DualWriter) -> u64 {
    let before = writer.changes();
    writer.wait_for_changes(before + 400);
    std::thread::sleep(Duration::from_millis(50));
    writer.stop()
}

fn paced_run_args<'a>(source: &'a str, target: &'a str, journal: &'a str) -> Vec<&'a str> {
    let mut args = vec![
        "run",
        "--source",
        source,
        "--target",
        target,
        "--journal",
        journal,
        "--progress",
        "off",
        "--rate",
        "8000",
        "--scan-count",
        "200",
        // The target holds the application's writes already.
        "--existing",
        "replace",
    ];
    args.extend(fence_flags());
    args
}

fn dual_writes_during_run(hot: usize) {
    let _turn = one_at_a_time();
    let (source, target) = servers(hot);
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);
    let writer = writer(&source, &target, hot);
    let output = ferry(&paced_run_args(&source.url(), &target.url(), &journal));
    assert_exit(&output, 0);
    let changes = stop_after_a_moment(writer);
    assert!(
        changes > 2_000,
        "the application wrote only {changes} changes"
    );
    assert_servers_equal(&source, &target, &[0]);
}

#[test]
fn a_very_hot_set_written_during_the_copy_ends_identical() {
    dual_writes_during_run(50);
}

#[test]
fn a_wide_set_written_during_the_copy_ends_identical() {
    dual_writes_during_run(5_000);
}

#[test]
fn dual_writes_during_a_resume_after_sigkill_end_identical() {
    let _turn = one_at_a_time();
    let hot = 200;
    let (source, target) = servers(hot);
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);
    let writer = writer(&source, &target, hot);
    let mut child = spawn_ferry(&paced_run_args(&source.url(), &target.url(), &journal));
    wait_for_restored(&mut child, &journal, 5_000);
    child.kill().unwrap();
    child.wait().unwrap();
    let mut args = vec!["resume", "--journal", &journal, "--progress", "off"];
    args.extend(fence_flags());
    let output = ferry(&args);
    assert_exit(&output, 0);
    stop_after_a_moment(writer);
    assert_servers_equal(&source, &target, &[0]);
}

#[test]
fn dual_writes_during_a_retry_end_identical() {
    let _turn = one_at_a_time();
    let hot = 100;
    let (source, target) = servers(hot);
    // The first run may not write the hot keys (an ACL lets it write only
    // the bulk keys), so they all fail and wait for `retry`.
    target.restrict_ferry_user_to(&["~bulk:*"], "pw");
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);
    let writer = writer(&source, &target, hot);
    let ferry_url = target.ferry_user_url("pw");
    let output = ferry(&paced_run_args(&source.url(), &ferry_url, &journal));
    assert_exit(&output, 3);
    let failed = status_json(&journal)["outcomes"]["failed"]
        .as_u64()
        .unwrap();
    assert!(failed >= hot as u64 / 2, "only {failed} keys failed");
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
    assert_exit(&output, 0);
    stop_after_a_moment(writer);
    assert_servers_equal(&source, &target, &[0]);
}

#[test]
fn dual_writes_between_clusters_end_identical() {
    let _turn = one_at_a_time();
    for hot in [50, 2_000] {
        let source = RedisCluster::start();
        let target = RedisCluster::start();
        fill_cluster_keys(&mut source.connection(), 10_000);
        fill_hot_keys(&mut source.connection(), hot);
        let dir = tempfile::tempdir().unwrap();
        let journal = journal_in(&dir);
        let writer = DualWriter::start(
            Box::new(source.connection()),
            Box::new(target.connection()),
            hot,
            3_000,
        );
        writer.wait_for_changes(200);
        let output = ferry(&paced_run_args(&source.url(), &target.url(), &journal));
        assert_exit(&output, 0);
        stop_after_a_moment(writer);
        assert_same_data(&cluster_snapshot(&source), &cluster_snapshot(&target), 5000);
    }
}
