//! `redis-ferry report` tells an operator what happened, in every format:
//! key counts read from the servers now beside the journal's outcomes
//! (equal to what `status` says), a verdict that explains the difference,
//! the per-key CSV audit log with binary keys escaped losslessly; it still
//! comes out when the target is down, never shows a password, and writes
//! `--output` atomically.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use common::*;
use redis_ferry::escape::unescape_key;
use redis_ferry::journal::Journal;
use redis_ferry::options::JournalKeys;
use redis_ferry::outcome::{KeyResult, Outcome};

const ACL_PASSWORD: &str = "acl-Secret-7";

fn report(journal: &str, format: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["report", "--journal", journal, "--format", format];
    args.extend_from_slice(extra);
    ferry(&args)
}

fn report_json(journal: &str, extra: &[&str]) -> serde_json::Value {
    let output = report(journal, "json", extra);
    assert_exit(&output, 0);
    serde_json::from_slice(&output.stdout).expect("report --format json prints JSON")
}

/// One row of the audit log.
#[derive(Debug, Clone)]
struct Row {
    db: i64,
    key: Vec<u8>,
    outcome: String,
    ttl_ms: Option<i64>,
    size_bytes: Option<i64>,
    attempts: i64,
    error: String,
    updated_at: String,
    method: String,
}

/// The CSV parsed back with a CSV reader; checks the header on the way.
fn parse_csv(bytes: &[u8]) -> Vec<Row> {
    let mut reader = csv::Reader::from_reader(bytes);
    assert_eq!(
        reader.headers().unwrap(),
        vec![
            "db",
            "key",
            "outcome",
            "ttl_ms",
            "size_bytes",
            "attempts",
            "error",
            "updated_at",
            "method"
        ]
    );
    let optional = |cell: &str| (!cell.is_empty()).then(|| cell.parse::<i64>().unwrap());
    reader
        .records()
        .map(|record| {
            let r = record.expect("a well-formed CSV row");
            Row {
                db: r[0].parse().unwrap(),
                key: unescape_key(&r[1]).expect("a key escaped as the contract says"),
                outcome: r[2].to_string(),
                ttl_ms: optional(&r[3]),
                size_bytes: optional(&r[4]),
                attempts: r[5].parse().unwrap(),
                error: r[6].to_string(),
                updated_at: r[7].to_string(),
                method: r[8].to_string(),
            }
        })
        .collect()
}

/// Every key of a database, by SCAN.
fn real_keys(server: &RedisServer, db: i64) -> BTreeSet<Vec<u8>> {
    let mut connection = server.connection_db(db);
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query(&mut connection).unwrap();
    keys.into_iter().collect()
}

fn set(server: &RedisServer, db: i64, key: &[u8], value: &[u8]) {
    redis::cmd("SET")
        .arg(key)
        .arg(value)
        .exec(&mut server.connection_db(db))
        .unwrap();
}

/// A table row of the text report, split into cells.
fn text_row<'a>(text: &'a str, first: &str) -> Vec<&'a str> {
    text.lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.first() == Some(&first) && cells.len() >= 8)
        .unwrap_or_else(|| panic!("no table row {first:?} in:\n{text}"))
}

/// Binary keys that must come back byte for byte from the CSV.
fn binary_keys() -> Vec<Vec<u8>> {
    vec![
        (0..=255u8).fold(b"ok:all-bytes:".to_vec(), |mut key, b| {
            key.push(b);
            key
        }),
        b"ok:quote\"comma,backslash\\".to_vec(),
        b"ok:crlf\r\nnul\x00".to_vec(),
        b"ok:\xc3\xa9t\xc3\xa9 \xff".to_vec(),
        b"no:bin\x00\"x\",\n".to_vec(),
    ]
}

