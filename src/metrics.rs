//! Prometheus metrics: a global registry of atomics that the work feeds as
//! it goes, and `--metrics-addr HOST:PORT`, a small HTTP server (tiny_http)
//! that shows them as Prometheus text at `/metrics` while `run`, `resume`,
//! `retry` or `verify` runs.
//!
//! Who feeds what:
//! - [`crate::progress`] sees every journaled batch: outcomes, keys, bytes
//!   ([`record_results`]), and the rate and ETA ([`set_progress`]); `verify`
//!   reports what it checked ([`set_verify`]). The pipeline needs no change.
//! - the job's state ([`set_state`]): `starting` when the endpoint opens,
//!   `running` once the work begins, how it ended as the command returns;
//!   follow mode sets `following` and calls [`set_follow`] with what is
//!   pending and how far behind it is.
//!
//! Counters count this process's work, as Prometheus expects (a restarted
//! process starts again at 0; `rate()` copes); the job's totals across runs
//! are the `redis_ferry_job_keys_*` gauges.

use std::fmt::Write as _;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow};

use crate::outcome::{KeyResult, Outcome};

/// The job's state as `redis_ferry_job_info{state="..."}` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Starting,
    Running,
    Following,
    Interrupted,
    Completed,
    Failed,
}

impl State {
    const ALL: [State; 6] = [
        State::Starting,
        State::Running,
        State::Following,
        State::Interrupted,
        State::Completed,
        State::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Running => "running",
            State::Following => "following",
            State::Interrupted => "interrupted",
            State::Completed => "completed",
            State::Failed => "failed",
        }
    }
}

/// Unknown, for the gauges that may not have a value (ETA, expected keys).
const UNKNOWN: u64 = u64::MAX;

/// Every metric, as atomics: written from the work's threads, read by the
/// HTTP thread, no lock.
pub struct Registry {
    outcomes: [AtomicU64; 5],
    scanned: AtomicU64,
    bytes: AtomicU64,
    state: AtomicU8,
    keys_done: AtomicU64,
    keys_expected: AtomicU64,
    /// f64 bits.
    rate: AtomicU64,
    /// Whole seconds, or [`UNKNOWN`].
    eta_seconds: AtomicU64,
    following: AtomicBool,
    follow_pending: AtomicU64,
    /// f64 bits.
    follow_lag: AtomicU64,
    started_unix: AtomicU64,
    /// `--shard`: keys SCAN returned that belong to other workers' slots.
    foreign_keys: AtomicU64,
    /// `--shard I/N` as `(I << 32) | N`, or [`UNKNOWN`] when not sharded.
    shard: AtomicU64,
}

impl Registry {
    pub const fn new() -> Registry {
        Registry {
            outcomes: [const { AtomicU64::new(0) }; 5],
            scanned: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            state: AtomicU8::new(0),
            keys_done: AtomicU64::new(0),
            keys_expected: AtomicU64::new(UNKNOWN),
            rate: AtomicU64::new(0),
            eta_seconds: AtomicU64::new(UNKNOWN),
            following: AtomicBool::new(false),
            follow_pending: AtomicU64::new(0),
            follow_lag: AtomicU64::new(0),
            started_unix: AtomicU64::new(0),
            foreign_keys: AtomicU64::new(0),
            shard: AtomicU64::new(UNKNOWN),
        }
    }

    pub fn record_results(&self, results: &[KeyResult]) {
        for result in results {
            self.outcomes[outcome_index(result.outcome)].fetch_add(1, Ordering::Relaxed);
            if result.outcome == Outcome::Restored
                && let Some(size) = result.size_bytes
            {
                self.bytes
                    .fetch_add(u64::try_from(size).unwrap_or(0), Ordering::Relaxed);
            }
        }
        self.scanned
            .fetch_add(results.len() as u64, Ordering::Relaxed);
    }

