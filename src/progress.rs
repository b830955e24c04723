//! Progress on stderr while a job runs: a bar with rate and ETA on a
//! terminal, a log line every `--log-interval` seconds otherwise (a log
//! file, a CI job, `nohup`, systemd), or nothing with `--progress off`.
//! stdout stays for data.
//!
//! What it shows is this run's own work: on `resume`, keys done by earlier
//! runs fill the bar but never count towards the rate, so the ETA is the
//! time this process needs for what is left. Rates read like `11.8k keys/s`.
//!
//! It also feeds [`crate::metrics`]: [`Progress::record`] sees every
//! journaled batch (outcomes, sizes), so the metrics need nothing from the
//! pipeline. And it writes the line a job starts with ([`log_start`]), so a
//! log says what was copied where before the first progress line.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};

use crate::clock::short_duration;
use crate::log::{self, Level};
use crate::outcome::{KeyResult, OutcomeCounts};

/// `--progress`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum ProgressMode {
    /// A bar on a terminal, log lines otherwise.
    #[default]
    Auto,
    /// A bar (log lines when stderr is not a terminal: a bar there would show nothing).
    Bar,
    /// A log line every --log-interval seconds.
    Log,
    /// Nothing but warnings and the final summary.
    Off,
}

/// `--log-interval` when not given.
pub const DEFAULT_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The first log line comes this soon (or at the interval, if shorter), so
/// an unattended run shows it is moving, and how fast, within a second.
const FIRST_LINE_AFTER: Duration = Duration::from_secs(1);

/// How progress is shown: `--progress` and `--log-interval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgressSettings {
    pub mode: ProgressMode,
    pub log_interval: Duration,
}

impl ProgressSettings {
    pub fn new(mode: ProgressMode, log_interval: Duration) -> ProgressSettings {
        ProgressSettings { mode, log_interval }
    }

    /// Nothing shown (library callers, tests, benchmarks).
    pub fn off() -> ProgressSettings {
        ProgressSettings::new(ProgressMode::Off, DEFAULT_LOG_INTERVAL)
    }
}

impl Default for ProgressSettings {
    fn default() -> Self {
        ProgressSettings::off()
    }
}

/// What the line a command starts with says.
#[derive(Debug, Clone, Default)]
pub struct StartLine {
    /// `run`, `resume`, `retry`, `verify`.
    pub command: String,
    /// Redacted URLs.
    pub source: String,
    pub target: String,
    /// `(source db, target db)` pairs.
    pub dbs: Vec<(i64, i64)>,
    /// Keys this command expects to go through in all, when known.
    pub keys_expected: Option<u64>,
    /// Of those, done by earlier runs (resume).
    pub keys_done_before: u64,
    /// What is worked on, when not simply every key (`retry`: "keys whose latest outcome is failed").
    pub selection: Option<String>,
    pub journal: Option<String>,
}

/// Logs the line a command starts with: what goes where, how much.
pub fn log_start(start: &StartLine) {
    let (text, fields) = start_line(start);
    log::event(Level::Info, &text, &fields);
}

