//! Where a report goes: standard output, or `--output FILE` written
//! atomically.
//!
//! A file is written to a temporary file in the same directory, flushed to
//! disk, then renamed over FILE, so a reader (or a change ticket upload)
//! never sees half a report, and a failed or interrupted export leaves any
//! previous FILE as it was. Write errors read like sentences
//! ("cannot write report to /x/y.csv: permission denied").

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow, bail};

use crate::exit::usage_error;

/// A report export stopped by Ctrl-C / SIGTERM (exit 130).
#[derive(Debug)]
pub struct Interrupted;

impl fmt::Display for Interrupted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Interrupted {}

/// Standard output, or a file to replace atomically.
pub struct Destination {
    file: Option<PathBuf>,
}

impl Destination {
    /// Checks `--output` before any work: its directory exists, and it is
    /// not the journal (a report written over the journal would destroy it).
    pub fn new(file: Option<&Path>, journal: &Path) -> Result<Destination> {
        let Some(file) = file else {
            return Ok(Destination { file: None });
        };
        let directory = parent_of(file);
        if !directory.is_dir() {
            bail!(
                "cannot write report to {}: directory {} does not exist",
                file.display(),
                directory.display()
            );
        }
        if names_the_journal(file, journal) {
            return Err(usage_error(format!(
                "--output {} names the journal itself; choose another file",
                file.display()
            )));
        }
        Ok(Destination {
            file: Some(file.to_path_buf()),
        })
    }

    /// Runs `write` against the destination; for a file, renames the
    /// finished temporary file into place only when `write` succeeded.
    pub fn write(&self, write: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
        match &self.file {
            None => write_stdout(write),
            Some(file) => write_file(file, write),
        }
    }

    /// What an interrupted export left, for the message.
    pub fn left_behind(&self) -> String {
        match &self.file {
            None => "the report on standard output is incomplete".to_string(),
            Some(file) => format!("{} was not written", file.display()),
        }
    }
}

fn write_stdout(write: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let result = write(&mut out).and_then(|()| out.flush().map_err(anyhow::Error::from));
    match result {
        // `report | head`: the reader has what it wanted.
        Err(error) if io_kind(&error) == Some(io::ErrorKind::BrokenPipe) => Ok(()),
        Err(error) => Err(sentence(error, "standard output")),
        Ok(()) => Ok(()),
    }
}

fn write_file(file: &Path, write: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
    let shown = file.display().to_string();
    let temporary = Temporary::create(file).map_err(|error| sentence(error.into(), &shown))?;
    let mut out = BufWriter::new(&temporary.file);
    write(&mut out)
        .and_then(|()| out.flush().map_err(anyhow::Error::from))
        .map_err(|error| sentence(error, &shown))?;
    drop(out);
    temporary
        .persist(file)
        .map_err(|error| sentence(error.into(), &shown))
}

/// A temporary file next to the destination, removed unless persisted.
struct Temporary {
    path: PathBuf,
    file: File,
    persisted: bool,
}

impl Temporary {
    fn create(destination: &Path) -> io::Result<Temporary> {
        let name = destination
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_else(|| "report".to_string());
        let path =
            parent_of(destination).join(format!(".{name}.redis-ferry-{}.tmp", std::process::id()));
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        Ok(Temporary {
            path,
            file,
            persisted: false,
        })
    }

    fn persist(mut self, destination: &Path) -> io::Result<()> {
        self.file.sync_all()?;
        std::fs::rename(&self.path, destination)?;
        self.persisted = true;
        Ok(())
    }
}

impl Drop for Temporary {
    fn drop(&mut self) {
        if !self.persisted {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn parent_of(file: &Path) -> PathBuf {
    match file.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn names_the_journal(file: &Path, journal: &Path) -> bool {
    let canonical = |path: &Path| {
        let name = path.file_name()?.to_owned();
        Some(parent_of(path).canonicalize().ok()?.join(name))
    };
    match (canonical(file), canonical(journal)) {
        (Some(file), Some(journal)) => {
            let journal = journal.as_os_str().to_string_lossy().into_owned();
            let file = file.as_os_str().to_string_lossy().into_owned();
            // The journal's companions (-wal, -shm, .lock) are as precious.
            file == journal || file.starts_with(&format!("{journal}-")) || file == journal + ".lock"
        }
        _ => false,
    }
}

fn io_kind(error: &anyhow::Error) -> Option<io::ErrorKind> {
    error.downcast_ref::<io::Error>().map(io::Error::kind)
}

/// An I/O error becomes "cannot write report to X: permission denied";
/// other errors (reading the journal, Ctrl-C) pass through unchanged.
fn sentence(error: anyhow::Error, destination: &str) -> anyhow::Error {
    match error.downcast::<io::Error>() {
        Ok(io) => anyhow!(
            "cannot write report to {destination}: {}",
            describe_io_error(&io)
        ),
        Err(other) => other,
    }
}

/// "Permission denied (os error 13)" → "permission denied".
pub fn describe_io_error(error: &io::Error) -> String {
    let text = error.to_string();
    let text = match text.find(" (os error ") {
        Some(at) => &text[..at],
        None => &text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => "unknown error".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_read_like_sentences() {
        let error = io::Error::from_raw_os_error(13);
        assert_eq!(describe_io_error(&error), "permission denied");
        let error = sentence(error.into(), "/x/y.csv");
        assert_eq!(
            error.to_string(),
            "cannot write report to /x/y.csv: permission denied"
        );
    }

    #[test]
    fn a_failed_write_leaves_the_previous_file_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("report.txt");
        std::fs::write(&file, "previous report").unwrap();
        let destination = Destination::new(Some(&file), &dir.path().join("j.db")).unwrap();
        let error = destination
            .write(|out| {
                out.write_all(b"half a rep")?;
                Err(anyhow!("the journal went away"))
            })
            .unwrap_err();
        assert_eq!(error.to_string(), "the journal went away");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "previous report");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

        destination.write(|out| Ok(out.write_all(b"new")?)).unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "new");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn the_journal_and_missing_directories_are_refused_up_front() {
        let dir = tempfile::tempdir().unwrap();
        let journal = dir.path().join("j.db");
        std::fs::write(&journal, b"").unwrap();
        for bad in ["j.db", "j.db-wal", "j.db.lock"] {
            let error = Destination::new(Some(&dir.path().join(bad)), &journal)
                .err()
                .unwrap();
            assert!(
                error.to_string().contains("names the journal itself"),
                "{error}"
            );
        }
        let missing = dir.path().join("missing").join("r.csv");
        let error = Destination::new(Some(&missing), &journal).err().unwrap();
        assert_eq!(
            error.to_string(),
            format!(
                "cannot write report to {}: directory {} does not exist",
                missing.display(),
                dir.path().join("missing").display()
            )
        );
    }
}