    pub fn set_progress(&self, done: u64, expected: Option<u64>, rate: f64, eta: Option<Duration>) {
        self.keys_done.store(done, Ordering::Relaxed);
        self.keys_expected
            .store(expected.unwrap_or(UNKNOWN), Ordering::Relaxed);
        self.rate.store(rate.to_bits(), Ordering::Relaxed);
        self.eta_seconds.store(
            eta.map(|eta| eta.as_secs()).unwrap_or(UNKNOWN),
            Ordering::Relaxed,
        );
    }

    pub fn set_verify(&self, checked: u64, differing: u64) {
        self.scanned.store(checked, Ordering::Relaxed);
        self.outcomes[outcome_index(Outcome::Mismatch)].store(differing, Ordering::Relaxed);
    }

    pub fn set_state(&self, state: State) {
        let index = State::ALL.iter().position(|s| *s == state).unwrap_or(0);
        self.state.store(index as u8, Ordering::Relaxed);
        if state != State::Following {
            self.following.store(false, Ordering::Relaxed);
        }
    }

    pub fn state(&self) -> State {
        State::ALL[usize::from(self.state.load(Ordering::Relaxed)) % State::ALL.len()]
    }

    pub fn set_follow(&self, pending_keys: u64, lag: Duration) {
        self.follow_pending.store(pending_keys, Ordering::Relaxed);
        self.follow_lag
            .store(lag.as_secs_f64().to_bits(), Ordering::Relaxed);
        self.following.store(true, Ordering::Relaxed);
    }

    /// `--shard`: `keys` that SCAN returned belong to other workers.
    pub fn add_foreign_keys(&self, keys: u64) {
        self.foreign_keys.fetch_add(keys, Ordering::Relaxed);
    }

    /// Keys of other workers' slots SCAN returned to this process so far.
    pub fn foreign_keys(&self) -> u64 {
        self.foreign_keys.load(Ordering::Relaxed)
    }

    /// This process is worker `index` of `count` (`--shard`).
    pub fn set_shard(&self, index: u32, count: u32) {
        self.shard
            .store(u64::from(index) << 32 | u64::from(count), Ordering::Relaxed);
    }

    fn mark_started(&self) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.started_unix.store(now, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let load = |atomic: &AtomicU64| atomic.load(Ordering::Relaxed);
        header(
            &mut out,
            "redis_ferry_keys_total",
            "counter",
            "Keys journaled by this process, by outcome (verify: mismatch = keys found different).",
        );
        for outcome in Outcome::ALL {
            let value = load(&self.outcomes[outcome_index(outcome)]);
            let _ = writeln!(
                out,
                "redis_ferry_keys_total{{outcome=\"{}\"}} {value}",
                outcome.as_str()
            );
        }
        counter(
            &mut out,
            "redis_ferry_keys_scanned_total",
            "Keys this process went through: returned by SCAN (run, resume), paged from the journal (retry), or checked (verify).",
            load(&self.scanned),
        );
        counter(
            &mut out,
            "redis_ferry_bytes_copied_total",
            "Bytes of the restored keys' DUMP payloads written by this process.",
            load(&self.bytes),
        );
        header(
            &mut out,
            "redis_ferry_job_info",
            "gauge",
            "The state of the job this process drives: 1 for the current state, 0 for the others.",
        );
        let current = self.state();
        for state in State::ALL {
            let _ = writeln!(
                out,
                "redis_ferry_job_info{{state=\"{}\"}} {}",
                state.as_str(),
                u8::from(state == current)
            );
        }
        gauge(
            &mut out,
            "redis_ferry_job_keys_done",
            "Keys the job has done in all, earlier runs included.",
            load(&self.keys_done) as f64,
        );
        if let Some(expected) = known(load(&self.keys_expected)) {
            gauge(
                &mut out,
                "redis_ferry_job_keys_expected",
                "Keys the job expects in all (INFO keyspace when it started).",
                expected as f64,
            );
        }
        gauge(
            &mut out,
            "redis_ferry_rate_keys_per_second",
            "Keys per second of this process's own work.",
            f64::from_bits(load(&self.rate)),
        );
        if let Some(eta) = known(load(&self.eta_seconds)) {
            gauge(
                &mut out,
                "redis_ferry_eta_seconds",
                "Seconds this process needs for the keys left, at its rate so far.",
                eta as f64,
            );
        }
        if self.following.load(Ordering::Relaxed) {
            gauge(
                &mut out,
                "redis_ferry_follow_pending_keys",
                "Keys changed on the source and not applied to the target yet.",
                load(&self.follow_pending) as f64,
            );
            gauge(
                &mut out,
                "redis_ferry_follow_lag_seconds",
                "How long the oldest pending change has waited.",
                f64::from_bits(load(&self.follow_lag)),
            );
        }
        if let Some(shard) = known(load(&self.shard)) {
            header(
                &mut out,
                "redis_ferry_shard_info",
                "gauge",
                "This worker's --shard: index (from 0) and count of workers.",
            );
            let _ = writeln!(
                out,
                "redis_ferry_shard_info{{index=\"{}\",count=\"{}\"}} 1",
                shard >> 32,
                shard & u64::from(u32::MAX)
            );
            counter(
                &mut out,
                "redis_ferry_shard_foreign_keys_scanned_total",
                "Keys SCAN returned to this worker that belong to other workers' slots (scanned, not copied): the cost of sharing nodes.",
                load(&self.foreign_keys),
            );
        }
        gauge(
            &mut out,
            "redis_ferry_start_time_seconds",
            "When this process started serving metrics (Unix time).",
            load(&self.started_unix) as f64,
        );
        out
    }
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new()
    }
}

