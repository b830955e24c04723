//! How servers and passwords are named: an ACL user whose name needs
//! percent-encoding works for every later command, `host:port` is read as
//! redis://, `/0` on the target works for a source that holds only db 0,
//! an unencoded `#` gets advice, and passwords from a file win over the
//! environment, which wins over the URL; a password on the command line is
//! warned about once.

mod common;

use std::process::{Output, Stdio};

use common::*;

const USER: &str = "ops@team:1";
const USER_IN_URL: &str = "ops%40team%3A1";
const USER_PASSWORD: &str = "acl-user-pw";

/// A server with ACL user `ops@team:1`, and the default user disabled, so
/// only that user gets in.
fn server_with_acl_user() -> RedisServer {
    let server = RedisServer::start_with(&["--requirepass", "admin-pw"]);
    redis::cmd("ACL")
        .arg(&[
            "SETUSER",
            USER,
            "on",
            &format!(">{USER_PASSWORD}"),
            "~*",
            "&*",
            "+@all",
        ])
        .exec(&mut server.connection())
        .expect("ACL SETUSER");
    server
}

fn with_user_password(args: &[&str]) -> Output {
    ferry_command(args)
        .env("REDIS_FERRY_SOURCE_PASSWORD", USER_PASSWORD)
        .output()
        .expect("redis-ferry runs")
}

#[test]
fn a_user_name_with_reserved_characters_works_for_every_later_command() {
    let source = server_with_acl_user();
    fill_strings(&mut source.connection(), "k", 4000, None);
    let target = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);
    let source_url = format!("redis://{USER_IN_URL}@127.0.0.1:{}", source.port);
    let mut child = ferry_command(&[
        "run",
        "--source",
        &source_url,
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
    .env("REDIS_FERRY_SOURCE_PASSWORD", USER_PASSWORD)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    wait_for_restored(&mut child, &journal, 500);
    signal(&child, "INT");
    assert_exit(&finish(child), 130);
    let stored = format!("redis://{USER_IN_URL}:***@127.0.0.1:{}", source.port);
    assert_eq!(status_json(&journal)["job"]["source"], stored);

    // Each later command reads the stored URL back and logs in as the same user.
    let resumed = with_user_password(&["resume", "--journal", &journal, "--progress", "off"]);
    assert_exit(&resumed, 0);
    assert_servers_equal(&source, &target, &[0]);
    let retried = with_user_password(&["retry", "--journal", &journal, "--progress", "off"]);
    assert_exit(&retried, 0);
    let report = with_user_password(&["report", "--journal", &journal, "--format", "json"]);
    assert_exit(&report, 0);
    let report: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    assert_eq!(
        report["dbs"][0]["source_keys"], 4000,
        "report logged in to the source: {report}"
    );
    let verified = with_user_password(&["verify", "--journal", &journal, "--progress", "off"]);
    assert_exit(&verified, 0);
    // Nothing rewrote the stored name on the way.
    assert_eq!(status_json(&journal)["job"]["source"], stored);
}

#[test]
fn host_and_port_alone_and_a_target_db_0_work() {
    let source = RedisServer::start();
    fill_strings(&mut source.connection(), "k", 100, None);
    let target = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);
    let output = run_job(
        &format!("127.0.0.1:{}", source.port),
        &target.url_db(0),
        &journal,
        &[],
    );
    assert_exit(&output, 0);
    assert_servers_equal(&source, &target, &[0]);
    assert_eq!(
        status_json(&journal)["job"]["source"],
        format!("redis://127.0.0.1:{}", source.port)
    );

    // With a second source database, /0 on the target is ambiguous.
    fill_strings(&mut source.connection_db(1), "other", 10, None);
    let output = run_job(
        &source.url(),
        &target.url_db(0),
        &journal_in(&tempfile::tempdir().unwrap()),
        &[],
    );
    assert_exit(&output, 2);
    assert!(
        stderr(&output).contains("--db-map"),
        "{}",
        describe(&output)
    );
}

