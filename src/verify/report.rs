//! What `verify` found, as counts per kind of difference and the first
//! differing keys; printed on stdout. Progress goes to stderr meanwhile.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use super::compare::{DiffKind, Verdict};
use super::work::Checked;
use crate::escape::escape_key;
use crate::exit::Exit;
use crate::hint;
use crate::output::count;
use crate::progress::{Meter, ProgressSettings, progress_fields, progress_text};

/// One differing key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// The source database (for `only on target`: the first source database
    /// copied into the target database where the key is).
    pub db: i64,
    pub key: Vec<u8>,
    pub kind: DiffKind,
    /// A sentence starting with the kind's label.
    pub detail: String,
}

/// What the journal got, when there is one.
#[derive(Debug, Clone, Default)]
pub struct JournalNote {
    pub path: String,
    /// Keys recorded as `mismatch`.
    pub recorded: u64,
    /// Keys recorded `mismatch` earlier that now compare equal (recorded
    /// `restored` again).
    pub cleared: u64,
}

/// Everything verify found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Redacted URLs.
    pub source: String,
    pub target: String,
    /// "db 0", "dbs 0, 1 (-> 0, 5)", ...
    pub scope: String,
    /// Source keys compared.
    pub checked: u64,
    /// Source keys gone (expired or deleted) by the time they were read.
    pub gone: u64,
    /// Target keys looked for on the source (`--extra`).
    pub target_checked: u64,
    pub counts: BTreeMap<DiffKind, u64>,
    /// The first differences, at most `show`.
    pub first: Vec<Difference>,
    pub show: usize,
    pub elapsed: Duration,
    /// `--sample N`, when the sample was smaller than the data.
    pub sample: Option<u64>,
    pub extra: bool,
    pub interrupted: bool,
    pub journal: Option<JournalNote>,
}

impl Report {
    /// Counts a batch of verdicts.
    pub fn add(&mut self, checked: &Checked) {
        let source = checked.direction.is_source();
        for (key, verdict) in &checked.verdicts {
            match verdict {
                Verdict::OutOfScope => {}
                Verdict::Gone if source => self.gone += 1,
                _ if source => self.checked += 1,
                _ => self.target_checked += 1,
            }
            if let Verdict::Differs { kind, detail } = verdict {
                *self.counts.entry(*kind).or_default() += 1;
                if self.first.len() < self.show {
                    self.first.push(Difference {
                        db: checked.direction.journal_db(),
                        key: key.clone(),
                        kind: *kind,
                        detail: detail.clone(),
                    });
                }
            }
        }
    }

    /// Keys that differ in any way.
    pub fn differing(&self) -> u64 {
        self.counts.values().sum()
    }

    pub fn count(&self, kind: DiffKind) -> u64 {
        self.counts.get(&kind).copied().unwrap_or(0)
    }

    /// 0 when nothing differs, 3 when something does, 130 when interrupted.
    pub fn exit(&self) -> Exit {
        if self.interrupted {
            Exit::Interrupted
        } else if self.differing() > 0 {
            Exit::KeysFailed
        } else {
            Exit::Success
        }
    }

