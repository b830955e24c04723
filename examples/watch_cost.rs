//! What the source fence costs the source server: 300,000 keys read in
//! batches of 64 with DUMP + PTTL alone, with a WATCH per key before each
//! read, with one WATCH of the whole batch, and (for scale) MEMORY USAGE;
//! prints the wall time and the server's CPU for each.
//!
//!     cargo run --release --example watch_cost
//!     WATCH_COST_KEYS=3000000 cargo run --release --example watch_cost
//!
//! (`WATCH_COST_KEYS`: the database's size; 300,000 keys of it are read.)
//!
//! Measured 2026-12-01 (2-core machine, Redis 7.0.15): DUMP + PTTL 1.16 s
//! of server CPU, with WATCH 1.65 s either way (a WATCH per key or one per
//! batch: the cost is the watched-keys bookkeeping, not the commands); in
//! a 3,000,000-key database 0.95-1.44 s. These keys are watched in
//! insertion order (random hashes); a job watches them in SCAN order,
//! whose keys share the low bits of their hash, and that gets dear on a
//! big source (see the README's Performance section).

#[allow(dead_code)]
#[path = "../tests/common/server.rs"]
mod server;
use redis::Value;
use server::RedisServer;
use std::time::Instant;

fn cpu(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
}

fn main() {
    // The database's size (`WATCH_COST_KEYS`), read 300,000 keys of it.
    let total: usize = std::env::var("WATCH_COST_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300_000);
    let t = RedisServer::start();
    let mut c = t.connection();
    for chunk in (0..total).collect::<Vec<_>>().chunks(1000) {
        let mut p = redis::pipe();
        for i in chunk {
            p.cmd("SET")
                .arg(format!("k:{i}"))
                .arg("v".repeat(100))
                .ignore();
        }
        p.query::<()>(&mut c).unwrap();
    }
    let size = 64;
    for mode in ["dump", "watch-each", "watch-one", "memusage"] {
        let before = cpu(t.pid());
        let started = Instant::now();
        for b in 0..(300_000 / size) {
            let keys: Vec<String> = (0..size).map(|i| format!("k:{}", b * size + i)).collect();
            let mut p = redis::pipe();
            if mode == "watch-one" {
                p.cmd("WATCH").arg(&keys);
            }
            for k in &keys {
                if mode == "watch-each" {
                    p.cmd("WATCH").arg(k);
                }
                if mode == "memusage" {
                    p.cmd("MEMORY").arg("USAGE").arg(k);
                    continue;
                }
                p.cmd("DUMP").arg(k);
                p.cmd("PTTL").arg(k);
            }
            if mode.starts_with("watch") {
                p.cmd("MULTI");
                p.cmd("EXEC");
            }
            let _: Vec<Value> = p.query(&mut c).unwrap();
        }
        println!(
            "{mode}: {:.2}s wall, server cpu {:.2}s per 300k keys",
            started.elapsed().as_secs_f64(),
            cpu(t.pid()) - before
        );
    }
}
