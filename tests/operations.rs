//! What the operator on call sees of an unattended run: log lines with
//! timestamps (text) or as JSON objects, a start line, progress soon and at
//! the chosen interval, Prometheus metrics scraped over HTTP while a job
//! runs, `--rate` for a later run, completions and the man page.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Output};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// A background redis-ferry whose stderr is read line by line as it comes
/// (the metrics address is only known from its log), and kept.
struct Watched {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Watched {
    fn spawn(args: &[&str]) -> Watched {
        let mut child = spawn_ferry(args);
        let stderr = child.stderr.take().expect("stderr is piped");
        let (sender, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        Watched {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a stderr line containing `needle`; fails fast with what was
    /// seen if redis-ferry exits first.
    fn wait_for_line(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            match self.lines.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => {
                    if let Ok(Some(status)) = self.child.try_wait() {
                        self.drain();
                        panic!(
                            "redis-ferry exited ({status}) before printing {needle:?}:\n{}",
                            self.seen.join("\n")
                        );
                    }
                }
            }
        }
        panic!(
            "no line with {needle:?} within 120 s:\n{}",
            self.seen.join("\n")
        );
    }

    fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn drain(&mut self) {
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
            self.seen.push(line);
        }
    }

    /// Waits for the exit; returns the code and every stderr line.
    fn finish(mut self) -> (Option<i32>, Vec<String>) {
        let mut stdout = String::new();
        if let Some(mut out) = self.child.stdout.take() {
            let _ = out.read_to_string(&mut stdout);
        }
        let status = self.child.wait().expect("redis-ferry exits");
        for line in self.lines.iter() {
            self.seen.push(line);
        }
        (status.code(), self.seen)
    }
}

/// `GET path` over plain HTTP/1.0: (status code, body).
fn http_get(address: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(address).expect("the metrics endpoint accepts");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response
        .split_once("\r\n\r\n")
        .expect("an HTTP response has a head and a body");
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    (code, body.to_string())
}

/// Prometheus text: every sample line, as (series, value); comments must be
/// `# HELP` / `# TYPE`; a value that does not parse fails the test.
fn parse_prometheus(text: &str) -> Vec<(String, f64)> {
    let mut samples = Vec::new();
    for line in text.lines().filter(|line| !line.is_empty()) {
        if line.starts_with('#') {
            assert!(
                line.starts_with("# HELP ") || line.starts_with("# TYPE "),
                "unexpected comment: {line}"
            );
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("`series value`");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("not a number in {line:?}"));
        samples.push((series.to_string(), value));
    }
    samples
}

fn sample(samples: &[(String, f64)], series: &str) -> Option<f64> {
    samples
        .iter()
        .find(|(name, _)| name == series)
        .map(|(_, value)| *value)
}

fn the_metrics_address(line: &str) -> String {
    line.split("http://")
        .nth(1)
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string()
}

#[test]
fn metrics_are_scraped_over_http_while_a_job_runs() {
    let source = RedisServer::start();
    let target = RedisServer::start();
    fill_strings(&mut source.connection(), "k", 3000, Some(10));
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);
    let mut run = Watched::spawn(&[
        "run",
        "--source",
        &source.url(),
        "--target",
        &target.url(),
        "--journal",
        &journal,
        "--rate",
        "1000",
        "--scan-count",
        "100",
        "--progress",
        "off",
        "--metrics-addr",
        "127.0.0.1:0",
    ]);
    let address = the_metrics_address(&run.wait_for_line("metrics at http://"));

