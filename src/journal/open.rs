//! Opening the journal file to write it: the checks that refuse what is not
//! a journal (or one written by a newer redis-ferry), the per-connection
//! pragmas, the schema migrations, and creating a new journal atomically.
//!
//! The schema lives in the top-level `migrations/` folder, embedded at build
//! time and applied with rusqlite_migration; `PRAGMA user_version` holds the
//! schema version. Only a writer (a process holding the journal's lock)
//! migrates; readers ([`super::read`]) share the checks but never write.
//!
//! A new journal is built under a temporary name beside the final one
//! (`<journal>.creating`: pragmas, WAL mode, schema) and renamed into place,
//! so a reader polling the path sees either nothing or a whole journal, and
//! never races the creation.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use anyhow::{Context, Result, bail};
use include_dir::{Dir, include_dir};
use rusqlite::{Connection, OpenFlags};
use rusqlite_migration::Migrations;

static MIGRATIONS_DIR: Dir = include_dir!("$CARGO_MANIFEST_DIR/migrations");

pub(super) static MIGRATIONS: LazyLock<Migrations<'static>> = LazyLock::new(|| {
    Migrations::from_directory(&MIGRATIONS_DIR)
        .expect("migrations/ is embedded at build time and valid")
});

/// The schema version this build writes (number of migrations).
pub fn schema_version() -> i64 {
    MIGRATIONS_DIR.dirs().count() as i64
}

/// The first bytes of every SQLite 3 database file.
const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// Page size of a new journal. Keys are appended, so big pages buy nothing
/// there; the reads that are random (a key recorded again, a key hash
/// probe) and the in-place updates each cost one page, so smaller is
/// cheaper. Older journals keep the 16 KB pages they were created with.
const NEW_PAGE_SIZE: i64 = 4096;

/// The writer's page cache. Appends touch a few pages at the end of each
/// table and the random reads are too spread out for any cache to help,
/// so the memory is better spent on the key index's filters.
const WRITER_CACHE_KIB: i64 = 2048;

/// Checkpoint after about this much WAL, and cut the WAL back to it after.
const WAL_CHECKPOINT_BYTES: i64 = 64 << 20;

