//! Keys expiring while the copy runs: each ends `restored` (with a TTL) or
//! `expired`, and none comes back to life on the target without a TTL.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn keys_expiring_during_the_copy_are_never_resurrected_without_a_ttl() {
    let source = RedisServer::start();
    let target = RedisServer::start();
    let mut connection = source.connection();
    let volatile = 6000;
    let mut pipe = redis::pipe();
    for i in 0..volatile {
        // TTLs from 50 ms to 3 s: many expire before, during and after the
        // moment they are read.
        pipe.cmd("SET")
            .arg(format!("v:{i}"))
            .arg("x")
            .arg("PX")
            .arg(50 + (i * 7919) % 2950)
            .ignore();
    }
    pipeline_write(&mut connection, &pipe);
    fill_strings(&mut connection, "p", 4000, None);
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);
    let output = run_job(
        &source.url(),
        &target.url(),
        &journal,
        &["--rate", "5000", "--scan-count", "100"],
    );
    assert_exit(&output, 0);

    // Right after the copy: every volatile key on the target has a TTL.
    let mut t = target.connection();
    let mut still_there = 0;
    for (i, pttl) in pttls(&mut t, "v", volatile).into_iter().enumerate() {
        assert_ne!(pttl, -1, "v:{i} landed without its TTL");
        assert!(
            pttl <= 3000,
            "v:{i} got a TTL of {pttl} ms, longer than the source gave it"
        );
        still_there += usize::from(pttl > 0);
    }
    let status = status_json(&journal);
    let outcomes = &status["outcomes"];
    assert_eq!(outcomes["failed"], 0);
    assert_eq!(outcomes["skipped"], 0);
    let restored = outcomes["restored"].as_u64().unwrap();
    let expired = outcomes["expired"].as_u64().unwrap();
    assert!(
        restored >= 4000 && expired > 0,
        "restored {restored}, expired {expired}"
    );
    assert!(
        restored + expired <= (volatile + 4000) as u64,
        "each key is counted once"
    );
    assert!(
        still_there < volatile,
        "some keys must have expired during the test"
    );

    // Every volatile key expires on the target (none was given a TTL
    // longer than 3 s above), and then only the persistent keys remain.
    wait_until(
        "every volatile key expired on the target",
        Duration::from_secs(60),
        || pttls(&mut t, "v", volatile).iter().all(|pttl| *pttl == -2),
    );
    assert_eq!(dbsize(&mut t, 0), 4000);
}

#[test]
fn a_key_gone_when_read_is_deleted_on_the_target_too() {
    // The target holds older, persistent copies of keys that expire on the
    // source while the job runs. Every key the job saw must end mirrored:
    // restored with its TTL, or `expired` and deleted on the target.
    let source = RedisServer::start();
    let target = RedisServer::start();
    let keys = 3000;
    let mut s = source.connection();
    let mut pipe = redis::pipe();
    for i in 0..keys {
        pipe.cmd("SET")
            .arg(format!("gone:{i}"))
            .arg("x")
            .arg("PX")
            .arg(200 + (i * 37) % 1200)
            .ignore();
    }
    pipeline_write(&mut s, &pipe);
    let mut t = target.connection();
    let mut pipe = redis::pipe();
    for i in 0..keys {
        pipe.cmd("SET")
            .arg(format!("gone:{i}"))
            .arg("stale copy")
            .ignore();
    }
    pipeline_write(&mut t, &pipe);
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);
    // Paced, so keys expire between SCAN returning them and DUMP reading them.
    let output = run_job(
        &source.url(),
        &target.url(),
        &journal,
        &[
            "--rate",
            "2500",
            "--scan-count",
            "50",
            "--existing",
            "replace",
        ],
    );
    assert_exit(&output, 0);
    let status = status_json(&journal);
    let restored = status["outcomes"]["restored"].as_u64().unwrap();
    let expired = status["outcomes"]["expired"].as_u64().unwrap();
    assert!(
        expired > 0,
        "the pacing should let some keys expire after SCAN: {status}"
    );
    // Restored copies carry their TTL (at most the 1.4 s given); wait until
    // every one has expired, which leaves only keys without a TTL.
    wait_until(
        "every restored copy expired on the target",
        Duration::from_secs(60),
        || pttls(&mut t, "gone", keys).iter().all(|pttl| *pttl < 0),
    );
    // Keys the job never saw (expired before SCAN reached them) keep their
    // stale copy; every key it saw is gone from the target now.
    let left = pttls(&mut t, "gone", keys)
        .iter()
        .filter(|pttl| **pttl == -1)
        .count() as u64;
    assert_eq!(
        left,
        keys as u64 - restored - expired,
        "restored {restored}, expired {expired}"
    );
}

/// PTTL of `PREFIX:0` .. `PREFIX:{count-1}` on one connection: -2 for a
/// key that is gone, -1 for one without a TTL.
fn pttls(connection: &mut redis::Connection, prefix: &str, count: usize) -> Vec<i64> {
    let mut pipe = redis::pipe();
    for i in 0..count {
        pipe.cmd("PTTL").arg(format!("{prefix}:{i}"));
    }
    pipe.query(connection).unwrap()
}
