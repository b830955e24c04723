//! The big-keys benchmark: redis-ferry's chunked copier against MIGRATE on
//! the same big keys, with a pinger measuring how long each server stalls.
//!
//!     cargo run --release --example bigkeys_bench                  # the dataset
//!     cargo run --release --example bigkeys_bench -- --scale 0.1   # a tenth of it
//!     cargo run --release --example bigkeys_bench -- --contenders chunked
//!
//! Dataset at `--scale 1` (the issue's): a 4,000,000-field hash, a
//! 2,000,000-element list, an 800,000-member set and zset, a 200 MB string
//! and a 200,000-entry stream with a consumer group. Starts a throwaway
//! source and target (`redis-server` on PATH, or `--server PATH`), loads the
//! source, then for each contender empties the target and copies every big
//! key, while a thread pings both servers every 5 ms.
//!
//! Contenders:
//! - `chunked`: `rebuild::chunked::copy_big_key` with its defaults (1,000
//!   elements or 1 MiB per chunk), in this process; its peak RSS growth is
//!   measured (VmHWM reset before the copy).
//! - `migrate`: `MIGRATE host port key 0 600000 COPY REPLACE`, one key at a
//!   time (the server-side DUMP + RESTORE that today's path resembles).
//! - `ferry-run`: the whole job, `redis-ferry run` through the library in a
//!   child process (its peak RSS is its own), journal on disk: the pipeline
//!   finds the big keys (MEMORY USAGE) and copies them in chunks.
//!
//! Printed per contender and key: seconds, MB/s (of the source's MEMORY
//! USAGE), the longest PING round trip on the source, the target, and an
//! idle control server (pinged alongside: on a busy machine the pinger
//! itself waits for a core, and the control shows how much of a "stall"
//! that is), and redis-ferry's peak RSS growth. A first row pings with
//! nothing running. Each contender's copy is checked (the target's sizes
//! equal the source's).

#[path = "support/pinger.rs"]
mod pinger;
#[allow(dead_code)]
#[path = "../tests/common/server.rs"]
mod server;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use redis_ferry::capabilities::Capabilities;
use redis_ferry::connection::NodeConnection;
use redis_ferry::endpoint::{Endpoint, Role};
use redis_ferry::interrupt::Shutdown;
use redis_ferry::outcome::Outcome;
use redis_ferry::rebuild::chunked::{BigKeyEnds, BigKeyOptions, copy_big_key};
use server::{RedisServer, ServerProgram};

struct Args {
    scale: f64,
    contenders: Vec<String>,
    server: Option<String>,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        scale: 1.0,
        contenders: vec!["chunked".into(), "ferry-run".into(), "migrate".into()],
        server: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--scale" => args.scale = value()?.parse()?,
            "--contenders" => args.contenders = value()?.split(',').map(str::to_string).collect(),
            "--server" => args.server = Some(value()?),
            other => {
                bail!("unknown flag {other}; see the doc comment of examples/bigkeys_bench.rs")
            }
        }
    }
    Ok(args)
}

/// The big keys and how many elements each gets at scale 1.
const KEYS: [(&str, usize); 6] = [
    ("big:hash", 4_000_000),
    ("big:list", 2_000_000),
    ("big:set", 800_000),
    ("big:zset", 800_000),
    ("big:string", 200),
    ("big:stream", 200_000),
];

fn scaled(count: usize, scale: f64) -> usize {
    ((count as f64 * scale) as usize).max(1)
}

fn load(server: &RedisServer, scale: f64) -> Result<()> {
    let mut connection = server.connection();
    for (key, count) in KEYS {
        let count = scaled(count, scale);
        let started = Instant::now();
        if key == "big:string" {
            let piece = vec![b's'; 1024 * 1024];
            for _ in 0..count {
                redis::cmd("APPEND")
                    .arg(key)
                    .arg(&piece)
                    .exec(&mut connection)?;
            }
        } else {
            for start in (0..count).step_by(1000) {
                let end = (start + 1000).min(count);
                let mut pipe = redis::pipe();
                for i in start..end {
                    match key {
                        "big:hash" => pipe
                            .cmd("HSET")
                            .arg(key)
                            .arg(format!("field:{i}"))
                            .arg(format!("value:{i}")),
                        "big:list" => pipe.cmd("RPUSH").arg(key).arg(format!("element:{i}")),
                        "big:set" => pipe.cmd("SADD").arg(key).arg(format!("member:{i}")),
                        "big:zset" => pipe
                            .cmd("ZADD")
                            .arg(key)
                            .arg(i as f64 / 3.0)
                            .arg(format!("member:{i}")),
                        _ => pipe
                            .cmd("XADD")
                            .arg(key)
                            .arg("*")
                            .arg("n")
                            .arg(i)
                            .arg("payload")
                            .arg("x".repeat(20)),
                    }
                    .ignore();
                }
                pipe.exec(&mut connection)?;
            }
        }
        eprintln!(
            "loaded {key} ({count} {}) in {:.1}s",
            if key == "big:string" {
                "MiB"
            } else {
                "elements"
            },
            started.elapsed().as_secs_f64()
        );
    }
    redis::cmd("XGROUP")
        .arg("CREATE")
        .arg("big:stream")
        .arg("workers")
        .arg("0")
        .exec(&mut connection)?;
    redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("workers")
        .arg("w1")
        .arg("COUNT")
        .arg(1000)
        .arg("STREAMS")
        .arg("big:stream")
        .arg(">")
        .exec(&mut connection)?;
    Ok(())
}

