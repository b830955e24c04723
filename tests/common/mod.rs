//! Shared test helpers: throwaway redis-server processes (standalone and
//! cluster) on free loopback ports, the redis-ferry binary, datasets, and a
//! structural comparison of two servers' data.
//!
//! Servers run with no persistence in a temporary directory, bound to
//! 127.0.0.1, and are killed when dropped. Readiness is polled, never
//! slept for. The redis-server binary can be overridden with
//! `REDIS_SERVER_BIN` (and redis-cli with `REDIS_CLI_BIN`).

#![allow(dead_code, unused_imports)]

pub mod data;
pub mod server;
pub mod versions;

pub use data::*;
pub use server::*;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The redis-ferry binary built for these tests.
pub fn ferry_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_redis-ferry"))
}

/// A `redis-ferry` command with the password variables cleared, so the
/// developer's environment never leaks into a test.
pub fn ferry_command(args: &[&str]) -> Command {
    let mut command = Command::new(ferry_bin());
    command
        .args(args)
        .env_remove("REDIS_FERRY_SOURCE_PASSWORD")
        .env_remove("REDIS_FERRY_TARGET_PASSWORD")
        .env("NO_COLOR", "1");
    command
}

/// Runs redis-ferry to the end.
pub fn ferry(args: &[&str]) -> Output {
    ferry_command(args).output().expect("redis-ferry runs")
}

/// Runs redis-ferry in the background (for Ctrl-C, SIGKILL and status tests).
pub fn spawn_ferry(args: &[&str]) -> Child {
    ferry_command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("redis-ferry starts")
}

/// Everything a failed assertion needs to show.
pub fn describe(output: &Output) -> String {
    format!(
        "status: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Asserts the exit code, showing the output otherwise.
#[track_caller]
pub fn assert_exit(output: &Output, code: i32) {
    assert_eq!(output.status.code(), Some(code), "{}", describe(output));
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A fresh temporary directory and a journal path inside it.
pub fn journal_in(dir: &tempfile::TempDir) -> String {
    dir.path().join("journal.db").display().to_string()
}

/// Polls `condition` until it holds or `timeout` passes (generous timeouts:
/// the machine running the tests may be small and busy).
#[track_caller]
pub fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        if started.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `redis-ferry run --source SOURCE --target TARGET --journal JOURNAL
/// --progress off EXTRA...`, to the end.
pub fn run_job(source: &str, target: &str, journal: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "run",
        "--source",
        source,
        "--target",
        target,
        "--journal",
        journal,
        "--progress",
        "off",
    ];
    args.extend_from_slice(extra);
    ferry(&args)
}

/// `redis-ferry resume` on `journal`, which must finish with exit 0.
#[track_caller]
pub fn resume_to_completion(journal: &str) {
    let output = ferry(&["resume", "--journal", journal, "--progress", "off"]);
    assert_exit(&output, 0);
}

/// A `run` paced to `rate` keys/s in small batches, in the background: slow
/// enough to interrupt, kill or reshard in the middle.
pub fn spawn_paced_run(source: &str, target: &str, journal: &str, rate: u32) -> Child {
    let rate = rate.to_string();
    spawn_ferry(&[
        "run",
        "--source",
        source,
        "--target",
        target,
        "--journal",
        journal,
        "--rate",
        &rate,
        "--scan-count",
        "100",
        "--progress",
        "log",
    ])
}

/// Waits until the journal (read with `status --json`, as an operator
/// would from a second terminal) records at least `keys` keys restored.
pub fn wait_for_restored(journal: &str, keys: u64) {
    wait_until(
        &format!("{keys} keys restored in the journal"),
        Duration::from_secs(120),
        || {
            if !Path::new(journal).exists() {
                return false;
            }
            let output = ferry(&["status", "--journal", journal, "--json"]);
            if output.status.code() != Some(0) {
                return false;
            }
            let status: serde_json::Value =
                serde_json::from_slice(&output.stdout).unwrap_or_default();
            status["outcomes"]["restored"].as_u64().unwrap_or(0) >= keys
        },
    );
}

/// `status --json` of a journal, parsed.
pub fn status_json(journal: &str) -> serde_json::Value {
    let output = ferry(&["status", "--journal", journal, "--json"]);
    assert_exit(&output, 0);
    serde_json::from_slice(&output.stdout).expect("status --json prints JSON")
}

/// Sends a signal to a child process.
pub fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{signal} failed");
}

/// Waits for a child to exit and collects its output.
pub fn finish(child: Child) -> Output {
    child.wait_with_output().expect("redis-ferry exits")
}

pub fn file_bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_default()
}
