//! The throughput benchmark: redis-ferry against Redis's own server-side
//! copies, side by side on the same data and machine.
//!
//!     cargo run --release --example bench -- --dataset small --keys 1000000
//!     cargo run --release --example bench -- --dataset mixed --keys 100000
//!     cargo run --release --example bench -- --topology cluster --keys 1000000
//!     cargo run --release --example bench -- --topology cluster --shards 1,2,3 --keys 1000000
//!     cargo run --release --example bench -- --dataset mixed --keys 100000 \
//!         --source-bin target/servers/redis-8.2/redis-server \
//!         --target-bin target/servers/valkey-8.1/valkey-server --contenders ferry-all
//!
//! Starts a throwaway source and target redis-server (redis-server on PATH),
//! loads the dataset with pipelined writes, then for each contender empties
//! the target, times the copy, checks the target's key count and a sample of
//! values and TTLs, and prints one markdown table.
//!
//! Contenders:
//! - `ferry-all` / `ferry-failures`: redis-ferry through the library, journal
//!   on disk, with `--journal-keys all` / `failures`;
//! - `ferry-nofence`: as `ferry-all` with `--no-fence`, to show what the
//!   fence against the application's writes costs;
//! - `ferry-watch`: as `ferry-all` with the source fenced by `WATCH`, as on
//!   a source that gives no keyspace notifications (CONFIG not allowed);
//! - `migrate`: the reference loop, SCAN COUNT 1000 then per batch
//!   `MIGRATE host port "" db 5000 COPY REPLACE KEYS k1 ... kN`;
//! - `replicaof`: Redis's own full sync (REPLICAOF, wait for the link and
//!   the key count, REPLICAOF NO ONE).
//!
//! Columns: keys/s; ratio to the MIGRATE reference; peak RSS of redis-ferry
//! (each redis-ferry contender runs in a child process of the benchmark,
//! through the library, so its VmHWM is its own); CPU seconds per million
//! keys of every process involved (client + both servers), and of the
//! client alone.
//!
//! `--shards 1,2,3` (cluster only): for each N, N workers of a sharded job
//! (`--shard I/N`), each a child process through the library with its own
//! journal, all at once against the same source and target; the time is
//! until the last finishes. The note gives each worker's scan overhead:
//! the keys SCAN returned to it that belong to other workers' slots.
//!
//! Datasets: `small` is N string keys of about 100 bytes, 10% with TTLs, in
//! db 0. `mixed` is N keys of every type (strings, hashes, lists, sets,
//! zsets, streams), a quarter with TTLs, over dbs 0-3.

#[path = "support/mixed.rs"]
mod mixed;
#[allow(dead_code)]
#[path = "../tests/common/server.rs"]
mod server;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use redis::Value;
use redis_ferry::cluster::{Topology, key_slot};
use redis_ferry::endpoint::{Endpoint, Role};
use redis_ferry::exit::Exit;
use redis_ferry::interrupt::Shutdown;
use redis_ferry::job::{self, Launch};
use redis_ferry::options::{CopyOptions, JournalKeys};
use server::{RedisCluster, RedisServer};
use std::collections::BTreeMap;

