//! Interruptions lose nothing: Ctrl-C, SIGTERM and SIGKILL at several
//! moments, then `resume`, end with the target equal to the source; one
//! journal is never driven by two processes; `status` works during a run.

mod common;

use common::*;

/// Keys in the source for the interruption tests, and the pace that makes a
/// run take a few seconds, long enough to interrupt it in the middle.
const KEYS: usize = 20_000;
const RATE: &str = "8000";

fn source_with_data() -> RedisServer {
    let source = RedisServer::start();
    fill_strings(&mut source.connection(), "k", KEYS / 2, Some(4));
    fill_strings(&mut source.connection_db(1), "other", KEYS / 2, None);
    fill_every_type(&mut source.connection_db(2), "t");
    source
}

fn run_args<'a>(source: &'a str, target: &'a str, journal: &'a str, rate: bool) -> Vec<&'a str> {
    let mut args = vec![
        "run",
        "--source",
        source,
        "--target",
        target,
        "--journal",
        journal,
        "--progress",
        "log",
    ];
    if rate {
        args.extend(["--rate", RATE, "--scan-count", "200"]);
    }
    args
}

#[test]
fn ctrl_c_stops_cleanly_and_resume_finishes_the_job() {
    let source = source_with_data();
    let target = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);
    let (s, t) = (source.url(), target.url());
    let mut child = spawn_ferry(&run_args(&s, &t, &journal, true));
    wait_for_restored(&mut child, &journal, 2000);
    signal(&child, "INT");
    let output = finish(child);
    assert_exit(&output, 130);
    assert!(
        stderr(&output).contains("redis-ferry resume --journal"),
        "{}",
        describe(&output)
    );
    let status = status_json(&journal);
    assert_eq!(status["job"]["state"], "interrupted");
    let restored = status["outcomes"]["restored"].as_u64().unwrap();
    assert!(
        restored >= 2000 && restored < KEYS as u64,
        "restored {restored}"
    );
    // Everything the journal calls restored is on the target.
    assert!(dbsize(&mut target.connection(), 0) + dbsize(&mut target.connection(), 1) >= restored);

    let output = ferry(&["resume", "--journal", &journal, "--progress", "off"]);
    assert_exit(&output, 0);
    assert_servers_equal(&source, &target, &[0, 1, 2]);
    let status = status_json(&journal);
    assert_eq!(status["job"]["state"], "completed");
    assert_eq!(status["outcomes"]["restored"], KEYS as u64 + 9);
}

#[test]
fn sigterm_is_handled_like_ctrl_c() {
    let source = source_with_data();
    let target = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);
    let (s, t) = (source.url(), target.url());
    let mut child = spawn_ferry(&run_args(&s, &t, &journal, true));
    wait_for_restored(&mut child, &journal, 1000);
    signal(&child, "TERM");
    let output = finish(child);
    assert_exit(&output, 130);
    assert_eq!(status_json(&journal)["job"]["state"], "interrupted");
    resume_to_completion(&journal);
    assert_servers_equal(&source, &target, &[0, 1, 2]);
}

#[test]
fn sigkill_at_several_moments_then_resume_loses_no_key() {
    let source = source_with_data();
    let target = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);
    let (s, t) = (source.url(), target.url());

    // Killed early, in the middle, and late; each time by SIGKILL, so no
    // handler runs and no batch is finished on purpose.
    let mut child = spawn_ferry(&run_args(&s, &t, &journal, true));
    wait_for_restored(&mut child, &journal, 500);
    signal(&child, "KILL");
    finish(child);
    for threshold in [6_000, 14_000] {
        let mut child = spawn_ferry(&["resume", "--journal", &journal, "--progress", "off"]);
        wait_for_restored(&mut child, &journal, threshold);
        signal(&child, "KILL");
        finish(child);
        // A killed run still says "running" in the journal; status knows
        // no process holds it.
        assert_eq!(status_json(&journal)["job"]["state"], "interrupted");
    }
    let output = ferry(&["resume", "--journal", &journal, "--progress", "off"]);
    assert_exit(&output, 0);
    assert_servers_equal(&source, &target, &[0, 1, 2]);
    let status = status_json(&journal);
    assert_eq!(
        status["outcomes"]["restored"],
        KEYS as u64 + 9,
        "each key counted once"
    );
    assert_eq!(status["outcomes"]["failed"], 0);
}

