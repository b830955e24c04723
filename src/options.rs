//! The settings of a job: parsed once from the command line, stored in the
//! journal as JSON, and handed to the pipeline as plain data (the pipeline
//! never sees clap types). `resume` reads them back, so a job continues
//! with the options it was started with.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What to do with a key that already exists on the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum Existing {
    /// RESTORE ... REPLACE: the target's key is replaced atomically.
    #[default]
    Replace,
    /// RESTORE without REPLACE: the target's key is left alone (`skipped`).
    Skip,
}

/// How a key's TTL is carried over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum TtlMode {
    /// The remaining PTTL in milliseconds is passed to RESTORE.
    #[default]
    Relative,
    /// PEXPIRETIME with RESTORE ... ABSTTL (Redis 7 on both sides, clocks in sync).
    Absolute,
}

/// Which keys get a row in the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum JournalKeys {
    /// A row for every key (the full audit log).
    #[default]
    All,
    /// Rows for failed (and mismatched) keys only; counts stay exact.
    Failures,
}

/// Everything that decides what a job copies and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyOptions {
    /// SCAN MATCH glob.
    pub match_pattern: Option<String>,
    /// SCAN TYPE filter (string, list, ..., or a module type name).
    pub key_type: Option<String>,
    /// Source databases chosen with `--db`; empty means every database the
    /// source's INFO keyspace lists when the job starts.
    pub dbs: Vec<i64>,
    /// `--db-map SRC:DST`: source database to target database.
    pub db_map: BTreeMap<i64, i64>,
    pub scan_count: u32,
    pub existing: Existing,
    pub ttl: TtlMode,
    /// At most this many keys per second.
    pub rate: Option<u64>,
    pub journal_keys: JournalKeys,
    /// Read from replicas of a cluster source instead of its primaries.
    #[serde(default)]
    pub source_replicas: bool,
    /// How long a lost connection may take to come back before the job stops.
    pub reconnect_timeout_secs: u64,
    /// `--no-fence`: write without the fence against the application's own
    /// writes (only when nobody writes during the copy).
    #[serde(default)]
    pub no_fence: bool,
    /// How long a fenced batch stays open after its read, in milliseconds
    /// (see `copy::fence`).
    #[serde(default = "default_fence_hold_ms")]
    pub fence_hold_ms: u64,
    /// `--follow`: after the scan, copy every change until cutover.
    #[serde(default)]
    pub follow: bool,
    /// `--notify-configured`: the source already publishes keyspace
    /// events (its CONFIG is not available to check).
    #[serde(default)]
    pub notify_configured: bool,
}

/// The default of `--fence-hold`.
pub const DEFAULT_FENCE_HOLD_MS: u64 = 2;

fn default_fence_hold_ms() -> u64 {
    DEFAULT_FENCE_HOLD_MS
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            match_pattern: None,
            key_type: None,
            dbs: Vec::new(),
            db_map: BTreeMap::new(),
            scan_count: 1000,
            existing: Existing::Replace,
            ttl: TtlMode::Relative,
            rate: None,
            journal_keys: JournalKeys::All,
            source_replicas: false,
            reconnect_timeout_secs: 60,
            no_fence: false,
            fence_hold_ms: DEFAULT_FENCE_HOLD_MS,
            follow: false,
            notify_configured: false,
        }
    }
}

impl CopyOptions {
    /// The target database that source database `db` is copied into.
    pub fn target_db(&self, db: i64) -> i64 {
        self.db_map.get(&db).copied().unwrap_or(db)
    }

    pub fn reconnect_budget(&self) -> Duration {
        Duration::from_secs(self.reconnect_timeout_secs)
    }
}
