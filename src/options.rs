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

/// `--journal-keys`: kept so that scripts and journals of older versions
/// still parse; the journal now keeps a row for every key whichever it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum JournalKeys {
    /// A row for every key (the full audit log).
    #[default]
    All,
    /// Older versions kept rows for failed (and mismatched) keys only.
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
