//! What redis-ferry says, read as an operator reads it: output into a pipe
//! that closes early ends quietly with the command's own exit code; every
//! suggested command works when pasted as printed; counts are keys, in the
//! singular when there is one; a sample claims only the sample; and the
//! places a journal cannot go, a TLS URL at a plain server and a refused
//! password are each explained in one line.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::*;

/// Runs redis-ferry with its stdout on a pipe whose reading end is already
/// closed: its first write meets EPIPE, whatever the timing.
fn run_into_closed_pipe(args: &[&str], env: &[(&str, &str)]) -> Output {
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let mut command = ferry_command(args);
    for (name, value) in env {
        command.env(name, value);
    }
    command
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("redis-ferry runs")
}

#[track_caller]
fn assert_quiet_end(output: &Output, code: i32, what: &str) {
    let text = stderr(output);
    assert_eq!(output.status.code(), Some(code), "{what}: {text}");
    assert!(
        !text.contains("internal error")
            && !text.contains("Broken pipe")
            && !text.contains("panicked"),
        "{what} did not end quietly: {text}"
    );
}

#[test]
fn a_reader_that_closes_the_pipe_early_ends_every_command_quietly() {
    let source = RedisServer::start();
    fill_strings(&mut source.connection(), "k", 300, None);
    let target = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);
    let (s, t) = (source.url(), target.url());

    // The job's own last lines go to stdout too.
    let run = run_into_closed_pipe(
        &[
            "run",
            "--source",
            &s,
            "--target",
            &t,
            "--journal",
            &journal,
            "--progress",
            "off",
        ],
        &[],
    );
    assert_quiet_end(&run, 0, "run");
    assert_eq!(status_json(&journal)["job"]["state"], "completed");

    for args in [
        vec!["status", "--journal", &journal],
        vec!["status", "--journal", &journal, "--json"],
        vec!["report", "--journal", &journal],
        vec!["report", "--journal", &journal, "--format", "csv"],
        vec!["resume", "--journal", &journal],
        vec!["verify", "--journal", &journal, "--progress", "off"],
        vec!["run", "--source", &s, "--target", &t, "--dry-run"],
    ] {
        let output = run_into_closed_pipe(&args, &[]);
        assert_quiet_end(&output, 0, &args.join(" "));
    }

    // A difference: verify keeps its exit 3 even when nobody reads it.
    redis::cmd("SET")
        .arg("k:1")
        .arg("changed")
        .exec(&mut target.connection())
        .unwrap();
    let verify = run_into_closed_pipe(&["verify", "--source", &s, "--target", &t], &[]);
    assert_quiet_end(&verify, 3, "verify with a difference");
}

/// The commands between backticks on the first line that contains
/// `marker`, each split into words.
fn hints_on(text: &str, marker: &str) -> Vec<Vec<String>> {
    let line = text
        .lines()
        .find(|line| line.contains(marker))
        .unwrap_or_else(|| panic!("no line with {marker:?} in:\n{text}"));
    line.split('`')
        .skip(1)
        .step_by(2)
        .map(|hint| hint.split_whitespace().map(String::from).collect())
        .collect()
}

/// Runs a hint as printed (its first word is `redis-ferry`).
fn run_hint(words: &[String], env: &[(&str, &str)]) -> Output {
    assert_eq!(words[0], "redis-ferry", "{words:?}");
    let mut command = Command::new(ferry_bin());
    command
        .args(&words[1..])
        .env_remove("REDIS_FERRY_SOURCE_PASSWORD")
        .env_remove("REDIS_FERRY_TARGET_PASSWORD");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("redis-ferry runs")
}

#[test]
fn hints_name_the_journal_and_the_password_to_give_again_and_work_as_printed() {
    let source = RedisServer::start();
    fill_strings(&mut source.connection(), "k", 6000, None);
    let target = RedisServer::start_with(&["--requirepass", "target-pw-7"]);
    let dir = tempfile::tempdir().unwrap();
    // Not the default journal, from another directory than the test's.
    let journal = dir.path().join("night-move.db").display().to_string();
    let password = [("REDIS_FERRY_TARGET_PASSWORD", "target-pw-7")];
    let mut child = ferry_command(&[
        "run",
        "--source",
        &source.url(),
        "--target",
        &target.url(),
        "--journal",
        &journal,
        "--rate",
        "2000",
        "--scan-count",
        "100",
        "--progress",
        "off",
    ])
    .env(password[0].0, password[0].1)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    wait_for_restored(&mut child, &journal, 1000);
    signal(&child, "INT");
    let interrupted = finish(child);
    assert_exit(&interrupted, 130);
    let said = stderr(&interrupted);
    assert!(
        said.contains(&format!(
            "run `redis-ferry resume --journal {journal}` to continue"
        )),
        "{said}"
    );
    assert!(
        said.contains("give the target's password with REDIS_FERRY_TARGET_PASSWORD or --target-password-file FILE"),
        "{said}"
    );

    let status = ferry(&["status", "--journal", &journal]);
    assert_exit(&status, 0);
    let text = stdout(&status);
    assert!(text.contains("the journal keeps no password"), "{text}");
    let hint = hints_on(&text, "next:").remove(0);
    assert_eq!(
        hint,
        ["redis-ferry", "resume", "--journal", journal.as_str()]
    );
    // Pasted as printed, with the password given the way the hint says.
    let resumed = run_hint(&hint, &password);
    assert_exit(&resumed, 0);
    assert_servers_equal(&source, &target, &[0]);
    let report_hint = hints_on(&stdout(&resumed), "for the audit").remove(0);
    assert_exit(&run_hint(&report_hint, &password), 0);
}

