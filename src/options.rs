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

/// How a key is written to the target (`--restore-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum RestoreMode {
    /// RESTORE where the target can load the source's payloads, otherwise
    /// (and for a payload it refuses) rebuilt with commands of its type.
    #[default]
    Auto,
    /// RESTORE only: a payload the target refuses makes the key `failed`.
    Dump,
    /// Always rebuilt with commands of its type.
    Commands,
}

/// `--big-key-threshold`'s default: 8 MiB.
pub const DEFAULT_BIG_KEY_THRESHOLD: u64 = 8 * 1024 * 1024;

fn default_big_key_threshold() -> u64 {
    DEFAULT_BIG_KEY_THRESHOLD
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
    /// RESTORE, rebuild by commands, or decide per server pair.
    #[serde(default)]
    pub restore_mode: RestoreMode,
    /// Keys whose MEMORY USAGE is above this many bytes are copied in chunks.
    #[serde(default = "default_big_key_threshold")]
    pub big_key_threshold: u64,
    /// Carry each key's LRU idle time or LFU frequency (RESTORE IDLETIME/FREQ).
    #[serde(default)]
    pub keep_idle: bool,
    /// `--shard I/N`: this worker's share of a cluster source's hash slots
    /// (`None`: every slot). See [`crate::shard`].
    #[serde(default)]
    pub shard: Option<crate::shard::ShardSpec>,
}

/// The default of `--fence-hold`.
pub const DEFAULT_FENCE_HOLD_MS: u64 = 5;

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
            restore_mode: RestoreMode::Auto,
            big_key_threshold: DEFAULT_BIG_KEY_THRESHOLD,
            keep_idle: false,
            no_fence: false,
            fence_hold_ms: DEFAULT_FENCE_HOLD_MS,
            follow: false,
            notify_configured: false,
            shard: None,
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

/// Parses a size in bytes: `8388608`, `512K`, `8M`, `1G` (binary units,
/// `KiB`/`MiB`/`GiB` and a trailing `B` accepted too).
pub fn parse_byte_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let upper = trimmed.to_ascii_uppercase();
    let without_b = upper
        .strip_suffix("IB")
        .or_else(|| upper.strip_suffix('B'))
        .unwrap_or(&upper);
    let (digits, multiplier) = match without_b.chars().last() {
        Some('K') => (&without_b[..without_b.len() - 1], 1u64 << 10),
        Some('M') => (&without_b[..without_b.len() - 1], 1 << 20),
        Some('G') => (&without_b[..without_b.len() - 1], 1 << 30),
        _ => (without_b, 1),
    };
    let bad =
        || format!("{trimmed:?} is not a size in bytes; write for example 8388608, 512K, 8M or 1G");
    let number: u64 = digits.trim().parse().map_err(|_| bad())?;
    let bytes = number.checked_mul(multiplier).ok_or_else(bad)?;
    if bytes == 0 {
        return Err(format!(
            "{trimmed:?}: the threshold must be at least 1 byte"
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_suffixes() {
        assert_eq!(parse_byte_size("8388608"), Ok(8 * 1024 * 1024));
        assert_eq!(parse_byte_size("512K"), Ok(512 * 1024));
        assert_eq!(parse_byte_size("8M"), Ok(8 * 1024 * 1024));
        assert_eq!(parse_byte_size("8m"), Ok(8 * 1024 * 1024));
        assert_eq!(parse_byte_size("8MiB"), Ok(8 * 1024 * 1024));
        assert_eq!(parse_byte_size("1G"), Ok(1 << 30));
        assert_eq!(parse_byte_size("100B"), Ok(100));
        for bad in ["", "M", "8X", "-1", "1.5M", "0", "99999999999999999999G"] {
            assert!(parse_byte_size(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            parse_byte_size("8X").unwrap_err(),
            "\"8X\" is not a size in bytes; write for example 8388608, 512K, 8M or 1G"
        );
    }

    #[test]
    fn options_of_older_journals_still_load() {
        let stored = r#"{"match_pattern":null,"key_type":null,"dbs":[],"db_map":{},
            "scan_count":1000,"existing":"replace","ttl":"relative","rate":null,
            "journal_keys":"all","source_replicas":false,"reconnect_timeout_secs":60}"#;
        let options: CopyOptions = serde_json::from_str(stored).expect("old options load");
        assert_eq!(options.restore_mode, RestoreMode::Auto);
        assert_eq!(options.big_key_threshold, DEFAULT_BIG_KEY_THRESHOLD);
        assert!(!options.keep_idle);
    }
}
