//! The copy pipeline: listers → copy workers → journal, three stages that
//! overlap, so keys are listed, copied and journaled at the same time.
//!
//! ```text
//!  lister thread(s)        worker threads (a pool)          caller's thread
//!  SCAN cursors,     ──▶   per batch: fence, read on   ──▶  SQLite transactions
//!  retry pages             the source, write on the         of whole batches,
//!  (a stream each)         target (own connections)         in each stream's order
//! ```
//!
//! Every source of work is a [`Lister`]: a SCAN cursor walk (run, resume),
//! pages of the journal (retry), and later keyspace events (follow). Each
//! lister is a *stream*: its batches are numbered, and although workers
//! finish them in any order, a stream's checkpoints are journaled in its
//! own order, so a cursor is never recorded ahead of a key that is not
//! journaled. A batch's key outcomes are journaled as soon as it is copied.
//!
//! Channels are bounded, so memory stays flat whatever the key count.
//!
//! The journal commits several batches per transaction (up to 50,000 keys
//! or half a second): one SQLite transaction per 1,000-key batch made the
//! journal the bottleneck (its B-tree pages were rewritten once per batch).
//!
//! Stopping: on Ctrl-C the listers stop listing, the workers copy the
//! batches already listed, the journal records them, and the pipeline
//! returns [`Stop::Interrupted`]. On an error in any stage the others are
//! told to stop; the batches copied before it are journaled.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::copy::{Copier, CopySettings};
use crate::interrupt::Shutdown;
use crate::journal::{BatchRecord, Journal};
use crate::options::JournalKeys;
use crate::outcome::KeyResult;
use crate::progress::Progress;
use crate::scan::{Checkpoint, Journaled, Listed};
use crate::side::Side;

/// Copied batches (keys and outcomes, no values) waiting for the journal:
/// enough to keep Redis busy while a large journal transaction commits.
const WRITTEN_QUEUE_DEPTH: usize = 64;

/// A source of work, run on its own thread. It hands each batch to the
/// callback (which returns false when the pipeline is stopping) and returns
/// `Ok(true)` when it listed everything it had to.
pub type Lister = Box<dyn FnOnce(&mut dyn FnMut(Listed) -> bool) -> Result<bool> + Send>;

/// How the pipeline ended.
#[derive(Debug)]
pub enum Stop {
    /// Every lister finished and every batch is journaled.
    Finished,
    /// Ctrl-C / SIGTERM: what was listed is copied and journaled; the rest
    /// waits for `resume`.
    Interrupted,
    /// An error not about one key stopped the job.
    Failed(anyhow::Error),
}

/// What the copy stage needs.
#[derive(Clone)]
pub struct PipelineSettings {
    pub copy: CopySettings,
    pub journal_keys: JournalKeys,
    /// Copy workers (each with its own connections to both sides).
    pub workers: usize,
    /// Called on the journal after each commit and when idle (twice a
    /// second at least): following records where it stands there.
    pub on_journal: Option<JournalHook>,
}

/// See [`PipelineSettings::on_journal`].
pub type JournalHook = Arc<dyn Fn(&Journal) -> Result<()> + Send + Sync>;

/// A listed batch, numbered within its stream.
struct Work {
    stream: usize,
    seq: u64,
    listed: Listed,
}

/// A copied batch, waiting to be journaled.
struct Copied {
    stream: usize,
    seq: u64,
    db: i64,
    checkpoint: Option<Checkpoint>,
    journaled: Option<Journaled>,
    results: Vec<KeyResult>,
}

enum Message {
    Batch(Copied),
    Failed(anyhow::Error),
}

