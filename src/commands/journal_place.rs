//! Where `--journal` points, checked before a command opens it: a
//! directory, a directory that does not exist, a read-only disk, no
//! permission or a full disk each get one sentence naming the path and
//! what to do, instead of what SQLite says later ("disk I/O error",
//! "unable to open database file", "cannot read the schema").
//!
//! These are checks of the place only; whether the file is a journal, and
//! which job it holds, is the journal's business.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use nix::errno::Errno;
use nix::unistd::AccessFlags;

use crate::exit::usage_error;

/// How the command uses the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JournalUse {
    /// `run`: creates it (or uses an empty file).
    Create,
    /// `resume`, `retry`, `verify`: writes to an existing one.
    Write,
    /// `status`, `report`: only reads.
    Read,
}

/// Below this much free space a journal cannot even be created (its
/// schema, WAL and shared-memory files take some hundred KiB) and would
/// stop a job at its first batches.
const MIN_FREE_BYTES: u64 = 1024 * 1024;

/// Checks the place of the journal for `usage`.
pub fn check(path: &Path, usage: JournalUse) -> Result<()> {
    if path.is_dir() {
        return Err(usage_error(format!(
            "--journal {} is a directory; name a file, for example {}",
            path.display(),
            path.join("redis-ferry.db").display()
        )));
    }
    if usage == JournalUse::Read || (usage == JournalUse::Write && !path.exists()) {
        // The journal says itself that it does not exist.
        return Ok(());
    }
    let directory = directory_of(path);
    let verb = if path.exists() { "write" } else { "create" };
    if !directory.is_dir() {
        bail!(
            "cannot {verb} journal {}: directory {} does not exist; create it or choose another --journal",
            path.display(),
            directory.display()
        );
    }
    // SQLite writes the -wal, -shm and lock files beside the journal, so
    // the directory must be writable as well as the file.
    check_writable(&directory, path, verb)?;
    if path.exists() {
        check_writable(path, path, verb)?;
    }
    check_free_space(&directory, path, verb)
}

fn directory_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn check_writable(place: &Path, journal: &Path, verb: &str) -> Result<()> {
    match nix::unistd::access(place, AccessFlags::W_OK) {
        Ok(()) => Ok(()),
        Err(Errno::EROFS) => bail!(
            "cannot {verb} journal {}: {} is on a read-only file system; choose a --journal on a writable disk",
            journal.display(),
            place.display()
        ),
        Err(Errno::EACCES) | Err(Errno::EPERM) => bail!(
            "cannot {verb} journal {}: no permission to write {}; choose a --journal you can write, or run as a user who can",
            journal.display(),
            place.display()
        ),
        Err(errno) => bail!(
            "cannot {verb} journal {}: {} cannot be written ({}); choose another --journal",
            journal.display(),
            place.display(),
            errno.desc()
        ),
    }
}

fn check_free_space(directory: &Path, journal: &Path, verb: &str) -> Result<()> {
    // A file system that cannot say (some network mounts) is given the
    // benefit of the doubt; the journal reports a full disk itself.
    let Ok(stats) = nix::sys::statvfs::statvfs(directory) else {
        return Ok(());
    };
    // The field types differ between platforms; on some they are u64 already.
    #[allow(clippy::unnecessary_cast)]
    let free = (stats.blocks_available() as u64).saturating_mul(stats.fragment_size() as u64);
    if free < MIN_FREE_BYTES {
        bail!(
            "cannot {verb} journal {}: the disk holding {} is full ({} KiB free, and a journal needs 1 MiB to start); free some space or choose a --journal on another disk",
            journal.display(),
            directory.display(),
            free / 1024
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_is_a_usage_error_that_suggests_a_file_in_it() {
        let dir = tempfile::tempdir().unwrap();
        let error = check(dir.path(), JournalUse::Read).unwrap_err();
        assert_eq!(
            crate::exit::Exit::for_error(&error),
            crate::exit::Exit::Usage
        );
        let text = format!("{error:#}");
        assert!(text.contains("is a directory; name a file"), "{text}");
        assert!(text.contains("redis-ferry.db"), "{text}");
    }

    #[test]
    fn a_missing_directory_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let journal = dir.path().join("not-there").join("j.db");
        let text = format!("{:#}", check(&journal, JournalUse::Create).unwrap_err());
        assert!(text.contains("not-there does not exist"), "{text}");
        assert!(check(&dir.path().join("j.db"), JournalUse::Create).is_ok());
        assert!(check(Path::new("j.db"), JournalUse::Create).is_ok());
    }
}
