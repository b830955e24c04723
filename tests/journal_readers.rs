//! Readers of a journal (`status`, `report`) never write to it: they read
//! a journal that `run` is creating or writing without disturbing it, read
//! a read-only copy, leave the file as it was, and say what to do with a
//! journal of an older schema; a refused `run` leaves no SQLite side files.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

use common::*;
use redis_ferry::journal::Journal;

/// Files in `dir`, sorted by name.
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A completed job over a few hundred keys, some of them failed (an ACL
/// on the target), in a fresh directory.
fn completed_journal() -> (RedisServer, RedisServer, tempfile::TempDir, String) {
    let source = RedisServer::start();
    let target = RedisServer::start();
    target.restrict_ferry_user_to_ok_keys("pw-7");
    fill_strings(&mut source.connection(), "ok", 300, Some(4));
    fill_strings(&mut source.connection(), "no", 5, None);
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);
    let output = run_job(&source.url(), &target.ferry_user_url("pw-7"), &journal, &[]);
    assert_exit(&output, 3);
    (source, target, dir, journal)
}

/// What `status --json` and `report --format csv` print, with no servers
/// asked (the CSV reads only the journal).
fn journal_views(journal: &str, command: impl Fn(&[&str]) -> Command) -> (String, String) {
    let status = command(&["status", "--journal", journal, "--json"])
        .output()
        .unwrap();
    assert_exit(&status, 0);
    let csv = command(&["report", "--journal", journal, "--format", "csv"])
        .output()
        .unwrap();
    assert_exit(&csv, 0);
    (stdout(&status), stdout(&csv))
}

#[test]
fn status_in_a_tight_loop_never_disturbs_a_run_creating_its_journal() {
    let source = RedisServer::start();
    let target = RedisServer::start();
    fill_strings(&mut source.connection(), "k", 200, None);
    let dir = tempfile::tempdir().unwrap();
    for attempt in 0..24 {
        // Each attempt is a new job on an empty target (the guard refuses
        // a target that already holds keys).
        redis::cmd("FLUSHALL")
            .exec(&mut target.connection())
            .unwrap();
        let journal = dir.path().join(format!("try-{attempt}.db"));
        let journal = journal.to_str().unwrap();
        let done = AtomicBool::new(false);
        let (run, answers) = std::thread::scope(|scope| {
            let poller = scope.spawn(|| {
                let mut answers = Vec::new();
                while !done.load(Ordering::SeqCst) {
                    answers.push(ferry(&["status", "--journal", journal, "--json"]));
                }
                answers
            });
            let run = run_job(&source.url(), &target.url(), journal, &[]);
            done.store(true, Ordering::SeqCst);
            (run, poller.join().unwrap())
        });
        assert_exit(&run, 0);
        assert!(!answers.is_empty());
        for answer in &answers {
            match answer.status.code() {
                Some(0) => {
                    let json: serde_json::Value = serde_json::from_slice(&answer.stdout).unwrap();
                    let state = json["job"]["state"].as_str().unwrap().to_string();
                    assert!(
                        ["starting", "running", "completed"].contains(&state.as_str()),
                        "{state}"
                    );
                }
                _ => assert!(
                    stderr(answer).contains("does not exist"),
                    "a status while the journal is created: {}",
                    describe(answer)
                ),
            }
        }
        let json = status_json(journal);
        assert_eq!(json["job"]["state"], "completed");
        assert_eq!(json["outcomes"]["restored"], 200);
    }
}

#[test]
fn a_journal_being_created_reads_as_starting() {
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);
    // A `run` between creating the journal and recording its job.
    let creating = Journal::create(Path::new(&journal)).unwrap();
    let json = status_json(&journal);
    assert_eq!(json["job"]["state"], "starting");
    assert_eq!(json["job"]["source"], serde_json::Value::Null);
    assert_eq!(json["outcomes"]["restored"], 0);
    let text = ferry(&["status", "--journal", &journal]);
    assert_exit(&text, 0);
    assert!(
        stdout(&text).starts_with("job:      starting"),
        "{}",
        describe(&text)
    );
    let report = ferry(&["report", "--journal", &journal, "--format", "json"]);
    assert_exit(&report, 0);
    let json: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    assert_eq!(json["job"]["state"], "starting");
    drop(creating);
    // Once nobody is creating it, an empty journal is a leftover.
    let leftover = ferry(&["status", "--journal", &journal]);
    assert_exit(&leftover, 1);
    assert!(
        stderr(&leftover).contains("holds no job; start one with `redis-ferry run --journal"),
        "{}",
        describe(&leftover)
    );
}

