//! Throughput of the rebuild-by-commands building blocks against DUMP +
//! RESTORE, through the library (no journal, no pipeline stages), on keys
//! of every type: the figure the cross-version target of issue 11 is about
//! ("Redis 8.2 -> Valkey 8.1 at least half the same-version throughput").
//!
//!     .ci/fetch-servers
//!     cargo run --release --example rebuild_bench -- --keys 100000
//!
//! Starts Redis 8.2 (source), Redis 8.2 and Valkey 8.1 (targets) from
//! `.ci/fetch-servers`'s cache, loads N keys (strings, hashes, lists, sets,
//! zsets, streams; a quarter with TTLs), then copies them in batches of
//! 1,000 keys:
//! - `dump-restore` (Redis 8.2 -> Redis 8.2): DUMP + PTTL pipelined on the
//!   source, RESTORE ... REPLACE pipelined on the target;
//! - `commands` (Redis 8.2 -> Valkey 8.1): `rebuild::read::read_values`
//!   (TYPE, the value, PTTL; a second round for hashes' field TTLs) on the
//!   source (types unknown, so a first round of TYPE: the writer's first
//!   round, TYPE + MEMORY USAGE for the big-key decision, gives them), then
//!   `MULTI; UNLINK k1 k2 ...; <rebuild::queue_build k1> ...; EXEC`, one
//!   transaction per batch (the writer's fence sends one per batch), on the
//!   target.
//!
//! Prints keys/s for each and the ratio.

#[path = "support/mixed.rs"]
mod mixed;
#[allow(dead_code)]
#[path = "../tests/common/server.rs"]
mod server;
#[allow(dead_code)]
#[path = "../tests/common/versions.rs"]
mod versions;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use redis::Value;
use redis_ferry::capabilities::Capabilities;
use redis_ferry::connection::NodeConnection;
use redis_ferry::endpoint::{Endpoint, Role};
use redis_ferry::interrupt::Shutdown;
use redis_ferry::options::TtlMode;
use redis_ferry::rebuild::read::{ReadProgress, SourceReads, read_values};
use redis_ferry::rebuild::{BuildLimits, queue_build};
use redis_ferry::side::Side;
use redis_ferry::wire::CommandBuffer;
use server::RedisServer;

const BATCH: usize = 1000;

fn keys_arg() -> Result<usize> {
    let mut args = std::env::args().skip(1);
    let mut keys = 100_000;
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--keys" => keys = args.next().context("--keys needs a value")?.parse()?,
            other => bail!("unknown flag {other}; see examples/rebuild_bench.rs"),
        }
    }
    Ok(keys)
}

fn load(source: &RedisServer, keys: usize) -> Result<Vec<Vec<u8>>> {
    let mut connection = source.connection();
    let mut names = Vec::with_capacity(keys);
    for start in (0..keys).step_by(BATCH) {
        let mut pipe = redis::pipe();
        for i in start..(start + BATCH).min(keys) {
            let key = mixed::queue_mixed_key(&mut pipe, i);
            names.push(key.into_bytes());
        }
        pipe.query::<()>(&mut connection)?;
    }
    Ok(names)
}

fn connect(server: &RedisServer, role: Role) -> Result<NodeConnection> {
    NodeConnection::open(
        &Endpoint::parse(role, &server.url())?,
        Duration::from_secs(60),
        Shutdown::new(),
    )
}

fn check_all_ok(replies: &[Value], what: &str) -> Result<()> {
    for reply in replies {
        match reply {
            Value::ServerError(error) => bail!("{what}: {error:?}"),
            Value::Array(items) => check_all_ok(items, what)?,
            _ => {}
        }
    }
    Ok(())
}

