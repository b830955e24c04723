//! The guards before a new job writes: a target that already holds keys,
//! a selection that matches no key, data that will not fit in the target's
//! maxmemory. Each says what it found (how many keys, where) and what to do.

mod common;

use std::path::Path;

use common::*;

#[test]
fn a_target_that_holds_keys_is_refused_unless_existing_is_given() {
    let source = RedisServer::start();
    let target = RedisServer::start();
    fill_strings(&mut source.connection(), "k", 50, None);
    fill_strings(&mut target.connection(), "app", 5, None);
    fill_strings(&mut target.connection_db(3), "other", 2, None);
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);
    let (s, t) = (source.url(), target.url());

    // A dry run says so and writes nothing.
    let output = run_job(&s, &t, &journal, &["--dry-run"]);
    assert_exit(&output, 0);
    assert!(
        stderr(&output).contains(&format!(
            "redis-ferry: warning: target {t} already holds 5 keys in the databases this job would write (db 0: 5); \
             a real run refuses to start unless --existing replace"
        )),
        "{}",
        describe(&output)
    );

    // The run is refused before anything is written or journaled.
    let output = run_job(&s, &t, &journal, &[]);
    assert_exit(&output, 1);
    let text = stderr(&output);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.contains(&format!(
            "target {t} already holds 5 keys in the databases this job would write (db 0: 5): is --target the new server?"
        )) && text.contains("--existing replace (overwrite them with the source's) or --existing skip (keep the target's)"),
        "{text}"
    );
    assert!(!Path::new(&journal).exists());
    assert_eq!(dbsize(&mut target.connection(), 0), 5);

    // Said explicitly, it runs, and says again what it found.
    let output = run_job(&s, &t, &journal, &["--existing", "replace"]);
    assert_exit(&output, 0);
    let text = stderr(&output);
    assert!(
        text.contains(&format!(
            "redis-ferry: warning: target {t} already holds 5 keys in the databases this job writes (db 0: 5); \
             --existing replace: keys of the same name are replaced with the source's"
        )),
        "{text}"
    );
    assert_eq!(dbsize(&mut target.connection(), 0), 55);
}

#[test]
fn keys_only_in_databases_the_job_does_not_write_are_noted_not_refused() {
    let source = RedisServer::start();
    let target = RedisServer::start();
    fill_strings(&mut source.connection(), "k", 10, None);
    fill_strings(&mut target.connection_db(4), "other", 3, None);
    let dir = tempfile::tempdir().unwrap();
    let output = run_job(&source.url(), &target.url(), &journal_in(&dir), &[]);
    assert_exit(&output, 0);
    assert!(
        stderr(&output).contains(&format!(
            "note: target {} holds keys in databases this job does not write (db 4: 3)",
            target.url()
        )),
        "{}",
        describe(&output)
    );
}

#[test]
fn an_empty_database_or_a_match_that_matches_nothing_warns_before_the_job() {
    let source = RedisServer::start();
    let target = RedisServer::start();
    fill_strings(&mut source.connection(), "user", 300, None);
    let s = source.url();
    let dir = tempfile::tempdir().unwrap();

    let output = run_job(
        &source.url_db(5),
        &target.url(),
        &journal_in(&dir),
        &["--dry-run"],
    );
    assert_exit(&output, 0);
    assert!(
        stderr(&output).contains(&format!(
            "redis-ferry: warning: source {} holds no keys in db 5: the job will copy nothing",
            source.url_db(5)
        )),
        "{}",
        describe(&output)
    );

    let journal = dir.path().join("match.db").display().to_string();
    let output = run_job(&s, &target.url(), &journal, &["--match", "User:*"]);
    assert_exit(&output, 0);
    let text = stderr(&output);
    assert!(
        text.contains(&format!(
            "redis-ferry: warning: no key of source {s} matches --match 'User:*' (300 keys in db 0): the job will copy nothing"
        )),
        "{text}"
    );
    // A pattern that matches is not warned about.
    let journal = dir.path().join("matching.db").display().to_string();
    let output = run_job(&s, &target.url(), &journal, &["--match", "user:1*"]);
    assert_exit(&output, 0);
    assert!(
        !stderr(&output).contains("matches"),
        "{}",
        describe(&output)
    );
}

#[test]
fn a_match_that_matches_nothing_in_a_large_database_is_told_after_the_job() {
    // Too many keys for the probe to scan them all: only the end can tell.
    let source = RedisServer::start();
    let target = RedisServer::start();
    fill_strings(&mut source.connection(), "user", 25_000, None);
    let dir = tempfile::tempdir().unwrap();
    let output = run_job(
        &source.url(),
        &target.url(),
        &journal_in(&dir),
        &["--match", "nobody:*"],
    );
    assert_exit(&output, 0);
    let text = stderr(&output);
    assert!(!text.contains("no key of source"), "{text}");
    assert!(
        text.contains(
            "redis-ferry: warning: no key matched --match 'nobody:*' in the 25000 keys of the selected databases: nothing was copied"
        ),
        "{text}"
    );
}

#[test]
fn data_that_will_not_fit_in_the_targets_maxmemory_warns() {
    let source = RedisServer::start();
    let target = RedisServer::start();
    fill_strings(&mut source.connection(), "k", 40_000, None);
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("3mb")
        .exec(&mut target.connection())
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let output = run_job(
        &source.url(),
        &target.url(),
        &journal_in(&dir),
        &["--dry-run"],
    );
    assert_exit(&output, 0);
    let text = stderr(&output);
    let warning = text
        .lines()
        .find(|line| line.contains("it will not fit"))
        .unwrap_or_else(|| panic!("no fit warning:\n{text}"));
    assert!(
        warning.contains(&format!("target {} has room for", target.url()))
            && warning.contains("(maxmemory 3.0 MiB, ")
            && warning.contains("writes will fail with OOM")
            && warning.contains("Raise maxmemory on the target"),
        "{warning}"
    );

    // With room enough, nothing is said.
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("500mb")
        .exec(&mut target.connection())
        .unwrap();
    let output = run_job(
        &source.url(),
        &target.url(),
        &journal_in(&dir),
        &["--dry-run"],
    );
    assert_exit(&output, 0);
    assert!(
        !stderr(&output).contains("will not fit"),
        "{}",
        describe(&output)
    );
}