/// `HLEN` / `LLEN` / ... of every big key, to check a copy.
fn sizes(server: &RedisServer) -> Result<Vec<i64>> {
    let mut connection = server.connection();
    let commands = ["HLEN", "LLEN", "SCARD", "ZCARD", "STRLEN", "XLEN"];
    KEYS.iter()
        .zip(commands)
        .map(|((key, _), command)| Ok(redis::cmd(command).arg(*key).query(&mut connection)?))
        .collect()
}

fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(field))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn connect(server: &RedisServer, role: Role) -> Result<NodeConnection> {
    let endpoint = Endpoint::parse(role, &server.url())?;
    NodeConnection::open(&endpoint, Duration::from_secs(60), Shutdown::new())
}

/// One contender's copier, one key at a time.
#[allow(clippy::large_enum_variant)] // one per contender, made once
enum Copier {
    Chunked {
        from: NodeConnection,
        to: NodeConnection,
        source_caps: Capabilities,
        target_caps: Capabilities,
        options: BigKeyOptions,
    },
    Migrate {
        connection: redis::Connection,
        target_port: u16,
    },
}

impl Copier {
    fn new(name: &str, source: &RedisServer, target: &RedisServer) -> Result<Copier> {
        Ok(match name {
            "chunked" => {
                let mut from = connect(source, Role::Source)?;
                let mut to = connect(target, Role::Target)?;
                Copier::Chunked {
                    source_caps: Capabilities::detect(&mut from)?,
                    target_caps: Capabilities::detect(&mut to)?,
                    from,
                    to,
                    options: BigKeyOptions::new("bench"),
                }
            }
            "migrate" => Copier::Migrate {
                connection: source.connection(),
                target_port: target.port,
            },
            other => bail!("unknown contender {other}: chunked or migrate"),
        })
    }

    fn copy(&mut self, key: &str) -> Result<()> {
        match self {
            Copier::Chunked {
                from,
                to,
                source_caps,
                target_caps,
                options,
            } => {
                let mut ends = BigKeyEnds {
                    source: from,
                    source_caps,
                    source_db: 0,
                    target: to,
                    target_caps,
                    target_db: 0,
                };
                let copied = copy_big_key(&mut ends, key.as_bytes(), options)?;
                if copied.result.outcome != Outcome::Restored {
                    bail!(
                        "{key}: {:?} {:?}",
                        copied.result.outcome,
                        copied.result.error
                    );
                }
            }
            Copier::Migrate {
                connection,
                target_port,
            } => {
                let reply: String = redis::cmd("MIGRATE")
                    .arg("127.0.0.1")
                    .arg(*target_port)
                    .arg(key)
                    .arg(0)
                    .arg(600_000)
                    .arg("COPY")
                    .arg("REPLACE")
                    .query(connection)?;
                if reply != "OK" {
                    bail!("MIGRATE {key}: {reply}");
                }
            }
        }
        Ok(())
    }
}

/// What copying one key (or all of them) measured.
#[derive(Default, Clone, Copy)]
struct Measure {
    seconds: f64,
    stall_source: Duration,
    stall_target: Duration,
    /// An idle third server pinged meanwhile: how much of a "stall" is
    /// this machine being busy (the pinger not scheduled) rather than a
    /// server blocked.
    stall_control: Duration,
    peak_growth_mb: u64,
}

/// The source, the target, and an idle control server.
struct Servers {
    source: RedisServer,
    target: RedisServer,
    control: RedisServer,
}

fn measure(servers: &Servers, copy: impl FnOnce() -> Result<()>) -> Result<Measure> {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let before = status_kb("VmRSS:");
    let pinger = pinger::Pinger::start(&[
        ("source", servers.source.url()),
        ("target", servers.target.url()),
        ("control", servers.control.url()),
    ]);
    let started = Instant::now();
    copy()?;
    let seconds = started.elapsed().as_secs_f64();
    let stalls = pinger.stop();
    Ok(Measure {
        seconds,
        stall_source: stalls[0].1.longest,
        stall_target: stalls[1].1.longest,
        stall_control: stalls[2].1.longest,
        peak_growth_mb: status_kb("VmHWM:").saturating_sub(before) / 1024,
    })
}

fn memory_mb(server: &RedisServer, key: &str) -> Result<f64> {
    let bytes: i64 = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(key)
        .arg("SAMPLES")
        .arg(0)
        .query(&mut server.connection())?;
    Ok(bytes as f64 / (1024.0 * 1024.0))
}

