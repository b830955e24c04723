//! The per-key audit log, `report --format csv`: a header and one row per
//! journaled key, `db,key,outcome,ttl_ms,size_bytes,attempts,error,updated_at`
//! (the contract's eight columns), then `method`: how the key was last
//! written (`restore`, `commands` or `chunked`; empty when nothing was
//! written: the key was deleted, skipped, or failed before it was written).
//!
//! The journals of a sharded job's workers export as one CSV
//! ([`write_merged_csv`]): each worker's rows in turn, in shard order, with
//! a `shard` column (`1/3`) right after the contract's eight, then
//! `method` (the contract adds `shard` after the first eight columns).
//!
//! Rows are streamed from the journal in the order keys were first recorded
//! (a key recorded again keeps its place) straight into the CSV writer, so
//! memory stays flat for any number of keys. Keys are escaped
//! as the contract says (printable ASCII as is, `\\`, `\"`, `\xHH`), then
//! quoted as standard CSV; empty cells stand for null; `updated_at` is
//! RFC 3339 (UTC).

use std::io::Write;

use anyhow::Result;

use crate::clock::rfc3339;
use crate::escape::escape_key;
use crate::interrupt::Shutdown;
use crate::journal::{JournalReader, KeyRow};
use crate::shard::workers::Workers;

use super::output::Interrupted;

/// The CSV columns, in order (the contract's).
pub const CSV_HEADER: [&str; 9] = [
    "db",
    "key",
    "outcome",
    "ttl_ms",
    "size_bytes",
    "attempts",
    "error",
    "updated_at",
    "method",
];

/// The columns of the workers' journals exported together.
pub const MERGED_CSV_HEADER: [&str; 10] = [
    "db",
    "key",
    "outcome",
    "ttl_ms",
    "size_bytes",
    "attempts",
    "error",
    "updated_at",
    "shard",
    "method",
];

/// Rows between two looks at the Ctrl-C flag.
const CHECK_EVERY: u64 = 10_000;

/// Writes the audit log; returns how many key rows were written.
pub fn write_csv(journal: &JournalReader, out: &mut dyn Write, shutdown: &Shutdown) -> Result<u64> {
    let mut writer = csv::Writer::from_writer(out);
    writer.write_record(CSV_HEADER).map_err(csv_error)?;
    let mut rows = 0u64;
    write_rows(&mut writer, journal, None, &mut rows, shutdown)?;
    writer.flush()?;
    Ok(rows)
}

/// Writes the workers' audit logs as one, with the `shard` column;
/// returns how many key rows were written.
pub fn write_merged_csv(
    workers: &Workers,
    out: &mut dyn Write,
    shutdown: &Shutdown,
) -> Result<u64> {
    let mut writer = csv::Writer::from_writer(out);
    writer.write_record(MERGED_CSV_HEADER).map_err(csv_error)?;
    let mut rows = 0u64;
    for worker in workers.journals.iter().filter(|w| w.job.is_some()) {
        let label = worker.label();
        write_rows(
            &mut writer,
            &worker.reader,
            Some(&label),
            &mut rows,
            shutdown,
        )?;
    }
    writer.flush()?;
    Ok(rows)
}

/// Streams one journal's rows into `writer`, counting them in `rows`.
fn write_rows(
    writer: &mut csv::Writer<&mut dyn Write>,
    journal: &JournalReader,
    shard: Option<&str>,
    rows: &mut u64,
    shutdown: &Shutdown,
) -> Result<()> {
    let mut record = csv::ByteRecord::new();
    journal.for_each_key(|row| {
        fill_record(&mut record, &row, shard);
        writer.write_byte_record(&record).map_err(csv_error)?;
        *rows += 1;
        if rows.is_multiple_of(CHECK_EVERY) && shutdown.requested() {
            return Err(Interrupted.into());
        }
        Ok(())
    })
}

/// One row, reusing the record's buffer (no allocation per row beyond the
/// escaped key); `shard` adds the merged export's column.
fn fill_record(record: &mut csv::ByteRecord, row: &KeyRow, shard: Option<&str>) {
    let optional = |value: Option<i64>| value.map(|v| v.to_string()).unwrap_or_default();
    record.clear();
    record.push_field(row.db.to_string().as_bytes());
    record.push_field(escape_key(&row.key).as_bytes());
    record.push_field(row.outcome.as_str().as_bytes());
    record.push_field(optional(row.ttl_ms).as_bytes());
    record.push_field(optional(row.size_bytes).as_bytes());
    record.push_field(row.attempts.to_string().as_bytes());
    record.push_field(row.error.as_deref().unwrap_or("").as_bytes());
    record.push_field(rfc3339(row.updated_at).as_bytes());
    if let Some(shard) = shard {
        record.push_field(shard.as_bytes());
    }
    record.push_field(row.method.map(|m| m.as_str()).unwrap_or("").as_bytes());
}

