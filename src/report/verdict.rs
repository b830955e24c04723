//! The verdict: one line that says whether the target holds what the source
//! holds, and explains any difference with what the journal recorded.
//!
//! Counts are compared per *target* database, because `--db-map` can pour
//! several source databases into one. Per target database:
//! - keys the target lacks are explained first by `failed` keys, then by
//!   `mismatch` keys (verify found them missing or different); what is left
//!   is unexplained (written to the source after the copy passed them, or
//!   left out by `--match`/`--type`), and `verify` tells which keys;
//! - keys the target has in excess come from outside the job (dual writes,
//!   keys deleted from the source since, keys there before the job).
//!
//! `expired` keys do not explain a difference: they were gone from the
//! source when read and were deleted from the target too, so neither count
//! includes them. `skipped` keys exist on both sides. Both are mentioned,
//! never counted as explanations.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::options::CopyOptions;
use crate::status::DbView;

/// What the comparison concluded, for scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VerdictStatus {
    /// Same counts everywhere, and no key failed or mismatched.
    Match,
    /// Every difference is a failed or mismatched key (`retry` fixes them).
    Explained,
    /// Some difference is not accounted for by the journal.
    Unexplained,
    /// A server could not be asked.
    Unknown,
}

#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub status: VerdictStatus,
    /// The one line shown to the operator.
    pub text: String,
    /// Keys the target lacks, summed over target databases (`null`: unknown).
    pub missing_on_target: Option<u64>,
    /// Keys the target has in excess, summed over target databases.
    pub extra_on_target: Option<u64>,
    /// Missing keys that no failed or mismatched key accounts for.
    pub unexplained_missing: Option<u64>,
}

/// One target database and the source databases copied into it.
#[derive(Debug, Default)]
struct Group {
    source: Option<u64>,
    target: Option<u64>,
    failed: u64,
    mismatch: u64,
}

/// The sums the verdict line is made of.
#[derive(Debug, Default)]
struct Tally {
    source: u64,
    target: u64,
    missing: u64,
    extra: u64,
    missing_in: Vec<i64>,
    extra_in: Vec<i64>,
    by_failed: u64,
    by_mismatch: u64,
    unexplained: u64,
}

impl Verdict {
    /// Judges the per-database counts of a report.
    pub fn judge(state: &str, dbs: &[DbView], options: &CopyOptions) -> Verdict {
        let failed: u64 = dbs.iter().map(|db| db.failed).sum();
        let mismatch: u64 = dbs.iter().map(|db| db.mismatch).sum();
        let expired: u64 = dbs.iter().map(|db| db.expired).sum();
        let prefix = unfinished_prefix(state);
        let Some(tally) = tally(dbs) else {
            let text = format!(
                "{prefix}key counts unknown because the {} could not be asked; the journal records {failed} failed and {mismatch} mismatched keys",
                unknown_sides(dbs)
            );
            return Verdict {
                status: VerdictStatus::Unknown,
                text,
                missing_on_target: None,
                extra_on_target: None,
                unexplained_missing: None,
            };
        };
        let status = if tally.unexplained > 0 || tally.extra > 0 {
            VerdictStatus::Unexplained
        } else if tally.missing > 0 || failed > 0 || mismatch > 0 {
            VerdictStatus::Explained
        } else {
            VerdictStatus::Match
        };
        let filtered = options.match_pattern.is_some() || options.key_type.is_some();
        let mut clauses = explanations(&tally, failed, mismatch, filtered);
        if expired > 0 {
            clauses.push(format!(
                "{expired} gone from the source when read (expired or deleted there, or only ever on the target: see the CSV's error column) and deleted on the target too (gone from both sides, counted in neither)"
            ));
        }
        let head = headline(&tally);
        let text = if clauses.is_empty() {
            format!("{prefix}{head}")
        } else {
            format!("{prefix}{head}: {}", clauses.join(", "))
        };
        Verdict {
            status,
            text,
            missing_on_target: Some(tally.missing),
            extra_on_target: Some(tally.extra),
            unexplained_missing: Some(tally.unexplained),
        }
    }
}

