//! The benchmarks' "mixed" dataset: key `i` is one of six types (string,
//! hash, list, set, zset, stream), in turn, and every fourth has a TTL.
//! Shared so that `bench` and `rebuild_bench` measure the same keys.

/// Queues the writes of mixed key `i` on `pipe` and returns its name.
pub fn queue_mixed_key(pipe: &mut redis::Pipeline, i: usize) -> String {
    let key = format!("mixed:{i:010}");
    match i % 6 {
        0 => pipe
            .cmd("SET")
            .arg(&key)
            .arg(format!("value-{i}-{}", "s".repeat(60))),
        1 => pipe.cmd("HSET").arg(&key).arg(&[
            "name",
            "alice",
            "email",
            "a@example.com",
            "visits",
            "42",
            "plan",
            "pro",
        ]),
        2 => pipe
            .cmd("RPUSH")
            .arg(&key)
            .arg(&["e1", "e2", "e3", "e4", "e5", "e6", "e7", "e8"]),
        3 => pipe
            .cmd("SADD")
            .arg(&key)
            .arg(&["red", "green", "blue", "cyan", "magenta", "yellow"]),
        4 => pipe
            .cmd("ZADD")
            .arg(&key)
            .arg(&["1", "a", "2", "b", "3", "c", "4.5", "d", "10", "e"]),
        _ => pipe
            .cmd("XADD")
            .arg(&key)
            .arg("*")
            .arg(&["event", "login", "user", "bob"]),
    }
    .ignore();
    if i.is_multiple_of(4) {
        pipe.cmd("PEXPIRE")
            .arg(&key)
            .arg(3_600_000 + i as i64)
            .ignore();
    }
    key
}