    // Scrape until the job shows copied keys, as Prometheus would.
    let mut samples = Vec::new();
    wait_until(
        "restored keys in the metrics",
        Duration::from_secs(120),
        || {
            assert!(run.is_running(), "the run ended before it was scraped");
            let (code, body) = http_get(&address, "/metrics");
            assert_eq!(code, 200, "{body}");
            samples = parse_prometheus(&body);
            sample(&samples, "redis_ferry_keys_total{outcome=\"restored\"}").unwrap_or(0.0) > 0.0
        },
    );
    let restored = sample(&samples, "redis_ferry_keys_total{outcome=\"restored\"}").unwrap();
    let scanned = sample(&samples, "redis_ferry_keys_scanned_total").unwrap();
    assert!(
        scanned >= restored,
        "scanned {scanned}, restored {restored}"
    );
    assert!(restored < 3000.0, "scraped mid-run, not after: {restored}");
    // A DUMP payload ends with a 2-byte version and an 8-byte checksum.
    assert!(
        sample(&samples, "redis_ferry_bytes_copied_total").unwrap() >= restored * 10.0,
        "{samples:?}"
    );
    for outcome in ["restored", "expired", "skipped", "failed", "mismatch"] {
        let series = format!("redis_ferry_keys_total{{outcome=\"{outcome}\"}}");
        assert!(sample(&samples, &series).is_some(), "{series} missing");
    }
    assert_eq!(
        sample(&samples, "redis_ferry_job_info{state=\"running\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&samples, "redis_ferry_job_info{state=\"completed\"}"),
        Some(0.0)
    );
    assert_eq!(
        sample(&samples, "redis_ferry_job_keys_expected"),
        Some(3000.0)
    );
    assert!(sample(&samples, "redis_ferry_rate_keys_per_second").unwrap() > 0.0);
    assert!(
        sample(&samples, "redis_ferry_eta_seconds").is_some(),
        "{samples:?}"
    );
    assert_eq!(
        sample(&samples, "redis_ferry_follow_pending_keys"),
        None,
        "not following"
    );
    assert_eq!(http_get(&address, "/").0, 404);

    let (code, lines) = run.finish();
    assert_eq!(code, Some(0), "{}", lines.join("\n"));
    assert!(
        TcpStream::connect(&address).is_err(),
        "the endpoint closes with the job"
    );
}

#[test]
fn a_metrics_address_in_use_stops_the_command_before_the_job_starts() {
    let source = RedisServer::start();
    let target = RedisServer::start();
    fill_strings(&mut source.connection(), "k", 10, None);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);
    let output = run_job(
        &source.url(),
        &target.url(),
        &journal,
        &["--metrics-addr", &address],
    );
    assert_exit(&output, 1);
    let text = stderr(&output);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.contains(&format!("cannot serve metrics on --metrics-addr {address}"))
            && text.contains("already in use")
            && text.contains("choose another port"),
        "{text}"
    );
    assert!(
        !std::path::Path::new(&journal).exists(),
        "no job was started"
    );
    assert_eq!(dbsize(&mut target.connection(), 0), 0);

    let output = run_job(
        &source.url(),
        &target.url(),
        &journal,
        &["--metrics-addr", "9187"],
    );
    assert_exit(&output, 2);
    assert!(
        stderr(&output).contains("is not HOST:PORT"),
        "{}",
        describe(&output)
    );
}

/// Every stderr line of a JSON-mode command, parsed; fails on any other line.
fn json_lines(output: &Output) -> Vec<Value> {
    raw_stderr(output)
        .lines()
        .map(|line| {
            let value: Value = serde_json::from_str(line).unwrap_or_else(|e| {
                panic!("not a JSON line ({e}): {line:?}\n{}", describe(output))
            });
            let ts = value["ts"].as_str().unwrap_or_default();
            assert!(is_rfc3339_utc(ts), "ts {ts:?} in {line}");
            assert!(
                ["info", "warn", "error"].contains(&value["level"].as_str().unwrap_or_default()),
                "{line}"
            );
            assert!(value["msg"].is_string(), "{line}");
            value
        })
        .collect()
}

#[test]
fn every_stderr_line_of_a_json_run_is_an_object_with_ts_level_msg_and_fields() {
    let source = RedisServer::start();
    let target = RedisServer::start();
    fill_strings(&mut source.connection(), "k", 2000, None);
    fill_strings(&mut source.connection_db(1), "one", 500, None);
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);
    let output = ferry(&[
        "--log-format",
        "json",
        "run",
        "--source",
        &source.url(),
        "--target",
        &target.url(),
        "--journal",
        &journal,
        "--rate",
        "1000",
        "--scan-count",
        "100",
        "--progress",
        "log",
        "--log-interval",
        "1",
    ]);
    assert_exit(&output, 0);
    let lines = json_lines(&output);
    let start = lines
        .iter()
        .find(|line| line["event"] == "start")
        .expect("a start line");
    assert_eq!(start["command"], "run");
    assert_eq!(start["source"], source.url());
    assert_eq!(start["target"], target.url());
    assert_eq!(
        start["dbs"],
        serde_json::json!([{"db": 0, "target_db": 0}, {"db": 1, "target_db": 1}])
    );
    assert_eq!(start["keys_expected"], 2500);
    assert_eq!(start["journal"], journal.as_str());
    // 2500 keys at 1000 keys/s take over two seconds: lines every second.
    let progress: Vec<&Value> = lines
        .iter()
        .filter(|line| line["event"] == "progress")
        .collect();
    assert!(progress.len() >= 2, "{lines:?}");
    let last = progress.last().unwrap();
    assert_eq!(last["keys_expected"], 2500);
    let done = last["keys_done"].as_u64().unwrap();
    assert!(done > 0 && done <= 2500, "{last}");
    assert_eq!(
        last["restored"].as_u64().unwrap() + last["failed"].as_u64().unwrap(),
        done
    );
    assert!(
        last["rate_keys_per_second"].as_f64().unwrap() > 0.0,
        "{last}"
    );
    assert!(last["msg"].as_str().unwrap().contains(" keys/s"), "{last}");

    // A command that cannot run ends with one error object, with its exit code.
    let output = ferry(&[
        "status",
        "--journal",
        "/nonexistent/x.db",
        "--log-format",
        "json",
    ]);
    assert_exit(&output, 1);
    let lines = json_lines(&output);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["level"], "error");
    assert_eq!(lines[0]["exit_code"], 1);
    assert!(
        lines[0]["msg"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/x.db")
    );

    // And so does a usage error clap finds.
    let output = ferry(&["run", "--log-format", "json", "--no-such-flag"]);
    assert_exit(&output, 2);
    let lines = json_lines(&output);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["exit_code"], 2);
    assert!(lines[0]["msg"].as_str().unwrap().contains("--no-such-flag"));
}

