//! A migration in one command, to see redis-ferry work:
//!
//!     cargo run --release --example quickstart
//!
//! Starts two throwaway redis-servers (redis-server must be on PATH), fills
//! the source with a few thousand keys of every type, some with TTLs, in
//! several databases, migrates them with the library, and prints the job's
//! report (the same as `redis-ferry report`). Nothing outside a temporary directory is touched.

#[allow(dead_code)]
#[path = "../tests/common/server.rs"]
mod server;

use anyhow::{Context, Result};
use redis_ferry::endpoint::{Endpoint, Role};
use redis_ferry::interrupt::Shutdown;
use redis_ferry::job::{self, Launch};
use redis_ferry::options::CopyOptions;
use redis_ferry::progress::ProgressMode;
use redis_ferry::report::{self, Format, ReportSettings};
use server::RedisServer;

fn main() -> Result<()> {
    println!("starting two throwaway redis-servers...");
    let source = RedisServer::start();
    let target = RedisServer::start();
    let keys = fill(&source)?;
    println!(
        "source {} holds {keys} keys in dbs 0, 1 and 2; target {} is empty",
        source.url(),
        target.url()
    );

    let dir = tempfile::tempdir()?;
    let launch = Launch {
        journal: dir.path().join("redis-ferry.db"),
        progress: ProgressMode::Off,
        shutdown: Shutdown::new(),
    };
    let exit = job::start(
        Endpoint::parse(Role::Source, &source.url())?,
        Endpoint::parse(Role::Target, &target.url())?,
        CopyOptions::default(),
        &launch,
    )?;
    println!("exit status: {}\n", exit.code());

    // The same report `redis-ferry report --journal ...` prints.
    report::run(
        ReportSettings {
            journal: launch.journal.clone(),
            format: Format::Text,
            output: None,
            source: None,
            target: None,
        },
        &launch.shutdown,
    )?;
    Ok(())
}

/// A few thousand keys of every type in three databases; a third of them
/// with TTLs from seconds to hours.
fn fill(server: &RedisServer) -> Result<usize> {
    let mut written = 0;
    for db in 0..3i64 {
        let mut connection = server.connection_db(db);
        let mut pipe = redis::pipe();
        for i in 0..400 {
            let ttl_ms = (i % 3 == 0).then_some(5_000 + i * 9_000);
            let k = |kind: &str| format!("{kind}:{db}:{i}");
            pipe.cmd("SET")
                .arg(k("string"))
                .arg(format!("value {i}"))
                .ignore();
            pipe.cmd("RPUSH")
                .arg(k("list"))
                .arg(&["a", "b", "c"])
                .ignore();
            pipe.cmd("SADD").arg(k("set")).arg(&["x", "y"]).ignore();
            pipe.cmd("ZADD")
                .arg(k("zset"))
                .arg(1.5)
                .arg("one")
                .arg(2)
                .arg("two")
                .ignore();
            pipe.cmd("HSET").arg(k("hash")).arg("field").arg(i).ignore();
            pipe.cmd("XADD")
                .arg(k("stream"))
                .arg("*")
                .arg("event")
                .arg(i)
                .ignore();
            if let Some(ttl) = ttl_ms {
                for kind in ["string", "list", "set", "zset", "hash", "stream"] {
                    pipe.cmd("PEXPIRE").arg(k(kind)).arg(ttl).ignore();
                }
            }
            written += 6;
        }
        pipe.query::<()>(&mut connection)
            .context("filling the source")?;
    }
    Ok(written)
}
