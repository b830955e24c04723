//! Redis Cluster as source and as target: keys over all slots and hash
//! tags, per-node cursors, replicas, and slots moving while the job runs.

mod common;

use common::*;

#[test]
fn cluster_to_standalone_copies_every_slot() {
    let cluster = RedisCluster::start();
    fill_cluster_keys(&mut cluster.connection(), 3000);
    let target = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);
    let output = run_job(&cluster.url(), &target.url(), &journal, &[]);
    assert_exit(&output, 0);
    let source = cluster_snapshot(&cluster);
    assert_eq!(source.len(), 3100);
    assert_same_data(&source, &snapshot(&mut target.connection(), 0), 5000);
    let status = status_json(&journal);
    assert_eq!(
        status["cursors"].as_array().unwrap().len(),
        3,
        "one cursor per primary"
    );
    assert_eq!(status["outcomes"]["restored"], 3100);
}

#[test]
fn standalone_to_cluster_routes_each_key_to_its_slot_owner() {
    let source = RedisServer::start();
    fill_strings(&mut source.connection(), "k", 3000, Some(3));
    fill_every_type(&mut source.connection(), "{tagged}");
    let cluster = RedisCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let output = run_job(
        &source.url(),
        &cluster.nodes[1].url(),
        &journal_in(&dir),
        &[],
    );
    assert_exit(&output, 0);
    assert_same_data(
        &snapshot(&mut source.connection(), 0),
        &cluster_snapshot(&cluster),
        5000,
    );
}

#[test]
fn cluster_to_cluster_copies_everything() {
    let source = RedisCluster::start();
    fill_cluster_keys(&mut source.connection(), 3000);
    let target = RedisCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let output = run_job(&source.url(), &target.url(), &journal_in(&dir), &[]);
    assert_exit(&output, 0);
    assert_same_data(&cluster_snapshot(&source), &cluster_snapshot(&target), 5000);
}

#[test]
fn a_cluster_target_refuses_databases_other_than_zero() {
    let source = RedisServer::start();
    fill_strings(&mut source.connection_db(3), "k", 10, None);
    let cluster = RedisCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let output = run_job(&source.url(), &cluster.url(), &journal_in(&dir), &[]);
    assert_exit(&output, 2);
    assert!(
        stderr(&output).contains("add --db-map 3:0"),
        "{}",
        describe(&output)
    );
    let output = run_job(
        &source.url(),
        &cluster.url(),
        &journal_in(&dir),
        &["--db-map", "3:0"],
    );
    assert_exit(&output, 0);
    assert_eq!(cluster.dbsize(), 10);
}

fn node_id(node: &RedisServer) -> String {
    redis::cmd("CLUSTER")
        .arg("MYID")
        .query(&mut node.connection())
        .unwrap()
}

#[test]
fn an_interrupted_cluster_source_resumes_every_node_where_it_stopped() {
    let cluster = RedisCluster::start();
    fill_cluster_keys(&mut cluster.connection(), 9000);
    let target = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);
    let (s, t) = (cluster.url(), target.url());
    let mut child = spawn_paced_run(&s, &t, &journal, 3000);
    wait_for_restored(&mut child, &journal, 2500);
    signal(&child, "KILL");
    finish(child);
    let status = status_json(&journal);
    let cursors = status["cursors"].as_array().unwrap();
    assert_eq!(cursors.len(), 3);
    assert!(
        cursors.iter().any(|c| c["cursor"] != "0"),
        "some node stopped mid-scan: {cursors:?}"
    );
    let output = ferry(&["resume", "--journal", &journal, "--progress", "off"]);
    assert_exit(&output, 0);
    assert!(
        !stderr(&output).contains("scanning again"),
        "nothing moved, so no rescan: {}",
        describe(&output)
    );
    assert_same_data(
        &cluster_snapshot(&cluster),
        &snapshot(&mut target.connection(), 0),
        5000,
    );
    assert_eq!(status_json(&journal)["outcomes"]["restored"], 9100);
}

