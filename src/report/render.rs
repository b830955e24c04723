//! The report as text (a terminal), markdown (a change ticket) and JSON
//! (scripts). All three show the same [`Report`]; an unknown count is
//! "unknown" in text and markdown and `null` in JSON.

use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;

use anyhow::Result;

use super::{Format, Report};
use crate::options::{CopyOptions, Existing, JournalKeys, TtlMode};
use crate::status::{DbView, StartingSummary};

/// Writes `report` in `format` (not CSV: that is the audit log).
pub fn render(report: &Report, format: Format, out: &mut dyn Write) -> Result<()> {
    let text = match format {
        Format::Json => serde_json::to_string_pretty(report)? + "\n",
        Format::Markdown => markdown(report),
        Format::Text | Format::Csv => text(report),
    };
    out.write_all(text.as_bytes())?;
    Ok(())
}

/// The report of a journal that a process is creating: nothing is
/// recorded yet, so nothing is compared.
pub fn starting(
    summary: &StartingSummary,
    journal: &Path,
    format: Format,
    out: &mut dyn Write,
) -> Result<()> {
    let line = format!(
        "job starting: a redis-ferry process is creating journal {}; nothing is recorded yet, run the report again in a moment",
        journal.display()
    );
    let text = match format {
        Format::Json => serde_json::to_string_pretty(summary)? + "\n",
        Format::Markdown => format!("# redis-ferry report: job starting\n\n{line}\n"),
        Format::Text | Format::Csv => format!("redis-ferry report: {line}\n"),
    };
    out.write_all(text.as_bytes())?;
    Ok(())
}

fn count(value: Option<u64>) -> String {
    value.map_or_else(|| "unknown".to_string(), |v| v.to_string())
}

fn seconds(value: f64) -> String {
    crate::clock::short_duration(std::time::Duration::from_secs_f64(value.max(0.0)))
}

/// The table's rows: one per database, then the totals.
fn table_rows(report: &Report) -> Vec<[String; 9]> {
    let row = |db: &DbView| {
        [
            db.db.to_string(),
            db.target_db.to_string(),
            count(db.source_keys),
            count(db.target_keys),
            db.restored.to_string(),
            db.expired.to_string(),
            db.skipped.to_string(),
            db.failed.to_string(),
            db.mismatch.to_string(),
        ]
    };
    let mut rows: Vec<[String; 9]> = report.dbs.iter().map(row).collect();
    let t = &report.totals;
    let o = &t.outcomes;
    rows.push([
        "total".to_string(),
        String::new(),
        count(t.source_keys),
        count(t.target_keys),
        o.restored.to_string(),
        o.expired.to_string(),
        o.skipped.to_string(),
        o.failed.to_string(),
        o.mismatch.to_string(),
    ]);
    rows
}

const HEADERS: [&str; 9] = [
    "db",
    "to db",
    "source now",
    "target now",
    "restored",
    "expired",
    "skipped",
    "failed",
    "mismatch",
];

/// Width of the labels in the text header ("copy time: ").
const LABEL: usize = 11;

fn text(report: &Report) -> String {
    let mut out = String::new();
    let job = &report.job;
    let _ = writeln!(out, "redis-ferry report: job {}", job.state);
    for (role, server) in [
        ("source", &report.servers.source),
        ("target", &report.servers.target),
    ] {
        let reason = server
            .error
            .as_ref()
            .map(|reason| format!(" (key counts unknown: {})", one_line(reason)))
            .unwrap_or_default();
        let _ = writeln!(out, "{:<LABEL$}{}{reason}", format!("{role}:"), server.url);
    }
    for (label, value) in facts(report) {
        let _ = writeln!(out, "{:<LABEL$}{value}", format!("{label}:"));
    }
    out.push('\n');
    out.push_str(&aligned_table(&table_rows(report)));
    if !report.workers.is_empty() {
        let _ = writeln!(out, "\nworkers:");
        for row in worker_rows(report) {
            let _ = writeln!(out, "  {}", row.join("  "));
        }
    }
    let _ = writeln!(out, "\nverdict: {}", report.verdict.text);
    for note in &report.notes {
        let _ = writeln!(out, "note: {note}");
    }
    if !report.top_errors.is_empty() {
        let _ = writeln!(out, "\nmost frequent errors (failed keys):");
        let width = report.top_errors[0].keys.to_string().len();
        for error in &report.top_errors {
            let _ = writeln!(out, "  {:>width$}  {}", error.keys, one_line(&error.error));
        }
    }
    if !report.runs.is_empty() {
        let _ = writeln!(out, "\nruns:");
        for run in &report.runs {
            let exit = run.exit_code.map_or_else(
                || "no exit code (killed?)".to_string(),
                |c| format!("exit {c}"),
            );
            let shard = run
                .shard
                .as_ref()
                .map(|shard| format!("shard {shard}  "))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  {shard}{:<7} {}  {} keys in {}, {exit}",
                run.command,
                run.started_at,
                run.keys_processed,
                seconds(run.seconds)
            );
        }
    }
    out
}

