//! `redis-ferry man`: the manual page, in roff, generated from the same clap
//! definitions the binary parses with (clap_mangen), so it documents every
//! subcommand and flag. One page holds everything: the global part, then a
//! section per subcommand with its synopsis and options, then exit status,
//! environment and files.
//!
//! Install: `redis-ferry man > /usr/local/share/man/man1/redis-ferry.1`,
//! then `man redis-ferry`. Read it without installing: `redis-ferry man | man -l -`.

use std::io::Write;

use anyhow::{Context, Result};
use clap::Args;
use clap_mangen::Man;
use clap_mangen::roff::{Roff, bold, roman};

use crate::exit::Exit;

#[derive(Debug, Args)]
pub struct ManArgs {}

pub fn run(_args: ManArgs) -> Result<Exit> {
    let page = render().context("cannot render the man page")?;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(&page)
        .and_then(|()| stdout.flush())
        .context("cannot write the man page to stdout")?;
    Ok(Exit::Success)
}

/// The whole page.
pub fn render() -> std::io::Result<Vec<u8>> {
    let mut command = crate::cli::command();
    // Built, so every subcommand lists the global flags too.
    command.build();
    let mut page = Vec::new();
    let man = Man::new(command.clone());
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    subcommands_section(&command).to_writer(&mut page)?;
    for sub in command
        .get_subcommands()
        .filter(|sub| sub.get_name() != "help")
    {
        render_subcommand(sub, &mut page)?;
    }
    extra_sections().to_writer(&mut page)?;
    man.render_version_section(&mut page)?;
    Ok(page)
}

/// The list of subcommands, each pointing to its section further down
/// (clap_mangen's own list names a page per subcommand, which this single
/// page does not have).
fn subcommands_section(command: &clap::Command) -> Roff {
    let mut roff = Roff::new();
    roff.control("SH", ["SUBCOMMANDS"]);
    for sub in command
        .get_subcommands()
        .filter(|sub| sub.get_name() != "help")
    {
        let about = sub
            .get_about()
            .map(|about| about.to_string())
            .unwrap_or_default();
        let name = format!("redis-ferry {}", sub.get_name());
        roff.control("TP", [])
            .text([bold(name.as_str())])
            .text([roman(format!(
                "{about} (see {} below)",
                name.to_uppercase()
            ))]);
    }
    roff
}

/// A subcommand's section: `.SH "REDIS-FERRY RUN"`, what it does, its
/// synopsis and options. clap_mangen renders a subcommand as a page of its
/// own; its section headings become sub-headings here.
fn render_subcommand(sub: &clap::Command, page: &mut Vec<u8>) -> std::io::Result<()> {
    let name = format!("redis-ferry {}", sub.get_name());
    let sub = sub
        .clone()
        .bin_name(name.clone())
        .display_name(name.clone());
    let man = Man::new(sub.clone());
    let mut body = Vec::new();
    man.render_synopsis_section(&mut body)?;
    man.render_description_section(&mut body)?;
    man.render_options_section(&mut body)?;
    let mut heading = Roff::new();
    heading.control("SH", [name.to_uppercase().as_str()]);
    heading.to_writer(&mut *page)?;
    for line in String::from_utf8_lossy(&body).lines() {
        let line = match line.strip_prefix(".SH ") {
            Some(title) => format!(".SS {}", capitalised(title)),
            None => line.to_string(),
        };
        writeln!(page, "{line}")?;
    }
    Ok(())
}

/// `SYNOPSIS` → `Synopsis`.
fn capitalised(title: &str) -> String {
    let lower = title.trim_matches('"').to_lowercase();
    let mut chars = lower.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => lower,
    }
}

fn extra_sections() -> Roff {
    let mut roff = Roff::new();
    roff.control("SH", ["EXIT STATUS"]);
    for (code, meaning) in [
        ("0", "finished; no key failed (verify: no difference)"),
        (
            "1",
            "could not run: bad journal, unreachable server, authentication, refused",
        ),
        ("2", "usage error (unknown flag, bad value)"),
        (
            "3",
            "finished, but some keys failed (verify: differences found)",
        ),
        (
            "130",
            "interrupted (Ctrl-C / SIGTERM); everything done so far is in the journal, resume continues",
        ),
    ] {
        roff.control("TP", [])
            .text([bold(code)])
            .text([roman(meaning)]);
    }
    roff.control("SH", ["ENVIRONMENT"]);
    for (name, meaning) in [
        (
            "REDIS_FERRY_SOURCE_PASSWORD",
            "the source's password; wins over a password in the --source URL",
        ),
        (
            "REDIS_FERRY_TARGET_PASSWORD",
            "the target's password; wins over a password in the --target URL",
        ),
        ("REDIS_FERRY_LOG_FORMAT", "text or json, as --log-format"),
    ] {
        roff.control("TP", [])
            .text([bold(name)])
            .text([roman(meaning)]);
    }
    roff.control("SH", ["FILES"]);
    roff.control("TP", [])
        .text([bold("./redis-ferry.db")])
        .text([roman(
            "the default journal (SQLite): every SCAN cursor and every key's outcome; --journal PATH chooses another",
        )]);
    roff.control("TP", [])
        .text([bold("<journal>.lock")])
        .text([roman(
            "held while a process drives the journal, so two never do at once",
        )]);
    roff.control("SH", ["SEE ALSO"]);
    roff.text([roman(
        "README.md and docs/reference.md in the redis-ferry repository: every subcommand, flag, exit code, JSON field and CSV column.",
    )]);
    roff
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headings_read_as_sub_headings() {
        assert_eq!(capitalised("SYNOPSIS"), "Synopsis");
        assert_eq!(capitalised("\"OPTIONS\""), "Options");
    }
}