/// Runs listers, the copy workers and the journal until the listers are
/// done, Ctrl-C, or an error.
pub fn run(
    listers: Vec<Lister>,
    source: &Side,
    target: &Side,
    settings: PipelineSettings,
    journal: &mut Journal,
    shutdown: &Shutdown,
    progress: &mut Progress,
) -> Stop {
    let workers = settings.workers.max(1);
    let copy = settings.copy;
    let (work_tx, work_rx) = sync_channel::<Work>(workers);
    let work_rx = Arc::new(Mutex::new(work_rx));
    let (copied_tx, copied_rx) = sync_channel::<Message>(WRITTEN_QUEUE_DEPTH);
    let unfinished_listers = AtomicUsize::new(listers.len());
    let copiers: Vec<Copier> = (0..workers)
        .map(|_| Copier::new(source, target, copy.clone()))
        .collect();

    let failure = std::thread::scope(|scope| {
        for (stream, lister) in listers.into_iter().enumerate() {
            let work_tx = work_tx.clone();
            let copied_tx = copied_tx.clone();
            let unfinished_listers = &unfinished_listers;
            spawn(scope, "ferry-list", move || {
                let mut seq = 0;
                let mut emit = |listed: Listed| {
                    seq += 1;
                    work_tx
                        .send(Work {
                            stream,
                            seq,
                            listed,
                        })
                        .is_ok()
                };
                match lister(&mut emit) {
                    Ok(true) => {
                        unfinished_listers.fetch_sub(1, Ordering::SeqCst);
                    }
                    Ok(false) => {}
                    Err(error) => {
                        let _ = copied_tx.send(Message::Failed(error));
                    }
                }
            });
        }
        drop(work_tx);
        for copier in copiers {
            let work_rx = Arc::clone(&work_rx);
            let copied_tx = copied_tx.clone();
            spawn(scope, "ferry-copy", move || {
                copy_worker(copier, &work_rx, &copied_tx)
            });
        }
        // Once the last worker is gone, a lister waiting to hand over a
        // batch learns it at once.
        drop(work_rx);
        drop(copied_tx);

        let failure = journal_stage(
            &copied_rx,
            journal,
            settings.journal_keys,
            settings.on_journal.as_ref(),
            shutdown,
            progress,
        );
        if failure.is_some() {
            // Wake every stage: listers check the flag, workers see their
            // channels close.
            shutdown.request();
        }
        drop(copied_rx);
        failure
    });

    match failure {
        Some(error) => Stop::Failed(error),
        None if unfinished_listers.load(Ordering::SeqCst) == 0 => Stop::Finished,
        None => Stop::Interrupted,
    }
}

fn spawn<'scope, F>(scope: &'scope std::thread::Scope<'scope, '_>, name: &str, body: F)
where
    F: FnOnce() + Send + 'scope,
{
    std::thread::Builder::new()
        .name(name.into())
        .spawn_scoped(scope, body)
        .expect("the operating system can start a thread");
}

/// Copies batches until the listers are done (or the journal stops
/// listening).
fn copy_worker(mut copier: Copier, work: &Mutex<Receiver<Work>>, copied: &SyncSender<Message>) {
    loop {
        let next = work.lock().map(|receiver| receiver.recv());
        let Ok(Ok(Work {
            stream,
            seq,
            listed,
        })) = next
        else {
            return;
        };
        let db = listed.batch.db;
        let message = match copier.copy(listed.batch) {
            Ok(results) => Message::Batch(Copied {
                stream,
                seq,
                db,
                checkpoint: listed.checkpoint,
                journaled: listed.journaled,
                results,
            }),
            Err(error) => Message::Failed(error),
        };
        let failed = matches!(message, Message::Failed(_));
        if copied.send(message).is_err() || failed {
            return;
        }
    }
}

/// A journal transaction holds at most this many keys...
const GROUP_KEYS: usize = 50_000;
/// ...and waits at most this long for more batches before committing, so
/// `status` and a SIGKILL see recent work.
const GROUP_WAIT: Duration = Duration::from_millis(500);

/// Puts each stream's checkpoints back in the stream's order: batch `n`'s
/// checkpoint is released once batches `1..=n` are all journaled.
#[derive(Default)]
struct Reorder {
    next: HashMap<usize, u64>,
    waiting: HashMap<usize, BTreeMap<u64, Option<Checkpoint>>>,
}

impl Reorder {
    /// Records that batch `seq` of `stream` is copied; returns the
    /// checkpoints that may now be journaled, in order.
    fn arrived(
        &mut self,
        stream: usize,
        seq: u64,
        checkpoint: Option<Checkpoint>,
    ) -> Vec<Checkpoint> {
        let waiting = self.waiting.entry(stream).or_default();
        waiting.insert(seq, checkpoint);
        let next = self.next.entry(stream).or_insert(1);
        let mut released = Vec::new();
        while let Some(checkpoint) = waiting.remove(next) {
            released.extend(checkpoint);
            *next += 1;
        }
        released
    }
}