/// One row per worker: shard, slots, state, counts, journal.
fn worker_rows(report: &Report) -> Vec<[String; 5]> {
    let mut rows: Vec<[String; 5]> = report
        .workers
        .iter()
        .map(|worker| {
            let o = &worker.outcomes;
            [
                format!("shard {}", worker.shard.as_deref().unwrap_or("?")),
                format!("slots {}", worker.slots.as_deref().unwrap_or("?")),
                worker.state.clone(),
                format!(
                    "{} restored, {} expired, {} skipped, {} failed, {} mismatch",
                    o.restored, o.expired, o.skipped, o.failed, o.mismatch
                ),
                worker.journal.clone(),
            ]
        })
        .collect();
    for column in 0..3 {
        let width = rows.iter().map(|row| row[column].len()).max().unwrap_or(0);
        for row in &mut rows {
            row[column] = format!("{:<width$}", row[column]);
        }
    }
    rows
}

/// The job's facts as (label, value) pairs, shared by text and markdown.
fn facts(report: &Report) -> Vec<(&'static str, String)> {
    let job = &report.job;
    let mut facts = vec![("started", job.started_at.clone())];
    facts.push((
        "finished",
        job.finished_at
            .clone()
            .unwrap_or_else(|| format!("not yet (last activity {})", job.updated_at)),
    ));
    let rate = report
        .rate_keys_per_second
        .map(|rate| format!(", {rate:.0} keys/s"))
        .unwrap_or_default();
    facts.push((
        "copy time",
        format!(
            "{} in {} run{}{rate}",
            seconds(report.copy_seconds),
            report.runs.len(),
            if report.runs.len() == 1 { "" } else { "s" }
        ),
    ));
    facts.push(("options", option_flags(&job.options)));
    if let Some(count) = report.workers.iter().find_map(|worker| worker.count) {
        let given: Vec<&str> = report
            .workers
            .iter()
            .filter_map(|worker| worker.shard.as_deref())
            .collect();
        let missing = crate::shard::workers::missing_shards(&report.workers);
        let missing = if missing.is_empty() {
            String::new()
        } else {
            format!("; missing {}", missing.join(", "))
        };
        facts.push((
            "workers",
            format!(
                "{} of {count} (--shard {}){missing}",
                given.len(),
                given.join(", ")
            ),
        ));
    }
    if let Some(error) = &job.last_error {
        facts.push(("stopped", one_line(error)));
    }
    facts.push(("generated", report.generated_at.clone()));
    facts
}

/// The job's options as the flags that would give them.
fn option_flags(options: &CopyOptions) -> String {
    let mut flags = Vec::new();
    if let Some(pattern) = &options.match_pattern {
        flags.push(format!("--match {}", shell_quote(pattern)));
    }
    if let Some(key_type) = &options.key_type {
        flags.push(format!("--type {}", shell_quote(key_type)));
    }
    flags.extend(options.dbs.iter().map(|db| format!("--db {db}")));
    flags.extend(
        options
            .db_map
            .iter()
            .map(|(from, to)| format!("--db-map {from}:{to}")),
    );
    flags.push(format!(
        "--existing {}",
        match options.existing {
            Existing::Replace => "replace",
            Existing::Skip => "skip",
        }
    ));
    flags.push(format!(
        "--ttl {}",
        match options.ttl {
            TtlMode::Relative => "relative",
            TtlMode::Absolute => "absolute",
        }
    ));
    flags.push(format!("--scan-count {}", options.scan_count));
    if let Some(rate) = options.rate {
        flags.push(format!("--rate {rate}"));
    }
    if options.journal_keys == JournalKeys::Failures {
        flags.push("--journal-keys failures".to_string());
    }
    if options.source_replicas {
        flags.push("--source-replicas".to_string());
    }
    if let Some(shard) = &options.shard {
        flags.push(format!("--shard {}", shard.label()));
    }
    flags.join(" ")
}