#[test]
fn an_unattended_run_logs_a_start_line_and_progress_with_timestamps_early() {
    let source = RedisServer::start();
    let target = RedisServer::start();
    fill_strings(&mut source.connection(), "k", 3000, None);
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);
    // `--progress bar` with stderr on a pipe: log lines instead, and with
    // the default 10 s interval the first still comes after a second, well
    // within this run of at least 3 s (3000 keys at 1000 keys/s).
    let output = ferry(&[
        "run",
        "--source",
        &source.url(),
        "--target",
        &target.url(),
        "--journal",
        &journal,
        "--rate",
        "1000",
        "--scan-count",
        "100",
        "--progress",
        "bar",
    ]);
    assert_exit(&output, 0);
    let raw = raw_stderr(&output);
    for line in raw.lines() {
        let (stamp, rest) = line.split_once(' ').unwrap_or_default();
        assert!(is_rfc3339_utc(stamp), "no timestamp: {line:?}");
        assert!(rest.starts_with("redis-ferry: "), "{line:?}");
    }
    let text = stderr(&output);
    assert!(
        text.contains(
            "stderr is not a terminal (or --log-format json), so progress comes as log lines"
        ),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "redis-ferry: run started: {} -> {}, db 0, ~3000 keys expected, journal {journal}",
            source.url(),
            target.url()
        )),
        "{text}"
    );
    let progress: Vec<&str> = text
        .lines()
        .filter(|line| line.contains(" keys done"))
        .collect();
    assert!(
        !progress.is_empty(),
        "no progress line in a 3 s run:\n{text}"
    );
    let first = progress[0];
    assert!(first.contains("of ~3000 keys done ("), "{first}");
    assert!(first.contains(" keys/s, 0 failed"), "{first}");
    assert!(!first.contains(".0000"), "{first}");
}

#[test]
fn resume_takes_a_rate_for_this_run_only_and_says_so() {
    let source = RedisServer::start();
    let target = RedisServer::start();
    fill_strings(&mut source.connection(), "k", 5000, None);
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_in(&dir);
    let mut run = Watched::spawn(&[
        "run",
        "--source",
        &source.url(),
        "--target",
        &target.url(),
        "--journal",
        &journal,
        "--rate",
        "2000",
        "--scan-count",
        "100",
        "--progress",
        "log",
        "--log-interval",
        "1",
    ]);
    // The first progress line comes after about a second: ~2000 keys in.
    run.wait_for_line(" keys done");
    signal(&run.child, "INT");
    let (code, lines) = run.finish();
    assert_eq!(code, Some(130), "{}", lines.join("\n"));
    let left = 5000
        - status_json(&journal)["outcomes"]["restored"]
            .as_u64()
            .unwrap();
    assert!(
        left >= 1500,
        "the run was not stopped early: {left} keys left"
    );

    let started = Instant::now();
    let output = ferry(&[
        "resume",
        "--journal",
        &journal,
        "--rate",
        "1000",
        "--progress",
        "off",
    ]);
    let took = started.elapsed();
    assert_exit(&output, 0);
    assert!(
        stderr(&output).contains(
            "--rate: 1000 keys/s for this run (the job's own: 2000 keys/s); a later command without --rate uses the job's own again"
        ),
        "{}",
        describe(&output)
    );
    // A pace is a lower bound: the keys left cannot go faster than 1000/s
    // (at the job's own 2000/s they would take half as long).
    let floor = Duration::from_secs_f64(left as f64 / 1000.0 * 0.9);
    assert!(took >= floor, "{left} keys in {took:?} at --rate 1000");
    assert_servers_equal(&source, &target, &[0]);

    let output = ferry(&["resume", "--journal", &journal, "--rate", "fast"]);
    assert_exit(&output, 2);
    assert!(
        stderr(&output).contains("`unlimited`"),
        "{}",
        describe(&output)
    );
}