fn dump_restore(source: &RedisServer, target: &RedisServer, keys: &[Vec<u8>]) -> Result<f64> {
    let mut from = connect(source, Role::Source)?;
    let mut to = connect(target, Role::Target)?;
    let started = Instant::now();
    for batch in keys.chunks(BATCH) {
        let mut reads = CommandBuffer::new();
        for key in batch {
            reads.cmd("DUMP").arg(key);
            reads.cmd("PTTL").arg(key);
        }
        let replies = from.pipeline(&reads)?;
        let mut writes = CommandBuffer::new();
        for (key, pair) in batch.iter().zip(replies.chunks(2)) {
            let (Value::BulkString(payload), Value::Int(ttl)) = (&pair[0], &pair[1]) else {
                bail!("unexpected DUMP/PTTL replies {pair:?}");
            };
            writes
                .cmd("RESTORE")
                .arg(key)
                .arg((*ttl).max(0))
                .arg(payload.as_slice())
                .arg("REPLACE");
        }
        check_all_ok(&to.pipeline(&writes)?, "RESTORE")?;
    }
    Ok(keys.len() as f64 / started.elapsed().as_secs_f64())
}

fn by_commands(source: &RedisServer, target: &RedisServer, keys: &[Vec<u8>]) -> Result<f64> {
    let endpoint = Endpoint::parse(Role::Source, &source.url())?;
    let mut side = Side::connect(&endpoint, Duration::from_secs(60), &Shutdown::new())?;
    let mut to = connect(target, Role::Target)?;
    let seed = side.seed_address().to_owned();
    let source_caps = Capabilities::detect(side.connection(&seed)?)?;
    let target_caps = Capabilities::detect(&mut to)?;
    let reads = SourceReads::new(&source_caps, TtlMode::Relative);
    let started = Instant::now();
    let mut reading = Duration::ZERO;
    for batch in keys.chunks(BATCH) {
        let read_started = Instant::now();
        let values = read_values(&mut side, 0, batch, vec![None; batch.len()], reads)?;
        reading += read_started.elapsed();
        let mut writes = CommandBuffer::new();
        for (key, read) in batch.iter().zip(values) {
            let ReadProgress::Done { value, ttl } = read else {
                bail!("{:?}: {read:?}", String::from_utf8_lossy(key));
            };
            writes.cmd("MULTI");
            writes.cmd("UNLINK").arg(key);
            queue_build(
                &mut writes,
                key,
                &value,
                ttl,
                &target_caps,
                BuildLimits::default(),
            )?;
            writes.cmd("EXEC");
        }
        check_all_ok(&to.pipeline(&writes)?, "rebuild")?;
    }
    let total = started.elapsed();
    eprintln!(
        "commands: reading {:.2}s, writing {:.2}s",
        reading.as_secs_f64(),
        (total - reading).as_secs_f64()
    );
    Ok(keys.len() as f64 / total.as_secs_f64())
}

fn main() -> Result<()> {
    let keys = keys_arg()?;
    let source = versions::REDIS_8_2.start();
    let same = versions::REDIS_8_2.start();
    let other = versions::VALKEY_8_1.start();
    let names = load(&source, keys)?;
    let restore_rate = dump_restore(&source, &same, &names)?;
    let commands_rate = by_commands(&source, &other, &names)?;
    let count = |server: &RedisServer| -> Result<u64> {
        Ok(redis::cmd("DBSIZE").query(&mut server.connection())?)
    };
    if count(&same)? != keys as u64 || count(&other)? != keys as u64 {
        bail!("a target is missing keys");
    }
    println!(
        "{keys} keys of every type, batches of {BATCH}, one connection per side (2-core machine, shared):"
    );
    println!("| path | keys/s |");
    println!("|---|---:|");
    println!("| dump-restore, Redis 8.2 -> Redis 8.2 | {restore_rate:.0} |");
    println!("| commands, Redis 8.2 -> Valkey 8.1 | {commands_rate:.0} |");
    println!(
        "commands / dump-restore: {:.2}",
        commands_rate / restore_rate
    );
    Ok(())
}
