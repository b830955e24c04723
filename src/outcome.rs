//! What happened to one key: the outcomes of the contract, and the record
//! of one key's copy that flows from the pipeline into the journal.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A key's latest outcome, as stored in the journal and shown in reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The target holds the key as the source had it when it was read.
    Restored,
    /// SCAN returned the key but it was gone when read; deleted on the target too.
    Expired,
    /// The key existed on the target and `--existing skip` was given.
    Skipped,
    /// The key could not be copied; the error is kept.
    Failed,
    /// `verify` found the target's copy different from the source.
    Mismatch,
}

impl Outcome {
    pub const ALL: [Outcome; 5] = [
        Outcome::Restored,
        Outcome::Expired,
        Outcome::Skipped,
        Outcome::Failed,
        Outcome::Mismatch,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Restored => "restored",
            Outcome::Expired => "expired",
            Outcome::Skipped => "skipped",
            Outcome::Failed => "failed",
            Outcome::Mismatch => "mismatch",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Outcome {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Outcome::ALL
            .into_iter()
            .find(|outcome| outcome.as_str() == text)
            .ok_or_else(|| format!("unknown outcome {text:?}"))
    }
}

/// How a key was written to the target (the CSV's `method` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WriteMethod {
    /// RESTORE of the source's DUMP payload.
    Restore,
    /// Rebuilt with ordinary commands of its type (another version or fork).
    Commands,
    /// A big key, copied in chunks into a temporary key, then renamed.
    Chunked,
}

impl WriteMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            WriteMethod::Restore => "restore",
            WriteMethod::Commands => "commands",
            WriteMethod::Chunked => "chunked",
        }
    }
}

/// The result of copying one key, ready for the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyResult {
    pub key: Vec<u8>,
    pub outcome: Outcome,
    /// Remaining TTL in milliseconds when read; `None` when the key had none
    /// (or was not read).
    pub ttl_ms: Option<i64>,
    /// Size of the DUMP payload.
    pub size_bytes: Option<i64>,
    pub error: Option<String>,
    /// How the key was written; `None` when nothing was written (a delete,
    /// a skip, a failure before writing, or `verify`'s mismatch).
    pub method: Option<WriteMethod>,
}

impl KeyResult {
    pub fn failed(key: Vec<u8>, error: impl Into<String>) -> KeyResult {
        KeyResult {
            key,
            outcome: Outcome::Failed,
            ttl_ms: None,
            size_bytes: None,
            error: Some(error.into()),
            method: None,
        }
    }
}

/// Distinct keys per outcome (one database, or a total).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutcomeCounts {
    pub restored: u64,
    pub expired: u64,
    pub skipped: u64,
    pub failed: u64,
    pub mismatch: u64,
}

impl OutcomeCounts {
    pub fn get(&self, outcome: Outcome) -> u64 {
        match outcome {
            Outcome::Restored => self.restored,
            Outcome::Expired => self.expired,
            Outcome::Skipped => self.skipped,
            Outcome::Failed => self.failed,
            Outcome::Mismatch => self.mismatch,
        }
    }

    pub fn add(&mut self, outcome: Outcome, keys: i64) {
        let slot = match outcome {
            Outcome::Restored => &mut self.restored,
            Outcome::Expired => &mut self.expired,
            Outcome::Skipped => &mut self.skipped,
            Outcome::Failed => &mut self.failed,
            Outcome::Mismatch => &mut self.mismatch,
        };
        *slot = (*slot as i64 + keys).max(0) as u64;
    }

    pub fn total(&self) -> u64 {
        self.restored + self.expired + self.skipped + self.failed + self.mismatch
    }

    pub fn merge(&mut self, other: &OutcomeCounts) {
        for outcome in Outcome::ALL {
            self.add(outcome, other.get(outcome) as i64);
        }
    }
}
