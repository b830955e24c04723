//! Sharded jobs: several workers (`run --shard I/N`, separate processes,
//! each with its own journal) copy one cluster source between them, while
//! slots move, workers are killed and started again with the same command
//! line (`--or-resume`), and the application keeps writing; `status` and
//! `report` read their journals as one job.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Output};

use common::*;
use redis_ferry::cluster::key_slot;
use redis_ferry::escape::unescape_key;

/// The slots of worker I of 3, as `redis-cli --cluster create` cut them
/// for the tests' 3 primaries (and as the split promises).
const THIRDS: [(u16, u16); 3] = [(0, 5460), (5461, 10922), (10923, 16383)];

fn journal_of(dir: &tempfile::TempDir, index: usize) -> String {
    dir.path()
        .join(format!("shard-{index}.db"))
        .display()
        .to_string()
}

/// The command line of worker `index` of `count`, as a supervisor repeats it.
fn worker_args(
    source: &str,
    target: &str,
    journal: &str,
    shard: &str,
    extra: &[&str],
) -> Vec<String> {
    let mut args: Vec<String> = [
        "run",
        "--source",
        source,
        "--target",
        target,
        "--journal",
        journal,
        "--shard",
        shard,
        "--or-resume",
        "--progress",
        "log",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn spawn_worker(args: &[String]) -> Child {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    spawn_ferry(&args)
}

fn run_worker(args: &[String]) -> Output {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ferry(&args)
}

/// Workers paced slowly enough to reshard, kill or write while they run.
const PACED: [&str; 4] = ["--rate", "1500", "--scan-count", "100"];

fn node_id(node: &RedisServer) -> String {
    redis::cmd("CLUSTER")
        .arg("MYID")
        .query(&mut node.connection())
        .unwrap()
}

fn reshard(cluster: &RedisCluster, from: &str, to: &str, slots: &str) {
    let output = cluster.nodes[0].cli(&[
        "--cluster",
        "reshard",
        &format!("127.0.0.1:{}", cluster.nodes[0].port),
        "--cluster-from",
        from,
        "--cluster-to",
        to,
        "--cluster-slots",
        slots,
        "--cluster-yes",
    ]);
    assert!(
        output.status.success(),
        "reshard failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    cluster.wait_ok();
}

/// `status --json` over several journals.
fn merged_status(journals: &[String]) -> serde_json::Value {
    let mut args = vec!["status", "--json"];
    for journal in journals {
        args.extend(["--journal", journal.as_str()]);
    }
    let output = ferry(&args);
    assert_exit(&output, 0);
    serde_json::from_slice(&output.stdout).expect("status --json prints JSON")
}

/// `report --format csv` over several journals, as rows keyed by column.
fn merged_csv(journals: &[String]) -> Vec<BTreeMap<String, String>> {
    let mut args = vec!["report", "--format", "csv"];
    for journal in journals {
        args.extend(["--journal", journal.as_str()]);
    }
    let output = ferry(&args);
    assert_exit(&output, 0);
    let mut reader = csv::Reader::from_reader(output.stdout.as_slice());
    let headers: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(
        headers,
        [
            "db",
            "key",
            "outcome",
            "ttl_ms",
            "size_bytes",
            "attempts",
            "error",
            "updated_at",
            "shard",
            "method"
        ],
        "the contract's eight columns, then shard, then method"
    );
    reader
        .records()
        .map(|record| {
            headers
                .iter()
                .cloned()
                .zip(record.unwrap().iter().map(String::from))
                .collect()
        })
        .collect()
}

/// Every key in the merged audit log is in its worker's slots, and no key
/// is there twice; returns how many keys each shard journaled.
#[track_caller]
fn assert_each_key_in_its_workers_slots(rows: &[BTreeMap<String, String>]) -> [usize; 3] {
    let mut per_shard = [0; 3];
    let mut seen = std::collections::BTreeSet::new();
    for row in rows {
        let key = unescape_key(&row["key"]).unwrap();
        let index: usize = row["shard"].trim_end_matches("/3").parse().unwrap();
        let (first, last) = THIRDS[index];
        let slot = key_slot(&key);
        assert!(
            (first..=last).contains(&slot),
            "shard {} journaled {:?} of slot {slot}, outside its slots {first}-{last}",
            row["shard"],
            row["key"]
        );
        assert!(seen.insert(key), "{:?} journaled twice", row["key"]);
        per_shard[index] += 1;
    }
    per_shard
}

#[test]
fn three_workers_copy_a_resharded_cluster_once_and_each_only_its_slots() {
    let source = RedisCluster::start();
    fill_cluster_keys(&mut source.connection(), 20_000);
    let target = RedisCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let journals: Vec<String> = (0..3).map(|i| journal_of(&dir, i)).collect();
    let (s, t) = (source.url(), target.url());
    let mut workers: Vec<Child> = (0..3)
        .map(|i| {
            spawn_worker(&worker_args(
                &s,
                &t,
                &journals[i],
                &format!("{i}/3"),
                &PACED,
            ))
        })
        .collect();
    wait_for_restored(&mut workers[0], &journals[0], 1000);
    let primaries = source.primaries();
    let (a, b, c) = (
        node_id(primaries[0]),
        node_id(primaries[1]),
        node_id(primaries[2]),
    );
    reshard(&source, &a, &b, "3000");
    reshard(&source, &b, &c, "2000");
    let outputs: Vec<Output> = workers.into_iter().map(finish).collect();
    for output in &outputs {
        assert_exit(output, 0);
    }
    assert!(
        outputs
            .iter()
            .any(|output| stderr(output).contains("scanning again")),
        "a worker whose slots moved scans again: {}",
        describe(&outputs[0])
    );
    assert_same_data(&cluster_snapshot(&source), &cluster_snapshot(&target), 5000);

    let status = merged_status(&journals);
    assert_eq!(status["job"]["state"], "completed");
    assert_eq!(status["outcomes"]["restored"], 20_100, "every key once");
    let workers = status["workers"].as_array().unwrap();
    let shards: Vec<&str> = workers
        .iter()
        .map(|w| w["shard"].as_str().unwrap())
        .collect();
    assert_eq!(shards, ["0/3", "1/3", "2/3"]);
    assert!(workers.iter().all(|w| w["state"] == "completed"));

    let rows = merged_csv(&journals);
    assert_eq!(rows.len(), 20_100);
    let per_shard = assert_each_key_in_its_workers_slots(&rows);
    for (index, worker) in workers.iter().enumerate() {
        assert_eq!(worker["outcomes"]["restored"], per_shard[index] as u64);
    }

    let report = ferry(&[
        "report",
        "--format",
        "json",
        "--journal",
        &journals[0],
        "--journal",
        &journals[1],
        "--journal",
        &journals[2],
    ]);
    assert_exit(&report, 0);
    let report: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    assert_eq!(report["verdict"]["status"], "match", "{report:#}");
    assert_eq!(report["totals"]["source_keys"], 20_100);
    assert_eq!(report["totals"]["target_keys"], 20_100);
    assert_eq!(report["totals"]["restored"], 20_100);
}

#[test]
fn a_worker_killed_and_started_again_with_the_same_command_line_ends_identical() {
    let source = RedisCluster::start();
    fill_cluster_keys(&mut source.connection(), 12_000);
    let target = RedisCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let journals: Vec<String> = (0..3).map(|i| journal_of(&dir, i)).collect();
    let (s, t) = (source.url(), target.url());
    let commands: Vec<Vec<String>> = (0..3)
        .map(|i| worker_args(&s, &t, &journals[i], &format!("{i}/3"), &PACED))
        .collect();
    let mut workers: Vec<Child> = commands.iter().map(|args| spawn_worker(args)).collect();
    wait_for_restored(&mut workers[1], &journals[1], 1500);
    signal(&workers[1], "KILL");
    let killed = finish(workers.remove(1));
    assert_eq!(killed.status.code(), None, "killed by a signal");
    let status = merged_status(&journals);
    let worker = &status["workers"][1];
    assert_eq!(worker["state"], "interrupted", "{status:#}");
    assert!(worker["outcomes"]["restored"].as_u64().unwrap() < 4100);

    // The supervisor starts it again with the very same command line.
    let again = run_worker(&commands[1]);
    assert_exit(&again, 0);
    assert!(
        stderr(&again).contains("already holds this job (interrupted"),
        "{}",
        describe(&again)
    );
    for output in workers.into_iter().map(finish) {
        assert_exit(&output, 0);
    }
    assert_same_data(&cluster_snapshot(&source), &cluster_snapshot(&target), 5000);
    let status = merged_status(&journals);
    assert_eq!(status["job"]["state"], "completed");
    assert_eq!(status["outcomes"]["restored"], 12_100, "counted once");
    let per_shard = assert_each_key_in_its_workers_slots(&merged_csv(&journals));
    assert_eq!(per_shard.iter().sum::<usize>(), 12_100);

    // Once more after the end: a completed job says so and exits 0.
    let done = run_worker(&commands[1]);
    assert_exit(&done, 0);
    assert!(
        stdout(&done).contains("already completed"),
        "{}",
        describe(&done)
    );
}

#[test]
fn or_resume_with_other_settings_is_refused_and_leaves_the_journal_unchanged() {
    let source = RedisCluster::start();
    fill_cluster_keys(&mut source.connection(), 1500);
    let target = RedisCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_of(&dir, 0);
    let (s, t) = (source.url(), target.url());
    let first = run_worker(&worker_args(&s, &t, &journal, "0/3", &[]));
    assert_exit(&first, 0);
    let files = |journal: &str| -> Vec<Vec<u8>> {
        ["", "-wal", "-shm"]
            .iter()
            .map(|suffix| file_bytes(Path::new(&format!("{journal}{suffix}"))))
            .collect()
    };
    let before = files(&journal);
    for (extra, named) in [
        (
            vec!["--scan-count", "500"],
            "--scan-count 1000 in the journal, 500 here",
        ),
        (
            vec!["--match", "user:*"],
            "--match (not given) in the journal, user:* here",
        ),
    ] {
        let output = run_worker(&worker_args(&s, &t, &journal, "0/3", &extra));
        assert_exit(&output, 1);
        let text = stderr(&output);
        assert!(
            text.contains(named) && text.contains("pass another --journal for a new job"),
            "{}",
            describe(&output)
        );
        assert_eq!(files(&journal), before, "the journal is unchanged");
    }
    let other_shard = run_worker(&worker_args(&s, &t, &journal, "1/3", &[]));
    assert_exit(&other_shard, 1);
    assert!(
        stderr(&other_shard).contains("--shard 0/3 in the journal, 1/3 here"),
        "{}",
        describe(&other_shard)
    );
    let other_source = run_worker(&worker_args(
        &source.nodes[1].url(),
        &t,
        &journal,
        "0/3",
        &[],
    ));
    assert_exit(&other_source, 1);
    assert!(
        stderr(&other_source).contains("--source"),
        "{}",
        describe(&other_source)
    );
    assert_eq!(files(&journal), before, "the journal is unchanged");
}

#[test]
fn workers_with_dual_writes_running_leave_the_target_equal_to_the_source() {
    let source = RedisCluster::start();
    fill_cluster_keys(&mut source.connection(), 6000);
    fill_hot_keys(&mut source.connection(), 200);
    let target = RedisCluster::start();
    let writer = DualWriter::start(
        Box::new(source.connection()),
        Box::new(target.connection()),
        200,
        400,
    );
    writer.wait_for_changes(50);
    let dir = tempfile::tempdir().unwrap();
    let journals: Vec<String> = (0..3).map(|i| journal_of(&dir, i)).collect();
    let (s, t) = (source.url(), target.url());
    let extra = [
        "--existing",
        "replace",
        "--rate",
        "1000",
        "--scan-count",
        "100",
    ];
    let workers: Vec<Child> = (0..3)
        .map(|i| {
            spawn_worker(&worker_args(
                &s,
                &t,
                &journals[i],
                &format!("{i}/3"),
                &extra,
            ))
        })
        .collect();
    let outputs: Vec<Output> = workers.into_iter().map(finish).collect();
    let changes = writer.stop();
    assert!(
        changes > 500,
        "the application wrote during the copy ({changes} changes)"
    );
    for output in &outputs {
        assert_exit(output, 0);
    }
    assert_same_data(&cluster_snapshot(&source), &cluster_snapshot(&target), 5000);
    assert_each_key_in_its_workers_slots(&merged_csv(&journals));
}

#[test]
fn workers_scan_only_their_nodes_and_count_the_keys_of_other_slots_they_see() {
    let source = RedisCluster::start();
    fill_cluster_keys(&mut source.connection(), 3000);
    let target = RedisCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let (s, t) = (source.url(), target.url());
    // Three workers on three primaries: each range is one node's slots.
    for index in 0..3 {
        let journal = journal_of(&dir, index);
        let output = run_worker(&worker_args(&s, &t, &journal, &format!("{index}/3"), &[]));
        assert_exit(&output, 0);
        assert!(
            stderr(&output).contains(" 0 of them (0.0%) in other workers' slots"),
            "{}",
            describe(&output)
        );
        let cursors = status_json(&journal)["cursors"].as_array().unwrap().len();
        assert_eq!(cursors, 1, "worker {index} scans one node");
    }
    // Two workers on three primaries: worker 0 owns 0-8191, so it scans the
    // node of 5461-10922 too and sees that node's keys of 8192-10922.
    let keys = cluster_snapshot(&source);
    let foreign = keys
        .keys()
        .filter(|key| (8192..=10922).contains(&key_slot(key)))
        .count();
    let own = keys.keys().filter(|key| key_slot(key) <= 8191).count();
    let second_target = RedisCluster::start();
    let journal = dir.path().join("half-0.db").display().to_string();
    let output = run_worker(&worker_args(&s, &second_target.url(), &journal, "0/2", &[]));
    assert_exit(&output, 0);
    assert!(
        stderr(&output).contains(&format!(
            "this run scanned {} keys, {foreign} of them",
            own + foreign
        )),
        "{}",
        describe(&output)
    );
    assert_eq!(status_json(&journal)["outcomes"]["restored"], own as u64);
    assert_eq!(second_target.dbsize(), own as u64);
}

#[test]
fn a_worker_refuses_a_target_holding_keys_of_its_own_slots_only() {
    let source = RedisCluster::start();
    fill_cluster_keys(&mut source.connection(), 600);
    let target = RedisCluster::start();
    // "foo" is in slot 12182: shard 2/3's.
    redis::cmd("SET")
        .arg("foo")
        .arg("already here")
        .exec(&mut target.connection())
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (s, t) = (source.url(), target.url());
    let ok = run_worker(&worker_args(&s, &t, &journal_of(&dir, 0), "0/3", &[]));
    assert_exit(&ok, 0);
    let refused = run_worker(&worker_args(&s, &t, &journal_of(&dir, 2), "2/3", &[]));
    assert_exit(&refused, 1);
    assert!(
        stderr(&refused).contains(
            "already holds 1 keys in the slots of shard 2/3 (10923-16383) in the databases this job would write"
        ),
        "{}",
        describe(&refused)
    );
    assert!(
        !Path::new(&journal_of(&dir, 2)).exists(),
        "nothing recorded"
    );
}

#[test]
fn shard_usage_errors_say_what_to_write() {
    let standalone = RedisServer::start();
    fill_strings(&mut standalone.connection(), "k", 10, None);
    let target = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);
    let (s, t) = (standalone.url(), target.url());
    let output = run_job(&s, &t, &journal, &["--shard", "0/2"]);
    assert_exit(&output, 2);
    assert!(
        stderr(&output).contains("is a standalone server: drop --shard"),
        "{}",
        describe(&output)
    );
    let output = run_job(&s, &t, &journal, &["--shard", "3/3"]);
    assert_exit(&output, 2);
    assert!(
        stderr(&output)
            .contains("workers are numbered from 0, so with 3 workers the index is 0 to 2"),
        "{}",
        describe(&output)
    );
    let output = run_job(&s, &t, &journal, &["--shard", "0/2", "--follow"]);
    assert_exit(&output, 2);
    assert!(
        stderr(&output).contains("--follow cannot be combined with --shard"),
        "{}",
        describe(&output)
    );
    assert!(!Path::new(&journal).exists());
}

#[test]
fn status_and_report_merge_only_the_workers_of_one_job() {
    let source = RedisCluster::start();
    fill_cluster_keys(&mut source.connection(), 900);
    let target = RedisCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let (s, t) = (source.url(), target.url());
    for index in 0..2 {
        let output = run_worker(&worker_args(
            &s,
            &t,
            &journal_of(&dir, index),
            &format!("{index}/3"),
            &[],
        ));
        assert_exit(&output, 0);
    }
    // Shard 2/3 has not run: the job is not complete, and says why.
    let journals: Vec<String> = (0..2).map(|i| journal_of(&dir, i)).collect();
    let status = merged_status(&journals);
    assert_eq!(status["job"]["state"], "interrupted");
    assert!(
        status["notes"][0]
            .as_str()
            .unwrap()
            .contains("no journal of shard 2/3 among those given"),
        "{status:#}"
    );
    // A directory stands for the journals in it.
    let by_directory = ferry(&["status", "--journal", dir.path().to_str().unwrap()]);
    assert_exit(&by_directory, 0);
    let text = stdout(&by_directory);
    assert!(
        text.contains("workers:") && text.contains("0/3") && text.contains("1/3"),
        "{text}"
    );

    // One worker's report compares the servers over its own slots.
    let report = ferry(&["report", "--format", "json", "--journal", &journals[0]]);
    assert_exit(&report, 0);
    let report: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    assert_eq!(report["verdict"]["status"], "match", "{report:#}");
    assert_eq!(
        report["totals"]["source_keys"],
        report["totals"]["restored"]
    );
    // And verify compares its slots only: shard 2/3's keys, not copied
    // yet, are no difference of shard 0/3's.
    let verify = ferry(&["verify", "--journal", &journals[0], "--progress", "off"]);
    assert_exit(&verify, 0);
    assert!(
        stdout(&verify).contains(&format!("checked {} keys", report["totals"]["restored"])),
        "{}",
        describe(&verify)
    );

    let twice = ferry(&[
        "status",
        "--journal",
        &journals[0],
        "--journal",
        &journals[0],
    ]);
    assert_exit(&twice, 1);
    assert!(
        stderr(&twice).contains("are both shard 0/3"),
        "{}",
        describe(&twice)
    );
    let unsharded = journal_in(&dir);
    let other_target = RedisCluster::start();
    assert_exit(&run_job(&s, &other_target.url(), &unsharded, &[]), 0);
    let mixed = ferry(&["status", "--journal", &journals[0], "--journal", &unsharded]);
    assert_exit(&mixed, 1);
    assert!(
        stderr(&mixed).contains("was not started with --shard"),
        "{}",
        describe(&mixed)
    );
}