/// The CSV writer only fails on I/O; hand the `io::Error` on so the caller
/// can name the file and the reason.
fn csv_error(error: csv::Error) -> anyhow::Error {
    match error.into_kind() {
        csv::ErrorKind::Io(io) => io.into(),
        other => anyhow::anyhow!("cannot write the CSV report: {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::escape::unescape_key;
    use crate::journal::{JobRecord, JobState, Journal};
    use crate::options::{CopyOptions, JournalKeys};
    use crate::outcome::{KeyResult, Outcome};

    fn journal_with(dir: &tempfile::TempDir, results: &[KeyResult]) -> JournalReader {
        let path = dir.path().join("j.db");
        let mut journal = Journal::create(&path).unwrap();
        journal
            .insert_job(
                &JobRecord::new(
                    JobState::Completed,
                    "redis://old:6379",
                    "redis://new:6379",
                    CopyOptions::default(),
                ),
                &[],
            )
            .unwrap();
        journal
            .commit_batch(0, results, None, JournalKeys::All)
            .unwrap();
        drop(journal);
        JournalReader::open(&path).unwrap()
    }

    #[test]
    fn every_byte_value_survives_escaping_and_csv_quoting() {
        let dir = tempfile::tempdir().unwrap();
        let mut keys: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b'k', b, b',']).collect();
        keys.push((0..=255u8).collect());
        keys.push(b"a \"quoted\", key\r\n".to_vec());
        let results: Vec<KeyResult> = keys
            .iter()
            .map(|key| KeyResult {
                key: key.clone(),
                outcome: Outcome::Failed,
                ttl_ms: None,
                size_bytes: None,
                error: Some("NOPERM, \"quoted\"\nsecond line".into()),
                method: None,
            })
            .collect();
        let journal = journal_with(&dir, &results);
        let mut out = Vec::new();
        let rows = write_csv(&journal, &mut out, &Shutdown::new()).unwrap();
        assert_eq!(rows, keys.len() as u64);

        let mut reader = csv::Reader::from_reader(out.as_slice());
        assert_eq!(reader.headers().unwrap(), CSV_HEADER.as_slice());
        let mut seen = Vec::new();
        for record in reader.records() {
            let record = record.unwrap();
            assert_eq!(record.len(), 9);
            assert_eq!(&record[3], "", "no TTL is an empty cell");
            assert_eq!(&record[6], "NOPERM, \"quoted\"\nsecond line");
            assert_eq!(&record[8], "", "nothing was written");
            seen.push(unescape_key(&record[1]).unwrap());
        }
        assert_eq!(seen, keys, "in the order they were recorded");
    }

    #[test]
    fn the_method_column_says_how_each_key_was_last_written() {
        use crate::outcome::WriteMethod;
        let dir = tempfile::tempdir().unwrap();
        let written = |key: &str, method| KeyResult {
            key: key.as_bytes().to_vec(),
            outcome: Outcome::Restored,
            ttl_ms: None,
            size_bytes: Some(1),
            error: None,
            method,
        };
        let journal = journal_with(
            &dir,
            &[
                written("a", Some(WriteMethod::Restore)),
                written("b", Some(WriteMethod::Commands)),
                written("c", Some(WriteMethod::Chunked)),
                KeyResult::failed(b"d".to_vec(), "OOM"),
            ],
        );
        let mut out = Vec::new();
        write_csv(&journal, &mut out, &Shutdown::new()).unwrap();
        let mut reader = csv::Reader::from_reader(out.as_slice());
        assert_eq!(&reader.headers().unwrap()[8], "method");
        let methods: Vec<(String, String)> = reader
            .records()
            .map(|r| {
                let r = r.unwrap();
                (r[1].to_string(), r[8].to_string())
            })
            .collect();
        let expected = [
            ("a", "restore"),
            ("b", "commands"),
            ("c", "chunked"),
            ("d", ""),
        ];
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(k, m)| (k.to_string(), m.to_string()))
            .collect();
        assert_eq!(methods, expected);
    }

    #[test]
    fn ctrl_c_stops_a_long_export() {
        let dir = tempfile::tempdir().unwrap();
        let results: Vec<KeyResult> = (0..CHECK_EVERY + 5)
            .map(|i| KeyResult {
                key: format!("k:{i}").into_bytes(),
                outcome: Outcome::Restored,
                ttl_ms: Some(1000),
                size_bytes: Some(10),
                error: None,
                method: None,
            })
            .collect();
        let journal = journal_with(&dir, &results);
        let shutdown = Shutdown::new();
        assert_eq!(
            write_csv(&journal, &mut Vec::new(), &shutdown).unwrap(),
            CHECK_EVERY + 5
        );
        shutdown.request();
        let error = write_csv(&journal, &mut Vec::new(), &shutdown).unwrap_err();
        assert!(error.is::<Interrupted>(), "{error:#}");
    }
}