#[test]
fn readers_leave_the_journal_file_as_it_was() {
    let (_source, _target, dir, journal) = completed_journal();
    let before = file_bytes(Path::new(&journal));
    let env = [("REDIS_FERRY_TARGET_PASSWORD", "pw-7")];
    for format in ["text", "markdown", "json", "csv"] {
        let output = ferry_command(&["report", "--journal", &journal, "--format", format])
            .envs(env)
            .output()
            .unwrap();
        assert_exit(&output, 0);
    }
    assert_exit(&ferry(&["status", "--journal", &journal]), 0);
    assert_eq!(
        file_bytes(Path::new(&journal)),
        before,
        "not a byte changed"
    );
    let names = names_in(dir.path());
    assert!(
        names.iter().all(|n| !n.ends_with("-journal")),
        "no rollback journal: {names:?}"
    );
}

/// The uid to read as when the tests run as root (root may write anything,
/// so "read-only" would not be).
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|line| line.starts_with("Uid:"))
        .and_then(|line| line.split_whitespace().nth(2))
        == Some("0")
}

/// A redis-ferry command run as a user who may not write the copy.
fn as_reader(args: &[&str]) -> Command {
    let mut command = ferry_command(args);
    if running_as_root() {
        command.uid(65534).gid(65534); // nobody
    }
    command
}

/// `files` of `journal` copied into a new directory that is then made
/// read-only (the files too), as a copy on a read-only disk would be.
fn read_only_copy(journal: &str, files: &[&str]) -> (tempfile::TempDir, String) {
    let copy = tempfile::tempdir().unwrap();
    for suffix in files {
        let from = format!("{journal}{suffix}");
        std::fs::copy(&from, copy.path().join(format!("journal.db{suffix}"))).unwrap();
    }
    for entry in std::fs::read_dir(copy.path()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).unwrap();
    }
    std::fs::set_permissions(copy.path(), std::fs::Permissions::from_mode(0o555)).unwrap();
    let path = copy.path().join("journal.db").display().to_string();
    (copy, path)
}

/// Lets the cleanup of a read-only copy remove it.
fn make_writable(dir: &Path) {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn a_read_only_copy_of_a_journal_can_be_read() {
    let (_source, _target, _dir, journal) = completed_journal();
    let original = journal_views(&journal, ferry_command);
    let (copy, copied) = read_only_copy(&journal, &[""]);
    let before = names_in(copy.path());
    let read = journal_views(&copied, as_reader);
    assert_eq!(read.1, original.1, "the same audit log");
    let (json, original_json): (serde_json::Value, serde_json::Value) = (
        serde_json::from_str(&read.0).unwrap(),
        serde_json::from_str(&original.0).unwrap(),
    );
    assert_eq!(json["outcomes"], original_json["outcomes"]);
    assert_eq!(json["outcomes"]["failed"], 5);
    assert_eq!(
        names_in(copy.path()),
        before,
        "nothing created beside the copy"
    );
    make_writable(copy.path());

    // A file that is read-only in a writable directory reads too.
    let copy = tempfile::tempdir().unwrap();
    std::fs::set_permissions(copy.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let file = copy.path().join("journal.db");
    std::fs::copy(&journal, &file).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o444)).unwrap();
    let read = journal_views(file.to_str().unwrap(), as_reader);
    assert_eq!(read.1, original.1);
}