struct Args {
    /// `standalone` (one server each side) or `cluster` (3 primaries each side).
    topology: String,
    dataset: String,
    keys: usize,
    contenders: Vec<String>,
    scan_count: u32,
    /// `--shards 1,2,3`: worker counts of a sharded job to time (cluster).
    shards: Vec<u32>,
    /// Other server binaries for the source and the target (cross-version).
    source_bin: Option<String>,
    target_bin: Option<String>,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        topology: "standalone".into(),
        dataset: "small".into(),
        keys: 1_000_000,
        contenders: vec![
            "ferry-all".into(),
            "ferry-nofence".into(),
            "ferry-failures".into(),
            "migrate".into(),
            "replicaof".into(),
        ],
        scan_count: 1000,
        shards: Vec::new(),
        source_bin: None,
        target_bin: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--dataset" => args.dataset = value()?,
            "--topology" => args.topology = value()?,
            "--keys" => args.keys = value()?.parse()?,
            "--contenders" => args.contenders = value()?.split(',').map(str::to_string).collect(),
            "--scan-count" => args.scan_count = value()?.parse()?,
            "--shards" => {
                args.shards = value()?
                    .split(',')
                    .map(|n| n.trim().parse::<u32>())
                    .collect::<Result<_, _>>()?
            }
            "--source-bin" => args.source_bin = Some(value()?),
            "--target-bin" => args.target_bin = Some(value()?),
            other => bail!("unknown flag {other}; see the doc comment of examples/bench.rs"),
        }
    }
    if !["small", "mixed"].contains(&args.dataset.as_str()) {
        bail!("--dataset is small or mixed");
    }
    if !["standalone", "cluster"].contains(&args.topology.as_str()) {
        bail!("--topology is standalone or cluster");
    }
    if !args.shards.is_empty() && args.topology != "cluster" {
        bail!("--shards needs --topology cluster (a sharded job splits a cluster's slots)");
    }
    Ok(args)
}

struct Row {
    name: String,
    seconds: f64,
    keys: u64,
    peak_rss_mb: Option<f64>,
    cpu_total: f64,
    cpu_client: f64,
    /// CPU seconds of the source and the target server (standalone only).
    cpu_servers: Option<(f64, f64)>,
    note: String,
}

fn main() -> Result<()> {
    if std::env::args().nth(1).as_deref() == Some("--ferry-child") {
        return ferry_child();
    }
    if std::env::args().nth(1).as_deref() == Some("--ferry-shard-child") {
        return ferry_shard_child();
    }
    let args = parse_args()?;
    if args.topology == "cluster" {
        return cluster_main(&args);
    }
    // No 5 s wait for more replicas before a full sync starts.
    let program = |binary: &Option<String>| match binary {
        Some(binary) => server::ServerProgram {
            binary: binary.clone(),
            debug_command_flag: false,
        },
        None => server::ServerProgram::default_redis(),
    };
    let source = RedisServer::start_program(
        &program(&args.source_bin),
        &["--maxmemory", "0", "--repl-diskless-sync-delay", "0"],
    );
    let target = RedisServer::start_program(&program(&args.target_bin), &["--maxmemory", "0"]);
    eprintln!(
        "loading {} {} keys into {} ...",
        args.keys,
        args.dataset,
        source.url()
    );
    let started = Instant::now();
    let dbs = match args.dataset.as_str() {
        "small" => load_small(&source, args.keys)?,
        _ => load_mixed(&source, args.keys)?,
    };
    let total_keys: u64 = dbs
        .iter()
        .map(|db| dbsize(&source, *db))
        .sum::<Result<u64>>()?;
    eprintln!(
        "loaded {total_keys} keys in {:.1}s",
        started.elapsed().as_secs_f64()
    );

    let mut rows = Vec::new();
    for contender in &args.contenders {
        flush(&target)?;
        eprintln!("running {contender} ...");
        let cpu_before = (
            process_cpu_seconds(std::process::id())?,
            servers_cpu(&source, &target)?,
            process_cpu_seconds(source.pid())?,
        );
        let started = Instant::now();
        let (peak, note, child_cpu) = match contender.as_str() {
            "ferry-all" => spawn_ferry(&source, &target, "all", args.scan_count)?,
            "ferry-nofence" => spawn_ferry(&source, &target, "nofence", args.scan_count)?,
            "ferry-failures" => spawn_ferry(&source, &target, "failures", args.scan_count)?,
            "ferry-watch" => spawn_ferry(&source, &target, "watch", args.scan_count)?,
            "migrate" => (None, run_migrate(&source, &target, &dbs)?, 0.0),
            "replicaof" => (
                None,
                run_replicaof(&source, &target, &dbs, total_keys)?,
                0.0,
            ),
            other => bail!("unknown contender {other}"),
        };
        let seconds = started.elapsed().as_secs_f64();
        let client = process_cpu_seconds(std::process::id())? - cpu_before.0 + child_cpu;
        let servers = servers_cpu(&source, &target)? - cpu_before.1;
        let source_cpu = process_cpu_seconds(source.pid())? - cpu_before.2;
        let copied: u64 = dbs
            .iter()
            .map(|db| dbsize(&target, *db))
            .sum::<Result<u64>>()?;
        check_sample(&source, &target, &dbs)?;
        if copied != total_keys {
            bail!("{contender}: target holds {copied} keys, source {total_keys}");
        }
        rows.push(Row {
            name: contender.clone(),
            seconds,
            keys: copied,
            peak_rss_mb: peak,
            cpu_total: client + servers,
            cpu_client: client,
            cpu_servers: Some((source_cpu, servers - source_cpu)),
            note,
        });
    }
    print_table(&args, &rows);
    Ok(())
}

