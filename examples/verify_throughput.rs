//! How fast `verify` checks small keys:
//!
//!     cargo run --release --example verify_throughput [KEYS]
//!
//! Starts two throwaway redis-servers (redis-server must be on PATH), fills
//! both with the same KEYS (default 1,000,000) small strings
//! (`DEBUG POPULATE KEYS key 100`: 100-byte values), runs a full `verify`
//! through the library and prints keys per second. The servers run on the
//! same machine as redis-ferry, so all three share its cores.

#[allow(dead_code)]
#[path = "../tests/common/server.rs"]
mod server;

use anyhow::{Context, Result};
use redis_ferry::endpoint::{Endpoint, Role};
use redis_ferry::interrupt::Shutdown;
use redis_ferry::verify::{self, VerifySettings};
use server::RedisServer;

fn main() -> Result<()> {
    let keys: u64 = match std::env::args().nth(1) {
        Some(text) => text.parse().context("KEYS must be a number")?,
        None => 1_000_000,
    };
    println!("starting two throwaway redis-servers...");
    let source = RedisServer::start();
    let target = RedisServer::start();
    for server in [&source, &target] {
        redis::cmd("DEBUG")
            .arg("POPULATE")
            .arg(keys)
            .arg("key")
            .arg(100)
            .exec(&mut server.connection())?;
    }
    println!("both hold {keys} keys with 100-byte values; verifying...");
    let report = verify::compare_servers(
        &Endpoint::parse(Role::Source, &source.url())?,
        &Endpoint::parse(Role::Target, &target.url())?,
        &VerifySettings::default(),
        &Shutdown::new(),
    )?;
    print!("{}", report.to_text());
    println!(
        "throughput: {:.0} keys/s ({} keys in {:.1}s)",
        report.checked as f64 / report.elapsed.as_secs_f64(),
        report.checked,
        report.elapsed.as_secs_f64()
    );
    Ok(())
}
