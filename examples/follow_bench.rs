//! How fast a source may change while `run --follow` keeps the target in
//! sync: writers on the source at increasing rates, and the lag (how long
//! the oldest change not yet on the target has waited) sampled every 100 ms
//! from the job's journal, as `redis-ferry status` reads it.
//!
//!     cargo run --release --example follow_bench
//!     cargo run --release --example follow_bench -- --rates 5000,10000,20000,40000 --seconds 10
//!
//! Starts a throwaway source and target (redis-server on PATH), loads
//! `--keys` strings, starts a following job through the library, then for
//! each rate writes SETs of random keys (pipelined, paced) for `--seconds`
//! seconds, and prints per rate the changes achieved, the lag's median,
//! 99th percentile and maximum, and whether the job kept up (lag under a
//! second throughout, and in sync within a few seconds after the writes
//! stop).

#[allow(dead_code)]
#[path = "../tests/common/server.rs"]
mod server;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use redis_ferry::endpoint::{Endpoint, Role};
use redis_ferry::interrupt::Shutdown;
use redis_ferry::job::{self, Launch};
use redis_ferry::journal::JournalReader;
use redis_ferry::options::CopyOptions;
use server::RedisServer;

struct Args {
    keys: usize,
    rates: Vec<u64>,
    seconds: u64,
    writers: usize,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        keys: 100_000,
        rates: vec![5_000, 10_000, 20_000, 30_000, 40_000],
        seconds: 10,
        writers: 2,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--keys" => args.keys = value()?.parse()?,
            "--rates" => {
                args.rates = value()?
                    .split(',')
                    .map(|r| r.parse())
                    .collect::<Result<_, _>>()?
            }
            "--seconds" => args.seconds = value()?.parse()?,
            "--writers" => args.writers = value()?.parse()?,
            other => bail!("unknown flag {other}; see the doc comment of examples/follow_bench.rs"),
        }
    }
    Ok(args)
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let source = RedisServer::start_with(&["--maxmemory", "0"]);
    let target = RedisServer::start_with(&["--maxmemory", "0"]);
    load(&source, args.keys)?;
    let dir = tempfile::tempdir_in(".")?;
    let journal_path = dir.path().join("follow.db");
    let shutdown = Shutdown::new();
    let job = {
        let launch = Launch::new(journal_path.clone(), shutdown.clone());
        let (source_url, target_url) = (source.url(), target.url());
        std::thread::spawn(move || {
            job::start(
                Endpoint::parse(Role::Source, &source_url)?,
                Endpoint::parse(Role::Target, &target_url)?,
                CopyOptions {
                    follow: true,
                    ..CopyOptions::default()
                },
                &launch,
            )
        })
    };
    wait_for(&journal_path, Duration::from_secs(300), |row| {
        row.0 == "following"
    })?;
    println!(
        "\nfollowing {} keys; writers: {}; {} s per rate; 2 cores; redis-server {}\n",
        args.keys,
        args.writers,
        args.seconds,
        redis_version(&source)?
    );
    println!(
        "| asked changes/s | achieved changes/s | lag p50 | lag p99 | lag max | in sync after | kept up |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---|");
    for &rate in &args.rates {
        let (achieved, lags) = write_at(&source, &journal_path, rate, &args)?;
        let settle = Instant::now();
        let synced = wait_for(&journal_path, Duration::from_secs(60), |row| row.1).is_ok();
        let settled = settle.elapsed().as_secs_f64();
        let mut sorted = lags.clone();
        sorted.sort_unstable();
        let pick = |q: f64| {
            sorted
                .get(((sorted.len() as f64 - 1.0) * q) as usize)
                .copied()
                .unwrap_or(0)
        };
        let max = sorted.last().copied().unwrap_or(0);
        let kept_up = max < 1_000 && synced && settled < 5.0;
        println!(
            "| {rate} | {achieved:.0} | {} ms | {} ms | {max} ms | {} | {} |",
            pick(0.5),
            pick(0.99),
            if synced {
                format!("{settled:.1} s")
            } else {
                "not in 60 s".into()
            },
            if kept_up { "yes" } else { "no" }
        );
    }
    shutdown.request();
    let exit = job.join().expect("the job thread")?;
    eprintln!("job ended with exit {}", exit.code());
    Ok(())
}

/// Writes SETs of random keys at `rate` per second for the configured
/// time, sampling the lag every 100 ms; returns the achieved rate and the
/// lag samples (ms).
fn write_at(
    source: &RedisServer,
    journal: &std::path::Path,
    rate: u64,
    args: &Args,
) -> Result<(f64, Vec<u64>)> {
    let per_writer = rate / args.writers as u64;
    let started = Instant::now();
    let until = started + Duration::from_secs(args.seconds);
    let writers: Vec<_> = (0..args.writers)
        .map(|w| {
            let mut connection = source.connection();
            let keys = args.keys;
            std::thread::spawn(move || -> Result<u64> {
                let mut state: u64 = 0x2545_f491_4f6c_dd1d ^ (w as u64 + 1);
                let mut written = 0u64;
                let begun = Instant::now();
                while Instant::now() < until {
                    let mut pipe = redis::pipe();
                    for _ in 0..100 {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        let key = format!("key:{}", state % keys as u64);
                        pipe.cmd("SET").arg(key).arg(state).ignore();
                    }
                    pipe.query::<()>(&mut connection)?;
                    written += 100;
                    let due = Duration::from_secs_f64(written as f64 / per_writer as f64);
                    if let Some(ahead) = due.checked_sub(begun.elapsed()) {
                        std::thread::sleep(ahead);
                    }
                }
                Ok(written)
            })
        })
        .collect();
    let mut lags = Vec::new();
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
        if let Some((_, _, lag)) = follow_row(journal)? {
            lags.push(lag);
        }
    }
    let mut written = 0;
    for writer in writers {
        written += writer.join().expect("a writer thread")?;
    }
    Ok((written as f64 / started.elapsed().as_secs_f64(), lags))
}

/// (phase, in sync, lag ms) from the journal, as `status` reads it.
fn follow_row(journal: &std::path::Path) -> Result<Option<(String, bool, u64)>> {
    if !journal.exists() {
        return Ok(None);
    }
    let Ok(reader) = JournalReader::open(journal) else {
        return Ok(None);
    };
    Ok(reader
        .follow()?
        .map(|row| (row.phase, row.in_sync, row.lag_ms)))
}

fn wait_for(
    journal: &std::path::Path,
    timeout: Duration,
    condition: impl Fn((String, bool)) -> bool,
) -> Result<()> {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if let Some((phase, in_sync, _)) = follow_row(journal)?
            && condition((phase, in_sync))
        {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("timed out")
}

fn load(source: &RedisServer, keys: usize) -> Result<()> {
    let mut connection = source.connection();
    for chunk in (0..keys).collect::<Vec<_>>().chunks(1000) {
        let mut pipe = redis::pipe();
        for &i in chunk {
            pipe.cmd("SET").arg(format!("key:{i}")).arg(i).ignore();
        }
        pipe.query::<()>(&mut connection)?;
    }
    Ok(())
}

fn redis_version(server: &RedisServer) -> Result<String> {
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query(&mut server.connection())?;
    Ok(info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .unwrap_or("?")
        .trim()
        .to_string())
}
