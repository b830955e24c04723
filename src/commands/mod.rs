//! One file per subcommand: its flags (clap `Args`) and the function that
//! turns them into plain settings and calls the library. The flags several
//! subcommands share are defined here once: servers given again, progress,
//! metrics, `--rate` for a later run.

pub mod completions;
pub mod journal_place;
pub mod man;
pub mod report;
pub mod resume;
pub mod retry;
pub mod run;
pub mod status;
pub mod verify;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::Args;

use crate::endpoint::{self, Endpoint, Role};
use crate::exit::Exit;
use crate::log;
use crate::metrics::{self, MetricsServer, State};
use crate::progress::{ProgressMode, ProgressSettings};

/// `--source-password-file` / `--target-password-file`, taken wherever a
/// password can be given.
#[derive(Debug, Clone, Default, Args)]
pub struct PasswordFiles {
    /// Read the source's password from FILE (a trailing newline is ignored).
    ///
    /// Wins over REDIS_FERRY_SOURCE_PASSWORD, which wins over a password in
    /// the URL. Unlike a URL on the command line, it is not shown by `ps`.
    #[arg(long, value_name = "FILE")]
    pub source_password_file: Option<PathBuf>,
    /// Read the target's password from FILE (a trailing newline is ignored).
    ///
    /// Wins over REDIS_FERRY_TARGET_PASSWORD, which wins over a password in
    /// the URL.
    #[arg(long, value_name = "FILE")]
    pub target_password_file: Option<PathBuf>,
}

impl PasswordFiles {
    /// Reads the files now (a missing or unreadable one is a usage error,
    /// before anything is touched) and makes them win for this process.
    pub fn apply(&self) -> Result<()> {
        for (role, file) in [
            (Role::Source, &self.source_password_file),
            (Role::Target, &self.target_password_file),
        ] {
            if let Some(file) = file {
                endpoint::use_password_file(role, file)?;
            }
        }
        Ok(())
    }
}

/// `--source` / `--target` given again to a command that works on an
/// existing journal (`resume`, `retry`, `report`).
#[derive(Debug, Clone, Args)]
pub struct ServersAgain {
    /// The source again, when its address changed (or to give its password).
    ///
    /// The journal stores URLs without passwords; give the password with
    /// --source-password-file or REDIS_FERRY_SOURCE_PASSWORD (a password in
    /// this URL works too, but `ps` shows it).
    #[arg(long, value_name = "URL")]
    pub source: Option<String>,
    /// The target again, when its address changed (or to give its password).
    ///
    /// Or give the password with --target-password-file or
    /// REDIS_FERRY_TARGET_PASSWORD.
    #[arg(long, value_name = "URL")]
    pub target: Option<String>,
    /// A CA certificate (PEM) for a rediss:// source, replacing the stored one.
    #[arg(long, value_name = "FILE")]
    pub source_tls_ca: Option<PathBuf>,
    /// A CA certificate (PEM) for a rediss:// target, replacing the stored one.
    #[arg(long, value_name = "FILE")]
    pub target_tls_ca: Option<PathBuf>,
    #[command(flatten)]
    pub password_files: PasswordFiles,
}

impl ServersAgain {
    /// The endpoints given, parsed (usage error on a bad URL), with the
    /// password files read.
    pub fn endpoints(self) -> Result<(Option<Endpoint>, Option<Endpoint>)> {
        self.password_files.apply()?;
        let source = optional_endpoint(Role::Source, self.source.as_deref(), self.source_tls_ca)?;
        let target = optional_endpoint(Role::Target, self.target.as_deref(), self.target_tls_ca)?;
        warn_about_url_passwords(&[source.as_ref(), target.as_ref()]);
        Ok((source, target))
    }
}

/// Parses an optional `--source`/`--target` URL given again on a later
/// command, with its TLS CA.
fn optional_endpoint(
    role: Role,
    url: Option<&str>,
    tls_ca: Option<std::path::PathBuf>,
) -> Result<Option<Endpoint>> {
    url.map(|url| Ok(Endpoint::parse(role, url)?.with_tls_ca(tls_ca)))
        .transpose()
}