fn start_line(start: &StartLine) -> (String, Vec<(&'static str, Value)>) {
    let mut text = format!(
        "{} started: {} -> {}, {}",
        start.command,
        start.source,
        start.target,
        describe_dbs(&start.dbs)
    );
    if let Some(selection) = &start.selection {
        text.push_str(&format!(", {selection}"));
    }
    if let Some(expected) = start.keys_expected {
        text.push_str(&format!(", ~{expected} keys expected"));
    }
    if start.keys_done_before > 0 {
        text.push_str(&format!(
            ", {} done by earlier runs",
            start.keys_done_before
        ));
    }
    if let Some(journal) = &start.journal {
        text.push_str(&format!(", journal {journal}"));
    }
    let dbs: Vec<Value> = start
        .dbs
        .iter()
        .map(|(db, target_db)| json!({"db": db, "target_db": target_db}))
        .collect();
    let fields = vec![
        ("event", json!("start")),
        ("command", json!(start.command)),
        ("source", json!(start.source)),
        ("target", json!(start.target)),
        ("dbs", Value::Array(dbs)),
        ("selection", json!(start.selection)),
        ("keys_expected", json!(start.keys_expected)),
        ("keys_done_before", json!(start.keys_done_before)),
        ("journal", json!(start.journal)),
    ];
    (text, fields)
}

/// `db 0, 1->3` (a target database only where it differs).
fn describe_dbs(dbs: &[(i64, i64)]) -> String {
    let names: Vec<String> = dbs
        .iter()
        .map(|(db, target)| {
            if db == target {
                db.to_string()
            } else {
                format!("{db}->{target}")
            }
        })
        .collect();
    match names.len() {
        0 => "no database holds keys".to_string(),
        1 => format!("db {}", names[0]),
        _ => format!("dbs {}", names.join(", ")),
    }
}

/// `11754.73` → `11.8k keys/s`.
pub fn human_rate(keys_per_second: f64) -> String {
    format!("{} keys/s", human_number(keys_per_second))
}

/// A count for people: `950`, `1.2k`, `11.8k`, `306k`, `1.23M`.
pub fn human_number(value: f64) -> String {
    let value = value.max(0.0);
    if value < 999.5 {
        format!("{value:.0}")
    } else if value < 99_950.0 {
        format!("{:.1}k", value / 1e3)
    } else if value < 999_500.0 {
        format!("{:.0}k", value / 1e3)
    } else if value < 9_995_000.0 {
        format!("{:.2}M", value / 1e6)
    } else {
        format!("{:.1}M", value / 1e6)
    }
}

/// Where the lines or the bar go, decided once.
enum Display {
    Bar(ProgressBar),
    Log { next_line: Instant, every: Duration },
    Off,
}

/// How far a command is: keys done (by this run and before), of how many,
/// and this run's rate. Shared by the copy ([`Progress`]) and `verify`.
pub struct Meter {
    display: Display,
    /// Keys expected in all (an estimate from INFO keyspace), if known.
    total: Option<u64>,
    /// Keys done before this process started (resume).
    done_before: u64,
    started: Instant,
}

/// One look at a [`Meter`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    /// Done in all, earlier runs included.
    pub done: u64,
    pub total: Option<u64>,
    /// Keys per second of this run's own work.
    pub rate: f64,
    pub eta: Option<Duration>,
}

impl Meter {
    pub fn new(settings: ProgressSettings, total: Option<u64>, done_before: u64) -> Meter {
        let display = match effective_mode(settings.mode) {
            ProgressMode::Bar => Display::Bar(new_bar(total, done_before)),
            ProgressMode::Log => Display::Log {
                next_line: Instant::now() + FIRST_LINE_AFTER.min(settings.log_interval),
                every: settings.log_interval,
            },
            _ => Display::Off,
        };
        Meter {
            display,
            total,
            done_before,
            started: Instant::now(),
        }
    }

    /// Where things stand after `this_run` keys done by this process.
    pub fn reading(&self, this_run: u64) -> Reading {
        reading_at(
            self.started.elapsed(),
            self.total,
            self.done_before,
            this_run,
        )
    }

    /// Moves the bar; `notes` follow the rate (`3 failed`).
    pub fn show(&mut self, reading: &Reading, notes: &str) {
        if let Display::Bar(bar) = &self.display {
            if let Some(total) = reading.total
                && reading.done > total
            {
                bar.set_length(reading.done);
            }
            bar.set_position(reading.done);
            bar.set_message(bar_message(reading, notes));
        }
    }

    /// Whether a log line is due now (and, if so, schedules the next).
    pub fn line_due(&mut self) -> bool {
        match &mut self.display {
            Display::Log { next_line, every } if Instant::now() >= *next_line => {
                *next_line = Instant::now() + *every;
                true
            }
            _ => false,
        }
    }

    /// Shows `message` on the bar in place of the rate (stopping...).
    pub fn note(&self, message: &str) {
        if let Display::Bar(bar) = &self.display {
            bar.set_message(message.to_string());
        }
    }

