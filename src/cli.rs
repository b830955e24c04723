//! The command line: clap definitions of the subcommands and the entry point
//! the binary calls. Each subcommand's flags and the code that turns them
//! into plain settings live in `commands/<name>.rs`; nothing past this layer
//! sees a clap type.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::commands;
use crate::exit::Exit;
use crate::interrupt::{Shutdown, install_handler};

/// Copy every key of a live Redis (standalone or cluster) into another Redis,
/// resumably, with a journal that proves nothing was lost.
#[derive(Debug, Parser)]
#[command(name = "redis-ferry", version, propagate_version = true)]
#[command(
    after_help = "Exit codes: 0 done, 1 could not run, 2 usage error, 3 some keys failed \
                        (verify: differences found), 130 interrupted (resume continues)."
)]
pub struct Cli {
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
}

/// `--journal PATH`, taken by every subcommand.
#[derive(Debug, Clone, Args)]
pub struct JournalArg {
    /// The job's journal (SQLite file).
    #[arg(long, value_name = "PATH", default_value = "./redis-ferry.db")]
    pub journal: PathBuf,
}

/// Parses the command line, runs the subcommand and returns the exit code.
/// Errors are printed as one line: `redis-ferry: <what went wrong>`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let shutdown = Shutdown::new();
    if let Err(error) = install_handler(&shutdown) {
        crate::log::error(format!("{error:#}"));
        return Exit::CouldNotRun.into();
    }
    quiet_panics();
    let outcome = std::panic::catch_unwind(|| dispatch(cli.command, &shutdown));
    match outcome {
        Ok(Ok(exit)) => exit.into(),
        Ok(Err(error)) => {
            crate::log::error(format!("{error:#}"));
            Exit::for_error(&error).into()
        }
        // The panic hook already printed one line; the journal is
        // consistent because batches commit whole.
        Err(_) => Exit::CouldNotRun.into(),
    }
}

fn dispatch(command: Command, shutdown: &Shutdown) -> anyhow::Result<Exit> {
    match command {
        Command::Run(args) => commands::run::run(args, shutdown),
        Command::Resume(args) => commands::resume::run(args, shutdown),
        Command::Retry(args) => commands::retry::run(args, shutdown),
        Command::Status(args) => commands::status::run(args),
        Command::Report(args) => commands::report::run(args, shutdown),
        Command::Verify(args) => commands::verify::run(args, shutdown),
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
        crate::log::error(format!(
            "internal error: {message}{place}; the journal is consistent, `resume` continues; please report this"
        ));
    }));
}