/// Runs redis-ferry in a child process of this benchmark (through the
/// library, as below), so its peak RSS and CPU are its own and not the
/// loader's. Returns peak RSS, a note with the journal's size, CPU seconds.
fn spawn_ferry(
    source: &RedisServer,
    target: &RedisServer,
    journal_keys: &str,
    scan_count: u32,
) -> Result<(Option<f64>, String, f64)> {
    spawn_ferry_urls(&source.url(), &target.url(), journal_keys, scan_count)
}

fn spawn_ferry_urls(
    source: &str,
    target: &str,
    journal_keys: &str,
    scan_count: u32,
) -> Result<(Option<f64>, String, f64)> {
    let output = std::process::Command::new(std::env::current_exe()?)
        .args(["--ferry-child", source, target, journal_keys])
        .arg(scan_count.to_string())
        .stderr(std::process::Stdio::inherit())
        .output()?;
    if !output.status.success() {
        bail!(
            "redis-ferry child failed: {}",
            String::from_utf8_lossy(&output.stdout)
        );
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("FERRY_RESULT "))
        .context("the child printed no result")?;
    let fields: Vec<&str> = line.split_whitespace().collect();
    let peak: f64 = fields[0].parse()?;
    let cpu: f64 = fields[1].parse()?;
    Ok((Some(peak), format!("journal {} bytes", fields[2]), cpu))
}

/// The child side of [`spawn_ferry`]: `--ferry-child SOURCE TARGET all|failures|nofence|watch SCAN_COUNT`.
fn ferry_child() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(2).collect();
    let [source, target, journal_keys, scan_count] = args.as_slice() else {
        bail!("--ferry-child SOURCE TARGET all|failures|nofence|watch SCAN_COUNT");
    };
    if journal_keys == "watch" {
        // Read by the job as it picks the source fence (src/job.rs).
        // SAFETY: set before any thread of this child process starts.
        unsafe { std::env::set_var("REDIS_FERRY_WATCH_FENCE", "1") };
    }
    let (journal_keys, no_fence) = match journal_keys.as_str() {
        "all" | "watch" => (JournalKeys::All, false),
        "nofence" => (JournalKeys::All, true),
        _ => (JournalKeys::Failures, false),
    };
    let (peak, bytes) = run_ferry(source, target, journal_keys, no_fence, scan_count.parse()?)?;
    let cpu = process_cpu_seconds(std::process::id())?;
    println!("FERRY_RESULT {:.1} {cpu:.2} {bytes}", peak.unwrap_or(0.0));
    Ok(())
}

/// Runs redis-ferry through the library with a journal on disk; returns
/// the peak RSS of the run and the journal's size in bytes.
fn run_ferry(
    source: &str,
    target: &str,
    journal_keys: JournalKeys,
    no_fence: bool,
    scan_count: u32,
) -> Result<(Option<f64>, u64)> {
    let dir = tempfile::tempdir_in(".")?;
    let launch = Launch::new(dir.path().join("bench.db"), Shutdown::new());
    let options = CopyOptions {
        journal_keys,
        scan_count,
        no_fence,
        ..CopyOptions::default()
    };
    let exit = job::start(
        Endpoint::parse(Role::Source, source)?,
        Endpoint::parse(Role::Target, target)?,
        options,
        &launch,
    )?;
    if exit != Exit::Success {
        bail!("redis-ferry exited {}", exit.code());
    }
    let peak = peak_rss_mb();
    let bytes: u64 = ["bench.db", "bench.db-wal"]
        .iter()
        .filter_map(|name| std::fs::metadata(dir.path().join(name)).ok())
        .map(|m| m.len())
        .sum();
    Ok((peak, bytes))
}