    /// Clears the bar; the caller prints the final summary.
    pub fn finish(&mut self) {
        if let Display::Bar(bar) = &self.display {
            bar.finish_and_clear();
            log::detach_bar();
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

/// `Auto` and `Bar` become log lines when stderr is not a terminal:
/// indicatif draws nothing there, and an unattended run must not go silent.
/// With `--log-format json` every stderr line is an object, so no bar either.
fn effective_mode(mode: ProgressMode) -> ProgressMode {
    let terminal = std::io::stderr().is_terminal() && log::format() == crate::log::LogFormat::Text;
    match mode {
        ProgressMode::Auto | ProgressMode::Bar if terminal => ProgressMode::Bar,
        ProgressMode::Auto => ProgressMode::Log,
        ProgressMode::Bar => {
            log::info(
                "--progress bar: stderr is not a terminal (or --log-format json), so progress comes as log lines",
            );
            ProgressMode::Log
        }
        other => other,
    }
}

fn new_bar(total: Option<u64>, done_before: u64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
    // The rate and ETA are this run's own (in the message), not indicatif's,
    // which would count the keys an earlier run did as done just now.
    let template = if total.is_some() {
        "{spinner} {elapsed_precise} [{wide_bar}] {human_pos}/{human_len} keys {msg}"
    } else {
        "{spinner} {elapsed_precise} {human_pos} keys {msg}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_position(done_before);
    log::attach_bar(&bar);
    bar
}

fn reading_at(elapsed: Duration, total: Option<u64>, done_before: u64, this_run: u64) -> Reading {
    let seconds = elapsed.as_secs_f64();
    let rate = if seconds > 0.0 {
        this_run as f64 / seconds
    } else {
        0.0
    };
    let done = done_before + this_run;
    let eta = match total {
        Some(total) if rate > 0.0 => Some(Duration::from_secs_f64(
            total.saturating_sub(done) as f64 / rate,
        )),
        _ => None,
    };
    Reading {
        done,
        total,
        rate,
        eta,
    }
}

/// `(41%), 11.8k keys/s, 3 failed, ETA 49s`.
fn bar_message(reading: &Reading, notes: &str) -> String {
    match percent(reading) {
        Some(percent) => format!("({percent}%), {}", rate_and_notes(reading, notes)),
        None => rate_and_notes(reading, notes),
    }
}

/// `11.8k keys/s, 3 failed, ETA 49s`.
fn rate_and_notes(reading: &Reading, notes: &str) -> String {
    let mut text = human_rate(reading.rate);
    if !notes.is_empty() {
        text.push_str(&format!(", {notes}"));
    }
    if let Some(eta) = reading.eta {
        text.push_str(&format!(", ETA {}", short_duration(eta)));
    }
    text
}

fn percent(reading: &Reading) -> Option<u64> {
    match reading.total {
        Some(total) if total > 0 => Some((reading.done.min(total) * 100) / total),
        _ => None,
    }
}

/// `412031 of ~1000000 keys done (41%), 11.8k keys/s, 3 failed, ETA 49s`:
/// the start of a progress log line (`verb`: done, checked).
pub fn progress_text(reading: &Reading, verb: &str, notes: &str) -> String {
    let of_total = reading
        .total
        .map(|total| format!(" of ~{total}"))
        .unwrap_or_default();
    let percent = percent(reading)
        .map(|percent| format!(" ({percent}%)"))
        .unwrap_or_default();
    format!(
        "{}{of_total} keys {verb}{percent}, {}",
        reading.done,
        rate_and_notes(reading, notes)
    )
}

/// The JSON fields every progress line carries.
pub fn progress_fields(reading: &Reading) -> Vec<(&'static str, Value)> {
    vec![
        ("event", json!("progress")),
        ("keys_done", json!(reading.done)),
        ("keys_expected", json!(reading.total)),
        ("rate_keys_per_second", json!(round2(reading.rate))),
        ("eta_seconds", json!(reading.eta.map(|eta| eta.as_secs()))),
    ]
}

fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

/// Counts keys as batches are journaled and shows it.
pub struct Progress {
    meter: Meter,
    counts: OutcomeCounts,
    stopping_noted: bool,
}

impl Progress {
    pub fn new(settings: ProgressSettings, total: Option<u64>, done_before: u64) -> Progress {
        crate::metrics::set_state(crate::metrics::State::Running);
        crate::metrics::set_progress(done_before, total, 0.0, None);
        Progress {
            meter: Meter::new(settings, total, done_before),
            counts: OutcomeCounts::default(),
            stopping_noted: false,
        }
    }

    /// A display that shows nothing (library callers, tests).
    pub fn hidden() -> Progress {
        Progress::new(ProgressSettings::off(), None, 0)
    }

    /// Counts a journaled batch.
    pub fn record(&mut self, results: &[KeyResult]) {
        for result in results {
            self.counts.add(result.outcome, 1);
        }
        crate::metrics::record_results(results);
        let reading = self.reading();
        if !self.stopping_noted {
            self.meter.show(&reading, &self.notes());
        }
        self.tick();
    }

    /// Writes a log line when one is due, and refreshes the rate and ETA
    /// the metrics show (also while no batch arrives).
    pub fn tick(&mut self) {
        let reading = self.reading();
        crate::metrics::set_progress(reading.done, reading.total, reading.rate, reading.eta);
        if self.meter.line_due() {
            let (text, fields) = self.line(&reading);
            log::event(Level::Info, &text, &fields);
        }
    }

    pub fn note_stopping(&mut self) {
        if !self.stopping_noted {
            self.stopping_noted = true;
            self.meter.note("stopping after the current batch");
        }
    }

    /// Clears the bar; the caller prints the final summary.
    pub fn finish(&mut self) {
        self.meter.finish();
    }

    /// Keys journaled by this process.
    pub fn counts(&self) -> OutcomeCounts {
        self.counts
    }

    pub fn elapsed(&self) -> Duration {
        self.meter.elapsed()
    }

    /// Keys per second in this process.
    pub fn rate(&self) -> f64 {
        self.reading().rate
    }

    fn reading(&self) -> Reading {
        self.meter.reading(self.counts.total())
    }

    fn notes(&self) -> String {
        format!("{} failed", self.counts.failed)
    }

    fn line(&self, reading: &Reading) -> (String, Vec<(&'static str, Value)>) {
        let text = format!(
            "{} (restored {}, expired {}, skipped {})",
            progress_text(reading, "done", &self.notes()),
            self.counts.restored,
            self.counts.expired,
            self.counts.skipped
        );
        let mut fields = progress_fields(reading);
        fields.extend([
            ("restored", json!(self.counts.restored)),
            ("expired", json!(self.counts.expired)),
            ("skipped", json!(self.counts.skipped)),
            ("failed", json!(self.counts.failed)),
        ]);
        (text, fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_read_like_people_write_them() {
        assert_eq!(human_rate(11_754.731_3), "11.8k keys/s");
        assert_eq!(human_rate(950.2), "950 keys/s");
        assert_eq!(human_rate(0.0), "0 keys/s");
        assert_eq!(human_rate(1_234.0), "1.2k keys/s");
        assert_eq!(human_rate(305_722.0), "306k keys/s");
        assert_eq!(human_rate(1_234_567.0), "1.23M keys/s");
        assert_eq!(human_rate(12_345_678.0), "12.3M keys/s");
    }

    #[test]
    fn a_resumed_job_rates_only_its_own_work() {
        // 900,000 keys done by an earlier run, 10,000 in this run's 10 s:
        // 1k keys/s, and 90,000 keys left take 90 s, not "1 s".
        let reading = reading_at(Duration::from_secs(10), Some(1_000_000), 900_000, 10_000);
        assert_eq!(reading.done, 910_000);
        assert_eq!(reading.rate, 1_000.0);
        assert_eq!(reading.eta, Some(Duration::from_secs(90)));
        assert_eq!(
            progress_text(&reading, "done", "2 failed"),
            "910000 of ~1000000 keys done (91%), 1.0k keys/s, 2 failed, ETA 1m30s"
        );
    }

    #[test]
    fn without_a_total_there_is_no_percentage() {
        let reading = reading_at(Duration::from_secs(2), None, 0, 3_000);
        assert_eq!(
            progress_text(&reading, "done", "0 failed"),
            "3000 keys done, 1.5k keys/s, 0 failed"
        );
    }

    #[test]
    fn nothing_done_yet_has_no_eta() {
        let reading = reading_at(Duration::from_secs(3), Some(100), 0, 0);
        assert_eq!(reading.eta, None);
        assert_eq!(
            progress_text(&reading, "checked", ""),
            "0 of ~100 keys checked (0%), 0 keys/s"
        );
    }

    #[test]
    fn the_start_line_names_what_goes_where() {
        let start = StartLine {
            command: "resume".into(),
            source: "redis://:***@old:6379".into(),
            target: "redis://new:6379".into(),
            dbs: vec![(0, 0), (1, 3)],
            keys_expected: Some(1000),
            keys_done_before: 400,
            selection: None,
            journal: Some("./redis-ferry.db".into()),
        };
        let (text, fields) = start_line(&start);
        assert_eq!(
            text,
            "resume started: redis://:***@old:6379 -> redis://new:6379, dbs 0, 1->3, ~1000 keys expected, 400 done by earlier runs, journal ./redis-ferry.db"
        );
        let dbs = &fields.iter().find(|(name, _)| *name == "dbs").unwrap().1;
        assert_eq!(dbs[1], json!({"db": 1, "target_db": 3}));
    }
}
