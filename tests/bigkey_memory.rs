//! A big key is copied with bounded memory: a 64 MiB string and a
//! 300,000-field hash pass through redis-ferry's chunked copier while its
//! peak RSS grows by far less than either value. Alone in its own test
//! binary, so no other test's allocations blur the measurement.

mod common;

use common::RedisServer;
use common::versions::{capabilities, node_connection};
use redis_ferry::endpoint::Role;
use redis_ferry::outcome::Outcome;
use redis_ferry::rebuild::chunked::{BigKeyEnds, BigKeyOptions, copy_big_key};

/// Generous: a few chunks of 1 MiB are in flight; the string alone is 64.
const PEAK_GROWTH_LIMIT_MB: u64 = 32;

fn status_kb(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

/// Resets the peak RSS (VmHWM) to the current RSS.
fn reset_peak() {
    std::fs::write("/proc/self/clear_refs", "5").expect("reset the peak RSS");
}

#[test]
fn big_keys_are_copied_with_bounded_memory() {
    let source = RedisServer::start();
    let target = RedisServer::start();
    let mut connection = source.connection();
    let piece = vec![b'x'; 1024 * 1024];
    for _ in 0..64 {
        let _: () = redis::cmd("APPEND")
            .arg("big:string")
            .arg(&piece)
            .query(&mut connection)
            .unwrap();
    }
    for chunk in 0..300 {
        let mut pipe = redis::pipe();
        for i in chunk * 1000..(chunk + 1) * 1000 {
            pipe.cmd("HSET")
                .arg("big:hash")
                .arg(format!("field-{i}"))
                .arg(format!("value-{i}-{}", "v".repeat(40)))
                .ignore();
        }
        let _: () = pipe.query(&mut connection).unwrap();
    }
    drop(piece);
    let (source_caps, target_caps) = (capabilities(&source), capabilities(&target));
    let mut from = node_connection(&source, Role::Source);
    let mut to = node_connection(&target, Role::Target);
    let options = BigKeyOptions::new("memory");
    for key in [b"big:string".as_slice(), b"big:hash"] {
        reset_peak();
        let before_kb = status_kb("VmRSS:");
        let mut ends = BigKeyEnds {
            source: &mut from,
            source_caps: &source_caps,
            source_db: 0,
            target: &mut to,
            target_caps: &target_caps,
            target_db: 0,
        };
        let copied = copy_big_key(&mut ends, key, &options).unwrap();
        let growth_mb = status_kb("VmHWM:").saturating_sub(before_kb) / 1024;
        assert_eq!(
            copied.result.outcome,
            Outcome::Restored,
            "{:?}",
            copied.result.error
        );
        assert!(
            copied.bytes_copied > 14 * 1024 * 1024,
            "{} bytes",
            copied.bytes_copied
        );
        assert!(
            growth_mb < PEAK_GROWTH_LIMIT_MB,
            "copying {} ({} MB) grew the peak RSS by {growth_mb} MB",
            String::from_utf8_lossy(key),
            copied.bytes_copied / (1024 * 1024)
        );
    }
    let length: i64 = redis::cmd("STRLEN")
        .arg("big:string")
        .query(&mut target.connection())
        .unwrap();
    assert_eq!(length, 64 * 1024 * 1024);
    let fields: i64 = redis::cmd("HLEN")
        .arg("big:hash")
        .query(&mut target.connection())
        .unwrap();
    assert_eq!(fields, 300_000);
}
