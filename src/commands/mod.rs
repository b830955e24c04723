//! One file per subcommand: its flags (clap `Args`) and the function that
//! turns them into plain settings and calls the library.

pub mod journal_place;
pub mod report;
pub mod resume;
pub mod retry;
pub mod run;
pub mod status;
pub mod verify;

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::endpoint::{self, Endpoint, Role};
use crate::log;

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