fn row(contender: &str, what: &str, mb: f64, m: &Measure) {
    // MIGRATE runs in the servers: this process's memory says nothing.
    let peak = if contender.starts_with("chunked") || contender.starts_with("ferry") {
        format!("{} MB", m.peak_growth_mb)
    } else {
        "-".to_string()
    };
    println!(
        "| {contender} | {what} | {:.2} | {:.0} | {} ms | {} ms | {} ms | {peak} |",
        m.seconds,
        mb / m.seconds.max(1e-9),
        m.stall_source.as_millis(),
        m.stall_target.as_millis(),
        m.stall_control.as_millis(),
    );
}

/// `--ferry-child SOURCE TARGET`: runs the job here and prints its peak RSS.
fn ferry_child(source: &str, target: &str) -> Result<()> {
    let dir = tempfile::tempdir_in(".")?;
    let launch = redis_ferry::job::Launch {
        existing_explicit: true,
        ..redis_ferry::job::Launch::new(dir.path().join("bigkeys.db"), Shutdown::new())
    };
    let exit = redis_ferry::job::start(
        Endpoint::parse(Role::Source, source)?,
        Endpoint::parse(Role::Target, target)?,
        redis_ferry::options::CopyOptions::default(),
        &launch,
    )?;
    if exit != redis_ferry::exit::Exit::Success {
        bail!("redis-ferry exited {}", exit.code());
    }
    println!("FERRY_PEAK_MB {}", status_kb("VmHWM:") / 1024);
    Ok(())
}

/// Runs [`ferry_child`] in a child process; returns its peak RSS in MB.
fn run_ferry(source: &RedisServer, target: &RedisServer) -> Result<u64> {
    let output = std::process::Command::new(std::env::current_exe()?)
        .args(["--ferry-child", &source.url(), &target.url()])
        .stderr(std::process::Stdio::null())
        .output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!("the redis-ferry child failed: {text}");
    }
    text.lines()
        .find_map(|line| line.strip_prefix("FERRY_PEAK_MB "))
        .context("the child printed no peak RSS")?
        .trim()
        .parse()
        .context("the child's peak RSS")
}

fn main() -> Result<()> {
    let mut raw = std::env::args().skip(1);
    if raw.next().as_deref() == Some("--ferry-child") {
        let (source, target) = (raw.next().context("SOURCE")?, raw.next().context("TARGET")?);
        return ferry_child(&source, &target);
    }
    let args = parse_args()?;
    let program = match &args.server {
        Some(binary) => ServerProgram {
            binary: binary.clone(),
            debug_command_flag: false,
        },
        None => ServerProgram::default_redis(),
    };
    let servers = Servers {
        source: RedisServer::start_program(&program, &[]),
        target: RedisServer::start_program(&program, &[]),
        control: RedisServer::start_program(&program, &[]),
    };
    let (source, target) = (&servers.source, &servers.target);
    load(source, args.scale)?;
    let expected = sizes(source)?;
    let value_mb = {
        let mut connection = source.connection();
        let mut total = 0i64;
        for (key, _) in KEYS {
            total += redis::cmd("MEMORY")
                .arg("USAGE")
                .arg(key)
                .arg("SAMPLES")
                .arg(0)
                .query::<i64>(&mut connection)?;
        }
        total / (1024 * 1024)
    };
    println!(
        "big keys at scale {} ({} MB of MEMORY USAGE on the source); machine: {} cores",
        args.scale,
        value_mb,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    println!();
    println!(
        "| contender | key | seconds | MB/s | longest stall source | longest stall target | control (idle server) | peak RSS growth |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    let idle = measure(&servers, || {
        std::thread::sleep(Duration::from_secs(3));
        Ok(())
    })?;
    row("nothing (3 s)", "-", 0.0, &idle);
    for contender in &args.contenders {
        redis::cmd("FLUSHALL").exec(&mut target.connection())?;
        if contender == "ferry-run" {
            let mut peak = 0;
            let mut m = measure(&servers, || {
                peak = run_ferry(source, target)?;
                Ok(())
            })?;
            m.peak_growth_mb = peak;
            row("ferry-run (peak RSS)", "all", value_mb as f64, &m);
            if sizes(target)? != expected {
                bail!("ferry-run: the target's sizes differ from the source's");
            }
            continue;
        }
        let mut copier = Copier::new(contender, source, target)?;
        let mut total = Measure::default();
        for (key, _) in KEYS {
            let mb = memory_mb(source, key)?;
            let m = measure(&servers, || copier.copy(key))?;
            row(contender, key, mb, &m);
            total.seconds += m.seconds;
            total.stall_source = total.stall_source.max(m.stall_source);
            total.stall_target = total.stall_target.max(m.stall_target);
            total.stall_control = total.stall_control.max(m.stall_control);
            total.peak_growth_mb = total.peak_growth_mb.max(m.peak_growth_mb);
        }
        row(contender, "all", value_mb as f64, &total);
        if sizes(target)? != expected {
            bail!("{contender}: the target's sizes differ from the source's");
        }
    }
    Ok(())
}