fn outcome_index(outcome: Outcome) -> usize {
    Outcome::ALL.iter().position(|o| *o == outcome).unwrap_or(0)
}

fn known(value: u64) -> Option<u64> {
    (value != UNKNOWN).then_some(value)
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    header(out, name, "counter", help);
    let _ = writeln!(out, "{name} {value}");
}

fn gauge(out: &mut String, name: &str, help: &str, value: f64) {
    header(out, name, "gauge", help);
    let _ = writeln!(out, "{name} {}", prometheus_float(value));
}

/// Prometheus floats: integers without a fraction, others to 3 places.
fn prometheus_float(value: f64) -> String {
    if value.is_finite() && value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.0}")
    } else if value.is_finite() {
        format!("{value:.3}")
    } else {
        "NaN".to_string()
    }
}

/// The process's registry.
static REGISTRY: Registry = Registry::new();

pub fn registry() -> &'static Registry {
    &REGISTRY
}

/// A journaled batch: its outcomes, keys and bytes.
pub fn record_results(results: &[KeyResult]) {
    REGISTRY.record_results(results);
}

/// Keys done in all, expected, this run's rate and the ETA.
pub fn set_progress(done: u64, expected: Option<u64>, rate: f64, eta: Option<Duration>) {
    REGISTRY.set_progress(done, expected, rate, eta);
}

/// `verify`: keys checked so far, and how many differ.
pub fn set_verify(checked: u64, differing: u64) {
    REGISTRY.set_verify(checked, differing);
}

pub fn set_state(state: State) {
    REGISTRY.set_state(state);
}

/// While following: keys changed on the source and not applied yet, and
/// how long the oldest of them has waited. Shown until the state changes
/// from `following`.
pub fn set_follow(pending_keys: u64, lag: Duration) {
    REGISTRY.set_follow(pending_keys, lag);
}

/// `--metrics-addr`: `HOST:PORT` (a name, an IPv4 address or `[IPv6]`).
pub fn parse_addr(text: &str) -> Result<String, String> {
    let port = text
        .rsplit_once(':')
        .map(|(host, port)| (host, port.parse::<u16>()))
        .filter(|(host, _)| !host.is_empty());
    match port {
        Some((_, Ok(_))) => Ok(text.to_string()),
        _ => Err(format!(
            "{text:?} is not HOST:PORT (for example 127.0.0.1:9187, or 0.0.0.0:9187 to be scraped from other hosts)"
        )),
    }
}