/// A finished job with every outcome in the journal:
/// - db 0: 300 `ok:` keys (every 3rd with a TTL) and the binary keys are
///   restored; 5 `ok:pre:` keys already on the target are skipped
///   (`--existing skip`); 6 `no:` keys (+1 binary) fail with NOPERM;
/// - db 1: 40 `ok:db1:` keys restored;
/// - then, as `verify` would, `ok:7` is found missing on the target
///   (`mismatch`), and 2 keys that were gone when read are `expired`.
///
/// Returns (source, target, journal dir, journal path).
fn journal_with_every_outcome() -> (RedisServer, RedisServer, tempfile::TempDir, String) {
    let source = RedisServer::start();
    let target = RedisServer::start();
    target.restrict_ferry_user_to_ok_keys(ACL_PASSWORD);
    fill_strings(&mut source.connection(), "ok", 300, Some(3));
    fill_strings(&mut source.connection(), "no", 6, None);
    fill_strings(&mut source.connection_db(1), "ok:db1", 40, None);
    for key in binary_keys() {
        set(&source, 0, &key, b"binary value \x00\xff");
    }
    for i in 0..5 {
        let key = format!("ok:pre:{i}");
        set(&source, 0, key.as_bytes(), b"source value");
        set(&target, 0, key.as_bytes(), b"already on the target");
    }
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);
    let (s, t) = (source.url(), target.ferry_user_url(ACL_PASSWORD));
    let output = run_job(&s, &t, &journal, &["--existing", "skip"]);
    assert_exit(&output, 3);

    // What `verify` would record: ok:7 is missing on the target.
    redis::cmd("DEL")
        .arg("ok:7")
        .exec(&mut target.connection())
        .unwrap();
    let mut writer = Journal::open_to_drive(Path::new(&journal)).unwrap();
    let result = |key: &[u8], outcome, error: Option<&str>| KeyResult {
        key: key.to_vec(),
        outcome,
        ttl_ms: None,
        size_bytes: None,
        error: error.map(str::to_string),
        method: None,
    };
    let batch = [
        result(b"ok:7", Outcome::Mismatch, Some("missing on target")),
        result(b"gone:1", Outcome::Expired, None),
        result(b"gone:2", Outcome::Expired, None),
    ];
    writer
        .commit_batch(0, &batch, None, JournalKeys::All)
        .unwrap();
    drop(writer);
    (source, target, dir, journal)
}

