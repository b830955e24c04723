//! The flags of "any server version, any key size" on the command line:
//! `--restore-mode`, `--big-key-threshold`, `--keep-idle` are accepted and
//! recorded with the job; a bad value is a usage error that says what to
//! write instead.

mod common;

use common::{RedisServer, assert_exit, fill_every_type, journal_in, run_job, stderr};

#[test]
fn a_threshold_that_is_not_a_size_is_a_usage_error_that_shows_the_forms() {
    let source = RedisServer::start();
    let target = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);
    let output = run_job(
        &source.url(),
        &target.url(),
        &journal,
        &["--big-key-threshold", "8X"],
    );
    assert_exit(&output, 2);
    assert!(
        stderr(&output)
            .contains("\"8X\" is not a size in bytes; write for example 8388608, 512K, 8M or 1G"),
        "{}",
        stderr(&output)
    );
    assert!(!std::path::Path::new(&journal).exists(), "nothing recorded");
    let output = run_job(
        &source.url(),
        &target.url(),
        &journal,
        &["--restore-mode", "sometimes"],
    );
    assert_exit(&output, 2);
    assert!(
        stderr(&output).contains("auto, dump, commands"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn the_new_flags_are_accepted_and_the_job_runs() {
    let source = RedisServer::start();
    let target = RedisServer::start();
    fill_every_type(&mut source.connection(), "k");
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);
    let output = run_job(
        &source.url(),
        &target.url(),
        &journal,
        &[
            "--restore-mode",
            "commands",
            "--big-key-threshold",
            "64K",
            "--keep-idle",
        ],
    );
    assert_exit(&output, 0);
    common::assert_servers_equal(&source, &target, &[0]);
}
