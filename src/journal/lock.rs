//! One process per journal: an exclusive OS lock on a sidecar file
//! (`<journal>.lock`), the way SQLite keeps `-wal` and `-shm` beside the
//! database.
//!
//! The operating system releases the lock when the process dies, even by
//! SIGKILL, so a crashed run never leaves a stale lock behind. The file
//! holds the owner's pid for the error message; it is never deleted
//! (deleting lock files races with a process that is opening them).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Held while a process drives a journal; released on drop or death.
#[derive(Debug)]
pub struct JournalLock {
    _file: File,
}

pub fn lock_path(journal: &Path) -> PathBuf {
    let mut name = journal.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

impl JournalLock {
    /// Takes the lock, or `None` when another process holds it.
    pub fn try_acquire(journal: &Path) -> Result<Option<JournalLock>> {
        match JournalLock::acquire(journal) {
            Ok(lock) => Ok(Some(lock)),
            Err(error) if error.is::<InUse>() => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Takes the lock or explains who holds it.
    pub fn acquire(journal: &Path) -> Result<JournalLock> {
        let path = lock_path(journal);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot create lock file {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut owner = String::new();
                let _ = file.read_to_string(&mut owner);
                let owner = owner.trim();
                let who = if owner.is_empty() {
                    "another redis-ferry process".to_string()
                } else {
                    format!("another redis-ferry process (pid {owner})")
                };
                return Err(anyhow::Error::new(InUse(format!(
                    "journal {} is in use by {who}; wait for it to finish or stop it first (`redis-ferry status` shows its progress)",
                    journal.display()
                ))));
            }
            Err(std::fs::TryLockError::Error(error)) => {
                return Err(error).with_context(|| format!("cannot lock {}", path.display()));
            }
        }
        file.set_len(0).ok();
        file.seek(SeekFrom::Start(0)).ok();
        let _ = write!(file, "{}", std::process::id());
        let _ = file.flush();
        Ok(JournalLock { _file: file })
    }
}

/// Another process holds the lock (the message says who).
#[derive(Debug)]
pub struct InUse(String);

impl std::fmt::Display for InUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InUse {}

/// Whether some process holds the journal's lock right now (checked with a
/// shared lock, so nothing is written).
pub fn is_locked(journal: &Path) -> bool {
    let Ok(file) = File::open(lock_path(journal)) else {
        return false;
    };
    match file.try_lock_shared() {
        Ok(()) => {
            let _ = file.unlock();
            false
        }
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let journal = dir.path().join("j.db");
        let first = JournalLock::acquire(&journal).unwrap();
        let error = JournalLock::acquire(&journal).unwrap_err().to_string();
        assert!(
            error.contains("is in use by another redis-ferry process (pid"),
            "{error}"
        );
        drop(first);
        assert!(!is_locked(&journal));
        let _again = JournalLock::acquire(&journal).unwrap();
        assert!(is_locked(&journal));
    }
}
