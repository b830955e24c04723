//! One file per subcommand: its flags (clap `Args`) and the function that
//! turns them into plain settings and calls the library.

pub mod completions;
pub mod man;
pub mod report;
pub mod resume;
pub mod retry;
pub mod run;
pub mod status;
pub mod verify;

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::endpoint::{Endpoint, Role};

/// `--source` / `--target` given again to a command that works on an
/// existing journal (`resume`, `retry`, `report`).
#[derive(Debug, Clone, Args)]
pub struct ServersAgain {
    /// The source again, when its password is needed or its address changed.
    ///
    /// The journal stores URLs without passwords; give the URL with its
    /// password here, or set REDIS_FERRY_SOURCE_PASSWORD.
    #[arg(long, value_name = "URL")]
    pub source: Option<String>,
    /// The target again, when its password is needed or its address changed.
    ///
    /// Or set REDIS_FERRY_TARGET_PASSWORD.
    #[arg(long, value_name = "URL")]
    pub target: Option<String>,
    /// A CA certificate (PEM) for a rediss:// source, replacing the stored one.
    #[arg(long, value_name = "FILE")]
    pub source_tls_ca: Option<PathBuf>,
    /// A CA certificate (PEM) for a rediss:// target, replacing the stored one.
    #[arg(long, value_name = "FILE")]
    pub target_tls_ca: Option<PathBuf>,
}

impl ServersAgain {
    /// The endpoints given, parsed (usage error on a bad URL).
    pub fn endpoints(self) -> Result<(Option<Endpoint>, Option<Endpoint>)> {
        Ok((
            optional_endpoint(Role::Source, self.source.as_deref(), self.source_tls_ca)?,
            optional_endpoint(Role::Target, self.target.as_deref(), self.target_tls_ca)?,
        ))
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