#[test]
fn every_format_reports_every_outcome_and_agrees_with_status_and_the_servers() {
    let (source, target, dir, journal) = journal_with_every_outcome();
    let target_env = [("REDIS_FERRY_TARGET_PASSWORD", ACL_PASSWORD)];
    let with_password = |format: &str, extra: &[&str]| {
        let mut args = vec!["report", "--journal", journal.as_str(), "--format", format];
        args.extend_from_slice(extra);
        let output = ferry_command(&args)
            .envs(target_env)
            .output()
            .expect("redis-ferry runs");
        assert_exit(&output, 0);
        output
    };
    let (source_db0, source_db1) = (
        dbsize(&mut source.connection(), 0),
        dbsize(&mut source.connection(), 1),
    );
    let (target_db0, target_db1) = (
        dbsize(&mut target.connection(), 0),
        dbsize(&mut target.connection(), 1),
    );
    let failed = 7u64;
    let restored_db0 = 300 + 4 - 1; // ok:* and 4 binary ok: keys, minus ok:7
    assert_eq!(source_db0, 300 + 6 + 5 + 5);
    assert_eq!(
        target_db0,
        source_db0 - failed - 1,
        "7 failed, ok:7 deleted"
    );

    // JSON: the contract's object, with the servers' counts filled in.
    let json: serde_json::Value =
        serde_json::from_slice(&with_password("json", &[]).stdout).unwrap();
    assert_eq!(json["job"]["state"], "completed");
    assert_eq!(
        json["outcomes"],
        serde_json::json!({"restored": restored_db0 + 40, "expired": 2, "skipped": 5,
                           "failed": failed, "mismatch": 1})
    );
    let dbs = json["dbs"].as_array().unwrap();
    assert_eq!(dbs.len(), 2);
    assert_eq!(dbs[0]["source_keys"], source_db0);
    assert_eq!(dbs[0]["target_keys"], target_db0);
    assert_eq!(dbs[1]["source_keys"], source_db1);
    assert_eq!(dbs[1]["target_keys"], target_db1);
    assert_eq!(dbs[0]["restored"], restored_db0);
    assert_eq!(dbs[0]["failed"], failed);
    assert_eq!(json["totals"]["source_keys"], source_db0 + source_db1);
    assert_eq!(json["verdict"]["status"], "explained");
    assert_eq!(json["verdict"]["missing_on_target"], failed + 1);
    assert_eq!(json["verdict"]["unexplained_missing"], 0);
    let verdict = json["verdict"]["text"].as_str().unwrap();
    assert!(
        verdict.starts_with(
            "target has 8 keys fewer than source: 7 failed (see `redis-ferry report --format csv`"
        ),
        "{verdict}"
    );
    assert!(verdict.contains("1 differ (mismatch"), "{verdict}");
    assert!(
        verdict.contains("2 gone from the source when read (expired or deleted there"),
        "{verdict}"
    );
    assert_eq!(json["top_errors"][0]["keys"], failed);
    assert!(
        json["top_errors"][0]["error"]
            .as_str()
            .unwrap()
            .starts_with("NOPERM")
    );
    assert_eq!(json["servers"]["target"]["reachable"], true);
    assert_eq!(json["job"]["options"]["existing"], "skip");
    assert_eq!(json["runs"][0]["command"], "run");
    assert_eq!(json["runs"][0]["exit_code"], 3);

    // status and report agree on every count.
    let status = status_json(&journal);
    assert_eq!(status["outcomes"], json["outcomes"]);
    for (s, r) in status["dbs"].as_array().unwrap().iter().zip(dbs) {
        for field in [
            "db",
            "target_db",
            "restored",
            "expired",
            "skipped",
            "failed",
            "mismatch",
        ] {
            assert_eq!(s[field], r[field], "{field} of db {}", s["db"]);
        }
    }

    // Text: the table, the verdict line, the errors.
    let text = stdout(&with_password("text", &[]));
    let expected_db0 = [
        "0".to_string(),
        "0".to_string(),
        source_db0.to_string(),
        target_db0.to_string(),
        restored_db0.to_string(),
        "2".to_string(),
        "5".to_string(),
        "7".to_string(),
        "1".to_string(),
    ];
    assert_eq!(text_row(&text, "0"), expected_db0, "{text}");
    assert_eq!(
        text_row(&text, "total")[1],
        (source_db0 + source_db1).to_string()
    );
    assert!(text.contains(&format!("verdict: {verdict}\n")), "{text}");
    assert!(text.contains("most frequent errors"), "{text}");
    assert!(text.contains("--existing skip"), "{text}");

    // Markdown: the same facts as a table and a bold verdict.
    let markdown = stdout(&with_password("markdown", &[]));
    assert!(
        markdown.starts_with("# redis-ferry report: job completed\n"),
        "{markdown}"
    );
    assert!(
        markdown.contains(&format!("**Verdict:** {verdict}")),
        "{markdown}"
    );
    assert!(
        markdown.contains(&format!(
            "| 0 | 0 | {source_db0} | {target_db0} | {restored_db0} | 2 | 5 | 7 | 1 |"
        )),
        "{markdown}"
    );

    // CSV: one row per key, binary keys back byte for byte.
    let csv_out = with_password("csv", &[]).stdout;
    let rows = parse_csv(&csv_out);
    let mut expected: BTreeSet<(i64, Vec<u8>)> = real_keys(&source, 0)
        .into_iter()
        .map(|key| (0, key))
        .collect();
    expected.extend(real_keys(&source, 1).into_iter().map(|key| (1, key)));
    expected.insert((0, b"gone:1".to_vec()));
    expected.insert((0, b"gone:2".to_vec()));
    let listed: BTreeSet<(i64, Vec<u8>)> = rows.iter().map(|r| (r.db, r.key.clone())).collect();
    assert_eq!(rows.len(), listed.len(), "one row per key");
    assert_eq!(listed, expected);
    for key in binary_keys() {
        assert!(listed.contains(&(0, key.clone())), "{key:?}");
    }
    let by_key: BTreeMap<&[u8], &Row> = rows
        .iter()
        .filter(|r| r.db == 0)
        .map(|r| (r.key.as_slice(), r))
        .collect();
    for row in &rows {
        assert!(humantime::parse_rfc3339(&row.updated_at).is_ok(), "{row:?}");
    }
    assert_eq!(by_key[b"no:3".as_slice()].outcome, "failed");
    assert!(by_key[b"no:3".as_slice()].error.starts_with("NOPERM"));
    assert_eq!(by_key[b"ok:pre:2".as_slice()].outcome, "skipped");
    assert_eq!(by_key[b"ok:7".as_slice()].outcome, "mismatch");
    assert_eq!(by_key[b"ok:7".as_slice()].error, "missing on target");
    assert!(
        by_key[b"ok:7".as_slice()].attempts >= 2,
        "copied, then found missing: two attempts"
    );
    assert_eq!(by_key[b"gone:1".as_slice()].outcome, "expired");
    // How each key was written: RESTORE for the copied ones, nothing for
    // the skipped, failed, deleted and mismatched ones.
    assert_eq!(by_key[b"ok:3".as_slice()].method, "restore");
    for key in ["no:3", "ok:pre:2", "ok:7", "gone:1"] {
        assert_eq!(by_key[key.as_bytes()].method, "", "{key}");
    }
    let with_ttl = by_key[b"ok:3".as_slice()];
    assert_eq!(with_ttl.outcome, "restored");
    assert!(
        matches!(with_ttl.ttl_ms, Some(ms) if ms > 0 && ms <= 7_200_000),
        "{with_ttl:?}"
    );
    assert_eq!(
        by_key[b"ok:4".as_slice()].ttl_ms,
        None,
        "no TTL: an empty cell"
    );
    let dump: Vec<u8> = redis::cmd("DUMP")
        .arg("ok:4")
        .query(&mut source.connection())
        .unwrap();
    assert_eq!(
        by_key[b"ok:4".as_slice()].size_bytes,
        Some(dump.len() as i64)
    );
    assert_eq!(by_key[b"ok:4".as_slice()].error, "");

    // --output writes the same bytes to a file, and nothing else.
    let file = dir.path().join("audit.csv");
    let output = with_password("csv", &["--output", file.to_str().unwrap()]);
    assert!(output.stdout.is_empty());
    assert_eq!(std::fs::read(&file).unwrap(), csv_out);
    let file = dir.path().join("report.json");
    with_password("json", &["--output", file.to_str().unwrap()]);
    let from_file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(from_file["dbs"], json["dbs"]);
    let leftovers: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn a_report_with_the_target_stopped_shows_its_counts_unknown_with_the_reason() {
    let source = RedisServer::start();
    let mut target = RedisServer::start();
    fill_strings(&mut source.connection(), "k", 500, None);
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);
    let (s, t) = (source.url(), target.url());
    assert_exit(&run_job(&s, &t, &journal, &[]), 0);
    assert_eq!(
        report_json(&journal, &[])["verdict"]["text"],
        "target holds as many keys as source (500)"
    );
    target.stop();

    let reason = format!("cannot connect to target {t}: connection refused");
    let json = report_json(&journal, &[]);
    assert_eq!(json["dbs"][0]["source_keys"], 500);
    assert!(json["dbs"][0]["target_keys"].is_null());
    assert!(json["totals"]["target_keys"].is_null());
    assert_eq!(
        json["dbs"][0]["restored"], 500,
        "the journal's counts are still there"
    );
    assert_eq!(json["servers"]["target"]["reachable"], false);
    assert_eq!(json["servers"]["target"]["error"], reason.as_str());
    assert_eq!(json["servers"]["source"]["reachable"], true);
    assert_eq!(json["verdict"]["status"], "unknown");

    for format in ["text", "markdown"] {
        let output = report(&journal, format, &[]);
        assert_exit(&output, 0);
        let shown = stdout(&output);
        assert!(
            shown.contains(&format!("key counts unknown: {reason}")),
            "{shown}"
        );
        assert!(
            shown.contains("key counts unknown because the target could not be asked"),
            "{shown}"
        );
    }
    let text = stdout(&report(&journal, "text", &[]));
    assert_eq!(text_row(&text, "0")[2..4], ["500", "unknown"], "{text}");

    // The audit log needs no server at all.
    let output = report(&journal, "csv", &[]);
    assert_exit(&output, 0);
    assert_eq!(parse_csv(&output.stdout).len(), 500);
}