fn shell_quote(text: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_.:/@".contains(c);
    if !text.is_empty() && text.chars().all(plain) {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// Server error texts may hold line breaks; a report line must not.
fn one_line(text: &str) -> String {
    text.split(['\r', '\n'])
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Columns padded to their widest cell; the first left-aligned, the rest
/// right-aligned (numbers).
fn aligned_table(rows: &[[String; 9]]) -> String {
    let mut widths: Vec<usize> = HEADERS.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let line = |cells: &[&str]| {
        let mut text = String::new();
        for (i, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            if i == 0 {
                let _ = write!(text, "{cell:<width$}");
            } else {
                let _ = write!(text, "  {cell:>width$}");
            }
        }
        text.trim_end().to_string() + "\n"
    };
    let mut out = line(&HEADERS);
    for row in rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        out.push_str(&line(&cells));
    }
    out
}

fn markdown(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# redis-ferry report: job {}\n", report.job.state);
    let _ = writeln!(
        out,
        "**Verdict:** {}\n",
        markdown_cell(&report.verdict.text)
    );
    let _ = writeln!(out, "| | |\n| --- | --- |");
    for (role, server) in [
        ("source", &report.servers.source),
        ("target", &report.servers.target),
    ] {
        let reason = server
            .error
            .as_ref()
            .map(|reason| format!(" (key counts unknown: {})", markdown_cell(reason)))
            .unwrap_or_default();
        let _ = writeln!(out, "| {role} | `{}`{reason} |", server.url);
    }
    for (label, value) in facts(report) {
        let value = if label == "options" {
            format!("`{}`", value.replace('|', "\\|"))
        } else {
            markdown_cell(&value)
        };
        let _ = writeln!(out, "| {label} | {value} |");
    }
    let _ = writeln!(out, "\n## Databases\n");
    let _ = writeln!(out, "| {} |", HEADERS.join(" | "));
    let _ = writeln!(out, "|{}", " ---: |".repeat(HEADERS.len()));
    for row in table_rows(report) {
        let _ = writeln!(out, "| {} |", row.join(" | "));
    }
    if !report.workers.is_empty() {
        let _ = writeln!(
            out,
            "\n## Workers\n\n| shard | slots | state | restored | expired | skipped | failed | mismatch | journal |\n| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"
        );
        for worker in &report.workers {
            let o = &worker.outcomes;
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | `{}` |",
                worker.shard.as_deref().unwrap_or("?"),
                worker.slots.as_deref().unwrap_or("?"),
                worker.state,
                o.restored,
                o.expired,
                o.skipped,
                o.failed,
                o.mismatch,
                worker.journal.replace('|', "\\|")
            );
        }
    }
    if !report.notes.is_empty() {
        out.push('\n');
        for note in &report.notes {
            let _ = writeln!(out, "- {}", markdown_cell(note));
        }
    }
    if !report.top_errors.is_empty() {
        let _ = writeln!(
            out,
            "\n## Most frequent errors\n\n| keys | error |\n| ---: | --- |"
        );
        for error in &report.top_errors {
            let _ = writeln!(out, "| {} | {} |", error.keys, markdown_cell(&error.error));
        }
    }
    if !report.runs.is_empty() {
        let _ = writeln!(
            out,
            "\n## Runs\n\n| command | started | keys | time | exit |\n| --- | --- | ---: | ---: | ---: |"
        );
        for run in &report.runs {
            let exit = run.exit_code.map_or("-".to_string(), |c| c.to_string());
            let command = match &run.shard {
                Some(shard) => format!("{} (shard {shard})", run.command),
                None => run.command.clone(),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {exit} |",
                command,
                run.started_at,
                run.keys_processed,
                seconds(run.seconds)
            );
        }
    }
    out
}

/// Text safe inside a markdown table cell: one line, pipes escaped.
fn markdown_cell(text: &str) -> String {
    one_line(text).replace('|', "\\|")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_read_as_the_flags_that_give_them() {
        let options = CopyOptions {
            match_pattern: Some("user:*".into()),
            db_map: [(1, 0)].into_iter().collect(),
            rate: Some(500),
            ..CopyOptions::default()
        };
        assert_eq!(
            option_flags(&options),
            "--match 'user:*' --db-map 1:0 --existing replace --ttl relative --scan-count 1000 --rate 500"
        );
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn table_cells_stay_on_one_line_and_pipes_are_escaped() {
        assert_eq!(markdown_cell("a|b\r\nc"), "a\\|b c");
        let rows = vec![["0", "0", "unknown", "12", "10", "0", "0", "2", "0"].map(String::from)];
        let table = aligned_table(&rows);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[1].contains("unknown"));
        // Right-aligned numbers: every line ends at the same column.
        assert_eq!(lines[0].len(), lines[1].len());
    }
}