#[test]
fn one_failed_key_is_one_key_and_the_retry_hint_asks_for_the_password() {
    let source = RedisServer::start();
    fill_strings(&mut source.connection(), "ok", 20, None);
    redis::cmd("SET")
        .arg("denied:1")
        .arg("v")
        .exec(&mut source.connection())
        .unwrap();
    let target = RedisServer::start();
    target.restrict_ferry_user_to_ok_keys("acl-pw-3");
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);
    let password = [("REDIS_FERRY_TARGET_PASSWORD", "acl-pw-3")];
    let output = ferry_command(&[
        "run",
        "--source",
        &source.url(),
        "--target",
        &format!("redis://ferry@127.0.0.1:{}", target.port),
        "--journal",
        &journal,
        "--progress",
        "off",
    ])
    .env(password[0].0, password[0].1)
    .output()
    .unwrap();
    assert_exit(&output, 3);
    let text = stdout(&output);
    assert!(
        text.contains("job completed: 21 keys (restored 20, expired 0, skipped 0, failed 1)"),
        "{text}"
    );
    assert!(text.contains("redis-ferry: 1 key failed; see `"), "{text}");
    assert!(!text.contains(" 1 keys"), "{text}");
    assert!(
        text.contains("give the target's password with REDIS_FERRY_TARGET_PASSWORD"),
        "{text}"
    );
    // The retry hint, pasted with the password: the key still cannot be
    // written, so it fails again, honestly.
    let hints = hints_on(&text, "key failed");
    assert_eq!(
        hints[0],
        [
            "redis-ferry",
            "report",
            "--journal",
            journal.as_str(),
            "--format",
            "csv"
        ]
    );
    let retry_hint = &hints[1];
    assert_eq!(
        retry_hint,
        &["redis-ferry", "retry", "--journal", journal.as_str()]
    );
    let retried = run_hint(retry_hint, &password);
    assert_exit(&retried, 3);
    assert!(
        stdout(&retried).contains("1 key failed"),
        "{}",
        describe(&retried)
    );
}

#[test]
fn a_sample_claims_only_the_sample_and_the_runs_table_counts_keys_compared() {
    let source = RedisServer::start();
    fill_strings(&mut source.connection(), "k", 2000, None);
    let target = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);
    assert_exit(&run_job(&source.url(), &target.url(), &journal, &[]), 0);

    let sampled = ferry(&[
        "verify",
        "--journal",
        &journal,
        "--sample",
        "50",
        "--progress",
        "off",
    ]);
    assert_exit(&sampled, 0);
    let text = stdout(&sampled);
    assert!(
        text.contains("result: no differences in a sample of"),
        "{text}"
    );
    assert!(
        !text.contains("the target holds what the source holds"),
        "{text}"
    );

    redis::cmd("DEL")
        .arg("k:7")
        .exec(&mut target.connection())
        .unwrap();
    let full = ferry(&["verify", "--journal", &journal, "--progress", "off"]);
    assert_exit(&full, 3);
    assert!(
        stdout(&full).contains("result: 1 key differs"),
        "{}",
        stdout(&full)
    );
    let connection = rusqlite::Connection::open(&journal).unwrap();
    let keys: i64 = connection
        .query_row(
            "SELECT keys_processed FROM runs WHERE command = 'verify' ORDER BY id DESC LIMIT 1",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(
        keys, 2000,
        "the full verify compared 2000 keys (1 differed)"
    );
}

/// Runs redis-ferry with `dir` replaced by a fresh tmpfs mounted with
/// `options`, in a mount namespace of its own (gone when it exits). None
/// where this machine cannot do that (not root, no unshare).
fn in_tmpfs(dir: &Path, options: &str, args: &[&str]) -> Option<Output> {
    let script = format!(
        "mount -t tmpfs -o {options} tmpfs '{}' || exit 99; exec \"$0\" \"$@\"",
        dir.display()
    );
    let output = Command::new("unshare")
        .args(["--mount", "sh", "-c", &script])
        .arg(ferry_bin())
        .args(args)
        .env_remove("REDIS_FERRY_SOURCE_PASSWORD")
        .env_remove("REDIS_FERRY_TARGET_PASSWORD")
        .output()
        .ok()?;
    if output.status.code() == Some(99)
        || (output.status.code() == Some(1) && stderr(&output).starts_with("unshare"))
    {
        eprintln!("skipped: cannot mount a tmpfs here: {}", describe(&output));
        return None;
    }
    Some(output)
}