/// One batch's results and the checkpoints released with it.
struct Ready {
    db: i64,
    results: Vec<KeyResult>,
    checkpoints: Vec<Checkpoint>,
    journaled: Option<Journaled>,
}

/// Commits copied batches, several per transaction (see
/// [`Journal::commit_batches`]), until the workers are done; returns the
/// first error.
fn journal_stage(
    copied: &Receiver<Message>,
    journal: &mut Journal,
    journal_keys: JournalKeys,
    on_journal: Option<&JournalHook>,
    shutdown: &Shutdown,
    progress: &mut Progress,
) -> Option<anyhow::Error> {
    let hook = |journal: &Journal| on_journal.map_or(Ok(()), |hook| hook(journal));
    let mut reorder = Reorder::default();
    let mut group: Vec<Ready> = Vec::new();
    let mut group_keys = 0;
    let mut group_started = Instant::now();
    loop {
        let wait = if group.is_empty() {
            Duration::from_millis(250)
        } else {
            GROUP_WAIT.saturating_sub(group_started.elapsed())
        };
        let (more, failure) = match copied.recv_timeout(wait) {
            Ok(Message::Batch(batch)) => {
                if group.is_empty() {
                    group_started = Instant::now();
                }
                group_keys += batch.results.len();
                let checkpoints = reorder.arrived(batch.stream, batch.seq, batch.checkpoint);
                group.push(Ready {
                    db: batch.db,
                    results: batch.results,
                    checkpoints,
                    journaled: batch.journaled,
                });
                (true, None)
            }
            Ok(Message::Failed(error)) => (false, Some(error)),
            Err(RecvTimeoutError::Timeout) => {
                progress.tick();
                if shutdown.requested() {
                    progress.note_stopping();
                }
                if group.is_empty()
                    && let Err(error) = hook(journal)
                {
                    return Some(error);
                }
                (true, None)
            }
            Err(RecvTimeoutError::Disconnected) => (false, None),
        };
        if failure.is_some() {
            // The batches already copied are journaled; the failed one is not.
            return commit_group(journal, &mut group, journal_keys, progress)
                .err()
                .or(failure);
        }
        let due = group_keys >= GROUP_KEYS || group_started.elapsed() >= GROUP_WAIT || !more;
        if !group.is_empty() && due {
            if let Err(error) = commit_group(journal, &mut group, journal_keys, progress)
                .and_then(|()| hook(journal))
            {
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
    group: &mut Vec<Ready>,
    journal_keys: JournalKeys,
    progress: &mut Progress,
) -> Result<()> {
    if group.is_empty() {
        return Ok(());
    }
    let mut records: Vec<BatchRecord<'_>> = Vec::with_capacity(group.len() * 2);
    for ready in group.iter() {
        records.push(BatchRecord {
            db: ready.db,
            results: &ready.results,
            checkpoint: None,
        });
        for checkpoint in &ready.checkpoints {
            records.push(BatchRecord {
                db: checkpoint.db,
                results: &[],
                checkpoint: Some(checkpoint),
            });
        }
    }
    journal.commit_batches(&records, journal_keys)?;
    for ready in group.drain(..) {
        progress.record(&ready.results);
        if let Some(journaled) = ready.journaled {
            journaled(&ready.results);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint(cursor: u64) -> Option<Checkpoint> {
        Some(Checkpoint {
            node: "standalone".into(),
            db: 0,
            cursor,
            done: false,
            run_id: "r".into(),
            scanned: 1,
        })
    }

    #[test]
    fn checkpoints_are_released_in_each_streams_order() {
        let mut reorder = Reorder::default();
        // Batch 2 of stream 0 finishes first: its cursor must wait for 1.
        assert!(reorder.arrived(0, 2, checkpoint(20)).is_empty());
        // Another stream is independent.
        assert_eq!(reorder.arrived(1, 1, checkpoint(5)).len(), 1);
        let released = reorder.arrived(0, 1, checkpoint(10));
        let cursors: Vec<u64> = released.iter().map(|c| c.cursor).collect();
        assert_eq!(cursors, vec![10, 20]);
        // A batch without a checkpoint (a retry page) still counts in order.
        assert!(reorder.arrived(0, 4, checkpoint(40)).is_empty());
        assert!(reorder.arrived(0, 3, None).len() == 1);
    }
}