#[test]
fn passwords_never_appear_in_any_report_format() {
    const SOURCE_PW: &str = "src-Pa55word-1";
    const TARGET_PW: &str = "tgt-Pa55word-2";
    let source = RedisServer::start_with(&["--requirepass", SOURCE_PW]);
    let target = RedisServer::start_with(&["--requirepass", TARGET_PW]);
    fill_strings(&mut source.connection(), "k", 50, None);
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);
    let s = format!("redis://:{SOURCE_PW}@127.0.0.1:{}", source.port);
    let t = format!("redis://:{TARGET_PW}@127.0.0.1:{}", target.port);
    assert_exit(&run_job(&s, &t, &journal, &[]), 0);
    let leaks = |what: &str, bytes: &[u8]| {
        let text = String::from_utf8_lossy(bytes);
        assert!(
            !text.contains(SOURCE_PW) && !text.contains(TARGET_PW),
            "{what} shows a password:\n{text}"
        );
    };
    for format in ["text", "markdown", "json", "csv"] {
        let file = dir.path().join(format!("report.{format}"));
        let file_arg = file.to_str().unwrap();
        // Passwords from the environment, from the command line, or not at all.
        let runs = [
            ferry_command(&["report", "--journal", &journal, "--format", format])
                .env("REDIS_FERRY_SOURCE_PASSWORD", SOURCE_PW)
                .env("REDIS_FERRY_TARGET_PASSWORD", TARGET_PW)
                .output()
                .unwrap(),
            ferry(&[
                "report",
                "--journal",
                &journal,
                "--format",
                format,
                "--source",
                &s,
                "--target",
                &t,
            ]),
            ferry(&[
                "report",
                "--journal",
                &journal,
                "--format",
                format,
                "--output",
                file_arg,
            ]),
        ];
        for (i, output) in runs.iter().enumerate() {
            assert_exit(output, 0);
            leaks(&format!("{format} run {i} stdout"), &output.stdout);
            leaks(&format!("{format} run {i} stderr"), &output.stderr);
            if format == "json" && i < 2 {
                let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
                assert_eq!(json["dbs"][0]["source_keys"], 50, "the password was used");
                assert_eq!(json["dbs"][0]["target_keys"], 50, "the password was used");
                assert_eq!(
                    json["job"]["source"],
                    format!("redis://:***@127.0.0.1:{}", source.port)
                );
            }
        }
        leaks(&format!("{format} file"), &std::fs::read(&file).unwrap());
    }
    // Without a password, the report says where to give it.
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("report.json")).unwrap()).unwrap();
    let reason = json["servers"]["target"]["error"].as_str().unwrap();
    assert!(reason.contains("REDIS_FERRY_TARGET_PASSWORD"), "{reason}");
    leaks("journal", &std::fs::read(&journal).unwrap());
}