#[test]
fn a_journal_that_cannot_be_created_is_explained_with_its_path() {
    let source = RedisServer::start();
    fill_strings(&mut source.connection(), "k", 10, None);
    let target = RedisServer::start();
    let (s, t) = (source.url(), target.url());
    let dir = tempfile::tempdir().unwrap();

    // A directory.
    let output = ferry(&[
        "run",
        "--source",
        &s,
        "--target",
        &t,
        "--journal",
        &dir.path().display().to_string(),
    ]);
    assert_exit(&output, 2);
    let text = stderr(&output);
    assert!(
        text.contains("is a directory; name a file, for example"),
        "{text}"
    );
    let output = ferry(&["status", "--journal", &dir.path().display().to_string()]);
    assert_exit(&output, 2);

    // A directory that does not exist.
    let missing = dir
        .path()
        .join("nowhere")
        .join("j.db")
        .display()
        .to_string();
    let output = ferry(&["run", "--source", &s, "--target", &t, "--journal", &missing]);
    assert_exit(&output, 1);
    assert!(
        stderr(&output).contains("nowhere does not exist"),
        "{}",
        stderr(&output)
    );

    let mount = dir.path().join("mnt");
    std::fs::create_dir(&mount).unwrap();
    let journal = mount.join("j.db").display().to_string();
    let args = [
        "run",
        "--source",
        &s,
        "--target",
        &t,
        "--journal",
        &journal,
        "--progress",
        "off",
    ];

    // A read-only disk.
    let Some(output) = in_tmpfs(&mount, "ro", &args) else {
        return;
    };
    assert_exit(&output, 1);
    assert_eq!(
        stderr(&output).trim_end(),
        format!(
            "redis-ferry: cannot create journal {journal}: {} is on a read-only file system; choose a --journal on a writable disk",
            mount.display()
        )
    );

    // A (nearly) full disk: 16 KiB cannot hold a journal's first batches.
    let output = in_tmpfs(&mount, "size=16k", &args).expect("tmpfs worked above");
    assert_exit(&output, 1);
    let text = stderr(&output);
    assert!(
        text.starts_with(&format!(
            "redis-ferry: cannot create journal {journal}: the disk holding {} is full",
            mount.display()
        )),
        "{text}"
    );
    assert!(
        text.contains("choose a --journal on another disk"),
        "{text}"
    );
    assert_eq!(text.trim_end().lines().count(), 1, "{text}");
    assert_eq!(dbsize(&mut target.connection(), 0), 0, "nothing was copied");
}

#[test]
fn a_tls_url_at_a_plain_server_says_it_does_not_speak_tls() {
    let source = RedisServer::start();
    let target = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let output = ferry(&[
        "run",
        "--source",
        &format!("rediss://127.0.0.1:{}", source.port),
        "--target",
        &target.url(),
        "--journal",
        &journal_in(&dir),
    ]);
    assert_exit(&output, 1);
    let text = stderr(&output);
    assert!(
        text.contains(&format!(
            "cannot connect to source rediss://127.0.0.1:{}",
            source.port
        )),
        "{text}"
    );
    assert!(text.contains("does not speak TLS there"), "{text}");
    assert!(
        text.contains(&format!("use redis://127.0.0.1:{}", source.port)),
        "{text}"
    );
    assert_eq!(text.trim_end().lines().count(), 1, "{text}");
}

#[test]
fn a_refused_password_names_the_server_and_where_the_password_came_from() {
    let source = RedisServer::start_with(&["--requirepass", "right-one"]);
    let target = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("source.pw");
    std::fs::write(&password_file, "wrong-from-file\n").unwrap();
    let file = password_file.display().to_string();
    let source_url = format!("redis://127.0.0.1:{}", source.port);
    let target_url = target.url();
    let run = |extra: &[&str], env: &[(&str, &str)]| {
        let mut args = vec![
            "run",
            "--source",
            &source_url,
            "--target",
            &target_url,
            "--journal",
        ];
        let journal = journal_in(&dir);
        args.push(&journal);
        args.extend_from_slice(extra);
        let mut command = ferry_command(&args);
        for (name, value) in env {
            command.env(name, value);
        }
        command.output().unwrap()
    };
    let from_env = run(&[], &[("REDIS_FERRY_SOURCE_PASSWORD", "wrong-from-env")]);
    assert_exit(&from_env, 1);
    assert_eq!(
        stderr(&from_env).trim_end(),
        format!(
            "redis-ferry: cannot connect to source redis://:***@127.0.0.1:{}: authentication failed: the source refused the password (taken from REDIS_FERRY_SOURCE_PASSWORD); fix it there, or give it with --source-password-file FILE, REDIS_FERRY_SOURCE_PASSWORD or a --source URL with the password",
            source.port
        )
    );
    let from_file = run(
        &["--source-password-file", &file],
        &[("REDIS_FERRY_SOURCE_PASSWORD", "right-one")],
    );
    assert_exit(&from_file, 1);
    let text = stderr(&from_file);
    assert!(
        text.contains(&format!("(taken from --source-password-file {file})")),
        "{text}"
    );
    assert!(
        !text.contains("wrong-from-file") && !text.contains("right-one"),
        "{text}"
    );
}
