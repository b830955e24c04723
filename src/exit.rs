//! Exit codes from the command-line contract, and the error kinds that map
//! onto them.
//!
//! Commands return `Ok(Exit)` for outcomes an operator's script branches on
//! (done, some keys failed, interrupted) and `Err(anyhow::Error)` when the
//! command could not run. An error is exit 1 unless a [`UsageError`] sits in
//! its chain, which makes it exit 2 (a bad value on the command line).

use std::fmt;

/// How a command ended, as the process exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Finished; no key failed (`verify`: no difference).
    Success,
    /// Could not run: bad journal, unreachable server, authentication, refusal.
    CouldNotRun,
    /// Usage error: unknown flag or bad value.
    Usage,
    /// Finished, but some keys failed (`verify`: differences found).
    KeysFailed,
    /// Interrupted by Ctrl-C or SIGTERM; `resume` continues.
    Interrupted,
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::CouldNotRun => 1,
            Exit::Usage => 2,
            Exit::KeysFailed => 3,
            Exit::Interrupted => 130,
        }
    }

    /// The exit status for an error that stopped a command.
    pub fn for_error(error: &anyhow::Error) -> Exit {
        if error.chain().any(|cause| cause.is::<UsageError>()) {
            Exit::Usage
        } else {
            Exit::CouldNotRun
        }
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(exit: Exit) -> Self {
        std::process::ExitCode::from(exit.code())
    }
}

/// A value given on the command line that cannot be used (exit 2).
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Shorthand for returning a usage error from a function that returns
/// `anyhow::Result`.
pub fn usage_error(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UsageError(message.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn usage_errors_exit_2_even_under_context() {
        let error: anyhow::Result<()> = Err(usage_error("--db-map needs SRC:DST"));
        let error = error.context("cannot start the job").unwrap_err();
        assert_eq!(Exit::for_error(&error), Exit::Usage);
        assert_eq!(
            Exit::for_error(&anyhow::anyhow!("refused")),
            Exit::CouldNotRun
        );
    }
}
