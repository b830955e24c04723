//! The copy pipeline: readers → writer → journal, three stages that
//! overlap, so the source is read, the target written and the journal
//! committed at the same time.
//!
//! ```text
//!  reader thread(s)          writer thread            caller's thread
//!  SCAN + DUMP + PTTL  ──▶  RESTORE / DEL        ──▶  SQLite transactions of
//!  (one per source node)    (per target node)          whole batches, progress
//! ```
//!
//! Channels are bounded (a few batches), so memory stays flat whatever the
//! key count. Channels keep order, and each source node has one reader, so
//! a node's batches are journaled in the order they were scanned: a cursor
//! is never checkpointed ahead of a key that is not journaled.
//!
//! The journal commits several batches per transaction (up to 50,000 keys
//! or half a second): one SQLite transaction per 1,000-key batch made the
//! journal the bottleneck (its B-tree pages were rewritten once per batch).
//!
//! Stopping: on Ctrl-C the readers stop taking new batches, the writer and
//! the journal finish the ones already read, and the pipeline returns
//! [`Stop::Interrupted`]. On an error in any stage the others are told to
//! stop and the batch in flight is abandoned (not journaled; a resume redoes
//! it); the batches written before it are journaled.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{RecvTimeoutError, sync_channel};
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::copy::write_keys;
use crate::interrupt::Shutdown;
use crate::journal::{BatchRecord, Journal};
use crate::options::{Existing, JournalKeys};
use crate::outcome::KeyResult;
use crate::progress::Progress;
use crate::scan::{Checkpoint, ReadBatch};
use crate::side::Side;

/// Read batches (keys and payloads) waiting for the writer: few, because
/// they hold the values.
const READ_QUEUE_DEPTH: usize = 2;
/// Written batches (keys and outcomes, no values) waiting for the journal:
/// enough to keep Redis busy while a large journal transaction commits.
const WRITTEN_QUEUE_DEPTH: usize = 64;

/// A source of read batches, run on its own thread. It hands each batch to
/// the callback (which returns false when the pipeline is stopping) and
/// returns `Ok(true)` when it read everything it had to.
pub type Reader = Box<dyn FnOnce(&mut dyn FnMut(ReadBatch) -> bool) -> Result<bool> + Send>;

/// How the pipeline ended.
#[derive(Debug)]
pub enum Stop {
    /// Every reader finished and every batch is journaled.
    Finished,
    /// Ctrl-C / SIGTERM: what was read is journaled; the rest waits for `resume`.
    Interrupted,
    /// An error not about one key stopped the job.
    Failed(anyhow::Error),
}

/// Keys written to the target, waiting to be journaled.
struct WrittenBatch {
    db: i64,
    checkpoint: Option<Checkpoint>,
    results: Vec<KeyResult>,
}

enum Message<T> {
    Batch(T),
    Failed(anyhow::Error),
}

/// What the writer stage needs.
#[derive(Debug, Clone, Copy)]
pub struct WriterSettings {
    pub existing: Existing,
    pub journal_keys: JournalKeys,
}

