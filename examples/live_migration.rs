//! The zero-downtime procedure, live, on throwaway servers:
//!
//!     cargo run --release --example live_migration
//!     cargo run --release --example live_migration -- --keys 200000 --hot 2000 --rate 4000
//!
//! 1. An application thread starts dual writes: every change goes to the
//!    old server (the source) first, then the same change to the new one
//!    (the target). It keeps going for the whole demonstration.
//! 2. `redis-ferry run` copies the source into the target meanwhile.
//! 3. `redis-ferry verify` compares the two servers key by key, with the
//!    application still writing, and finds nothing different.
//! 4. The application stops; the servers are compared once more.
//!
//! Add `--no-fence` to see what goes wrong without the fence: values older
//! than the source's, TTLs on one side only, keys the application deleted
//! back on the target.
//!
//! redis-server must be on PATH. Nothing outside a temporary directory is
//! touched.

#[allow(dead_code)]
#[path = "../tests/common/server.rs"]
mod server;

#[allow(dead_code)]
#[path = "../tests/common/dual_writer.rs"]
mod dual_writer;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use redis_ferry::endpoint::{Endpoint, Role};
use redis_ferry::exit::Exit;
use redis_ferry::interrupt::Shutdown;
use redis_ferry::job::{self, Launch};
use redis_ferry::options::CopyOptions;
use redis_ferry::verify::{self, VerifySettings};

use dual_writer::{DualWriter, fill_hot_keys};
use server::RedisServer;

struct Args {
    keys: usize,
    hot: usize,
    rate: u64,
    no_fence: bool,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        keys: 100_000,
        hot: 500,
        rate: 4_000,
        no_fence: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--keys" => args.keys = value()?.parse()?,
            "--hot" => args.hot = value()?.parse()?,
            "--rate" => args.rate = value()?.parse()?,
            "--no-fence" => args.no_fence = true,
            other => {
                bail!("unknown flag {other}; see the doc comment of examples/live_migration.rs")
            }
        }
    }
    Ok(args)
}

/// Used by the dual writer to wait for its first changes.
fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let source = RedisServer::start();
    let target = RedisServer::start();
    println!(
        "old server (source): {}   new server (target): {}",
        source.url(),
        target.url()
    );
    fill(&source, args.keys)?;
    fill_hot_keys(&mut source.connection(), args.hot);
    println!(
        "the source holds {} keys; the target is empty",
        args.keys + args.hot
    );

    println!(
        "\nstep 1: the application writes every change to the source, then to the target ({} changes/s over {} hot keys)",
        args.rate, args.hot
    );
    let writer = DualWriter::start(
        Box::new(source.connection()),
        Box::new(target.connection()),
        args.hot,
        args.rate,
    );
    writer.wait_for_changes(100);

    println!("step 2: redis-ferry run copies the source into the target meanwhile");
    let dir = tempfile::tempdir()?;
    // The target already holds the application's new writes: say so, as
    // `--existing replace` does on the command line.
    let launch = Launch {
        existing_explicit: true,
        ..Launch::new(dir.path().join("redis-ferry.db"), Shutdown::new())
    };
    let started = Instant::now();
    let exit = job::start(
        Endpoint::parse(Role::Source, &source.url())?,
        Endpoint::parse(Role::Target, &target.url())?,
        CopyOptions {
            no_fence: args.no_fence,
            ..CopyOptions::default()
        },
        &launch,
    )?;
    println!(
        "        run ended with exit {} after {:.1}s; the application made {} changes so far",
        exit.code(),
        started.elapsed().as_secs_f64(),
        writer.changes()
    );

    println!("\nstep 3: redis-ferry verify, with the application still writing:");
    let verdict = verify::without_journal(
        &Endpoint::parse(Role::Source, &source.url())?,
        &Endpoint::parse(Role::Target, &target.url())?,
        &VerifySettings::default(),
        &launch.shutdown,
    )?;

    let changes = writer.stop();
    println!("\nstep 4: the application stopped after {changes} changes; comparing once more:");
    let again = verify::without_journal(
        &Endpoint::parse(Role::Source, &source.url())?,
        &Endpoint::parse(Role::Target, &target.url())?,
        &VerifySettings::default(),
        &launch.shutdown,
    )?;
    if verdict == Exit::Success && again == Exit::Success {
        println!("\nthe target holds what the source holds: switch the application to it");
    } else {
        println!("\nthe servers differ (see above)");
    }
    Ok(())
}

/// Bulk keys nobody writes during the copy: strings, hashes and lists, a
/// fifth with TTLs.
fn fill(source: &RedisServer, keys: usize) -> Result<()> {
    let mut connection = source.connection();
    for chunk in (0..keys).collect::<Vec<_>>().chunks(1000) {
        let mut pipe = redis::pipe();
        for &i in chunk {
            let key = format!("bulk:{i}");
            match i % 3 {
                0 => pipe.cmd("SET").arg(&key).arg("x".repeat(100)).ignore(),
                1 => pipe
                    .cmd("HSET")
                    .arg(&key)
                    .arg("a")
                    .arg(i)
                    .arg("b")
                    .arg("y")
                    .ignore(),
                _ => pipe.cmd("RPUSH").arg(&key).arg(i).arg("z").ignore(),
            };
            if i % 5 == 0 {
                pipe.cmd("PEXPIRE").arg(&key).arg(3_600_000).ignore();
            }
        }
        pipe.query::<()>(&mut connection)?;
    }
    Ok(())
}