/// A job that has not finished still has keys to copy: say so first.
fn unfinished_prefix(state: &str) -> String {
    match state {
        "completed" => String::new(),
        "running" => "the job is still running, so counts are still moving; so far ".to_string(),
        other => format!(
            "the job is {other}, not finished (`redis-ferry resume` copies the rest); so far "
        ),
    }
}

fn unknown_sides(dbs: &[DbView]) -> &'static str {
    let source = dbs.iter().any(|db| db.source_keys.is_none());
    let target = dbs.iter().any(|db| db.target_keys.is_none());
    match (source, target) {
        (true, true) => "source and the target",
        (true, false) => "source",
        _ => "target",
    }
}

/// "1 key", "12 keys".
fn keys(count: u64) -> String {
    if count == 1 {
        "1 key".to_string()
    } else {
        format!("{count} keys")
    }
}

/// Per-target-database sums; `None` when any count is unknown.
fn tally(dbs: &[DbView]) -> Option<Tally> {
    let mut groups: BTreeMap<i64, Group> = BTreeMap::new();
    for db in dbs {
        let group = groups.entry(db.target_db).or_insert_with(|| Group {
            source: Some(0),
            ..Group::default()
        });
        group.source = group.source.zip(db.source_keys).map(|(a, b)| a + b);
        group.target = db.target_keys;
        group.failed += db.failed;
        group.mismatch += db.mismatch;
    }
    let mut tally = Tally::default();
    for (target_db, group) in groups {
        let (source, target) = (group.source?, group.target?);
        tally.source += source;
        tally.target += target;
        if source > target {
            let missing = source - target;
            let by_failed = group.failed.min(missing);
            let by_mismatch = group.mismatch.min(missing - by_failed);
            tally.missing += missing;
            tally.missing_in.push(target_db);
            tally.by_failed += by_failed;
            tally.by_mismatch += by_mismatch;
            tally.unexplained += missing - by_failed - by_mismatch;
        } else if target > source {
            tally.extra += target - source;
            tally.extra_in.push(target_db);
        }
    }
    Some(tally)
}

fn headline(tally: &Tally) -> String {
    let dbs = |list: &[i64]| {
        let names: Vec<String> = list.iter().map(|db| db.to_string()).collect();
        format!("db {}", names.join(", "))
    };
    match (tally.missing, tally.extra) {
        (0, 0) => format!("target holds as many keys as source ({})", tally.target),
        (missing, 0) => format!("target has {} fewer than source", keys(missing)),
        (0, extra) => format!("target has {} more than source", keys(extra)),
        (missing, extra) => format!(
            "target has {} fewer than source in {} and {extra} more in {}",
            keys(missing),
            dbs(&tally.missing_in),
            dbs(&tally.extra_in)
        ),
    }
}