/// What one worker of a sharded run reports.
struct ShardResult {
    peak_rss_mb: f64,
    cpu_seconds: f64,
    /// Keys of its own slots SCAN returned (copied).
    own: u64,
    /// Keys of other workers' slots SCAN returned (left to them).
    foreign: u64,
}

/// N workers of a sharded job at once, each a child process; returns the
/// wall time until the last finished and each worker's result.
fn run_shards(
    source: &str,
    target: &str,
    count: u32,
    scan_count: u32,
) -> Result<(f64, Vec<ShardResult>)> {
    let started = Instant::now();
    let children: Vec<std::process::Child> = (0..count)
        .map(|index| {
            std::process::Command::new(std::env::current_exe()?)
                .args(["--ferry-shard-child", source, target])
                .arg(format!("{index}/{count}"))
                .arg(scan_count.to_string())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::inherit())
                .spawn()
                .context("cannot start a worker")
        })
        .collect::<Result<_>>()?;
    let mut results = Vec::new();
    for child in children {
        let output = child.wait_with_output()?;
        if !output.status.success() {
            bail!(
                "a worker failed: {}",
                String::from_utf8_lossy(&output.stdout)
            );
        }
        let text = String::from_utf8_lossy(&output.stdout);
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix("SHARD_RESULT "))
            .context("a worker printed no result")?;
        let fields: Vec<&str> = line.split_whitespace().collect();
        results.push(ShardResult {
            peak_rss_mb: fields[0].parse()?,
            cpu_seconds: fields[1].parse()?,
            own: fields[2].parse()?,
            foreign: fields[3].parse()?,
        });
    }
    Ok((started.elapsed().as_secs_f64(), results))
}

/// The child side of [`run_shards`]: `--ferry-shard-child SOURCE TARGET I/N SCAN_COUNT`.
fn ferry_shard_child() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(2).collect();
    let [source, target, shard, scan_count] = args.as_slice() else {
        bail!("--ferry-shard-child SOURCE TARGET I/N SCAN_COUNT");
    };
    let shard = redis_ferry::shard::split::parse_shard(shard).map_err(anyhow::Error::msg)?;
    let dir = tempfile::tempdir_in(".")?;
    let journal = dir.path().join("worker.db");
    let launch = Launch::new(journal.clone(), Shutdown::new());
    let options = CopyOptions {
        scan_count: scan_count.parse()?,
        shard: Some(shard),
        ..CopyOptions::default()
    };
    let exit = job::start(
        Endpoint::parse(Role::Source, source)?,
        Endpoint::parse(Role::Target, target)?,
        options,
        &launch,
    )?;
    if exit != Exit::Success {
        bail!("worker exited {}", exit.code());
    }
    let own: u64 = redis_ferry::journal::JournalReader::open(&journal)?
        .counts()?
        .values()
        .map(|counts| counts.total())
        .sum();
    let foreign = redis_ferry::metrics::registry().foreign_keys();
    let cpu = process_cpu_seconds(std::process::id())?;
    println!(
        "SHARD_RESULT {:.1} {cpu:.2} {own} {foreign}",
        peak_rss_mb().unwrap_or(0.0)
    );
    Ok(())
}