/// A password in a URL on the command line is visible to every local user
/// (`ps`, /proc): say so once, with the safer ways, and go on.
fn warn_about_url_passwords(endpoints: &[Option<&Endpoint>]) {
    let roles: Vec<Role> = endpoints
        .iter()
        .flatten()
        .filter(|endpoint| endpoint.url_had_password())
        .map(|endpoint| endpoint.role)
        .collect();
    if roles.is_empty() {
        return;
    }
    let flags: Vec<String> = roles.iter().map(|role| format!("--{role}")).collect();
    let safer: Vec<String> = roles
        .iter()
        .map(|role| {
            format!(
                "{} or {} FILE",
                role.password_variable(),
                role.password_file_flag()
            )
        })
        .collect();
    log::warn(format!(
        "the password in the {} URL is visible to every user of this machine (ps); give it with {} instead",
        flags.join(" and "),
        safer.join(", and ")
    ));
}

/// `--journal PATH`, repeatable, for the commands that read journals
/// (`status`, `report`): several journals, or a directory holding them,
/// are the workers of one sharded job, shown as one job.
#[derive(Debug, Clone, Args)]
pub struct JournalsArg {
    /// The job's journal (SQLite file); several (repeat the flag), or a directory of them: a sharded job's workers.
    ///
    /// The journals of the workers of one `run --shard I/N` job are read
    /// as one job: counts summed, each worker's state listed, one verdict.
    /// A directory stands for the `.db` files directly in it.
    #[arg(long = "journal", value_name = "PATH", default_value = "./redis-ferry.db",
          action = clap::ArgAction::Append)]
    pub journals: Vec<PathBuf>,
}

impl JournalsArg {
    /// The journals named (directories expanded), each place checked.
    pub fn journals(&self) -> Result<Vec<PathBuf>> {
        for path in self.journals.iter().filter(|path| !path.is_dir()) {
            journal_place::check(path, journal_place::JournalUse::Read)?;
        }
        crate::shard::workers::expand(&self.journals)
    }
}

/// `--progress` and `--log-interval`, for the commands that work for a while.
#[derive(Debug, Clone, Args)]
pub struct ProgressArgs {
    /// Progress on stderr: a bar on a terminal, log lines otherwise.
    ///
    /// `bar` falls back to log lines when stderr is not a terminal (a bar
    /// would show nothing there); `off` shows only warnings and the end.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
    /// Seconds between progress log lines (the first comes after a second).
    #[arg(long, value_name = "SECONDS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub log_interval: u64,
}

impl ProgressArgs {
    pub fn settings(&self) -> ProgressSettings {
        ProgressSettings::new(self.progress, Duration::from_secs(self.log_interval))
    }
}

/// `--metrics-addr HOST:PORT`.
#[derive(Debug, Clone, Args)]
pub struct MetricsArg {
    /// Serve Prometheus metrics at http://HOST:PORT/metrics while this runs.
    ///
    /// For example 127.0.0.1:9187 (this host only) or 0.0.0.0:9187 (any
    /// host may scrape). Port 0 picks a free port; the address is logged.
    #[arg(long, value_name = "HOST:PORT", value_parser = metrics::parse_addr)]
    pub metrics_addr: Option<String>,
}

impl MetricsArg {
    /// Runs `work` with the metrics endpoint up (when asked for). The
    /// address is bound first, so one in use stops the command before any
    /// work; the job's state as it ended is recorded last.
    pub fn around(&self, work: impl FnOnce() -> Result<Exit>) -> Result<Exit> {
        let _server: Option<MetricsServer> = self
            .metrics_addr
            .as_deref()
            .map(metrics::serve)
            .transpose()?;
        let result = work();
        metrics::set_state(match &result {
            Ok(Exit::Success | Exit::KeysFailed) => State::Completed,
            Ok(Exit::Interrupted) => State::Interrupted,
            Ok(Exit::CouldNotRun | Exit::Usage) | Err(_) => State::Failed,
        });
        result
    }
}

/// `--rate` given to a command that continues a job: `N` keys per second, or
/// `unlimited`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateArg(pub Option<u64>);

/// `500` → at most 500 keys/s; `unlimited` → no limit.
pub fn parse_rate(text: &str) -> Result<RateArg, String> {
    if text.eq_ignore_ascii_case("unlimited") {
        return Ok(RateArg(None));
    }
    match text.parse::<u64>() {
        Ok(rate) if rate > 0 => Ok(RateArg(Some(rate))),
        _ => Err(format!(
            "{text:?} is not a rate: give keys per second (a whole number above 0), or `unlimited`"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_a_number_or_unlimited() {
        assert_eq!(parse_rate("500"), Ok(RateArg(Some(500))));
        assert_eq!(parse_rate("unlimited"), Ok(RateArg(None)));
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("fast").is_err());
    }
}
