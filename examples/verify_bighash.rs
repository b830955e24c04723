//! A 200,000-field hash compared without loading it whole:
//!
//!     cargo run --release --example verify_bighash
//!
//! Starts two throwaway redis-servers (redis-server must be on PATH), builds
//! the same 200,000-field hash on both (fields inserted in opposite orders;
//! each server also seeds its hash table differently, so the DUMP payloads
//! differ), runs `verify` through the library, and prints the peak resident
//! memory of this process while verify ran (VmHWM, reset just before), next
//! to the size of the hash. Then changes one field on the target and shows
//! that verify finds it.
//!
//! (`/usr/bin/time -v` is no help here: its maximum RSS is that of the
//! largest process in the tree, which is one of the redis-servers holding
//! the hash.)

#[allow(dead_code)]
#[path = "../tests/common/server.rs"]
mod server;

use std::time::Instant;

use anyhow::{Context, Result};
use redis_ferry::endpoint::{Endpoint, Role};
use redis_ferry::interrupt::Shutdown;
use redis_ferry::verify::{self, VerifySettings, report::Report};
use server::RedisServer;

const FIELDS: usize = 200_000;
const KEY: &str = "bighash";

fn main() -> Result<()> {
    println!("starting two throwaway redis-servers...");
    let source = RedisServer::start();
    let target = RedisServer::start();
    fill(&source, false)?;
    fill(&target, true)?;
    let memory: u64 = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(KEY)
        .query(&mut source.connection())?;
    let strlen_sum = hash_bytes(&source)?;
    println!(
        "{KEY}: {FIELDS} fields, {:.1} MiB of field and value bytes, MEMORY USAGE {:.1} MiB on the source",
        mib(strlen_sum),
        mib(memory)
    );

    let report = measured_verify(&source, &target, "identical hashes")?;
    assert_eq!(report.differing(), 0, "{}", report.to_text());

    redis::cmd("HSET")
        .arg(KEY)
        .arg(format!("field:{}", FIELDS / 2))
        .arg("changed on the target")
        .exec(&mut target.connection())?;
    let report = measured_verify(&source, &target, "one field changed on the target")?;
    for difference in &report.first {
        println!("  found: {}", difference.detail);
    }

    println!(
        "DUMP payloads of the two hashes differ: {} (so comparing DUMPs could not tell)",
        dump_digest(&source)? != dump_digest(&target)?
    );
    Ok(())
}

/// A digest of the key's DUMP payload, computed by `redis-cli | sha1sum`
/// in a child process, so the payload never enters this process (whose
/// peak memory is the point of this example).
fn dump_digest(server: &RedisServer) -> Result<String> {
    let script = format!(
        "{} -h 127.0.0.1 -p {} DUMP {KEY} | sha1sum",
        server::redis_cli_bin(),
        server.port
    );
    let output = std::process::Command::new("sh")
        .args(["-c", &script])
        .output()
        .context("cannot run redis-cli | sha1sum")?;
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// Builds the hash with 1,000 fields per HSET; `reverse` inserts the
/// fields in the opposite order.
fn fill(server: &RedisServer, reverse: bool) -> Result<()> {
    let mut connection = server.connection();
    let mut order: Vec<usize> = (0..FIELDS).collect();
    if reverse {
        order.reverse();
    }
    for chunk in order.chunks(1000) {
        let mut command = redis::cmd("HSET");
        command.arg(KEY);
        for i in chunk {
            command
                .arg(format!("field:{i}"))
                .arg(format!("{:0>100}", i));
        }
        command.exec(&mut connection)?;
    }
    Ok(())
}

/// Bytes of all fields and values (what loading the hash whole would hold,
/// before any per-element overhead).
fn hash_bytes(server: &RedisServer) -> Result<u64> {
    let total = (0..FIELDS)
        .map(|i| format!("field:{i}").len() as u64 + 100)
        .sum();
    let length: u64 = redis::cmd("HLEN")
        .arg(KEY)
        .query(&mut server.connection())?;
    anyhow::ensure!(length == FIELDS as u64, "the hash holds {length} fields");
    Ok(total)
}

fn measured_verify(source: &RedisServer, target: &RedisServer, what: &str) -> Result<Report> {
    let settings = VerifySettings::default();
    let source = Endpoint::parse(Role::Source, &source.url())?;
    let target = Endpoint::parse(Role::Target, &target.url())?;
    let before = peak_rss_kib()?;
    reset_peak_rss()?;
    let started = Instant::now();
    let report = verify::compare_servers(&source, &target, &settings, &Shutdown::new())?;
    let elapsed = started.elapsed();
    let peak = peak_rss_kib()?;
    println!(
        "verify, {what}: exit {}, {} differing key(s), {:.1}s; peak RSS while verifying {:.1} MiB (peak before: {:.1} MiB)",
        report.exit().code(),
        report.differing(),
        elapsed.as_secs_f64(),
        peak as f64 / 1024.0,
        before as f64 / 1024.0
    );
    Ok(report)
}

/// VmHWM from /proc/self/status, in KiB.
fn peak_rss_kib() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM in /proc/self/status (Linux only)")
}

/// Resets VmHWM to the current RSS (Linux 4.0+), so the next reading is
/// the peak of what follows.
fn reset_peak_rss() -> Result<()> {
    std::fs::write("/proc/self/clear_refs", "5").context("cannot reset the peak RSS")
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
