//! The command line: clap definitions of the subcommands and the entry point
//! the binary calls. Each subcommand's flags and the code that turns them
//! into plain settings live in `commands/<name>.rs`; nothing past this layer
//! sees a clap type.
//!
//! Flags every subcommand takes (`--log-format`) are global here; the flags
//! several commands share (`--journal`, progress, metrics) are defined once
//! in `commands/mod.rs` and flattened into each command that takes them.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand};
use serde_json::json;

use crate::commands;
use crate::exit::Exit;
use crate::interrupt::{Shutdown, install_handler};
use crate::log::{self, Level, LogFormat};

/// Copy every key of a live Redis (standalone or cluster) into another Redis,
/// resumably, with a journal that proves nothing was lost.
#[derive(Debug, Parser)]
#[command(name = "redis-ferry", version, propagate_version = true)]
#[command(
    after_help = "Exit codes: 0 done, 1 could not run, 2 usage error, 3 some keys failed \
                        (verify: differences found), 130 interrupted (resume continues)."
)]
pub struct Cli {
    /// How lines on stderr look: text, or one JSON object per line.
    ///
    /// text: `2026-12-01T07:22:23Z redis-ferry: <message>`. json: `ts`
    /// (RFC 3339), `level`, `msg` and the event's fields, for log
    /// collectors. stdout (reports, summaries) is not affected.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value_t = LogFormat::Text,
        env = "REDIS_FERRY_LOG_FORMAT",
        value_name = "FORMAT"
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a new job: copy every key from --source to --target.
    Run(commands::run::RunArgs),
    /// Continue the journal's job from its last checkpoint.
    Resume(commands::resume::ResumeArgs),
    /// Copy again the keys whose latest outcome is failed (or --outcome ...).
    Retry(commands::retry::RetryArgs),
    /// Show where the job stands (works while it runs).
    Status(commands::status::StatusArgs),
    /// The final report: key counts now beside the journal's outcomes, and a verdict; or the per-key CSV.
    Report(commands::report::ReportArgs),
    /// Compare source and target key by key; exit 3 when anything differs.
    Verify(commands::verify::VerifyArgs),
    /// Print a shell completion script (bash, zsh, fish, ...) on stdout.
    Completions(commands::completions::CompletionsArgs),
    /// Print the manual page (roff) on stdout.
    Man(commands::man::ManArgs),
}

/// `--journal PATH`, taken by every subcommand.
#[derive(Debug, Clone, Args)]
pub struct JournalArg {
    /// The job's journal (SQLite file).
    #[arg(long, value_name = "PATH", default_value = "./redis-ferry.db")]
    pub journal: PathBuf,
}

/// The whole command line as clap sees it (for completions and the man page).
pub fn command() -> clap::Command {
    Cli::command()
}

/// Parses the command line, runs the subcommand and returns the exit code.
/// Errors are printed as one line: `redis-ferry: <what went wrong>`.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return usage_failure(error),
    };
    log::init(cli.log_format);
    let shutdown = Shutdown::new();
    if let Err(error) = install_handler(&shutdown) {
        return fatal(&error);
    }
    quiet_panics();
    let outcome = std::panic::catch_unwind(|| dispatch(cli.command, &shutdown));
    match outcome {
        Ok(Ok(exit)) => exit.into(),
        Ok(Err(error)) => fatal(&error),
        // The panic hook already printed one line; the journal is
        // consistent because batches commit whole.
        Err(_) => Exit::CouldNotRun.into(),
    }
}

/// The one line a command that could not run ends with; in JSON mode an
/// `error` object that also carries the exit code.
fn fatal(error: &anyhow::Error) -> ExitCode {
    let exit = Exit::for_error(error);
    log::event(
        Level::Error,
        &format!("{error:#}"),
        &[("exit_code", json!(exit.code()))],
    );
    exit.into()
}

/// clap's own errors (unknown flag, bad value) and `--help`/`--version`.
/// With `--log-format json` on the command line (or in the environment), a
/// usage error is a JSON line too, so a log collector never sees clap's
/// multi-line text; help and version stay as clap prints them.
fn usage_failure(error: clap::Error) -> ExitCode {
    if !error.use_stderr() || !json_requested(std::env::args()) {
        error.exit();
    }
    log::init(LogFormat::Json);
    let text = error.render().to_string();
    let first = text.lines().next().unwrap_or_default();
    let message = first.strip_prefix("error: ").unwrap_or(first);
    log::event(
        Level::Error,
        message,
        &[("exit_code", json!(Exit::Usage.code()))],
    );
    Exit::Usage.into()
}

/// Whether the arguments (or REDIS_FERRY_LOG_FORMAT) ask for JSON lines,
/// judged without clap (which just refused the command line).
fn json_requested(args: impl Iterator<Item = String>) -> bool {
    let args: Vec<String> = args.collect();
    let in_args = args.iter().enumerate().find_map(|(i, arg)| {
        if let Some(value) = arg.strip_prefix("--log-format=") {
            Some(value == "json")
        } else if arg == "--log-format" {
            Some(args.get(i + 1).is_some_and(|value| value == "json"))
        } else {
            None
        }
    });
    in_args.unwrap_or_else(|| {
        std::env::var("REDIS_FERRY_LOG_FORMAT").is_ok_and(|value| value == "json")
    })
}

fn dispatch(command: Command, shutdown: &Shutdown) -> anyhow::Result<Exit> {
    match command {
        Command::Run(args) => commands::run::run(args, shutdown),
        Command::Resume(args) => commands::resume::run(args, shutdown),
        Command::Retry(args) => commands::retry::run(args, shutdown),
        Command::Status(args) => commands::status::run(args),
        Command::Report(args) => commands::report::run(args, shutdown),
        Command::Verify(args) => commands::verify::run(args, shutdown),
        Command::Completions(args) => commands::completions::run(args),
        Command::Man(args) => commands::man::run(args),
    }
}

/// A bug must not greet an operator with a backtrace: one line, and where
/// to report it.
fn quiet_panics() {
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown".to_string());
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        log::error(format!(
            "internal error: {message}{place}; the journal is consistent, `resume` continues; please report this"
        ));
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> impl Iterator<Item = String> {
        line.split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn json_is_found_in_either_spelling_without_clap() {
        assert!(json_requested(args(
            "redis-ferry run --log-format json --bad"
        )));
        assert!(json_requested(args("redis-ferry --log-format=json run")));
        assert!(!json_requested(args("redis-ferry run --log-format text")));
    }

    #[test]
    fn the_command_line_is_consistent() {
        command().debug_assert();
    }
}