#[test]
fn an_unencoded_hash_in_a_password_names_percent_encoding_and_the_variable() {
    let output = ferry(&[
        "run",
        "--source",
        "redis://:secret#part@127.0.0.1:1",
        "--target",
        "redis://127.0.0.1:2",
    ]);
    assert_exit(&output, 2);
    let text = stderr(&output);
    assert!(text.contains("# as %23"), "{text}");
    assert!(text.contains("REDIS_FERRY_SOURCE_PASSWORD"), "{text}");
    assert!(!text.contains("secret"), "{text}");
    assert_eq!(text.trim_end().lines().count(), 1, "{text}");
}

#[test]
fn a_password_file_wins_over_the_environment_which_wins_over_the_url() {
    let source = RedisServer::start_with(&["--requirepass", "the-right-one"]);
    fill_strings(&mut source.connection(), "k", 50, None);
    let target = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("source-password");
    std::fs::write(&file, "the-right-one\n").unwrap();
    let file = file.display().to_string();
    let plain_url = format!("redis://127.0.0.1:{}", source.port);
    let wrong_url = format!("redis://:wrong-in-url@127.0.0.1:{}", source.port);
    let target_url = target.url();
    let jobs = std::cell::Cell::new(0);
    let run = |source_url: &str, extra: &[&str], env: Option<&str>| {
        jobs.set(jobs.get() + 1);
        let journal = dir
            .path()
            .join(format!("job-{}.db", jobs.get()))
            .display()
            .to_string();
        let mut args = vec![
            "run",
            "--source",
            source_url,
            "--target",
            &target_url,
            "--journal",
            &journal,
            "--progress",
            "off",
            // Every job copies into the same target.
            "--existing",
            "replace",
        ];
        args.extend_from_slice(extra);
        let mut command = ferry_command(&args);
        if let Some(password) = env {
            command.env("REDIS_FERRY_SOURCE_PASSWORD", password);
        }
        command.output().unwrap()
    };

    // File beats a wrong environment variable and a wrong URL; no warning
    // without a password on the command line.
    let output = run(
        &plain_url,
        &["--source-password-file", &file],
        Some("wrong-in-env"),
    );
    assert_exit(&output, 0);
    assert!(
        !stderr(&output).contains("visible to every user"),
        "{}",
        describe(&output)
    );
    let output = run(
        &wrong_url,
        &["--source-password-file", &file],
        Some("wrong-in-env"),
    );
    assert_exit(&output, 0);
    // The environment beats a wrong URL.
    let output = run(&wrong_url, &[], Some("the-right-one"));
    assert_exit(&output, 0);
    // A password in the URL is warned about, once.
    let warnings = stderr(&output)
        .lines()
        .filter(|line| line.contains("visible to every user of this machine (ps)"))
        .count();
    assert_eq!(warnings, 1, "{}", describe(&output));
    assert!(
        stderr(&output).contains("--source-password-file FILE"),
        "{}",
        describe(&output)
    );
    assert!(!stderr(&output).contains("wrong-in-url"));

    // A file that is not there is a usage error, before anything is done.
    let output = run(
        &plain_url,
        &["--source-password-file", "/nonexistent/pw"],
        None,
    );
    assert_exit(&output, 2);
    assert_eq!(
        stderr(&output).trim_end(),
        "redis-ferry: cannot read --source-password-file /nonexistent/pw: no such file; give the path of a readable file holding the password"
    );

    // Later commands take the file too.
    let journal = journal_in(&dir);
    assert_exit(
        &run_job(
            &plain_url,
            &target.url(),
            &journal,
            &["--existing", "replace", "--source-password-file", &file],
        ),
        0,
    );
    for command in ["retry", "verify"] {
        let output = ferry(&[
            command,
            "--journal",
            &journal,
            "--source-password-file",
            &file,
            "--progress",
            "off",
        ]);
        assert_exit(&output, 0);
    }
    let output = ferry(&[
        "report",
        "--journal",
        &journal,
        "--source-password-file",
        &file,
        "--format",
        "json",
    ]);
    assert_exit(&output, 0);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["dbs"][0]["source_keys"], 50);
}