#[test]
fn verify_takes_a_rate() {
    let source = RedisServer::start();
    let target = RedisServer::start();
    fill_strings(&mut source.connection(), "k", 1500, None);
    fill_strings(&mut target.connection(), "k", 1500, None);
    let started = Instant::now();
    let output = ferry(&[
        "verify",
        "--source",
        &source.url(),
        "--target",
        &target.url(),
        "--rate",
        "1000",
        "--scan-count",
        "100",
        "--progress",
        "log",
        "--log-interval",
        "1",
    ]);
    let took = started.elapsed();
    assert_exit(&output, 0);
    assert!(
        took >= Duration::from_millis(1350),
        "1500 keys in {took:?} at --rate 1000"
    );
    let text = stderr(&output);
    assert!(text.contains("redis-ferry: verify started: "), "{text}");
    let progress = text
        .lines()
        .find(|line| line.contains("keys checked"))
        .unwrap_or_else(|| panic!("no progress line:\n{text}"));
    assert!(progress.contains(" keys/s, 0 differ"), "{progress}");
    assert!(progress.contains(", ETA "), "{progress}");
}

/// Every long flag of every subcommand, as clap knows them.
fn every_subcommand_and_flag() -> Vec<(String, Vec<String>)> {
    let mut command = redis_ferry::cli::command();
    command.build();
    command
        .get_subcommands()
        .filter(|sub| sub.get_name() != "help")
        .map(|sub| {
            let flags = sub
                .get_arguments()
                .filter_map(|arg| arg.get_long())
                .filter(|long| *long != "help")
                .map(str::to_string)
                .collect();
            (sub.get_name().to_string(), flags)
        })
        .collect()
}

fn shell_is_installed(shell: &str) -> bool {
    std::process::Command::new(shell)
        .arg("-c")
        .arg("true")
        .output()
        .is_ok_and(|output| output.status.success())
}

#[test]
fn completion_scripts_name_every_subcommand_and_flag_and_parse() {
    let expected = every_subcommand_and_flag();
    assert!(expected.iter().any(|(name, _)| name == "completions"));
    for shell in ["bash", "zsh", "fish"] {
        let output = ferry(&["completions", shell]);
        assert_exit(&output, 0);
        let script = stdout(&output);
        for (name, flags) in &expected {
            assert!(script.contains(name.as_str()), "{shell}: no {name}");
            for flag in flags {
                // bash lists `--flag`; zsh and fish name it without dashes
                // in places (`-l flag`), with them in others.
                assert!(
                    script.contains(&format!("--{flag}")) || script.contains(&format!("-l {flag}")),
                    "{shell}: {name} --{flag} missing"
                );
            }
        }
        if shell_is_installed(shell) {
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("completion");
            std::fs::write(&file, &script).unwrap();
            let check = std::process::Command::new(shell)
                .arg("-n")
                .arg(&file)
                .output()
                .unwrap();
            assert!(check.status.success(), "{shell} -n: {}", describe(&check));
        } else {
            assert_ne!(shell, "bash", "bash must be there to check the script");
        }
    }
    let output = ferry(&["completions", "tcsh"]);
    assert_exit(&output, 2);
}

#[test]
fn the_man_page_documents_every_subcommand_flag_and_exit_code() {
    let output = ferry(&["man"]);
    assert_exit(&output, 0);
    let page = stdout(&output);
    assert!(
        page.lines()
            .any(|line| line.starts_with(".TH redis-ferry 1")),
        "{page}"
    );
    // roff writes a dash as `\-`.
    for (name, flags) in every_subcommand_and_flag() {
        let heading = format!(".SH \"REDIS-FERRY {}\"", name.to_uppercase());
        let section_start = page
            .find(&heading)
            .unwrap_or_else(|| panic!("no section {heading}"));
        let section = &page[section_start..];
        let section_end = section[1..]
            .find("\n.SH ")
            .map_or(section.len(), |at| at + 1);
        let section = &section[..section_end];
        for flag in flags {
            let roff = format!("\\-\\-{}", flag.replace('-', "\\-"));
            assert!(section.contains(&roff), "man: {name} {roff} missing");
        }
    }
    for code in ["130", "EXIT STATUS", "REDIS_FERRY_SOURCE_PASSWORD"] {
        assert!(page.contains(code), "man: {code} missing");
    }
    if shell_is_installed("man") {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("redis-ferry.1");
        std::fs::write(&file, &page).unwrap();
        let shown = std::process::Command::new("man")
            .arg("-l")
            .arg(&file)
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "100")
            .output()
            .unwrap();
        assert!(shown.status.success(), "{}", describe(&shown));
        assert!(stdout(&shown).contains("REDIS-FERRY RUN"));
    }
}