    /// Source keys checked per second.
    pub fn rate(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 {
            (self.checked + self.gone) as f64 / seconds
        } else {
            0.0
        }
    }

    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "verify: source {} -> target {} ({})",
            self.source, self.target, self.scope
        );
        self.write_coverage(&mut out);
        self.write_counts(&mut out);
        self.write_first(&mut out);
        self.write_result(&mut out);
        out
    }

    fn write_coverage(&self, out: &mut String) {
        let what = match self.sample {
            Some(size) => format!(
                "a random sample of {} keys (asked for {size})",
                self.checked
            ),
            None => count(self.checked, "key"),
        };
        let _ = writeln!(
            out,
            "checked {what} in {:.1}s ({:.0} keys/s)",
            self.elapsed.as_secs_f64(),
            self.rate()
        );
        if self.extra {
            let _ = writeln!(
                out,
                "looked for {} on the source (--extra)",
                count(self.target_checked, "target key")
            );
        }
        if self.gone > 0 {
            let _ = writeln!(
                out,
                "{} gone from the source by the time {} read (expired or deleted); not compared",
                count(self.gone, "key"),
                if self.gone == 1 {
                    "it was"
                } else {
                    "they were"
                }
            );
        }
    }

    fn write_counts(&self, out: &mut String) {
        let _ = writeln!(out, "differences: {}", count(self.differing(), "key"));
        for kind in DiffKind::ALL {
            if kind == DiffKind::Extra && !self.extra {
                let _ = writeln!(out, "  {:<20} not checked (--extra checks)", kind.label());
                continue;
            }
            let _ = writeln!(out, "  {:<20} {}", kind.label(), self.count(kind));
        }
    }

    fn write_first(&self, out: &mut String) {
        if self.first.is_empty() {
            return;
        }
        let more = self.differing() > self.first.len() as u64;
        let _ = writeln!(
            out,
            "{} differing keys{}:",
            if more { "first" } else { "the" },
            if more {
                format!(" (of {}; --show N lists more)", self.differing())
            } else {
                String::new()
            }
        );
        for difference in &self.first {
            let _ = writeln!(
                out,
                "  db {} \"{}\": {}",
                difference.db,
                escape_key(&difference.key),
                difference.detail
            );
        }
    }

    fn write_result(&self, out: &mut String) {
        if self.interrupted {
            let _ = writeln!(out, "result: interrupted; only the keys above were checked");
            return;
        }
        // A sample only speaks for the keys it drew.
        let within = match self.sample {
            Some(_) => format!(" in a sample of {}", count(self.checked, "key")),
            None => String::new(),
        };
        if self.differing() == 0 {
            match self.sample {
                Some(_) => {
                    let _ = writeln!(
                        out,
                        "result: no differences{within}; only a verify without --sample proves the whole target"
                    );
                }
                None => {
                    let _ = writeln!(
                        out,
                        "result: no differences: the target holds what the source holds"
                    );
                }
            }
            if let Some(note) = self.journal.as_ref().filter(|n| n.cleared > 0) {
                let _ = writeln!(
                    out,
                    "{} recorded as mismatch earlier now {}; journal {} records {} restored",
                    count(note.cleared, "key"),
                    if note.cleared == 1 {
                        "compares equal"
                    } else {
                        "compare equal"
                    },
                    note.path,
                    if note.cleared == 1 { "it" } else { "them" }
                );
            }
            return;
        }
        let verb = if self.differing() == 1 {
            "differs"
        } else {
            "differ"
        };
        let _ = write!(
            out,
            "result: {} {verb}{within}",
            count(self.differing(), "key")
        );
        match &self.journal {
            Some(note) => {
                let _ = writeln!(
                    out,
                    "; recorded as outcome mismatch in journal {}: `{}` copies them again from the source{}, then verify again{}",
                    note.path,
                    hint::command("retry", Path::new(&note.path), "--outcome mismatch"),
                    if self.count(DiffKind::Extra) > 0 {
                        " (and deletes from the target the keys the source does not have)"
                    } else {
                        ""
                    },
                    hint::passwords_again(&self.source, &self.target)
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "; verify with the job's --journal to record them, so `redis-ferry retry --outcome mismatch` repairs them"
                );
            }
        }
    }
}

/// Progress of a verify on stderr: a bar on a terminal, a line every
/// `--log-interval` otherwise, or nothing (see [`crate::progress::Meter`]);
/// the differing keys beside the rate.
pub struct VerifyProgress {
    meter: Meter,
}

impl VerifyProgress {
    pub fn new(settings: ProgressSettings, expected: Option<u64>) -> VerifyProgress {
        crate::metrics::set_state(crate::metrics::State::Running);
        VerifyProgress {
            meter: Meter::new(settings, expected, 0),
        }
    }