/// The endpoint while it serves; dropping it stops the server.
pub struct MetricsServer {
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
    address: SocketAddr,
}

impl MetricsServer {
    /// The address it listens on (the real port when 0 was asked for).
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Listens on `address` now (so a port in use stops the command before any
/// work) and serves [`registry`] at `/metrics` from a thread of its own.
pub fn serve(address: &str) -> Result<MetricsServer> {
    let socket = resolve(address)?;
    let server = tiny_http::Server::http(socket).map_err(|error| bind_error(address, &*error))?;
    let address = server
        .server_addr()
        .to_ip()
        .context("the metrics endpoint has no IP address")?;
    REGISTRY.mark_started();
    REGISTRY.set_state(State::Starting);
    let server = Arc::new(server);
    let serving = Arc::clone(&server);
    let thread = std::thread::Builder::new()
        .name("ferry-metrics".into())
        .spawn(move || answer_requests(&serving))
        .context("cannot start the metrics thread")?;
    crate::log::event(
        crate::log::Level::Info,
        &format!("metrics at http://{address}/metrics"),
        &[
            ("event", serde_json::json!("metrics")),
            ("address", serde_json::json!(address.to_string())),
        ],
    );
    Ok(MetricsServer {
        server,
        thread: Some(thread),
        address,
    })
}

fn resolve(address: &str) -> Result<SocketAddr> {
    address
        .to_socket_addrs()
        .with_context(|| format!("--metrics-addr {address}: cannot resolve the host"))?
        .next()
        .ok_or_else(|| anyhow!("--metrics-addr {address}: the host has no address"))
}

/// A sentence for the operator, chosen by the error's kind.
fn bind_error(address: &str, error: &(dyn std::error::Error + 'static)) -> anyhow::Error {
    let kind = error.downcast_ref::<std::io::Error>().map(|e| e.kind());
    let advice = match kind {
        Some(std::io::ErrorKind::AddrInUse) => {
            "the address is already in use (another redis-ferry, or an exporter?); choose another port"
        }
        Some(std::io::ErrorKind::AddrNotAvailable) => {
            "this host has no such address; use 127.0.0.1, 0.0.0.0 or one of its own addresses"
        }
        Some(std::io::ErrorKind::PermissionDenied) => {
            "permission denied (ports below 1024 need privileges); choose a port above 1024"
        }
        _ => "choose another address",
    };
    match kind {
        Some(
            std::io::ErrorKind::AddrInUse
            | std::io::ErrorKind::AddrNotAvailable
            | std::io::ErrorKind::PermissionDenied,
        ) => anyhow!("cannot serve metrics on --metrics-addr {address}: {advice}"),
        _ => anyhow!("cannot serve metrics on --metrics-addr {address}: {error}; {advice}"),
    }
}

fn answer_requests(server: &tiny_http::Server) {
    // `incoming_requests` ends when the server is unblocked (on drop).
    for request in server.incoming_requests() {
        let response = respond(request.method(), request.url());
        // A scraper that hung up is its own problem.
        let _ = request.respond(response);
    }
}

fn respond(method: &tiny_http::Method, url: &str) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    let path = url.split('?').next().unwrap_or_default();
    let (status, body, content_type) = match (method, path) {
        (tiny_http::Method::Get, "/metrics") => (
            200,
            REGISTRY.render(),
            "text/plain; version=0.0.4; charset=utf-8",
        ),
        (tiny_http::Method::Get, _) => (
            404,
            "redis-ferry serves its metrics at /metrics\n".to_string(),
            "text/plain; charset=utf-8",
        ),
        _ => (
            405,
            "only GET is served\n".to_string(),
            "text/plain; charset=utf-8",
        ),
    };
    let header = tiny_http::Header::from_bytes(&b"Content-Type"[..], content_type.as_bytes())
        .expect("a fixed header is valid");
    tiny_http::Response::from_string(body)
        .with_status_code(status)
        .with_header(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(outcome: Outcome, size: Option<i64>) -> KeyResult {
        KeyResult {
            key: b"k".to_vec(),
            outcome,
            ttl_ms: None,
            size_bytes: size,
            error: None,
            method: None,
        }
    }

    fn value_of<'a>(text: &'a str, series: &str) -> Option<&'a str> {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
    }

    #[test]
    fn a_sharded_worker_shows_its_shard_and_scan_overhead() {
        let registry = Registry::new();
        assert!(!registry.render().contains("redis_ferry_shard"));
        registry.set_shard(1, 3);
        registry.add_foreign_keys(7);
        registry.add_foreign_keys(5);
        let text = registry.render();
        assert_eq!(
            value_of(&text, "redis_ferry_shard_info{index=\"1\",count=\"3\"}"),
            Some("1")
        );
        assert_eq!(
            value_of(&text, "redis_ferry_shard_foreign_keys_scanned_total"),
            Some("12")
        );
    }

    #[test]
    fn batches_become_counters_and_the_state_a_state_set() {
        let registry = Registry::new();
        registry.record_results(&[
            result(Outcome::Restored, Some(100)),
            result(Outcome::Restored, Some(20)),
            result(Outcome::Failed, None),
            result(Outcome::Expired, None),
        ]);
        registry.set_state(State::Running);
        registry.set_progress(1004, Some(2000), 11_754.731, Some(Duration::from_secs(85)));
        let text = registry.render();
        assert_eq!(
            value_of(&text, "redis_ferry_keys_total{outcome=\"restored\"}"),
            Some("2")
        );
        assert_eq!(
            value_of(&text, "redis_ferry_keys_total{outcome=\"failed\"}"),
            Some("1")
        );
        assert_eq!(value_of(&text, "redis_ferry_keys_scanned_total"), Some("4"));
        assert_eq!(
            value_of(&text, "redis_ferry_bytes_copied_total"),
            Some("120")
        );
        assert_eq!(
            value_of(&text, "redis_ferry_job_info{state=\"running\"}"),
            Some("1")
        );
        assert_eq!(
            value_of(&text, "redis_ferry_job_info{state=\"completed\"}"),
            Some("0")
        );
        assert_eq!(
            value_of(&text, "redis_ferry_rate_keys_per_second"),
            Some("11754.731")
        );
        assert_eq!(value_of(&text, "redis_ferry_eta_seconds"), Some("85"));
        assert_eq!(
            value_of(&text, "redis_ferry_job_keys_expected"),
            Some("2000")
        );
        assert_eq!(value_of(&text, "redis_ferry_follow_pending_keys"), None);
    }

    #[test]
    fn follow_gauges_show_while_following_only() {
        let registry = Registry::new();
        registry.set_state(State::Following);
        registry.set_follow(42, Duration::from_millis(1500));
        let text = registry.render();
        assert_eq!(
            value_of(&text, "redis_ferry_follow_pending_keys"),
            Some("42")
        );
        assert_eq!(
            value_of(&text, "redis_ferry_follow_lag_seconds"),
            Some("1.500")
        );
        registry.set_state(State::Completed);
        assert_eq!(
            value_of(&registry.render(), "redis_ferry_follow_pending_keys"),
            None
        );
    }

    #[test]
    fn unknown_eta_and_total_are_left_out_rather_than_invented() {
        let registry = Registry::new();
        registry.set_progress(5, None, 0.0, None);
        let text = registry.render();
        assert_eq!(value_of(&text, "redis_ferry_eta_seconds"), None);
        assert_eq!(value_of(&text, "redis_ferry_job_keys_expected"), None);
        assert_eq!(value_of(&text, "redis_ferry_job_keys_done"), Some("5"));
    }

    #[test]
    fn addresses_need_a_host_and_a_port() {
        assert!(parse_addr("127.0.0.1:9187").is_ok());
        assert!(parse_addr("[::1]:9187").is_ok());
        assert!(parse_addr("localhost:0").is_ok());
        assert!(parse_addr("9187").is_err());
        assert!(parse_addr(":9187").is_err());
        assert!(parse_addr("host:http").is_err());
    }
}