/// `<journal><suffix>`, beside the journal (`-wal`, `-shm`, `.creating`).
pub(super) fn sibling(journal: &Path, suffix: &str) -> PathBuf {
    let mut name = journal.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// The path names an existing file (not a directory).
pub(super) fn check_exists(path: &Path) -> Result<()> {
    if path.is_dir() {
        bail!(
            "journal {} is a directory; pass --journal with the path of a journal file",
            path.display()
        );
    }
    if !path.exists() {
        bail!(
            "journal {} does not exist: start a job with `redis-ferry run`, or pass --journal with the path of an existing journal",
            path.display()
        );
    }
    Ok(())
}

/// Whether the file is empty (it becomes a new journal); refuses a file
/// that is not a SQLite database.
pub(super) fn check_is_sqlite(path: &Path) -> Result<bool> {
    let mut header = [0u8; 16];
    let mut file = std::fs::File::open(path)
        .with_context(|| format!("cannot open journal {}", path.display()))?;
    let read = file.read(&mut header).unwrap_or(0);
    if read == 0 {
        return Ok(true);
    }
    if read < 16 || &header != SQLITE_HEADER {
        bail!(
            "{} is not a redis-ferry journal (not a SQLite database); pass --journal with another path",
            path.display()
        );
    }
    Ok(false)
}

/// The journal's schema version; refuses one written by a newer redis-ferry.
pub(super) fn schema_version_of(connection: &Connection, path: &Path) -> Result<i64> {
    let version: i64 = connection
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .with_context(|| format!("cannot read journal {}", path.display()))?;
    let known = schema_version();
    if version > known {
        bail!(
            "journal {} was written by a newer redis-ferry (schema version {version}, this one knows up to {known}); use that newer version",
            path.display()
        );
    }
    Ok(version)
}

/// A database with tables but no schema version was not made by redis-ferry.
pub(super) fn check_is_ours(connection: &Connection, path: &Path, version: i64) -> Result<()> {
    if version > 0 {
        return Ok(());
    }
    let tables: i64 = connection
        .query_row("SELECT COUNT(*) FROM sqlite_master", [], |row| row.get(0))
        .with_context(|| format!("cannot read journal {}", path.display()))?;
    if tables > 0 {
        bail!(
            "{} is a SQLite database but not a redis-ferry journal; pass --journal with another path",
            path.display()
        );
    }
    Ok(())
}

/// Builds a new, empty journal at `path` (which does not exist or is an
/// empty file). The caller holds the journal's lock, so leftovers of a
/// creation that was killed are its own to remove.
pub(super) fn create_file(path: &Path) -> Result<()> {
    let building = sibling(path, ".creating");
    remove_leftovers(&building)?;
    // A write-ahead log without its database (the database was deleted by
    // hand) would be replayed into the new one.
    remove_leftovers(path)?;
    std::fs::File::create_new(&building)
        .with_context(|| format!("cannot create journal {}", path.display()))?;
    build_schema(&building, path)
        .with_context(|| format!("cannot create journal {}", path.display()))?;
    std::fs::rename(&building, path)
        .with_context(|| format!("cannot create journal {}", path.display()))?;
    sync_directory(path);
    Ok(())
}

/// Pragmas that stay with the file (page size, WAL) and the schema, in a
/// connection that is closed before the file is renamed, so SQLite
/// checkpoints and removes its `-wal` and `-shm` first.
fn build_schema(building: &Path, path: &Path) -> Result<()> {
    let mut connection = Connection::open_with_flags(
        building,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    connection.pragma_update(None, "page_size", NEW_PAGE_SIZE)?;
    connection.pragma_update(None, "journal_mode", "WAL")?;
    migrate(&mut connection, path)?;
    connection.close().map_err(|(_, error)| error)?;
    Ok(())
}

/// Removes `<file>`'s SQLite side files, and `<file>` itself when it is
/// empty or is the half-built `.creating` file.
fn remove_leftovers(file: &Path) -> Result<()> {
    let is_building = file.extension().is_some_and(|e| e == "creating");
    let empty = std::fs::metadata(file)
        .map(|m| m.len() == 0)
        .unwrap_or(true);
    if is_building || empty {
        for side in ["", "-wal", "-shm", "-journal"] {
            let leftover = sibling(file, side);
            if side.is_empty() && !is_building {
                continue; // an empty journal file stays; the rename replaces it
            }
            match std::fs::remove_file(&leftover) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => {
                    return Err(error)
                        .with_context(|| format!("cannot remove {}", leftover.display()));
                }
            }
        }
    }
    Ok(())
}

/// Makes the rename durable; a failure only costs durability of the name
/// after a power cut, which SQLite itself does not promise for WAL files.
fn sync_directory(path: &Path) {
    let directory = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if let Ok(handle) = std::fs::File::open(directory) {
        let _ = handle.sync_all();
    }
}

/// A read-write connection to an existing journal, upgraded to this
/// build's schema. The caller holds the journal's lock.
pub(super) fn open_for_writing(path: &Path) -> Result<Connection> {
    let mut connection = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("cannot open journal {}", path.display()))?;
    configure_writer(&connection)
        .with_context(|| format!("cannot open journal {}", path.display()))?;
    let version = schema_version_of(&connection, path)?;
    check_is_ours(&connection, path, version)?;
    connection
        .pragma_update(None, "journal_mode", "WAL")
        .with_context(|| format!("cannot open journal {}", path.display()))?;
    migrate(&mut connection, path)?;
    let page_size: i64 = connection.pragma_query_value(None, "page_size", |row| row.get(0))?;
    // Set once the page size is known: a negative size in KiB is turned
    // into pages with the page size of that moment.
    connection.pragma_update(None, "cache_size", -WRITER_CACHE_KIB)?;
    connection.pragma_update(
        None,
        "wal_autocheckpoint",
        WAL_CHECKPOINT_BYTES / page_size.max(512),
    )?;
    Ok(connection)
}

fn configure_writer(connection: &Connection) -> Result<()> {
    connection.busy_timeout(std::time::Duration::from_secs(30))?;
    // NORMAL in WAL mode survives a killed process; a power cut may lose the
    // last batches, which the cursor then replays, never past a lost key.
    connection.pragma_update(None, "synchronous", "NORMAL")?;
    // Multi-row statements keep a statement journal (the pages a statement
    // changed, in case it must be undone alone); in memory it is bounded by
    // one statement's pages and skips a temporary file.
    connection.pragma_update(None, "temp_store", "MEMORY")?;
    // A big key-index merge grows the WAL; cut it back after checkpoints.
    connection.pragma_update(None, "journal_size_limit", WAL_CHECKPOINT_BYTES)?;
    Ok(())
}

fn migrate(connection: &mut Connection, path: &Path) -> Result<()> {
    let pending = MIGRATIONS
        .pending_migrations(connection)
        .with_context(|| format!("cannot read the schema of journal {}", path.display()))?;
    if pending > 0 {
        MIGRATIONS
            .to_latest(connection)
            .with_context(|| format!("cannot upgrade journal {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
pub(super) fn migrate_to(connection: &mut Connection, version: usize) {
    MIGRATIONS.to_version(connection, version).unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_valid() {
        assert!(MIGRATIONS.validate().is_ok());
        assert!(schema_version() >= 3);
    }

    #[test]
    fn a_new_journal_appears_whole_and_leaves_no_side_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.db");
        create_file(&path).unwrap();
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["j.db"]);
        let connection = open_for_writing(&path).unwrap();
        let mode: String = connection
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        assert_eq!(
            schema_version_of(&connection, &path).unwrap(),
            schema_version()
        );
    }

    #[test]
    fn a_directory_is_named_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let error = check_exists(dir.path()).unwrap_err().to_string();
        assert!(error.contains("is a directory"), "{error}");
    }
}
