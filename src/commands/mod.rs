//! One file per subcommand: its flags (clap `Args`) and the function that
//! turns them into plain settings and calls the library.

pub mod report;
pub mod resume;
pub mod retry;
pub mod run;
pub mod status;
pub mod verify;

use anyhow::Result;

use crate::endpoint::{Endpoint, Role};

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