/// A copy taken while a writer had changes only in the WAL: with its
/// `-shm` beside it the copy reads whole; without it, on read-only
/// storage, the reader says how to read it instead of showing less.
#[test]
fn a_read_only_copy_with_an_unfinished_wal_is_read_whole_or_explained() {
    let (_source, _target, _dir, journal) = completed_journal();
    let writer = rusqlite::Connection::open(&journal).unwrap();
    writer.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
    writer
        .execute(
            "UPDATE job SET last_error = 'changed in the WAL only' WHERE id = 1",
            [],
        )
        .unwrap();
    assert!(std::fs::metadata(format!("{journal}-wal")).unwrap().len() > 0);

    let (whole, whole_path) = read_only_copy(&journal, &["", "-wal", "-shm"]);
    let status = as_reader(&["status", "--journal", &whole_path, "--json"])
        .output()
        .unwrap();
    assert_exit(&status, 0);
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(json["job"]["last_error"], "changed in the WAL only");
    make_writable(whole.path());

    let (partial, partial_path) = read_only_copy(&journal, &["", "-wal"]);
    let status = as_reader(&["status", "--journal", &partial_path])
        .output()
        .unwrap();
    assert_exit(&status, 1);
    let message = stderr(&status);
    assert!(
        message.contains("read-only storage")
            && message.contains("copy the journal with its -wal file"),
        "{}",
        describe(&status)
    );
    assert_eq!(message.lines().count(), 1, "one line: {message}");
    make_writable(partial.path());
    drop(writer);
}

#[test]
fn a_refused_run_leaves_no_wal_or_shm_behind() {
    let (source, target, dir, journal) = completed_journal();
    let before = names_in(dir.path());
    assert_eq!(before, ["journal.db", "journal.db.lock"]);
    let bytes = file_bytes(Path::new(&journal));
    let again = run_job(&source.url(), &target.url(), &journal, &[]);
    assert_exit(&again, 1);
    assert!(
        stderr(&again).contains("already holds a completed job"),
        "{}",
        describe(&again)
    );
    assert_eq!(names_in(dir.path()), before);
    assert_eq!(file_bytes(Path::new(&journal)), bytes);
}

/// A journal of the schema the first release wrote (migrations 01 and 02).
fn old_schema_journal(dir: &Path) -> PathBuf {
    let path = dir.join("old.db");
    let connection = rusqlite::Connection::open(&path).unwrap();
    connection
        .pragma_update(None, "journal_mode", "WAL")
        .unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    for migration in ["01-initial", "02-cursor-node-layout"] {
        let sql = std::fs::read_to_string(root.join(migration).join("up.sql")).unwrap();
        connection.execute_batch(&sql).unwrap();
    }
    connection.pragma_update(None, "user_version", 2).unwrap();
    connection
        .execute(
            "INSERT INTO job (id, state, source_url, target_url, options, started_at, updated_at, finished_at)
             VALUES (1, 'completed', 'redis://127.0.0.1:1', 'redis://127.0.0.1:2', ?1, 1, 2, 2)",
            [serde_json::to_string(&redis_ferry::options::CopyOptions::default()).unwrap()],
        )
        .unwrap();
    connection
        .execute_batch(
            "INSERT INTO keys (db, key, outcome, size_bytes, attempts, updated_at) VALUES (0, x'61', 'restored', 5, 1, 1);
             INSERT INTO counts (db, outcome, keys) VALUES (0, 'restored', 1);",
        )
        .unwrap();
    path
}

#[test]
fn status_of_an_older_journal_says_that_resume_upgrades_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = old_schema_journal(dir.path());
    let journal = path.to_str().unwrap();
    let bytes = file_bytes(&path);
    let status = ferry(&["status", "--journal", journal]);
    assert_exit(&status, 1);
    assert!(
        stderr(&status).contains(&format!(
            "run `redis-ferry resume --journal {journal}` once to upgrade it"
        )),
        "{}",
        describe(&status)
    );
    assert_eq!(file_bytes(&path), bytes, "status did not upgrade it");
    let resume = ferry(&["resume", "--journal", journal]);
    assert_exit(&resume, 0);
    assert!(
        stdout(&resume).contains("already completed"),
        "{}",
        describe(&resume)
    );
    let json = status_json(journal);
    assert_eq!(json["outcomes"]["restored"], 1);
    let csv = ferry(&["report", "--journal", journal, "--format", "csv"]);
    assert_exit(&csv, 0);
    assert_eq!(
        stdout(&csv).lines().nth(1),
        Some("0,a,restored,,5,1,,1970-01-01T00:00:00Z,")
    );
}