/// Rows of `--shards`: N workers at once, for each N asked for.
fn shard_rows(
    args: &Args,
    source: &RedisCluster,
    target: &RedisCluster,
    total: u64,
    nodes_cpu: &dyn Fn() -> Result<f64>,
) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for &count in &args.shards {
        for node in target.primaries() {
            flush(node)?;
        }
        eprintln!("running {count} sharded worker(s) ...");
        let servers_before = nodes_cpu()?;
        let (seconds, results) = run_shards(&source.url(), &target.url(), count, args.scan_count)?;
        let servers = nodes_cpu()? - servers_before;
        let copied = target.dbsize();
        if copied != total {
            bail!("{count} workers: target cluster holds {copied} keys, source {total}");
        }
        let client: f64 = results.iter().map(|r| r.cpu_seconds).sum();
        let overhead: Vec<String> = results
            .iter()
            .enumerate()
            .map(|(index, r)| {
                let scanned = (r.own + r.foreign).max(1);
                format!(
                    "{index}/{count}: {} of {} ({:.1}%)",
                    r.foreign,
                    r.own + r.foreign,
                    r.foreign as f64 * 100.0 / scanned as f64
                )
            })
            .collect();
        rows.push(Row {
            name: format!("ferry-shards, {count} worker(s) (cluster -> cluster)"),
            seconds,
            keys: copied,
            peak_rss_mb: results.iter().map(|r| r.peak_rss_mb).reduce(f64::max),
            cpu_total: client + servers,
            cpu_client: client,
            cpu_servers: None,
            note: format!(
                "keys scanned of other workers' slots: {}",
                overhead.join(", ")
            ),
        });
    }
    Ok(rows)
}