#[test]
fn a_journal_is_never_driven_by_two_processes() {
    let source = source_with_data();
    let target = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);
    let (s, t) = (source.url(), target.url());
    let mut child = spawn_ferry(&run_args(&s, &t, &journal, true));
    wait_for_restored(&mut child, &journal, 500);

    let second = ferry(&["resume", "--journal", &journal, "--progress", "off"]);
    assert_exit(&second, 1);
    assert!(
        stderr(&second).contains("is in use by another redis-ferry process"),
        "{}",
        describe(&second)
    );

    let third = ferry(&run_args(&s, &t, &journal, false));
    assert_exit(&third, 1);
    assert!(
        stderr(&third).contains("already holds a job"),
        "{}",
        describe(&third)
    );

    // status --json works from a second process while the run writes.
    let status = status_json(&journal);
    assert_eq!(status["job"]["state"], "running");
    assert_eq!(status["job"]["active"], true);
    assert!(status["outcomes"]["restored"].as_u64().unwrap() >= 500);
    assert_eq!(status["job"]["source"], source.url());
    assert!(
        status["dbs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|db| db["source_keys"].is_null())
    );
    assert!(status["cursors"].as_array().unwrap().len() == 3);

    signal(&child, "INT");
    assert_exit(&finish(child), 130);
    resume_to_completion(&journal);
    assert_servers_equal(&source, &target, &[0, 1, 2]);

    // A completed job: resume says so and exits 0; run refuses the journal.
    let again = ferry(&["resume", "--journal", &journal]);
    assert_exit(&again, 0);
    assert!(
        stdout(&again).contains("already completed"),
        "{}",
        describe(&again)
    );
    let before = file_bytes(std::path::Path::new(&journal));
    let refused = ferry(&run_args(&s, &t, &journal, false));
    assert_exit(&refused, 1);
    assert!(
        stderr(&refused).contains("already holds a completed job"),
        "{}",
        describe(&refused)
    );
    assert_eq!(
        file_bytes(std::path::Path::new(&journal)),
        before,
        "the journal is left byte-for-byte unchanged"
    );
}

#[test]
fn a_restarted_source_is_scanned_again_from_the_start() {
    let mut source = RedisServer::start();
    fill_strings(&mut source.connection(), "k", 3000, None);
    let target = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);
    let (s, t) = (source.url(), target.url());
    let mut child = spawn_ferry(&[
        "run",
        "--source",
        &s,
        "--target",
        &t,
        "--journal",
        &journal,
        "--rate",
        "1000",
        "--scan-count",
        "100",
    ]);
    wait_for_restored(&mut child, &journal, 300);
    signal(&child, "INT");
    assert_exit(&finish(child), 130);
    // Same data, new process: its hash seed and so its SCAN order differ.
    source.stop();
    let source = {
        let _ = &source;
        let replacement = RedisServer::start();
        fill_strings(&mut replacement.connection(), "k", 3000, None);
        replacement
    };
    let output = ferry(&[
        "resume",
        "--journal",
        &journal,
        "--source",
        &source.url(),
        "--progress",
        "off",
    ]);
    assert_exit(&output, 0);
    assert!(
        stderr(&output).contains("again from the start"),
        "{}",
        describe(&output)
    );
    assert_servers_equal(&source, &target, &[0]);
}

#[test]
fn a_second_ctrl_c_exits_at_once_and_the_journal_stays_consistent() {
    let source = source_with_data();
    let target = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);
    let (s, t) = (source.url(), target.url());
    let mut child = spawn_ferry(&run_args(&s, &t, &journal, true));
    wait_for_restored(&mut child, &journal, 1000);
    // The target holds every write for a minute, so the batch in flight
    // cannot finish: only the second Ctrl-C can end the process (without
    // the pause, the first one may finish cleanly before the second lands).
    redis::cmd("CLIENT")
        .arg(&["PAUSE", "60000", "WRITE"])
        .exec(&mut target.connection())
        .unwrap();
    signal(&child, "INT");
    // Two SIGINTs sent back to back can reach the process as one (a signal
    // pending twice is delivered once), so the second is sent again until
    // the process exits; it cannot exit by itself while the pause lasts.
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none()
        && started.elapsed() < std::time::Duration::from_secs(30)
    {
        std::thread::sleep(std::time::Duration::from_millis(200));
        signal(&child, "INT");
    }
    let output = finish(child);
    redis::cmd("CLIENT")
        .arg("UNPAUSE")
        .exec(&mut target.connection())
        .unwrap();
    assert_exit(&output, 130);
    assert!(
        stderr(&output).contains("exiting now"),
        "{}",
        describe(&output)
    );
    resume_to_completion(&journal);
    assert_servers_equal(&source, &target, &[0, 1, 2]);
    assert_eq!(
        status_json(&journal)["outcomes"]["restored"],
        KEYS as u64 + 9
    );
}

