//! How outcomes and write methods are stored in `key_log`: as small
//! integers, because a name per row would be a fifth of the journal.
//!
//! SQLite stores the integers 0 and 1 in no bytes at all (only the record
//! header says which), so the two outcomes that most keys end with,
//! `restored` and `skipped`, cost nothing, and neither does `restore`, the
//! usual method. `expired`, `failed` and `mismatch` (the outcomes `retry`
//! selects) are 2 and above, which is what the partial index
//! `key_log_needing_attention` holds. The numbers are part of the schema
//! (see `migrations/03-key-log`): never renumber.

use anyhow::{Result, bail};

use crate::outcome::{Outcome, WriteMethod};

/// The smallest code of the outcomes the partial index holds.
pub const NEEDING_ATTENTION: i64 = 2;

pub fn outcome_code(outcome: Outcome) -> i64 {
    match outcome {
        Outcome::Restored => 0,
        Outcome::Skipped => 1,
        Outcome::Expired => 2,
        Outcome::Failed => 3,
        Outcome::Mismatch => 4,
    }
}

pub fn outcome_from_code(code: i64) -> Result<Outcome> {
    Ok(match code {
        0 => Outcome::Restored,
        1 => Outcome::Skipped,
        2 => Outcome::Expired,
        3 => Outcome::Failed,
        4 => Outcome::Mismatch,
        other => bail!("the journal holds an unknown outcome code {other}"),
    })
}

pub fn method_code(method: Option<WriteMethod>) -> Option<i64> {
    method.map(|method| match method {
        WriteMethod::Restore => 1,
        WriteMethod::Commands => 2,
        WriteMethod::Chunked => 3,
    })
}

pub fn method_from_code(code: Option<i64>) -> Result<Option<WriteMethod>> {
    Ok(match code {
        None => None,
        Some(1) => Some(WriteMethod::Restore),
        Some(2) => Some(WriteMethod::Commands),
        Some(3) => Some(WriteMethod::Chunked),
        Some(other) => bail!("the journal holds an unknown write method code {other}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_reads_back_as_what_was_written() {
        for outcome in Outcome::ALL {
            assert_eq!(outcome_from_code(outcome_code(outcome)).unwrap(), outcome);
        }
        for method in [
            None,
            Some(WriteMethod::Restore),
            Some(WriteMethod::Commands),
            Some(WriteMethod::Chunked),
        ] {
            assert_eq!(method_from_code(method_code(method)).unwrap(), method);
        }
        let attention: Vec<Outcome> = Outcome::ALL
            .into_iter()
            .filter(|o| outcome_code(*o) >= NEEDING_ATTENTION)
            .collect();
        assert_eq!(
            attention,
            [Outcome::Expired, Outcome::Failed, Outcome::Mismatch],
            "the outcomes `retry` selects are the ones the partial index holds"
        );
    }
}
