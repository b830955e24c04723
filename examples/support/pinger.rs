//! A pinger: one thread per server sending `PING` every few milliseconds on
//! its own connection and keeping the longest round trip, which is how long
//! the server could not answer anyone (a big DUMP, RESTORE or DEL blocks
//! every client for that long). For benchmarks: `examples/bigkeys_bench.rs`
//! uses it, and `examples/bench.rs` can (`#[path = "support/pinger.rs"]`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often each server is pinged.
pub const PING_EVERY: Duration = Duration::from_millis(5);

/// What a pinger saw on one server.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stalls {
    /// The longest PING round trip.
    pub longest: Duration,
    pub pings: u64,
}

/// Pings running in the background until [`Pinger::stop`].
pub struct Pinger {
    stop: Arc<AtomicBool>,
    threads: Vec<(String, JoinHandle<Stalls>)>,
}

impl Pinger {
    /// Starts one pinging thread per `(name, redis URL)`. Connects first,
    /// here: a connection opened while a server is blocked would hide the
    /// stall.
    pub fn start(servers: &[(&str, String)]) -> Pinger {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = servers
            .iter()
            .map(|(name, url)| {
                let stop = stop.clone();
                let mut connection = redis::Client::open(url.as_str())
                    .expect("pinger URL")
                    .get_connection_with_timeout(Duration::from_secs(10))
                    .expect("pinger connects");
                let _: redis::RedisResult<String> = redis::cmd("PING").query(&mut connection);
                (
                    name.to_string(),
                    std::thread::spawn(move || ping_until(&mut connection, &stop)),
                )
            })
            .collect();
        Pinger { stop, threads }
    }

    /// Stops the threads; the stalls of each server, by name.
    pub fn stop(self) -> Vec<(String, Stalls)> {
        self.stop.store(true, Ordering::SeqCst);
        self.threads
            .into_iter()
            .map(|(name, thread)| (name, thread.join().unwrap_or_default()))
            .collect()
    }
}

fn ping_until(connection: &mut redis::Connection, stop: &AtomicBool) -> Stalls {
    let mut stalls = Stalls::default();
    while !stop.load(Ordering::SeqCst) {
        let sent = Instant::now();
        let _: redis::RedisResult<String> = redis::cmd("PING").query(connection);
        stalls.longest = stalls.longest.max(sent.elapsed());
        stalls.pings += 1;
        std::thread::sleep(PING_EVERY);
    }
    stalls
}