/// The reference: SCAN COUNT 1000, then MIGRATE ... COPY REPLACE KEYS per batch.
fn run_migrate(source: &RedisServer, target: &RedisServer, dbs: &[i64]) -> Result<String> {
    for &db in dbs {
        let mut connection = source.connection_db(db);
        let mut cursor = 0u64;
        loop {
            let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("COUNT")
                .arg(1000)
                .query(&mut connection)?;
            if !keys.is_empty() {
                let reply: Value = redis::cmd("MIGRATE")
                    .arg("127.0.0.1")
                    .arg(target.port)
                    .arg("")
                    .arg(db)
                    .arg(5000)
                    .arg("COPY")
                    .arg("REPLACE")
                    .arg("KEYS")
                    .arg(&keys)
                    .query(&mut connection)?;
                if let Value::ServerError(error) = reply {
                    bail!("MIGRATE failed: {error:?}");
                }
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    Ok(String::new())
}

/// Redis's own full sync.
fn run_replicaof(
    source: &RedisServer,
    target: &RedisServer,
    dbs: &[i64],
    total: u64,
) -> Result<String> {
    let mut connection = target.connection();
    redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(source.port)
        .exec(&mut connection)?;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query(&mut connection)?;
        if info.contains("master_link_status:up") {
            let copied: u64 = dbs
                .iter()
                .map(|db| dbsize(target, *db))
                .sum::<Result<u64>>()?;
            if copied >= total {
                break;
            }
        }
        if Instant::now() > deadline {
            bail!("replication did not finish in 10 minutes");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .exec(&mut connection)?;
    Ok(String::new())
}

/// Cluster to cluster: 3 primaries on each side, redis-ferry only (MIGRATE
/// and REPLICAOF do not copy between clusters), small dataset.
fn cluster_main(args: &Args) -> Result<()> {
    let source = RedisCluster::start();
    let target = RedisCluster::start();
    eprintln!(
        "loading {} small keys into the source cluster ...",
        args.keys
    );
    load_small_cluster(&source, args.keys)?;
    let total = source.dbsize();
    let all_nodes = || source.nodes.iter().chain(target.nodes.iter());
    let nodes_cpu = || -> Result<f64> { all_nodes().map(|n| process_cpu_seconds(n.pid())).sum() };
    if !args.shards.is_empty() {
        let rows = shard_rows(args, &source, &target, total, &nodes_cpu)?;
        print_table(args, &rows);
        return Ok(());
    }
    let mut rows = Vec::new();
    for contender in args.contenders.iter().filter(|c| c.starts_with("ferry-")) {
        for node in target.primaries() {
            flush(node)?;
        }
        eprintln!("running {contender} ...");
        let servers_before = nodes_cpu()?;
        let started = Instant::now();
        let journal_keys = contender.trim_start_matches("ferry-");
        let (peak, note, client) =
            spawn_ferry_urls(&source.url(), &target.url(), journal_keys, args.scan_count)?;
        let seconds = started.elapsed().as_secs_f64();
        let servers = nodes_cpu()? - servers_before;
        let copied = target.dbsize();
        if copied != total {
            bail!("{contender}: target cluster holds {copied} keys, source {total}");
        }
        rows.push(Row {
            name: format!("{contender} (cluster -> cluster)"),
            seconds,
            keys: copied,
            peak_rss_mb: peak,
            cpu_total: client + servers,
            cpu_client: client,
            cpu_servers: None,
            note,
        });
    }
    print_table(args, &rows);
    Ok(())
}

/// The small dataset, written to each key's primary in pipelines.
fn load_small_cluster(cluster: &RedisCluster, keys: usize) -> Result<()> {
    let nodes: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query(&mut cluster.nodes[0].connection())?;
    let topology = Topology::parse(&nodes, "127.0.0.1", cluster.nodes[0].port)?;
    let value = "x".repeat(100);
    let mut pipes: BTreeMap<u16, (redis::Pipeline, usize)> = BTreeMap::new();
    let flush_pipe = |port: u16, pipe: &redis::Pipeline| -> Result<()> {
        let node = cluster
            .nodes
            .iter()
            .find(|n| n.port == port)
            .context("node")?;
        pipe.query::<()>(&mut node.connection())?;
        Ok(())
    };
    for i in 0..keys {
        let key = format!("key:{i:010}");
        let port = topology
            .owner(key_slot(key.as_bytes()))
            .context("slot without owner")?
            .port;
        let (pipe, count) = pipes.entry(port).or_insert_with(|| (redis::pipe(), 0));
        if i % 10 == 0 {
            pipe.cmd("SET")
                .arg(&key)
                .arg(&value)
                .arg("PX")
                .arg(7_200_000)
                .ignore();
        } else {
            pipe.cmd("SET").arg(&key).arg(&value).ignore();
        }
        *count += 1;
        if *count == 10_000 {
            flush_pipe(port, pipe)?;
            *pipe = redis::pipe();
            *count = 0;
        }
    }
    for (port, (pipe, _)) in &pipes {
        flush_pipe(*port, pipe)?;
    }
    Ok(())
}

fn load_small(source: &RedisServer, keys: usize) -> Result<Vec<i64>> {
    let mut connection = source.connection();
    let value = "x".repeat(100);
    for start in (0..keys).step_by(10_000) {
        let mut pipe = redis::pipe();
        for i in start..(start + 10_000).min(keys) {
            let key = format!("key:{i:010}");
            if i % 10 == 0 {
                pipe.cmd("SET")
                    .arg(key)
                    .arg(&value)
                    .arg("PX")
                    .arg(7_200_000)
                    .ignore();
            } else {
                pipe.cmd("SET").arg(key).arg(&value).ignore();
            }
        }
        pipe.query::<()>(&mut connection)?;
    }
    Ok(vec![0])
}

fn load_mixed(source: &RedisServer, keys: usize) -> Result<Vec<i64>> {
    let dbs = vec![0, 1, 2, 3];
    for start in (0..keys).step_by(6_000) {
        let db = dbs[(start / 6_000) % dbs.len()];
        let mut connection = source.connection_db(db);
        let mut pipe = redis::pipe();
        for i in start..(start + 6_000).min(keys) {
            mixed::queue_mixed_key(&mut pipe, i);
        }
        pipe.query::<()>(&mut connection)?;
    }
    Ok(dbs)
}

/// 1,000 random keys per database: same type, same string value, TTL
/// within 10 s (DUMP payloads differ between versions, so only strings'
/// values are compared here; the tests compare every type).
fn check_sample(source: &RedisServer, target: &RedisServer, dbs: &[i64]) -> Result<()> {
    for &db in dbs {
        let mut s = source.connection_db(db);
        let mut t = target.connection_db(db);
        for _ in 0..1000 {
            let Some(key): Option<Vec<u8>> = redis::cmd("RANDOMKEY").query(&mut s)? else {
                break;
            };
            let read = |c: &mut redis::Connection| -> Result<(Option<Vec<u8>>, i64, String)> {
                let kind: String = redis::cmd("TYPE").arg(&key).query(c)?;
                let value: Option<Vec<u8>> = if kind == "string" {
                    redis::cmd("GET").arg(&key).query(c)?
                } else {
                    Some(kind.clone().into_bytes())
                };
                let pttl: i64 = redis::cmd("PTTL").arg(&key).query(c)?;
                Ok((value, pttl, kind))
            };
            let (sd, sp, sk) = read(&mut s)?;
            let (td, tp, tk) = read(&mut t)?;
            let same_value = sd == td && sk == tk;
            let same_ttl =
                (sp == -1 && tp == -1) || (sp >= 0 && tp >= 0 && (sp - tp).abs() < 10_000);
            if !same_value || !same_ttl || td.is_none() {
                bail!(
                    "sample check failed for {:?}: ttl {sp} vs {tp}",
                    String::from_utf8_lossy(&key)
                );
            }
        }
    }
    Ok(())
}

fn flush(server: &RedisServer) -> Result<()> {
    redis::cmd("FLUSHALL").exec(&mut server.connection())?;
    Ok(())
}

fn dbsize(server: &RedisServer, db: i64) -> Result<u64> {
    Ok(redis::cmd("DBSIZE").query(&mut server.connection_db(db))?)
}

fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// utime + stime of a process, in seconds.
fn process_cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_name = &stat[stat.rfind(')').context("bad /proc stat")? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    Ok(ticks / 100.0)
}

fn servers_cpu(source: &RedisServer, target: &RedisServer) -> Result<f64> {
    Ok(process_cpu_seconds(source.pid())? + process_cpu_seconds(target.pid())?)
}

fn print_table(args: &Args, rows: &[Row]) {
    let reference = rows
        .iter()
        .find(|r| r.name == "migrate")
        .map(|r| r.keys as f64 / r.seconds);
    println!(
        "\n{} dataset, {} keys; {} cores; redis-server {}\n",
        args.dataset,
        rows.first().map(|r| r.keys).unwrap_or(0),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        redis_version()
    );
    println!(
        "| contender | seconds | keys/s | vs MIGRATE | peak RSS (MB) | CPU s / M keys (all) | CPU s / M keys (client) | notes |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---|");
    for row in rows {
        let rate = row.keys as f64 / row.seconds;
        let ratio = reference
            .map(|r| format!("{:.2}x", rate / r))
            .unwrap_or_else(|| "-".into());
        let rss = row
            .peak_rss_mb
            .map(|m| format!("{m:.0}"))
            .unwrap_or_else(|| "-".into());
        let per_million = |cpu: f64| cpu / row.keys as f64 * 1e6;
        let note = if row.note.starts_with("journal ") {
            let bytes: f64 = row
                .note
                .trim_start_matches("journal ")
                .trim_end_matches(" bytes")
                .parse()
                .unwrap_or(0.0);
            format!(
                "journal {:.0} MB, {:.1} B/key",
                bytes / 1e6,
                bytes / row.keys as f64
            )
        } else {
            row.note.clone()
        };
        let note = match row.cpu_servers {
            Some((source, target)) => format!(
                "{note}{}server CPU s / M keys: source {:.1}, target {:.1}",
                if note.is_empty() { "" } else { "; " },
                per_million(source),
                per_million(target)
            ),
            None => note,
        };
        println!(
            "| {} | {:.2} | {:.0} | {} | {} | {:.2} | {:.2} | {} |",
            row.name,
            row.seconds,
            rate,
            ratio,
            rss,
            per_million(row.cpu_total),
            per_million(row.cpu_client),
            note
        );
    }
}

fn redis_version() -> String {
    std::process::Command::new(server::redis_server_bin())
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|v| {
            v.split_whitespace()
                .find(|w| w.starts_with("v="))
                .map(|w| w[2..].to_string())
        })
        .unwrap_or_default()
}
