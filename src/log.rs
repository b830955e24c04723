//! Log lines on stderr: every message redis-ferry prints while it works
//! (progress, warnings, reconnects, the reasons a job stops) goes through
//! here, so one switch (`--log-format`) decides how they look.
//!
//! stdout stays for data (`status`, `report`, `verify` summaries); this
//! module only ever writes to stderr.
//!
//! Two formats, chosen once per process with [`init`]:
//! - `text` (the default): `2026-12-01T07:22:23Z redis-ferry: <message>`,
//!   with `warning: ` before the message of a warning. The timestamp (UTC,
//!   RFC 3339, seconds) comes first so a log file of an overnight job says
//!   when each thing happened; `redis-ferry:` stays for `grep`.
//! - `json`: one object per line,
//!   `{"ts":"2026-12-01T07:22:23.412Z","level":"info","msg":"...", <fields>}`,
//!   for log collectors (Kubernetes, journald, Loki).
//!
//! Use the short functions for a plain message, [`event`] when the line
//! carries fields a machine should read. Write the message so that it reads
//! on its own: text mode shows only the message, `json` adds the fields as
//! members next to `ts`, `level` and `msg`:
//!
//! ```ignore
//! log::warn("the target restarted; copying again what it may have lost");
//! log::event(Level::Info, "reconnected to the target after 1.2s",
//!            &[("server", json!("target")), ("after_ms", json!(1200))]);
//! ```
//!
//! A progress bar on a terminal registers itself with [`attach_bar`], so a
//! line logged from any thread is printed above the bar instead of through it.

use std::fmt::Display;
use std::io::Write as _;
use std::sync::{Mutex, OnceLock};
use std::time::SystemTime;

use indicatif::ProgressBar;
use serde_json::Value;

/// How important a line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
    Error,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// `<RFC 3339 time> redis-ferry: <message>`.
    #[default]
    Text,
    /// One JSON object per line: `ts`, `level`, `msg` and the event's fields.
    Json,
}

static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// The bar that lines must be printed above, while one is shown.
static BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Chooses the format for the rest of the process (`cli::main` calls it
/// once, right after parsing). Later calls change nothing; before the first,
/// lines are text.
pub fn init(format: LogFormat) {
    let _ = FORMAT.set(format);
}

/// The format in force.
pub fn format() -> LogFormat {
    FORMAT.get().copied().unwrap_or_default()
}

/// A line with fields.
pub fn event(level: Level, message: &str, fields: &[(&str, Value)]) {
    let line = render(format(), SystemTime::now(), level, message, fields);
    write_line(&line);
}

/// A plain informational line.
pub fn info(message: impl Display) {
    event(Level::Info, &message.to_string(), &[]);
}

/// Something the operator should look at; the job goes on.
pub fn warn(message: impl Display) {
    event(Level::Warn, &message.to_string(), &[]);
}

/// The job cannot go on (printed once, as the command ends).
pub fn error(message: impl Display) {
    event(Level::Error, &message.to_string(), &[]);
}

/// Lines logged from now on are printed above `bar` (see [`detach_bar`]).
pub fn attach_bar(bar: &ProgressBar) {
    *lock_bar() = Some(bar.clone());
}

/// The bar is gone: lines go straight to stderr again.
pub fn detach_bar() {
    *lock_bar() = None;
}

fn lock_bar() -> std::sync::MutexGuard<'static, Option<ProgressBar>> {
    BAR.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write_line(line: &str) {
    let print = || {
        // stderr closed (a supervisor gone): nothing sensible is left to do.
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    };
    let bar = lock_bar().clone();
    match bar {
        Some(bar) if !bar.is_hidden() => bar.suspend(print),
        _ => print(),
    }
}

/// One line in `format`, without its newline.
pub fn render(
    format: LogFormat,
    time: SystemTime,
    level: Level,
    message: &str,
    fields: &[(&str, Value)],
) -> String {
    match format {
        LogFormat::Text => render_text(time, level, message),
        LogFormat::Json => render_json(time, level, message, fields),
    }
}

fn render_text(time: SystemTime, level: Level, message: &str) -> String {
    let prefix = match level {
        Level::Warn => "warning: ",
        Level::Info | Level::Error => "",
    };
    format!(
        "{} redis-ferry: {prefix}{message}",
        humantime::format_rfc3339_seconds(time)
    )
}

fn render_json(time: SystemTime, level: Level, message: &str, fields: &[(&str, Value)]) -> String {
    // Built by hand so `ts`, `level` and `msg` come first, then the fields
    // in the order the caller gave them (serde_json's map would sort them).
    let mut line = format!(
        "{{\"ts\":{},\"level\":{},\"msg\":{}",
        json_string(&humantime::format_rfc3339_millis(time).to_string()),
        json_string(level.as_str()),
        json_string(message)
    );
    for (name, value) in fields {
        if matches!(*name, "ts" | "level" | "msg") {
            continue; // never shadow the three members every line has
        }
        line.push(',');
        line.push_str(&json_string(name));
        line.push(':');
        line.push_str(&value.to_string());
    }
    line.push('}');
    line
}

fn json_string(text: &str) -> String {
    Value::String(text.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::{Duration, UNIX_EPOCH};

    fn at() -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(1_796_109_743_412)
    }

    #[test]
    fn text_lines_start_with_the_time_then_the_greppable_prefix() {
        let line = render(
            LogFormat::Text,
            at(),
            Level::Warn,
            "target is slow",
            &[("x", json!(1))],
        );
        assert_eq!(
            line,
            "2026-12-01T07:22:23Z redis-ferry: warning: target is slow"
        );
        let line = render(LogFormat::Text, at(), Level::Info, "job started", &[]);
        assert_eq!(line, "2026-12-01T07:22:23Z redis-ferry: job started");
    }

    #[test]
    fn json_lines_are_one_object_with_ts_level_msg_then_the_fields_in_order() {
        let line = render(
            LogFormat::Json,
            at(),
            Level::Error,
            "cannot \"connect\"\nat all",
            &[
                ("zeta", json!("z")),
                ("keys", json!(12)),
                ("msg", json!("ignored")),
            ],
        );
        assert_eq!(
            line,
            r#"{"ts":"2026-12-01T07:22:23.412Z","level":"error","msg":"cannot \"connect\"\nat all","zeta":"z","keys":12}"#
        );
        let parsed: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed["msg"], "cannot \"connect\"\nat all");
        assert!(!line.contains('\n'), "one line: {line}");
    }
}
