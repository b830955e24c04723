//! Shared test helpers: throwaway redis-server processes (standalone and
//! cluster) on free loopback ports, the redis-ferry binary, datasets, and a
//! structural comparison of two servers' data.
//!
//! Servers run with no persistence in a temporary directory, bound to
//! 127.0.0.1, and are killed when dropped. Readiness is polled, never
//! slept for. The redis-server binary can be overridden with
//! `REDIS_SERVER_BIN` (and redis-cli with `REDIS_CLI_BIN`).

#![allow(dead_code)]

pub mod data;
pub mod dual_writer;
pub mod proxy;
pub mod server;
pub mod versions;

#[allow(unused_imports)]
pub use data::*;
#[allow(unused_imports)]
pub use dual_writer::*;
#[allow(unused_imports)]
pub use proxy::*;
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

/// stderr with each line's leading timestamp (`2026-12-01T07:22:23Z `, see
/// `src/log.rs`) taken off, so a test can compare messages exactly; tests of
/// the timestamps themselves use [`raw_stderr`].
pub fn stderr(output: &Output) -> String {
    raw_stderr(output)
        .split_inclusive('\n')
        .map(without_timestamp)
        .collect()
}

/// stderr exactly as redis-ferry wrote it.
pub fn raw_stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `2026-12-01T07:22:23Z redis-ferry: x` -> `redis-ferry: x`; other lines as they are.
pub fn without_timestamp(line: &str) -> &str {
    match line.split_once(' ') {
        Some((stamp, rest)) if is_rfc3339_utc(stamp) => rest,
        _ => line,
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ`, optionally with a fraction of a second.
pub fn is_rfc3339_utc(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() >= 20
        && bytes[4] == b'-'
        && bytes[7] == b'-'
        && bytes[10] == b'T'
        && bytes[13] == b':'
        && bytes[16] == b':'
        && text.ends_with('Z')
        && humantime::parse_rfc3339(text).is_ok()
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
/// Fails at once, with its output, when `child` (the run being watched)
/// exits before that.
#[track_caller]
pub fn wait_for_restored(child: &mut Child, journal: &str, keys: u64) {
    wait_for_outcome(child, journal, "restored", keys);
}

/// [`wait_for_restored`] for any outcome.
#[track_caller]
pub fn wait_for_outcome(child: &mut Child, journal: &str, outcome: &str, keys: u64) {
    wait_while_running(
        child,
        &format!("{keys} keys {outcome} in the journal"),
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
            status["outcomes"][outcome].as_u64().unwrap_or(0) >= keys
        },
    );
}

/// Polls `condition` while `child` runs: fails with the child's output as
/// soon as it exits without the condition holding, or after `timeout`.
#[track_caller]
pub fn wait_while_running(
    child: &mut Child,
    what: &str,
    timeout: Duration,
    mut condition: impl FnMut() -> bool,
) {
    let started = Instant::now();
    loop {
        if condition() {
            return;
        }
        if let Some(status) = child.try_wait().expect("the child can be waited for") {
            // It may have got there just before it exited.
            if condition() {
                return;
            }
            panic!(
                "redis-ferry exited ({status}) before {what}\n{}",
                drain_output(child)
            );
        }
        if started.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What an exited child wrote to its piped stdout and stderr.
fn drain_output(child: &mut Child) -> String {
    use std::io::Read;
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut pipe) = child.stdout.take() {
        let _ = pipe.read_to_string(&mut out);
    }
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut err);
    }
    format!("--- stdout ---\n{out}\n--- stderr ---\n{err}")
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