#[test]
fn dropped_connections_are_reconnected_and_the_job_goes_on() {
    let source = source_with_data();
    let target = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);
    let (s, t) = (source.url(), target.url());
    let mut child = spawn_ferry(&run_args(&s, &t, &journal, true));
    wait_for_restored(&mut child, &journal, 1000);
    // Kill every client connection on both servers, twice, while the job
    // runs: the only other clients are redis-ferry's (status reads only
    // the journal), so each kill must have hit at least one of ours.
    for round in 0..2 {
        for (side, server) in [("source", &source), ("target", &target)] {
            let killed: u64 = redis::cmd("CLIENT")
                .arg("KILL")
                .arg("TYPE")
                .arg("normal")
                .arg("SKIPME")
                .arg("yes")
                .query(&mut server.connection())
                .unwrap();
            assert!(
                killed >= 1,
                "round {round}: CLIENT KILL on the {side} found no connection of redis-ferry's to kill"
            );
        }
        let restored = status_json(&journal)["outcomes"]["restored"]
            .as_u64()
            .unwrap();
        // The next round only after the job got its connections back.
        wait_for_restored(&mut child, &journal, restored + 200);
    }
    let output = finish(child);
    assert_exit(&output, 0);
    assert_servers_equal(&source, &target, &[0, 1, 2]);
}

#[test]
fn a_target_that_stays_down_stops_the_job_resumably() {
    let source = source_with_data();
    // Append-only, so the target keeps what it got across its restart.
    let mut target = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);
    let (s, t) = (source.url(), target.url());
    let mut args = run_args(&s, &t, &journal, true);
    args.extend(["--reconnect-timeout", "2"]);
    let mut child = spawn_ferry(&args);
    wait_for_restored(&mut child, &journal, 1000);
    target.stop();
    let output = finish(child);
    assert_exit(&output, 1);
    let text = stderr(&output);
    assert!(
        (text.contains(&format!("lost the connection to target {t}"))
            || text.contains(&format!("cannot connect to target {t}")))
            && text.contains("within 2s"),
        "{}",
        describe(&output)
    );
    assert!(text.contains("redis-ferry resume --journal"), "{text}");
    let status = status_json(&journal);
    assert_eq!(status["job"]["state"], "failed");
    // A worker whose connection was open lost it; one that had not opened
    // its own yet could not open it: either way the error names the target
    // and the time it was given.
    let last_error = status["job"]["last_error"].as_str().unwrap();
    assert!(
        (last_error.contains(&format!("lost the connection to target {t}"))
            || last_error.contains(&format!("cannot connect to target {t}")))
            && last_error.contains("within 2s"),
        "{last_error}"
    );

    target.restart();
    resume_to_completion(&journal);
    assert_servers_equal(&source, &target, &[0, 1, 2]);
}

#[test]
fn a_target_turned_read_only_stops_the_job() {
    let source = source_with_data();
    let target = RedisServer::start();
    let other = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);
    let (s, t) = (source.url(), target.url());
    let mut child = spawn_ferry(&run_args(&s, &t, &journal, true));
    wait_for_restored(&mut child, &journal, 1000);
    redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(other.port)
        .exec(&mut target.connection())
        .unwrap();
    let output = finish(child);
    assert_exit(&output, 1);
    assert!(
        stderr(&output).contains("READONLY"),
        "{}",
        describe(&output)
    );
    let status = status_json(&journal);
    assert_eq!(status["job"]["state"], "failed");
    assert_eq!(
        status["outcomes"]["failed"], 0,
        "a read-only target is not a per-key failure"
    );
}

#[test]
fn a_source_restarted_during_the_run_is_scanned_again_before_the_job_completes() {
    // Append-only, so the source has the same keys after its restart; its
    // new process hashes them with a new seed, so the cursor in flight
    // proves nothing even though the connection comes back.
    let mut source = RedisServer::start_with(&["--appendonly", "yes"]);
    fill_strings(&mut source.connection(), "k", KEYS, Some(4));
    let target = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);
    let (s, t) = (source.url(), target.url());
    let mut child = spawn_paced_run(&s, &t, &journal, 8000);
    wait_for_restored(&mut child, &journal, 2000);
    source.restart();
    let output = finish(child);
    assert_exit(&output, 0);
    assert!(
        stderr(&output).contains("scanning again: the source restarted since db 0 was scanned"),
        "{}",
        describe(&output)
    );
    assert_servers_equal(&source, &target, &[0]);
    assert_eq!(
        status_json(&journal)["outcomes"]["restored"],
        KEYS as u64,
        "each key counted once"
    );
    // The last line counts keys as status does, not copies made.
    assert!(
        stdout(&output).contains(&format!("job completed: {KEYS} keys (restored {KEYS}, ")),
        "{}",
        describe(&output)
    );
}