#[test]
fn output_problems_are_one_line_errors_and_never_leave_half_a_file() {
    let source = RedisServer::start();
    let target = RedisServer::start();
    fill_strings(&mut source.connection(), "k", 20, None);
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);
    let (s, t) = (source.url(), target.url());
    assert_exit(&run_job(&s, &t, &journal, &[]), 0);

    let missing_dir = dir.path().join("no-such-dir");
    let file = missing_dir.join("r.csv");
    let output = report(&journal, "csv", &["--output", file.to_str().unwrap()]);
    assert_exit(&output, 1);
    assert_eq!(
        stderr(&output),
        format!(
            "redis-ferry: cannot write report to {}: directory {} does not exist\n",
            file.display(),
            missing_dir.display()
        )
    );

    // A directory in the way: the rename fails, nothing is left behind.
    let in_the_way = dir.path().join("in-the-way");
    std::fs::create_dir(&in_the_way).unwrap();
    std::fs::write(in_the_way.join("keep"), b"x").unwrap();
    let output = report(
        &journal,
        "text",
        &["--output", in_the_way.to_str().unwrap()],
    );
    assert_exit(&output, 1);
    assert_eq!(
        stderr(&output),
        format!(
            "redis-ferry: cannot write report to {}: is a directory\n",
            in_the_way.display()
        )
    );

    // The journal itself is never overwritten.
    let before = std::fs::read(&journal).unwrap();
    let output = report(&journal, "csv", &["--output", &journal]);
    assert_exit(&output, 2);
    assert!(
        stderr(&output).contains("names the journal itself"),
        "{}",
        describe(&output)
    );
    assert_eq!(std::fs::read(&journal).unwrap(), before);

    // An existing report is replaced whole.
    let file = dir.path().join("audit.csv");
    std::fs::write(&file, "an older, longer report ".repeat(1000)).unwrap();
    assert_exit(
        &report(&journal, "csv", &["--output", file.to_str().unwrap()]),
        0,
    );
    assert_eq!(parse_csv(&std::fs::read(&file).unwrap()).len(), 20);

    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".tmp"))
        .collect();
    assert!(names.is_empty(), "temporary files left: {names:?}");

    let output = report(&journal, "xml", &[]);
    assert_exit(&output, 2);
    let output = report(
        &dir.path().join("nope.db").display().to_string(),
        "text",
        &[],
    );
    assert_exit(&output, 1);
    assert!(
        stderr(&output).contains("does not exist"),
        "{}",
        describe(&output)
    );
}

#[test]
fn a_cluster_source_is_counted_over_every_primary() {
    let cluster = RedisCluster::start();
    let target = RedisServer::start();
    let mut connection = cluster.connection();
    let mut pipe = redis::cluster::cluster_pipe();
    for i in 0..3000 {
        pipe.cmd("SET").arg(format!("k:{i}")).arg("v").ignore();
        if i % 10 == 0 {
            pipe.cmd("PEXPIRE")
                .arg(format!("k:{i}"))
                .arg(7_200_000)
                .ignore();
        }
    }
    pipe.exec(&mut connection).expect("cluster writes");
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);
    let (s, t) = (cluster.url(), target.url());
    assert_exit(&run_job(&s, &t, &journal, &[]), 0);
    let json = report_json(&journal, &[]);
    assert_eq!(json["dbs"].as_array().unwrap().len(), 1);
    assert_eq!(json["dbs"][0]["source_keys"], cluster.dbsize());
    assert_eq!(json["dbs"][0]["source_keys"], 3000);
    assert_eq!(json["dbs"][0]["target_keys"], 3000);
    assert_eq!(json["verdict"]["status"], "match");
    assert_eq!(
        json["verdict"]["text"],
        "target holds as many keys as source (3000)"
    );
}