    pub fn update(&mut self, report: &Report) {
        let done = report.checked + report.gone + report.target_checked;
        let reading = self.meter.reading(done);
        let notes = format!("{} differ", report.differing());
        self.meter.show(&reading, &notes);
        crate::metrics::set_verify(done, report.differing());
        crate::metrics::set_progress(reading.done, reading.total, reading.rate, reading.eta);
        if self.meter.line_due() {
            let mut fields = progress_fields(&reading);
            fields.push(("differ", serde_json::json!(report.differing())));
            let text = format!("verify: {}", progress_text(&reading, "checked", &notes));
            crate::log::event(crate::log::Level::Info, &text, &fields);
        }
    }

    pub fn finish(&mut self) {
        self.meter.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::reply::Dbs;
    use crate::verify::work::Direction;

    fn checked(verdicts: Vec<(&[u8], Verdict)>) -> Checked {
        Checked {
            direction: Direction::SourceToTarget(Dbs {
                source: 0,
                target: 0,
            }),
            verdicts: verdicts.into_iter().map(|(k, v)| (k.to_vec(), v)).collect(),
        }
    }

    #[test]
    fn counts_per_kind_and_escaped_keys_in_the_summary() {
        let mut report = Report {
            show: 20,
            ..Report::default()
        };
        report.add(&checked(vec![
            (b"same", Verdict::Equal),
            (b"gone", Verdict::Gone),
            (
                b"bin\x00\"key",
                Verdict::differs(DiffKind::Missing, "missing on target"),
            ),
            (
                b"h",
                Verdict::differs(DiffKind::Value, "value differs: hash field \"f\" differs"),
            ),
        ]));
        assert_eq!((report.checked, report.gone, report.differing()), (3, 1, 2));
        assert_eq!(report.exit(), Exit::KeysFailed);
        let text = report.to_text();
        assert!(text.contains("  missing on target    1"), "{text}");
        assert!(text.contains("  value differs        1"), "{text}");
        assert!(text.contains("only on target       not checked"), "{text}");
        assert!(
            text.contains("db 0 \"bin\\x00\\\"key\": missing on target"),
            "{text}"
        );
    }

    #[test]
    fn nothing_differs_means_exit_0() {
        let mut report = Report::default();
        report.add(&checked(vec![(b"a", Verdict::Equal)]));
        assert_eq!(report.exit(), Exit::Success);
        assert!(report.to_text().contains("result: no differences"));
    }

    #[test]
    fn only_the_first_differences_are_listed() {
        let mut report = Report {
            show: 1,
            ..Report::default()
        };
        report.add(&checked(vec![
            (
                b"a",
                Verdict::differs(DiffKind::Missing, "missing on target"),
            ),
            (
                b"b",
                Verdict::differs(DiffKind::Missing, "missing on target"),
            ),
        ]));
        assert_eq!(report.first.len(), 1);
        assert!(report.to_text().contains("first differing keys (of 2"));
    }

    #[test]
    fn a_sample_with_no_difference_claims_only_the_sample() {
        let mut report = Report {
            sample: Some(3),
            ..Report::default()
        };
        report.add(&checked(vec![
            (b"a", Verdict::Equal),
            (b"b", Verdict::Equal),
            (b"c", Verdict::Equal),
        ]));
        let text = report.to_text();
        assert!(
            text.contains("result: no differences in a sample of 3 keys;"),
            "{text}"
        );
        assert!(
            !text.contains("the target holds what the source holds"),
            "{text}"
        );
    }

    #[test]
    fn one_difference_is_singular() {
        let mut report = Report::default();
        report.add(&checked(vec![(
            b"a",
            Verdict::differs(DiffKind::Missing, "missing on target"),
        )]));
        let text = report.to_text();
        assert!(text.contains("result: 1 key differs;"), "{text}");
        assert!(text.contains("differences: 1 key\n"), "{text}");
    }
}