#[test]
fn source_replicas_are_read_instead_of_primaries() {
    let cluster = RedisCluster::start_with_replicas(1);
    fill_cluster_keys(&mut cluster.connection(), 2000);
    // Replicas must hold everything before they are read.
    wait_until(
        "replicas caught up",
        std::time::Duration::from_secs(60),
        || {
            cluster
                .nodes
                .iter()
                .map(|n| dbsize(&mut n.connection(), 0))
                .sum::<u64>()
                == 2 * 2100
        },
    );
    let target = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let output = run_job(
        &cluster.url(),
        &target.url(),
        &journal_in(&dir),
        &["--source-replicas"],
    );
    assert_exit(&output, 0);
    assert_same_data(
        &cluster_snapshot(&cluster),
        &snapshot(&mut target.connection(), 0),
        5000,
    );
    let dumps = |node: &RedisServer| -> bool {
        let stats: String = redis::cmd("INFO")
            .arg("commandstats")
            .query(&mut node.connection())
            .unwrap();
        stats.contains("cmdstat_dump:")
    };
    let primaries: Vec<u16> = cluster.primaries().iter().map(|n| n.port).collect();
    for node in &cluster.nodes {
        if primaries.contains(&node.port) {
            assert!(!dumps(node), "primary {} was read", node.port);
        } else {
            assert!(dumps(node), "replica {} was not read", node.port);
        }
    }
}

#[test]
fn slots_resharded_while_the_job_runs_lose_no_key() {
    let cluster = RedisCluster::start();
    fill_cluster_keys(&mut cluster.connection(), 20_000);
    let target = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);
    let (s, t) = (cluster.url(), target.url());
    let mut child = spawn_paced_run(&s, &t, &journal, 3000);
    wait_for_restored(&mut child, &journal, 1500);
    let primaries = cluster.primaries();
    let (a, b, c) = (
        node_id(primaries[0]),
        node_id(primaries[1]),
        node_id(primaries[2]),
    );
    // Move slots A -> B, then B -> C, while the copy runs.
    for (from, to, slots) in [(&a, &b, "3000"), (&b, &c, "2000")] {
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
    let output = finish(child);
    assert_exit(&output, 0);
    assert!(
        stderr(&output).contains("took over slots"),
        "{}",
        describe(&output)
    );
    assert_same_data(
        &cluster_snapshot(&cluster),
        &snapshot(&mut target.connection(), 0),
        5000,
    );
    assert_eq!(
        status_json(&journal)["outcomes"]["restored"],
        20_100,
        "no key counted twice"
    );
}

#[test]
fn resume_after_a_failover_rescans_what_it_cannot_prove_and_says_so() {
    let cluster = RedisCluster::start_with_replicas(1);
    fill_cluster_keys(&mut cluster.connection(), 6000);
    let target = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);
    let (s, t) = (cluster.url(), target.url());
    let mut child = spawn_paced_run(&s, &t, &journal, 3000);
    wait_for_restored(&mut child, &journal, 1500);
    signal(&child, "INT");
    assert_exit(&finish(child), 130);
    // Promote one replica: its primary becomes a replica.
    let primaries: Vec<u16> = cluster.primaries().iter().map(|n| n.port).collect();
    let replica = cluster
        .nodes
        .iter()
        .find(|n| !primaries.contains(&n.port))
        .unwrap();
    redis::cmd("CLUSTER")
        .arg("FAILOVER")
        .exec(&mut replica.connection())
        .unwrap();
    wait_until("failover", std::time::Duration::from_secs(60), || {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query(&mut replica.connection())
            .unwrap();
        info.contains("role:master")
    });
    cluster.wait_ok();
    let output = ferry(&[
        "resume",
        "--journal",
        &journal,
        "--source",
        &replica.url(),
        "--progress",
        "off",
    ]);
    assert_exit(&output, 0);
    let text = stderr(&output);
    assert!(
        text.contains("is a new primary") && text.contains("no longer a primary"),
        "{}",
        describe(&output)
    );
    assert_same_data(
        &cluster_snapshot(&cluster),
        &snapshot(&mut target.connection(), 0),
        5000,
    );
    assert_eq!(status_json(&journal)["outcomes"]["restored"], 6100);
}