/// Runs readers, the writer and the journal until the readers are done,
/// Ctrl-C, or an error.
pub fn run(
    readers: Vec<Reader>,
    target: &mut Side,
    settings: WriterSettings,
    journal: &mut Journal,
    shutdown: &Shutdown,
    progress: &mut Progress,
) -> Stop {
    let (read_tx, read_rx) = sync_channel::<Message<ReadBatch>>(READ_QUEUE_DEPTH);
    let (written_tx, written_rx) = sync_channel::<Message<WrittenBatch>>(WRITTEN_QUEUE_DEPTH);
    let unfinished_readers = AtomicUsize::new(readers.len());
    let existing = settings.existing;

    let failure = std::thread::scope(|scope| {
        for reader in readers {
            let read_tx = read_tx.clone();
            let unfinished_readers = &unfinished_readers;
            let thread = std::thread::Builder::new().name("ferry-read".into());
            thread
                .spawn_scoped(scope, move || {
                    let mut emit = |batch: ReadBatch| read_tx.send(Message::Batch(batch)).is_ok();
                    match reader(&mut emit) {
                        Ok(true) => {
                            unfinished_readers.fetch_sub(1, Ordering::SeqCst);
                        }
                        Ok(false) => {}
                        Err(error) => {
                            let _ = read_tx.send(Message::Failed(error));
                        }
                    }
                })
                .expect("the operating system can start a thread");
        }
        drop(read_tx);

        let thread = std::thread::Builder::new().name("ferry-write".into());
        thread
            .spawn_scoped(scope, move || {
                for message in read_rx {
                    let forward = match message {
                        Message::Batch(batch) => {
                            match write_keys(target, batch.target_db, batch.reads, existing) {
                                Ok(results) => Message::Batch(WrittenBatch {
                                    db: batch.db,
                                    checkpoint: batch.checkpoint,
                                    results,
                                }),
                                Err(error) => Message::Failed(error),
                            }
                        }
                        Message::Failed(error) => Message::Failed(error),
                    };
                    let failed = matches!(forward, Message::Failed(_));
                    if written_tx.send(forward).is_err() || failed {
                        return;
                    }
                }
            })
            .expect("the operating system can start a thread");

        let failure = journal_stage(
            &written_rx,
            journal,
            settings.journal_keys,
            shutdown,
            progress,
        );
        if failure.is_some() {
            // Wake every stage: readers check the flag, the writer sees the
            // channel close.
            shutdown.request();
        }
        drop(written_rx);
        failure
    });

    match failure {
        Some(error) => Stop::Failed(error),
        None if unfinished_readers.load(Ordering::SeqCst) == 0 => Stop::Finished,
        None => Stop::Interrupted,
    }
}

/// A journal transaction holds at most this many keys...
const GROUP_KEYS: usize = 50_000;
/// ...and waits at most this long for more batches before committing, so
/// `status` and a SIGKILL see recent work.
const GROUP_WAIT: Duration = Duration::from_millis(500);

/// Commits written batches, several per transaction (see
/// [`Journal::commit_batches`]), until the writer is done; returns the
/// first error.
fn journal_stage(
    written: &std::sync::mpsc::Receiver<Message<WrittenBatch>>,
    journal: &mut Journal,
    journal_keys: JournalKeys,
    shutdown: &Shutdown,
    progress: &mut Progress,
) -> Option<anyhow::Error> {
    let mut group: Vec<WrittenBatch> = Vec::new();
    let mut group_keys = 0;
    let mut group_started = Instant::now();
    loop {
        let wait = if group.is_empty() {
            Duration::from_millis(250)
        } else {
            GROUP_WAIT.saturating_sub(group_started.elapsed())
        };
        let (more, failure) = match written.recv_timeout(wait) {
            Ok(Message::Batch(batch)) => {
                if group.is_empty() {
                    group_started = Instant::now();
                }
                group_keys += batch.results.len();
                group.push(batch);
                (true, None)
            }
            Ok(Message::Failed(error)) => (false, Some(error)),
            Err(RecvTimeoutError::Timeout) => {
                progress.tick();
                if shutdown.requested() {
                    progress.note_stopping();
                }
                (true, None)
            }
            Err(RecvTimeoutError::Disconnected) => (false, None),
        };
        if failure.is_some() {
            // The batches already written are journaled; the failed one is not.
            return commit_group(journal, &mut group, journal_keys, progress)
                .err()
                .or(failure);
        }
        let due = group_keys >= GROUP_KEYS || group_started.elapsed() >= GROUP_WAIT || !more;
        if !group.is_empty() && due {
            if let Err(error) = commit_group(journal, &mut group, journal_keys, progress) {
                return Some(error);
            }
            group_keys = 0;
        }
        if !more {
            return None;
        }
    }
}

fn commit_group(
    journal: &mut Journal,
    group: &mut Vec<WrittenBatch>,
    journal_keys: JournalKeys,
    progress: &mut Progress,
) -> Result<()> {
    if group.is_empty() {
        return Ok(());
    }
    let records: Vec<BatchRecord<'_>> = group
        .iter()
        .map(|batch| BatchRecord {
            db: batch.db,
            results: &batch.results,
            checkpoint: batch.checkpoint.as_ref(),
        })
        .collect();
    journal.commit_batches(&records, journal_keys)?;
    for batch in group.drain(..) {
        progress.record(&batch.results);
    }
    Ok(())
}
