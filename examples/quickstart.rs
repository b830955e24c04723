//! A migration in one command, to see redis-ferry work:
//!
//!     cargo run --release --example quickstart
//!
//! Starts two throwaway redis-servers (redis-server must be on PATH), fills
//! the source with a few thousand keys of every type, some with TTLs, in
//! several databases, migrates them with the library (its log lines on
//! stderr, as an unattended run prints them), and prints the job's report
//! (the same as `redis-ferry report`).
//!
//! The servers live in a temporary directory and are gone when it ends; the
//! journal stays in `./quickstart-journal/redis-ferry.db` (replaced by the
//! next quickstart), so the commands it prints at the end work afterwards.

#[allow(dead_code)]
#[path = "../tests/common/server.rs"]
mod server;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use redis_ferry::endpoint::{Endpoint, Role};
use redis_ferry::interrupt::Shutdown;
use redis_ferry::job::{self, Launch};
use redis_ferry::options::CopyOptions;
use redis_ferry::progress::{ProgressMode, ProgressSettings};
use redis_ferry::report::{self, Format, ReportSettings};
use server::RedisServer;

/// Where the journal is kept after the quickstart ends.
const JOURNAL_DIR: &str = "quickstart-journal";

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

    let journal = fresh_journal(Path::new(JOURNAL_DIR))?;
    let launch = Launch {
        progress: ProgressSettings::new(ProgressMode::Log, Duration::from_secs(1)),
        ..Launch::new(journal, Shutdown::new())
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
            journals: vec![launch.journal.clone()],
            format: Format::Text,
            output: None,
            source: None,
            target: None,
        },
        &launch.shutdown,
    )?;
    print_what_next(&launch.journal);
    Ok(())
}

/// `./quickstart-journal/redis-ferry.db`, with the previous quickstart's
/// journal removed (a journal holds one job: `run` refuses a used one).
fn fresh_journal(dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let journal = dir.join("redis-ferry.db");
    for suffix in ["", "-wal", "-shm", ".lock"] {
        let file = PathBuf::from(format!("{}{suffix}", journal.display()));
        match std::fs::remove_file(&file) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                return Err(error).with_context(|| format!("cannot remove {}", file.display()));
            }
            _ => {}
        }
    }
    Ok(journal)
}

fn print_what_next(journal: &Path) {
    let journal = journal.display();
    println!();
    println!("The two servers are gone now; the journal stays in {journal}. Try:");
    println!("  redis-ferry status --journal {journal}");
    println!("  redis-ferry report --journal {journal} --format csv | head");
    println!(
        "  redis-ferry report --journal {journal}   (server counts show as unknown: the servers are gone)"
    );
    println!(
        "(redis-ferry on PATH: `cargo install --path .`; or write `cargo run --release --` in its place.)"
    );
    println!("The next quickstart replaces it; `rm -r {JOURNAL_DIR}` removes it.");
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