/// The clauses after the headline: what accounts for each difference.
fn explanations(tally: &Tally, failed: u64, mismatch: u64, filtered: bool) -> Vec<String> {
    let mut clauses = Vec::new();
    if failed > 0 {
        clauses.push(format!(
            "{failed} failed (see `redis-ferry report --format csv`; fix the cause, then `redis-ferry retry`)"
        ));
    }
    if mismatch > 0 {
        clauses.push(format!(
            "{mismatch} differ (mismatch; `redis-ferry retry --outcome mismatch` copies them again)"
        ));
    }
    if tally.unexplained > 0 {
        let why = if filtered {
            "left out by --match/--type, or written to the source after the copy passed them;"
        } else {
            "written to the source after the copy passed them?"
        };
        clauses.push(format!(
            "{} unexplained by the journal ({why} `redis-ferry verify` finds which)",
            tally.unexplained
        ));
    }
    if tally.extra > 0 {
        clauses.push(format!(
            "{} more on the target than the job explains (dual writes, keys deleted from the source since they were copied, or keys there before the job; `redis-ferry verify` finds which)",
            tally.extra
        ));
    }
    clauses
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(db: i64, source: Option<u64>, target: Option<u64>) -> DbView {
        DbView {
            db,
            target_db: db,
            source_keys: source,
            target_keys: target,
            restored: 0,
            expired: 0,
            skipped: 0,
            failed: 0,
            mismatch: 0,
        }
    }

    fn judge(dbs: &[DbView]) -> Verdict {
        Verdict::judge("completed", dbs, &CopyOptions::default())
    }

    #[test]
    fn equal_counts_and_no_failure_is_a_match() {
        let verdict = judge(&[db(0, Some(10), Some(10)), db(1, Some(5), Some(5))]);
        assert_eq!(verdict.status, VerdictStatus::Match);
        assert_eq!(verdict.text, "target holds as many keys as source (15)");
    }

    #[test]
    fn missing_keys_are_explained_by_failed_keys_and_expired_ones_are_only_mentioned() {
        let mut view = db(0, Some(100), Some(91));
        view.failed = 9;
        view.expired = 3;
        let verdict = judge(&[view]);
        assert_eq!(verdict.status, VerdictStatus::Explained);
        assert_eq!(
            verdict.text,
            "target has 9 keys fewer than source: 9 failed (see `redis-ferry report --format csv`; fix the cause, then `redis-ferry retry`), 3 gone from the source when read (expired or deleted there, or only ever on the target: see the CSV's error column) and deleted on the target too (gone from both sides, counted in neither)"
        );
        assert_eq!(verdict.unexplained_missing, Some(0));
    }

    #[test]
    fn a_remainder_no_outcome_explains_is_called_unexplained_with_verify_suggested() {
        let mut view = db(0, Some(100), Some(88));
        view.failed = 9;
        let verdict = judge(&[view]);
        assert_eq!(verdict.status, VerdictStatus::Unexplained);
        assert_eq!(verdict.missing_on_target, Some(12));
        assert_eq!(verdict.unexplained_missing, Some(3));
        assert!(
            verdict
                .text
                .starts_with("target has 12 keys fewer than source: 9 failed")
        );
        assert!(verdict.text.contains("3 unexplained by the journal"));
        assert!(verdict.text.contains("`redis-ferry verify`"));
    }

    #[test]
    fn filters_are_named_as_a_legitimate_cause() {
        let options = CopyOptions {
            match_pattern: Some("user:*".into()),
            ..CopyOptions::default()
        };
        let verdict = Verdict::judge("completed", &[db(0, Some(50), Some(20))], &options);
        assert!(
            verdict.text.contains("left out by --match/--type"),
            "{}",
            verdict.text
        );
    }

    #[test]
    fn extra_keys_on_the_target_point_at_dual_writes() {
        let verdict = judge(&[db(0, Some(10), Some(12)), db(1, Some(4), Some(3))]);
        assert_eq!(verdict.status, VerdictStatus::Unexplained);
        assert!(
            verdict
                .text
                .starts_with("target has 1 key fewer than source in db 1 and 2 more in db 0"),
            "{}",
            verdict.text
        );
        assert!(verdict.text.contains("dual writes"));
    }

    #[test]
    fn databases_mapped_into_one_are_compared_together() {
        let mut a = db(1, Some(10), Some(25));
        let mut b = db(2, Some(15), Some(25));
        a.target_db = 0;
        b.target_db = 0;
        let verdict = judge(&[a, b]);
        assert_eq!(verdict.status, VerdictStatus::Match, "{}", verdict.text);
    }

    #[test]
    fn unknown_counts_and_unfinished_jobs_say_so() {
        let mut view = db(0, Some(10), None);
        view.failed = 2;
        let verdict = Verdict::judge("interrupted", &[view], &CopyOptions::default());
        assert_eq!(verdict.status, VerdictStatus::Unknown);
        assert!(
            verdict
                .text
                .starts_with("the job is interrupted, not finished")
        );
        assert!(
            verdict
                .text
                .contains("key counts unknown because the target could not be asked"),
            "{}",
            verdict.text
        );
        assert!(verdict.text.contains("2 failed"));
        assert_eq!(verdict.missing_on_target, None);
    }

    #[test]
    fn equal_counts_with_failed_keys_still_call_for_a_retry() {
        let mut view = db(0, Some(10), Some(10));
        view.failed = 1;
        let verdict = judge(&[view]);
        assert_eq!(verdict.status, VerdictStatus::Explained);
        assert!(verdict.text.contains("1 failed"), "{}", verdict.text);
    }
}
